#include "runtime/kj_execution_unit.hpp"

#include <caf/scheduler/abstract_coordinator.hpp>

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

kj::Promise<void> kj_execution_unit::run() {
  return doorbell_.run([this] { drain(); });
}

void kj_execution_unit::close() {
  std::deque<caf::resumable*> left;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    closed_ = true;
    left.swap(queue_);
  }
  doorbell_.close();
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
