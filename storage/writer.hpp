#pragma once
/// `writer`: the storage group-commit actor.
///
/// Every component that must acknowledge durability sends its mutations here. The writer appends
/// each request's batch to a pending WriteBatch; when it has drained its mailbox (it checks with a
/// private commit message sent to itself on the first request of a group, which queues behind
/// every request that arrived meanwhile), it writes the whole group with one synced
/// `store::write` and only then replies to every request in it. So N concurrent writers share one
/// fsync, and a reply always means "on stable storage". Requests that arrive during the fsync
/// form the next group.
///
/// It runs detached (its own thread) because the fsync blocks, except when pinned to a thread
/// that accepts the blocking (`spawn_pinned_writer`).
///
/// Stopping: send an exit message with a non-normal reason (`anon_send_exit(w,
/// caf::exit_reason::user_shutdown)`; like any CAF actor it ignores `normal`). Requests that
/// reached the writer before the exit message are committed and acknowledged; later ones get
/// CAF's request_receiver_down error. A success reply is never sent for data that is not synced.
///
/// State diagram:
///     idle --write--> collecting --commit (self-sent)--> syncing --ok--> idle
///                                                                \--error--> idle (every request
///                                                                       in the group gets it)
///     any --exit--> commit what is collected, then stop (ordered shutdown)
/// A flush joins the group being collected, or is answered at once when idle.
///
/// `write_atom, write_batch, durable_hook`: the same write, plus a callback the writer runs on its
/// thread once the group is durable, right after it sent the group's replies (so a requester
/// sees its reply before anything the hook causes). Not run if the group failed. The queue broker
/// uses it to answer a client straight from the writer thread (one thread hand-off less per
/// durable operation) while it still updates its own state from the reply.

#include <functional>
#include <memory>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/fwd.hpp>
#include <caf/typed_actor.hpp>

#include "runtime/inspect.hpp"
#include "runtime/pinned_actor.hpp"
#include "storage/store.hpp"

namespace shoal::storage {

using write_atom = caf::atom_constant<caf::atom("write")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;

/// Runs on the writer's thread after the write is durable (see above). Must not block; must be
/// safe to run on any thread.
using durable_hook = std::function<void()>;

/// `write_atom, write_batch` -> an empty reply once durable (or a storage_failure error).
/// `flush_atom` -> an empty reply once every write sent before it is durable (used by shutdown).
///
/// The replies carry no value, so they are `with<void>`: requesters handle them with `[]() {...}`.
/// Not `with<caf::unit_t>`: in CAF 0.17.6 a unit reply travels as an empty message, which never
/// matches the `[](caf::unit_t)` handler the type checker demands, so every such request ends in
/// sec::unexpected_response (checked with a probe program).
using writer_actor = caf::typed_actor<caf::replies_to<write_atom, write_batch>::with<void>,
                                      caf::replies_to<write_atom, write_batch, durable_hook>::with<void>,
                                      caf::replies_to<flush_atom>::with<void>,
                                      inspect_handler>;

/// What the writer does with a group: apply `batch` atomically and return only once it is on
/// stable storage. Called on the writer's thread, one call at a time.
using commit_function = std::function<caf::error(const write_batch& batch)>;

/// Spawns the writer (detached); groups go to `db.write(batch, /*sync=*/true)`. `db` must
/// outlive the actor.
writer_actor spawn_writer(caf::actor_system& sys, store& db);

/// Spawns the writer (detached) over any commit function; tests pass one that blocks or fails.
writer_actor spawn_writer(caf::actor_system& sys, commit_function commit);

/// A writer pinned to `unit`'s thread (pinned_actor.hpp) instead of its own: its fsync blocks
/// that thread, and requests from actors pinned there cost no thread hand-off. The queue broker's
/// writer is pinned to the RPC server's kj thread this way. A group of 16 writes or more (what one
/// poll of the kj loop can bring in) waits for the loop to poll again (`pinned_unit::after_io`),
/// up to three times, so the requests still waiting in sockets share its fsync. A null `unit`: a
/// scheduled actor. `name`: how inspection lists it (a string literal).
writer_actor spawn_pinned_writer(caf::actor_system& sys, store& db, std::shared_ptr<pinned_unit> unit,
                                 const char* name);

/// The same over any commit function (tests).
writer_actor spawn_pinned_writer(caf::actor_system& sys, commit_function commit,
                                 std::shared_ptr<pinned_unit> unit, const char* name);

} // namespace shoal::storage

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::storage::durable_hook)
