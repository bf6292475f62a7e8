// Crash safety of the group-commit path: a child process (crash_child.cpp) writes through the
// writer actor and reports every acknowledged sequence number over a pipe; the test SIGKILLs it
// mid-stream and checks that every acknowledged write is in the database. Three cycles run on the
// same database, each recovering the previous one's crash.
//
// The child is started with fork + exec, never fork alone: the test process may have threads
// (RocksDB's background threads outlive a closed database, CAF's those of earlier test cases),
// and a child forked from a threaded process may inherit locks held by threads it does not have.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "runtime/errc.hpp"
#include "storage/key.hpp"
#include "storage/store.hpp"
#include "tests/storage/crash_protocol.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::storage;
using namespace shoal::storage::test;
using shoal::test::temp_dir;

namespace {

constexpr int cycles = 3;
constexpr size_t acks_per_cycle = 2000;
constexpr auto cycle_deadline = std::chrono::seconds(5);

struct cycle_result {
  std::vector<uint64_t> acked;
  int wait_status = 0;
};

/// Reads 8-byte acks from `fd` into `out`; returns false at EOF.
bool read_acks(int fd, std::string& carry, std::vector<uint64_t>& out) {
  char buf[4096];
  ssize_t n;
  do
    n = ::read(fd, buf, sizeof buf);
  while (n < 0 && errno == EINTR);
  if (n <= 0)
    return false;
  carry.append(buf, static_cast<size_t>(n));
  size_t whole = carry.size() / sizeof(uint64_t) * sizeof(uint64_t);
  for (size_t off = 0; off < whole; off += sizeof(uint64_t)) {
    uint64_t seq;
    std::memcpy(&seq, carry.data() + off, sizeof seq);
    out.push_back(seq);
  }
  carry.erase(0, whole);
  return true;
}

/// Starts the child, collects acks until `acks_per_cycle` (or the deadline, or the child's
/// death), SIGKILLs it and collects the acks still in the pipe.
cycle_result run_cycle(const std::string& dir, int cycle) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  // Everything exec needs is built before fork: the child may only make async-signal-safe calls.
  std::string exe = SHOAL_STORAGE_CRASH_CHILD;
  std::string cycle_arg = std::to_string(cycle);
  std::string fd_arg = std::to_string(fds[1]);
  char* argv[] = {exe.data(), const_cast<char*>(dir.c_str()), cycle_arg.data(), fd_arg.data(),
                  nullptr};
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::fcntl(fds[1], F_SETFD, 0); // the write end survives exec; the read end closes
    ::execv(argv[0], argv);
    _exit(127);
  }
  ::close(fds[1]);

  cycle_result result;
  std::string carry;
  bool open = true;
  auto deadline = std::chrono::steady_clock::now() + cycle_deadline;
  while (open && result.acked.size() < acks_per_cycle) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      break;
    pollfd p{fds[0], POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR)
      continue;
    REQUIRE(ready >= 0);
    if (ready > 0)
      open = read_acks(fds[0], carry, result.acked);
  }
  // Kill it mid-stream: it has requests in flight and a group being synced.
  ::kill(pid, SIGKILL);
  REQUIRE(::waitpid(pid, &result.wait_status, 0) == pid);
  // Acks written before the kill are still in the pipe; the child's end is closed now.
  while (open)
    open = read_acks(fds[0], carry, result.acked);
  ::close(fds[0]);
  CHECK(carry.empty());
  return result;
}

/// Number of keys in the database written by `cycle`'s child.
size_t keys_of_cycle(const store& db, int cycle) {
  size_t present = 0;
  auto err = db.scan(table::calls, key{}.str("seq").bytes(),
                     [&](std::string_view k, std::string_view) {
                       key::reader r{k};
                       std::string name;
                       uint64_t seq = 0;
                       if (r.str(name) && r.u64(seq) && (seq >> 32) == static_cast<uint64_t>(cycle))
                         ++present;
                       return true;
                     });
  REQUIRE_FALSE(err);
  return present;
}

} // namespace

TEST_CASE("every write the writer acknowledged survives a SIGKILL of the process") {
  temp_dir tmp;
  const auto dir = tmp.sub("db");
  std::vector<std::vector<uint64_t>> acked_by_cycle;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    auto r = run_cycle(dir, cycle);
    INFO("cycle " << cycle << ": child wait status " << r.wait_status
                  << " (it must die of our SIGKILL, not exit on its own; see its stderr)");
    REQUIRE(WIFSIGNALED(r.wait_status));
    REQUIRE(WTERMSIG(r.wait_status) == SIGKILL);
    REQUIRE(!r.acked.empty());
    std::set<uint64_t> distinct{r.acked.begin(), r.acked.end()};
    REQUIRE(distinct.size() == r.acked.size()); // nothing acknowledged twice
    acked_by_cycle.push_back(std::move(r.acked));

    // Recover the crashed database and check this cycle's acks and every earlier cycle's.
    auto db = store::open(dir);
    if (!db)
      FAIL("reopening after the crash failed: " << shoal::message_of(db.error()));
    for (int c = 0; c <= cycle; ++c) {
      for (auto seq : acked_by_cycle[c]) {
        auto v = (*db)->get(table::calls, seq_key(seq));
        REQUIRE(v);
        INFO("written in cycle " << c << ", acknowledged seq " << (seq - cycle_base(c)));
        REQUIRE(v->has_value());
        REQUIRE(**v == value_for(seq));
      }
    }
    auto present = keys_of_cycle(**db, cycle);
    CHECK(present >= acked_by_cycle[cycle].size());
    std::printf("crash cycle %d: %zu acknowledged writes verified after SIGKILL "
                "(%zu more were durable but not yet acknowledged)\n",
                cycle, acked_by_cycle[cycle].size(), present - acked_by_cycle[cycle].size());
    std::fflush(stdout);
  }
}
