#pragma once
/// `admin`: the directory of every inspectable actor in this process, and the data source of
/// `Session.listActors/inspectActor` (and of the HTTP admin console, later).
///
/// Actors are registered by whoever spawns them (the composition root, the node agent for its
/// supervisors). The admin monitors each one and forgets it when it terminates.
///
/// State diagram: running --exit--> stopped (pending list requests fail with unavailable).

#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/typed_actor.hpp>

#include "runtime/inspect.hpp"

namespace shoal::admin {

using register_atom = caf::atom_constant<caf::atom("register")>;
using list_atom = caf::atom_constant<caf::atom("list")>;

/// - `register_atom, name, handle`: adds `handle` under `name` (a later registration under the same
///   name replaces the earlier one).
/// - `list_atom` -> snapshots of every registered actor (and of the admin itself), sorted by name.
///   An actor that does not answer within the deadline is listed with state "unresponsive".
/// - `inspect_atom, name` -> that actor's snapshot, or errc::not_found.
using admin_actor
  = caf::typed_actor<caf::reacts_to<register_atom, std::string, inspectable_actor>,
                     caf::replies_to<list_atom>::with<std::vector<actor_snapshot>>,
                     caf::replies_to<inspect_atom, std::string>::with<actor_snapshot>,
                     inspect_handler>;

admin_actor spawn_admin(caf::actor_system& sys);

} // namespace shoal::admin
