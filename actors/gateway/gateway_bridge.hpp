#pragma once
/// The Cap'n Proto face of the gateway: `Gateway` (the bootstrap capability of every connection)
/// and the `Session`s it returns. Each method body forwards to an actor through `bridge::ask` and
/// holds a `call_gate` pass while it runs. kj thread only.

#include <capnp/capability.h>
#include <caf/fwd.hpp>

#include "actors/admin/admin_actor.hpp"
#include "actors/block_server/block_server_actor.hpp"
#include "actors/image_builder/image_builder_actor.hpp"
#include "actors/queue_broker/queue_broker_actor.hpp"
#include "actors/gateway/gateway_actor.hpp"
#include "actors/scheduler/scheduler_actor.hpp"
#include "runtime/node_facts.hpp"
#include "runtime/rpc_server.hpp"

namespace shoal::gateway {

/// Everything a gateway bridge forwards to; handles are copied into each capability.
struct bridge_targets {
  caf::actor_system* sys = nullptr;
  gateway_actor gateway;
  admin::admin_actor admin;
  scheduler::scheduler_actor scheduler; ///< invalid in a worker-only process
  node_facts facts;
  queue_broker::queue_broker_actor queue_broker; ///< invalid in a worker-only process
  images::image_builder_actor image_builder;     ///< invalid in a worker-only process
  block_server::block_server_actor block_server; ///< this node's chunk store
};

/// The bootstrap capability; `ctx` must outlive it (rpc_server guarantees that).
capnp::Capability::Client make_bootstrap(rpc_context& ctx, bridge_targets targets);

} // namespace shoal::gateway
