#pragma once
/// Structured logging: one event per line, `key=value` pairs (logfmt), UTC timestamps.
///
///     shoal::log::info("listening").kv("addr", "127.0.0.1:7650").kv("pid", 42);
///
/// prints `ts=2026-11-29T04:30:00.123456Z level=info event=listening addr=127.0.0.1:7650 pid=42`
/// when the temporary goes out of scope. Lines from concurrent threads never interleave.
/// Values are quoted when they contain spaces, quotes or `=`. Never log secret values.

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <type_traits>

namespace shoal::log {

enum class level : uint8_t { debug, info, warn, error };

/// Lines below `lvl` are dropped. Default: info. Thread-safe.
void set_min_level(level lvl) noexcept;

/// Where lines go. Default: stderr. The stream must outlive every later log call.
void set_sink(std::FILE* sink) noexcept;

/// Parses "debug|info|warn|error".
bool parse_level(std::string_view text, level& out) noexcept;

class event {
public:
  event(level lvl, std::string_view name);
  event(const event&) = delete;
  event& operator=(const event&) = delete;
  /// Writes the line.
  ~event();

  event& kv(std::string_view key, std::string_view value);
  event& kv(std::string_view key, const char* value) {
    return kv(key, std::string_view{value});
  }
  event& kv(std::string_view key, const std::string& value) {
    return kv(key, std::string_view{value});
  }
  event& kv(std::string_view key, bool value) {
    return kv(key, std::string_view{value ? "true" : "false"});
  }
  template <class T, class = std::enable_if_t<std::is_arithmetic_v<T>>>
  event& kv(std::string_view key, T value) {
    return kv(key, std::string_view{std::to_string(value)});
  }

private:
  bool enabled_;
  std::string line_;
};

inline event debug(std::string_view name) { return event{level::debug, name}; }
inline event info(std::string_view name) { return event{level::info, name}; }
inline event warn(std::string_view name) { return event{level::warn, name}; }
inline event error(std::string_view name) { return event{level::error, name}; }

} // namespace shoal::log
