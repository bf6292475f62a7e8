#include "fs/chunk_store.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <functional>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/status.h>
#include <rocksdb/write_batch.h>

#include "fs/detail/io_ring.hpp"
#include "runtime/errc.hpp"
#include "runtime/log.hpp"

namespace shoal::fs {

using detail::io_group;
using detail::io_kind;
using detail::io_op;
using detail::io_ring;

// -- chunk ids and hashing ------------------------------------------------------------------------

std::string chunk_id::hex() const {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < 32; ++i) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 0xF];
  }
  return out;
}

std::optional<chunk_id> chunk_id::from_hex(std::string_view hex) {
  if (hex.size() != 64)
    return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  };
  chunk_id id;
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(hex[2 * i]);
    int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return std::nullopt;
    id.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return id;
}

std::optional<chunk_id> chunk_id::from_raw(std::string_view raw) {
  if (raw.size() != 32)
    return std::nullopt;
  chunk_id id;
  std::memcpy(id.bytes.data(), raw.data(), 32);
  return id;
}

namespace {

/// Fetched once: OpenSSL 3's implicit fetch in EVP_sha256() costs more than hashing a small chunk.
const EVP_MD* sha256_md() {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md != nullptr ? md : EVP_sha256();
}

struct md_ctx {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~md_ctx() { EVP_MD_CTX_free(ctx); }
};

chunk_id sha256(const char* data, size_t size) {
  thread_local md_ctx holder; // one context per thread, reused
  chunk_id id;
  unsigned len = 32;
  EVP_DigestInit_ex(holder.ctx, sha256_md(), nullptr);
  EVP_DigestUpdate(holder.ctx, data, size);
  EVP_DigestFinal_ex(holder.ctx, id.bytes.data(), &len);
  return id;
}

} // namespace

chunk_id hash_chunk(std::string_view data) {
  return sha256(data.data(), data.size());
}

// -- on-disk formats ------------------------------------------------------------------------------

namespace {

/// Where a chunk lives. Index value: pack (u32 LE), offset (u64 LE), size (u32 LE).
struct location {
  uint32_t pack = 0;
  uint64_t offset = 0;
  uint32_t size = 0;
};

template <class T>
void put_le(std::string& out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i)
    out.push_back(static_cast<char>((static_cast<uint64_t>(value) >> (8 * i)) & 0xFF));
}

template <class T>
T get_le(const char* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return static_cast<T>(v);
}

std::string encode_location(const location& loc) {
  std::string out;
  out.reserve(16);
  put_le<uint32_t>(out, loc.pack);
  put_le<uint64_t>(out, loc.offset);
  put_le<uint32_t>(out, loc.size);
  return out;
}

std::optional<location> decode_location(std::string_view v) {
  if (v.size() != 16)
    return std::nullopt;
  return location{get_le<uint32_t>(v.data()), get_le<uint64_t>(v.data() + 4),
                  get_le<uint32_t>(v.data() + 12)};
}

/// Index keys besides the 32-byte chunk ids (different lengths, so they never collide):
/// "pack/000001" -> the committed end of that pack (u64 LE); "stats" -> chunks, bytes (u64 LE).
constexpr std::string_view pack_key_prefix = "pack/";
constexpr std::string_view stats_key = "stats";

std::string pack_number_text(uint32_t pack) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%06u", pack);
  return buf;
}

std::string pack_key(uint32_t pack) {
  return std::string{pack_key_prefix} + pack_number_text(pack);
}

std::string pack_file_name(uint32_t pack) {
  return "pack-" + pack_number_text(pack) + ".dat";
}

/// "pack-000123.dat" -> 123.
std::optional<uint32_t> parse_pack_file_name(std::string_view name) {
  if (name.size() < 10 || name.substr(0, 5) != "pack-" || name.substr(name.size() - 4) != ".dat")
    return std::nullopt;
  auto digits = name.substr(5, name.size() - 9);
  if (digits.empty() || digits.size() > 9)
    return std::nullopt;
  uint32_t n = 0;
  for (char c : digits) {
    if (c < '0' || c > '9')
      return std::nullopt;
    n = n * 10 + static_cast<uint32_t>(c - '0');
  }
  return n == 0 ? std::nullopt : std::optional<uint32_t>{n};
}

std::string errno_text(int e) {
  return std::strerror(e);
}

caf::error io_failure(std::string what, int e) {
  return make_error(errc::storage_failure, std::move(what) + ": " + errno_text(e));
}

caf::error db_failure(std::string what, const rocksdb::Status& st) {
  return make_error(errc::storage_failure, std::move(what) + ": " + st.ToString());
}

/// Page-aligned scratch memory for a pipeline's windows.
struct slab {
  char* data = nullptr;
  explicit slab(size_t size) {
    if (posix_memalign(reinterpret_cast<void**>(&data), 4096, size) != 0)
      data = nullptr;
  }
  ~slab() { std::free(data); }
  slab(const slab&) = delete;
  slab& operator=(const slab&) = delete;
};

/// O_DIRECT reads are aligned to this (any logical block size up to 4 KiB).
constexpr size_t direct_align = 4096;
/// Chunks at least this large are read with O_DIRECT by write_files.
constexpr uint32_t direct_read_min_bytes = 256u << 10;

/// read(): contiguous chunks of one pack are read by one op up to this size (a larger chunk is
/// one op of its own), and the ops are verified in groups of about `read_group_bytes` as they
/// arrive (small groups: less hashing left after the last byte arrived).
constexpr uint64_t read_extent_bytes = 2u << 20;
constexpr uint64_t read_group_bytes = 2u << 20;

/// Bytes per pipeline window, and how many windows rotate (read / hash / write).
constexpr size_t window_bytes = 16u << 20;
constexpr size_t window_count = 3;

/// Runs `f` when the scope ends (error paths of the pipelines: drain the ring before the groups
/// and buffers it points into are destroyed).
template <class F>
struct scope_exit {
  F f;
  ~scope_exit() { f(); }
};
template <class F>
scope_exit(F) -> scope_exit<F>;

/// Hashes a window's chunks on the calling thread and one helper thread together, so hashing
/// (the pipeline's largest CPU cost) does not serialise with the copies the calling thread does
/// when it submits reads and writes. The helper thread lives as long as the object (one pipeline
/// call). Items are taken from a shared counter: `start` returns at once, `finish` helps and
/// returns when every item is done.
class hash_pool {
public:
  hash_pool() = default;

  /// Starts the helper thread (once); without it everything is hashed by the caller.
  void enable_helper() {
    if (!helper_.joinable())
      helper_ = std::thread{[this] { run(); }};
  }
  ~hash_pool() {
    if (helper_.joinable()) {
      {
        std::lock_guard lock{mutex_};
        stop_ = true;
      }
      wake_.notify_one();
      helper_.join();
    }
  }
  hash_pool(const hash_pool&) = delete;
  hash_pool& operator=(const hash_pool&) = delete;

  /// `fn(i)` for i in [0, n), possibly on the helper thread. Call `finish` before the next start.
  void start(size_t n, std::function<void(size_t)> fn) {
    std::unique_lock lock{mutex_};
    finished_.wait(lock, [&] { return !busy_; }); // the helper may still hold the last job
    fn_ = std::move(fn);
    n_ = n;
    next_.store(0);
    done_ = 0;
    ++generation_;
    if (helper_.joinable())
      wake_.notify_one();
  }

  /// Works on the remaining items, then waits for the helper's.
  void finish() {
    size_t mine = work(n_);
    std::unique_lock lock{mutex_};
    done_ += mine;
    finished_.wait(lock, [&] { return done_ >= n_ && !busy_; });
  }

private:
  size_t work(size_t n) {
    size_t count = 0;
    for (size_t i = next_.fetch_add(1); i < n; i = next_.fetch_add(1)) {
      fn_(i);
      ++count;
    }
    return count;
  }

  void run() {
    uint64_t seen = 0;
    std::unique_lock lock{mutex_};
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_)
        return;
      seen = generation_;
      busy_ = true;
      size_t n = n_;
      lock.unlock();
      size_t mine = work(n);
      lock.lock();
      done_ += mine;
      busy_ = false;
      finished_.notify_all();
    }
  }

  std::thread helper_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable finished_;
  std::function<void(size_t)> fn_;
  size_t n_ = 0;
  std::atomic<size_t> next_{0};
  size_t done_ = 0;
  uint64_t generation_ = 0;
  bool busy_ = false; ///< the helper is inside work()
  bool stop_ = false;
};

/// Windows smaller than this hash on the calling thread only (a thread costs ~50 µs).
constexpr uint64_t parallel_hash_min_bytes = 2u << 20;

} // namespace

// -- the store ------------------------------------------------------------------------------------

