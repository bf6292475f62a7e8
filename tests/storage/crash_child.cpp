// The process crash_test.cpp kills: see crash_protocol.hpp. No Catch2 here; failures are exit
// codes plus a line on stderr.

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include <caf/all.hpp>

#include "runtime/errc.hpp"
#include "storage/store.hpp"
#include "storage/writer.hpp"
#include "tests/storage/crash_protocol.hpp"

using namespace shoal::storage;
using namespace shoal::storage::test;

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail, int code) {
  std::fprintf(stderr, "storage_crash_child: %s: %s\n", what, detail.c_str());
  std::_Exit(code);
}

/// Writes seq, seq + crash_clients, seq + 2 * crash_clients, ... one at a time, reporting each
/// to `ack_fd` once the writer acknowledged it.
void client(caf::event_based_actor* self, writer_actor w, uint64_t seq, int ack_fd) {
  self->request(w, caf::infinite, write_atom::value,
                write_batch{}.put(table::calls, seq_key(seq), value_for(seq)))
    .then(
      [=]() {
        ssize_t n;
        do
          n = ::write(ack_fd, &seq, sizeof seq);
        while (n < 0 && errno == EINTR);
        if (n != static_cast<ssize_t>(sizeof seq))
          fail("writing an ack", std::strerror(errno), 4);
        client(self, w, seq + crash_clients, ack_fd);
      },
      [=](caf::error& err) { fail("write request", shoal::message_of(err), 5); });
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 4)
    fail("usage", "storage_crash_child <db dir> <cycle> <ack fd>", 2);
  try {
    const std::string dir = argv[1];
    const int cycle = std::stoi(argv[2]);
    const int ack_fd = std::stoi(argv[3]);
    auto db = store::open(dir);
    if (!db)
      fail("store::open", shoal::message_of(db.error()), 2);
    caf::actor_system_config cfg;
    cfg.set("scheduler.max-threads", 2);
    caf::actor_system sys{cfg};
    auto w = spawn_writer(sys, **db);
    for (uint64_t i = 0; i < crash_clients; ++i)
      sys.spawn(client, w, cycle_base(cycle) + i, ack_fd);
    for (;;)
      pause(); // until the parent's SIGKILL
  } catch (const std::exception& e) {
    fail("exception", e.what(), 6);
  }
}
