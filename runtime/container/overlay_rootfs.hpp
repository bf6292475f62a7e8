#pragma once
/// `overlay_rootfs`: a container's root file system, an overlayfs whose lower layers are a
/// read-only image tree and whose upper layer takes the container's writes.
///
///     <bundle>/rootfs            the overlay mount point (OCI `root.path` = "rootfs")
///     <bundle>/overlay/upper     this container's writes
///     <bundle>/overlay/work      overlayfs scratch
///
/// release() (or the destructor) unmounts and removes rootfs/ and overlay/; the rest of the
/// bundle (config.json, guest/) belongs to the caller. The image tree is never written.
///
/// Mount namespace: the mount is made in the calling thread's mount namespace. After
/// prepare_host_for_crun hid the unified cgroup mount, that is shoald's private namespace, which
/// crun inherits; the mount is then invisible to the rest of the host and vanishes with the
/// daemon. Not thread-safe per object; different objects are independent.

#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace shoal::container {

class overlay_rootfs {
public:
  /// Mounts an overlay of `lower_dirs` (topmost first; usually one image tree) at
  /// `<bundle_dir>/rootfs`, creating the directories it needs. Paths must be absolute and free
  /// of ',' ':' and '\' (overlayfs option syntax). errc::invalid_argument for bad paths,
  /// errc::storage_failure naming the paths and the errno text when the mount fails; nothing
  /// is left behind on failure.
  [[nodiscard]] static caf::expected<overlay_rootfs>
  mount(const std::vector<std::string>& lower_dirs, const std::string& bundle_dir);

  /// Same, with one image tree.
  [[nodiscard]] static caf::expected<overlay_rootfs> mount(const std::string& image_dir,
                                                           const std::string& bundle_dir);

  overlay_rootfs(overlay_rootfs&& other) noexcept;
  overlay_rootfs& operator=(overlay_rootfs&& other) noexcept;
  overlay_rootfs(const overlay_rootfs&) = delete;
  overlay_rootfs& operator=(const overlay_rootfs&) = delete;

  /// Calls release() and logs (does not throw) a failure.
  ~overlay_rootfs();

  /// Unmounts the overlay and removes rootfs/ and overlay/ (the container's writes are lost).
  /// Call after the container was removed (`oci_runtime::remove`). Idempotent: a second call,
  /// or a call on a moved-from object, does nothing. If the mount is still busy it is detached
  /// lazily (MNT_DETACH) and a warning logged; if unmounting fails outright nothing is deleted
  /// and errc::storage_failure names the path and errno text.
  [[nodiscard]] caf::error release();

  /// `<bundle>/rootfs`, the mount point.
  const std::string& rootfs() const noexcept { return rootfs_; }
  /// `<bundle>/overlay/upper`, where the container's writes land.
  std::string upper_dir() const { return overlay_dir_ + "/upper"; }
  /// True until release() succeeded.
  bool mounted() const noexcept { return mounted_; }

private:
  overlay_rootfs(std::string rootfs, std::string overlay_dir)
    : rootfs_(std::move(rootfs)), overlay_dir_(std::move(overlay_dir)), mounted_(true) {}

  std::string rootfs_;
  std::string overlay_dir_;
  bool mounted_ = false;
};

} // namespace shoal::container
