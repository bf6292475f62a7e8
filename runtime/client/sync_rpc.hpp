#pragma once
/// `sync_rpc`: a Cap'n Proto RPC client connection without an event loop, for the calling thread.
///
/// It speaks the standard two-party protocol (capnp/rpc.capnp: Bootstrap, Call, Return, Finish,
/// Resolve, Release, Abort) over a blocking socket, one call at a time: a call is one `send` (the
/// Finish of the previous call travels with it) and blocking `recv`s until its Return. No promises,
/// no epoll, no allocation for small messages. shoald sees an ordinary capnp client.
///
/// The connection opens with `channel_preface` (runtime/channel_preface.hpp), so shoald serves it
/// with its lean `channel_vat`; a server that closes on the preface gets a second connection
/// without it.
///
/// Used for the queue hot path (client.cpp's thread channels): with a kj loop per call, half of
/// a put's client CPU was promise and RPC-table bookkeeping. Everything else keeps using
/// kj's RpcSystem on the connection's own thread.
///
/// Only what such a client needs: it exports nothing, calls imported capabilities, and does not
/// pipeline after the handshake. Server-initiated calls are answered `unimplemented`.
/// Not thread-safe: one thread owns it. A forked child may destroy its copy (it only closes the
/// descriptor).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

namespace shoal::client {

/// How long a call may busy-poll its socket for the reply before sleeping in `recv`.
///
/// Why: on a VM, a thread that sleeps in `recv` and is woken by the reply loses tens of
/// microseconds to the wake-up alone, as much as a whole queue put costs the server besides its
/// fsync (bench/RESULTS.md, "Session 6"). A call whose replies lately came within `limit` polls
/// with non-blocking `recv`s for up to twice its typical reply time (at most `limit`), then sleeps.
/// A call that waits long (a blocking get on an empty queue, a loaded server) pushes the typical
/// time past the limit and sleeps at once until replies are quick again. Only one thread per two
/// cores of a process polls at a time (`try_enter`; none on a single core), so many waiting
/// threads never take the CPU the server or the other threads need. Not thread-safe; one per channel.
class reply_poll {
public:
  explicit reply_poll(std::chrono::microseconds limit) noexcept
    : limit_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(limit).count()) {}

  /// How long the next wait may poll, in ns (0: sleep at once).
  int64_t budget_ns() const noexcept;
  /// A reply came `waited_ns` after its call was sent.
  void replied(int64_t waited_ns) noexcept;
  /// The moving average of reply times (0: no reply yet).
  int64_t typical_ns() const noexcept { return typical_ns_; }

  /// Takes one of the process's polling slots (false: all taken, sleep instead); `leave` gives
  /// it back.
  static bool try_enter() noexcept;
  static void leave() noexcept;
  static int slots() noexcept;

private:
  int64_t limit_ns_;
  int64_t typical_ns_ = 0;
};

class sync_rpc {
public:
  /// What the handshake brings back: the imported Session and its Queues capability.
  struct session_caps {
    uint32_t session = 0;
    uint32_t queues = 0;
  };

  /// Connects to `address` ("host:port", "[v6]:port" or "unix:/path") and authenticates with
  /// `token` in `environment`; then fetches the session's Queues capability. Throws
  /// kj::Exception (DISCONNECTED for socket failures, FAILED with the server's text otherwise),
  /// as kj's RpcSystem would.
  sync_rpc(const std::string& address, const std::string& token, const std::string& client_version,
           const std::string& environment, std::chrono::milliseconds timeout,
           std::chrono::microseconds reply_poll_limit = std::chrono::microseconds{0});
  ~sync_rpc();
  sync_rpc(const sync_rpc&) = delete;
  sync_rpc& operator=(const sync_rpc&) = delete;

  const session_caps& caps() const noexcept { return caps_; }

