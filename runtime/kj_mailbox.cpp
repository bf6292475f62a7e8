#include "runtime/kj_mailbox.hpp"

namespace shoal {

kj::Promise<void> kj_mailbox::run() { return arm(); }

void kj_mailbox::post(task t) {
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> bell;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (closed_)
      return;
    queue_.push_back(std::move(t));
    bell = kj::mv(doorbell_);
  }
  if (bell)
    bell->fulfill();
}

void kj_mailbox::close() {
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> bell;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    closed_ = true;
    queue_.clear();
    bell = kj::mv(doorbell_);
  }
  if (bell)
    bell->fulfill();
}

uint64_t kj_mailbox::tasks_run() const noexcept {
  std::lock_guard<std::mutex> guard{mutex_};
  return tasks_run_;
}

uint64_t kj_mailbox::wakeups() const noexcept {
  std::lock_guard<std::mutex> guard{mutex_};
  return wakeups_;
}

kj::Promise<void> kj_mailbox::arm() {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (closed_)
      return kj::READY_NOW;
    if (!queue_.empty())
      paf.fulfiller->fulfill();
    else
      doorbell_ = kj::mv(paf.fulfiller);
  }
  return paf.promise.then([this]() -> kj::Promise<void> {
    std::deque<task> batch;
    {
      std::lock_guard<std::mutex> guard{mutex_};
      if (closed_)
        return kj::READY_NOW;
      batch.swap(queue_);
      ++wakeups_;
      tasks_run_ += batch.size();
    }
    for (auto& t : batch)
      t();
    return arm();
  });
}

} // namespace shoal
