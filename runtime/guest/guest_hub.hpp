#pragma once
/// The guest hub: ONE epoll thread per shoald that serves every guest channel (one Unix socket
/// per container, docs/guest-protocol.md). Container supervisors never touch sockets: they call
/// `listen` / `send` / `close` and receive decoded frames through callbacks.
///
/// A channel's life:
///
///     listen(path) ──► LISTENING ──guest connects──► CONNECTED ──► (gone)
///                        │  socket file at `path`      │  socket file removed; frames flow
///                        │                             ├─ guest closes / bad frame / I/O error:
///                        │                             │    on_closed(id, reason), exactly once
///                        └─ close(id) / stop() ────────┴─ close(id) / stop(): no callback
///
/// Threading: `listen`, `send`, `close`, `counters` and `stop` may be called from any thread.
/// Callbacks run on the hub thread, in order per channel; they must be cheap and never block
/// (the runtime makes them `caf::anon_send` to the supervisor actor), and may call `send` and
/// `close` (both only enqueue) but not `stop`.
///
/// Only frames a guest may send (HELLO, READY, OUTPUTS, CALL, FATAL) are accepted from the
/// socket; anything else, and anything the strict decoder rejects, closes the channel with
/// `errc::invalid_argument`. A guest that hangs up ends it with `errc::unavailable`.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "runtime/guest/guest_frame.hpp"

namespace shoal::guest {

/// Names one channel for the life of the hub; never reused, never 0.
using channel_id = uint64_t;

/// Per-channel callbacks; both run on the hub thread. Whatever they capture must stay valid until
/// `stop()` returned (`close()` is asynchronous, so it is no such point): capture actor handles or
/// objects that outlive the hub.
struct channel_handlers {
  /// Each decoded frame from the guest, in the order it was sent.
  std::function<void(channel_id, frame)> on_frame;
  /// The channel ended without `close()`: `reason` says why (unavailable: the guest hung up or
  /// a socket error; invalid_argument: it sent a frame the hub rejects). At most once, after the
  /// last `on_frame`; never after `close(id)` or `stop()` were processed.
  std::function<void(channel_id, caf::error)> on_closed;
};

struct guest_hub_config {
  /// Cap on one frame's payload from a guest; larger frames close the channel.
  size_t max_payload_bytes = default_max_payload_bytes;
  /// Permission bits of the socket file: 0666 so a non-root container user can connect (the
  /// directory it lives in is what restricts access).
  uint32_t socket_mode = 0666;
};

/// A snapshot of the hub's counters; each value is read atomically, the set is not.
struct guest_hub_counters {
  uint64_t frames_in = 0;      ///< frames decoded from guests
  uint64_t frames_out = 0;     ///< frames (send calls) fully written to guests
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t channels_open = 0;  ///< listening or connected right now
  uint64_t sends_dropped = 0;  ///< send() to a channel that is closed or unknown
};

class guest_hub {
public:
  /// Creates the epoll instance and starts the hub thread.
  [[nodiscard]] static caf::expected<std::unique_ptr<guest_hub>> start(guest_hub_config cfg = {});

  /// Calls `stop()`.
  ~guest_hub();
  guest_hub(const guest_hub&) = delete;
  guest_hub& operator=(const guest_hub&) = delete;

  /// Creates a listening Unix socket at `path` (mode `socket_mode`; a stale socket file there is
  /// replaced, any other file is `already_exists`) and a channel that accepts exactly one
  /// connection on it. The socket file is removed once the guest connected, or on close/stop.
  /// Fails with invalid_argument for a path longer than a Unix socket allows (107 bytes),
  /// unavailable when the hub is stopped or a system call fails.
  [[nodiscard]] caf::expected<channel_id> listen(const std::string& path,
                                                 channel_handlers handlers);

  /// Queues one encoded frame (`encode(...)`) for the channel and returns at once. Frames sent
  /// before the guest connects are written once it does. Frames queued together are written
  /// with one `sendmsg` where possible. A send to a closed or unknown channel is dropped
  /// (counted in `sends_dropped`). The queue is unbounded: the supervisor bounds what it sends
  /// by the guest's input credits.
  void send(channel_id id, std::string encoded);

  /// Ends the channel: frames already queued get one non-blocking write attempt, then the
  /// socket is closed and its file removed. No `on_closed` follows once the hub processed it.
  /// Idempotent; unknown ids are ignored.
  void close(channel_id id);

  /// Closes every channel (no callbacks) and joins the hub thread. Idempotent. Must not be called
  /// from a callback.
  void stop();

  guest_hub_counters counters() const noexcept;

private:
  struct state;
  explicit guest_hub(std::unique_ptr<state> st);

  std::unique_ptr<state> state_;
};

} // namespace shoal::guest
