/// Chunk store throughput on a real tree (bench/chunk_store_bench.sh drives it next to fio).
///
///     chunk_store_bench put <tree> <store-dir> <digest-file>
///         scan_tree(<tree>) into a fresh chunk store (sync on), store the layer, write its digest
///     chunk_store_bench materialise <store-dir> <digest-file> <target>
///         load the layer and materialise it into <target> (absent or empty); with
///         SHOAL_BENCH_BUFFERED_READS=1 in the environment the packs are read through the page
///         cache (chunk_store_options::direct_reads = false)
///
///     chunk_store_bench read <store-dir> <digest-file>
///         load the layer and read every chunk of its files back through
///         chunk_store::read_batches (verified, in batches of about 32 MiB, the next batch in
///         flight while one is verified), discarding the bytes: the store's read path without
///         writing a tree. SHOAL_BENCH_READ=read: one chunk_store::read per 32 MiB batch
///         instead; SHOAL_BENCH_READ=get: chunk_store::get per batch (a std::string per
///         chunk). SHOAL_BENCH_NO_VERIFY=1: no SHA-256 check (the I/O alone).
///
/// Prints one line: `<op> bytes=<content bytes> seconds=<s> mb_per_s=<MB/s>` (MB = 10^6 bytes,
/// like fio's MB/s), then the store's counters.

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "fs/chunk_store.hpp"
#include "fs/layer.hpp"
#include "fs/tree.hpp"
#include "runtime/errc.hpp"

using namespace shoal::fs;

namespace {

int usage() {
  std::fprintf(stderr, "usage: chunk_store_bench put <tree> <store-dir> <digest-file>\n"
                       "       chunk_store_bench materialise <store-dir> <digest-file> <target>\n"
                       "       chunk_store_bench read <store-dir> <digest-file>\n");
  return 2;
}

int fail(const char* what, const caf::error& err) {
  std::fprintf(stderr, "%s failed: %s\n", what, shoal::message_of(err).c_str());
  return 1;
}

void report(const char* op, uint64_t bytes, double seconds, const chunk_store& store) {
  std::printf("%s bytes=%llu seconds=%.3f mb_per_s=%.1f\n", op,
              static_cast<unsigned long long>(bytes), seconds, bytes / seconds / 1e6);
  auto s = store.stats();
  std::printf("stats chunks=%llu bytes=%llu packs=%u puts=%llu deduplicated=%llu reads=%llu\n",
              static_cast<unsigned long long>(s.chunks), static_cast<unsigned long long>(s.bytes),
              s.packs, static_cast<unsigned long long>(s.puts),
              static_cast<unsigned long long>(s.deduplicated),
              static_cast<unsigned long long>(s.reads));
}

/// The layer digest `put` wrote to `path`; says what is wrong when there is none.
std::optional<chunk_id> read_digest(const char* path) {
  std::string hex;
  std::ifstream{path} >> hex;
  auto digest = chunk_id::from_hex(hex);
  if (!digest)
    std::fprintf(stderr, "%s does not hold a layer digest\n", path);
  return digest;
}

} // namespace

/// SHOAL_BENCH_BUFFERED_READS=1 / SHOAL_BENCH_BUFFERED_APPENDS=1: pack reads / appends through
/// the page cache instead of O_DIRECT (the comparison columns).
chunk_store_options options_from_env() {
  chunk_store_options options;
  options.direct_reads = std::getenv("SHOAL_BENCH_BUFFERED_READS") == nullptr;
  options.direct_appends = std::getenv("SHOAL_BENCH_BUFFERED_APPENDS") == nullptr;
  return options;
}

int main(int argc, char** argv) {
  if (argc < 2)
    return usage();
  std::string op = argv[1];
  using clock = std::chrono::steady_clock;
  if (op == "read" && argc == 4) {
    auto store = chunk_store::open(argv[2], options_from_env());
    if (!store)
      return fail("open", store.error());
    auto digest = read_digest(argv[3]);
    if (!digest)
      return 1;
    auto start = clock::now();
    auto l = load_layer(**store, *digest);
    if (!l)
      return fail("load_layer", l.error());
    uint64_t bytes = 0;
    constexpr uint64_t batch_bytes = 32u << 20;
    // SHOAL_BENCH_NO_VERIFY=1: skip the SHA-256 check (the I/O alone, for diagnosis).
    chunk_store::read_options read_options;
    read_options.verify = std::getenv("SHOAL_BENCH_NO_VERIFY") == nullptr;
    std::vector<chunk_id> ids;
    for (const auto& e : l->entries)
      for (const auto& c : e.chunks)
        ids.push_back(c.id);
    const char* mode = std::getenv("SHOAL_BENCH_READ");
    if (mode == nullptr || std::string{mode} == "batches") {
      // The default: read_batches (the next 32 MiB batch in flight while this one is verified).
      auto err = (*store)->read_batches(
        ids, batch_bytes,
        [&](size_t, const chunk_buffer& chunks) -> caf::error {
          bytes += chunks.bytes();
          return {};
        },
        read_options);
      if (err)
        return fail("read_batches", err);
    } else {
      // "read": one read() per 32 MiB batch into one reused buffer; "get": get() per batch (a
      // fresh std::string per chunk). For comparison.
      const bool use_get = std::string{mode} == "get";
      chunk_buffer buf;
      std::vector<chunk_id> batch;
      uint64_t in_batch = 0;
      auto flush = [&]() -> caf::error {
        if (batch.empty())
          return {};
        if (use_get) {
          auto got = (*store)->get(batch);
          if (!got)
            return got.error();
          for (const auto& c : *got)
            bytes += c.size();
        } else {
          if (auto err = (*store)->read(batch, buf, read_options))
            return err;
          bytes += buf.bytes();
        }
        batch.clear();
        in_batch = 0;
        return {};
      };
      for (size_t i = 0; i < ids.size(); ++i) {
        batch.push_back(ids[i]);
        in_batch += *(*store)->size_of(ids[i]);
        if (in_batch >= batch_bytes)
          if (auto err = flush())
            return fail("read", err);
      }
      if (auto err = flush())
        return fail("read", err);
    }
    double seconds = std::chrono::duration<double>(clock::now() - start).count();
    report("read", bytes, seconds, **store);
    return 0;
  }
  if (argc != 5)
    return usage();
  if (op == "put") {
    auto store = chunk_store::open(argv[3], options_from_env());
    if (!store)
      return fail("open", store.error());
    auto start = clock::now();
    auto l = scan_tree(argv[2], **store);
    if (!l)
      return fail("scan_tree", l.error());
    auto digest = store_layer(**store, *l);
    if (!digest)
      return fail("store_layer", digest.error());
    double seconds = std::chrono::duration<double>(clock::now() - start).count();
    std::ofstream{argv[4]} << digest->hex() << "\n";
    report("put", l->content_bytes(), seconds, **store);
    return 0;
  }
  if (op == "materialise") {
    auto store = chunk_store::open(argv[2], options_from_env());
    if (!store)
      return fail("open", store.error());
    auto digest = read_digest(argv[3]);
    if (!digest)
      return 1;
    auto start = clock::now();
    auto l = load_layer(**store, *digest);
    if (!l)
      return fail("load_layer", l.error());
    auto err = materialise(merge({*l}), **store, argv[4]);
    if (err)
      return fail("materialise", err);
    double seconds = std::chrono::duration<double>(clock::now() - start).count();
    report("materialise", l->content_bytes(), seconds, **store);
    return 0;
  }
  return usage();
}
