#pragma once
/// The Cap'n Proto face of the scheduler: `Functions` (schema/functions.capnp), one per session,
/// scoped to the session's environment. Method bodies forward to the scheduler with
/// `bridge::ask`; outputs and log lines the scheduler pushes reach the client through sinks that
/// post to the kj mailbox (see `output_sink` in scheduler_types.hpp). kj thread only.

#include <string>

#include <capnp/capability.h>
#include <caf/fwd.hpp>

#include "actors/scheduler/scheduler_actor.hpp"
#include "runtime/rpc_server.hpp"

namespace shoal::scheduler {

/// A `Functions` capability for `environment`; `ctx` must outlive it (rpc_server guarantees it).
capnp::Capability::Client make_functions(rpc_context& ctx, caf::actor_system& sys,
                                         scheduler_actor scheduler, std::string environment);

} // namespace shoal::scheduler
