#pragma once
/// `crun_runtime`: oci_runtime on top of the crun binary (Debian's crun 1.8.1).
///
/// Host preparation: on this project's hybrid cgroup hosts crun refuses to run unless the daemon
/// first called prepare_host_for_crun() (host_cgroups.hpp) on its main thread, before starting
/// any thread. start() does not do it for you, because by then threads exist.
///
/// Each started container is watched by a `shoal-container-shim` process (container_shim.hpp),
/// the pid start() returns. The container's cgroups are at cgroups_path_for(id) ("/shoal/<id>"),
/// so the bundle's config must use that path for was_oom_killed to find them.
///
/// Files crun_runtime writes into the bundle: `crun.pid` (pid 1's host pid) and `crun.log`
/// (crun's own error messages, quoted in start()'s errors). Thread-safe: every method may be
/// called from any thread, concurrently.

#include <initializer_list>
#include <shared_mutex>
#include <string>
#include <vector>

#include "runtime/container/host_cgroups.hpp"
#include "runtime/container/oci_runtime.hpp"
#include "runtime/container/oci_spec.hpp"

namespace shoal::container {

struct crun_options {
  /// The crun binary.
  std::string crun_path = "/usr/bin/crun";
  /// crun's state dir (`--root`); empty means crun's default, /run/crun, shared by everything on
  /// the host that uses crun. Container ids must be unique within it.
  std::string state_root;
  /// The shim executable; empty means default_shim_path().
  std::string shim_path;
  /// Where cgroup hierarchies are mounted.
  std::string cgroup_root = "/sys/fs/cgroup";
  /// How long start() waits for `crun create` + `crun start` before giving up (errc::timeout).
  int start_timeout_ms = 60'000;
};

/// The shim to use when crun_options::shim_path is empty: `shoal-container-shim` next to the
/// running executable if it exists there, otherwise the one in this build tree.
std::string default_shim_path();

class crun_runtime final : public oci_runtime {
public:
  explicit crun_runtime(crun_options options = {});

  [[nodiscard]] caf::expected<pid_t> start(const std::string& bundle_dir, const std::string& id,
                                           int stdout_fd, int stderr_fd) override;
  [[nodiscard]] caf::error kill(const std::string& id, int signal) override;
  [[nodiscard]] caf::expected<bool> was_oom_killed(const std::string& id) override;
  [[nodiscard]] caf::error remove(const std::string& id) override;
  /// Takes a lock that start() holds shared while crun creates cgroups, so that removing an
  /// empty shared parent ("/shoal") never pulls it from under a container being created by this
  /// process. (Another process creating containers under the same parent is not covered.)
  [[nodiscard]] caf::error remove_cgroup_parents(const std::string& cgroups_path) override;

  const crun_options& options() const noexcept { return options_; }

private:
  /// argv for a crun command, global options first.
  std::vector<std::string> crun_argv(std::initializer_list<std::string> args) const;

  crun_options options_;
  std::shared_mutex cgroup_lock_;
};

} // namespace shoal::container
