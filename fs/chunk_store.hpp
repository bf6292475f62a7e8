#pragma once
/// `chunk_store`: content-addressed storage for file data, layer manifests and (later) volumes.
///
///     <dir>/pack-000001.dat ...   append-only pack files; a chunk is [bytes] at (pack, offset)
///     <dir>/index/                RocksDB: chunk id (32 bytes) -> location (pack, offset, size)
///
/// A chunk is stored once however many layers or images contain it. Writes append to the open
/// pack with io_uring, fdatasync it, then commit the index entries in one synced WriteBatch: a
/// chunk is in the index only once its bytes are durable. A crash may leave unindexed bytes at
/// a pack's end; they are never read and are truncated at the next open. Reads go through
/// io_uring in batches and every chunk is verified against its id: a mismatch is an error naming
/// the chunk (errc::storage_failure), never bad data.
///
/// Threads: every method may be called from any thread. Writers are serialised internally (one
/// pack is open for appends); readers run concurrently (one ring per call).

#include <array>
#include <cstring>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "fs/chunk_buffer.hpp"

namespace shoal::fs {

/// SHA-256 of a chunk's bytes.
struct chunk_id {
  std::array<uint8_t, 32> bytes{};

  friend bool operator==(const chunk_id& a, const chunk_id& b) { return a.bytes == b.bytes; }
  friend bool operator!=(const chunk_id& a, const chunk_id& b) { return !(a == b); }
  friend bool operator<(const chunk_id& a, const chunk_id& b) { return a.bytes < b.bytes; }

  /// 64 lowercase hex digits.
  std::string hex() const;
  /// Parses 64 hex digits; nullopt otherwise.
  static std::optional<chunk_id> from_hex(std::string_view hex);
  /// The raw 32 bytes as a string (RocksDB keys, capnp Data).
  std::string_view raw() const { return {reinterpret_cast<const char*>(bytes.data()), 32}; }
  static std::optional<chunk_id> from_raw(std::string_view raw);
};

struct chunk_id_hash {
  size_t operator()(const chunk_id& id) const noexcept {
    size_t h;
    static_assert(sizeof(h) <= 32);
    std::memcpy(&h, id.bytes.data(), sizeof(h));
    return h;
  }
};

/// SHA-256 (OpenSSL) of `data`.
chunk_id hash_chunk(std::string_view data);

/// Files are cut into chunks of this size (the last one shorter).
inline constexpr size_t file_chunk_size = 1 << 20;
/// The largest chunk put() accepts (layer manifests of very large trees).
inline constexpr size_t max_chunk_size = 64u << 20;

struct chunk_store_options {
  /// A new pack is started when the open one would grow past this.
  uint64_t pack_size_limit = 1ull << 30;
  /// io_uring submission queue depth for reads and writes.
  unsigned queue_depth = 64;
  /// fdatasync packs and sync the index before put() returns (tests of throughput may turn it off).
  bool sync = true;
  /// read() and write_file(s) read the packs with O_DIRECT (aligned reads into their own
  /// buffers, falling back to buffered reads where the file system refuses O_DIRECT): no copy
  /// out of the page cache and no flood of pack pages in it while a large tree is read.
  /// write_file(s) does so for chunks of 256 KiB and more; read() for every extent (contiguous
  /// chunks are read together). The destination files of write_file(s) are written through the
  /// page cache.
  bool direct_reads = true;
  /// put(), put_verified() and put_files() (per 16 MiB window) append the whole blocks of a
  /// batch to the pack with O_DIRECT: copied into a reused, aligned staging buffer and written
  /// from it, so no page-cache page is allocated and filled per appended page (on a VM that is
  /// most of the ~1.3 s per GB of kernel time an append cost; the staging copy is a memcpy into
  /// warm memory). The partial blocks at the batch's edges go through the page cache. Falls
  /// back to buffered appends (put_files: written back early with sync_file_range) where the
  /// file system refuses O_DIRECT.
  bool direct_appends = true;
};

struct chunk_store_stats {
  uint64_t chunks = 0;      ///< distinct chunks indexed
  uint64_t bytes = 0;       ///< their total size
  uint32_t packs = 0;
  uint64_t puts = 0;        ///< chunks offered to put() since open
  uint64_t deduplicated = 0;///< of those, already present
  uint64_t reads = 0;       ///< chunks returned by get() or written by write_file(s) since open
};

/// What `chunk_store::collect` did.
struct collect_report {
  uint64_t chunks_removed = 0;   ///< index entries of chunks nothing uses any more
  uint64_t bytes_removed = 0;    ///< their size
  uint32_t packs_rewritten = 0;  ///< packs whose live chunks were moved to the open pack
  uint32_t packs_removed = 0;    ///< packs deleted (rewritten ones and ones with nothing live)
  uint64_t chunks_moved = 0;     ///< live chunks copied out of rewritten packs
  uint64_t bytes_moved = 0;
  uint64_t disk_bytes_freed = 0; ///< pack bytes deleted minus bytes appended by the moves
};

class chunk_store {
public:
  /// Opens or creates the store in `dir`. Errors: errc::storage_failure (with the path and errno).
  static caf::expected<std::unique_ptr<chunk_store>> open(const std::string& dir,
                                                          chunk_store_options options = {});
  ~chunk_store();
  chunk_store(const chunk_store&) = delete;
  chunk_store& operator=(const chunk_store&) = delete;

  bool contains(const chunk_id& id) const;
  /// The ids of `ids` not in the store, in the given order, without duplicates.
  std::vector<chunk_id> missing(const std::vector<chunk_id>& ids) const;
  /// The stored size of a chunk; nullopt when absent.
  std::optional<uint32_t> size_of(const chunk_id& id) const;

