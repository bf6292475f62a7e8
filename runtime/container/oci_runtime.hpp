#pragma once
/// `oci_runtime`: starts, signals and removes OCI containers from a prepared bundle. The crun
/// implementation is crun_runtime; tests of the supervisor pass a fake.
///
/// How a caller sequences one container (every step after start() is required, in this order,
/// whether the container ran to completion, crashed, timed out or failed to start):
///
///     overlay_rootfs::mount(image, bundle)        <bundle>/rootfs
///     write_bundle_config(bundle, spec)           spec.cgroups_path = cgroups_path_for(id)
///     pid = runtime.start(bundle, id, out, err)   returns once the container runs; close your
///                                                 copies of the write ends of out/err now
///     ... read out/err until EOF; runtime.kill(id, SIGKILL) to stop it early ...
///     waitpid(pid, &status, 0)                    the container's pid 1 has ended
///     oom = runtime.was_oom_killed(id)            the cgroup still exists: read it NOW
///     ex  = decode_wait_status(status, *oom)
///     runtime.remove(id)                          `crun delete --force`: state + leaf cgroup
///     runtime.remove_cgroup_parents(cgroups_path_for(id))   the dirs crun leaves behind
///     rootfs.release()                            unmount the overlay, drop its upper dir
///
/// If start() fails there is no pid to wait for: go straight to remove(). remove(),
/// remove_cgroup_parents() and release() are idempotent, so a supervisor that restarts after a
/// crash can run them again for any id it finds in its records.

#include <string>
#include <sys/types.h>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace shoal::container {

/// How a container's pid 1 ended.
struct exit_status {
  /// The exit code when it exited normally; -1 when killed by a signal.
  int exit_code = -1;
  /// The terminating signal; 0 when it exited normally.
  int signal = 0;
  /// The kernel OOM-killed a process of the container (its memory limit was reached).
  bool oom_killed = false;

  bool exited_normally() const noexcept { return signal == 0; }
  /// True for exit code 0 without OOM.
  bool success() const noexcept { return signal == 0 && exit_code == 0 && !oom_killed; }
  /// "exited with code 3", "killed by signal 9 (SIGKILL)", "... after running out of memory".
  std::string describe() const;
};

/// Turns a waitpid status of the pid returned by oci_runtime::start into an exit_status.
/// `oom_killed` comes from oci_runtime::was_oom_killed (the wait status cannot tell an OOM kill
/// from any other SIGKILL).
exit_status decode_wait_status(int wait_status, bool oom_killed = false);

class oci_runtime {
public:
  virtual ~oci_runtime() = default;

  /// Creates and starts container `id` from `<bundle_dir>/config.json` and returns a pid the
  /// caller must waitpid for: it ends when the container's pid 1 ends, with the same exit code
  /// or terminating signal. The container's stdout and stderr go to `stdout_fd`/`stderr_fd`
  /// (typically pipe write ends; -1 means /dev/null); the caller keeps ownership of them and
  /// should close its copies once start returns, so that its reads end with the container.
  /// Blocks until the container runs (tens of ms). On failure the container is removed and the
  /// error carries the runtime's message. Thread-safe.
  [[nodiscard]] virtual caf::expected<pid_t> start(const std::string& bundle_dir,
                                                   const std::string& id, int stdout_fd,
                                                   int stderr_fd) = 0;

  /// Sends `signal` to the container's pid 1 (SIGKILL stops it for sure; pid 1 ignores signals
  /// it has no handler for). errc::not_found when the container is not running.
  [[nodiscard]] virtual caf::error kill(const std::string& id, int signal) = 0;

  /// Whether the kernel OOM-killed a process of container `id`. Valid after the pid from start()
  /// was reaped and before remove(); afterwards the cgroup is gone (errc::not_found).
  [[nodiscard]] virtual caf::expected<bool> was_oom_killed(const std::string& id) = 0;

  /// Deletes the container, killing it first if it still runs (`crun delete --force`): its state
  /// and its leaf cgroup. Idempotent: removing an unknown id succeeds.
  [[nodiscard]] virtual caf::error remove(const std::string& id) = 0;

  /// Removes the cgroup directories the runtime leaves behind for `cgroups_path` (its leaf, if
  /// still there, and unused parents). After remove(). Idempotent.
  [[nodiscard]] virtual caf::error remove_cgroup_parents(const std::string& cgroups_path) = 0;
};

} // namespace shoal::container
