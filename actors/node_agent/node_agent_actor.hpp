#pragma once
/// `node_agent`: one per worker node. It measures the node's capacity and labels, and owns the
/// node's containers: for each `start_container` it prepares what the container needs (the image
/// tree, the app's code materialised from blobs) and spawns a `container_supervisor`, which then
/// talks to the scheduler directly.
///
/// State diagram (DESIGN.md §8): joining --capacity measured--> ready ⇄ draining --> lost.
/// In the embedded cluster the agent and the scheduler share a process; the agent is `ready` as
/// soon as it is spawned.

#include <cstdint>
#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/typed_actor.hpp>

#include "actors/scheduler/scheduler_actor.hpp"
#include "runtime/inspect.hpp"

namespace shoal::node_agent {

using start_container_atom = caf::atom_constant<caf::atom("ct_start")>;
using stop_container_atom = caf::atom_constant<caf::atom("ct_stop")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;

struct container_request {
  std::string container_id;
  scheduler::function_def function;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, container_request& x) {
  return f(caf::meta::type_name("container_request"), x.container_id, x.function);
}

struct node_capacity {
  uint32_t cpu_count = 0;
  uint64_t memory_bytes = 0;
  std::vector<std::pair<std::string, std::string>> labels;
};

/// Reads the capacity of the machine this process runs on.
node_capacity measure_capacity(std::vector<std::pair<std::string, std::string>> labels);

/// - `start_container_atom, request`: boots a container; the outcome reaches the scheduler as
///   `ready_atom` or `exited_atom` from its supervisor.
/// - `stop_container_atom, id`: graceful stop of one container (booting or running).
/// - `drain_atom` -> the number of containers that were stopped, once every one has ended (and
///   cleaned up its mounts and cgroups). New start requests are refused from then on.
using node_agent_actor
  = caf::typed_actor<caf::reacts_to<start_container_atom, container_request>,
                     caf::reacts_to<stop_container_atom, std::string>,
                     caf::replies_to<drain_atom>::with<uint32_t>,
                     inspect_handler>;

} // namespace shoal::node_agent