struct chunk_store::impl {
  std::string dir;
  chunk_store_options options;
  rocksdb::DB* db = nullptr;

  /// Pack file descriptors by number (O_RDWR; never closed before the store). Readers take the
  /// lock shared; the writer takes it exclusively only to add a new pack.
  mutable std::shared_mutex packs_mutex;
  std::map<uint32_t, int> pack_fds;
  /// The same packs opened O_DIRECT for bulk reads (write_files), opened on first use; -1 when
  /// the file system refuses O_DIRECT (buffered reads are used then).
  mutable std::map<uint32_t, int> direct_fds;

  /// Serialises writers. Everything below it up to the counters is guarded by it.
  std::mutex write_mutex;
  std::unique_ptr<io_ring> write_ring;
  uint32_t open_pack = 0; ///< 0: no pack yet
  uint64_t open_size = 0; ///< bytes appended to the open pack (committed or being written)
  std::map<uint32_t, uint64_t> committed; ///< pack -> end covered by the index
  /// Direct appends (options.direct_appends): O_RDWR | O_DIRECT descriptors by pack (-1: the
  /// file system refused) and two staging buffers.
  std::map<uint32_t, int> append_fds;
  std::array<std::unique_ptr<slab>, 2> staging;

  /// Readers hold it shared from the index lookup to the end of their I/O; collect() holds it
  /// exclusively while it deletes a pack (so no read is left pointing into a deleted pack).
  mutable std::shared_mutex gc_mutex;

  /// Idle rings for readers (one ring per call, reused).
  mutable std::mutex rings_mutex;
  mutable std::vector<std::unique_ptr<io_ring>> idle_rings;

  std::atomic<uint64_t> chunk_count{0};
  std::atomic<uint64_t> byte_count{0};
  std::atomic<uint32_t> pack_count{0};
  std::atomic<uint64_t> puts{0};
  std::atomic<uint64_t> deduplicated{0};
  mutable std::atomic<uint64_t> reads{0};

  ~impl() {
    if (write_ring)
      write_ring->drain();
    write_ring.reset();
    idle_rings.clear();
    for (auto& [n, fd] : pack_fds)
      ::close(fd);
    for (auto& [n, fd] : direct_fds)
      if (fd >= 0)
        ::close(fd);
    for (auto& [n, fd] : append_fds)
      if (fd >= 0)
        ::close(fd);
    if (db != nullptr) {
      auto st = db->Close();
      if (!st.ok())
        log::warn("chunk_index_close_failed").kv("dir", dir).kv("status", st.ToString());
      delete db;
    }
  }

  std::string pack_path(uint32_t pack) const { return dir + "/" + pack_file_name(pack); }

  int fd_of(uint32_t pack) const {
    std::shared_lock lock{packs_mutex};
    auto i = pack_fds.find(pack);
    return i == pack_fds.end() ? -1 : i->second;
  }

  /// The O_DIRECT descriptor of a pack, or -1 (use fd_of then).
  int direct_fd_of(uint32_t pack) const {
    {
      std::shared_lock lock{packs_mutex};
      auto i = direct_fds.find(pack);
      if (i != direct_fds.end())
        return i->second;
    }
    std::unique_lock lock{packs_mutex};
    auto i = direct_fds.find(pack);
    if (i != direct_fds.end())
      return i->second;
    int fd = ::open(pack_path(pack).c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    direct_fds[pack] = fd;
    return fd;
  }

  // -- rings ---

  caf::expected<std::unique_ptr<io_ring>> acquire_ring() const {
    {
      std::lock_guard lock{rings_mutex};
      if (!idle_rings.empty()) {
        auto r = std::move(idle_rings.back());
        idle_rings.pop_back();
        return r;
      }
    }
    int e = 0;
    auto r = io_ring::make(options.queue_depth, &e);
    if (!r)
      return io_failure("creating an io_uring of depth " + std::to_string(options.queue_depth)
                          + " for the chunk store in " + dir,
                        e);
    return r;
  }

  void release_ring(std::unique_ptr<io_ring> r) const {
    if (!r || r->broken())
      return;
    r->drain();
    std::lock_guard lock{rings_mutex};
    if (idle_rings.size() < 4)
      idle_rings.push_back(std::move(r));
  }

  // -- index ---

  /// Looks up many ids at once; nullopt entries are absent.
  caf::expected<std::vector<std::optional<location>>>
  lookup(const std::vector<const chunk_id*>& ids) const {
    std::vector<std::optional<location>> out(ids.size());
    if (ids.empty())
      return out;
    std::vector<rocksdb::Slice> keys;
    keys.reserve(ids.size());
    for (auto* id : ids)
      keys.emplace_back(reinterpret_cast<const char*>(id->bytes.data()), 32);
    std::vector<std::string> values;
    auto statuses = db->MultiGet(rocksdb::ReadOptions{}, keys, &values);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (statuses[i].IsNotFound())
        continue;
      if (!statuses[i].ok())
        return db_failure("reading chunk " + ids[i]->hex() + " from the index in " + dir
                            + "/index",
                          statuses[i]);
      auto loc = decode_location(values[i]);
      if (!loc)
        return make_error(errc::storage_failure,
                          "the index entry of chunk " + ids[i]->hex() + " in " + dir
                            + "/index is malformed: the index is damaged");
      out[i] = *loc;
    }
    return out;
  }

  caf::expected<std::optional<location>> lookup_one(const chunk_id& id) const {
    std::string value;
    auto st = db->Get(rocksdb::ReadOptions{}, rocksdb::Slice{id.raw().data(), 32}, &value);
    if (st.IsNotFound())
      return std::optional<location>{};
    if (!st.ok())
      return db_failure("reading chunk " + id.hex() + " from the index in " + dir + "/index", st);
    auto loc = decode_location(value);
    if (!loc)
      return make_error(errc::storage_failure, "the index entry of chunk " + id.hex() + " in "
                                                 + dir + "/index is malformed");
    return std::optional<location>{*loc};
  }

  caf::error not_found(const chunk_id& id) const {
    return make_error(errc::not_found, "chunk " + id.hex() + " is not in the chunk store at " + dir
                                         + " (fetch it from a peer or re-import its layer)");
  }

  caf::error corrupt(const chunk_id& id, const location& loc, const chunk_id& actual) const {
    return make_error(errc::storage_failure,
                      "chunk " + id.hex() + " in " + pack_path(loc.pack) + " at offset "
                        + std::to_string(loc.offset) + " (" + std::to_string(loc.size)
                        + " bytes) is corrupt: its bytes hash to " + actual.hex()
                        + "; delete the images that use it and pull or build them again");
  }

  caf::error read_failure(const io_group& g, const std::vector<location>& locs) const {
    std::string where = "a pack in " + dir;
    if (g.failed != nullptr && g.failed->tag < locs.size()) {
      const auto& loc = locs[g.failed->tag];
      where = pack_path(loc.pack) + " at offset " + std::to_string(loc.offset);
    }
    if (g.short_read)
      return make_error(errc::storage_failure,
                        "reading " + where + ": the pack ends early (truncated by something other "
                                             "than the chunk store)");
    return io_failure("reading " + where, g.error);
  }

  // -- writing ---

  /// One writer's uncommitted work.
  struct txn {
    std::vector<std::pair<chunk_id, location>> added;
    std::unordered_map<chunk_id, location, chunk_id_hash> pending;
    std::map<uint32_t, uint64_t> touched; ///< pack -> end of this txn's appends
    bool relocation = false; ///< collect(): new copies of indexed chunks (counters unchanged)
  };

