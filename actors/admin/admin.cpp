#include "actors/admin/admin_actor.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "runtime/errc.hpp"

namespace shoal::admin {

namespace {

constexpr auto inspect_deadline = std::chrono::seconds(2);

struct admin_state {
  std::map<std::string, inspectable_actor> actors;
  uint64_t registrations = 0;
  uint64_t list_requests = 0;
  static inline const char* name = "admin";
};

using self_ptr = admin_actor::stateful_pointer<admin_state>;

actor_snapshot self_snapshot(self_ptr self) {
  auto s = snapshot_of(self, "admin", "admin", "running");
  s.counter("registered_actors", static_cast<int64_t>(self->state.actors.size()))
    .counter("registrations", static_cast<int64_t>(self->state.registrations))
    .counter("list_requests", static_cast<int64_t>(self->state.list_requests));
  return s;
}

admin_actor::behavior_type admin_impl(self_ptr self) {
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& actors = self->state.actors;
    for (auto i = actors.begin(); i != actors.end();)
      if (i->second.address() == msg.source)
        i = actors.erase(i);
      else
        ++i;
  });
  return {
    [self](register_atom, std::string& name, inspectable_actor& handle) {
      self->monitor(handle);
      self->state.actors[name] = std::move(handle);
      ++self->state.registrations;
    },
    [self](list_atom) -> caf::result<std::vector<actor_snapshot>> {
      ++self->state.list_requests;
      struct collector {
        caf::typed_response_promise<std::vector<actor_snapshot>> promise;
        std::vector<actor_snapshot> snapshots;
        size_t pending = 0;
      };
      // shared_ptr: every response handler appends to the same collector; the last delivers.
      auto acc = std::make_shared<collector>();
      acc->promise = self->make_response_promise<std::vector<actor_snapshot>>();
      acc->snapshots.push_back(self_snapshot(self));
      auto finish = [acc] {
        std::sort(acc->snapshots.begin(), acc->snapshots.end(),
                  [](const auto& a, const auto& b) { return a.name < b.name; });
        acc->promise.deliver(std::move(acc->snapshots));
      };
      acc->pending = self->state.actors.size();
      if (acc->pending == 0) {
        finish();
        return acc->promise;
      }
      for (auto& [name, handle] : self->state.actors) {
        self->request(handle, inspect_deadline, inspect_atom::value)
          .then(
            [acc, finish](actor_snapshot& snap) {
              acc->snapshots.push_back(std::move(snap));
              if (--acc->pending == 0)
                finish();
            },
            [acc, finish, name = name](caf::error&) {
              actor_snapshot snap;
              snap.name = name;
              snap.state = "unresponsive";
              acc->snapshots.push_back(std::move(snap));
              if (--acc->pending == 0)
                finish();
            });
      }
      return acc->promise;
    },
    [self](inspect_atom, const std::string& name) -> caf::result<actor_snapshot> {
      if (name == "admin")
        return self_snapshot(self);
      auto i = self->state.actors.find(name);
      if (i == self->state.actors.end())
        return make_error(errc::not_found,
                          "no actor named '" + name + "'; `shoal actor list` shows the names");
      return self->delegate(i->second, inspect_atom::value);
    },
    [self](inspect_atom) -> actor_snapshot { return self_snapshot(self); },
  };
}

} // namespace

admin_actor spawn_admin(caf::actor_system& sys) { return sys.spawn(admin_impl); }

} // namespace shoal::admin
