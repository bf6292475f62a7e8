#pragma once
/// `kj_mailbox`: how CAF actors (or any thread) make the kj thread do something ("Pattern B" in
/// PLATFORM.md §3) — for example call a capability a client passed in.
///
/// `post(task)` is non-blocking and callable from any thread. `run()` is called once on the kj
/// thread; the returned promise runs posted tasks in order, in batches woken by a `kj_doorbell`:
/// a burst of posts from other threads costs one wake-up, and a post on the kj thread itself (an
/// actor pinned there, pinned_actor.hpp) none. Tasks must capture plain data or kj-thread-owned
/// pointers that outlive the mailbox. `close()` (kj thread) stops running tasks; later posts are
/// dropped silently — the owner shuts the mailbox only after the actors that post to it have
/// stopped.

#include <deque>
#include <functional>
#include <mutex>

#include <kj/async.h>

#include "runtime/kj_doorbell.hpp"

namespace shoal {

class kj_mailbox {
public:
  using task = std::function<void()>;

  /// Runs posted tasks until `close()`. Call once, on the kj thread.
  kj::Promise<void> run();

  /// Queues `t` to run on the kj thread. Any thread.
  void post(task t);

  /// Stops running tasks; queued tasks are discarded. Any thread.
  void close();

  /// Tasks run so far (for inspection).
  uint64_t tasks_run() const noexcept;

  /// Doorbell wakeups so far: tasks_run / wakeups is the batching factor.
  uint64_t wakeups() const noexcept;

private:
  void drain();

  mutable std::mutex mutex_;
  std::deque<task> queue_;
  bool closed_ = false;
  uint64_t tasks_run_ = 0;
  kj_doorbell doorbell_{kj_doorbell::local_order::later};
};

} // namespace shoal