  /// Stores `chunks` (each at most max_chunk_size), skipping those already present; returns
  /// their ids in order. Durable when it returns (see above).
  caf::expected<std::vector<chunk_id>> put(const std::vector<std::string_view>& chunks);
  /// Stores chunks whose ids the caller claims (from a peer); each is verified before it is
  /// written. A mismatch: errc::storage_failure naming the chunk, nothing of the batch written.
  caf::error put_verified(const std::vector<std::pair<chunk_id, std::string_view>>& chunks);

  struct read_options {
    /// Check every chunk against its id (SHA-256) before returning it. Turn it off only where
    /// the bytes go to a reader that verifies them itself: the block server serving a peer
    /// (the peer's put_verified hashes every chunk it receives and refuses a mismatch, so a
    /// corrupt pack is still caught, on the receiving side, naming the chunk).
    bool verify = true;
  };
  /// Reads chunks, in order, into `out` (its buffer reused; see chunk_buffer.hpp). Packs are
  /// read with O_DIRECT (options.direct_reads) in coalesced extents, all submitted at once; each
  /// group of extents is verified (on the calling thread and a helper) as soon as it arrived,
  /// while the later ones are still being read. A missing chunk is errc::not_found naming it; a
  /// corrupt one errc::storage_failure naming it and its pack (then `out` holds no chunks).
  caf::error read(const std::vector<chunk_id>& ids, chunk_buffer& out,
                  read_options options) const;
  caf::error read(const std::vector<chunk_id>& ids, chunk_buffer& out) const {
    return read(ids, out, read_options{});
  }

  /// `read` over many chunks, cut into batches of about `batch_bytes` (a larger chunk is a
  /// batch of its own), with the next batch's reads in flight while this one is verified and
  /// handed to `fn(first, chunks)` (`first`: the index in `ids` of the batch's first chunk;
  /// `chunks` valid during the call). `fn` runs on the calling thread; its error stops the
  /// reading and is returned. Errors as for `read`; batches before a failing one were handed
  /// over already.
  using batch_fn = std::function<caf::error(size_t first, const chunk_buffer& chunks)>;
  caf::error read_batches(const std::vector<chunk_id>& ids, uint64_t batch_bytes,
                          const batch_fn& fn, read_options options) const;
  caf::error read_batches(const std::vector<chunk_id>& ids, uint64_t batch_bytes,
                          const batch_fn& fn) const {
    return read_batches(ids, batch_bytes, fn, read_options{});
  }

  /// Reads chunks, in order, verified, as owned strings (a `read` plus a copy each: prefer
  /// `read` for bulk reads). Errors as for `read`.
  caf::expected<std::vector<std::string>> get(const std::vector<chunk_id>& ids) const;
  caf::expected<std::string> get(const chunk_id& id) const;

  /// Stores the file at `path` (read with io_uring) and returns its chunk ids and sizes in order.
  caf::expected<std::vector<std::pair<chunk_id, uint32_t>>> put_file(const std::string& path);
  /// Writes the concatenation of `chunks` to the already open `fd` from offset 0 (io_uring reads
  /// from the packs, verified, and io_uring writes).
  caf::error write_file(int fd, const std::vector<chunk_id>& chunks) const;

  /// Stores many files in one pipelined pass (reads of the next window, hashing of this one and
  /// pack writes of the previous one overlap) and commits once: one fdatasync per touched pack,
  /// then one synced WriteBatch. Returns each file's chunk ids and sizes, in the order of
  /// `paths`. Files are opened with O_NOFOLLOW. `options.store = false` only hashes (nothing is
  /// written). Errors name the file (errc::storage_failure, errc::not_found when it vanished).
  struct put_files_options {
    bool store = true;
  };
  caf::expected<std::vector<std::vector<std::pair<chunk_id, uint32_t>>>>
  put_files(const std::vector<std::string>& paths, put_files_options options);
  caf::expected<std::vector<std::vector<std::pair<chunk_id, uint32_t>>>>
  put_files(const std::vector<std::string>& paths) {
    return put_files(paths, put_files_options{});
  }

  /// write_file for many files in one pipelined pass: `files[i].second` is written to the open
  /// `files[i].first` from offset 0. Every chunk is verified before any byte of it is written.
  /// Not atomic: on an error some files may be partly written.
  caf::error write_files(const std::vector<std::pair<int, std::vector<chunk_id>>>& files) const;

  /// Garbage collection. Forgets every chunk for which `live` returns false, then rewrites the
  /// sealed packs in which at least `rewrite_dead_fraction` of the bytes are dead: their live
  /// chunks are read (verified) and appended to the open pack, the index is pointed at the new
  /// copies (durably), and only then is the old pack deleted. Packs with nothing live are
  /// deleted without a copy.
  ///
  /// Writers wait for the whole collection (it holds the write lock), so the caller must make
  /// sure nothing it still needs is unreferenced while it runs: the image service stops builds
  /// first (a build's chunks are referenced only once its image is recorded). Readers run
  /// concurrently until a pack is deleted: each deletion waits for the reads in flight and makes
  /// new ones wait for it (a few milliseconds).
  ///
  /// Crash safety: every step is a synced index write; a crash leaves either the old or the new
  /// location of each chunk indexed, never neither, and at worst an unindexed pack, which the
  /// next open empties and removes. Errors: errc::storage_failure (a corrupt live chunk, named,
  /// stops the rewrite of its pack and keeps it), with what was done until then undone only
  /// where it is not durable yet.
  using live_fn = std::function<bool(const chunk_id&)>;
  caf::expected<collect_report> collect(const live_fn& live, double rewrite_dead_fraction = 0.25);

  chunk_store_stats stats() const;
  const std::string& dir() const noexcept;

  struct impl;

private:
  explicit chunk_store(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace shoal::fs
