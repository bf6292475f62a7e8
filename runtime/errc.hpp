#pragma once
/// Shoal's error codes. Inside the runtime an error is a `caf::error` whose category is `shoal`;
/// at the Cap'n Proto boundary it becomes a `kj::Exception` whose description starts with
/// `[<name>] ` (see docs/schema-conventions.md); the SDK turns each name into a Python exception.
/// Append new values at the end: the numbers and names are part of the wire contract.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <caf/error.hpp>
#include <caf/make_message.hpp>

namespace shoal {

enum class errc : uint8_t {
  /// Not an error; never sent.
  none = 0,
  /// The request is malformed; the message names the offending field and the accepted values.
  invalid_argument = 1,
  /// The named object does not exist.
  not_found = 2,
  /// An object with that name exists already.
  already_exists = 3,
  /// No token, or a token the server does not know (or no longer knows).
  unauthenticated = 4,
  /// The token is valid but its scope does not cover the object.
  permission_denied = 5,
  /// The service is shutting down or a dependency is unreachable; retrying later may work.
  unavailable = 6,
  /// RocksDB or the file system reported an I/O error or corruption.
  storage_failure = 7,
  /// The state dir was written by a newer shoald (or is not a Shoal state dir at all).
  incompatible_state = 8,
  /// Another shoald process holds the state dir.
  state_dir_locked = 9,
  /// A configured limit was reached; the message states the limit.
  resource_exhausted = 10,
  /// A deadline passed before the work finished.
  timeout = 11,
  /// The caller or an operator cancelled the work.
  cancelled = 12,
  /// A bug in Shoal: the message carries the context needed to report it.
  internal = 13,
};

/// Stable, lowercase name of `code` as it appears on the wire ("not_found").
std::string_view to_string(errc code) noexcept;

/// Inverse of `to_string`; nullopt for names this build does not know.
std::optional<errc> errc_from_string(std::string_view name) noexcept;

/// Builds a `caf::error` in the `shoal` category carrying a human-readable message.
caf::error make_error(errc code, std::string message);

/// The shoal code of `err`, or `errc::internal` for errors from other categories (CAF's own).
errc code_of(const caf::error& err) noexcept;

/// The human-readable message of `err`, for any category.
std::string message_of(const caf::error& err);

} // namespace shoal

CAF_ERROR_CODE_ENUM(shoal::errc, "shoal")
