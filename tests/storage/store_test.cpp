#include "storage/store.hpp"

#include <algorithm>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <rocksdb/db.h>

#include "runtime/errc.hpp"
#include "storage/key.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::storage;
using shoal::test::temp_dir;

namespace {

std::unique_ptr<store> open_ok(const std::string& dir) {
  auto db = store::open(dir);
  if (!db)
    FAIL("store::open(" << dir << ") failed: " << shoal::message_of(db.error()));
  return std::move(*db);
}

std::optional<std::string> get_ok(const store& db, table t, std::string_view k) {
  auto v = db.get(t, k);
  if (!v)
    FAIL("get failed: " << shoal::message_of(v.error()));
  return *v;
}

void write_ok(store& db, const write_batch& batch) {
  auto err = db.write(batch, true);
  if (err)
    FAIL("write failed: " << shoal::message_of(err));
}

std::vector<std::pair<std::string, std::string>> scan_all(const store& db, table t,
                                                          std::string_view prefix,
                                                          size_t limit = SIZE_MAX) {
  std::vector<std::pair<std::string, std::string>> out;
  auto err = db.scan(t, prefix, [&](std::string_view k, std::string_view v) {
    out.emplace_back(k, v);
    return out.size() < limit;
  });
  if (err)
    FAIL("scan failed: " << shoal::message_of(err));
  return out;
}

std::vector<std::string> column_families(const std::string& dir) {
  std::vector<std::string> names;
  auto st = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions{}, dir, &names);
  REQUIRE(st.ok());
  std::sort(names.begin(), names.end());
  return names;
}

} // namespace

TEST_CASE("each table is its own keyspace: a key put in one table is absent from the others") {
  temp_dir tmp;
  auto db = open_ok(tmp.path());
  write_ok(*db,
           write_batch{}.put(table::calls, "k", "in calls").put(table::inputs, "k", "in inputs"));
  CHECK(get_ok(*db, table::calls, "k") == "in calls");
  CHECK(get_ok(*db, table::inputs, "k") == "in inputs");
  for (auto t : all_tables)
    if (t != table::calls && t != table::inputs) {
      INFO("table " << to_string(t));
      CHECK_FALSE(get_ok(*db, t, "k").has_value());
    }

  write_ok(*db, write_batch{}.erase(table::calls, "k"));
  CHECK_FALSE(get_ok(*db, table::calls, "k").has_value());
  CHECK(get_ok(*db, table::inputs, "k") == "in inputs");
}

TEST_CASE("a batch that puts and erases applies its operations in order") {
  temp_dir tmp;
  auto db = open_ok(tmp.path());
  write_ok(*db, write_batch{}
                  .put(table::queues, "a", "1")
                  .put(table::queues, "b", "2")
                  .erase(table::queues, "a")
                  .put(table::queues, "b", "3"));
  CHECK_FALSE(get_ok(*db, table::queues, "a").has_value());
  CHECK(get_ok(*db, table::queues, "b") == "3");
  // Values may hold any bytes.
  const std::string binary{"\0\xFF\0", 3};
  write_ok(*db, write_batch{}.put(table::queues, binary, binary));
  CHECK(get_ok(*db, table::queues, binary) == binary);
}

