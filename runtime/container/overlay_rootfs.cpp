#include "runtime/container/overlay_rootfs.hpp"

#include <cerrno>
#include <filesystem>
#include <sys/mount.h>
#include <unistd.h>

#include "runtime/container/detail/subprocess.hpp"
#include "runtime/errc.hpp"
#include "runtime/log.hpp"

namespace shoal::container {

namespace fs = std::filesystem;

namespace {

caf::error check_path(const std::string& what, const std::string& path) {
  if (path.empty() || path[0] != '/')
    return make_error(errc::invalid_argument, what + " '" + path + "' must be an absolute path");
  if (path.find_first_of(",:\\") != std::string::npos)
    return make_error(errc::invalid_argument,
                      what + " '" + path
                        + "' contains ',', ':' or '\\', which overlayfs options cannot carry");
  return {};
}

std::string strip_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/')
    path.pop_back();
  return path;
}

} // namespace

caf::expected<overlay_rootfs> overlay_rootfs::mount(const std::string& image_dir,
                                                    const std::string& bundle_dir) {
  return mount(std::vector<std::string>{image_dir}, bundle_dir);
}

caf::expected<overlay_rootfs> overlay_rootfs::mount(const std::vector<std::string>& lower_dirs,
                                                    const std::string& bundle_dir) {
  if (lower_dirs.empty())
    return make_error(errc::invalid_argument, "an overlay needs at least one lower dir");
  auto bundle = strip_trailing_slashes(bundle_dir);
  if (auto err = check_path("bundle dir", bundle))
    return err;
  std::string lower;
  for (const auto& dir : lower_dirs) {
    auto d = strip_trailing_slashes(dir);
    if (auto err = check_path("image dir", d))
      return err;
    std::error_code ec;
    if (!fs::is_directory(d, ec))
      return make_error(errc::not_found, "image dir " + d + " does not exist");
    if (!lower.empty())
      lower += ':';
    lower += d;
  }

  auto rootfs = bundle + "/rootfs";
  auto overlay_dir = bundle + "/overlay";
  auto upper = overlay_dir + "/upper";
  auto work = overlay_dir + "/work";
  std::error_code ec;
  if (fs::exists(overlay_dir, ec))
    return make_error(errc::already_exists,
                      "overlay dir " + overlay_dir
                        + " exists already: another container uses this bundle, or a previous "
                          "one was not released");
  for (const auto& dir : {rootfs, upper, work}) {
    fs::create_directories(dir, ec);
    if (ec)
      return make_error(errc::storage_failure, "cannot create " + dir + ": " + ec.message());
  }
  auto options = "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work;
  if (::mount("overlay", rootfs.c_str(), "overlay", MS_NODEV, options.c_str()) != 0) {
    int err = errno;
    fs::remove_all(overlay_dir, ec);
    ::rmdir(rootfs.c_str());
    return make_error(errc::storage_failure, "cannot mount overlay at " + rootfs + " (lowerdir="
                                               + lower + ", upperdir=" + upper + ", workdir="
                                               + work + "): " + detail::errno_text(err));
  }
  return overlay_rootfs{rootfs, overlay_dir};
}

overlay_rootfs::overlay_rootfs(overlay_rootfs&& other) noexcept
  : rootfs_(std::move(other.rootfs_)),
    overlay_dir_(std::move(other.overlay_dir_)),
    mounted_(other.mounted_) {
  other.mounted_ = false;
}

overlay_rootfs& overlay_rootfs::operator=(overlay_rootfs&& other) noexcept {
  if (this != &other) {
    if (auto err = release())
      log::warn("overlay_release_failed").kv("rootfs", rootfs_).kv("error", message_of(err));
    rootfs_ = std::move(other.rootfs_);
    overlay_dir_ = std::move(other.overlay_dir_);
    mounted_ = other.mounted_;
    other.mounted_ = false;
  }
  return *this;
}

overlay_rootfs::~overlay_rootfs() {
  if (auto err = release())
    log::warn("overlay_release_failed").kv("rootfs", rootfs_).kv("error", message_of(err));
}

caf::error overlay_rootfs::release() {
  if (!mounted_)
    return {};
  if (::umount2(rootfs_.c_str(), 0) != 0) {
    int err = errno;
    if (err == EBUSY) {
      // Something still holds a reference (a process that escaped cleanup, an open fd). Detach
      // it so the name is free; the kernel frees the overlay when the last user goes.
      log::warn("overlay_busy_detached").kv("rootfs", rootfs_);
      if (::umount2(rootfs_.c_str(), MNT_DETACH) != 0)
        return make_error(errc::storage_failure, "cannot unmount " + rootfs_ + ": "
                                                   + detail::errno_text(errno));
    } else if (err != EINVAL && err != ENOENT) {
      // EINVAL: not a mount point any more (someone unmounted it); proceed with the removal.
      return make_error(errc::storage_failure,
                        "cannot unmount " + rootfs_ + ": " + detail::errno_text(err));
    }
  }
  mounted_ = false;
  std::error_code ec;
  fs::remove_all(overlay_dir_, ec);
  if (ec)
    return make_error(errc::storage_failure,
                      "unmounted " + rootfs_ + " but cannot remove " + overlay_dir_ + ": "
                        + ec.message());
  if (::rmdir(rootfs_.c_str()) != 0 && errno != ENOENT)
    return make_error(errc::storage_failure,
                      "unmounted but cannot remove " + rootfs_ + ": " + detail::errno_text(errno));
  return {};
}

} // namespace shoal::container
