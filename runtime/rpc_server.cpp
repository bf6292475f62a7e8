#include "runtime/rpc_server.hpp"

#include <condition_variable>
#include <mutex>
#include <optional>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/timer.h>

#include "runtime/errc.hpp"
#include "runtime/log.hpp"

namespace shoal {

/// State both threads touch; guarded by `mutex`.
struct rpc_server::shared {
  std::mutex mutex;
  std::condition_variable changed;
  bool ready = false;
  std::optional<caf::error> failure;
  std::string address;
  std::chrono::milliseconds drain{0};
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop;
  bool stop_requested = false;
};

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

void serve(rpc_server::shared& sh, const std::shared_ptr<kj_mailbox>& mailbox, const std::string& host, uint16_t port,
           const rpc_server::bootstrap_factory& make_bootstrap) {
  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  auto fail = [&](errc code, std::string message) {
    std::lock_guard<std::mutex> guard{sh.mutex};
    sh.failure = make_error(code, std::move(message));
    sh.changed.notify_all();
  };

  kj::Own<kj::ConnectionReceiver> listener;
  KJ_IF_MAYBE (ex, kj::runCatchingExceptions([&] {
                 auto addr = io.provider->getNetwork().parseAddress(host, port).wait(ws);
                 listener = addr->listen();
               })) {
    fail(errc::unavailable, "cannot listen on " + host + ":" + std::to_string(port) + ": "
                              + std::string(ex->getDescription().cStr()));
    return;
  }

  bool bracket = host.find(':') != std::string::npos;
  auto bound = (bracket ? "[" + host + "]" : host) + ":" + std::to_string(listener->getPort());
  call_gate gate;
  rpc_context ctx{bound, gate, mailbox, io.provider->getTimer()};
  auto stop_paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  std::chrono::milliseconds drain{0};
  {
    auto server = kj::heap<capnp::TwoPartyServer>(make_bootstrap(ctx));
    auto accepting = server->listen(*listener).eagerlyEvaluate([](kj::Exception&& ex) {
      log::error("rpc_accept_failed").kv("error", ex.getDescription().cStr());
    });
    auto mailbox_loop = mailbox->run().eagerlyEvaluate([](kj::Exception&& ex) {
      log::error("kj_mailbox_failed").kv("error", ex.getDescription().cStr());
    });
    {
      std::lock_guard<std::mutex> guard{sh.mutex};
      sh.address = bound;
      sh.stop = kj::mv(stop_paf.fulfiller);
      sh.ready = true;
      sh.changed.notify_all();
    }
    stop_paf.promise.wait(ws);
    {
      std::lock_guard<std::mutex> guard{sh.mutex};
      drain = sh.drain;
    }
    // 1. Stop accepting.
    accepting = nullptr;
    listener = nullptr;
    log::info("rpc_stopped_accepting").kv("inflight", gate.inflight());
    // 2. Drain in-flight calls, bounded.
    bool drained = gate.close()
                     .then([] { return true; })
                     .exclusiveJoin(ctx.timer.afterDelay(drain.count() * kj::MILLISECONDS).then([] {
                       return false;
                     }))
                     .wait(ws);
    log::info("rpc_drained").kv("complete", drained).kv("inflight", gate.inflight());
    // 3. Close the mailbox, then every connection (the server owns them).
    mailbox->close();
    mailbox_loop = nullptr;
    server = nullptr;
  }
  log::info("rpc_closed");
}

} // namespace

caf::expected<std::unique_ptr<rpc_server>>
rpc_server::start(const std::string& listen_address, bootstrap_factory make_bootstrap) {
  std::string host;
  uint16_t port = 0;
  if (!split_host_port(listen_address, host, port))
    return make_error(errc::invalid_argument,
                      "listen address '" + listen_address
                        + "' is not host:port (examples: 127.0.0.1:7650, [::1]:7650, 0.0.0.0:0)");
  std::unique_ptr<rpc_server> self{new rpc_server};
  self->shared_ = std::make_unique<shared>();
  auto* sh = self->shared_.get();
  auto mailbox = self->mailbox_;
  self->thread_ = std::thread([sh, mailbox, host, port, make_bootstrap = std::move(make_bootstrap)] {
    KJ_IF_MAYBE (ex, kj::runCatchingExceptions(
                       [&] { serve(*sh, mailbox, host, port, make_bootstrap); })) {
      log::error("rpc_thread_failed").kv("error", ex->getDescription().cStr());
      std::lock_guard<std::mutex> guard{sh->mutex};
      if (!sh->ready && !sh->failure)
        sh->failure = make_error(errc::internal, ex->getDescription().cStr());
      sh->changed.notify_all();
    }
  });
  std::unique_lock<std::mutex> lock{sh->mutex};
  sh->changed.wait(lock, [sh] { return sh->ready || sh->failure.has_value(); });
  if (sh->failure) {
    auto err = *sh->failure;
    lock.unlock();
    self->thread_.join();
    return err;
  }
  self->address_ = sh->address;
  return self;
}

void rpc_server::stop(std::chrono::milliseconds drain) {
  if (!thread_.joinable())
    return;
  {
    std::lock_guard<std::mutex> guard{shared_->mutex};
    shared_->drain = drain;
    if (shared_->stop && !shared_->stop_requested) {
      shared_->stop_requested = true;
      shared_->stop->fulfill();
    }
  }
  thread_.join();
}

rpc_server::~rpc_server() { stop(std::chrono::milliseconds{0}); }

} // namespace shoal
