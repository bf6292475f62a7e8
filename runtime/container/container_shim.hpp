#pragma once
/// `shoal-container-shim`: the small process that stands between shoald and one crun container,
/// so that shoald can (a) waitpid for the container's exit status and (b) still read the
/// container's cgroup (OOM kills) after it exited.
///
/// Why: `crun run` deletes the container, cgroup included, the moment pid 1 exits, which loses the
/// OOM-kill counter; `crun create` + `crun start` keep the cgroup until `crun delete`, but then
/// pid 1 is an orphan that only a child subreaper can wait for. Making shoald itself a subreaper
/// would hand it every orphan of every helper, so each container gets this shim instead:
///
///     shoald ── posix_spawn ──► shim (PR_SET_CHILD_SUBREAPER, own session)
///                                ├─ crun create --bundle B --pid-file P ID   (waited for)
///                                ├─ crun start ID                            (waited for)
///                                ├─ report {running, init pid} on fd 3, close fds 0-3
///                                └─ waitpid(-1) until no child is left; pid 1's status is mirrored:
///                                   exit(code), or death by the same signal
///
/// Command line: `shoal-container-shim CRUN STATE_ROOT LOG BUNDLE ID PID_FILE`, STATE_ROOT and
/// LOG may be empty (crun's defaults). fd 0-2 are the container's stdio, fd 3 the report pipe
/// (detail/shim_protocol.hpp). The shim never deletes the container: oci_runtime::remove does.
/// It is a separate executable (not a fork of shoald) so that it holds none of the daemon's
/// memory or descriptors for the container's lifetime.

namespace shoal::container {

/// The shim's main(); the `shoal-container-shim` executable calls only this.
int container_shim_main(int argc, char** argv);

} // namespace shoal::container
