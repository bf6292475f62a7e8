#pragma once
/// `kj_thread`: a thread that runs its own kj event loop, started and stopped from another thread.
///
/// `start(name, body)` spawns the thread, sets up kj's async I/O there and calls
/// `body(io, ready, stopped)` on it. The body sets up what it serves, then calls `ready()` (which
/// lets `start` return) and waits on `stopped` (resolved by `stop`) before it tears down and
/// returns. If it returns an error (or throws) before calling `ready()`, `start` returns that
/// error and the thread is joined. Whatever the body hands back to its owner it writes before
/// `ready()`: `start` returns after it, under the same mutex.
///
/// `stop()` resolves `stopped` and joins the thread; idempotent; any thread but its own.
/// `rpc_server` and `block_server::peer_connection` are built on it.

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <caf/error.hpp>
#include <kj/async-io.h>

#include "runtime/errc.hpp"
#include "runtime/log.hpp"

namespace shoal {

class kj_thread {
public:
  using ready_fn = std::function<void()>;
  using body_fn =
    std::function<caf::error(kj::AsyncIoContext& io, const ready_fn& ready, kj::Promise<void> stopped)>;

  kj_thread() = default;
  kj_thread(const kj_thread&) = delete;
  kj_thread& operator=(const kj_thread&) = delete;
  ~kj_thread() { stop(); }

  /// `name`: the log event when the thread fails after `ready` (e.g. "rpc_thread_failed").
  [[nodiscard]] caf::error start(std::string name, body_fn body) {
    thread_ = std::thread([this, name = std::move(name), body = std::move(body)] {
      KJ_IF_MAYBE (ex, kj::runCatchingExceptions([&] { run(body); })) {
        log::error(name).kv("error", ex->getDescription().cStr());
        fail(make_error(errc::internal, ex->getDescription().cStr()));
      }
    });
    std::unique_lock<std::mutex> lock{mutex_};
    changed_.wait(lock, [this] { return ready_ || failure_.has_value(); });
    if (!failure_)
      return {};
    auto err = *failure_;
    lock.unlock();
    thread_.join();
    return err;
  }

  void stop() {
    if (!thread_.joinable())
      return;
    {
      std::lock_guard<std::mutex> lock{mutex_};
      if (stop_ && !stop_requested_) {
        stop_requested_ = true;
        stop_->fulfill();
      }
    }
    thread_.join();
  }

private:
  void run(const body_fn& body) {
    auto io = kj::setupAsyncIo();
    auto stop_paf = kj::newPromiseAndCrossThreadFulfiller<void>();
    {
      std::lock_guard<std::mutex> lock{mutex_};
      stop_ = kj::mv(stop_paf.fulfiller);
    }
    ready_fn ready = [this] {
      std::lock_guard<std::mutex> lock{mutex_};
      ready_ = true;
      changed_.notify_all();
    };
    auto err = body(io, ready, kj::mv(stop_paf.promise));
    {
      std::lock_guard<std::mutex> lock{mutex_};
      stop_ = nullptr; // belongs to this thread's event loop, which ends here
    }
    if (err)
      fail(std::move(err));
  }

  /// Only a failure before `ready` reaches `start`; later ones are logged by the body.
  void fail(caf::error err) {
    std::lock_guard<std::mutex> lock{mutex_};
    if (!ready_ && !failure_)
      failure_ = std::move(err);
    changed_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  bool ready_ = false;
  std::optional<caf::error> failure_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
  bool stop_requested_ = false;
  std::thread thread_;
};

} // namespace shoal