  /// Starts a new pack when `size` does not fit the open one. Needs write_mutex.
  caf::error ensure_room(uint64_t size) {
    if (open_pack != 0 && (open_size == 0 || open_size + size <= options.pack_size_limit))
      return {};
    uint32_t next = open_pack + 1;
    auto path = pack_path(next);
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
      return io_failure("creating pack " + path, errno);
    if (options.sync) {
      int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
      }
    }
    {
      std::unique_lock lock{packs_mutex};
      pack_fds[next] = fd;
    }
    committed[next] = 0;
    open_pack = next;
    open_size = 0;
    ++pack_count;
    return {};
  }

  /// Decides whether the chunk must be written: nullopt when it is stored already (or earlier in
  /// this txn), otherwise the location it is appended at. Needs write_mutex.
  caf::expected<std::optional<location>> stage(txn& t, const chunk_id& id, uint32_t size,
                                               const std::optional<location>* known) {
    ++puts;
    if (t.pending.count(id) != 0) {
      ++deduplicated;
      return std::optional<location>{};
    }
    std::optional<location> present;
    if (known != nullptr) {
      present = *known;
    } else {
      auto found = lookup_one(id);
      if (!found)
        return std::move(found.error());
      present = *found;
    }
    if (present) {
      ++deduplicated;
      return std::optional<location>{};
    }
    if (auto err = ensure_room(size))
      return err;
    location loc{open_pack, open_size, size};
    open_size += size;
    t.pending.emplace(id, loc);
    t.added.emplace_back(id, loc);
    auto& end = t.touched[loc.pack];
    end = std::max(end, loc.offset + size);
    return std::optional<location>{loc};
  }

  /// Forgets a failed txn's appends (truncates the packs back). Needs write_mutex.
  void rollback(txn& t) {
    for (auto& [pack, end] : t.touched) {
      uint64_t keep = committed[pack];
      int fd = fd_of(pack);
      if (fd >= 0 && ::ftruncate(fd, static_cast<off_t>(keep)) != 0)
        log::warn("chunk_pack_truncate_failed").kv("pack", pack_path(pack)).kv("error", errno_text(errno));
      if (pack == open_pack)
        open_size = keep;
    }
    t = txn{};
  }

  /// Makes a txn durable: packs fdatasync'd, then one (synced) WriteBatch. Needs write_mutex.
  caf::error commit(txn& t) {
    if (t.added.empty())
      return {};
    if (options.sync)
      for (auto& [pack, end] : t.touched)
        if (::fdatasync(fd_of(pack)) != 0) {
          auto err = io_failure("fdatasync of " + pack_path(pack), errno);
          rollback(t);
          return err;
        }
    rocksdb::WriteBatch batch;
    uint64_t chunks = chunk_count.load() + (t.relocation ? 0 : t.added.size());
    uint64_t bytes = byte_count.load();
    for (auto& [id, loc] : t.added) {
      batch.Put(rocksdb::Slice{id.raw().data(), 32}, encode_location(loc));
      if (!t.relocation)
        bytes += loc.size;
    }
    for (auto& [pack, end] : t.touched)
      batch.Put(pack_key(pack), [&] {
        std::string v;
        put_le<uint64_t>(v, end);
        return v;
      }());
    std::string stats;
    put_le<uint64_t>(stats, chunks);
    put_le<uint64_t>(stats, bytes);
    batch.Put(stats_key, stats);
    rocksdb::WriteOptions wo;
    wo.sync = options.sync;
    auto st = db->Write(wo, &batch);
    if (!st.ok()) {
      rollback(t);
      return db_failure("committing " + std::to_string(t.added.size())
                          + " chunks to the index in " + dir + "/index",
                        st);
    }
    for (auto& [pack, end] : t.touched)
      committed[pack] = std::max(committed[pack], end);
    chunk_count = chunks;
    byte_count = bytes;
    t = txn{};
    return {};
  }

  caf::error write_failure(const io_group& g) const {
    std::string where = "the open pack in " + dir;
    if (g.failed != nullptr) {
      for (auto& [n, fd] : pack_fds)
        if (fd == g.failed->fd)
          where = pack_path(n);
    }
    return io_failure("appending to " + where, g.error != 0 ? g.error : EIO);
  }

  /// The O_DIRECT append descriptor of a pack, or -1 (buffered appends then). Needs write_mutex.
  int append_fd_of(uint32_t pack) {
    auto i = append_fds.find(pack);
    if (i != append_fds.end())
      return i->second;
    int fd = ::open(pack_path(pack).c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    append_fds[pack] = fd;
    return fd;
  }

  /// Writes pack bytes [begin, end) — `pieces` (pack offset, bytes) in offset order, exactly
  /// covering it. The whole blocks inside the range go with O_DIRECT from the staging buffers
  /// (two windows in flight); the partial blocks at either edge through the page cache (so the
  /// block shared with the previous append is never rewritten, and the file ends exactly at
  /// `end`). Needs write_mutex.
  caf::error append_direct(uint32_t pack, int fd, uint64_t begin, uint64_t end,
                           const std::vector<std::pair<uint64_t, std::string_view>>& pieces) {
    constexpr size_t staging_bytes = 8u << 20;
    for (auto& s : staging)
      if (!s) {
        s = std::make_unique<slab>(staging_bytes);
        if (s->data == nullptr) {
          s.reset();
          return make_error(errc::resource_exhausted,
                            "no memory for the chunk store's staging buffer");
        }
      }
    // Copies pack bytes [from, to) out of `pieces` into `dst`; `cursor` only moves forward.
    size_t cursor = 0;
    auto gather = [&](uint64_t from, uint64_t to, char* dst) {
      while (cursor < pieces.size()
             && pieces[cursor].first + pieces[cursor].second.size() <= from)
        ++cursor;
      for (size_t k = cursor; k < pieces.size() && pieces[k].first < to; ++k) {
        uint64_t a = std::max(from, pieces[k].first);
        uint64_t b = std::min<uint64_t>(to, pieces[k].first + pieces[k].second.size());
        std::memcpy(dst + (a - from), pieces[k].second.data() + (a - pieces[k].first), b - a);
      }
    };
    const uint64_t head_end = std::min(end, (begin + direct_align - 1) & ~uint64_t{direct_align - 1});
    const uint64_t tail_begin = std::max(head_end, end & ~uint64_t{direct_align - 1});
    auto& ring = *write_ring;
    std::array<io_group, 2> groups;
    io_group edges;
    std::string head(head_end - begin, '\0'), tail(end - tail_begin, '\0');
    scope_exit guard{[&] { ring.drain(); }};
    gather(begin, head_end, head.data());
    auto buffered = [&](std::string& bytes, uint64_t at) {
      if (bytes.empty())
        return;
      io_op op;
      op.fd = fd_of(pack);
      op.buf = bytes.data();
      op.len = static_cast<uint32_t>(bytes.size());
      op.offset = at;
      op.kind = io_kind::write;
      ring.add(edges, op);
    };
    buffered(head, begin);
    size_t slot = 0;
    for (uint64_t w = head_end; w < tail_begin; w += staging_bytes, slot ^= 1) {
      auto& g = groups[slot];
      ring.wait(g);
      if (!g.ok())
        return write_failure(g);
      g.clear();
      const uint64_t w_end = std::min<uint64_t>(w + staging_bytes, tail_begin);
      gather(w, w_end, staging[slot]->data);
      io_op op;
      op.fd = fd;
      op.buf = staging[slot]->data;
      op.len = static_cast<uint32_t>(w_end - w);
      op.offset = w;
      op.kind = io_kind::write;
      ring.add(g, op);
      ring.kick();
    }
    gather(tail_begin, end, tail.data());
    buffered(tail, tail_begin);
    ring.kick();
    for (auto* g : {&groups[0], &groups[1], &edges}) {
      ring.wait(*g);
      if (!g->ok())
        return write_failure(*g);
    }
    return {};
  }

  /// Stores already hashed chunks. Needs write_mutex. `relocate` (collect()): the chunks are
  /// indexed already and are appended anyway; their index entries move to the new copies.
  caf::error store_hashed(const std::vector<std::pair<chunk_id, std::string_view>>& chunks,
                          bool relocate = false) {
    txn t;
    t.relocation = relocate;
    const std::optional<location> absent;
    const std::optional<location>* known = relocate ? &absent : nullptr;
    if (options.direct_appends) {
      // Stage everything, then write each pack's new range in one pass.
      const uint64_t puts_before = puts.load(), deduplicated_before = deduplicated.load();
      std::vector<std::pair<uint32_t, std::pair<uint64_t, std::string_view>>> appends;
      for (auto& [id, data] : chunks) {
        auto loc = stage(t, id, static_cast<uint32_t>(data.size()), known);
        if (!loc) {
          rollback(t);
          return std::move(loc.error());
        }
        if (*loc && !data.empty())
          appends.push_back({(*loc)->pack, {(*loc)->offset, data}});
      }
      bool refused = false;
      for (size_t i = 0; i < appends.size() && !refused;) {
        uint32_t pack = appends[i].first;
        size_t j = i;
        std::vector<std::pair<uint64_t, std::string_view>> pieces;
        while (j < appends.size() && appends[j].first == pack)
          pieces.push_back(appends[j++].second);
        int fd = append_fd_of(pack);
        if (fd < 0) {
          refused = i == 0; // no O_DIRECT here: the buffered path below does the whole batch
          if (!refused) {
            rollback(t);
            return io_failure("opening " + pack_path(pack) + " for direct appends", EINVAL);
          }
          break;
        }
        uint64_t begin = pieces.front().first;
        uint64_t end = pieces.back().first + pieces.back().second.size();
        if (auto err = append_direct(pack, fd, begin, end, pieces)) {
          rollback(t);
          return err;
        }
        i = j;
      }
      if (!refused)
        return commit(t);
      // The file system refuses O_DIRECT: appends go through the page cache from now on.
      rollback(t);
      t.relocation = relocate;
      puts = puts_before;
      deduplicated = deduplicated_before;
      options.direct_appends = false;
      log::info("chunk_store_direct_appends_refused").kv("dir", dir);
    }
    io_group g;
    auto& ring = *write_ring;
    scope_exit guard{[&] { ring.drain(); }};
    size_t queued_bytes = 0;
    for (auto& [id, data] : chunks) {
      auto loc = stage(t, id, static_cast<uint32_t>(data.size()), known);
      if (!loc) {
        ring.drain();
        rollback(t);
        return std::move(loc.error());
      }
      if (!*loc || data.empty())
        continue;
      io_op op;
      op.fd = fd_of((*loc)->pack);
      op.buf = const_cast<char*>(data.data()); // io_uring writes only read from it
      op.len = static_cast<uint32_t>(data.size());
      op.offset = (*loc)->offset;
      op.kind = io_kind::write;
      ring.add(g, op);
      queued_bytes += data.size();
      if (queued_bytes >= window_bytes) {
        ring.kick();
        queued_bytes = 0;
      }
    }
    ring.wait(g);
    if (!g.ok()) {
      auto err = write_failure(g);
      ring.drain();
      rollback(t);
      return err;
    }
    return commit(t);
  }

  caf::expected<std::vector<std::vector<std::pair<chunk_id, uint32_t>>>>
  put_files(const std::vector<std::string>& paths, bool store, io_ring& ring);

  caf::error write_files(const std::vector<std::pair<int, std::vector<chunk_id>>>& files,
                         io_ring& ring) const;

  /// One read() batch in flight: its extents (runs of adjacent chunks, one op each), the op
  /// groups they are waited for in, and where each chunk lands in the buffer. Must not move
  /// while its ops are in the ring.
  struct read_extent {
    int fd;
    bool direct;
    uint64_t first, end;   ///< the pack bytes wanted
    uint64_t read_first;   ///< where the op starts (aligned down for O_DIRECT)
    size_t buf_offset;     ///< where read_first lands in the buffer
    size_t chunk_begin, chunk_end;
  };
  struct read_plan {
    const chunk_id* ids = nullptr;
    const location* locs = nullptr;
    size_t n = 0;
    chunk_buffer* out = nullptr;
    char* buf = nullptr;
    uint64_t bytes = 0;
    std::vector<read_extent> extents;
    std::vector<const read_extent*> owner; ///< by chunk
    std::vector<std::pair<size_t, size_t>> group_ranges; ///< [first, last) into extents
    std::vector<io_group> groups;
    std::string_view view(size_t i) const;
  };
  caf::expected<std::vector<location>> locate(const std::vector<chunk_id>& ids) const;
  /// Plans the reads of ids[0, n) into `out` and queues them all.
  caf::error start_read(const chunk_id* ids, const location* locs, size_t n, chunk_buffer& out,
                        read_plan& p, io_ring& ring) const;
  /// Waits for a started read group by group, verifying each as it arrives; fills `out`.
  caf::error finish_read(read_plan& p, bool verify, hash_pool& hasher, io_ring& ring) const;
  caf::error read_into(const std::vector<chunk_id>& ids, chunk_buffer& out, bool verify,
                       io_ring& ring) const;
  using batch_fn = std::function<caf::error(size_t, const chunk_buffer&)>;
  caf::error read_batches(const std::vector<chunk_id>& ids, uint64_t batch_bytes,
                          const batch_fn& fn, bool verify, io_ring& ring) const;
};

