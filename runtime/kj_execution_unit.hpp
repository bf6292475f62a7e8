#pragma once
/// `kj_execution_unit`: runs the CAF actors pinned to it (pinned_actor.hpp) on a kj event loop's
/// thread, between the loop's other events.
///
/// - `exec_later(job)` (any thread) queues a pinned actor to run and rings a `kj_doorbell`. From
///   another thread that is one wake-up per burst, like kj_mailbox; on the kj thread itself it
///   only schedules a drain with `kj::evalLast`, so an RPC handler that messages a pinned actor costs
///   no system call, and the actor runs once the loop has handled every ready event: all the
///   requests that arrived together reach the broker, and then its writer, as one group (one
///   fsync), like Redis's `beforeSleep`. A job that is not pinned here goes to CAF's scheduler.
/// - `run()` (kj thread, once) resumes queued actors until `close()`. An actor is resumed for at
///   most `max_throughput` messages per turn, then queued again behind the loop's other events.
/// - `close()` (kj thread, before the loop ends) hands the queued actors, and every later one,
///   to CAF's scheduler: pinned actors outlive the loop and still process their exit.
/// - `after_io(f)` (kj thread): `f` runs once the loop has polled its sockets again and handled
///   what came in. kj takes at most 16 ready sockets per poll; the queue writer uses this to let
///   a full round's group wait for the requests of the next round (one fsync for all, as Redis
///   commits everything its event loop read before it sleeps).
///
/// Lifetime: shared by the kj thread and the pinned actors (each holds a shared_ptr).

#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include <caf/actor_system.hpp>
#include <kj/async.h>
#include <kj/timer.h>

#include "runtime/kj_doorbell.hpp"
#include "runtime/pinned_actor.hpp"

namespace shoal {

class kj_execution_unit final : public pinned_unit {
public:
  static constexpr size_t max_throughput = 100;

  explicit kj_execution_unit(caf::actor_system& sys);
  ~kj_execution_unit() noexcept override;

  void pin(caf::resumable* job) override;
  void unpin(caf::resumable* job) override;
  void exec_later(caf::resumable* job) override;

  /// Resumes queued actors until `close()`. Call once, on the kj thread; `timer` is the loop's.
  kj::Promise<void> run(kj::Timer& timer);

  /// Runs `f` on the kj thread once the loop has polled for I/O again and handled what that
  /// brought in: the calls that were waiting in sockets have reached their actors by then. Only
  /// on the kj thread while the unit runs (false otherwise); `close()` runs what is pending.
  bool after_io(std::function<void()> f) override;

  /// From now on jobs go to CAF's scheduler. Call on the kj thread, before its loop ends.
  void close();

  /// Actor turns run on the kj thread so far (inspection).
  uint64_t turns() const noexcept;

private:
  void drain();
  void run_after_io();
  void resume(caf::resumable* job);

  mutable std::mutex mutex_;
  std::unordered_set<caf::resumable*> pinned_;
  std::deque<caf::resumable*> queue_;
  bool closed_ = false;
  uint64_t turns_ = 0;
  kj_doorbell doorbell_{kj_doorbell::local_order::last};
  kj::Timer* timer_ = nullptr;              ///< set by run(), under mutex_
  std::thread::id kj_thread_;               ///< set by run(), under mutex_
  struct log_errors final : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& ex) override;
  } errors_;
  kj::Own<kj::TaskSet> later_;              ///< the after_io timer (kj thread only)
  std::vector<std::function<void()>> after_io_; ///< kj thread only
};

} // namespace shoal
