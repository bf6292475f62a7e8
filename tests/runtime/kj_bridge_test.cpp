#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <kj/async.h>
#include <kj/vector.h>

#include "runtime/errc.hpp"
#include "runtime/kj_bridge.hpp"
#include "runtime/kj_mailbox.hpp"

using namespace std::chrono_literals;

namespace {

using add_atom = caf::atom_constant<caf::atom("add")>;
using find_atom = caf::atom_constant<caf::atom("find")>;
using hang_atom = caf::atom_constant<caf::atom("hang")>;

using calc_actor = caf::typed_actor<caf::replies_to<add_atom, int32_t, int32_t>::with<int32_t>,
                                    caf::replies_to<find_atom, std::string>::with<std::string>,
                                    caf::replies_to<hang_atom>::with<int32_t>>;

calc_actor::behavior_type calc(calc_actor::pointer self) {
  return {
    [](add_atom, int32_t a, int32_t b) { return a + b; },
    [](find_atom, const std::string& name) -> caf::result<std::string> {
      return shoal::make_error(shoal::errc::not_found, "no thing named '" + name + "'");
    },
    [self](hang_atom) -> caf::result<int32_t> {
      // Never delivered: the caller's deadline must fire.
      return self->make_response_promise<int32_t>();
    },
  };
}

struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  kj::EventLoop loop;
  kj::WaitScope ws{loop};
};

} // namespace

TEST_CASE("a bridged ask returns the actor's reply to the kj thread") {
  fixture f;
  auto actor = f.sys.spawn(calc);
  auto sum = shoal::bridge::ask<int32_t>(f.sys, actor, 5s, add_atom::value, 2, 40).wait(f.ws);
  CHECK(sum == 42);
  caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
}

TEST_CASE("an actor's shoal error reaches the kj caller with its code and message") {
  fixture f;
  auto actor = f.sys.spawn(calc);
  try {
    shoal::bridge::ask<std::string>(f.sys, actor, 5s, find_atom::value, std::string{"gadget"})
      .wait(f.ws);
    FAIL("the ask should have failed");
  } catch (const kj::Exception& ex) {
    CHECK(std::string{ex.getDescription().cStr()} == "[not_found] no thing named 'gadget'");
    CHECK(ex.getType() == kj::Exception::Type::FAILED);
  }
  caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
}

TEST_CASE("a bridged ask to an actor that never answers fails with a timeout") {
  fixture f;
  auto actor = f.sys.spawn(calc);
  try {
    shoal::bridge::ask<int32_t>(f.sys, actor, 50ms, hang_atom::value).wait(f.ws);
    FAIL("the ask should have timed out");
  } catch (const kj::Exception& ex) {
    CHECK(std::string{ex.getDescription().cStr()}.rfind("[timeout] ", 0) == 0);
  }
  caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
}

TEST_CASE("many concurrent bridged asks each get their own reply") {
  fixture f;
  auto actor = f.sys.spawn(calc);
  kj::Vector<kj::Promise<int32_t>> promises;
  for (int32_t i = 0; i < 500; ++i)
    promises.add(shoal::bridge::ask<int32_t>(f.sys, actor, 10s, add_atom::value, i, i));
  auto results = kj::joinPromises(promises.releaseAsArray()).wait(f.ws);
  for (int32_t i = 0; i < 500; ++i)
    REQUIRE(results[i] == 2 * i);
  caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
}

TEST_CASE("tasks posted from CAF threads run in order on the kj thread, several per wakeup") {
  fixture f;
  shoal::kj_mailbox mailbox;
  auto running = mailbox.run().eagerlyEvaluate(nullptr);
  constexpr int task_count = 2000;
  std::vector<int> seen; // only touched by tasks, i.e. on this (the kj) thread
  auto kj_thread = std::this_thread::get_id();
  std::atomic<bool> wrong_thread{false};
  auto done = kj::newPromiseAndCrossThreadFulfiller<void>();
  auto* done_fulfiller = done.fulfiller.get();
  f.sys.spawn([&](caf::event_based_actor*) {
    for (int i = 0; i < task_count; ++i)
      mailbox.post([&, i] {
        if (std::this_thread::get_id() != kj_thread)
          wrong_thread = true;
        seen.push_back(i);
        if (i == task_count - 1)
          done_fulfiller->fulfill();
      });
  });
  done.promise.wait(f.ws);
  REQUIRE(seen.size() == task_count);
  for (int i = 0; i < task_count; ++i)
    REQUIRE(seen[i] == i);
  CHECK_FALSE(wrong_thread);
  CHECK(mailbox.tasks_run() == task_count);
  CHECK(mailbox.wakeups() < task_count);
  mailbox.close();
}

TEST_CASE("a closed kj mailbox drops later posts instead of running them") {
  fixture f;
  shoal::kj_mailbox mailbox;
  auto running = mailbox.run().eagerlyEvaluate(nullptr);
  mailbox.close();
  bool ran = false;
  mailbox.post([&] { ran = true; });
  f.loop.run();
  CHECK_FALSE(ran);
  CHECK(mailbox.tasks_run() == 0);
}
