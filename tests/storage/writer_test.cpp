#include "storage/writer.hpp"

#include <string>
#include <vector>

#include <caf/all.hpp>
#include <catch2/catch.hpp>

#include "runtime/errc.hpp"
#include "runtime/inspect.hpp"
#include "storage/key.hpp"
#include "storage/store.hpp"
#include "tests/storage/temp_dir.hpp"

using namespace shoal::storage;
using shoal::storage::test::temp_dir;

namespace {

struct writer_fixture {
  temp_dir tmp;
  std::unique_ptr<store> db;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  writer_actor writer;

  writer_fixture() {
    auto opened = store::open(tmp.path());
    if (!opened)
      FAIL("store::open failed: " << shoal::message_of(opened.error()));
    db = std::move(*opened);
    cfg.set("scheduler.max-threads", 2);
    sys = std::make_unique<caf::actor_system>(cfg);
    writer = spawn_writer(*sys, *db);
  }

  ~writer_fixture() {
    // The writer is detached: the actor system waits for it, so stop it first; the store must
    // outlive it.
    caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
    writer = nullptr;
    sys.reset();
  }

  shoal::actor_snapshot inspect() {
    caf::scoped_actor self{*sys};
    shoal::actor_snapshot out;
    self->request(writer, caf::infinite, shoal::inspect_atom::value)
      .receive([&](shoal::actor_snapshot& s) { out = std::move(s); },
               [&](caf::error& err) { FAIL("inspect failed: " << sys->render(err)); });
    return out;
  }

  std::string get(table t, const std::string& k) {
    auto v = db->get(t, k);
    REQUIRE(v);
    return v->value_or("<missing>");
  }
};

int64_t counter(const shoal::actor_snapshot& s, const std::string& name) {
  for (const auto& [n, v] : s.counters)
    if (n == name)
      return v;
  FAIL("no counter " << name);
  return -1;
}

std::string seq_key(uint64_t i) {
  return key{}.str("seq").u64(i).bytes();
}

/// Writes seq_key(first) .. seq_key(first + remaining - 1) one after the other, each after the
/// previous one was acknowledged; quits with the first error.
void client_step(caf::event_based_actor* self, writer_actor w, uint64_t first, int remaining) {
  if (remaining == 0) {
    self->quit();
    return;
  }
  self->request(w, caf::infinite, write_atom::value,
                write_batch{}.put(table::outputs, seq_key(first), std::to_string(first)))
    .then([=]() { client_step(self, w, first + 1, remaining - 1); },
          [=](caf::error& err) { self->quit(std::move(err)); });
}

} // namespace

TEST_CASE("a burst of queued writes is acknowledged, readable, and committed in fewer fsyncs") {
  writer_fixture f;
  constexpr int n = 200;
  caf::scoped_actor self{*f.sys};
  // Send every request before waiting for any: they queue in the writer's mailbox while it syncs,
  // so each mailbox drain becomes one group.
  using handle = decltype(self->request(f.writer, caf::infinite, write_atom::value, write_batch{}));
  std::vector<handle> pending;
  for (int i = 0; i < n; ++i)
    pending.push_back(self->request(
      f.writer, caf::infinite, write_atom::value,
      write_batch{}.put(table::inputs, seq_key(i), "v" + std::to_string(i))));
  int acked = 0;
  for (auto& h : pending)
    h.receive([&]() { ++acked; },
              [&](caf::error& err) { FAIL("write failed: " << f.sys->render(err)); });
  CHECK(acked == n);

  for (int i = 0; i < n; ++i)
    REQUIRE(f.get(table::inputs, seq_key(i)) == "v" + std::to_string(i));

  auto s = f.inspect();
  CHECK(s.name == "storage_writer");
  CHECK(s.state == "idle");
  CHECK(counter(s, "writes_committed") == n);
  CHECK(counter(s, "sync_errors") == 0);
  auto batches = counter(s, "batches_committed");
  auto largest = counter(s, "largest_group");
  INFO("batches_committed=" << batches << " largest_group=" << largest);
  CHECK(batches >= 1);
  CHECK(batches < n);
  CHECK(largest > 1);
}

