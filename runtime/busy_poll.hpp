#pragma once
/// `busy_poll`: keeps a kj event loop polling its sockets, instead of sleeping in `epoll_wait`,
/// for a short window after each request arrives.
///
/// Why: a thread that sleeps and is woken by the next request loses the wake-up, which on a VM
/// is tens of microseconds (the idle vCPU halts and the host must schedule it again): at one
/// queue client that was as much as the server's whole CPU work per put besides the fsync
/// (bench/RESULTS.md, "Session 6"). Redis and kj sleep at once; low-latency servers (Linux's
/// `busy_poll`, Seastar) poll first.
///
/// How: while the window is open a zero-delay kj timer is kept armed. kj's UnixEventPort takes
/// its sleep timeout from the next timer, so the idle loop's wait becomes `epoll_wait(..., 0)`:
/// every idle turn polls the sockets and the cross-thread wake-ups once and runs whatever came.
/// The window closes once the loop has been idle for `window` since the last request arrived
/// (`on_request`, called by the server's `buffered_stream`s when bytes arrive; the idle time
/// counts from the first poll after it, so the request's own work, an fsync say, does not use up
/// the window); the loop then sleeps as before. So an idle daemon spends at most one window of
/// CPU per burst of requests. A window of zero turns it off.
///
/// Only while few clients call: polling pays when every client has a core of its own. When
/// requests come from more connections than the machine has cores besides this thread's
/// (`max_sources`), the clients need the CPU the loop would burn, and their requests batch up in
/// each poll anyway; then the loop sleeps at once (`crowded`) until `calm_requests` requests in a
/// row came from few connections again.
///
/// kj thread only.

#include <cstdint>
#include <vector>

#include <kj/async.h>
#include <kj/timer.h>

namespace shoal {

class busy_poll {
public:
  static constexpr int calm_requests = 8;

  /// How many connections may call while the loop polls: one fewer than the machine's cores
  /// (none on a single core, where polling would take the CPU from the one client).
  static size_t spare_cores();

  busy_poll(kj::Timer& timer, kj::Duration window, size_t max_sources = spare_cores());

  /// Bytes of a request arrived on connection `source`: keep polling until the loop was idle for
  /// `window` after it (unless requests come from too many connections).
  void on_request(const void* source);

  /// Windows opened so far, and idle polls made in them (for tests and inspection).
  uint64_t windows() const noexcept { return windows_; }
  uint64_t polls() const noexcept { return polls_; }
  bool polling() const noexcept { return polling_; }
  bool crowded() const noexcept { return crowded_; }

private:
  kj::Promise<void> tick();

  kj::Timer& timer_;
  kj::Duration window_;
  size_t max_sources_;
  std::vector<const void*> sources_; ///< the connections requests came from lately
  bool crowded_ = false;             ///< more of them than `max_sources_`: do not poll
  int calm_ = 0;                     ///< requests from known connections since it got crowded
  kj::TimePoint idle_since_;
  bool fresh_request_ = false; ///< a request came since the last poll
  bool polling_ = false;
  uint64_t windows_ = 0;
  uint64_t polls_ = 0;
  kj::Promise<void> ticking_ = nullptr; ///< last: cancelled before the members it uses
};

} // namespace shoal