chunk_store::chunk_store(std::unique_ptr<impl> p) : impl_(std::move(p)) {
  // nop
}

chunk_store::~chunk_store() = default;

const std::string& chunk_store::dir() const noexcept {
  return impl_->dir;
}

caf::expected<std::unique_ptr<chunk_store>> chunk_store::open(const std::string& dir,
                                                              chunk_store_options options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return make_error(errc::storage_failure,
                      "creating the chunk store directory " + dir + ": " + ec.message());
  auto self = std::make_unique<impl>();
  self->dir = dir;
  self->options = options;
  if (self->options.queue_depth == 0)
    self->options.queue_depth = 1;

  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  auto st = rocksdb::DB::Open(db_options, dir + "/index", &self->db);
  if (!st.ok()) {
    self->db = nullptr;
    return db_failure("opening the chunk index " + dir + "/index", st);
  }

  // Counters and committed pack ends.
  std::string value;
  st = self->db->Get(rocksdb::ReadOptions{}, stats_key, &value);
  if (st.ok() && value.size() == 16) {
    self->chunk_count = get_le<uint64_t>(value.data());
    self->byte_count = get_le<uint64_t>(value.data() + 8);
  } else if (!st.ok() && !st.IsNotFound()) {
    return db_failure("reading the chunk index counters in " + dir + "/index", st);
  }
  {
    std::unique_ptr<rocksdb::Iterator> it{self->db->NewIterator(rocksdb::ReadOptions{})};
    for (it->Seek(rocksdb::Slice{pack_key_prefix.data(), pack_key_prefix.size()});
         it->Valid() && it->key().starts_with(rocksdb::Slice{pack_key_prefix.data(),
                                                             pack_key_prefix.size()});
         it->Next()) {
      auto key = it->key().ToStringView().substr(pack_key_prefix.size());
      auto n = parse_pack_file_name("pack-" + std::string{key} + ".dat");
      if (n && it->value().size() == 8)
        self->committed[*n] = get_le<uint64_t>(it->value().data());
    }
    if (!it->status().ok())
      return db_failure("reading the pack table of " + dir + "/index", it->status());
  }

  // Packs: open them, cut unindexed tails (a crash between the append and the index commit).
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr)
    return io_failure("listing the chunk store directory " + dir, errno);
  std::vector<uint32_t> found;
  while (auto* ent = ::readdir(d))
    if (auto n = parse_pack_file_name(ent->d_name))
      found.push_back(*n);
  ::closedir(d);
  std::sort(found.begin(), found.end());
  // A pack the index does not know that is not the last one was being deleted by collect()
  // (its index entry goes first): finish that.
  for (size_t i = 0; i + 1 < found.size();) {
    if (self->committed.count(found[i]) != 0) {
      ++i;
      continue;
    }
    auto path = self->pack_path(found[i]);
    if (::unlink(path.c_str()) != 0)
      return io_failure("removing pack " + path + ", which the index no longer uses", errno);
    log::info("chunk_pack_removed_at_open").kv("pack", path);
    found.erase(found.begin() + static_cast<std::ptrdiff_t>(i));
  }
  for (uint32_t n : found) {
    auto path = self->pack_path(n);
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0)
      return io_failure("opening pack " + path, errno);
    self->pack_fds[n] = fd;
    struct stat sb{};
    if (::fstat(fd, &sb) != 0)
      return io_failure("stat of pack " + path, errno);
    uint64_t keep = self->committed[n]; // 0 when the index never saw it
    uint64_t size = static_cast<uint64_t>(sb.st_size);
    if (size > keep) {
      if (::ftruncate(fd, static_cast<off_t>(keep)) != 0)
        return io_failure("truncating the unindexed tail of pack " + path, errno);
      ::fdatasync(fd);
      log::info("chunk_pack_tail_truncated")
        .kv("pack", path)
        .kv("from", std::to_string(size))
        .kv("to", std::to_string(keep));
    } else if (size < keep) {
      log::warn("chunk_pack_shorter_than_index")
        .kv("pack", path)
        .kv("size", std::to_string(size))
        .kv("indexed", std::to_string(keep));
    }
  }
  self->pack_count = static_cast<uint32_t>(found.size());
  if (!found.empty()) {
    self->open_pack = found.back();
    self->open_size = self->committed[found.back()];
  }

  int e = 0;
  self->write_ring = io_ring::make(self->options.queue_depth, &e);
  if (!self->write_ring)
    return io_failure("creating an io_uring of depth " + std::to_string(self->options.queue_depth)
                        + " for the chunk store in " + dir,
                      e);
  return std::unique_ptr<chunk_store>{new chunk_store(std::move(self))};
}

bool chunk_store::contains(const chunk_id& id) const {
  auto found = impl_->lookup_one(id);
  return found && found->has_value();
}

std::vector<chunk_id> chunk_store::missing(const std::vector<chunk_id>& ids) const {
  std::vector<chunk_id> out;
  std::unordered_set<chunk_id, chunk_id_hash> seen;
  std::vector<const chunk_id*> unique;
  for (auto& id : ids)
    if (seen.insert(id).second)
      unique.push_back(&id);
  auto found = impl_->lookup(unique);
  for (size_t i = 0; i < unique.size(); ++i)
    if (!found || !(*found)[i])
      out.push_back(*unique[i]);
  return out;
}

