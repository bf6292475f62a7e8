#include "actors/node_agent/node_agent.hpp"

#include <map>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "runtime/log.hpp"

namespace shoal::node_agent {

namespace {

using supervisor_actor = container_supervisor::container_supervisor_actor;

struct node_agent_state {
  node_capacity capacity;
  const container_supervisor::node_services* services = nullptr;
  admin::admin_actor admin;
  std::string lifecycle = "joining";
  std::map<std::string, supervisor_actor> containers; ///< running supervisors by container id
  uint64_t containers_started = 0;
  bool draining = false;
  uint32_t drained = 0;
  std::vector<caf::typed_response_promise<uint32_t>> drain_waiters;
  static inline const char* name = "node_agent";
};

using self_ptr = node_agent_actor::stateful_pointer<node_agent_state>;

node_agent_actor::behavior_type node_agent_impl(self_ptr self, node_capacity capacity,
                                                const container_supervisor::node_services* services,
                                                admin::admin_actor admin) {
  self->state.capacity = std::move(capacity);
  self->state.services = services;
  self->state.admin = std::move(admin);
  self->state.lifecycle = "ready";
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& cs = self->state.containers;
    for (auto i = cs.begin(); i != cs.end(); ++i)
      if (i->second.address() == msg.source) {
        cs.erase(i);
        break;
      }
    if (cs.empty())
      for (auto& rp : self->state.drain_waiters)
        rp.deliver(self->state.drained);
    if (cs.empty())
      self->state.drain_waiters.clear();
  });
  return {
    [self](start_container_atom, container_request& req) {
      auto& st = self->state;
      auto scheduler = caf::actor_cast<scheduler::scheduler_actor>(self->current_sender());
      if (st.draining) {
        scheduler::container_exit exit;
        exit.requested = true;
        exit.reason = "the node is shutting down";
        self->send(scheduler, scheduler::exited_atom::value, req.container_id, std::move(exit));
        return;
      }
      container_supervisor::supervisor_config cfg{req.container_id, std::move(req.function),
                                                  scheduler, st.services};
      auto sup = container_supervisor::spawn_supervisor(self->system(), std::move(cfg));
      self->monitor(sup);
      st.containers[req.container_id] = sup;
      ++st.containers_started;
      if (st.admin)
        self->send(st.admin, admin::register_atom::value, req.container_id,
                   caf::actor_cast<inspectable_actor>(sup));
    },
    [self](stop_container_atom, const std::string& container_id) {
      auto i = self->state.containers.find(container_id);
      if (i != self->state.containers.end())
        self->send(i->second, container_supervisor::stop_atom::value);
    },
    [self](drain_atom) -> caf::result<uint32_t> {
      auto& st = self->state;
      st.draining = true;
      st.lifecycle = "draining";
      st.drained = static_cast<uint32_t>(st.containers.size());
      if (st.containers.empty())
        return uint32_t{0};
      for (auto& [id, sup] : st.containers)
        self->send(sup, container_supervisor::stop_atom::value);
      auto rp = self->make_response_promise<uint32_t>();
      st.drain_waiters.push_back(rp);
      return rp;
    },
    [self](inspect_atom) -> actor_snapshot {
      const auto& st = self->state;
      const auto& cap = st.capacity;
      auto s = snapshot_of(self, "node_agent", "node_agent", st.lifecycle);
      s.counter("cpu_count", cap.cpu_count)
        .counter("memory_bytes", static_cast<int64_t>(cap.memory_bytes))
        .counter("containers", static_cast<int64_t>(st.containers.size()))
        .counter("containers_started", static_cast<int64_t>(st.containers_started));
      for (const auto& [k, v] : cap.labels)
        s.detail("label." + k, v);
      if (st.services)
        s.detail("node_id", st.services->node_id);
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

node_agent_actor spawn_node_agent(caf::actor_system& sys, node_capacity capacity,
                                  const container_supervisor::node_services* services,
                                  admin::admin_actor admin) {
  return sys.spawn(node_agent_impl, std::move(capacity), services, std::move(admin));
}

} // namespace shoal::node_agent
