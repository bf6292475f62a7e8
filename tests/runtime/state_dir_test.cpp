#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/errc.hpp"
#include "runtime/state_dir.hpp"
#include "tests/support/temp_dir.hpp"

using shoal::state_dir;
using shoal::test::temp_dir;

TEST_CASE("a second owner of a state dir is refused with the holder's pid") {
  temp_dir tmp;
  auto first = state_dir::acquire(tmp.path());
  REQUIRE(first);
  auto second = state_dir::acquire(tmp.path());
  REQUIRE_FALSE(second);
  CHECK(shoal::code_of(second.error()) == shoal::errc::state_dir_locked);
  auto message = shoal::message_of(second.error());
  CHECK(message.find("pid " + std::to_string(::getpid())) != std::string::npos);
  CHECK(message.find(tmp.path()) != std::string::npos);
}

TEST_CASE("a state dir is free again once its owner releases it") {
  temp_dir tmp;
  {
    auto first = state_dir::acquire(tmp.path());
    REQUIRE(first);
  }
  CHECK(state_dir::acquire(tmp.path()));
}

TEST_CASE("a state dir held by a process killed with SIGKILL can be taken over") {
  temp_dir tmp;
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    auto held = state_dir::acquire(tmp.path());
    char ok = held ? '1' : '0';
    (void) !::write(ready[1], &ok, 1);
    ::pause();
    ::_exit(0);
  }
  char ok = 0;
  REQUIRE(::read(ready[0], &ok, 1) == 1);
  REQUIRE(ok == '1');
  CHECK_FALSE(state_dir::acquire(tmp.path()));
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(state_dir::acquire(tmp.path()));
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST_CASE("state dir files are replaced atomically with the requested mode") {
  temp_dir tmp;
  auto dir = state_dir::acquire(tmp.path() + "/nested/state");
  REQUIRE(dir);
  REQUIRE_FALSE((*dir)->write_file("admin.token", "first\n", 0600));
  REQUIRE_FALSE((*dir)->write_file("admin.token", "second\n", 0600));
  std::ifstream in{(*dir)->file("admin.token")};
  std::string line;
  std::getline(in, line);
  CHECK(line == "second");
  struct stat st {};
  REQUIRE(::stat((*dir)->file("admin.token").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  (*dir)->remove_file("admin.token");
  CHECK(::access((*dir)->file("admin.token").c_str(), F_OK) != 0);
}
