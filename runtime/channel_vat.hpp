#pragma once
/// `channel_vat`: shoald's side of a thread channel (runtime/client/sync_rpc.hpp): a minimal
/// Cap'n Proto RPC vat for connections that open with `channel_preface`, without capnp's
/// RpcSystem.
///
/// Why: a queue put or get is a small call, and at 50 clients the RPC thread is the server's
/// bottleneck. In capnp's RpcSystem each call builds an answer-table entry, a call context, a
/// forked promise for pipelining and a promise chain per message read and written: about a third
/// of the thread's CPU per call (bench/RESULTS.md, "Session 6"). A thread channel makes one call
/// at a time and never pipelines on results, so most of that serves nobody.
///
/// What it speaks (the standard protocol, capnp/rpc.capnp, as far as sync_rpc uses it):
/// - `Bootstrap`: answers with the server's bootstrap capability (export), which a following
///   call may target through `promisedAnswer` with an empty transform.
/// - `Call` on an export: a `direct_server` behind the export (found through
///   `rpc_context::direct_servers`) serves the calls it knows straight from the message, into the
///   Return; any other call is made as a local capnp request (`typelessRequest`) and its results
///   copied into the Return, capabilities in them becoming exports.
/// - `Finish` (releasing the answer's capabilities if asked), `Release`, `Abort`.
/// Anything else, calls with capabilities in their parameters and pipelining on a call's
/// results are refused with an Abort that names them, and the connection closes.
///
/// Replies leave in the order their calls complete, batched per loop turn by the stream. The
/// vat ends when the peer closes or aborts; dropping it drops every export (a session and its
/// ephemeral objects end as with any connection). kj thread only.

#include <cstdint>
#include <map>
#include <vector>

#include <capnp/any.h>
#include <capnp/capability.h>
#include <capnp/message.h>
#include <capnp/rpc.capnp.h>
#include <kj/async.h>
#include <kj/function.h>
#include <kj/vector.h>

namespace shoal {

class buffered_stream;

/// A capability server that can serve some of its methods from the raw parameters, into the raw
/// results, without capnp's call machinery (for channel_vat).
class direct_server {
public:
  /// Writes a call's results into the Return's content.
  using results_writer = kj::Function<void(capnp::AnyPointer::Builder results)>;

  virtual ~direct_server() = default;

  /// Starts `method_id` of `interface_id` with `params` if this server serves it directly
  /// (nullptr otherwise: the vat makes an ordinary local call). `params` is valid only during
  /// this call. The promise fails with the call's exception.
  virtual kj::Maybe<kj::Promise<results_writer>> call_direct(uint64_t interface_id,
                                                             uint16_t method_id,
                                                             capnp::AnyPointer::Reader params) = 0;
};

class channel_vat {
public:
  /// `stream` has delivered the preface already. `bootstrap` is what Bootstrap answers;
  /// `servers` finds the direct_server behind an export.
  channel_vat(kj::Own<buffered_stream> stream, capnp::Capability::Client bootstrap,
              capnp::CapabilityServerSet<capnp::Capability>& servers);
  ~channel_vat();

  /// Serves until the peer closes, aborts or the connection fails.
  kj::Promise<void> run();

private:
  struct export_entry {
    capnp::Capability::Client cap;
    uint32_t refs = 0;
    direct_server* direct = nullptr; ///< found after export; owned by `cap`
  };

  class task_errors final : public kj::TaskSet::ErrorHandler {
  public:
    explicit task_errors(channel_vat& vat) : vat_(vat) {}
    void taskFailed(kj::Exception&& exception) override;

  private:
    channel_vat& vat_;
  };

  kj::Promise<void> read_more();
  /// Handles every complete message in the input buffer.
  void handle_buffered();
  void handle(capnp::rpc::Message::Reader message);
  void on_bootstrap(capnp::rpc::Bootstrap::Reader bootstrap);
  void on_call(capnp::rpc::Call::Reader call);
  void on_finish(capnp::rpc::Finish::Reader finish);
  void on_release(capnp::rpc::Release::Reader release);

  /// Exports `cap` (one reference) and starts looking for its direct server.
  uint32_t add_export(capnp::Capability::Client cap);
  void release_export(uint32_t id, uint32_t count);

  /// Sends the Return of `question` with results written by `fill`; capabilities written into
  /// them become exports, remembered for the question's Finish.
  void send_results(uint32_t question, kj::FunctionParam<void(capnp::AnyPointer::Builder)> fill);
  void send_exception(uint32_t question, const kj::Exception& exception);
  /// Sends an Abort saying `why` and ends the vat.
  void abort(kj::StringPtr why);
  /// No more input is handled; `run` resolves.
  void end();
  void send(capnp::MessageBuilder& message);
  void schedule_flush();
  kj::Promise<void> flush();

  kj::Own<buffered_stream> stream_;
  capnp::Capability::Client bootstrap_;
  capnp::CapabilityServerSet<capnp::Capability>& servers_;

  kj::Vector<capnp::word> in_;
  size_t in_bytes_ = 0;

  std::map<uint32_t, export_entry> exports_;
  uint32_t next_export_ = 0;
  std::map<uint32_t, uint32_t> bootstrap_answers_;              ///< question → export
  std::map<uint32_t, std::vector<uint32_t>> answer_exports_;  ///< question → exports in its Return

  std::vector<uint8_t> out_; ///< framed messages waiting for the next flush
  bool flush_scheduled_ = false;
  bool writing_ = false;
  bool ended_ = false;
  kj::Own<kj::PromiseFulfiller<void>> done_;

  task_errors errors_{*this};
  kj::TaskSet tasks_{errors_}; ///< last: cancelled before the members its tasks use
};

} // namespace shoal