TEST_CASE("a prefix scan visits exactly the matching keys in key order and stops when told") {
  temp_dir tmp;
  auto db = open_ok(tmp.path());
  write_batch b;
  // Inserted out of order, with neighbours on both sides of the prefix.
  for (uint64_t i : {5, 1, 300, 2, 256})
    b.put(table::calls, key{}.str("app").str("env").u64(i).bytes(), "v" + std::to_string(i));
  b.put(table::calls, key{}.str("app").str("en").u64(1).bytes(), "before");
  b.put(table::calls, key{}.str("app").str("env2").u64(1).bytes(), "after");
  b.put(table::calls, key{}.str("apq").bytes(), "after");
  b.put(table::inputs, key{}.str("app").str("env").u64(3).bytes(), "other table");
  write_ok(*db, b);

  auto prefix = key{}.str("app").str("env").bytes();
  auto all = scan_all(*db, table::calls, prefix);
  std::vector<uint64_t> seen;
  for (const auto& [k, v] : all) {
    key::reader r{k};
    std::string app, env;
    uint64_t n = 0;
    REQUIRE(r.str(app));
    REQUIRE(r.str(env));
    REQUIRE(r.u64(n));
    CHECK(r.done());
    CHECK(v == "v" + std::to_string(n));
    seen.push_back(n);
  }
  CHECK(seen == std::vector<uint64_t>{1, 2, 5, 256, 300});

  auto first_two = scan_all(*db, table::calls, prefix, 2);
  REQUIRE(first_two.size() == 2);
  CHECK(first_two[1].second == "v2");

  CHECK(scan_all(*db, table::calls, key{}.str("nothing").bytes()).empty());
  CHECK(scan_all(*db, table::calls, "").size() == 8);
  // A prefix ending in 0xFF bytes (no successor by incrementing the last byte) still works.
  write_ok(*db, write_batch{}
                  .put(table::dicts, "\xFF\xFF", "x")
                  .put(table::dicts, "\xFF\xFF\x01", "y")
                  .put(table::dicts, "\xFE", "z"));
  CHECK(scan_all(*db, table::dicts, "\xFF\xFF").size() == 2);
  CHECK(scan_all(*db, table::dicts, "\xFF").size() == 2);
}

TEST_CASE("data written before closing the store is there after reopening it") {
  temp_dir tmp;
  {
    auto db = open_ok(tmp.path());
    CHECK(db->schema_version() == current_schema_version);
    write_ok(*db, write_batch{}.put(table::functions, "fn", "hello").put(table::nodes, "n1", "up"));
    // An unsynced write survives a clean close too.
    REQUIRE_FALSE(db->write(write_batch{}.put(table::apps, "a", "1"), false));
    REQUIRE_FALSE(db->flush());
  }
  auto db = open_ok(tmp.path());
  CHECK(db->schema_version() == current_schema_version);
  CHECK(get_ok(*db, table::functions, "fn") == "hello");
  CHECK(get_ok(*db, table::nodes, "n1") == "up");
  CHECK(get_ok(*db, table::apps, "a") == "1");
  CHECK(get_ok(*db, table::meta, schema_version_key) == std::to_string(current_schema_version));
}

TEST_CASE("opening a new database creates one column family per table") {
  temp_dir tmp;
  { auto db = open_ok(tmp.path()); }
  std::vector<std::string> expected{"default"};
  for (auto t : all_tables)
    expected.emplace_back(to_string(t));
  std::sort(expected.begin(), expected.end());
  CHECK(column_families(tmp.path()) == expected);
}

TEST_CASE("reopening recreates a missing table and keeps a column family it does not know") {
  temp_dir tmp;
  { auto db = open_ok(tmp.path()); }
  {
    // As another build might leave it: no `volumes` family, an extra one holding data.
    std::vector<std::string> names;
    REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions{}, tmp.path(), &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (const auto& name : names)
      cfs.emplace_back(name, rocksdb::ColumnFamilyOptions{});
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions{}, tmp.path(), cfs, &handles, &raw).ok());
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == "volumes")
        REQUIRE(raw->DropColumnFamily(handles[i]).ok());
    rocksdb::ColumnFamilyHandle* extra = nullptr;
    REQUIRE(
      raw->CreateColumnFamily(rocksdb::ColumnFamilyOptions{}, "from_the_future", &extra).ok());
    REQUIRE(raw->Put(rocksdb::WriteOptions{}, extra, "k", "v").ok());
    handles.push_back(extra);
    for (auto* h : handles)
      REQUIRE(raw->DestroyColumnFamilyHandle(h).ok());
    delete raw;
  }
  std::vector<std::string> expected{"default", "from_the_future"};
  for (auto t : all_tables)
    expected.emplace_back(to_string(t));
  std::sort(expected.begin(), expected.end());
  REQUIRE(column_families(tmp.path()) != expected); // `volumes` is gone

  {
    auto db = open_ok(tmp.path());
    write_ok(*db, write_batch{}.put(table::volumes, "vol", "back"));
    CHECK(get_ok(*db, table::volumes, "vol") == "back");
  }
  CHECK(column_families(tmp.path()) == expected);
  // The unknown family's data is untouched.
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const auto& name : expected)
    cfs.emplace_back(name, rocksdb::ColumnFamilyOptions{});
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  REQUIRE(rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions{}, tmp.path(), cfs, &handles, &raw).ok());
  auto pos = std::find(expected.begin(), expected.end(), "from_the_future") - expected.begin();
  std::string value;
  CHECK(raw->Get(rocksdb::ReadOptions{}, handles[pos], "k", &value).ok());
  CHECK(value == "v");
  for (auto* h : handles)
    REQUIRE(raw->DestroyColumnFamilyHandle(h).ok());
  delete raw;
}

