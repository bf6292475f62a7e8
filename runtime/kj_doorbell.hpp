#pragma once
/// `kj_doorbell`: wakes a kj event loop from any thread, batched; the wake-up under `kj_mailbox`
/// (tasks) and `kj_execution_unit` (pinned actors).
///
/// `run(on_ring)` (kj thread, once) calls `on_ring()` on the kj thread after `ring()`. Rings that
/// come while the loop is busy fold into one call, so a burst of rings from other threads costs
/// one cross-thread wake-up. A ring on the kj thread itself costs no system call: it schedules
/// `on_ring` with `kj::evalLater` (`local_order::later`) or `kj::evalLast` (`local_order::last`:
/// after every event that is ready, the group-commit point). `close()` ends it; later rings do
/// nothing.

#include <functional>
#include <mutex>
#include <thread>

#include <kj/async.h>

namespace shoal {

class kj_doorbell {
public:
  enum class local_order { later, last };

  explicit kj_doorbell(local_order order) : order_(order) {}

  /// Calls `on_ring` after rings until `close()`. Call once, on the kj thread.
  kj::Promise<void> run(std::function<void()> on_ring);

  /// Any thread.
  void ring();

  /// Stops calling `on_ring`. On the kj thread (any thread once the loop is gone).
  void close();

  /// Cross-thread wake-ups so far (rings on the kj thread are not counted).
  uint64_t wakeups() const noexcept;

private:
  class local_errors final : public kj::TaskSet::ErrorHandler {
  public:
    void taskFailed(kj::Exception&& exception) override;
  };

  kj::Promise<void> arm();

  local_order order_;
  std::function<void()> on_ring_;
  mutable std::mutex mutex_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> bell_; ///< set while the loop waits
  bool rung_ = false;        ///< a ring came while the loop was not waiting
  bool local_pending_ = false;
  bool running_ = false;     ///< run() was called and close() was not
  bool closed_ = false;
  std::thread::id kj_thread_;
  uint64_t wakeups_ = 0;
  local_errors errors_;
  kj::Own<kj::TaskSet> local_; ///< same-thread rings; kj thread only
};

} // namespace shoal
