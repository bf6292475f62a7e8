#pragma once
/// Spawning the node agent (the composition root's view).

#include <caf/fwd.hpp>

#include "actors/admin/admin_actor.hpp"
#include "actors/container_supervisor/container_supervisor.hpp"
#include "actors/node_agent/node_agent_actor.hpp"

namespace shoal::node_agent {

/// `services` must outlive the agent and its supervisors; each supervisor is registered with
/// `admin` under its container id.
node_agent_actor spawn_node_agent(caf::actor_system& sys, node_capacity capacity,
                                  const container_supervisor::node_services* services,
                                  admin::admin_actor admin);

} // namespace shoal::node_agent
