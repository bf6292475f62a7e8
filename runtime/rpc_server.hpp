#pragma once
/// `rpc_server`: the kj thread that hosts shoald's Cap'n Proto server.
///
/// `start` spawns the thread, sets up kj's async I/O there, listens on the given address and
/// serves the bootstrap capability made by `make_bootstrap` (called once, on the kj thread) to
/// every connection. Everything kj lives and dies on that thread; other threads reach it only
/// through `mailbox()` and `stop()`.
///
/// Actors pinned to the server's thread (`pinned_unit`, kj_execution_unit.hpp) run between its
/// RPC events while the server runs, and on CAF's workers once it stopped.
///
/// Connections that open with `channel_preface` (thread channels, runtime/client/sync_rpc.hpp)
/// are served by a `channel_vat` instead of capnp's RpcSystem; both serve the same bootstrap.
///
/// Ordered stop (`stop`): stop accepting → close the call gate and wait for in-flight calls (at
/// most `drain`) → hand pinned actors to CAF's scheduler → drop every connection → close the
/// mailbox → join the thread.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <capnp/capability.h>
#include <caf/expected.hpp>

#include "runtime/call_gate.hpp"
#include "runtime/kj_execution_unit.hpp"
#include "runtime/kj_mailbox.hpp"
#include "runtime/kj_thread.hpp"

namespace kj {
class Timer;
}

namespace shoal {

/// What a bootstrap capability may use; valid for the server's lifetime, kj thread only.
struct rpc_context {
  std::string address; ///< the bound "host:port"
  call_gate& gate;
  /// shared_ptr: CAF-side sinks keep posting to it after the server is gone; a closed mailbox
  /// drops those posts instead of touching freed memory.
  std::shared_ptr<kj_mailbox> mailbox;
  kj::Timer& timer;
  /// Capability servers added here that are also `direct_server`s (channel_vat.hpp) serve the
  /// thread channels' calls straight from the wire.
  capnp::CapabilityServerSet<capnp::Capability>& direct_servers;
};

/// Splits "host:port" / "[v6]:port". False for anything else.
bool split_host_port(const std::string& address, std::string& host, uint16_t& port);

class rpc_server {
public:
  using bootstrap_factory = std::function<capnp::Capability::Client(rpc_context&)>;

  /// Returns once the server listens, or with errc::invalid_argument (bad address) /
  /// errc::unavailable (cannot listen: the message says why, e.g. address in use).
  /// `busy_poll_window`: how long the kj thread polls for the next request before it sleeps
  /// (busy_poll.hpp); zero sleeps at once.
  [[nodiscard]] static caf::expected<std::unique_ptr<rpc_server>>
  start(const std::string& listen_address, bootstrap_factory make_bootstrap,
        std::shared_ptr<kj_execution_unit> pinned = nullptr,
        std::chrono::microseconds busy_poll_window = std::chrono::microseconds{0});

  ~rpc_server();

  /// The bound address, "host:port" with the real port when 0 was asked for.
  const std::string& address() const noexcept { return address_; }

  kj_mailbox& mailbox() noexcept { return *mailbox_; }

  /// Ordered stop; idempotent. Any thread but the kj thread.
  void stop(std::chrono::milliseconds drain);

private:
  rpc_server() = default;

  std::string address_; ///< written by the kj thread before start() returns
  std::atomic<int64_t> drain_ms_{0};
  std::shared_ptr<kj_mailbox> mailbox_ = std::make_shared<kj_mailbox>();
  kj_thread thread_; ///< last: stopped (joined) first when the server is destroyed
};

} // namespace shoal
