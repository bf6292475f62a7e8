#pragma once
/// `environment_registry`: the environments a cluster knows (pure logic over the `environments`
/// table; the gateway actor owns the writes, the daemon makes sure "main" exists at start).
/// Unit-tested without an actor.
///
/// Table layout: environments/ key{}.str(name) -> key{}.u64(1 /*record version*/).u64(created_at_ms)
///
/// Names follow the token rule (token_registry::valid_environment): 1-64 of a-z, 0-9, '-', '_'.

#include <cstdint>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/meta/type_name.hpp>

#include "storage/store.hpp"

namespace shoal::gateway {

/// The environment every cluster has; it cannot be deleted.
inline constexpr const char* main_environment = "main";

struct environment_info {
  std::string name;
  int64_t created_at_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, environment_info& x) {
  return f(caf::meta::type_name("environment_info"), x.name, x.created_at_ms);
}

class environment_registry {
public:
  explicit environment_registry(const storage::store& db) : db_(db) {}

  /// Adds the record to `batch`; errc::already_exists, errc::invalid_argument for a bad name.
  [[nodiscard]] caf::expected<environment_info>
  create(const std::string& name, int64_t now_ms, storage::write_batch& batch) const;

  /// Adds the record to `batch` unless it exists already (daemon start, token migration).
  [[nodiscard]] caf::error ensure(const std::string& name, int64_t now_ms,
                                  storage::write_batch& batch) const;

  /// Every environment, ordered by name.
  [[nodiscard]] caf::expected<std::vector<environment_info>> list() const;

  /// True when `name` exists.
  [[nodiscard]] caf::expected<bool> exists(const std::string& name) const;

  /// Adds the erasure to `batch`. errc::invalid_argument for "main" and for an environment that
  /// still holds secrets or tokens; errc::not_found for an unknown name. Apps, queues and dicts
  /// are not checked (their tables are keyed by object, not by environment).
  [[nodiscard]] caf::error remove(const std::string& name, storage::write_batch& batch) const;

  /// The sentence users see for an environment that does not exist, with the fix.
  static std::string missing(const std::string& name);

private:
  const storage::store& db_;
};

} // namespace shoal::gateway
