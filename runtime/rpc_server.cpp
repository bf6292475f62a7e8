#include "runtime/rpc_server.hpp"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/timer.h>

#include "runtime/buffered_stream.hpp"
#include "runtime/busy_poll.hpp"
#include "runtime/channel_preface.hpp"
#include "runtime/channel_vat.hpp"
#include "runtime/errc.hpp"
#include "runtime/log.hpp"

namespace shoal {

bool split_host_port(const std::string& address, std::string& host, uint16_t& port) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
    return false;
  host = address.substr(0, colon);
  if (host.front() == '[') {
    if (host.back() != ']')
      return false;
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return false; // a bare IPv6 address needs brackets
  }
  unsigned long value = 0;
  for (size_t i = colon + 1; i < address.size(); ++i) {
    if (address[i] < '0' || address[i] > '9')
      return false;
    value = value * 10 + (address[i] - '0');
    if (value > 65535)
      return false;
  }
  port = static_cast<uint16_t>(value);
  return !host.empty();
}

namespace {

/// What serves connections: capnp's TwoPartyServer, or a channel_vat for thread channels.
struct servers {
  capnp::TwoPartyServer& rpc;
  capnp::Capability::Client bootstrap;
  capnp::CapabilityServerSet<capnp::Capability>& direct;
  busy_poll& poller;
  kj::TaskSet& connections; ///< the channel vats, and connections still being told apart
};

/// Serves one accepted connection, by its first bytes.
kj::Promise<void> serve_connection(servers& s, kj::Own<buffered_stream> stream) {
  auto& raw = *stream;
  return raw.peek(channel_preface_size)
    .then([&s, stream = kj::mv(stream)](kj::ArrayPtr<const kj::byte> head) mutable -> kj::Promise<void> {
      if (!is_channel_preface(head.begin(), head.size())) {
        s.rpc.accept(kj::mv(stream));
        return kj::READY_NOW;
      }
      stream->skip(channel_preface_size);
      auto vat = kj::heap<channel_vat>(kj::mv(stream), s.bootstrap, s.direct);
      auto done = vat->run();
      return done.attach(kj::mv(vat));
    });
}

/// `TwoPartyServer::listen`, with each connection's socket behind a `buffered_stream` that tells
/// the poller when requests arrive.
kj::Promise<void> accept_loop(servers& s, kj::ConnectionReceiver& listener) {
  return listener.accept().then([&s, &listener](kj::Own<kj::AsyncIoStream>&& connection) {
    s.connections.add(serve_connection(s, kj::heap<buffered_stream>(kj::mv(connection), &s.poller)));
    return accept_loop(s, listener);
  });
}

/// Connections that fail while being told apart, or channels that fail, just end.
class connection_errors final : public kj::TaskSet::ErrorHandler {
public:
  void taskFailed(kj::Exception&& ex) override {
    log::debug("rpc_connection_ended").kv("error", ex.getDescription().cStr());
  }
};

/// The kj thread's body (kj_thread.hpp): listen, serve until stopped, then stop in order.
caf::error serve(kj::AsyncIoContext& io, const kj_thread::ready_fn& ready, kj::Promise<void> stopped,
                 const std::shared_ptr<kj_mailbox>& mailbox, const std::string& host, uint16_t port,
                 const rpc_server::bootstrap_factory& make_bootstrap,
                 const std::shared_ptr<kj_execution_unit>& pinned,
                 std::chrono::microseconds busy_poll_window, std::string& address,
                 const std::atomic<int64_t>& drain_ms) {
  auto& ws = io.waitScope;
  kj::Own<kj::ConnectionReceiver> listener;
  KJ_IF_MAYBE (ex, kj::runCatchingExceptions([&] {
                 auto addr = io.provider->getNetwork().parseAddress(host, port).wait(ws);
                 listener = addr->listen();
               })) {
    if (pinned)
      pinned->close(); // its actors run on CAF's workers instead
    return make_error(errc::unavailable, "cannot listen on " + host + ":" + std::to_string(port)
                                           + ": " + std::string(ex->getDescription().cStr()));
  }

  bool bracket = host.find(':') != std::string::npos;
  auto bound = (bracket ? "[" + host + "]" : host) + ":" + std::to_string(listener->getPort());
  call_gate gate;
  capnp::CapabilityServerSet<capnp::Capability> direct_servers;
  rpc_context ctx{bound, gate, mailbox, io.provider->getTimer(), direct_servers};
  busy_poll poller{io.provider->getTimer(), busy_poll_window.count() * kj::MICROSECONDS};
  {
    auto bootstrap = make_bootstrap(ctx);
    auto server = kj::heap<capnp::TwoPartyServer>(bootstrap);
    connection_errors connection_errors;
    auto connections = kj::heap<kj::TaskSet>(connection_errors);
    servers both{*server, bootstrap, direct_servers, poller, *connections};
    auto accepting = accept_loop(both, *listener).eagerlyEvaluate([](kj::Exception&& ex) {
      log::error("rpc_accept_failed").kv("error", ex.getDescription().cStr());
    });
    auto mailbox_loop = mailbox->run().eagerlyEvaluate([](kj::Exception&& ex) {
      log::error("kj_mailbox_failed").kv("error", ex.getDescription().cStr());
    });
    kj::Promise<void> pinned_loop = kj::READY_NOW;
    if (pinned)
      pinned_loop = pinned->run(io.provider->getTimer()).eagerlyEvaluate([](kj::Exception&& ex) {
        log::error("kj_execution_unit_failed").kv("error", ex.getDescription().cStr());
      });
    address = bound;
    ready();
    stopped.wait(ws);
    // 1. Stop accepting.
    accepting = nullptr;
    listener = nullptr;
    log::info("rpc_stopped_accepting").kv("inflight", gate.inflight());
    // 2. Drain in-flight calls, bounded.
    bool drained = gate.close()
                     .then([] { return true; })
                     .exclusiveJoin(ctx.timer.afterDelay(drain_ms.load() * kj::MILLISECONDS).then([] {
                       return false;
                     }))
                     .wait(ws);
    log::info("rpc_drained").kv("complete", drained).kv("inflight", gate.inflight());
    // 3. Pinned actors move to CAF's workers; close the mailbox, then every connection (the
    //    server owns them).
    if (pinned)
      pinned->close();
    pinned_loop = nullptr;
    mailbox->close();
    mailbox_loop = nullptr;
    connections = nullptr;
    server = nullptr;
  }
  log::info("rpc_closed");
  return {};
}

} // namespace

