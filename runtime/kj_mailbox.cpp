#include "runtime/kj_mailbox.hpp"

namespace shoal {

kj::Promise<void> kj_mailbox::run() {
  return doorbell_.run([this] { drain(); });
}

void kj_mailbox::post(task t) {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (closed_)
      return;
    queue_.push_back(std::move(t));
  }
  doorbell_.ring();
}

void kj_mailbox::close() {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    closed_ = true;
    queue_.clear();
  }
  doorbell_.close();
}

uint64_t kj_mailbox::tasks_run() const noexcept {
  std::lock_guard<std::mutex> guard{mutex_};
  return tasks_run_;
}

uint64_t kj_mailbox::wakeups() const noexcept { return doorbell_.wakeups(); }

void kj_mailbox::drain() {
  std::deque<task> batch;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (closed_)
      return;
    batch.swap(queue_);
    tasks_run_ += batch.size();
  }
  for (auto& t : batch)
    t();
}

} // namespace shoal