std::optional<uint32_t> chunk_store::size_of(const chunk_id& id) const {
  auto found = impl_->lookup_one(id);
  if (!found || !*found)
    return std::nullopt;
  return (*found)->size;
}

caf::expected<std::vector<chunk_id>> chunk_store::put(const std::vector<std::string_view>& chunks) {
  std::vector<std::pair<chunk_id, std::string_view>> hashed;
  hashed.reserve(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (chunks[i].size() > max_chunk_size)
      return make_error(errc::invalid_argument,
                        "chunk " + std::to_string(i) + " of the batch has "
                          + std::to_string(chunks[i].size()) + " bytes, more than the limit of "
                          + std::to_string(max_chunk_size) + ": cut it into smaller chunks");
  }
  for (auto& c : chunks)
    hashed.emplace_back(hash_chunk(c), c);
  {
    std::lock_guard lock{impl_->write_mutex};
    if (auto err = impl_->store_hashed(hashed))
      return err;
  }
  std::vector<chunk_id> ids;
  ids.reserve(hashed.size());
  for (auto& h : hashed)
    ids.push_back(h.first);
  return ids;
}

caf::error chunk_store::put_verified(const std::vector<std::pair<chunk_id, std::string_view>>& chunks) {
  uint64_t total = 0;
  for (auto& [id, data] : chunks) {
    if (data.size() > max_chunk_size)
      return make_error(errc::invalid_argument,
                        "chunk " + id.hex() + " has " + std::to_string(data.size())
                          + " bytes, more than the limit of " + std::to_string(max_chunk_size));
    total += data.size();
  }
  // Verified before the write lock, on this thread and a helper for batches worth a thread.
  std::vector<chunk_id> actual(chunks.size());
  {
    hash_pool hasher;
    if (total >= parallel_hash_min_bytes && chunks.size() > 1)
      hasher.enable_helper();
    hasher.start(chunks.size(), [&](size_t k) { actual[k] = hash_chunk(chunks[k].second); });
    hasher.finish();
  }
  for (size_t k = 0; k < chunks.size(); ++k)
    if (actual[k] != chunks[k].first)
      return make_error(errc::storage_failure,
                        "chunk " + chunks[k].first.hex()
                          + " received from a peer is corrupt: its bytes hash to "
                          + actual[k].hex() + "; nothing of the batch was stored");
  std::lock_guard lock{impl_->write_mutex};
  return impl_->store_hashed(chunks);
}

caf::error chunk_store::read(const std::vector<chunk_id>& ids, chunk_buffer& out,
                             read_options options) const {
  std::shared_lock gc{impl_->gc_mutex};
  auto ring = impl_->acquire_ring();
  if (!ring)
    return std::move(ring.error());
  auto err = impl_->read_into(ids, out, options.verify, **ring);
  impl_->release_ring(std::move(*ring));
  return err;
}

caf::error chunk_store::read_batches(const std::vector<chunk_id>& ids, uint64_t batch_bytes,
                                     const batch_fn& fn, read_options options) const {
  std::shared_lock gc{impl_->gc_mutex};
  auto ring = impl_->acquire_ring();
  if (!ring)
    return std::move(ring.error());
  auto err = impl_->read_batches(ids, batch_bytes, fn, options.verify, **ring);
  impl_->release_ring(std::move(*ring));
  return err;
}

caf::expected<std::vector<std::string>> chunk_store::get(const std::vector<chunk_id>& ids) const {
  chunk_buffer buf;
  if (auto err = read(ids, buf))
    return err;
  std::vector<std::string> out;
  out.reserve(buf.size());
  for (auto c : buf.chunks())
    out.emplace_back(c);
  return out;
}

caf::expected<std::string> chunk_store::get(const chunk_id& id) const {
  auto got = get(std::vector<chunk_id>{id});
  if (!got)
    return std::move(got.error());
  return std::move(got->front());
}

// -- files in, files out --------------------------------------------------------------------------

caf::expected<std::vector<std::vector<std::pair<chunk_id, uint32_t>>>>
chunk_store::impl::put_files(const std::vector<std::string>& paths, bool store, io_ring& ring) {
  using result_t = std::vector<std::vector<std::pair<chunk_id, uint32_t>>>;
  result_t result(paths.size());

  struct source {
    int fd = -1;
    uint64_t size = 0;
    uint64_t next = 0; ///< next offset to schedule
    bool opened = false;
  };
  std::vector<source> files(paths.size());
  struct piece {
    size_t file;
    uint64_t offset;
    uint32_t len;
    char* buf;
  };
  struct window {
    std::vector<piece> pieces;
    io_group reads;
    io_group writes;
    std::map<uint32_t, std::pair<uint64_t, uint64_t>> written; ///< pack -> [begin, end)
  };
  std::array<window, window_count> windows;
  std::vector<std::unique_ptr<slab>> slabs;
  for (size_t i = 0; i < window_count; ++i) {
    slabs.push_back(std::make_unique<slab>(window_bytes));
    if (slabs.back()->data == nullptr)
      return make_error(errc::resource_exhausted, "no memory for the chunk store's read buffers");
  }
  io_group background; // sync_file_range: start writeback early, overlapping the hashing
  txn t;
  hash_pool hasher; // declared after the buffers it reads: its helper stops first
  size_t next_file = 0;
  const size_t max_pieces = std::max<size_t>(1, options.queue_depth / 2);

  auto close_all = [&] {
    ring.drain();
    for (auto& f : files)
      if (f.fd >= 0) {
        ::close(f.fd);
        f.fd = -1;
      }
  };
  scope_exit guard{close_all};

  auto fail = [&](caf::error err) -> caf::error {
    ring.drain();
    if (store)
      rollback(t);
    return err;
  };

  // Queues a buffered append of window bytes (written back early by sync_file_range).
  auto write_buffered = [&](window& w, uint32_t pack, uint64_t offset, char* buf, uint32_t len) {
    io_op op;
    op.fd = fd_of(pack);
    op.buf = buf;
    op.len = len;
    op.offset = offset;
    op.kind = io_kind::write;
    ring.add(w.writes, op);
    auto [it, fresh] = w.written.try_emplace(pack, offset, offset + len);
    if (!fresh) {
      it->second.first = std::min(it->second.first, offset);
      it->second.second = std::max(it->second.second, offset + len);
    }
  };

  // Schedules the next window's reads into `w`.
  auto fill = [&](window& w, char* buf) -> caf::error {
    w.pieces.clear();
    w.reads.clear();
    w.writes.clear();
    w.written.clear();
    size_t used = 0;
    while (next_file < files.size() && w.pieces.size() < max_pieces) {
      auto& f = files[next_file];
      if (!f.opened) {
        f.opened = true;
        const auto& path = paths[next_file];
        f.fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (f.fd < 0) {
          int e = errno;
          if (e == ENOENT)
            return make_error(errc::not_found, "file " + path + " vanished before it was stored");
          return io_failure("opening " + path + " to store it", e);
        }
        struct stat sb{};
        if (::fstat(f.fd, &sb) != 0)
          return io_failure("stat of " + path, errno);
        if (!S_ISREG(sb.st_mode))
          return make_error(errc::invalid_argument, path + " is not a regular file");
        f.size = static_cast<uint64_t>(sb.st_size);
        result[next_file].reserve((f.size + file_chunk_size - 1) / file_chunk_size);
      }
      if (f.next >= f.size) {
        if (f.fd >= 0 && f.size == 0) {
          ::close(f.fd);
          f.fd = -1;
        }
        ++next_file;
        continue;
      }
      auto len = static_cast<uint32_t>(std::min<uint64_t>(file_chunk_size, f.size - f.next));
      if (used + len > window_bytes)
        break;
      w.pieces.push_back({next_file, f.next, len, buf + used});
      io_op op;
      op.fd = f.fd;
      op.buf = buf + used;
      op.len = len;
      op.offset = f.next;
      op.kind = io_kind::read;
      op.tag = w.pieces.size() - 1;
      ring.add(w.reads, op);
      used += len;
      f.next += len;
    }
    ring.kick();
    return {};
  };

  if (auto err = fill(windows[0], slabs[0]->data))
    return fail(std::move(err));
  for (size_t i = 0;; ++i) {
    auto& w = windows[i % window_count];
    if (w.pieces.empty())
      break;
    ring.wait(w.reads);
    if (!w.reads.ok()) {
      const auto& p = w.pieces[w.reads.failed != nullptr ? w.reads.failed->tag : 0];
      if (w.reads.short_read)
        return fail(make_error(errc::storage_failure,
                               "file " + paths[p.file] + " shrank while it was being stored"));
      return fail(io_failure("reading " + paths[p.file], w.reads.error));
    }
    for (auto& p : w.pieces) {
      auto& f = files[p.file];
      if (p.offset + p.len == f.size && f.fd >= 0) {
        ::close(f.fd);
        f.fd = -1;
      }
    }
    // Hash this window (with the helper thread) while the next one's reads are submitted and
    // the previous one's writes are in flight.
    std::vector<chunk_id> ids(w.pieces.size());
    uint64_t window_size = 0;
    for (auto& p : w.pieces)
      window_size += p.len;
    if (window_size >= parallel_hash_min_bytes)
      hasher.enable_helper();
    hasher.start(w.pieces.size(),
                 [&](size_t k) { ids[k] = sha256(w.pieces[k].buf, w.pieces[k].len); });
    // The window after this one reuses the buffers of the one before it: its writes must be done.
    auto& next = windows[(i + 1) % window_count];
    caf::error step_error;
    if (!next.pieces.empty()) {
      ring.wait(next.writes);
      if (!next.writes.ok())
        step_error = write_failure(next.writes);
      for (auto& [pack, range] : next.written) {
        io_op op;
        op.fd = fd_of(pack);
        op.offset = range.first;
        op.len = static_cast<uint32_t>(
          std::min<uint64_t>(range.second - range.first, UINT32_MAX));
        op.kind = io_kind::sync_range;
        if (!step_error && options.sync)
          ring.add(background, op);
      }
    }
    if (!step_error)
      step_error = fill(next, slabs[(i + 1) % window_count]->data);
    hasher.finish();
    if (step_error)
      return fail(std::move(step_error));
    for (size_t k = 0; k < w.pieces.size(); ++k)
      result[w.pieces[k].file].emplace_back(ids[k], w.pieces[k].len);
    if (!store)
      continue;
    std::vector<const chunk_id*> ptrs;
    ptrs.reserve(ids.size());
    for (auto& id : ids)
      ptrs.push_back(&id);
    auto present = lookup(ptrs);
    if (!present)
      return fail(std::move(present.error()));
    // Direct appends: this window's new chunks are contiguous in the open pack (a full pack
    // splits them in two); each run goes out through append_direct, which waits for it.
    std::vector<std::pair<uint32_t, std::vector<std::pair<uint64_t, std::string_view>>>> runs;
    for (size_t k = 0; k < w.pieces.size(); ++k) {
      auto loc = stage(t, ids[k], w.pieces[k].len, &(*present)[k]);
      if (!loc)
        return fail(std::move(loc.error()));
      if (!*loc)
        continue;
      if (options.direct_appends) {
        if (runs.empty() || runs.back().first != (*loc)->pack)
          runs.push_back({(*loc)->pack, {}});
        runs.back().second.emplace_back((*loc)->offset,
                                        std::string_view{w.pieces[k].buf, w.pieces[k].len});
      } else {
        write_buffered(w, (*loc)->pack, (*loc)->offset, w.pieces[k].buf, w.pieces[k].len);
      }
    }
    for (auto& [pack, pieces] : runs) {
      int fd = append_fd_of(pack);
      if (fd < 0) {
        // The file system refuses O_DIRECT: appends go through the page cache from now on.
        options.direct_appends = false;
        log::info("chunk_store_direct_appends_refused").kv("dir", dir);
        for (auto& [offset, bytes] : pieces)
          write_buffered(w, pack, offset, const_cast<char*>(bytes.data()),
                         static_cast<uint32_t>(bytes.size()));
        continue;
      }
      uint64_t begin = pieces.front().first;
      uint64_t end = pieces.back().first + pieces.back().second.size();
      if (auto err = append_direct(pack, fd, begin, end, pieces))
        return fail(std::move(err));
    }
    ring.kick();
  }
  for (auto& w : windows) {
    ring.wait(w.writes);
    if (!w.writes.ok())
      return fail(write_failure(w.writes));
  }
  ring.wait(background); // sync_file_range errors only matter through fdatasync below
  if (store)
    if (auto err = commit(t))
      return err;
  return result;
}

