#include "storage/wal_file_system.hpp"

#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>

#include "tests/support/temp_dir.hpp"

using shoal::storage::is_wal_file_name;
using shoal::storage::zero_filled_wal_fs;
using shoal::test::temp_dir;
namespace fs = std::filesystem;

namespace {

std::vector<fs::path> wal_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (auto& entry : fs::directory_iterator(dir))
    if (is_wal_file_name(entry.path().string()))
      out.push_back(entry.path());
  return out;
}

std::string value_of(int i) { return std::string(1000, static_cast<char>('a' + i % 26)) + std::to_string(i); }

} // namespace

TEST_CASE("write-ahead logs are recognised by RocksDB's naming, nothing else is") {
  CHECK(is_wal_file_name("000012.log"));
  CHECK(is_wal_file_name("/var/lib/shoal/state/000012.log"));
  CHECK_FALSE(is_wal_file_name("LOG"));
  CHECK_FALSE(is_wal_file_name("/x/LOG.old.1700000000"));
  CHECK_FALSE(is_wal_file_name("MANIFEST-000005"));
  CHECK_FALSE(is_wal_file_name("000013.sst"));
  CHECK_FALSE(is_wal_file_name(".log"));
  CHECK_FALSE(is_wal_file_name("/dir.log/abc.log"));
}

TEST_CASE("zero-filled logs stay ahead of RocksDB's writes, and a crash image replays in full") {
  constexpr size_t chunk = 64 * 1024;
  constexpr int writes = 400; // ~400 KiB of log: several zero-filled chunks
  temp_dir tmp;
  auto live = fs::path(tmp.path()) / "live";
  auto image = fs::path(tmp.path()) / "image";

  auto env = rocksdb::NewCompositeEnv(zero_filled_wal_fs(rocksdb::FileSystem::Default(), chunk));
  rocksdb::Options options;
  options.env = env.get();
  options.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  REQUIRE(rocksdb::DB::Open(options, live.string(), &raw).ok());
  std::unique_ptr<rocksdb::DB> db{raw};

  auto logs = wal_files(live);
  REQUIRE(logs.size() == 1);
  CHECK(fs::file_size(logs[0]) == chunk); // zeros before the first write

  rocksdb::WriteOptions sync;
  sync.sync = true;
  for (int i = 0; i < writes; ++i)
    REQUIRE(db->Put(sync, "key" + std::to_string(i), value_of(i)).ok());

  // The file holds RocksDB's records followed by zeros, in whole chunks, at least a quarter
  // chunk ahead of the data.
  auto size = fs::file_size(logs[0]);
  CHECK(size % chunk == 0);
  CHECK(size >= writes * 1000 + chunk / 4);

  // Every write was synced and nothing is writing: a copy of the directory now is what a crash
  // would leave (zero tail included). Plain RocksDB, without the wrapper, must replay it all.
  fs::copy(live, image, fs::copy_options::recursive);
  CHECK(fs::file_size(wal_files(image).at(0)) == size);
  rocksdb::Options plain;
  rocksdb::DB* raw_image = nullptr;
  REQUIRE(rocksdb::DB::Open(plain, image.string(), &raw_image).ok());
  std::unique_ptr<rocksdb::DB> recovered{raw_image};
  for (int i = 0; i < writes; ++i) {
    std::string value;
    INFO("key" << i);
    REQUIRE(recovered->Get(rocksdb::ReadOptions{}, "key" + std::to_string(i), &value).ok());
    CHECK(value == value_of(i));
  }
  recovered.reset();

  SECTION("a clean close cuts the unused zeros") {
    REQUIRE(db->Close().ok());
    db.reset();
    auto closed = wal_files(live);
    // RocksDB may already have deleted a log whose data it flushed; one that remains is exact.
    for (auto& log : closed)
      CHECK(fs::file_size(log) < size);
  }
}
