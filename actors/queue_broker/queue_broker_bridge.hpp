#pragma once
/// The Cap'n Proto face of the queue broker: `Queues` (schema/queues.capnp), one per session,
/// scoped to the session's environment, and the `EphemeralObject` handles it gives out (dropping
/// one deletes its object). Method bodies forward to the broker with `bridge::ask`. kj thread only.

#include <string>

#include <capnp/capability.h>
#include <caf/fwd.hpp>

#include "actors/queue_broker/queue_broker_actor.hpp"
#include "runtime/rpc_server.hpp"

namespace shoal::queue_broker {

/// A `Queues` capability for `environment`; `ctx` must outlive it (rpc_server guarantees it).
capnp::Capability::Client make_queues(rpc_context& ctx, caf::actor_system& sys,
                                      queue_broker_actor broker, std::string environment);

} // namespace shoal::queue_broker