TEST_CASE("a database that holds data but no schema version is not taken for a Shoal one") {
  temp_dir tmp;
  {
    rocksdb::Options opt;
    opt.create_if_missing = true;
    rocksdb::DB* raw = nullptr;
    REQUIRE(rocksdb::DB::Open(opt, tmp.path(), &raw).ok());
    REQUIRE(raw->Put(rocksdb::WriteOptions{}, "someone else's", "data").ok());
    delete raw;
  }
  auto db = store::open(tmp.path());
  REQUIRE_FALSE(db);
  CHECK(shoal::code_of(db.error()) == shoal::errc::incompatible_state);
  CHECK_THAT(shoal::message_of(db.error()), Catch::Contains("not a Shoal state dir"));
  CHECK_THAT(shoal::message_of(db.error()), Catch::Contains("default"));
}

TEST_CASE("a state dir written by a newer schema version is refused, naming both versions") {
  temp_dir tmp;
  const auto newer = std::to_string(current_schema_version + 2);
  {
    auto db = open_ok(tmp.path());
    write_ok(*db, write_batch{}.put(table::meta, std::string{schema_version_key}, newer));
  }
  auto db = store::open(tmp.path());
  REQUIRE_FALSE(db);
  CHECK(shoal::code_of(db.error()) == shoal::errc::incompatible_state);
  auto msg = shoal::message_of(db.error());
  INFO(msg);
  CHECK_THAT(msg, Catch::Contains(tmp.path()));
  CHECK_THAT(msg, Catch::Contains("schema version " + newer));
  CHECK_THAT(msg, Catch::Contains("up to version " + std::to_string(current_schema_version)));
  CHECK_THAT(msg, Catch::Contains("--state-dir"));
}

TEST_CASE("a Shoal database whose schema version was lost is refused, not restamped") {
  temp_dir tmp;
  {
    auto db = open_ok(tmp.path());
    write_ok(*db, write_batch{}
                    .erase(table::meta, std::string{schema_version_key})
                    .put(table::tokens, "t", "x"));
  }
  auto db = store::open(tmp.path());
  REQUIRE_FALSE(db);
  CHECK(shoal::code_of(db.error()) == shoal::errc::incompatible_state);
  CHECK_THAT(shoal::message_of(db.error()), Catch::Contains("not a Shoal state dir"));
}

TEST_CASE("a path that cannot hold a database is reported as a storage failure") {
  temp_dir tmp;
  { std::ofstream{tmp.sub("plain_file")} << "not a directory"; }
  auto db = store::open(tmp.sub("plain_file") + "/db");
  REQUIRE_FALSE(db);
  CHECK(shoal::code_of(db.error()) == shoal::errc::storage_failure);
  auto msg = shoal::message_of(db.error());
  INFO(msg);
  CHECK_THAT(msg, Catch::Contains("failed: "));
  CHECK_THAT(msg, Catch::Contains("plain_file"));

  SECTION("and a missing database is not created when creation is off") {
    auto none = store::open(tmp.sub("absent"), store_options{/*create_if_missing=*/false});
    REQUIRE_FALSE(none);
    CHECK(shoal::code_of(none.error()) == shoal::errc::storage_failure);
  }
}

TEST_CASE("a second open of a state dir that is in use fails instead of sharing it") {
  temp_dir tmp;
  auto first = open_ok(tmp.path());
  auto second = store::open(tmp.path());
  REQUIRE_FALSE(second);
  CHECK(shoal::code_of(second.error()) == shoal::errc::storage_failure);
}
