#include "actors/block_server/peer_connection.hpp"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "runtime/buffered_stream.hpp"
#include "runtime/errc.hpp"
#include "runtime/log.hpp"
#include "runtime/rpc_server.hpp"

namespace shoal::block_server {

namespace {

/// The kj thread's body (kj_thread.hpp): connect, serve fetches until stopped, then stop in order.
caf::error serve(kj::AsyncIoContext& io, const kj_thread::ready_fn& ready, kj::Promise<void> stopped,
                 const std::shared_ptr<kj_mailbox>& mailbox, const std::string& address,
                 const std::string& host, uint16_t port, std::shared_ptr<fs::chunk_store> store,
                 block_peer_options options, const peer_connection::obtain_fn& obtain,
                 std::shared_ptr<chunk_source>& source) {
  auto& ws = io.waitScope;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> client;
  std::shared_ptr<block_peer> peer;
  KJ_IF_MAYBE (ex, kj::runCatchingExceptions([&] {
                 auto addr = io.provider->getNetwork().parseAddress(host, port).wait(ws);
                 stream = kj::heap<buffered_stream>(addr->connect().wait(ws));
                 client = kj::heap<capnp::TwoPartyClient>(*stream);
                 auto bootstrap = client->bootstrap();
                 auto remote = obtain ? obtain(kj::mv(bootstrap)).wait(ws)
                                      : bootstrap.castAs<wire::BlockServer>();
                 // shared_ptr: links hold a weak_ptr to it (block_peer.hpp); owned here only.
                 peer = std::make_shared<block_peer>(kj::mv(remote), std::move(store), address,
                                                     options);
               })) {
    return make_error(errc::unavailable, "cannot reach block server " + address + ": "
                                           + ex->getDescription().cStr());
  }
  auto mailbox_loop = mailbox->run().eagerlyEvaluate([](kj::Exception&& ex) {
    log::error("block_peer_mailbox_failed").kv("error", ex.getDescription().cStr());
  });
  source = peer->link(mailbox);
  ready();
  stopped.wait(ws);
  mailbox->close();
  mailbox_loop = nullptr;
  peer.reset(); // sinks the remote still holds keep only what they use (block_peer.hpp)
  client = nullptr;
  stream = nullptr;
  return {};
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
  auto* raw = self.get();
  auto mailbox = self->mailbox_;
  auto err = self->thread_.start(
    "block_peer_thread_failed",
    [=, store = std::move(store), obtain = std::move(obtain)](
      kj::AsyncIoContext& io, const kj_thread::ready_fn& ready, kj::Promise<void> stopped) mutable {
      return serve(io, ready, kj::mv(stopped), mailbox, address, host, port, std::move(store),
                   options, obtain, raw->source_);
    });
  if (err)
    return err;
  return self;
}

void peer_connection::stop() { thread_.stop(); }

peer_connection::~peer_connection() { stop(); }

} // namespace shoal::block_server
