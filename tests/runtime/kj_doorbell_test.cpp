// kj_doorbell on a real kj thread: cross-thread rings fold into few wake-ups, a ring on the kj
// thread itself costs none and (local_order::last) runs after the events already ready, and a
// closed doorbell stays quiet.

#include "runtime/kj_doorbell.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>

#include "runtime/kj_thread.hpp"

using namespace std::chrono_literals;
using shoal::kj_doorbell;

namespace {

/// A doorbell driven by a kj thread of its own; `on_ring` runs there. `setup` runs on the kj
/// thread before it waits (to ring from there).
struct rung_loop {
  kj_doorbell bell{kj_doorbell::local_order::last};
  shoal::kj_thread thread;
  std::mutex mtx;
  std::condition_variable cv;
  int calls = 0;
  std::thread::id loop_id;
  std::thread::id ring_ran_on;
  std::atomic<bool> slow{false}; ///< on_ring waits while this is true
  std::atomic<bool> close_on_ring{false}; ///< on_ring closes the doorbell (on the kj thread)

  struct no_errors final : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}
  };

  explicit rung_loop(std::function<void(rung_loop&, kj::TaskSet&)> setup = {}) {
    auto err = thread.start("test_doorbell_failed", [this, setup](kj::AsyncIoContext& io,
                                                                  const shoal::kj_thread::ready_fn& ready,
                                                                  kj::Promise<void> stopped) {
      loop_id = std::this_thread::get_id();
      no_errors handler;
      kj::TaskSet tasks{handler};
      auto running = bell.run([this] {
        while (slow.load())
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (close_on_ring.load())
          bell.close();
        std::lock_guard<std::mutex> guard{mtx};
        ++calls;
        ring_ran_on = std::this_thread::get_id();
        cv.notify_all();
      }).eagerlyEvaluate(nullptr);
      if (setup)
        setup(*this, tasks);
      ready();
      stopped.wait(io.waitScope);
      bell.close();
      return caf::error{};
    });
    REQUIRE_FALSE(err);
  }

  bool wait_calls(int n) {
    std::unique_lock<std::mutex> lock{mtx};
    return cv.wait_for(lock, 10s, [&] { return calls >= n; });
  }
  int calls_now() {
    std::lock_guard<std::mutex> guard{mtx};
    return calls;
  }
};

} // namespace

TEST_CASE("rings from another thread reach the kj thread, and a burst folds into few wake-ups") {
  rung_loop loop;
  loop.bell.ring();
  REQUIRE(loop.wait_calls(1));
  CHECK(loop.ring_ran_on == loop.loop_id);
  CHECK(loop.bell.wakeups() == 1);

  // Keep the loop busy in the next call while 100 rings arrive: they fold into one more call.
  loop.slow = true;
  loop.bell.ring();
  std::this_thread::sleep_for(20ms); // the loop is inside on_ring now
  for (int i = 0; i < 100; ++i)
    loop.bell.ring();
  loop.slow = false;
  REQUIRE(loop.wait_calls(3));
  std::this_thread::sleep_for(50ms);
  CHECK(loop.calls_now() == 3);
  CHECK(loop.bell.wakeups() <= 3);
}

TEST_CASE("a ring on the kj thread costs no wake-up and runs after the events already ready") {
  std::atomic<bool> later_done{false};
  rung_loop loop([&](rung_loop& self, kj::TaskSet& tasks) {
    self.bell.ring(); // on the kj thread: on_ring is scheduled with kj::evalLast
    tasks.add(kj::evalLater([&] { later_done = true; }));
  });
  REQUIRE(loop.wait_calls(1));
  CHECK(later_done.load()); // the evalLater event, armed after the ring, ran before on_ring
  CHECK(loop.bell.wakeups() == 0);
}

TEST_CASE("a closed doorbell ignores rings") {
  rung_loop loop;
  loop.close_on_ring = true;
  loop.bell.ring();
  REQUIRE(loop.wait_calls(1)); // that call closed it, on the kj thread
  auto wakeups = loop.bell.wakeups();
  for (int i = 0; i < 10; ++i)
    loop.bell.ring();
  std::this_thread::sleep_for(50ms);
  CHECK(loop.calls_now() == 1);
  CHECK(loop.bell.wakeups() == wakeups);

  kj_doorbell never_run{kj_doorbell::local_order::later};
  never_run.close();
  never_run.ring(); // no loop ever: nothing to call, nothing to wake
  CHECK(never_run.wakeups() == 0);
}
