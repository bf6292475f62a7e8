#include "actors/block_server/peer_connection.hpp"

#include <condition_variable>
#include <mutex>
#include <optional>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "runtime/errc.hpp"
#include "runtime/log.hpp"
#include "runtime/rpc_server.hpp"

namespace shoal::block_server {

/// What the caller's thread and the kj thread share; guarded by `mutex`.
struct peer_connection::shared {
  std::mutex mutex;
  std::condition_variable changed;
  bool ready = false;
  std::optional<caf::error> failure;
  std::shared_ptr<chunk_source> source;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop;
  bool stop_requested = false;
};

namespace {

void serve(peer_connection::shared& sh, const std::shared_ptr<kj_mailbox>& mailbox,
           const std::string& address, const std::string& host, uint16_t port,
           std::shared_ptr<fs::chunk_store> store, block_peer_options options,
           const peer_connection::obtain_fn& obtain) {
  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> client;
  std::shared_ptr<block_peer> peer;
  KJ_IF_MAYBE (ex, kj::runCatchingExceptions([&] {
                 auto addr = io.provider->getNetwork().parseAddress(host, port).wait(ws);
                 stream = addr->connect().wait(ws);
                 client = kj::heap<capnp::TwoPartyClient>(*stream);
                 auto bootstrap = client->bootstrap();
                 auto remote = obtain ? obtain(kj::mv(bootstrap)).wait(ws)
                                      : bootstrap.castAs<wire::BlockServer>();
                 // shared_ptr: links hold a weak_ptr to it (block_peer.hpp); owned here only.
                 peer = std::make_shared<block_peer>(kj::mv(remote), std::move(store), address,
                                                     options);
               })) {
    std::lock_guard<std::mutex> lock{sh.mutex};
    sh.failure = make_error(errc::unavailable, "cannot reach block server " + address + ": "
                                                 + ex->getDescription().cStr());
    sh.changed.notify_all();
    return;
  }
  auto stop_paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  auto mailbox_loop = mailbox->run().eagerlyEvaluate([](kj::Exception&& ex) {
    log::error("block_peer_mailbox_failed").kv("error", ex.getDescription().cStr());
  });
  {
    std::lock_guard<std::mutex> lock{sh.mutex};
    sh.source = peer->link(mailbox);
    sh.stop = kj::mv(stop_paf.fulfiller);
    sh.ready = true;
    sh.changed.notify_all();
  }
  stop_paf.promise.wait(ws);
  mailbox->close();
  mailbox_loop = nullptr;
  peer.reset(); // sinks the remote still holds keep only what they use (block_peer.hpp)
  client = nullptr;
  stream = nullptr;
}

} // namespace

caf::expected<std::unique_ptr<peer_connection>>
peer_connection::start(const std::string& address, std::shared_ptr<fs::chunk_store> store,
                       block_peer_options options, obtain_fn obtain) {
  std::string host;
  uint16_t port = 0;
  if (!split_host_port(address, host, port))
    return make_error(errc::invalid_argument,
                      "block peer address '" + address + "' is not host:port");
  std::unique_ptr<peer_connection> self{new peer_connection};
  self->shared_ = std::make_unique<shared>();
  auto* sh = self->shared_.get();
  auto mailbox = self->mailbox_;
  self->thread_ = std::thread([=, store = std::move(store), obtain = std::move(obtain)]() mutable {
    KJ_IF_MAYBE (ex, kj::runCatchingExceptions([&] {
                   serve(*sh, mailbox, address, host, port, std::move(store), options, obtain);
                 })) {
      log::error("block_peer_thread_failed").kv("error", ex->getDescription().cStr());
      std::lock_guard<std::mutex> lock{sh->mutex};
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
  self->source_ = sh->source;
  return self;
}

void peer_connection::stop() {
  if (!thread_.joinable())
    return;
  {
    std::lock_guard<std::mutex> lock{shared_->mutex};
    if (shared_->stop && !shared_->stop_requested) {
      shared_->stop_requested = true;
      shared_->stop->fulfill();
    }
  }
  thread_.join();
}

peer_connection::~peer_connection() { stop(); }

} // namespace shoal::block_server
