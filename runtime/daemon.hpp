#pragma once
/// `daemon`: the composition root of shoald. It builds every component from one `daemon_config`,
/// in this order, and takes them down in the reverse order:
///
///     start:  lock state dir → open store (schema check) → node id, bootstrap admin token →
///             actor system → storage writer → admin → gateway → node agent (worker role) →
///             RPC server (kj thread) → write shoald.addr → "ready"
///     stop:   remove shoald.addr → RPC: stop accepting, drain in-flight calls, close connections →
///             exit actors (node agent, gateway, admin) → writer flushes what it acknowledged and
///             exits → actor system joins → store flushed and closed → lock released
///
/// Nothing else in shoald reaches for globals: components get what they need from here.

#include <memory>

#include <caf/expected.hpp>

#include "runtime/daemon_config.hpp"
#include "runtime/node_facts.hpp"

namespace shoal {

inline constexpr const char* shoal_version = "0.1.0";

class daemon {
public:
  /// Starts everything; returns once the RPC server accepts connections. Errors name the failing
  /// step: state_dir_locked, incompatible_state, storage_failure, unavailable (cannot listen).
  [[nodiscard]] static caf::expected<std::unique_ptr<daemon>> start(const daemon_config& cfg);

  ~daemon();
  daemon(const daemon&) = delete;
  daemon& operator=(const daemon&) = delete;

  const node_facts& facts() const noexcept;

  /// Ordered shutdown (see above). Idempotent; also run by the destructor. Any thread may call it
  /// (not only the one that called `start`), but not an actor's or the RPC server's own thread.
  void stop();

  struct parts;

private:
  explicit daemon(std::unique_ptr<parts> p);
  std::unique_ptr<parts> parts_;
};

} // namespace shoal
