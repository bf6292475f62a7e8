#include "actors/node_agent/node_agent_actor.hpp"

#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace shoal::node_agent {

namespace {

struct node_agent_state {
  node_capacity capacity;
  std::string lifecycle = "joining";
  static inline const char* name = "node_agent";
};

using self_ptr = node_agent_actor::stateful_pointer<node_agent_state>;

node_agent_actor::behavior_type node_agent_impl(self_ptr self, node_capacity capacity) {
  self->state.capacity = std::move(capacity);
  self->state.lifecycle = "ready";
  return {
    [self](inspect_atom) -> actor_snapshot {
      const auto& cap = self->state.capacity;
      auto s = snapshot_of(self, "node_agent", "node_agent", self->state.lifecycle);
      s.counter("cpu_count", cap.cpu_count)
        .counter("memory_bytes", static_cast<int64_t>(cap.memory_bytes));
      for (const auto& [k, v] : cap.labels)
        s.detail("label." + k, v);
      return s;
    },
  };
}

} // namespace

node_capacity measure_capacity(std::vector<std::pair<std::string, std::string>> labels) {
  node_capacity cap;
  auto cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  cap.cpu_count = cpus > 0 ? static_cast<uint32_t>(cpus) : 1;
  auto pages = ::sysconf(_SC_PHYS_PAGES);
  auto page_size = ::sysconf(_SC_PAGESIZE);
  cap.memory_bytes = pages > 0 && page_size > 0
                       ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size)
                       : 0;
  cap.labels = std::move(labels);
  return cap;
}

node_agent_actor spawn_node_agent(caf::actor_system& sys, node_capacity capacity) {
  return sys.spawn(node_agent_impl, std::move(capacity));
}

} // namespace shoal::node_agent
