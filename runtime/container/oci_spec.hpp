#pragma once
/// `container_spec`: what Shoal asks of one container, and its rendering as an OCI runtime
/// `config.json` (runtime-spec 1.0.2) for crun or runc.
///
/// A bundle directory, as the supervisor lays it out:
///
///     <bundle>/config.json    to_oci_json(spec), written by write_bundle_config
///     <bundle>/rootfs/        the overlay mount (overlay_rootfs); `root.path` is "rootfs"
///     <bundle>/overlay/       upper and work dirs of that overlay
///     <bundle>/guest/         the guest socket dir, bind-mounted at /shoal/guest
///
/// Defaults are the secure ones: pid, mount, uts, ipc and network namespaces; no capabilities at
/// all; no_new_privileges; the cgroup limits you set. Only lo exists in the network namespace.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>

namespace shoal::container {

/// One entry of the OCI `mounts` array.
struct mount_spec {
  /// Absolute path inside the container.
  std::string destination;
  /// Host path for binds; the fs name ("proc", "tmpfs") otherwise.
  std::string source;
  /// "bind", "proc", "tmpfs", "devpts", "mqueue", "sysfs"...
  std::string type;
  /// mount(8)-style options: "rbind", "ro", "nosuid", "mode=1777", "size=65536k"...
  std::vector<std::string> options;
};

/// cgroup limits; 0 means "no limit" for each.
struct resource_limits {
  /// memory.limit_in_bytes (v1) / memory.max (v2). Swap is capped at the same value, so the
  /// container cannot page out past its limit; hitting it OOM-kills (was_oom_killed reports it).
  uint64_t memory_bytes = 0;
  /// CPU share as thousandths of one core: 500 = half a core, 2000 = two cores. Rendered as CFS
  /// quota over `cpu_period_us`.
  uint32_t cpu_millis = 0;
  /// CFS period in microseconds.
  uint64_t cpu_period_us = 100'000;
  /// pids.max: processes plus threads of the whole container.
  int64_t pids_max = 0;
};

struct container_spec {
  /// The OCI container id: [A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 bytes. Unique per host
  /// (crun's state dir is shared by every daemon on the machine).
  std::string id;
  /// The root file system, relative to the bundle or absolute.
  std::string rootfs = "rootfs";
  /// False: the overlay upper takes the container's writes.
  bool rootfs_readonly = false;
  /// argv of the container's pid 1; args[0] is looked up in the container's PATH.
  std::vector<std::string> args;
  /// "KEY=VALUE" entries. Secrets travel here: never log a rendered config.
  std::vector<std::string> env;
  /// Absolute working directory inside the container.
  std::string cwd = "/";
  std::string hostname;
  /// uid/gid of pid 1 inside the container, and its supplementary groups (process_user.hpp).
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> additional_gids;
  /// In order; a destination must not be mounted over by a later entry unless intended.
  std::vector<mount_spec> mounts;
  resource_limits limits;
  /// Where crun puts the container's cgroups, from the root of every hierarchy; see
  /// cgroups_path_for. Empty means crun's default ("/<id>").
  std::string cgroups_path;
  /// OCI namespace types: "pid", "mount", "uts", "ipc", "network" (also "cgroup", "user").
  std::vector<std::string> namespaces = {"pid", "mount", "uts", "ipc", "network"};
  /// Capabilities kept in every set ("CAP_NET_BIND_SERVICE"...). Default: none, which is what a
  /// Python function needs.
  std::vector<std::string> capabilities;
  bool no_new_privileges = true;
  /// RLIMIT_NOFILE, soft = hard; 0 inherits shoald's own limits. Raising it above shoald's hard
  /// limit needs CAP_SYS_RESOURCE, which this project's machines do not grant (crun create then
  /// fails with "setrlimit `RLIMIT_NOFILE`: Operation not permitted").
  uint64_t open_files_max = 0;
};

/// The cgroups path Shoal uses for container `id`: "/shoal/<id>". crun creates it under the root
/// of every v1 hierarchy (and the v2 root); see remove_cgroup_parents.
std::string cgroups_path_for(std::string_view id);

/// The mounts every Shoal container gets: /proc, /dev (tmpfs; crun adds the standard device nodes
/// null, zero, full, random, urandom, tty), /dev/pts, /dev/shm, /dev/mqueue, /sys read-only, and
/// a tmpfs /tmp. `tmp_size_bytes` == 0 leaves tmpfs's default; tmpfs pages count towards the
/// memory limit either way.
std::vector<mount_spec> standard_mounts(uint64_t tmp_size_bytes = 0);

/// A read-only bind of `host_dir` at /shoal/code (the function's shipped source).
mount_spec code_mount(const std::string& host_dir);

/// A read-write bind of `host_dir` (which holds guest.sock) at /shoal/guest.
mount_spec guest_mount(const std::string& host_dir);

/// Checks what crun would reject late or what would make the rendering meaningless: the id's
/// characters, a non-empty args, KEY=VALUE env entries, absolute cwd and mount destinations,
/// a CPU quota of at least 1 ms per period. errc::invalid_argument naming the field.
[[nodiscard]] caf::error validate(const container_spec& spec);

/// Renders `spec` as an OCI runtime config.json (ociVersion 1.0.2). Pure; does not validate.
/// Strings are written as given (they must be UTF-8), with JSON escaping.
std::string to_oci_json(const container_spec& spec);

/// validate, then writes `<bundle_dir>/config.json` atomically (temp file + rename), mode 0600
/// because env may hold secrets.
[[nodiscard]] caf::error write_bundle_config(const std::string& bundle_dir,
                                             const container_spec& spec);

/// `text` as a JSON string literal, quotes included. Exposed for tests.
std::string json_quote(std::string_view text);

} // namespace shoal::container
