#pragma once
/// `daemon_config`: everything `shoald` is told at start, parsed from its command line.

#include <chrono>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "runtime/log.hpp"

namespace shoal {

struct daemon_config {
  bool control = true; ///< hosts the control actors (gateway tokens, admin, scheduler later)
  bool worker = true;  ///< hosts a node agent (and containers, later)
  std::string listen = "127.0.0.1:7650";
  std::string state_dir; ///< required; `shoal` uses ~/.shoal/state for the embedded cluster
  log::level log_level = log::level::info;
  /// CAF scheduler threads; 0 = one per core.
  size_t scheduler_threads = 0;
  /// The directory holding the `shoal` Python package, mounted read-only into every container
  /// (the guest runtime). Empty: $SHOAL_SDK_DIR, else the source tree this shoald was built from.
  std::string sdk_dir;
  /// How long shutdown waits for in-flight RPCs before dropping connections.
  std::chrono::milliseconds drain_timeout{5000};
  /// How long the RPC thread keeps polling for the next request before it sleeps
  /// (runtime/busy_poll.hpp); zero sleeps at once.
  std::chrono::microseconds busy_poll{250};

  std::vector<std::string> roles() const;
};

/// What the command line asked for.
struct parsed_args {
  enum class action { run, help, version };
  action what = action::run;
  daemon_config config;
};

/// Parses shoald's arguments. errc::invalid_argument with a sentence naming the bad argument and
/// the fix; the caller prints it with `usage()` and exits with 2.
[[nodiscard]] caf::expected<parsed_args> parse_args(const std::vector<std::string>& args);

/// The `--help` text.
std::string usage();

} // namespace shoal
