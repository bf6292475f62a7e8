#pragma once
/// `token_registry`: minting and checking API tokens (pure logic over the `tokens` table; the
/// gateway actor owns one and persists what it mints through the storage writer).
///
/// A token reads `tok-<16 hex>.<48 hex>`: the part before the dot is the token id (public, shown in
/// listings and logs), the part after is the secret. The table stores only SHA-256(secret), so a
/// copy of the state dir does not leak usable tokens. Comparison is constant-time.
///
/// Table layout: tokens/ key{}.str(token_id) -> key{}.u64(2 /*record version*/).str(sha256 hex)
///               .str(environment).str(label).u64(created_at_ms).u64(admin 0|1)
/// Version 1 records (no admin flag) are still read, as non-admin tokens; `mark_admin` rewrites a
/// record as version 2 with the flag (the daemon does so for the token in admin.token at start).
///
/// An admin token may open a session in any existing environment; every other token is scoped to
/// exactly its own environment.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>
#include <caf/meta/type_name.hpp>

#include "storage/store.hpp"

namespace shoal::gateway {

/// What the server knows of a token, minus its secret.
struct token_info {
  std::string token_id;
  std::string environment;
  std::string label;
  int64_t created_at_ms = 0;
  bool admin = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_info& x) {
  return f(caf::meta::type_name("token_info"), x.token_id, x.environment, x.label,
           x.created_at_ms, x.admin);
}

/// A freshly minted token: `secret` is the full token string, shown to the user once.
struct minted_token {
  std::string secret;
  token_info info;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, minted_token& x) {
  return f(caf::meta::type_name("minted_token"), x.secret, x.info);
}

class token_registry {
public:
  explicit token_registry(const storage::store& db) : db_(db) {}

  /// Makes a new token and adds its record to `batch`; the token is valid once `batch` is durable.
  /// errc::invalid_argument for an environment name that is empty or not [a-z0-9-_].
  [[nodiscard]] caf::expected<minted_token> mint(const std::string& environment,
                                                 const std::string& label, int64_t now_ms,
                                                 storage::write_batch& batch,
                                                 bool admin = false) const;

  /// Adds to `batch` the rewrite of `token_id`'s record as version 2 with the admin flag set
  /// (a no-op when it is already admin); errc::not_found when there is no such token.
  [[nodiscard]] caf::error mark_admin(const std::string& token_id,
                                      storage::write_batch& batch) const;

  /// True when `environment` is a valid environment name (1-64 of a-z, 0-9, '-', '_').
  static bool valid_environment(const std::string& environment);

  /// The token's record, or errc::unauthenticated with a sentence that never echoes the secret.
  [[nodiscard]] caf::expected<token_info> verify(std::string_view token) const;

  /// Every token, ordered by id.
  [[nodiscard]] caf::expected<std::vector<token_info>> list() const;

  /// Adds the erasure of `token_id` to `batch`; errc::not_found when there is no such token.
  [[nodiscard]] caf::error revoke(const std::string& token_id, storage::write_batch& batch) const;

  /// True when no token exists yet (a fresh state dir).
  [[nodiscard]] caf::expected<bool> empty() const;

  /// The id part of `token` ("tok-..."), or "" when it is not token-shaped. Safe to log.
  static std::string id_of(std::string_view token);

private:
  const storage::store& db_;
};

} // namespace shoal::gateway
