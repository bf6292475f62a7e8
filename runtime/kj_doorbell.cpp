#include "runtime/kj_doorbell.hpp"

#include "runtime/log.hpp"

namespace shoal {

kj::Promise<void> kj_doorbell::run(std::function<void()> on_ring) {
  on_ring_ = std::move(on_ring);
  {
    std::lock_guard<std::mutex> guard{mutex_};
    kj_thread_ = std::this_thread::get_id();
    running_ = !closed_;
  }
  local_ = kj::heap<kj::TaskSet>(errors_);
  return arm();
}

void kj_doorbell::ring() {
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> bell;
  bool local = false;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (closed_)
      return;
    if (running_ && std::this_thread::get_id() == kj_thread_) {
      local = !local_pending_;
      local_pending_ = true;
    } else {
      bell = kj::mv(bell_);
      if (!bell)
        rung_ = true; // the loop is busy: it looks at this before it waits again
    }
  }
  if (bell)
    bell->fulfill();
  if (!local)
    return;
  auto fire = [this] {
    {
      std::lock_guard<std::mutex> guard{mutex_};
      local_pending_ = false;
      if (closed_)
        return;
    }
    on_ring_();
  };
  if (order_ == local_order::last)
    local_->add(kj::evalLast(kj::mv(fire)));
  else
    local_->add(kj::evalLater(kj::mv(fire)));
}

void kj_doorbell::close() {
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> bell;
  bool on_kj_thread = false;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    closed_ = true;
    on_kj_thread = running_ && std::this_thread::get_id() == kj_thread_;
    running_ = false;
    bell = kj::mv(bell_);
  }
  if (on_kj_thread)
    local_ = nullptr;
  if (bell)
    bell->fulfill();
}

uint64_t kj_doorbell::wakeups() const noexcept {
  std::lock_guard<std::mutex> guard{mutex_};
  return wakeups_;
}

kj::Promise<void> kj_doorbell::arm() {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (closed_)
      return kj::READY_NOW;
    if (rung_) {
      rung_ = false;
      paf.fulfiller->fulfill();
    } else {
      bell_ = kj::mv(paf.fulfiller);
    }
  }
  return paf.promise.then([this]() -> kj::Promise<void> {
    {
      std::lock_guard<std::mutex> guard{mutex_};
      if (closed_)
        return kj::READY_NOW;
      ++wakeups_;
    }
    on_ring_();
    return arm();
  });
}

void kj_doorbell::local_errors::taskFailed(kj::Exception&& exception) {
  log::error("kj_doorbell_task_failed").kv("error", exception.getDescription().cStr());
}

} // namespace shoal
