#pragma once
/// Spawning a container supervisor (the node agent's view).

#include <memory>
#include <string>

#include <caf/fwd.hpp>

#include "actors/container_supervisor/container_supervisor_actor.hpp"
#include "actors/queue_broker/queue_broker_actor.hpp"
#include "actors/scheduler/scheduler_actor.hpp"
#include "storage/store.hpp"

namespace shoal::guest {
class guest_hub;
}
namespace shoal::container {
class oci_runtime;
}
namespace shoal::images {
class image_service;
}

namespace shoal::container_supervisor {

/// What every supervisor on a node shares; owned by the composition root, outliving the actors.
struct node_services {
  std::string node_id;
  std::string state_dir;       ///< bundles under <state_dir>/containers, code under <state_dir>/code
  std::string run_dir;         ///< short path for guest sockets (/run/shoal/<pid>)
  std::string sdk_dir;         ///< the directory holding the `shoal` package, mounted read-only
  const storage::store* db = nullptr;
  guest::guest_hub* hub = nullptr;
  container::oci_runtime* runtime = nullptr;
  /// Image trees (materialised once per node) and image records.
  images::image_service* images = nullptr;
  /// Serves the guest's queue.* and dict.* calls (data_calls.hpp); invalid without the control role.
  queue_broker::queue_broker_actor queue_broker;
  /// Grace period between SHUTDOWN and SIGKILL when a container is stopped.
  std::chrono::milliseconds stop_grace{5000};
};

struct supervisor_config {
  std::string container_id;
  scheduler::function_def function;
  scheduler::scheduler_actor scheduler;
  const node_services* services = nullptr;
};

/// Spawns the supervisor on the shared scheduler; what blocks (boot: image, mounts, crun; cleanup)
/// runs in detached helpers, so the input/output path never waits on a thread of its own.
container_supervisor_actor spawn_supervisor(caf::actor_system& sys, supervisor_config cfg);

} // namespace shoal::container_supervisor
