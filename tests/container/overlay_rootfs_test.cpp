#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/container/host_cgroups.hpp"
#include "runtime/container/overlay_rootfs.hpp"
#include "runtime/errc.hpp"
#include "tests/container/busybox_image.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::container;
using shoal::test::temp_dir;
namespace fs = std::filesystem;

namespace {

/// Lines of /proc/self/mountinfo whose mount point lies under `dir`.
std::vector<std::string> mounts_under(const std::string& dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    fields >> id >> parent >> devno >> root >> mount_point;
    if (mount_point.rfind(dir, 0) == 0)
      out.push_back(line);
  }
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace

TEST_CASE("an overlay rootfs shows the image and keeps writes in its own upper dir") {
  REQUIRE(prepare_host_for_crun()); // mounts then live in this test's private namespace
  temp_dir tmp;
  shoal::test::make_busybox_image(tmp.sub("image"));
  auto rootfs = overlay_rootfs::mount(tmp.sub("image"), tmp.sub("bundle"));
  REQUIRE(rootfs);
  CHECK(rootfs->rootfs() == tmp.sub("bundle") + "/rootfs");
  CHECK(mounts_under(tmp.sub("bundle")).size() == 1);
  CHECK(slurp(rootfs->rootfs() + "/etc/image-marker") == "busybox test image\n");

  std::ofstream(rootfs->rootfs() + "/etc/written") << "by the container";
  std::ofstream(rootfs->rootfs() + "/etc/image-marker") << "changed";
  CHECK(slurp(rootfs->upper_dir() + "/etc/written") == "by the container");
  CHECK(slurp(tmp.sub("image") + "/etc/image-marker") == "busybox test image\n");
  CHECK_FALSE(fs::exists(tmp.sub("image") + "/etc/written"));
}

TEST_CASE("releasing an overlay rootfs unmounts it and removes its dirs, and may be repeated") {
  REQUIRE(prepare_host_for_crun());
  temp_dir tmp;
  shoal::test::make_busybox_image(tmp.sub("image"));
  fs::create_directories(tmp.sub("bundle"));
  std::ofstream(tmp.sub("bundle") + "/config.json") << "{}";
  {
    auto rootfs = overlay_rootfs::mount(tmp.sub("image"), tmp.sub("bundle"));
    REQUIRE(rootfs);
    std::ofstream(rootfs->rootfs() + "/scratch") << "x";
    CHECK_FALSE(rootfs->release());
    CHECK_FALSE(rootfs->mounted());
    CHECK_FALSE(rootfs->release());
  }
  CHECK(mounts_under(tmp.sub("bundle")).empty());
  CHECK_FALSE(fs::exists(tmp.sub("bundle") + "/rootfs"));
  CHECK_FALSE(fs::exists(tmp.sub("bundle") + "/overlay"));
  CHECK(fs::exists(tmp.sub("bundle") + "/config.json")); // the caller's files stay
  CHECK(fs::exists(tmp.sub("image") + "/bin/busybox"));

  { // the destructor releases too
    auto rootfs = overlay_rootfs::mount(tmp.sub("image"), tmp.sub("bundle"));
    REQUIRE(rootfs);
    auto moved = std::move(*rootfs);
    CHECK(moved.mounted());
    CHECK(mounts_under(tmp.sub("bundle")).size() == 1);
  }
  CHECK(mounts_under(tmp.sub("bundle")).empty());
  CHECK_FALSE(fs::exists(tmp.sub("bundle") + "/overlay"));
}

TEST_CASE("an overlay over a missing image or with an unusable path fails and names it") {
  REQUIRE(prepare_host_for_crun());
  temp_dir tmp;
  auto missing = overlay_rootfs::mount(tmp.sub("no-image"), tmp.sub("bundle"));
  REQUIRE_FALSE(missing);
  CHECK(shoal::code_of(missing.error()) == shoal::errc::not_found);
  CHECK(shoal::message_of(missing.error()).find(tmp.sub("no-image")) != std::string::npos);

  shoal::test::make_busybox_image(tmp.sub("image"));
  auto comma = overlay_rootfs::mount(tmp.sub("image"), tmp.sub("bun,dle"));
  REQUIRE_FALSE(comma);
  CHECK(shoal::code_of(comma.error()) == shoal::errc::invalid_argument);
  CHECK(shoal::message_of(comma.error()).find("bun,dle") != std::string::npos);

  auto relative = overlay_rootfs::mount("image", tmp.sub("bundle"));
  CHECK_FALSE(relative);

  // Two overlays cannot share a bundle.
  auto first = overlay_rootfs::mount(tmp.sub("image"), tmp.sub("bundle"));
  REQUIRE(first);
  auto second = overlay_rootfs::mount(tmp.sub("image"), tmp.sub("bundle"));
  REQUIRE_FALSE(second);
  CHECK(shoal::code_of(second.error()) == shoal::errc::already_exists);
  CHECK(first->mounted());
}

TEST_CASE("an overlay whose mount fails reports the paths and the errno text") {
  REQUIRE(prepare_host_for_crun());
  temp_dir tmp;
  shoal::test::make_busybox_image(tmp.sub("image"));
  // The kernel refuses an overlayfs as the upper layer: put a bundle inside another overlay.
  auto outer = overlay_rootfs::mount(tmp.sub("image"), tmp.sub("outer"));
  REQUIRE(outer);
  auto inner = overlay_rootfs::mount(tmp.sub("image"), outer->rootfs() + "/tmp/inner");
  REQUIRE_FALSE(inner);
  auto message = shoal::message_of(inner.error());
  CHECK(shoal::code_of(inner.error()) == shoal::errc::storage_failure);
  CHECK(message.find("upperdir=" + outer->rootfs() + "/tmp/inner/overlay/upper")
        != std::string::npos);
  CHECK(message.find("): ") != std::string::npos); // followed by the errno text
  CHECK_FALSE(fs::exists(outer->rootfs() + "/tmp/inner/overlay"));
}
