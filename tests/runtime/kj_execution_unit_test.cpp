#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include "runtime/kj_execution_unit.hpp"
#include "runtime/kj_mailbox.hpp"
#include "runtime/kj_thread.hpp"
#include "runtime/pinned_actor.hpp"

using namespace std::chrono_literals;
using shoal::kj_execution_unit;

namespace {

using where_atom = caf::atom_constant<caf::atom("where")>;
using relay_atom = caf::atom_constant<caf::atom("relay")>;

/// Answers `where` with the id of the thread it runs on; `relay` asks another actor the same.
class probe : public caf::event_based_actor {
public:
  explicit probe(caf::actor_config& cfg) : caf::event_based_actor(cfg) {}

  caf::behavior make_behavior() override {
    return {
      [](where_atom) { return thread_id(); },
      [this](where_atom, const caf::actor& reply_to) { send(reply_to, thread_id()); },
      [this](relay_atom, const caf::actor& other) {
        auto rp = make_response_promise<uint64_t>();
        request(other, caf::infinite, where_atom::value).then([rp](uint64_t id) mutable {
          rp.deliver(id);
        });
        return rp;
      },
    };
  }

  static uint64_t thread_id() {
    return std::hash<std::thread::id>{}(std::this_thread::get_id());
  }
};

/// A kj thread that drives `unit` (and a kj_mailbox) until stopped, like rpc_server.
struct kj_loop {
  shoal::kj_thread thread;
  std::shared_ptr<shoal::kj_mailbox> mailbox = std::make_shared<shoal::kj_mailbox>();
  std::atomic<uint64_t> id{0};

  explicit kj_loop(std::shared_ptr<kj_execution_unit> unit) {
    auto err = thread.start("test_kj_loop_failed", [this, unit](kj::AsyncIoContext& io,
                                                                const shoal::kj_thread::ready_fn& ready,
                                                                kj::Promise<void> stopped) {
      id = probe::thread_id();
      auto running = unit->run(io.provider->getTimer()).eagerlyEvaluate(nullptr);
      auto posts = mailbox->run().eagerlyEvaluate(nullptr);
      ready();
      stopped.wait(io.waitScope);
      unit->close();
      mailbox->close();
      return caf::error{};
    });
    REQUIRE_FALSE(err);
  }
};

uint64_t ask_where(caf::scoped_actor& self, const caf::actor& who) {
  uint64_t id = 0;
  self->request(who, 10s, where_atom::value)
    .receive([&](uint64_t x) { id = x; }, [](caf::error& err) { FAIL(caf::to_string(err)); });
  return id;
}

} // namespace

TEST_CASE("a pinned actor runs on the kj thread, and on CAF's workers once the unit closed") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto unit = std::make_shared<kj_execution_unit>(sys);
  caf::scoped_actor self{sys};
  // Spawned before the loop runs, like shoald's broker: its first turn waits for the loop.
  auto pinned = sys.spawn<shoal::pinned<probe>>(unit);
  auto plain = sys.spawn<probe>();
  {
    kj_loop loop{unit};
    CHECK(ask_where(self, pinned) == loop.id.load());
    CHECK(ask_where(self, plain) != loop.id.load());

    SECTION("an actor a pinned actor messages is not dragged onto the kj thread") {
      uint64_t id = 0;
      self->request(pinned, 10s, relay_atom::value, caf::actor{plain})
        .receive([&](uint64_t x) { id = x; }, [](caf::error& err) { FAIL(caf::to_string(err)); });
      CHECK(id != loop.id.load());
    }

    SECTION("a message sent on the kj thread itself reaches the pinned actor there") {
      auto me = caf::actor_cast<caf::actor>(self);
      // Sent from the kj thread: the unit's same-thread path (no doorbell).
      loop.mailbox->post([pinned, me] { caf::anon_send(pinned, where_atom::value, me); });
      uint64_t id = 0;
      self->receive([&](uint64_t x) { id = x; }, caf::after(10s) >> [] { FAIL("no answer"); });
      CHECK(id == loop.id.load());
    }
    CHECK(unit->turns() > 0);
  }
  // The loop ended: the pinned actor still answers (from a CAF worker) and still stops.
  CHECK(ask_where(self, pinned) != 0);
  self->send_exit(pinned, caf::exit_reason::user_shutdown);
  self->send_exit(plain, caf::exit_reason::user_shutdown);
}

TEST_CASE("closing a unit whose loop never ran hands its queued actors to CAF's workers") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto unit = std::make_shared<kj_execution_unit>(sys);
  caf::scoped_actor self{sys};
  auto pinned = sys.spawn<shoal::pinned<probe>>(unit);
  unit->close(); // e.g. the RPC server could not listen
  CHECK(ask_where(self, pinned) != 0);
  self->send_exit(pinned, caf::exit_reason::user_shutdown);
}

TEST_CASE("after_io runs on the kj thread once the loop polled again, only from that thread, and at close") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto unit = std::make_shared<kj_execution_unit>(sys);
  CHECK_FALSE(unit->after_io([] {})); // not running yet
  std::promise<uint64_t> ran_on;
  std::promise<bool> accepted;
  std::atomic<int> at_close{0};
  {
    kj_loop loop{unit};
    CHECK_FALSE(unit->after_io([] {})); // not the kj thread
    loop.mailbox->post([&] {
      accepted.set_value(unit->after_io([&] { ran_on.set_value(probe::thread_id()); }));
    });
    CHECK(accepted.get_future().get());
    auto ran = ran_on.get_future();
    REQUIRE(ran.wait_for(10s) == std::future_status::ready);
    CHECK(ran.get() == loop.id.load());

    // Whether the loop polls again before it stops or not, each callback runs exactly once
    // (close() runs what is pending).
    std::promise<void> posted;
    loop.mailbox->post([&] {
      CHECK(unit->after_io([&] { ++at_close; }));
      CHECK(unit->after_io([&] { ++at_close; }));
      posted.set_value();
    });
    posted.get_future().wait();
  } // stops the loop: close() runs whatever has not run yet
  CHECK(at_close.load() == 2);
  CHECK_FALSE(unit->after_io([] {})); // closed
}
