#pragma once
/// Actor inspection: every Shoal actor answers `inspect_atom` with an `actor_snapshot`, which the
/// gateway serves as `Session.listActors/inspectActor` and the admin console renders.
///
/// An actor's typed interface includes `inspect_handler` (see `inspectable_actor`), and its
/// behaviour builds the snapshot with `snapshot_of(self, kind, state)` so that the name and the
/// mailbox depth are filled the same way everywhere.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

namespace shoal {

using inspect_atom = caf::atom_constant<caf::atom("inspect")>;

struct actor_snapshot {
  std::string name;  ///< unique within the process: "gateway", "storage_writer"
  std::string kind;  ///< the service it implements
  std::string state; ///< lifecycle state from the actor's state diagram
  uint64_t mailbox_depth = 0;
  std::vector<std::pair<std::string, int64_t>> counters;
  std::vector<std::pair<std::string, std::string>> details;

  actor_snapshot& counter(std::string counter_name, int64_t value) {
    counters.emplace_back(std::move(counter_name), value);
    return *this;
  }
  actor_snapshot& detail(std::string key, std::string value) {
    details.emplace_back(std::move(key), std::move(value));
    return *this;
  }
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, actor_snapshot& x) {
  return f(caf::meta::type_name("actor_snapshot"), x.name, x.kind, x.state, x.mailbox_depth,
           x.counters, x.details);
}

/// The message every actor answers.
using inspect_handler = caf::replies_to<inspect_atom>::with<actor_snapshot>;

/// The view of any actor that the directory keeps.
using inspectable_actor = caf::typed_actor<inspect_handler>;

/// Fills name and mailbox depth from `self` (a stateful or plain scheduled actor pointer).
/// Call it inside the inspect handler: the depth counts the messages still waiting behind it.
template <class Self>
actor_snapshot snapshot_of(Self* self, std::string name, std::string kind, std::string state) {
  actor_snapshot s;
  s.name = std::move(name);
  s.kind = std::move(kind);
  s.state = std::move(state);
  s.mailbox_depth = self->mailbox().size();
  return s;
}

} // namespace shoal
