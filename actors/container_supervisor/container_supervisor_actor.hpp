#pragma once
/// `container_supervisor`: one per container (docs/functions.md). It boots the container under
/// crun, speaks the guest protocol over the guest hub, forwards inputs and outputs between the
/// scheduler and the guest, enforces per-input timeouts, streams logs, answers nested calls from
/// the guest, and cleans up every mount and cgroup when the container ends.
///
/// State diagram:
///
///     booting ──READY──► idle ⇄ busy ──stop──► draining ──exit──► stopped
///        │                 │                                       ▲
///        └──crash/FATAL────┴──────crash / OOM / input timeout──────┴──► crashed
///
/// Exactly one `exited_atom` reaches the scheduler per container, after cleanup and after every
/// `log_atom` of the container (its stdout and stderr are read to EOF first): the scheduler ends
/// an app's log streams on the exits of its containers.

#include <cstdint>
#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/typed_actor.hpp>

#include "actors/scheduler/scheduler_types.hpp"
#include "runtime/inspect.hpp"

namespace shoal::container_supervisor {

using run_atom = caf::atom_constant<caf::atom("run")>;
using cancel_input_atom = caf::atom_constant<caf::atom("cancel_in")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;

using container_supervisor_actor
  = caf::typed_actor<caf::reacts_to<run_atom, std::vector<scheduler::run_input>>,
                     caf::reacts_to<cancel_input_atom, uint64_t>,
                     /// Graceful: SHUTDOWN to the guest (exit hooks run), kill after a grace period.
                     caf::reacts_to<stop_atom>,
                     inspect_handler>;

} // namespace shoal::container_supervisor