TEST_CASE("writes from several concurrent clients are all acknowledged and durable") {
  writer_fixture f;
  constexpr int clients = 4;
  constexpr int per_client = 50;
  // Each client keeps one request in flight and sends the next when the previous is acked.
  auto client = [w = f.writer](caf::event_based_actor* self, uint64_t first) {
    client_step(self, w, first, per_client);
  };
  {
    caf::scoped_actor self{*f.sys};
    for (int id = 0; id < clients; ++id) {
      auto a = f.sys->spawn(client, static_cast<uint64_t>(id * per_client));
      self->monitor(a);
    }
    for (int i = 0; i < clients; ++i)
      self->receive([&](caf::down_msg& down) {
        CHECK_FALSE(down.reason); // a client quits with the writer's error if a write fails
      });
  }
  for (uint64_t seq = 0; seq < clients * per_client; ++seq)
    REQUIRE(f.get(table::outputs, seq_key(seq)) == std::to_string(seq));
  CHECK(counter(f.inspect(), "writes_committed") == clients * per_client);
}

TEST_CASE("a flush is answered after every write sent before it is durable") {
  writer_fixture f;
  caf::scoped_actor self{*f.sys};
  SECTION("with nothing pending it answers at once") {
    bool answered = false;
    self->request(f.writer, caf::infinite, flush_atom::value)
      .receive([&]() { answered = true; },
               [&](caf::error& err) { FAIL(f.sys->render(err)); });
    CHECK(answered);
    CHECK(counter(f.inspect(), "batches_committed") == 0);
  }
  SECTION("after queued writes") {
    constexpr int n = 20;
    for (int i = 0; i < n; ++i)
      self->send(f.writer, write_atom::value,
                 write_batch{}.put(table::chunks, seq_key(i), "c"));
    bool answered = false;
    self->request(f.writer, caf::infinite, flush_atom::value)
      .receive([&]() { answered = true; },
               [&](caf::error& err) { FAIL(f.sys->render(err)); });
    REQUIRE(answered);
    for (int i = 0; i < n; ++i)
      CHECK(f.get(table::chunks, seq_key(i)) == "c");
  }
}

TEST_CASE("a failed group commit reports the error to its requests and the writer keeps going") {
  writer_fixture f;
  caf::scoped_actor self{*f.sys};
  write_batch bad;
  bad.ops.push_back(write_op{write_op::kind::put, static_cast<table>(200), "k", "v"});
  caf::error failure;
  self->request(f.writer, caf::infinite, write_atom::value, bad)
    .receive([&]() { FAIL("a write to an unknown table was acknowledged"); },
             [&](caf::error& err) { failure = std::move(err); });
  REQUIRE(failure);
  CHECK(shoal::code_of(failure) == shoal::errc::invalid_argument);

  bool acked = false;
  self->request(f.writer, caf::infinite, write_atom::value,
                write_batch{}.put(table::volumes, "after", "ok"))
    .receive([&]() { acked = true; }, [&](caf::error& err) { FAIL(f.sys->render(err)); });
  CHECK(acked);
  CHECK(f.get(table::volumes, "after") == "ok");
  auto s = f.inspect();
  CHECK(counter(s, "sync_errors") == 1);
  CHECK(counter(s, "batches_committed") == 1);
  CHECK(counter(s, "writes_committed") == 1);
}

TEST_CASE("stopping the writer commits every request that reached it before the exit message") {
  writer_fixture f;
  constexpr int n = 100;
  {
    caf::scoped_actor self{*f.sys};
    using handle =
      decltype(self->request(f.writer, caf::infinite, write_atom::value, write_batch{}));
    std::vector<handle> pending;
    for (int i = 0; i < n; ++i)
      pending.push_back(self->request(f.writer, caf::infinite, write_atom::value,
                                      write_batch{}.put(table::secrets, seq_key(i), "s")));
    // The exit message queues behind the requests (same mailbox, normal priority).
    self->monitor(f.writer);
    caf::anon_send_exit(f.writer, caf::exit_reason::user_shutdown);
    int acked = 0;
    for (auto& h : pending)
      h.receive([&]() { ++acked; },
                [&](caf::error& err) { FAIL("write failed: " << f.sys->render(err)); });
    CHECK(acked == n);
    self->receive([&](caf::down_msg& down) {
      CHECK(down.reason == caf::exit_reason::user_shutdown);
    });

    // A request after the exit gets an error, never an acknowledgement.
    bool failed = false;
    self->request(f.writer, caf::infinite, write_atom::value,
                  write_batch{}.put(table::secrets, "late", "x"))
      .receive([&]() { FAIL("a write to a stopped writer was acknowledged"); },
               [&](caf::error&) { failed = true; });
    CHECK(failed);
  }
  for (int i = 0; i < n; ++i)
    REQUIRE(f.get(table::secrets, seq_key(i)) == "s");
  CHECK(f.get(table::secrets, "late") == "<missing>");
}
