// busy_poll on a real kj loop: a request opens a window in which the idle loop polls instead of
// sleeping; the window closes after the loop was idle that long; requests from more connections
// than the machine has spare cores close it.

#include "runtime/busy_poll.hpp"

#include <thread>

#include <catch2/catch.hpp>
#include <kj/async-io.h>

using shoal::busy_poll;

namespace {

int client_a;
int client_b;

} // namespace

TEST_CASE("busy_poll keeps the idle loop polling for its window after a request, then sleeps") {
  auto io = kj::setupAsyncIo();
  auto& timer = io.provider->getTimer();
  // Windows and waits far apart, so a loaded machine that deschedules the thread for a few ms
  // cannot flip the outcome.
  busy_poll poller{timer, 40 * kj::MILLISECONDS, 1};
  CHECK_FALSE(poller.polling());

  poller.on_request(&client_a);
  CHECK(poller.polling());
  CHECK(poller.windows() == 1);
  // 5 ms idle: the window is still open and the loop polled meanwhile, more than once.
  timer.afterDelay(5 * kj::MILLISECONDS).wait(io.waitScope);
  CHECK(poller.polling());
  auto polls = poller.polls();
  CHECK(polls >= 2);

  // A request inside the window keeps it open from the next idle poll on.
  poller.on_request(&client_a);
  CHECK(poller.windows() == 1);
  timer.afterDelay(20 * kj::MILLISECONDS).wait(io.waitScope);
  CHECK(poller.polling());

  // Idle for longer than the window: it closed, and the loop stopped polling.
  timer.afterDelay(100 * kj::MILLISECONDS).wait(io.waitScope);
  CHECK_FALSE(poller.polling());
  polls = poller.polls();
  timer.afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  CHECK(poller.polls() == polls);

  // The next request opens a new window.
  poller.on_request(&client_a);
  CHECK(poller.polling());
  CHECK(poller.windows() == 2);
}

TEST_CASE("busy_poll does not poll while requests come from more connections than spare cores") {
  auto io = kj::setupAsyncIo();
  auto& timer = io.provider->getTimer();
  busy_poll poller{timer, 50 * kj::MILLISECONDS, 1};

  poller.on_request(&client_a);
  CHECK(poller.polling());
  poller.on_request(&client_b); // a second client on a machine with one spare core
  CHECK(poller.crowded());
  timer.afterDelay(1 * kj::MILLISECONDS).wait(io.waitScope);
  CHECK_FALSE(poller.polling()); // the open window closed at its next poll
  poller.on_request(&client_a); // sources: [a], crowded, none calm yet
  CHECK(poller.crowded());
  CHECK_FALSE(poller.polling());

  // Requests from one client again: polling resumes once enough came in a row.
  for (int i = 1; i < busy_poll::calm_requests; ++i) {
    poller.on_request(&client_a);
    CHECK(poller.crowded());
  }
  poller.on_request(&client_b); // another interrupts the calm: counting starts again
  for (int i = 0; i < busy_poll::calm_requests - 1; ++i)
    poller.on_request(&client_b);
  CHECK(poller.crowded());
  CHECK_FALSE(poller.polling());
  poller.on_request(&client_b);
  CHECK_FALSE(poller.crowded());
  CHECK(poller.polling());
  CHECK(poller.windows() == 2);
}

TEST_CASE("busy_poll with a window of zero, or without a spare core, never polls") {
  auto io = kj::setupAsyncIo();
  auto& timer = io.provider->getTimer();
  busy_poll off{timer, 0 * kj::MILLISECONDS, 1};
  busy_poll single_core{timer, 50 * kj::MILLISECONDS, 0};
  for (auto* poller : {&off, &single_core}) {
    poller->on_request(&client_a);
    CHECK_FALSE(poller->polling());
    CHECK(poller->windows() == 0);
  }
  timer.afterDelay(1 * kj::MILLISECONDS).wait(io.waitScope);
  CHECK(off.polls() == 0);
  CHECK(single_core.polls() == 0);
  auto cores = std::thread::hardware_concurrency();
  CHECK(busy_poll::spare_cores() == (cores > 1 ? cores - 1 : 0));
}
