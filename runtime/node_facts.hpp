#pragma once
/// What a shoald process knows about itself, fixed at start; served as `ClusterInfo`.

#include <cstdint>
#include <string>
#include <vector>

namespace shoal {

struct node_facts {
  std::string version;
  std::string node_id;            ///< stable across restarts, kept in the state dir
  std::vector<std::string> roles; ///< "control", "worker"
  std::string listen_address;     ///< filled once the RPC server is bound
  std::string state_dir;
  uint32_t pid = 0;
  int64_t started_at_ms = 0;
  uint32_t schema_version = 0;
};

} // namespace shoal
