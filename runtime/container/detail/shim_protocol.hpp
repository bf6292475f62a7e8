#pragma once
/// The record shoal-container-shim writes on descriptor 3 once the container runs, or once
/// starting it failed. Shared by container_shim.cpp (writer) and crun_runtime.cpp (reader); both
/// sides are built together, so the layout is a plain struct.

#include <cstdint>

namespace shoal::container::detail {

/// How far the shim got.
enum class shim_stage : int32_t {
  /// crun start succeeded: `init_pid` is the container's pid 1 (in the host pid namespace).
  running = 0,
  /// Bad command line (a bug in crun_runtime).
  usage = 1,
  /// `crun create` could not be started or failed; `detail` is its wait status or errno.
  create_failed = 2,
  /// crun's pid file was missing or unreadable; `detail` is errno.
  pid_file_unreadable = 3,
  /// `crun start` could not be started or failed; `detail` is its wait status or errno.
  start_failed = 4,
  /// The shim could not become a child subreaper; `detail` is errno.
  subreaper_failed = 5,
};

struct shim_report {
  uint32_t magic = 0x5348494d; // "SHIM"
  shim_stage stage = shim_stage::usage;
  int32_t detail = 0;
  int32_t init_pid = 0;
};

/// The descriptor the shim reports on.
constexpr int shim_report_fd = 3;

} // namespace shoal::container::detail
