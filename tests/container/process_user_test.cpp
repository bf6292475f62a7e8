#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/container/path_beneath.hpp"
#include "runtime/container/process_user.hpp"
#include "runtime/errc.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::container;
using shoal::test::temp_dir;

namespace {

constexpr const char* passwd = "root:x:0:0:root:/root:/bin/bash\n"
                               "# a comment\n"
                               "\n"
                               "broken line\n"
                               "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
                               "bob:x:1001:100::/home/bob:/bin/sh\n"
                               "nohome:x:1002:1002:::/bin/sh\n";
constexpr const char* group = "root:x:0:\n"
                              "users:x:100:alice,bob\n"
                              "alice:x:1000:\n"
                              "docker:x:999:carol,alice\n";

void write(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path{path}.parent_path());
  std::ofstream{path} << text;
}

} // namespace

TEST_CASE("no USER is root, with root's home") {
  auto u = resolve_process_user("", passwd, group);
  REQUIRE(u);
  CHECK(u->uid == 0);
  CHECK(u->gid == 0);
  CHECK(u->is_root());
  CHECK(u->additional_gids.empty());
}

TEST_CASE("a user name takes its uid, gid, home and supplementary groups from the image") {
  auto u = resolve_process_user("alice", passwd, group);
  REQUIRE(u);
  CHECK(u->uid == 1000);
  CHECK(u->gid == 1000);
  CHECK(u->name == "alice");
  CHECK(u->home == "/home/alice");
  CHECK(u->additional_gids == std::vector<uint32_t>{100, 999});

  auto bob = resolve_process_user("bob", passwd, group);
  REQUIRE(bob);
  CHECK(bob->gid == 100);
  CHECK(bob->additional_gids.empty()); // his primary group is not repeated
  CHECK(resolve_process_user("nohome", passwd, group)->home == "/");
}

TEST_CASE("a uid needs no passwd entry, and takes the entry's name and gid when there is one") {
  auto known = resolve_process_user("1000", passwd, group);
  REQUIRE(known);
  CHECK(known->name == "alice");
  CHECK(known->gid == 1000);
  auto unknown = resolve_process_user("4242", passwd, group);
  REQUIRE(unknown);
  CHECK(unknown->uid == 4242);
  CHECK(unknown->gid == 0);
  CHECK(unknown->name.empty());
  CHECK(unknown->home == "/");
}

TEST_CASE("an explicit group by name or gid replaces the primary group and the supplementary ones") {
  auto by_name = resolve_process_user("alice:docker", passwd, group);
  REQUIRE(by_name);
  CHECK(by_name->uid == 1000);
  CHECK(by_name->gid == 999);
  CHECK(by_name->additional_gids.empty());
  auto by_gid = resolve_process_user("4242:4343", passwd, group);
  REQUIRE(by_gid);
  CHECK(by_gid->uid == 4242);
  CHECK(by_gid->gid == 4343);
}

TEST_CASE("an unknown user or group name is an error that names it") {
  auto u = resolve_process_user("ghost", passwd, group);
  REQUIRE(!u);
  CHECK(shoal::code_of(u.error()) == shoal::errc::invalid_argument);
  CHECK(shoal::message_of(u.error()) == "no user 'ghost' in /etc/passwd");
  auto g = resolve_process_user("alice:ghosts", passwd, group);
  REQUIRE(!g);
  CHECK(shoal::message_of(g.error()) == "no group 'ghosts' in /etc/group");
  CHECK(!resolve_process_user("alice:", passwd, group));
  CHECK(!resolve_process_user(":100", passwd, group));
}

TEST_CASE("the user is resolved from an image tree's own files, never through a symlink") {
  temp_dir tree;
  write(tree.sub("etc/passwd"), passwd);
  write(tree.sub("etc/group"), group);
  auto u = resolve_process_user_in("alice", tree.path());
  REQUIRE(u);
  CHECK(u->additional_gids == std::vector<uint32_t>{100, 999});

  // /etc/passwd a symlink to a file outside the tree: refused, not followed.
  temp_dir outside;
  write(outside.sub("passwd"), "evil:x:0:0::/:/bin/sh\n");
  temp_dir linked;
  std::filesystem::create_directories(linked.sub("etc"));
  REQUIRE(::symlink(outside.sub("passwd").c_str(), linked.sub("etc/passwd").c_str()) == 0);
  auto refused = resolve_process_user_in("evil", linked.path());
  REQUIRE(!refused);
  CHECK(shoal::message_of(refused.error()).find("symlink") != std::string::npos);

  // A tree without /etc/passwd knows no names, but numbers work.
  temp_dir bare;
  CHECK(!resolve_process_user_in("alice", bare.path()));
  REQUIRE(resolve_process_user_in("1234:5", bare.path()));
}

TEST_CASE("path_beneath refuses a path through a symlink and allows a missing one") {
  temp_dir root;
  std::filesystem::create_directories(root.sub("real/dir"));
  write(root.sub("file"), "x");
  REQUIRE(::symlink("/etc", root.sub("link").c_str()) == 0);

  CHECK(*path_beneath(root.path(), "/real/dir/x") == root.path() + "/real/dir/x");
  CHECK(*path_beneath(root.path(), "real/./dir//x") == root.path() + "/real/dir/x");
  CHECK(*path_beneath(root.path(), "/missing/a/b") == root.path() + "/missing/a/b");
  CHECK(*path_beneath(root.path(), "/link") == root.path() + "/link"); // the last may be anything
  auto through = path_beneath(root.path(), "/link/passwd");
  REQUIRE(!through);
  CHECK(shoal::message_of(through.error()) == "/link is a symlink; use the path it points to");
  auto below_file = path_beneath(root.path(), "/file/x");
  REQUIRE(!below_file);
  CHECK(shoal::message_of(below_file.error()) == "/file is not a directory");
  CHECK(!path_beneath(root.path(), "/real/../link/passwd"));
}

TEST_CASE("make_directory_beneath creates the last directory with its owner, never through a symlink") {
  temp_dir root;
  REQUIRE(::symlink("/etc", root.sub("link").c_str()) == 0);
  REQUIRE(!make_directory_beneath(root.path(), "/home/alice", 0700, 1000, 1000));
  struct stat parent;
  struct stat home;
  REQUIRE(::stat(root.sub("home").c_str(), &parent) == 0);
  REQUIRE(::stat(root.sub("home/alice").c_str(), &home) == 0);
  CHECK((parent.st_mode & 07777) == 0755);
  CHECK(parent.st_uid == 0);
  CHECK((home.st_mode & 07777) == 0700);
  CHECK(home.st_uid == 1000);
  CHECK(home.st_gid == 1000);
  // Existing: left alone.
  REQUIRE(!make_directory_beneath(root.path(), "/home", 0700, 5, 5));
  REQUIRE(::stat(root.sub("home").c_str(), &parent) == 0);
  CHECK(parent.st_uid == 0);

  auto err = make_directory_beneath(root.path(), "/link/shoal-must-not-exist", 0700, 1000, 1000);
  CHECK(shoal::code_of(err) == shoal::errc::invalid_argument);
  CHECK(!std::filesystem::exists("/etc/shoal-must-not-exist"));
}
