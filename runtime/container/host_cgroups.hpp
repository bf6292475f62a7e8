#pragma once
/// The host side of containers' cgroups: making crun usable on a hybrid cgroup host, removing
/// the cgroup directories crun leaves behind, and reading a container's OOM-kill counter.
///
/// Layouts (shared/notes/PLATFORM.md §9):
///   v1       /sys/fs/cgroup is a tmpfs of v1 hierarchies (memory, pids, cpu, ...), no cgroup2;
///   v2       /sys/fs/cgroup is itself cgroup2;
///   hybrid   v1 hierarchies plus cgroup2 at /sys/fs/cgroup/unified. crun refuses to run when
///            unified/cgroup.controllers is non-empty ("cgroups in hybrid mode not supported").

#include <string>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace shoal::container {

/// What prepare_host_for_crun found, and did.
enum class host_cgroup_layout {
  /// Pure cgroup v1: nothing to do.
  v1,
  /// Pure cgroup v2 (unified hierarchy at /sys/fs/cgroup): nothing to do.
  v2,
  /// Hybrid, but no controller is bound to v2: crun accepts it as is.
  hybrid_without_v2_controllers,
  /// Hybrid with v2 controllers: this process now runs in a private mount namespace (root
  /// mount rslave) where /sys/fs/cgroup/unified is unmounted, so crun sees pure v1.
  hybrid_unified_hidden,
};

/// "v1", "v2", "hybrid_without_v2_controllers", "hybrid_unified_hidden".
const char* to_string(host_cgroup_layout layout) noexcept;

/// Makes this process able to run crun. Call it once at daemon start-up, on the main thread,
/// BEFORE any other thread exists: unshare(CLONE_NEWNS) moves only the calling thread into the
/// new mount namespace, and threads created afterwards inherit it (so do crun, overlay mounts
/// and every child). When work is needed and the process already has several threads it fails
/// with errc::internal instead of leaving threads in different namespaces.
///
/// On a hybrid host with v2 controllers it unshares the mount namespace, makes "/" recursively
/// slave (host mounts still propagate in, ours never leak out) and lazily unmounts
/// /sys/fs/cgroup/unified. Idempotent: once hidden, the next call finds a pure-v1 view and
/// reports hybrid_unified_hidden again without doing anything. A no-op on pure v1 and pure v2
/// hosts. Errors (errc::permission_denied without CAP_SYS_ADMIN, errc::internal otherwise)
/// say which step failed and why.
[[nodiscard]] caf::expected<host_cgroup_layout> prepare_host_for_crun();

/// Removes the directories of `cgroups_path` ("/shoal/ct-1") and then of its parents ("/shoal"),
/// bottom-up, in every hierarchy under `cgroup_root` (each v1 controller, name=systemd, and the
/// v2 root or unified dir). crun removes only the leaf (and not at all in the tmpfs dir that
/// replaces the hidden unified mount, where it leaves a stray cgroup.procs file). A directory
/// that still has children or tasks (another container under /shoal) is kept: that is not an
/// error. Missing directories are fine, so it is idempotent. Returns errc::storage_failure
/// naming the first directory that could not be removed for another reason.
///
/// Call it only after the container was removed (oci_runtime::remove). Removing a shared parent
/// races with a concurrent container creation under it; crun_runtime::remove_cgroup_parents
/// serializes the two within one process.
[[nodiscard]] caf::error remove_cgroup_parents(const std::string& cgroups_path,
                                               const std::string& cgroup_root = "/sys/fs/cgroup");

/// Whether the kernel OOM-killed a process of the cgroup at `cgroups_path`: `oom_kill` in
/// memory.oom_control (v1; on kernels without that line, memory.failcnt > 0) or in
/// memory.events (v2). The cgroup must still exist: read it after the container's processes
/// ended and before oci_runtime::remove. errc::not_found when no memory cgroup exists there.
[[nodiscard]] caf::expected<bool>
read_oom_killed(const std::string& cgroups_path, const std::string& cgroup_root = "/sys/fs/cgroup");

} // namespace shoal::container