caf::expected<std::unique_ptr<rpc_server>>
rpc_server::start(const std::string& listen_address, bootstrap_factory make_bootstrap,
                  std::shared_ptr<kj_execution_unit> pinned,
                  std::chrono::microseconds busy_poll_window) {
  std::string host;
  uint16_t port = 0;
  if (!split_host_port(listen_address, host, port))
    return make_error(errc::invalid_argument,
                      "listen address '" + listen_address
                        + "' is not host:port (examples: 127.0.0.1:7650, [::1]:7650, 0.0.0.0:0)");
  std::unique_ptr<rpc_server> self{new rpc_server};
  auto* raw = self.get();
  auto mailbox = self->mailbox_;
  auto err = self->thread_.start(
    "rpc_thread_failed", [raw, mailbox, host, port, make_bootstrap = std::move(make_bootstrap),
                          pinned = std::move(pinned), busy_poll_window](kj::AsyncIoContext& io,
                                                      const kj_thread::ready_fn& ready,
                                                      kj::Promise<void> stopped) {
      return serve(io, ready, kj::mv(stopped), mailbox, host, port, make_bootstrap, pinned,
                   busy_poll_window, raw->address_, raw->drain_ms_);
    });
  if (err)
    return err;
  return self;
}

void rpc_server::stop(std::chrono::milliseconds drain) {
  drain_ms_ = drain.count(); // read by the kj thread once it is told to stop
  thread_.stop();
}

rpc_server::~rpc_server() { stop(std::chrono::milliseconds{0}); }

} // namespace shoal
