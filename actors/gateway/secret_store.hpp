#pragma once
/// `secret_store`: named secrets (pure logic over the `secrets` table; the gateway actor owns the
/// writes, the container supervisor reads at container start). Unit-tested without an actor.
///
/// Table layout: secrets/ key{}.str(environment).str(name)
///   -> key{}.u64(1 /*record version*/).u64(created_at_ms).u64(n) then n × (str(key), str(value)).
///
/// Values never leave through this interface except `read` (for the supervisor, which puts them
/// into the container's environment). Every error names secrets and variables, never a value.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/meta/type_name.hpp>

#include "storage/store.hpp"

namespace shoal::gateway {

/// A secret as listed: names only.
struct secret_info {
  std::string name;
  std::string environment;
  std::vector<std::string> keys; ///< sorted
  int64_t created_at_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, secret_info& x) {
  return f(caf::meta::type_name("secret_info"), x.name, x.environment, x.keys, x.created_at_ms);
}

using secret_entries = std::vector<std::pair<std::string, std::string>>;

/// Limits: 1–64 character names ([A-Za-z0-9._-], starting with a letter or digit), variable
/// names [A-Za-z_][A-Za-z0-9_]* up to 256 characters, at most 1000 variables and 1 MiB in all.
class secret_store {
public:
  explicit secret_store(const storage::store& db) : db_(db) {}

  /// Adds the secret's record to `batch`; errc::already_exists unless `force`.
  [[nodiscard]] caf::expected<secret_info> create(const std::string& environment,
                                                  const std::string& name,
                                                  const secret_entries& entries, bool force,
                                                  int64_t now_ms, storage::write_batch& batch) const;

  /// The secrets of `environment`, ordered by name.
  [[nodiscard]] caf::expected<std::vector<secret_info>> list(const std::string& environment) const;

  /// Adds the erasure to `batch`; errc::not_found when there is no such secret.
  [[nodiscard]] caf::error remove(const std::string& environment, const std::string& name,
                                  storage::write_batch& batch) const;

  /// The secret's variables, in key order; errc::not_found with the sentence users see when a
  /// container names a missing secret.
  [[nodiscard]] caf::expected<secret_entries> read(const std::string& environment,
                                                   const std::string& name) const;

  /// The reason `name` is not a valid secret name, or "".
  static std::string check_name(const std::string& name);
  /// The reason `key` is not a valid environment variable name, or "".
  static std::string check_key(const std::string& key);

private:
  const storage::store& db_;
};

} // namespace shoal::gateway
