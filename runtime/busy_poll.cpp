#include "runtime/busy_poll.hpp"

#include <algorithm>
#include <thread>

namespace shoal {

size_t busy_poll::spare_cores() {
  auto cores = static_cast<size_t>(std::thread::hardware_concurrency());
  return cores > 1 ? cores - 1 : 0;
}

busy_poll::busy_poll(kj::Timer& timer, kj::Duration window, size_t max_sources)
  : timer_(timer), window_(max_sources > 0 ? window : 0 * kj::NANOSECONDS),
    max_sources_(max_sources), idle_since_(timer.now()) {}

void busy_poll::on_request(const void* source) {
  if (window_ <= 0 * kj::NANOSECONDS)
    return;
  if (std::find(sources_.begin(), sources_.end(), source) != sources_.end()) {
    if (crowded_ && ++calm_ >= calm_requests)
      crowded_ = false; // only few clients again
  } else if (sources_.size() < max_sources_) {
    sources_.push_back(source);
  } else { // one client too many: start counting afresh from this one
    sources_.assign(1, source);
    crowded_ = true;
    calm_ = 0;
  }
  if (crowded_)
    return; // an open window closes at its next poll
  fresh_request_ = true;
  if (polling_)
    return;
  polling_ = true;
  ++windows_;
  ticking_ = tick().eagerlyEvaluate(nullptr);
}

kj::Promise<void> busy_poll::tick() {
  // Due at once: the loop's next wait polls without sleeping, then this runs.
  return timer_.afterDelay(0 * kj::NANOSECONDS).then([this]() -> kj::Promise<void> {
    ++polls_;
    if (fresh_request_) { // the first poll since a request: the loop is idle from now
      fresh_request_ = false;
      idle_since_ = timer_.now();
    }
    if (!crowded_ && timer_.now() - idle_since_ < window_)
      return tick();
    polling_ = false;
    return kj::READY_NOW;
  });
}

} // namespace shoal
