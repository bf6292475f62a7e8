#pragma once
/// `peer_connection`: a kj thread holding one Cap'n Proto connection to a remote node and the
/// `block_peer` over it — what the composition root (or a test, or the benchmark) gives the block
/// server actor as its `chunk_source`.
///
/// `start` connects and returns once the remote's `BlockServer` capability is in hand. `obtain`
/// turns the connection's bootstrap capability into it (kj thread): the default casts it (the
/// remote serves a `BlockServer` as bootstrap); a shoald peer goes through
/// `Gateway.authenticate` and `Session.blocks()`.
///
/// Stop order (`stop`, idempotent, any thread but its own): close the mailbox (later fetches fail
/// with [unavailable]) → drop the block peer (fetches in flight fail, its store workers finish
/// the batch at hand) → close the connection → join the thread. There is no reconnection yet:
/// after the remote goes away every fetch fails with [unavailable].

#include <functional>
#include <memory>
#include <string>

#include <caf/expected.hpp>
#include <kj/async.h>

#include "actors/block_server/block_peer.hpp"
#include "runtime/kj_mailbox.hpp"
#include "runtime/kj_thread.hpp"

namespace shoal::block_server {

class peer_connection {
public:
  using obtain_fn =
    std::function<kj::Promise<wire::BlockServer::Client>(capnp::Capability::Client bootstrap)>;

  /// errc::invalid_argument for a bad address, errc::unavailable if the remote cannot be reached
  /// or `obtain` fails.
  [[nodiscard]] static caf::expected<std::unique_ptr<peer_connection>>
  start(const std::string& address, std::shared_ptr<fs::chunk_store> store,
        block_peer_options options = {}, obtain_fn obtain = nullptr);

  ~peer_connection();
  peer_connection(const peer_connection&) = delete;
  peer_connection& operator=(const peer_connection&) = delete;

  /// Thread-safe; valid after `stop` too (fetches then fail with [unavailable]).
  std::shared_ptr<chunk_source> source() const { return source_; }

  void stop();

private:
  peer_connection() = default;

  std::shared_ptr<kj_mailbox> mailbox_ = std::make_shared<kj_mailbox>();
  std::shared_ptr<chunk_source> source_; ///< written by the kj thread before start() returns
  kj_thread thread_; ///< last: stopped (joined) first when the connection is destroyed

};

} // namespace shoal::block_server
