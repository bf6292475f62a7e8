#pragma once
/// `node_agent`: one per worker node. It measures the node's capacity (cores, memory) and labels
/// and reports them; the functions work adds registration with the scheduler, heartbeats and the
/// container supervisors it starts.
///
/// State diagram (DESIGN.md §8): joining --capacity measured--> ready ⇄ draining --> lost.
/// This process has no control link yet, so an agent goes straight to `ready`.

#include <cstdint>
#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/typed_actor.hpp>

#include "runtime/inspect.hpp"

namespace shoal::node_agent {

struct node_capacity {
  uint32_t cpu_count = 0;
  uint64_t memory_bytes = 0;
  std::vector<std::pair<std::string, std::string>> labels;
};

/// Reads the capacity of the machine this process runs on.
node_capacity measure_capacity(std::vector<std::pair<std::string, std::string>> labels);

using node_agent_actor = caf::typed_actor<inspect_handler>;

node_agent_actor spawn_node_agent(caf::actor_system& sys, node_capacity capacity);

} // namespace shoal::node_agent
