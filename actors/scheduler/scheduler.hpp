#pragma once
/// Spawning the scheduler (the composition root's view).

#include <chrono>
#include <string>

#include <caf/fwd.hpp>

#include "actors/node_agent/node_agent_actor.hpp"
#include "actors/scheduler/scheduler_actor.hpp"
#include "storage/store.hpp"
#include "storage/writer.hpp"

namespace shoal::scheduler {

struct scheduler_config {
  /// The node whose agent this scheduler starts containers on (shown in container listings).
  std::string node_id;
  /// An ephemeral app whose client sent no heartbeat for this long is stopped.
  std::chrono::milliseconds heartbeat_timeout{60000};
  /// Containers of one function that die before READY this many times in a row make its pending
  /// inputs fail with the last container's error.
  uint32_t crash_loop_limit = 3;
  /// How long a crash-looping function fails new inputs at once before trying containers again.
  std::chrono::milliseconds crash_loop_cooldown{10000};
  /// Period of the housekeeping tick (retries, scale down, heartbeats).
  std::chrono::milliseconds tick{250};
  /// Containers this scheduler keeps at once across all functions (0: 2 per core, at least 4).
  uint32_t max_total_containers = 0;
  /// Containers one function may have booting at once; more demand waits for them to be ready.
  uint32_t max_booting_per_function = 4;
  /// Log lines kept per app for `shoal app logs`.
  size_t log_lines_kept = 2000;
};

/// Reloads deployed apps, their functions and unfinished spawned calls from `db`, then serves.
/// `db` must outlive the actor. `node` may be invalid (control-only process): inputs then wait
/// until a node can run them.
/// The node agent learns the scheduler from the sender of its first `start_container_atom`.
scheduler_actor spawn_scheduler(caf::actor_system& sys, const storage::store& db,
                                storage::writer_actor writer, node_agent::node_agent_actor node,
                                scheduler_config cfg);

} // namespace shoal::scheduler
