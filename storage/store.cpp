#include "storage/store.hpp"

#include <algorithm>
#include <charconv>
#include <utility>

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/status.h>
#include <rocksdb/write_batch.h>

#include "runtime/errc.hpp"
#include "runtime/log.hpp"
#include "storage/wal_file_system.hpp"

namespace shoal::storage {

/// Owns the RocksDB handle and its column families. Destroying it closes the database:
/// column family handles first, then the DB (RocksDB's required order).
struct store::impl {
  std::string dir;
  /// Zero-filled write-ahead logs (wal_file_system.hpp); outlives `db`.
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(
    zero_filled_wal_fs(rocksdb::FileSystem::Default()));
  rocksdb::DB* db = nullptr;
  /// Indexed by `table`.
  std::array<rocksdb::ColumnFamilyHandle*, all_tables.size()> tables{};
  /// Every handle RocksDB gave us, including `default` and families this build does not know
  /// (written by a newer shoald); all of them must be destroyed before the DB.
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  uint32_t schema_version = 0;

  /// The column family of `t`, or nullptr for a value outside the enum.
  rocksdb::ColumnFamilyHandle* family(table t) const noexcept {
    auto index = static_cast<size_t>(t);
    return index < tables.size() ? tables[index] : nullptr;
  }

  impl() = default;
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  ~impl() {
    if (db == nullptr)
      return;
    for (auto* h : handles)
      db->DestroyColumnFamilyHandle(h); // only fails for the default family's handle: harmless
    auto st = db->Close();
    if (!st.ok())
      log::warn("storage_close_failed").kv("dir", dir).kv("status", st.ToString());
    delete db;
  }
};

namespace {

caf::error failure(std::string_view what, const rocksdb::Status& st) {
  std::string msg{what};
  msg += " failed: ";
  msg += st.ToString();
  return make_error(errc::storage_failure, std::move(msg));
}

std::optional<uint32_t> parse_version(std::string_view text) {
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || text.empty())
    return std::nullopt;
  return value;
}

/// The smallest key greater than every key starting with `prefix`; empty when there is none
/// (the prefix is empty or all 0xFF).
std::string upper_bound_of(std::string_view prefix) {
  std::string bound{prefix};
  while (!bound.empty() && static_cast<uint8_t>(bound.back()) == 0xFF)
    bound.pop_back();
  if (!bound.empty())
    bound.back() = static_cast<char>(static_cast<uint8_t>(bound.back()) + 1);
  return bound;
}

caf::error unknown_table(table t) {
  return make_error(errc::invalid_argument,
                    "unknown table number " + std::to_string(static_cast<size_t>(t)));
}

} // namespace

store::store(std::unique_ptr<impl> self) : impl_(std::move(self)) {
  // nop
}

store::~store() = default;

caf::expected<std::unique_ptr<store>> store::open(const std::string& dir, store_options opts) {
  auto self = std::make_unique<impl>();
  self->dir = dir;
  rocksdb::Options options;
  options.env = self->env.get();
  options.create_if_missing = opts.create_if_missing;
  options.create_missing_column_families = true;

  // RocksDB refuses to open a database unless every existing column family is listed, so open
  // what is on disk (including families a newer shoald added) plus every table we know.
  std::vector<std::string> names;
  auto listed = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions{options}, dir, &names);
  if (!listed.ok())
    names.clear(); // no database yet (or unreadable: DB::Open below reports why)
  auto add_name = [&](std::string_view name) {
    if (std::find(names.begin(), names.end(), name) == names.end())
      names.emplace_back(name);
  };
  add_name(rocksdb::kDefaultColumnFamilyName);
  for (auto t : all_tables)
    add_name(to_string(t));

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.reserve(names.size());
  for (const auto& name : names)
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions{options});

  auto st = rocksdb::DB::Open(rocksdb::DBOptions{options}, dir, descriptors, &self->handles,
                              &self->db);
  if (!st.ok()) {
    self->db = nullptr;
    return failure("opening the database at " + dir, st);
  }
  for (size_t i = 0; i < names.size(); ++i)
    for (auto t : all_tables)
      if (names[i] == to_string(t))
        self->tables[static_cast<size_t>(t)] = self->handles[i];

  std::unique_ptr<store> result{new store(std::move(self))};
  auto& db = *result->impl_;

  // Schema version.
  auto found = result->get(table::meta, schema_version_key);
  if (!found)
    return std::move(found.error());
  if (!*found) {
    // No version: either a database created just now (possibly by an earlier open that died
    // before stamping it) or something that is not a Shoal state dir. Only an empty one is ours.
    for (size_t i = 0; i < names.size(); ++i) {
      std::unique_ptr<rocksdb::Iterator> it{db.db->NewIterator(rocksdb::ReadOptions{},
                                                               db.handles[i])};
      it->SeekToFirst();
      if (!it->status().ok())
        return failure("reading column family " + names[i], it->status());
      if (it->Valid())
        return make_error(errc::incompatible_state,
                          "the database at " + dir + " holds data but no schema version "
                            + "(column family " + names[i]
                            + " is not empty): it is not a Shoal state dir");
    }
  } else {
    auto version = parse_version(**found);
    if (!version)
      return make_error(errc::incompatible_state,
                        "the database at " + dir + " has an unreadable schema version \""
                          + **found + "\": it is not a Shoal state dir");
    if (*version > current_schema_version)
      return make_error(errc::incompatible_state,
                        "the database at " + dir
                          + " was written by a newer shoald (schema version "
                          + std::to_string(*version) + "); this shoald understands up to version "
                          + std::to_string(current_schema_version)
                          + " — upgrade shoald or use another --state-dir");
    db.schema_version = *version;
  }
  if (db.schema_version < current_schema_version) {
    // Upgrades from older layouts go here, one step per version. None exist yet: version 1 is
    // the first layout, so the only older state is "no version" (a fresh database).
    write_batch stamp;
    stamp.put(table::meta, std::string{schema_version_key},
              std::to_string(current_schema_version));
    if (auto err = result->write(stamp, true))
      return err;
    db.schema_version = current_schema_version;
  }
  return result;
}

