#include "fs/chunk_store.hpp"

#include <atomic>
#include <cstdio>
#include <set>
#include <filesystem>
#include <thread>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "runtime/errc.hpp"
#include "tests/fs/fs_test_support.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::fs;
using shoal::test::open_store;
using shoal::test::random_bytes;
using shoal::test::temp_dir;

namespace {

std::vector<chunk_id> put_ok(chunk_store& store, const std::vector<std::string>& chunks) {
  std::vector<std::string_view> views(chunks.begin(), chunks.end());
  auto ids = store.put(views);
  if (!ids)
    FAIL("put failed: " << shoal::message_of(ids.error()));
  return *ids;
}

std::string pack_path(const temp_dir& dir, int n) {
  char name[32];
  std::snprintf(name, sizeof(name), "pack-%06d.dat", n);
  return dir.sub("store/") + name;
}

} // namespace

TEST_CASE("chunk ids print as hex and parse back") {
  auto id = hash_chunk("hello");
  CHECK(id.hex() == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
  auto parsed = chunk_id::from_hex(id.hex());
  REQUIRE(parsed);
  CHECK(*parsed == id);
  CHECK_FALSE(chunk_id::from_hex("xyz"));
  CHECK_FALSE(chunk_id::from_hex(std::string(64, 'g')));
  auto raw = chunk_id::from_raw(id.raw());
  REQUIRE(raw);
  CHECK(*raw == id);
}

TEST_CASE("chunks put into the store come back verified, and duplicates are stored once") {
  temp_dir dir;
  auto store = open_store(dir.sub("store"));
  auto a = random_bytes(3000, 1);
  auto b = random_bytes(1 << 20, 2);
  auto ids = put_ok(*store, {a, b, a, ""});
  REQUIRE(ids.size() == 4);
  CHECK(ids[0] == hash_chunk(a));
  CHECK(ids[0] == ids[2]);
  CHECK(store->contains(ids[1]));
  CHECK(store->size_of(ids[1]) == std::optional<uint32_t>{1u << 20});
  auto got = store->get(std::vector<chunk_id>{ids[1], ids[0], ids[3]});
  REQUIRE(got);
  CHECK((*got)[0] == b);
  CHECK((*got)[1] == a);
  CHECK((*got)[2].empty());
  // Putting the same again stores nothing new.
  put_ok(*store, {b});
  auto s = store->stats();
  CHECK(s.chunks == 3);
  CHECK(s.bytes == a.size() + b.size());
  CHECK(s.puts == 5);
  CHECK(s.deduplicated == 2);
  CHECK(s.reads == 3);
  CHECK(std::filesystem::file_size(pack_path(dir, 1)) == a.size() + b.size());

  auto unknown = hash_chunk("not stored");
  auto missing = store->missing({ids[0], unknown, unknown, ids[1]});
  REQUIRE(missing.size() == 1);
  CHECK(missing[0] == unknown);
  auto err = store->get(unknown);
  REQUIRE_FALSE(err);
  CHECK(shoal::code_of(err.error()) == shoal::errc::not_found);
  CHECK_THAT(shoal::message_of(err.error()), Catch::Contains(unknown.hex()));
}

TEST_CASE("two images sharing files store the shared chunks once") {
  temp_dir dir;
  auto store = open_store(dir.sub("store"));
  auto shared = random_bytes(2'500'000, 7); // 3 chunks
  auto only_a = random_bytes(10'000, 8);
  auto only_b = random_bytes(20'000, 9);
  std::filesystem::create_directories(dir.sub("a"));
  std::filesystem::create_directories(dir.sub("b"));
  shoal::test::write_file(dir.sub("a/lib.so"), shared);
  shoal::test::write_file(dir.sub("a/app"), only_a);
  shoal::test::write_file(dir.sub("b/lib.so"), shared);
  shoal::test::write_file(dir.sub("b/app"), only_b);

  auto first = store->put_files({dir.sub("a/lib.so"), dir.sub("a/app")});
  REQUIRE(first);
  auto after_first = store->stats();
  CHECK(after_first.chunks == 4);
  auto second = store->put_files({dir.sub("b/lib.so"), dir.sub("b/app")});
  REQUIRE(second);
  auto s = store->stats();
  CHECK(s.chunks == 5);
  CHECK(s.bytes == shared.size() + only_a.size() + only_b.size());
  CHECK(s.deduplicated == 3);
  REQUIRE((*first)[0].size() == 3);
  CHECK((*first)[0] == (*second)[0]);
  CHECK((*first)[0][0].second == file_chunk_size);
  CHECK((*first)[0][2].second == shared.size() - 2 * file_chunk_size);

  // Read back into a file with write_file.
  std::vector<chunk_id> ids;
  for (auto& [id, size] : (*second)[0])
    ids.push_back(id);
  int fd = ::open(dir.sub("out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  auto err = store->write_file(fd, ids);
  ::close(fd);
  REQUIRE_FALSE(err);
  CHECK(shoal::test::read_file(dir.sub("out")) == shared);
}

TEST_CASE("put_file stores an empty file as no chunks and a missing file is not_found") {
  temp_dir dir;
  auto store = open_store(dir.sub("store"));
  shoal::test::write_file(dir.sub("empty"), "");
  auto empty = store->put_file(dir.sub("empty"));
  REQUIRE(empty);
  CHECK(empty->empty());
  auto gone = store->put_file(dir.sub("nope"));
  REQUIRE_FALSE(gone);
  CHECK(shoal::code_of(gone.error()) == shoal::errc::not_found);
  CHECK_THAT(shoal::message_of(gone.error()), Catch::Contains(dir.sub("nope")));
}

TEST_CASE("a corrupted pack byte is detected on read and the error names the chunk and pack") {
  temp_dir dir;
  auto store = open_store(dir.sub("store"));
  auto a = random_bytes(5000, 3);
  auto b = random_bytes(7000, 4);
  auto ids = put_ok(*store, {a, b});
  {
    // Flip one byte of b.
    int fd = ::open(pack_path(dir, 1).c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    char c;
    REQUIRE(::pread(fd, &c, 1, 5000 + 100) == 1);
    c = static_cast<char>(c ^ 0x40);
    REQUIRE(::pwrite(fd, &c, 1, 5000 + 100) == 1);
    ::close(fd);
  }
  auto good = store->get(ids[0]);
  REQUIRE(good);
  CHECK(*good == a);
  auto bad = store->get(ids[1]);
  REQUIRE_FALSE(bad);
  CHECK(shoal::code_of(bad.error()) == shoal::errc::storage_failure);
  CHECK_THAT(shoal::message_of(bad.error()), Catch::Contains(ids[1].hex()));
  CHECK_THAT(shoal::message_of(bad.error()), Catch::Contains("pack-000001.dat"));

  int fd = ::open(dir.sub("out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  auto err = store->write_file(fd, {ids[0], ids[1]});
  ::close(fd);
  REQUIRE(err);
  CHECK(shoal::code_of(err) == shoal::errc::storage_failure);
  CHECK_THAT(shoal::message_of(err), Catch::Contains(ids[1].hex()));
}

TEST_CASE("a reopened store keeps every chunk and its counters") {
  temp_dir dir;
  std::vector<chunk_id> ids;
  auto a = random_bytes(100'000, 11);
  auto b = random_bytes(2'000'000, 12);
  {
    auto store = open_store(dir.sub("store"));
    ids = put_ok(*store, {a, b});
  }
  auto store = open_store(dir.sub("store"));
  auto got = store->get(ids);
  REQUIRE(got);
  CHECK((*got)[0] == a);
  CHECK((*got)[1] == b);
  auto s = store->stats();
  CHECK(s.chunks == 2);
  CHECK(s.bytes == a.size() + b.size());
  CHECK(s.packs == 1);
  // New chunks append after the old ones.
  auto c = random_bytes(10, 13);
  auto more = put_ok(*store, {c});
  CHECK(std::filesystem::file_size(pack_path(dir, 1)) == a.size() + b.size() + c.size());
  CHECK(store->get(more[0]).value() == c);
}

TEST_CASE("unindexed bytes at a pack's end (a torn append) are truncated at open") {
  temp_dir dir;
  auto a = random_bytes(4096, 21);
  chunk_id id;
  {
    auto store = open_store(dir.sub("store"));
    id = put_ok(*store, {a})[0];
  }
  {
    // What a crash between the pack append and the index commit leaves behind.
    int fd = ::open(pack_path(dir, 1).c_str(), O_WRONLY | O_APPEND);
    REQUIRE(fd >= 0);
    std::string torn = random_bytes(12345, 22);
    REQUIRE(::write(fd, torn.data(), torn.size()) == static_cast<ssize_t>(torn.size()));
    ::close(fd);
  }
  REQUIRE(std::filesystem::file_size(pack_path(dir, 1)) == a.size() + 12345);
  auto store = open_store(dir.sub("store"));
  CHECK(std::filesystem::file_size(pack_path(dir, 1)) == a.size());
  CHECK(store->get(id).value() == a);
  auto b = random_bytes(777, 23);
  auto next = put_ok(*store, {b});
  CHECK(std::filesystem::file_size(pack_path(dir, 1)) == a.size() + b.size());
  CHECK(store->get(next[0]).value() == b);
}

TEST_CASE("put_verified refuses a batch with a chunk that does not match its id") {
  temp_dir dir;
  auto store = open_store(dir.sub("store"));
  auto a = random_bytes(1000, 31);
  auto b = random_bytes(1000, 32);
  auto wrong = hash_chunk("something else");
  auto err = store->put_verified({{hash_chunk(a), a}, {wrong, b}});
  REQUIRE(err);
  CHECK(shoal::code_of(err) == shoal::errc::storage_failure);
  CHECK_THAT(shoal::message_of(err), Catch::Contains(wrong.hex()));
  CHECK_FALSE(store->contains(hash_chunk(a)));
  CHECK(store->stats().chunks == 0);
  REQUIRE_FALSE(store->put_verified({{hash_chunk(a), a}, {hash_chunk(b), b}}));
  CHECK(store->get(hash_chunk(b)).value() == b);
}

TEST_CASE("a full pack is closed and the next chunks go to a new one") {
  temp_dir dir;
  chunk_store_options options;
  options.pack_size_limit = 10'000;
  options.queue_depth = 4;
  auto store = open_store(dir.sub("store"), options);
  std::vector<std::string> chunks;
  for (uint32_t i = 0; i < 10; ++i)
    chunks.push_back(random_bytes(4000, 100 + i));
  auto ids = put_ok(*store, chunks);
  CHECK(store->stats().packs == 5);
  CHECK(std::filesystem::exists(pack_path(dir, 5)));
  auto got = store->get(ids);
  REQUIRE(got);
  CHECK(*got == chunks);
  store.reset();
  auto reopened = open_store(dir.sub("store"), options);
  CHECK(reopened->get(ids).value() == chunks);
}

TEST_CASE("concurrent readers and a writer do not disturb each other") {
  temp_dir dir;
  auto store = open_store(dir.sub("store"));
  std::vector<std::string> chunks;
  for (uint32_t i = 0; i < 16; ++i)
    chunks.push_back(random_bytes(50'000, 200 + i));
  auto ids = put_ok(*store, chunks);
  std::atomic<int> failures{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&] {
      for (int round = 0; round < 20; ++round) {
        auto got = store->get(ids);
        if (!got || *got != chunks)
          ++failures;
      }
    });
  for (uint32_t i = 0; i < 20; ++i) {
    auto more = random_bytes(30'000, 300 + i);
    std::vector<std::string_view> one{more};
    if (!store->put(one))
      ++failures;
  }
  for (auto& r : readers)
    r.join();
  CHECK(failures == 0);
  CHECK(store->stats().chunks == 36);
}

TEST_CASE("write_files with O_DIRECT pack reads writes the same bytes and still catches corruption") {
  auto direct = GENERATE(true, false);
  temp_dir dir;
  chunk_store_options options;
  options.direct_reads = direct;
  auto store = open_store(dir.sub("store"), options);
  // A small chunk first, so the big ones start at unaligned pack offsets.
  auto small = random_bytes(3001, 61);
  put_ok(*store, {small});
  auto big = random_bytes(2 * file_chunk_size + 4096 * 3 + 17, 62); // tail not block-sized
  auto mid = random_bytes(600'000, 63);
  shoal::test::write_file(dir.sub("big"), big);
  shoal::test::write_file(dir.sub("mid"), mid);
  auto stored = store->put_files({dir.sub("big"), dir.sub("mid")});
  REQUIRE(stored);
  auto ids_of = [](const std::vector<std::pair<chunk_id, uint32_t>>& refs) {
    std::vector<chunk_id> ids;
    for (auto& [id, size] : refs)
      ids.push_back(id);
    return ids;
  };
  int a = ::open(dir.sub("big.out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int b = ::open(dir.sub("mid.out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(a >= 0);
  REQUIRE(b >= 0);
  auto err = store->write_files({{a, ids_of((*stored)[0])}, {b, ids_of((*stored)[1])}});
  ::close(a);
  ::close(b);
  REQUIRE_FALSE(err);
  CHECK(shoal::test::read_file(dir.sub("big.out")) == big);
  CHECK(shoal::test::read_file(dir.sub("mid.out")) == mid);

  // Corrupt the second chunk of big inside the pack: the direct read path must notice.
  auto second = (*stored)[0][1].first;
  auto pack = pack_path(dir, 1);
  auto bytes = shoal::test::read_file(pack);
  auto at = bytes.find(big.substr(file_chunk_size, 64));
  REQUIRE(at != std::string::npos);
  int fd = ::open(pack.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  char flipped = static_cast<char>(bytes[at + 1000] ^ 1);
  REQUIRE(::pwrite(fd, &flipped, 1, static_cast<off_t>(at + 1000)) == 1);
  ::fsync(fd);
  ::close(fd);
  int out = ::open(dir.sub("again").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(out >= 0);
  auto bad = store->write_file(out, ids_of((*stored)[0]));
  ::close(out);
  REQUIRE(bad);
  CHECK(shoal::code_of(bad) == shoal::errc::storage_failure);
  CHECK_THAT(shoal::message_of(bad), Catch::Contains(second.hex()));
}

TEST_CASE("read returns chunks in order from one reused buffer and catches a corrupt one") {
  auto direct = GENERATE(true, false);
  temp_dir dir;
  chunk_store_options options;
  options.direct_reads = direct;
  auto store = open_store(dir.sub("store"), options);
  // Sizes that leave every chunk at an unaligned pack offset; one larger than a read extent.
  std::vector<std::string> chunks;
  const size_t sizes[] = {3001, 1, 5000, file_chunk_size, 3 * file_chunk_size + 5, 17, 600'001};
  for (uint32_t i = 0; i < 7; ++i)
    chunks.push_back(random_bytes(sizes[i], 100 + i));
  auto ids = put_ok(*store, chunks);
  // Out of pack order, with a repeat: extents are only merged where chunks are adjacent.
  std::vector<size_t> order = {2, 3, 4, 5, 0, 6, 1, 3};
  std::vector<chunk_id> want;
  for (auto k : order)
    want.push_back(ids[k]);
  chunk_buffer buf;
  REQUIRE_FALSE(store->read(want, buf));
  REQUIRE(buf.size() == want.size());
  uint64_t total = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    CHECK(buf[i] == chunks[order[i]]);
    total += chunks[order[i]].size();
  }
  CHECK(buf.bytes() == total);
  // A smaller read reuses the buffer.
  auto capacity = buf.capacity_bytes();
  REQUIRE_FALSE(store->read({ids[1], ids[0]}, buf));
  REQUIRE(buf.size() == 2);
  CHECK(buf[0] == chunks[1]);
  CHECK(buf[1] == chunks[0]);
  CHECK(buf.capacity_bytes() == capacity);

  // Flip a byte inside chunk 4 (the large one) in the pack.
  {
    auto pack = pack_path(dir, 1);
    auto bytes = shoal::test::read_file(pack);
    auto at = bytes.find(chunks[4].substr(0, 64));
    REQUIRE(at != std::string::npos);
    int fd = ::open(pack.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    char flipped = static_cast<char>(bytes[at + 2 * file_chunk_size + 1] ^ 0x10);
    REQUIRE(::pwrite(fd, &flipped, 1, static_cast<off_t>(at + 2 * file_chunk_size + 1)) == 1);
    ::fsync(fd);
    ::close(fd);
  }
  auto err = store->read(want, buf);
  REQUIRE(err);
  CHECK(shoal::code_of(err) == shoal::errc::storage_failure);
  CHECK_THAT(shoal::message_of(err), Catch::Contains(ids[4].hex()));
  CHECK_THAT(shoal::message_of(err), Catch::Contains("pack-000001.dat"));
  CHECK(buf.size() == 0);
  auto got = store->get(ids[4]);
  REQUIRE_FALSE(got);
  CHECK_THAT(shoal::message_of(got.error()), Catch::Contains(ids[4].hex()));
  // Unverified reads (for a receiver that verifies) return the bytes as stored.
  chunk_store::read_options unverified;
  unverified.verify = false;
  REQUIRE_FALSE(store->read({ids[4], ids[5]}, buf, unverified));
  CHECK(buf[0].size() == chunks[4].size());
  CHECK(buf[0] != chunks[4]);
  CHECK(buf[1] == chunks[5]);
  // A missing chunk is not_found naming it.
  auto absent = hash_chunk("not stored");
  auto missing = store->read({ids[0], absent}, buf);
  REQUIRE(missing);
  CHECK(shoal::code_of(missing) == shoal::errc::not_found);
  CHECK_THAT(shoal::message_of(missing), Catch::Contains(absent.hex()));
}

TEST_CASE("put_verified batches at unaligned offsets leave a pack of exactly their bytes") {
  auto direct = GENERATE(true, false);
  temp_dir dir;
  chunk_store_options options;
  options.direct_appends = direct;
  std::vector<std::string> chunks;
  std::vector<chunk_id> ids;
  uint64_t expected_size = 0;
  {
    auto store = open_store(dir.sub("store"), options);
    // Batch edges inside blocks, a batch within one block, one larger than a staging window,
    // a batch ending block-aligned, and a duplicate inside a batch.
    const std::vector<std::vector<size_t>> batches = {
      {100, 5000}, {7}, {file_chunk_size + 3, 4096}, {9 * file_chunk_size + 11, 1},
      {4096 - ((100 + 5000 + 7 + file_chunk_size + 3 + 4096 + 9 * file_chunk_size + 11 + 1) % 4096)},
      {8192, 3}};
    uint32_t seed = 500;
    for (auto& sizes : batches) {
      std::vector<std::pair<chunk_id, std::string_view>> batch;
      size_t first = chunks.size();
      for (auto size : sizes) {
        chunks.push_back(random_bytes(size, seed++));
        expected_size += size;
      }
      for (size_t k = first; k < chunks.size(); ++k) {
        ids.push_back(hash_chunk(chunks[k]));
        batch.emplace_back(ids[k], chunks[k]);
      }
      batch.emplace_back(ids[first], chunks[first]); // stored once
      REQUIRE_FALSE(store->put_verified(batch));
      CHECK(std::filesystem::file_size(pack_path(dir, 1)) == expected_size);
      auto got = store->get(std::vector<chunk_id>(ids.begin(), ids.end()));
      REQUIRE(got);
      CHECK(*got == chunks);
    }
    CHECK(store->stats().chunks == chunks.size());
  }
  auto store = open_store(dir.sub("store"), options);
  CHECK(std::filesystem::file_size(pack_path(dir, 1)) == expected_size);
  auto got = store->get(ids);
  REQUIRE(got);
  CHECK(*got == chunks);
  // A batch with a bad chunk stores nothing, and the next one appends where the last ended.
  auto good = random_bytes(70'000, 900);
  auto bad = random_bytes(70'000, 901);
  auto err = store->put_verified({{hash_chunk(good), good}, {hash_chunk(good), bad}});
  REQUIRE(err);
  CHECK(shoal::code_of(err) == shoal::errc::storage_failure);
  CHECK_FALSE(store->contains(hash_chunk(good)));
  REQUIRE_FALSE(store->put_verified({{hash_chunk(good), good}}));
  CHECK(std::filesystem::file_size(pack_path(dir, 1)) == expected_size + good.size());
  CHECK(store->get(hash_chunk(good)).value() == good);
}

TEST_CASE("read_batches hands over every chunk in order, batch by batch, and stops at a corrupt one") {
  temp_dir dir;
  auto store = open_store(dir.sub("store"));
  std::vector<std::string> chunks;
  for (uint32_t i = 0; i < 40; ++i)
    chunks.push_back(random_bytes(i % 4 == 0 ? file_chunk_size : 70'000 + i, 700 + i));
  auto ids = put_ok(*store, chunks);
  std::vector<std::string> seen;
  size_t batches = 0;
  auto err = store->read_batches(ids, 3u << 20, [&](size_t first, const chunk_buffer& got) {
    CHECK(first == seen.size());
    uint64_t bytes = 0;
    for (auto c : got.chunks()) {
      seen.emplace_back(c);
      bytes += c.size();
    }
    CHECK((bytes <= (3u << 20) || got.size() == 1));
    ++batches;
    return caf::error{};
  });
  REQUIRE_FALSE(err);
  CHECK(batches > 3);
  CHECK(seen == chunks);

  // Corrupt chunk 30: the batches before it are handed over, then the error names it.
  {
    auto pack = pack_path(dir, 1);
    auto bytes = shoal::test::read_file(pack);
    auto at = bytes.find(chunks[30].substr(0, 64));
    REQUIRE(at != std::string::npos);
    int fd = ::open(pack.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    char flipped = static_cast<char>(bytes[at + 5] ^ 0x04);
    REQUIRE(::pwrite(fd, &flipped, 1, static_cast<off_t>(at + 5)) == 1);
    ::fsync(fd);
    ::close(fd);
  }
  size_t handed = 0;
  err = store->read_batches(ids, 3u << 20, [&](size_t, const chunk_buffer& got) {
    handed += got.size();
    return caf::error{};
  });
  REQUIRE(err);
  CHECK(shoal::code_of(err) == shoal::errc::storage_failure);
  CHECK_THAT(shoal::message_of(err), Catch::Contains(ids[30].hex()));
  CHECK(handed <= 30);
  // An error of the callback stops the reading and is returned.
  err = store->read_batches(ids, 1u << 20, [&](size_t, const chunk_buffer&) {
    return shoal::make_error(shoal::errc::internal, "enough");
  });
  REQUIRE(err);
  CHECK_THAT(shoal::message_of(err), Catch::Contains("enough"));
}

TEST_CASE("collect forgets dead chunks, rewrites mostly dead packs and keeps every live chunk") {
  temp_dir dir;
  chunk_store_options options;
  options.pack_size_limit = 10'000;
  auto store = open_store(dir.sub("store"), options);
  // Packs 1-5 hold two 4000-byte chunks each: [0 1] [2 3] [4 5] [6 7] [8 9].
  std::vector<std::string> chunks;
  for (uint32_t i = 0; i < 10; ++i)
    chunks.push_back(random_bytes(4000, 300 + i));
  auto ids = put_ok(*store, chunks);
  REQUIRE(store->stats().packs == 5);
  // Live: 0 and 1 (pack 1 untouched), 2 (pack 2 half dead: rewritten), nothing of packs 3-4
  // (deleted without a copy), 8 and 9 (pack 5 is the open pack, untouched).
  std::set<chunk_id> live_set{ids[0], ids[1], ids[2], ids[8], ids[9]};
  auto live = [&](const chunk_id& id) { return live_set.count(id) != 0; };

  // A reader running while the collection moves and deletes packs.
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, failures{0};
  std::thread reader([&] {
    while (!stop) {
      auto got = store->get(std::vector<chunk_id>{ids[0], ids[2], ids[9]});
      if (!got || (*got)[1] != chunks[2])
        ++failures;
      ++reads;
    }
  });
  // Collect once the reader runs (on a loaded machine the thread may start late).
  while (reads == 0)
    std::this_thread::yield();
  auto rep = store->collect(live);
  stop = true;
  reader.join();
  REQUIRE(rep);
  CHECK(failures == 0);
  CHECK(reads > 0);
  CHECK(rep->chunks_removed == 5);
  CHECK(rep->bytes_removed == 5 * 4000);
  CHECK(rep->packs_rewritten == 1);
  CHECK(rep->packs_removed == 3);
  CHECK(rep->chunks_moved == 1);
  CHECK(rep->bytes_moved == 4000);
  CHECK(rep->disk_bytes_freed == 3 * 8000 - 4000);
  CHECK(std::filesystem::exists(pack_path(dir, 1)));
  CHECK_FALSE(std::filesystem::exists(pack_path(dir, 2)));
  CHECK_FALSE(std::filesystem::exists(pack_path(dir, 3)));
  CHECK_FALSE(std::filesystem::exists(pack_path(dir, 4)));
  auto s = store->stats();
  CHECK(s.chunks == 5);
  CHECK(s.bytes == 5 * 4000);
  CHECK(s.packs == 3);
  for (size_t i = 0; i < ids.size(); ++i)
    CHECK(store->contains(ids[i]) == live(ids[i]));
  std::vector<chunk_id> kept{ids[0], ids[1], ids[2], ids[8], ids[9]};
  std::vector<std::string> want{chunks[0], chunks[1], chunks[2], chunks[8], chunks[9]};
  CHECK(store->get(kept).value() == want);
  // A dead chunk put again is stored again.
  put_ok(*store, {chunks[5]});
  CHECK(store->get(ids[5]).value() == chunks[5]);

  // Everything survives a reopen, with the counters.
  store.reset();
  auto reopened = open_store(dir.sub("store"), options);
  CHECK(reopened->get(kept).value() == want);
  CHECK(reopened->get(ids[5]).value() == chunks[5]);
  CHECK(reopened->stats().chunks == 6);
  // Nothing dead: a second collection does nothing.
  live_set.insert(ids[5]);
  auto again = reopened->collect(live);
  REQUIRE(again);
  CHECK(again->chunks_removed == 0);
  CHECK(again->packs_removed == 0);
}

TEST_CASE("collect keeps a pack whose live chunk is corrupt and names the chunk") {
  temp_dir dir;
  chunk_store_options options;
  options.pack_size_limit = 10'000;
  auto store = open_store(dir.sub("store"), options);
  std::vector<std::string> chunks;
  for (uint32_t i = 0; i < 4; ++i)
    chunks.push_back(random_bytes(4000, 400 + i));
  auto ids = put_ok(*store, chunks); // packs [0 1] [2 3]
  {
    int fd = ::open(pack_path(dir, 1).c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    char c = 0;
    REQUIRE(::pwrite(fd, &c, 1, 10) == 1);
    ::close(fd);
  }
  // Chunk 0 is live but corrupt, chunk 1 dead: pack 1 would be rewritten.
  auto rep = store->collect([&](const chunk_id& id) { return id != ids[1]; });
  REQUIRE_FALSE(rep);
  CHECK(shoal::code_of(rep.error()) == shoal::errc::storage_failure);
  CHECK_THAT(shoal::message_of(rep.error()), Catch::Contains(ids[0].hex()));
  CHECK(std::filesystem::exists(pack_path(dir, 1)));
  CHECK(store->get(ids[2]).value() == chunks[2]);
}

TEST_CASE("a pack the index no longer knows (a collection cut short) is removed at open") {
  temp_dir dir;
  chunk_store_options options;
  options.pack_size_limit = 10'000;
  std::vector<chunk_id> ids;
  std::vector<std::string> chunks;
  {
    auto store = open_store(dir.sub("store"), options);
    for (uint32_t i = 0; i < 4; ++i)
      chunks.push_back(random_bytes(4000, 500 + i));
    ids = put_ok(*store, chunks); // packs [0 1] [2 3]
    // Pack 1 is all dead; the open pack 2 is half dead: sealed, chunk 3 moved to a new pack 3.
    auto rep = store->collect([&](const chunk_id& id) { return id == ids[3]; });
    REQUIRE(rep);
    CHECK(rep->packs_removed == 2);
    CHECK(std::filesystem::exists(pack_path(dir, 3)));
  }
  // Recreate pack 1 as a crash between its index entry's removal and its unlink would leave it.
  {
    std::FILE* f = std::fopen(pack_path(dir, 1).c_str(), "wb");
    REQUIRE(f != nullptr);
    std::fwrite(chunks[0].data(), 1, chunks[0].size(), f);
    std::fclose(f);
  }
  auto store = open_store(dir.sub("store"), options);
  CHECK_FALSE(std::filesystem::exists(pack_path(dir, 1)));
  CHECK(store->get(ids[3]).value() == chunks[3]);
  CHECK_FALSE(store->contains(ids[0]));
}

TEST_CASE("put_files appends whole windows directly or buffered and every byte reads back") {
  auto direct = GENERATE(true, false);
  temp_dir dir;
  chunk_store_options options;
  options.direct_appends = direct;
  options.pack_size_limit = 5'000'000; // a pack fills in the middle of a window
  auto store = open_store(dir.sub("store"), options);
  // Odd sizes, so chunks start at unaligned pack offsets; more than one 16 MiB window.
  std::vector<std::string> paths;
  std::vector<std::string> contents;
  for (uint32_t i = 0; i < 12; ++i) {
    contents.push_back(random_bytes((1u << 20) + 1000 * i + 17, 600 + i));
    paths.push_back(dir.sub("f" + std::to_string(i)));
    shoal::test::write_file(paths.back(), contents.back());
  }
  contents.push_back(random_bytes(3'333'333, 700));
  paths.push_back(dir.sub("big"));
  shoal::test::write_file(paths.back(), contents.back());
  auto stored = store->put_files(paths);
  REQUIRE(stored);
  CHECK(store->stats().packs >= 3);
  auto check = [&](chunk_store& s) {
    for (size_t i = 0; i < paths.size(); ++i) {
      std::vector<chunk_id> ids;
      for (auto& [id, size] : (*stored)[i])
        ids.push_back(id);
      auto got = s.get(ids);
      REQUIRE(got);
      std::string joined;
      for (auto& c : *got)
        joined += c;
      CHECK(joined == contents[i]);
    }
  };
  check(*store);
  store.reset();
  auto reopened = open_store(dir.sub("store"), options); // no tail is cut: every byte indexed
  check(*reopened);
  uint64_t on_disk = 0;
  for (int n = 1; std::filesystem::exists(pack_path(dir, n)); ++n)
    on_disk += std::filesystem::file_size(pack_path(dir, n));
  CHECK(on_disk == reopened->stats().bytes);
}
