#pragma once
/// `queue_broker`: durable named queues and dicts (docs/queues.md), in the `queues` and `dicts`
/// tables (layout in queue_store.hpp). One broker per control node; every object is named within
/// an environment, which every request carries (the bridge fills in the session's).
///
/// Durability: a mutation (put, get, pop, clear, create, delete, ...) is answered only after the
/// storage writer replied, i.e. after its batch is fsynced; concurrent mutations reach the writer
/// together and share one fsync (group commit). Reads see only durable state: a queue item becomes
/// visible to gets, peeks and len when its put is durable, and an item handed to a get is durably
/// gone from the queue before the get returns (so after a crash nothing is delivered twice).
///
/// State diagram of a queue item:
///
///     (put sent) ──writer ok──► READY ──get──► CONSUMING ──writer ok──► gone (returned to the get)
///          │                      │  ▲                 │
///          │ writer error         │  └─writer error────┘ (back at the head, order kept)
///          ▼                      └──clear / delete / partition TTL──► gone
///        rejected (the put fails; nothing of it is visible)
///
/// State diagram of a blocking get (per partition, FIFO):
///
///     arrives ──items READY──► CONSUMING ──► answered with the items
///        │ none, blockTimeoutMs > 0
///        ▼
///      PARKED ──a put becomes durable (first parked first)──► CONSUMING
///        ├──deadline──► answered with no items (the SDK raises queue.Empty)
///        └──queue deleted──► [not_found]
///
/// State diagram of a dict key: idle ──put/pop/update──► WRITING ──writer reply──► idle; requests
/// for a WRITING key (and everything behind them) wait in the dict's FIFO, so each key's
/// operations apply in arrival order. clear and delete wait until no write is in flight.
///
/// Objects: created (durable) ──delete / ephemeral owner gone──► gone. Ephemeral objects whose
/// owner vanished in a crash are deleted at the next start.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/expected.hpp>
#include <caf/unit.hpp>
#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/typed_actor.hpp>

#include "actors/queue_broker/queue_store.hpp"
#include "runtime/errc.hpp"
#include "runtime/inspect.hpp"
#include "runtime/pinned_actor.hpp"
#include "storage/store.hpp"
#include "storage/writer.hpp"

