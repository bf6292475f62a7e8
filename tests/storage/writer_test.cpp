#include "storage/writer.hpp"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <catch2/catch.hpp>

#include "runtime/errc.hpp"
#include "runtime/inspect.hpp"
#include "storage/key.hpp"
#include "storage/store.hpp"
#include "tests/storage/gated_commit.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::storage;
using shoal::storage::test::gated_commit;
using shoal::test::temp_dir;

namespace {

/// Only bounds how long a broken writer can hang a test; nothing waits for it to pass.
constexpr auto reply_timeout = std::chrono::seconds(30);

shoal::actor_snapshot inspect_writer(caf::actor_system& sys, const writer_actor& writer) {
  caf::scoped_actor self{sys};
  shoal::actor_snapshot out;
  self->request(writer, reply_timeout, shoal::inspect_atom::value)
    .receive([&](shoal::actor_snapshot& s) { out = std::move(s); },
             [&](caf::error& err) { FAIL("inspect failed: " << sys.render(err)); });
  return out;
}

/// A writer over the real store in a temp dir.
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
    return inspect_writer(*sys, writer);
  }

  std::string get(table t, const std::string& k) {
    auto v = db->get(t, k);
    REQUIRE(v);
    return v->value_or("<missing>");
  }
};

/// A writer over `gated_commit`, so a test can hold a commit in progress.
struct gated_fixture {
  gated_commit gate;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  writer_actor writer;

  gated_fixture() {
    cfg.set("scheduler.max-threads", 2);
    sys = std::make_unique<caf::actor_system>(cfg);
    writer = spawn_writer(*sys, gate.function());
  }

  ~gated_fixture() {
    gate.open(); // a writer blocked at the gate would keep the actor system from shutting down
    caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
    writer = nullptr;
    sys.reset();
  }
};

using write_handle = decltype(std::declval<caf::scoped_actor&>()->request(
  std::declval<writer_actor&>(), reply_timeout, write_atom::value, write_batch{}));

