#include "runtime/kj_execution_unit.hpp"

#include <utility>

#include <caf/scheduler/abstract_coordinator.hpp>

#include "runtime/log.hpp"

namespace shoal {

kj_execution_unit::kj_execution_unit(caf::actor_system& sys) : pinned_unit(&sys) {}

kj_execution_unit::~kj_execution_unit() noexcept = default;

void kj_execution_unit::pin(caf::resumable* job) {
  std::lock_guard<std::mutex> guard{mutex_};
  pinned_.insert(job);
}

void kj_execution_unit::unpin(caf::resumable* job) {
  std::lock_guard<std::mutex> guard{mutex_};
  pinned_.erase(job);
}

void kj_execution_unit::exec_later(caf::resumable* job) {
  bool ours = false;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    ours = !closed_ && pinned_.count(job) > 0;
    if (ours)
      queue_.push_back(job);
  }
  if (ours)
    doorbell_.ring();
  else // a receiver a pinned actor unblocked, or the loop is gone
    system().scheduler().enqueue(job);
}

kj::Promise<void> kj_execution_unit::run(kj::Timer& timer) {
  later_ = kj::heap<kj::TaskSet>(errors_);
  {
    std::lock_guard<std::mutex> guard{mutex_}; // after_io reads both from any thread
    timer_ = &timer;
    kj_thread_ = std::this_thread::get_id();
  }
  return doorbell_.run([this] { drain(); });
}

bool kj_execution_unit::after_io(std::function<void()> f) {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (closed_ || timer_ == nullptr || std::this_thread::get_id() != kj_thread_)
      return false;
  }
  after_io_.push_back(std::move(f));
  if (after_io_.size() == 1) {
    // A timer fires after the I/O events of the loop's next poll; the callbacks then wait until
    // the loop has handled everything those events led to (kj::evalLast): the calls the events
    // carried have reached their actors by then.
    later_->add(timer_->afterDelay(1 * kj::MICROSECONDS).then([this] {
      return kj::evalLast([this] { run_after_io(); });
    }));
  }
  return true;
}

void kj_execution_unit::run_after_io() {
  auto callbacks = std::exchange(after_io_, {});
  for (auto& f : callbacks)
    f();
}

void kj_execution_unit::log_errors::taskFailed(kj::Exception&& ex) {
  log::error("kj_execution_unit_task_failed").kv("error", ex.getDescription().cStr());
}

void kj_execution_unit::close() {
  std::deque<caf::resumable*> left;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    closed_ = true;
    left.swap(queue_);
  }
  doorbell_.close();
  if (std::this_thread::get_id() == kj_thread_) {
    later_ = nullptr;
    run_after_io(); // now: the loop will not poll again (their actors run on CAF's workers)
  }
  for (auto* job : left)
    system().scheduler().enqueue(job); // the queue's reference moves with the job
}

uint64_t kj_execution_unit::turns() const noexcept {
  std::lock_guard<std::mutex> guard{mutex_};
  return turns_;
}

void kj_execution_unit::drain() {
  std::deque<caf::resumable*> batch;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (closed_)
      return;
    batch.swap(queue_);
    turns_ += batch.size();
  }
  for (auto* job : batch)
    resume(job);
}

void kj_execution_unit::resume(caf::resumable* job) {
  switch (job->resume(this, max_throughput)) {
    case caf::resumable::resume_later:
      exec_later(job); // keeps its reference; runs again after the loop's other events
      break;
    case caf::resumable::done:
    case caf::resumable::awaiting_message:
      caf::intrusive_ptr_release(job);
      break;
    case caf::resumable::shutdown_execution_unit:
      break;
  }
}

} // namespace shoal