uint32_t store::schema_version() const noexcept {
  return impl_->schema_version;
}

caf::expected<std::optional<std::string>> store::get(table t, std::string_view k) const {
  auto* cf = impl_->family(t);
  if (cf == nullptr)
    return unknown_table(t);
  std::string value;
  auto st = impl_->db->Get(rocksdb::ReadOptions{}, cf, rocksdb::Slice{k.data(), k.size()}, &value);
  if (st.IsNotFound())
    return std::optional<std::string>{};
  if (!st.ok())
    return failure("reading from table " + std::string{to_string(t)}, st);
  return std::optional<std::string>{std::move(value)};
}

caf::error store::scan(table t, std::string_view prefix,
                       const std::function<bool(std::string_view, std::string_view)>& visit) const {
  auto* cf = impl_->family(t);
  if (cf == nullptr)
    return unknown_table(t);
  rocksdb::ReadOptions ro;
  auto bound = upper_bound_of(prefix);
  rocksdb::Slice bound_slice{bound};
  if (!bound.empty())
    ro.iterate_upper_bound = &bound_slice;
  std::unique_ptr<rocksdb::Iterator> it{impl_->db->NewIterator(ro, cf)};
  rocksdb::Slice start{prefix.data(), prefix.size()};
  for (it->Seek(start); it->Valid() && it->key().starts_with(start); it->Next()) {
    auto k = it->key();
    auto v = it->value();
    if (!visit(std::string_view{k.data(), k.size()}, std::string_view{v.data(), v.size()}))
      return {};
  }
  if (!it->status().ok())
    return failure("scanning table " + std::string{to_string(t)}, it->status());
  return {};
}

caf::error store::scan_after(table t, std::string_view prefix, std::string_view start_after,
                             const std::function<bool(std::string_view, std::string_view)>& visit) const {
  auto* cf = impl_->family(t);
  if (cf == nullptr)
    return unknown_table(t);
  if (start_after.substr(0, prefix.size()) != prefix)
    return make_error(errc::invalid_argument, "a scan cursor must start with the scanned prefix");
  rocksdb::ReadOptions ro;
  auto bound = upper_bound_of(prefix);
  rocksdb::Slice bound_slice{bound};
  if (!bound.empty())
    ro.iterate_upper_bound = &bound_slice;
  std::unique_ptr<rocksdb::Iterator> it{impl_->db->NewIterator(ro, cf)};
  rocksdb::Slice start{prefix.data(), prefix.size()};
  rocksdb::Slice after{start_after.data(), start_after.size()};
  it->Seek(after);
  if (it->Valid() && it->key() == after)
    it->Next();
  for (; it->Valid() && it->key().starts_with(start); it->Next()) {
    auto k = it->key();
    auto v = it->value();
    if (!visit(std::string_view{k.data(), k.size()}, std::string_view{v.data(), v.size()}))
      return {};
  }
  if (!it->status().ok())
    return failure("scanning table " + std::string{to_string(t)}, it->status());
  return {};
}

caf::error store::write(const write_batch& batch, bool sync) {
  rocksdb::WriteBatch wb;
  for (const auto& op : batch.ops) {
    auto* cf = impl_->family(op.tbl);
    if (cf == nullptr)
      return unknown_table(op.tbl);
    rocksdb::Status st;
    switch (op.op) {
      case write_op::kind::put:
        st = wb.Put(cf, op.key, op.value);
        break;
      case write_op::kind::erase:
        st = wb.Delete(cf, op.key);
        break;
      default:
        return make_error(errc::invalid_argument,
                          "unknown write operation " + std::to_string(static_cast<int>(op.op)));
    }
    if (!st.ok())
      return failure("building a write batch", st);
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  auto st = impl_->db->Write(wo, &wb);
  if (!st.ok())
    return failure("writing a batch of " + std::to_string(batch.ops.size()) + " operations", st);
  return {};
}

caf::error store::flush() {
  auto st = impl_->db->FlushWAL(/*sync=*/true);
  if (!st.ok())
    return failure("syncing the write-ahead log", st);
  std::vector<rocksdb::ColumnFamilyHandle*> cfs{impl_->tables.begin(), impl_->tables.end()};
  st = impl_->db->Flush(rocksdb::FlushOptions{}, cfs);
  if (!st.ok())
    return failure("flushing memtables", st);
  return {};
}

} // namespace shoal::storage