namespace shoal::queue_broker {

struct object_info {
  std::string name;
  object_kind kind = object_kind::queue;
  std::string environment;
  bool ephemeral = false;
  int64_t created_at_ms = 0;
  uint64_t item_count = 0;  ///< queue: ready items in every partition; dict: entries
  uint64_t byte_count = 0;  ///< their payload bytes (dict: values)
  uint32_t partition_count = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, object_info& x) {
  return f(caf::meta::type_name("object_info"), x.name, x.kind, x.environment, x.ephemeral,
           x.created_at_ms, x.item_count, x.byte_count, x.partition_count);
}

struct queue_put_request {
  std::string environment;
  std::string name;
  std::string partition;
  std::vector<std::string> items;
  uint64_t partition_ttl_ms = 0; ///< 0: the default
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, queue_put_request& x) {
  return f(caf::meta::type_name("queue_put_request"), x.environment, x.name, x.partition, x.items,
           x.partition_ttl_ms);
}

struct queue_get_request {
  std::string environment;
  std::string name;
  std::string partition;
  uint32_t max_items = 1;
  uint64_t block_timeout_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, queue_get_request& x) {
  return f(caf::meta::type_name("queue_get_request"), x.environment, x.name, x.partition,
           x.max_items, x.block_timeout_ms);
}

struct queue_peek_request {
  std::string environment;
  std::string name;
  std::string partition;
  uint64_t cursor = 0;  ///< the first seq wanted
  uint32_t limit = 100;
  uint64_t block_timeout_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, queue_peek_request& x) {
  return f(caf::meta::type_name("queue_peek_request"), x.environment, x.name, x.partition,
           x.cursor, x.limit, x.block_timeout_ms);
}

struct queue_page {
  std::vector<std::pair<uint64_t, std::string>> items; ///< (seq, payload), in order
  uint64_t next_cursor = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, queue_page& x) {
  return f(caf::meta::type_name("queue_page"), x.items, x.next_cursor);
}

struct dict_put_request {
  std::string environment;
  std::string name;
  std::string key;
  std::string value;
  bool skip_if_exists = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, dict_put_request& x) {
  return f(caf::meta::type_name("dict_put_request"), x.environment, x.name, x.key, x.value,
           x.skip_if_exists);
}

struct dict_value {
  bool found = false;
  std::string value;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, dict_value& x) {
  return f(caf::meta::type_name("dict_value"), x.found, x.value);
}

struct dict_scan_request {
  std::string environment;
  std::string name;
  std::string cursor;     ///< the last key of the previous page ("" with `from_start`)
  bool from_start = true;
  uint32_t limit = 100;
  bool with_values = true;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, dict_scan_request& x) {
  return f(caf::meta::type_name("dict_scan_request"), x.environment, x.name, x.cursor,
           x.from_start, x.limit, x.with_values);
}

struct dict_page {
  std::vector<std::pair<std::string, std::string>> entries; ///< (key, value or "")
  std::string next_cursor;
  bool done = true;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, dict_page& x) {
  return f(caf::meta::type_name("dict_page"), x.entries, x.next_cursor, x.done);
}

using entry_list = std::vector<std::pair<std::string, std::string>>;

/// A one-shot answer for a request that does not come from an actor: the capnp bridge sends
/// puts and gets with one, so the broker's answer goes straight to the kj thread (through its
/// mailbox, which batches wake-ups) instead of through a helper actor. `answer` may run on the
/// broker's thread or, for a durable success, on the storage writer's thread (a
/// `storage::durable_hook`, so the answer skips the hop back through the broker); the first call
/// wins, later ones do nothing, and it must only hand the result over. If the last reference goes
/// unanswered (the broker stopped, the message was dropped), the destructor answers with
/// errc::unavailable, so a caller never waits forever.
template <class T>
class direct_reply {
public:
  using callback = std::function<void(caf::expected<T>)>;

  explicit direct_reply(callback answer) : answer_(std::move(answer)) {}
  ~direct_reply() {
    if (!answered_.load(std::memory_order_acquire))
      answer_(make_error(errc::unavailable, "the queue broker stopped before answering"));
  }
  direct_reply(const direct_reply&) = delete;
  direct_reply& operator=(const direct_reply&) = delete;

