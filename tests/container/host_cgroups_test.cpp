#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sys/vfs.h>
#include <linux/magic.h>

#include "runtime/container/host_cgroups.hpp"
#include "runtime/errc.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::container;
using shoal::test::temp_dir;
namespace fs = std::filesystem;

namespace {

void touch(const std::string& path, const std::string& text = "") {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

} // namespace

TEST_CASE("prepare_host_for_crun leaves crun a cgroup layout it accepts, and is idempotent") {
  auto first = prepare_host_for_crun();
  REQUIRE(first);
  auto second = prepare_host_for_crun();
  REQUIRE(second);
  CHECK(*second == *first);
  // crun refuses a cgroup2 mount at /sys/fs/cgroup/unified that has controllers.
  struct statfs st {};
  if (::statfs("/sys/fs/cgroup/unified", &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC) {
    std::ifstream in("/sys/fs/cgroup/unified/cgroup.controllers");
    std::string controllers;
    std::getline(in, controllers);
    CHECK(controllers.empty());
  }
}

TEST_CASE("remove_cgroup_parents removes the path in every hierarchy but keeps parents in use") {
  temp_dir root;
  // Plain directories stand in for hierarchies; rmdir behaves alike on empty ones.
  fs::create_directories(root.sub("memory/shoal/ct-a"));
  fs::create_directories(root.sub("memory/shoal/ct-b")); // another container: keeps memory/shoal
  fs::create_directories(root.sub("pids/shoal/ct-a"));
  fs::create_directories(root.sub("cpu,cpuacct/shoal/ct-a"));
  fs::create_symlink("cpu,cpuacct", root.sub("cpu"));
  touch(root.sub("unified/shoal/ct-a/cgroup.procs"), "0\n"); // what crun leaves on the tmpfs
  fs::create_directories(root.sub("freezer")); // never had the path

  REQUIRE_FALSE(remove_cgroup_parents("/shoal/ct-a", root.path()));
  CHECK_FALSE(fs::exists(root.sub("memory/shoal/ct-a")));
  CHECK(fs::exists(root.sub("memory/shoal/ct-b")));
  CHECK_FALSE(fs::exists(root.sub("pids/shoal")));
  CHECK_FALSE(fs::exists(root.sub("cpu,cpuacct/shoal")));
  CHECK_FALSE(fs::exists(root.sub("unified/shoal")));
  CHECK(fs::exists(root.sub("freezer")));

  // Idempotent; and the last container takes the shared parent with it.
  CHECK_FALSE(remove_cgroup_parents("/shoal/ct-a", root.path()));
  CHECK_FALSE(remove_cgroup_parents("shoal/ct-b", root.path()));
  CHECK_FALSE(fs::exists(root.sub("memory/shoal")));
  CHECK(fs::exists(root.sub("memory")));

  CHECK(shoal::code_of(remove_cgroup_parents("/shoal/../etc", root.path()))
        == shoal::errc::invalid_argument);
  CHECK(remove_cgroup_parents("/", root.path()));
}

TEST_CASE("read_oom_killed reads the kernel's oom_kill counter for v1 and v2 cgroups") {
  temp_dir root;
  touch(root.sub("memory/shoal/killed/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
  touch(root.sub("memory/shoal/fine/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n");
  touch(root.sub("memory/shoal/old-kernel/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\n");
  touch(root.sub("memory/shoal/old-kernel/memory.failcnt"), "12\n");
  touch(root.sub("shoal/v2/memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n");

  CHECK(read_oom_killed("/shoal/killed", root.path()) == true);
  CHECK(read_oom_killed("/shoal/fine", root.path()) == false);
  CHECK(read_oom_killed("/shoal/old-kernel", root.path()) == true);
  CHECK(read_oom_killed("/shoal/v2", root.path()) == true);
  auto gone = read_oom_killed("/shoal/removed", root.path());
  REQUIRE_FALSE(gone);
  CHECK(shoal::code_of(gone.error()) == shoal::errc::not_found);
}
