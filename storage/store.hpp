#pragma once
/// `store`: one RocksDB database per state dir, one column family per `table`.
///
/// Threading: every method is safe to call from any thread (RocksDB is thread-safe); callers that
/// must acknowledge durability write through `writer` (storage/writer.hpp), which groups
/// concurrent writes into one synced WriteBatch. Reads see every write that was acknowledged.
///
/// Versioning: `meta/schema_version` records the layout version. Opening a state dir whose
/// version is newer than `current_schema_version` fails with errc::incompatible_state and a
/// message naming both versions; an older version is upgraded in place (no upgrades exist yet).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>
#include <caf/meta/type_name.hpp>

#include "storage/key.hpp"
#include "storage/table.hpp"

namespace shoal::storage {

/// The layout version this build writes and understands.
inline constexpr uint32_t current_schema_version = 1;

/// The key in table::meta holding the schema version, as decimal ASCII ("1"). A database that has
/// no version and no data is stamped with `current_schema_version` at open; one that has data but
/// no version is refused (incompatible_state: not a Shoal state dir).
inline constexpr std::string_view schema_version_key = "schema_version";

/// One mutation in a batch.
struct write_op {
  enum class kind : uint8_t { put, erase };
  kind op = kind::put;
  table tbl = table::meta;
  std::string key;
  std::string value; ///< empty for erase
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, write_op& x) {
  return f(caf::meta::type_name("write_op"), x.op, x.tbl, x.key, x.value);
}

/// A group of mutations applied atomically.
struct write_batch {
  std::vector<write_op> ops;

  write_batch& put(table t, std::string k, std::string v) {
    ops.push_back(write_op{write_op::kind::put, t, std::move(k), std::move(v)});
    return *this;
  }
  write_batch& erase(table t, std::string k) {
    ops.push_back(write_op{write_op::kind::erase, t, std::move(k), {}});
    return *this;
  }
  bool empty() const noexcept { return ops.empty(); }
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, write_batch& x) {
  return f(caf::meta::type_name("write_batch"), x.ops);
}

struct store_options {
  /// Create the state dir's database when missing.
  bool create_if_missing = true;
};

class store {
public:
  /// Opens (or creates) the database under `dir` (the state dir's `db/` folder is `dir`).
  /// Errors: incompatible_state (newer schema), storage_failure (RocksDB's message included).
  [[nodiscard]] static caf::expected<std::unique_ptr<store>> open(const std::string& dir,
                                                                 store_options opts = {});

  ~store();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  /// Schema version found on disk at open (after any upgrade: equals current_schema_version).
  uint32_t schema_version() const noexcept;

  [[nodiscard]] caf::expected<std::optional<std::string>> get(table t, std::string_view k) const;

  /// Calls `visit(key, value)` for each key starting with `prefix`, in key order, until it
  /// returns false.
  [[nodiscard]] caf::error
  scan(table t, std::string_view prefix,
       const std::function<bool(std::string_view, std::string_view)>& visit) const;

  /// Like `scan`, but begins after the key `start_after` (which must start with `prefix`): the next
  /// page of a listing whose cursor is the last key returned. The iterator seeks there, so a page
  /// costs no more than its own keys.
  [[nodiscard]] caf::error
  scan_after(table t, std::string_view prefix, std::string_view start_after,
             const std::function<bool(std::string_view, std::string_view)>& visit) const;

  /// Applies `batch` atomically. With `sync`, returns only once the batch is on stable storage.
  [[nodiscard]] caf::error write(const write_batch& batch, bool sync);

  /// Flushes memtables and the WAL; used by ordered shutdown.
  [[nodiscard]] caf::error flush();

  struct impl;

private:
  explicit store(std::unique_ptr<impl> self);
  std::unique_ptr<impl> impl_;
};

} // namespace shoal::storage