caf::error chunk_store::impl::write_files(
  const std::vector<std::pair<int, std::vector<chunk_id>>>& files, io_ring& ring) const {
  // Every chunk of every file, with where it goes.
  struct piece {
    const chunk_id* id;
    location loc;
    int fd;
    uint64_t dest_offset;
    int pack_fd;
    char* buf = nullptr; ///< the chunk's bytes inside the window's buffer
    int direct_fd = -1;  ///< O_DIRECT descriptor of the pack, -1: buffered
  };
  std::vector<piece> pieces;
  std::vector<const chunk_id*> ptrs;
  for (auto& [fd, chunks] : files)
    for (auto& id : chunks) {
      ptrs.push_back(&id);
      pieces.push_back({&id, {}, fd, 0, -1});
    }
  auto found = lookup(ptrs);
  if (!found)
    return std::move(found.error());
  {
    size_t k = 0;
    for (auto& [fd, chunks] : files) {
      uint64_t off = 0;
      for (size_t c = 0; c < chunks.size(); ++c, ++k) {
        if (!(*found)[k])
          return not_found(chunks[c]);
        pieces[k].loc = *(*found)[k];
        pieces[k].dest_offset = off;
        pieces[k].pack_fd = fd_of(pieces[k].loc.pack);
        // Bulk reads bypass the page cache (no copy, no cache pollution) when the chunk is big
        // enough for that to pay; small chunks read through the cache.
        if (options.direct_reads && pieces[k].loc.size >= direct_read_min_bytes)
          pieces[k].direct_fd = direct_fd_of(pieces[k].loc.pack);
        if (pieces[k].pack_fd < 0)
          return make_error(errc::storage_failure, "chunk " + chunks[c].hex() + " is indexed in "
                                                     + pack_path(pieces[k].loc.pack)
                                                     + ", which does not exist");
        off += pieces[k].loc.size;
      }
    }
  }

  struct window {
    size_t begin = 0, end = 0; ///< pieces[begin, end)
    io_group reads;
    io_group writes;
    std::vector<location> locs; ///< for error messages, by op tag
  };
  std::array<window, window_count> windows;
  std::vector<std::unique_ptr<slab>> slabs;
  // A chunk larger than a window (layer manifests) gets a window of its own size.
  size_t largest = window_bytes;
  for (auto& p : pieces)
    largest = std::max<size_t>(largest, p.loc.size);
  const size_t max_pieces = std::max<size_t>(1, options.queue_depth / 2);
  // Room for rounding every piece out to direct_align on both sides.
  const size_t slab_size = largest + (max_pieces + 1) * 2 * direct_align;
  for (size_t i = 0; i < window_count; ++i) {
    slabs.push_back(std::make_unique<slab>(slab_size));
    if (slabs.back()->data == nullptr)
      return make_error(errc::resource_exhausted, "no memory for the chunk store's read buffers");
  }
  scope_exit guard{[&] { ring.drain(); }};
  hash_pool hasher; // declared after the buffers it reads: its helper stops first
  size_t next_piece = 0;
  auto fill = [&](window& w, char* buf) {
    w.reads.clear();
    w.writes.clear();
    w.locs.clear();
    w.begin = next_piece;
    size_t used = 0;
    while (next_piece < pieces.size() && next_piece - w.begin < max_pieces) {
      auto& p = pieces[next_piece];
      if (used > 0 && used + p.loc.size > largest)
        break;
      io_op op;
      op.kind = io_kind::read;
      op.tag = w.locs.size();
      if (p.direct_fd >= 0) {
        uint64_t first = p.loc.offset & ~uint64_t{direct_align - 1};
        uint64_t last = (p.loc.offset + p.loc.size + direct_align - 1) & ~uint64_t{direct_align - 1};
        used = (used + direct_align - 1) & ~(direct_align - 1);
        op.fd = p.direct_fd;
        op.buf = buf + used;
        op.offset = first;
        op.len = static_cast<uint32_t>(last - first);
        op.need = static_cast<uint32_t>(p.loc.offset + p.loc.size - first);
        p.buf = op.buf + (p.loc.offset - first);
        used += op.len;
      } else {
        p.buf = buf + used;
        op.fd = p.pack_fd;
        op.buf = p.buf;
        op.len = p.loc.size;
        op.offset = p.loc.offset;
        used += p.loc.size;
      }
      w.locs.push_back(p.loc);
      ring.add(w.reads, op);
      ++next_piece;
    }
    w.end = next_piece;
    ring.kick();
  };

  fill(windows[0], slabs[0]->data);
  uint64_t chunks_read = 0;
  for (size_t i = 0;; ++i) {
    auto& w = windows[i % window_count];
    if (w.begin == w.end)
      break;
    ring.wait(w.reads);
    if (!w.reads.ok())
      return read_failure(w.reads, w.locs);
    // Verify this window (with the helper thread) while the next one's reads are submitted.
    std::vector<chunk_id> actual(w.end - w.begin);
    uint64_t window_size = 0;
    for (size_t k = w.begin; k < w.end; ++k)
      window_size += pieces[k].loc.size;
    if (window_size >= parallel_hash_min_bytes)
      hasher.enable_helper();
    hasher.start(actual.size(), [&](size_t k) {
      auto& p = pieces[w.begin + k];
      actual[k] = sha256(p.buf, p.loc.size);
    });
    auto& next = windows[(i + 1) % window_count];
    int write_error = 0;
    if (next.begin != next.end) {
      ring.wait(next.writes);
      if (!next.writes.ok())
        write_error = next.writes.error != 0 ? next.writes.error : EIO;
    }
    if (write_error == 0)
      fill(next, slabs[(i + 1) % window_count]->data);
    hasher.finish();
    if (write_error != 0)
      return io_failure("writing a file being materialised", write_error);
    for (size_t k = w.begin; k < w.end; ++k) {
      auto& p = pieces[k];
      const auto& actual_id = actual[k - w.begin];      if (actual_id != *p.id)
        return corrupt(*p.id, p.loc, actual_id);
      io_op op;
      op.fd = p.fd;
      op.buf = p.buf;
      op.len = p.loc.size;
      op.offset = p.dest_offset;
      op.kind = io_kind::write;
      ring.add(w.writes, op);
    }
    chunks_read += w.end - w.begin;
    ring.kick();
  }
  for (auto& w : windows) {
    ring.wait(w.writes);
    if (!w.writes.ok())
      return io_failure("writing a file being materialised", w.writes.error);
  }
  reads += chunks_read;
  return {};
}