  /// Answers unless an answer was given already. Any thread.
  void answer(caf::expected<T> result) {
    if (!answered_.exchange(true, std::memory_order_acq_rel))
      answer_(std::move(result));
  }

private:
  const callback answer_;
  std::atomic<bool> answered_{false};
};

/// shared_ptr: the reply travels in a message and is copied into continuations; the last copy
/// answers if nobody did.
using put_reply = std::shared_ptr<direct_reply<caf::unit_t>>;
using get_reply = std::shared_ptr<direct_reply<std::vector<std::string>>>;

// Objects (both kinds).
using lookup_atom = caf::atom_constant<caf::atom("qb_lookup")>;
using create_atom = caf::atom_constant<caf::atom("qb_create")>;
using ephemeral_atom = caf::atom_constant<caf::atom("qb_ephem")>;
using delete_atom = caf::atom_constant<caf::atom("qb_delete")>;
using list_atom = caf::atom_constant<caf::atom("qb_list")>;
// Queues.
using queue_put_atom = caf::atom_constant<caf::atom("q_put")>;
using queue_get_atom = caf::atom_constant<caf::atom("q_get")>;
using queue_len_atom = caf::atom_constant<caf::atom("q_len")>;
using queue_clear_atom = caf::atom_constant<caf::atom("q_clear")>;
using queue_peek_atom = caf::atom_constant<caf::atom("q_peek")>;
// Dicts.
using dict_get_atom = caf::atom_constant<caf::atom("d_get")>;
using dict_put_atom = caf::atom_constant<caf::atom("d_put")>;
using dict_update_atom = caf::atom_constant<caf::atom("d_update")>;
using dict_pop_atom = caf::atom_constant<caf::atom("d_pop")>;
using dict_has_atom = caf::atom_constant<caf::atom("d_has")>;
using dict_len_atom = caf::atom_constant<caf::atom("d_len")>;
using dict_scan_atom = caf::atom_constant<caf::atom("d_scan")>;
using dict_clear_atom = caf::atom_constant<caf::atom("d_clear")>;

/// Every `std::string, std::string` pair after an atom is (environment, name).
using queue_broker_actor = caf::typed_actor<
  /// kind, environment, name, create_if_missing -> info; [not_found].
  caf::replies_to<lookup_atom, object_kind, std::string, std::string, bool>::with<object_info>,
  /// kind, environment, name -> info; [already_exists].
  caf::replies_to<create_atom, object_kind, std::string, std::string>::with<object_info>,
  /// kind, environment, owner -> a new ephemeral object. It is deleted when `owner` terminates
  /// (if valid), on `delete_atom`, or at the next start.
  caf::replies_to<ephemeral_atom, object_kind, std::string, caf::actor>::with<object_info>,
  caf::replies_to<delete_atom, object_kind, std::string, std::string>::with<void>,
  /// kind, environment -> named (not ephemeral) objects, sorted by name.
  caf::replies_to<list_atom, object_kind, std::string>::with<std::vector<object_info>>,
  caf::replies_to<queue_put_atom, queue_put_request>::with<void>,
  /// The same, answered through `put_reply` (the capnp bridge's hot path).
  caf::reacts_to<queue_put_atom, queue_put_request, put_reply>,
  /// -> up to max_items payloads; none when the wait ended without items.
  caf::replies_to<queue_get_atom, queue_get_request>::with<std::vector<std::string>>,
  caf::reacts_to<queue_get_atom, queue_get_request, get_reply>,
  /// environment, name, partition, total -> item count.
  caf::replies_to<queue_len_atom, std::string, std::string, std::string, bool>::with<uint64_t>,
  /// environment, name, partition, all.
  caf::replies_to<queue_clear_atom, std::string, std::string, std::string, bool>::with<void>,
  caf::replies_to<queue_peek_atom, queue_peek_request>::with<queue_page>,
  /// environment, name, key.
  caf::replies_to<dict_get_atom, std::string, std::string, std::string>::with<dict_value>,
  /// -> whether the value was written (false: skip_if_exists and the key was present).
  caf::replies_to<dict_put_atom, dict_put_request>::with<bool>,
  caf::replies_to<dict_update_atom, std::string, std::string, entry_list>::with<void>,
  caf::replies_to<dict_pop_atom, std::string, std::string, std::string>::with<dict_value>,
  caf::replies_to<dict_has_atom, std::string, std::string, std::string>::with<bool>,
  caf::replies_to<dict_len_atom, std::string, std::string>::with<uint64_t>,
  caf::replies_to<dict_scan_atom, dict_scan_request>::with<dict_page>,
  caf::replies_to<dict_clear_atom, std::string, std::string>::with<void>,
  inspect_handler>;

struct queue_broker_config {
  queue_limits limits;
  /// How often expired partitions are looked for.
  std::chrono::milliseconds sweep_interval{1000};
};

/// Loads every queue and dict from `db` (deleting ephemeral leftovers of a previous run), then
/// serves. `db` must outlive the actor; every mutation goes through `writer`. Stop it before the
/// writer (daemon.cpp): mutations in flight then still get their replies.
///
/// With a `unit`, the broker runs on that unit's thread (pinned_actor.hpp): shoald pins it, and a
/// writer of its own (`storage::spawn_pinned_writer`), to the RPC server's kj thread, so a queue
/// operation is decoded, applied, made durable and answered without a thread hand-off.
queue_broker_actor spawn_queue_broker(caf::actor_system& sys, const storage::store& db,
                                      storage::writer_actor writer, queue_broker_config cfg = {},
                                      std::shared_ptr<pinned_unit> unit = nullptr);

} // namespace shoal::queue_broker

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::queue_broker::put_reply)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::queue_broker::get_reply)