  /// Calls method `method` of interface `interface_id` on the imported capability `target`:
  /// `fill(Params::Builder)` writes the parameters, `read(Results::Reader)` turns the results
  /// into the return value (called before the reply buffer is reused). Throws kj::Exception for
  /// a failed call or a lost connection.
  template <class Params, class Results, class Fill, class Read>
  auto call(uint32_t target, uint64_t interface_id, uint16_t method, Fill&& fill, Read&& read) {
    if (finish_pending_ >= 0) {
      // The previous call's Finish leaves with this call instead of in a send of its own.
      queue_finish(static_cast<uint32_t>(finish_pending_), true);
      finish_pending_ = -1;
    }
    uint32_t question = next_question_++;
    { // built and framed before anything else may use the scratch segment (a Release on the way)
      capnp::MallocMessageBuilder message(scratch_span());
      auto call = message.initRoot<capnp::rpc::Message>().initCall();
      call.setQuestionId(question);
      call.initTarget().setImportedCap(target);
      call.setInterfaceId(interface_id);
      call.setMethodId(method);
      fill(call.initParams().initContent().template initAs<Params>());
      queue_message(message);
    }
    flush();
    finish_pending_ = question; // owed whether the call succeeds or fails
    auto sent_ns = steady_ns();
    if (auto budget = poll_.budget_ns(); budget > 0)
      poll_until_ns_ = sent_ns + budget;
    auto done = await_return(question);
    poll_until_ns_ = 0;
    poll_.replied(steady_ns() - sent_ns);
    return read(done.template getAs<Results>());
  }

  /// The reply-time average this channel's polling goes by (for tests and inspection).
  const reply_poll& polling() const noexcept { return poll_; }

private:
  static int64_t steady_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
  }
  /// Bootstrap, authenticate, Session.queues; `preface` first asks shoald for its channel_vat.
  void handshake(const std::string& token, const std::string& client_version,
                 const std::string& environment, std::chrono::milliseconds timeout, bool preface);
  /// `recv` into `into`, busy-polling first while `poll_until_ns_` is ahead (and a slot is free).
  long receive(void* into, size_t size);
  /// Appends `message`, framed, to the outgoing bytes.
  void queue_message(capnp::MessageBuilder& message);
  void queue_finish(uint32_t question, bool release_result_caps);
  /// Sends every queued byte.
  void flush();
  /// Reads messages until the Return of `question`; returns its results' content (valid until
  /// the next read). Throws for an exception, an Abort or a lost connection.
  capnp::AnyPointer::Reader await_return(uint32_t question);
  /// Handles one message that is not the awaited Return.
  void handle_other(capnp::rpc::Message::Reader message);
  /// The imported capability of a one-capability result (the handshake's).
  uint32_t only_cap(capnp::rpc::Payload::Reader payload, const char* what);

  /// The first segment of outgoing messages (MallocMessageBuilder zeroes it again when done).
  kj::ArrayPtr<capnp::word> scratch_span() { return kj::arrayPtr(scratch_.data(), scratch_.size()); }
  [[noreturn]] void lost(const char* doing, int err);

  int fd_ = -1;
  uint32_t next_question_ = 0;
  int64_t finish_pending_ = -1; ///< the question whose Finish has not been sent yet
  session_caps caps_;
  std::vector<capnp::word> scratch_ = std::vector<capnp::word>(1024); ///< zeroed
  std::vector<uint8_t> out_;          ///< framed messages waiting to be sent
  std::vector<capnp::word> in_;       ///< received bytes; a message starts at word 0
  size_t in_bytes_ = 0;
  size_t consumed_words_ = 0;         ///< the last message handed out, dropped on the next read
  std::optional<capnp::FlatArrayMessageReader> reader_; ///< over the last message handed out
  reply_poll poll_;
  int64_t poll_until_ns_ = 0; ///< while waiting for a reply: poll, don't sleep, until then
  bool aborted_ = false;      ///< the server sent an Abort
};

} // namespace shoal::client