caf::error chunk_store::impl::start_read(const chunk_id* ids, const location* locs, size_t n,
                                         chunk_buffer& out, read_plan& p, io_ring& ring) const {
  p = read_plan{};
  p.ids = ids;
  p.locs = locs;
  p.n = n;
  p.out = &out;
  out.prepare(0);
  // Extents: runs of chunks that follow each other in one pack, read by one op each.
  for (size_t i = 0; i < n; ++i) {
    const auto& loc = locs[i];
    int direct_fd = options.direct_reads ? direct_fd_of(loc.pack) : -1;
    int fd = direct_fd >= 0 ? direct_fd : fd_of(loc.pack);
    if (fd < 0)
      return make_error(errc::storage_failure, "chunk " + ids[i].hex() + " is indexed in "
                                                 + pack_path(loc.pack) + ", which does not exist");
    if (!p.extents.empty()) {
      auto& e = p.extents.back();
      if (e.fd == fd && e.end == loc.offset && e.end - e.first + loc.size <= read_extent_bytes) {
        e.end += loc.size;
        e.chunk_end = i + 1;
        continue;
      }
    }
    p.extents.push_back({fd, direct_fd >= 0, loc.offset, loc.offset + loc.size, 0, 0, i, i + 1});
  }
  size_t used = 0;
  for (auto& e : p.extents) {
    e.read_first = e.direct ? e.first & ~uint64_t{direct_align - 1} : e.first;
    uint64_t read_end = e.direct ? (e.end + direct_align - 1) & ~uint64_t{direct_align - 1} : e.end;
    e.buf_offset = used;
    used += (read_end - e.read_first + direct_align - 1) & ~(direct_align - 1);
  }
  p.bytes = used;
  p.buf = out.prepare(used);
  if (p.buf == nullptr)
    return make_error(errc::resource_exhausted, "no memory for " + std::to_string(used)
                                                  + " bytes of chunks read from " + dir);
  p.owner.resize(n);
  for (auto& e : p.extents)
    for (size_t i = e.chunk_begin; i < e.chunk_end; ++i)
      p.owner[i] = &e;
  // Groups of extents, waited for (and verified) in order; every op is queued at once.
  {
    uint64_t bytes = 0;
    size_t first = 0;
    for (size_t k = 0; k < p.extents.size(); ++k) {
      bytes += p.extents[k].end - p.extents[k].first;
      if (bytes >= read_group_bytes || k + 1 == p.extents.size()) {
        p.group_ranges.emplace_back(first, k + 1);
        first = k + 1;
        bytes = 0;
      }
    }
  }
  p.groups = std::vector<io_group>(p.group_ranges.size()); // never resized: ops point into it
  for (size_t g = 0; g < p.groups.size(); ++g)
    for (size_t k = p.group_ranges[g].first; k < p.group_ranges[g].second; ++k) {
      const auto& e = p.extents[k];
      if (e.end == e.first)
        continue; // empty chunks only
      io_op op;
      op.fd = e.fd;
      op.buf = p.buf + e.buf_offset;
      op.offset = e.read_first;
      op.kind = io_kind::read;
      op.tag = e.chunk_begin;
      if (e.direct) {
        uint64_t read_end = (e.end + direct_align - 1) & ~uint64_t{direct_align - 1};
        op.len = static_cast<uint32_t>(read_end - e.read_first);
        op.need = static_cast<uint32_t>(e.end - e.read_first);
      } else {
        op.len = static_cast<uint32_t>(e.end - e.first);
      }
      ring.add(p.groups[g], op);
    }
  ring.kick();
  return {};
}

std::string_view chunk_store::impl::read_plan::view(size_t i) const {
  const auto& e = *owner[i];
  return {buf + e.buf_offset + (locs[i].offset - e.read_first), locs[i].size};
}

caf::error chunk_store::impl::finish_read(read_plan& p, bool verify, hash_pool& hasher,
                                          io_ring& ring) const {
  std::vector<chunk_id> actual(verify ? p.n : 0);
  for (size_t g = 0; g < p.groups.size(); ++g) {
    ring.wait(p.groups[g]);
    if (!p.groups[g].ok()) {
      std::vector<location> locs(p.locs, p.locs + p.n);
      return read_failure(p.groups[g], locs);
    }
    if (!verify)
      continue;
    size_t begin = p.extents[p.group_ranges[g].first].chunk_begin;
    size_t end = p.extents[p.group_ranges[g].second - 1].chunk_end;
    hasher.start(end - begin, [&, begin](size_t k) {
      auto c = p.view(begin + k);
      actual[begin + k] = sha256(c.data(), c.size());
    });
    hasher.finish();
    for (size_t i = begin; i < end; ++i)
      if (actual[i] != p.ids[i])
        return corrupt(p.ids[i], p.locs[i], actual[i]);
  }
  for (size_t i = 0; i < p.n; ++i)
    p.out->add(p.view(i));
  reads += p.n;
  return {};
}

caf::expected<std::vector<location>>
chunk_store::impl::locate(const std::vector<chunk_id>& ids) const {
  std::vector<const chunk_id*> ptrs;
  ptrs.reserve(ids.size());
  for (auto& id : ids)
    ptrs.push_back(&id);
  auto found = lookup(ptrs);
  if (!found)
    return std::move(found.error());
  std::vector<location> locs(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!(*found)[i])
      return not_found(ids[i]);
    locs[i] = *(*found)[i];
  }
  return locs;
}

caf::error chunk_store::impl::read_into(const std::vector<chunk_id>& ids, chunk_buffer& out,
                                        bool verify, io_ring& ring) const {
  out.prepare(0);
  auto locs = locate(ids);
  if (!locs)
    return std::move(locs.error());
  read_plan plan;
  scope_exit guard{[&] { ring.drain(); }}; // before the plan's groups go
  if (auto err = start_read(ids.data(), locs->data(), ids.size(), out, plan, ring)) {
    out.prepare(0);
    return err;
  }
  hash_pool hasher;
  if (verify && plan.bytes >= parallel_hash_min_bytes)
    hasher.enable_helper();
  auto err = finish_read(plan, verify, hasher, ring);
  if (err)
    out.prepare(0);
  return err;
}

caf::error chunk_store::impl::read_batches(const std::vector<chunk_id>& ids, uint64_t batch_bytes,
                                           const batch_fn& fn, bool verify, io_ring& ring) const {
  auto locs = locate(ids);
  if (!locs)
    return std::move(locs.error());
  std::vector<std::pair<size_t, size_t>> batches; // [first, last) into ids
  {
    size_t first = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i > first && bytes + (*locs)[i].size > batch_bytes) {
        batches.emplace_back(first, i);
        first = i;
        bytes = 0;
      }
      bytes += (*locs)[i].size;
    }
    if (first < ids.size())
      batches.emplace_back(first, ids.size());
  }
  std::array<chunk_buffer, 2> bufs;
  std::array<read_plan, 2> plans;
  scope_exit guard{[&] { ring.drain(); }}; // before the plans' groups go
  hash_pool hasher;
  if (verify)
    hasher.enable_helper();
  auto start = [&](size_t b) {
    auto [first, last] = batches[b];
    return start_read(ids.data() + first, locs->data() + first, last - first, bufs[b % 2],
                      plans[b % 2], ring);
  };
  if (!batches.empty())
    if (auto err = start(0))
      return err;
  for (size_t b = 0; b < batches.size(); ++b) {
    // The next batch is in flight while this one is verified and handed over.
    if (b + 1 < batches.size())
      if (auto err = start(b + 1))
        return err;
    if (auto err = finish_read(plans[b % 2], verify, hasher, ring))
      return err;
    if (auto err = fn(batches[b].first, bufs[b % 2]))
      return err;
  }
  return {};
}

