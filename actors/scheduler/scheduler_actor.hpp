#pragma once
/// `scheduler`: apps, functions, calls and the containers that serve them (docs/functions.md).
///
/// State diagram of an input (per attempt):
///
///     PENDING ──dispatch──► DISPATCHED/RUNNING ──output──► SUCCEEDED | FAILED | CANCELLED
///        ▲                         │ failure or timeout with attempts left (after backoff)
///        └─────────────────────────┘ container crash: re-queued, attempt not counted
///
/// State diagram of a container (as the scheduler sees it):
///
///     REQUESTED ──ready──► IDLE ⇄ BUSY ──scale down / app stop──► DRAINING ──exit──► gone
///         └──exit before ready──► gone (counts towards the function's crash loop)
///
/// Durability: `spawn` is acknowledged after the call and its input are in RocksDB (through the
/// storage writer); a final output of a spawned call is written together with the deletion of its
/// input, so after a crash exactly the unfinished inputs are dispatched again.

#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/typed_actor.hpp>

#include "actors/scheduler/scheduler_types.hpp"
#include "runtime/inspect.hpp"

namespace shoal::scheduler {

// Client-facing (through the functions bridge).
using create_app_atom = caf::atom_constant<caf::atom("mk_app")>;
using stop_app_atom = caf::atom_constant<caf::atom("stop_app")>;
using heartbeat_atom = caf::atom_constant<caf::atom("heartbeat")>;
using list_apps_atom = caf::atom_constant<caf::atom("list_apps")>;
using lookup_atom = caf::atom_constant<caf::atom("lookup")>;
using call_atom = caf::atom_constant<caf::atom("call")>;
using map_atom = caf::atom_constant<caf::atom("map")>;
using push_atom = caf::atom_constant<caf::atom("push")>;
using close_atom = caf::atom_constant<caf::atom("close")>;
using spawn_atom = caf::atom_constant<caf::atom("spawn")>;
using get_atom = caf::atom_constant<caf::atom("get")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using missing_atom = caf::atom_constant<caf::atom("missing")>;
using put_blobs_atom = caf::atom_constant<caf::atom("put_blobs")>;
using logs_atom = caf::atom_constant<caf::atom("logs")>;
using containers_atom = caf::atom_constant<caf::atom("containers")>;
using stop_ct_atom = caf::atom_constant<caf::atom("stop_ct")>;
using derive_atom = caf::atom_constant<caf::atom("derive")>;

// Node-facing (node agents and container supervisors).
using ready_atom = caf::atom_constant<caf::atom("ct_ready")>;
using outputs_atom = caf::atom_constant<caf::atom("ct_out")>;
using exited_atom = caf::atom_constant<caf::atom("ct_exit")>;
using log_atom = caf::atom_constant<caf::atom("ct_log")>;

using scheduler_actor = caf::typed_actor<
  /// Registers an app and its functions (a new version for deployed apps) -> ids.
  caf::replies_to<create_app_atom, app_request>::with<app_created>,
  /// Stops the app `environment`/`name` (or app id): its containers drain, pending inputs fail.
  caf::replies_to<stop_app_atom, std::string, std::string>::with<void>,
  /// An ephemeral app's client is alive.
  caf::reacts_to<heartbeat_atom, std::string>,
  caf::replies_to<list_apps_atom, std::string>::with<std::vector<app_info>>,
  /// environment, app name, function name -> the newest version's function.
  caf::replies_to<lookup_atom, std::string, std::string, std::string>::with<function_def>,
  /// `.remote`: function id, args -> the final output.
  caf::replies_to<call_atom, std::string, std::string>::with<call_output>,
  /// `.map`: function id, sink -> call id; then push (index, args) batches and close.
  caf::replies_to<map_atom, std::string, output_sink_ptr>::with<std::string>,
  caf::replies_to<push_atom, std::string, std::vector<std::pair<uint64_t, std::string>>>::with<void>,
  caf::replies_to<close_atom, std::string>::with<void>,
  /// `.spawn`: durable; function id, args -> call id.
  caf::replies_to<spawn_atom, std::string, std::string>::with<std::string>,
  /// call id, timeout ms -> outputs so far and whether the call is finished.
  caf::replies_to<get_atom, std::string, uint64_t>::with<call_result>,
  caf::replies_to<cancel_atom, std::string>::with<void>,
  /// Content-addressed code: which of these sha256 are unknown; store blobs (durable).
  caf::replies_to<missing_atom, std::vector<std::string>>::with<std::vector<std::string>>,
  caf::replies_to<put_blobs_atom, std::vector<std::pair<std::string, std::string>>>::with<void>,
  /// environment, app name, sink, follow: recent log lines, then live ones while `follow`, then
  /// the sink's `end()` once the app is stopped and all its containers exited (each container's
  /// last lines come before its exit, so none is lost).
  caf::replies_to<logs_atom, std::string, std::string, log_sink_ptr, bool>::with<void>,
  caf::replies_to<containers_atom>::with<std::vector<container_summary>>,
  caf::replies_to<stop_ct_atom, std::string>::with<void>,
  /// environment, base function id, new name, spec, the spec fields that replace the base's ->
  /// the derived function (existing one of that name in the same app: returned as is).
  caf::replies_to<derive_atom, std::string, std::string, std::string, function_def,
                  std::vector<std::string>>::with<function_def>,
  /// From supervisors: container id, capacity.
  caf::reacts_to<ready_atom, std::string, uint32_t>,
  caf::reacts_to<outputs_atom, std::string, std::vector<guest_output>>,
  caf::reacts_to<exited_atom, std::string, container_exit>,
  caf::reacts_to<log_atom, std::string, std::vector<log_line>>,
  inspect_handler>;

} // namespace shoal::scheduler