write_handle request_put(caf::scoped_actor& self, const writer_actor& w, const std::string& k) {
  return self->request(w, reply_timeout, write_atom::value,
                       write_batch{}.put(table::calls, k, "v"));
}

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
  self->request(w, reply_timeout, write_atom::value,
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
  std::vector<write_handle> pending;
  for (int i = 0; i < n; ++i)
    pending.push_back(self->request(
      f.writer, reply_timeout, write_atom::value,
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
    self->request(f.writer, reply_timeout, flush_atom::value)
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
    self->request(f.writer, reply_timeout, flush_atom::value)
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
  self->request(f.writer, reply_timeout, write_atom::value, bad)
    .receive([&]() { FAIL("a write to an unknown table was acknowledged"); },
             [&](caf::error& err) { failure = std::move(err); });
  REQUIRE(failure);
  CHECK(shoal::code_of(failure) == shoal::errc::invalid_argument);

  bool acked = false;
  self->request(f.writer, reply_timeout, write_atom::value,
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
    std::vector<write_handle> pending;
    for (int i = 0; i < n; ++i)
      pending.push_back(self->request(f.writer, reply_timeout, write_atom::value,
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
    self->request(f.writer, reply_timeout, write_atom::value,
                  write_batch{}.put(table::secrets, "late", "x"))
      .receive([&]() { FAIL("a write to a stopped writer was acknowledged"); },
               [&](caf::error&) { failed = true; });
    CHECK(failed);
  }
  for (int i = 0; i < n; ++i)
    REQUIRE(f.get(table::secrets, seq_key(i)) == "s");
  CHECK(f.get(table::secrets, "late") == "<missing>");
}

TEST_CASE("no write is acknowledged before the commit of its group has returned") {
  gated_fixture f;
  caf::scoped_actor self{*f.sys};
  f.gate.close();
  auto first = request_put(self, f.writer, seq_key(0));
  f.gate.wait_started(1); // the writer is inside the commit of {seq 0}
  std::vector<write_handle> queued;
  for (uint64_t i = 1; i <= 9; ++i)
    queued.push_back(request_put(self, f.writer, seq_key(i)));
  CHECK(self->mailbox().empty()); // no acknowledgement while the commit is in progress
  f.gate.open();

  int acked = 0;
  first.receive([&]() { CHECK(f.gate.durable(seq_key(0))); ++acked; },
                [&](caf::error& err) { FAIL(f.sys->render(err)); });
  uint64_t i = 1;
  for (auto& h : queued) {
    auto k = seq_key(i++);
    h.receive([&]() { CHECK(f.gate.durable(k)); ++acked; },
              [&](caf::error& err) { FAIL(f.sys->render(err)); });
  }
  CHECK(acked == 10);
  // The nine requests that queued behind the first commit form exactly one group.
  CHECK(f.gate.groups() == std::vector<size_t>{1, 9});
  auto s = inspect_writer(*f.sys, f.writer);
  CHECK(counter(s, "batches_committed") == 2);
  CHECK(counter(s, "writes_committed") == 10);
  CHECK(counter(s, "largest_group") == 9);
}

TEST_CASE("a failed commit fails every request of its group and the next group is committed") {
  gated_fixture f;
  caf::scoped_actor self{*f.sys};
  f.gate.fail_commit(2, shoal::make_error(shoal::errc::storage_failure, "disk on fire"));
  f.gate.close();
  auto first = request_put(self, f.writer, "first");
  f.gate.wait_started(1);
  std::vector<write_handle> doomed;
  for (int i = 0; i < 3; ++i)
    doomed.push_back(request_put(self, f.writer, "doomed" + std::to_string(i)));
  f.gate.open();

  first.receive([]() {}, [&](caf::error& err) { FAIL(f.sys->render(err)); });
  for (auto& h : doomed) {
    caf::error got;
    h.receive([&]() { FAIL("a request of a failed group was acknowledged"); },
              [&](caf::error& err) { got = std::move(err); });
    CHECK(shoal::code_of(got) == shoal::errc::storage_failure);
    CHECK(shoal::message_of(got) == "disk on fire");
  }
  bool acked = false;
  request_put(self, f.writer, "after").receive([&]() { acked = true; },
                                               [&](caf::error& err) { FAIL(f.sys->render(err)); });
  CHECK(acked);
  CHECK_FALSE(f.gate.durable("doomed0"));
  CHECK(f.gate.durable("after"));
  auto s = inspect_writer(*f.sys, f.writer);
  CHECK(s.state == "idle");
  CHECK(counter(s, "sync_errors") == 1);
  CHECK(counter(s, "batches_committed") == 2);
  CHECK(counter(s, "writes_committed") == 2);
}

TEST_CASE("an exit message commits the collected group first and later requests are refused") {
  gated_fixture f;
  caf::scoped_actor self{*f.sys};
  self->monitor(f.writer);
  f.gate.close();
  auto first = request_put(self, f.writer, "first");
  f.gate.wait_started(1);
  // Queued behind the commit in progress: five writes, the exit message, one more write.
  std::vector<write_handle> before_exit;
  for (int i = 0; i < 5; ++i)
    before_exit.push_back(request_put(self, f.writer, "before" + std::to_string(i)));
  caf::anon_send_exit(f.writer, caf::exit_reason::user_shutdown);
  auto after_exit = request_put(self, f.writer, "after");
  f.gate.open();

  first.receive([]() {}, [&](caf::error& err) { FAIL(f.sys->render(err)); });
  for (auto& h : before_exit)
    h.receive([]() {}, [&](caf::error& err) { FAIL(f.sys->render(err)); });
  bool refused = false;
  after_exit.receive([&]() { FAIL("a write after the exit message was acknowledged"); },
                     [&](caf::error&) { refused = true; });
  CHECK(refused);
  self->receive([&](caf::down_msg& down) {
    CHECK(down.reason == caf::exit_reason::user_shutdown);
  });
  // The five collected writes were committed by the exit path as one group.
  CHECK(f.gate.groups() == std::vector<size_t>{1, 5});
  CHECK_FALSE(f.gate.durable("after"));
}

TEST_CASE("a durable hook runs after the write is durable and its reply sent, never after a failure") {
  writer_fixture f;
  caf::scoped_actor self{*f.sys};
  std::mutex m;
  std::condition_variable cv;
  bool ran = false;
  std::string seen_at_hook;
  durable_hook hook = [&] {
    std::lock_guard<std::mutex> g{m};
    seen_at_hook = f.get(table::volumes, "hooked");
    ran = true;
    cv.notify_all();
  };
  bool acked = false;
  self->request(f.writer, reply_timeout, write_atom::value,
                write_batch{}.put(table::volumes, "hooked", "yes"), hook)
    .receive([&]() { acked = true; }, [&](caf::error& err) { FAIL(f.sys->render(err)); });
  CHECK(acked);
  {
    std::unique_lock<std::mutex> lock{m};
    REQUIRE(cv.wait_for(lock, reply_timeout, [&] { return ran; }));
  }
  CHECK(seen_at_hook == "yes"); // the write was readable when the hook ran

  bool bad_hook_ran = false;
  durable_hook bad_hook = [&] { bad_hook_ran = true; };
  write_batch bad;
  bad.ops.push_back(write_op{write_op::kind::put, static_cast<table>(200), "k", "v"});
  caf::error failure;
  self->request(f.writer, reply_timeout, write_atom::value, bad, bad_hook)
    .receive([&]() { FAIL("a write to an unknown table was acknowledged"); },
             [&](caf::error& err) { failure = std::move(err); });
  REQUIRE(failure);
  // A later write's group is committed (and would run its hook) only after the failed one.
  bool later = false;
  self->request(f.writer, reply_timeout, write_atom::value,
                write_batch{}.put(table::volumes, "later", "ok"))
    .receive([&]() { later = true; }, [&](caf::error& err) { FAIL(f.sys->render(err)); });
  CHECK(later);
  CHECK_FALSE(bad_hook_ran);
}

namespace {

/// A pinned_unit without a loop: its actors run on CAF's workers, and `after_io` keeps the
/// callbacks until the test fires them (or refuses, when told to).
class fake_unit final : public shoal::pinned_unit {
public:
  explicit fake_unit(caf::actor_system& sys) : pinned_unit(&sys) {}
  void pin(caf::resumable*) override {}
  void unpin(caf::resumable*) override {}
  void exec_later(caf::resumable* job) override { system().scheduler().enqueue(job); }

  bool after_io(std::function<void()> f) override {
    std::lock_guard<std::mutex> guard{mtx_};
    if (!accept)
      return false;
    pending_.push_back(std::move(f));
    cv_.notify_all();
    return true;
  }
  void wait_deferred() {
    std::unique_lock<std::mutex> lock{mtx_};
    cv_.wait(lock, [&] { return !pending_.empty(); });
  }
  void fire() {
    std::vector<std::function<void()>> now;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      now.swap(pending_);
    }
    for (auto& f : now)
      f();
  }

  bool accept = true;

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<std::function<void()>> pending_;
};

struct deferring_fixture {
  gated_commit gate;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<fake_unit> unit;
  writer_actor writer;

  deferring_fixture() {
    cfg.set("scheduler.max-threads", 2);
    sys = std::make_unique<caf::actor_system>(cfg);
    unit = std::make_shared<fake_unit>(*sys);
    writer = spawn_pinned_writer(*sys, gate.function(), unit, "test_writer");
  }
  ~deferring_fixture() {
    gate.open();
    unit->fire();
    caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
    writer = nullptr;
    sys.reset();
  }

  /// Holds the writer in the commit of {k0}, queues k1..k`n` behind it, and lets it go on.
  std::vector<write_handle> queue_behind_a_commit(caf::scoped_actor& self, uint64_t n) {
    std::vector<write_handle> out;
    gate.close();
    out.push_back(request_put(self, writer, seq_key(0)));
    gate.wait_started(1);
    for (uint64_t i = 1; i <= n; ++i)
      out.push_back(request_put(self, writer, seq_key(i)));
    gate.open();
    return out;
  }
};

int acknowledged(caf::actor_system& sys, std::vector<write_handle>& handles) {
  int acked = 0;
  for (auto& h : handles)
    h.receive([&]() { ++acked; }, [&](caf::error& err) { FAIL(sys.render(err)); });
  return acked;
}

} // namespace

TEST_CASE("a pinned writer lets a full poll's group wait for the next poll, and what came meanwhile shares its commit") {
  deferring_fixture f;
  caf::scoped_actor self{*f.sys};
  auto handles = f.queue_behind_a_commit(self, 16); // {k0}, then a group of 16
  f.unit->wait_deferred();                          // the group of 16 waits for the next poll
  for (uint64_t i = 17; i <= 21; ++i)               // what that poll brings in
    handles.push_back(request_put(self, f.writer, seq_key(i)));
  CHECK(counter(inspect_writer(*f.sys, f.writer), "pending_ops") == 21); // joined, not committed
  f.unit->fire();
  CHECK(acknowledged(*f.sys, handles) == 22);
  CHECK(f.gate.groups() == std::vector<size_t>{1, 21});
  auto s = inspect_writer(*f.sys, f.writer);
  CHECK(counter(s, "groups_deferred") == 1);
  CHECK(counter(s, "batches_committed") == 2);
}

TEST_CASE("a pinned writer commits a smaller group at once, and any group when its unit cannot defer") {
  deferring_fixture f;
  caf::scoped_actor self{*f.sys};
  SECTION("15 writes: less than one poll can bring in") {
    auto handles = f.queue_behind_a_commit(self, 15);
    CHECK(acknowledged(*f.sys, handles) == 16);
    CHECK(f.gate.groups() == std::vector<size_t>{1, 15});
  }
  SECTION("16 writes, but the unit has no loop to wait for") {
    f.unit->accept = false;
    auto handles = f.queue_behind_a_commit(self, 16);
    CHECK(acknowledged(*f.sys, handles) == 17);
    CHECK(f.gate.groups() == std::vector<size_t>{1, 16});
  }
  CHECK(counter(inspect_writer(*f.sys, f.writer), "groups_deferred") == 0);
}

TEST_CASE("a pinned writer stopped while its group waits for the next poll commits the group") {
  deferring_fixture f;
  caf::scoped_actor self{*f.sys};
  auto handles = f.queue_behind_a_commit(self, 16);
  f.unit->wait_deferred();
  caf::anon_send_exit(f.writer, caf::exit_reason::user_shutdown);
  CHECK(acknowledged(*f.sys, handles) == 17);
  CHECK(f.gate.groups() == std::vector<size_t>{1, 16});
}