caf::expected<std::vector<std::pair<chunk_id, uint32_t>>>
chunk_store::put_file(const std::string& path) {
  auto all = put_files(std::vector<std::string>{path}, put_files_options{});
  if (!all)
    return std::move(all.error());
  return std::move(all->front());
}

caf::expected<std::vector<std::vector<std::pair<chunk_id, uint32_t>>>>
chunk_store::put_files(const std::vector<std::string>& paths, put_files_options options) {
  if (options.store) {
    std::lock_guard lock{impl_->write_mutex};
    return impl_->put_files(paths, true, *impl_->write_ring);
  }
  auto ring = impl_->acquire_ring();
  if (!ring)
    return std::move(ring.error());
  auto out = impl_->put_files(paths, false, **ring);
  impl_->release_ring(std::move(*ring));
  return out;
}

caf::error chunk_store::write_file(int fd, const std::vector<chunk_id>& chunks) const {
  return write_files({{fd, chunks}});
}

caf::error
chunk_store::write_files(const std::vector<std::pair<int, std::vector<chunk_id>>>& files) const {
  std::shared_lock gc{impl_->gc_mutex};
  auto ring = impl_->acquire_ring();
  if (!ring)
    return std::move(ring.error());
  auto err = impl_->write_files(files, **ring);
  impl_->release_ring(std::move(*ring));
  return err;
}

// -- garbage collection ---------------------------------------------------------------------------

caf::expected<collect_report> chunk_store::collect(const live_fn& live, double rewrite_dead_fraction) {
  auto& m = *impl_;
  std::lock_guard wlock{m.write_mutex};
  collect_report rep;

  // 1. Forget the dead chunks (one synced batch) and note where the live ones are.
  struct pack_use {
    uint64_t live_bytes = 0;
    struct chunk {
      uint64_t offset;
      uint32_t size;
      chunk_id id;
    };
    std::vector<chunk> chunks; ///< its live chunks
  };
  std::map<uint32_t, pack_use> use;
  {
    rocksdb::WriteBatch dead;
    std::unique_ptr<rocksdb::Iterator> it{m.db->NewIterator(rocksdb::ReadOptions{})};
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      if (it->key().size() != 32)
        continue; // pack ends and counters
      auto id = chunk_id::from_raw(it->key().ToStringView());
      auto loc = decode_location(it->value().ToStringView());
      if (!id || !loc)
        return make_error(errc::storage_failure, "the chunk index in " + m.dir
                                                   + "/index holds a malformed entry");
      if (live(*id)) {
        auto& u = use[loc->pack];
        u.live_bytes += loc->size;
        u.chunks.push_back({loc->offset, loc->size, *id});
      } else {
        dead.Delete(it->key());
        ++rep.chunks_removed;
        rep.bytes_removed += loc->size;
      }
    }
    if (!it->status().ok())
      return db_failure("scanning the chunk index in " + m.dir + "/index", it->status());
    if (rep.chunks_removed > 0) {
      uint64_t chunks = m.chunk_count.load() - rep.chunks_removed;
      uint64_t bytes = m.byte_count.load() - rep.bytes_removed;
      std::string stats;
      put_le<uint64_t>(stats, chunks);
      put_le<uint64_t>(stats, bytes);
      dead.Put(stats_key, stats);
      rocksdb::WriteOptions wo;
      wo.sync = m.options.sync;
      auto st = m.db->Write(wo, &dead);
      if (!st.ok())
        return db_failure("removing " + std::to_string(rep.chunks_removed)
                            + " unused chunks from the index in " + m.dir + "/index",
                          st);
      m.chunk_count = chunks;
      m.byte_count = bytes;
    }
  }

  // 2. The packs worth rewriting: sealed ones with enough dead bytes. The open pack is sealed
  //    first when it qualifies (the moves then go to a new one).
  auto qualifies = [&](uint32_t pack, uint64_t end) {
    uint64_t live_bytes = use.count(pack) != 0 ? use[pack].live_bytes : 0;
    return live_bytes == 0 || static_cast<double>(end - std::min(end, live_bytes))
                                >= rewrite_dead_fraction * static_cast<double>(end);
  };
  if (m.open_pack != 0 && m.committed[m.open_pack] > 0
      && qualifies(m.open_pack, m.committed[m.open_pack])) {
    m.open_size = m.options.pack_size_limit; // ensure_room starts a new pack on the next append
    if (auto err = m.ensure_room(1))
      return err;
  }
  std::vector<uint32_t> victims;
  for (auto& [pack, end] : m.committed)
    if (pack != m.open_pack && qualifies(pack, end))
      victims.push_back(pack);

  // 3. Per victim: move its live chunks (read verified, appended, index committed), then delete it.
  auto ring = m.acquire_ring();
  if (!ring)
    return std::move(ring.error());
  scope_exit release{[&] { m.release_ring(std::move(*ring)); }};
  constexpr uint64_t move_batch_bytes = 32u << 20;
  uint64_t deleted_bytes = 0;
  for (uint32_t pack : victims) {
    auto& chunks = use[pack].chunks;
    std::sort(chunks.begin(), chunks.end(), [](auto& a, auto& b) { return a.offset < b.offset; });
    chunk_buffer buf;
    for (size_t first = 0; first < chunks.size();) {
      std::vector<chunk_id> ids;
      uint64_t bytes = 0;
      size_t last = first;
      for (; last < chunks.size() && (last == first || bytes < move_batch_bytes); ++last) {
        ids.push_back(chunks[last].id);
        bytes += chunks[last].size;
      }
      if (auto err = m.read_into(ids, buf, /*verify=*/true, **ring))
        return err; // a corrupt live chunk: this pack stays, named in the error
      std::vector<std::pair<chunk_id, std::string_view>> moved;
      moved.reserve(ids.size());
      auto views = buf.chunks();
      for (size_t k = 0; k < ids.size(); ++k)
        moved.emplace_back(ids[k], views[k]);
      const uint64_t puts_before = m.puts.load(), dedup_before = m.deduplicated.load();
      auto err = m.store_hashed(moved, /*relocate=*/true);
      m.puts = puts_before;
      m.deduplicated = dedup_before;
      if (err)
        return err;
      rep.chunks_moved += ids.size();
      rep.bytes_moved += buf.bytes();
      first = last;
    }
    if (!chunks.empty())
      ++rep.packs_rewritten;
    // Nothing is indexed in it now. Its entry goes first (synced), then the file: a crash in
    // between leaves an unknown pack, which open() removes.
    {
      rocksdb::WriteOptions wo;
      wo.sync = m.options.sync;
      auto st = m.db->Delete(wo, pack_key(pack));
      if (!st.ok())
        return db_failure("removing pack " + m.pack_path(pack) + " from the index", st);
    }
    std::unique_lock gc{m.gc_mutex}; // reads in flight end first; new ones wait
    std::unique_lock packs{m.packs_mutex};
    struct stat sb{};
    if (auto i = m.pack_fds.find(pack); i != m.pack_fds.end()) {
      if (::fstat(i->second, &sb) == 0)
        deleted_bytes += static_cast<uint64_t>(sb.st_size);
      ::close(i->second);
      m.pack_fds.erase(i);
    }
    for (auto* fds : {&m.direct_fds, &m.append_fds})
      if (auto i = fds->find(pack); i != fds->end()) {
        if (i->second >= 0)
          ::close(i->second);
        fds->erase(i);
      }
    m.committed.erase(pack);
    auto path = m.pack_path(pack);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      return io_failure("removing pack " + path, errno);
    --m.pack_count;
    ++rep.packs_removed;
    log::info("chunk_pack_removed").kv("pack", path).kv("moved_chunks", chunks.size());
  }
  rep.disk_bytes_freed = deleted_bytes > rep.bytes_moved ? deleted_bytes - rep.bytes_moved : 0;
  return rep;
}

chunk_store_stats chunk_store::stats() const {
  chunk_store_stats s;
  s.chunks = impl_->chunk_count.load();
  s.bytes = impl_->byte_count.load();
  s.packs = impl_->pack_count.load();
  s.puts = impl_->puts.load();
  s.deduplicated = impl_->deduplicated.load();
  s.reads = impl_->reads.load();
  return s;
}

} // namespace shoal::fs
