#pragma once
/// `sync_rpc`: a Cap'n Proto RPC client connection without an event loop, for the calling thread.
///
/// It speaks the standard two-party protocol (capnp/rpc.capnp: Bootstrap, Call, Return, Finish,
/// Resolve, Release, Abort) over a blocking socket, one call at a time: a call is one `send` (the
/// Finish of the previous call travels with it) and blocking `recv`s until its Return. No promises,
/// no epoll, no allocation for small messages. shoald sees an ordinary capnp client.
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
           const std::string& environment, std::chrono::milliseconds timeout);
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
    auto done = await_return(question);
    return read(done.template getAs<Results>());
  }

private:
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
};

} // namespace shoal::client
