/// block_transfer_bench: two block servers in two processes over loopback TCP (issue 4).
///
///   block_transfer_bench [--dir D] [--gib N] [--mix 0|1] [--runs N] [--sync 0|1]
///                        [--streams N] [--store-threads N]
///       A (a forked child) fills D/a-<dataset> once (N GiB of 1 MiB chunks, or with --mix 1
///       half of the bytes as 64 KiB chunks interleaved), drops its packs from the page cache,
///       and serves its BlockServer on 127.0.0.1. B (this process) then fetches every chunk into
///       a fresh store, `runs` times: run 1 is cold on A, the others warm.
///   block_transfer_bench breakdown [--dir D] [--mix 0|1] [--sync 0|1]
///       In one process, the pieces a transfer is made of: store read of A's chunks (verified,
///       unverified as the block server serves them, and get() into strings), SHA-256, memcpy,
///       put_verified of them into a fresh store.
///
/// GB/s are 10^9 bytes per second of chunk payload. SHOAL_BENCH_BUFFERED_APPENDS=1 in the
/// environment: stores append through the page cache (chunk_store_options::direct_appends off).

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/block_server/block_server.hpp"
#include "actors/block_server/block_server_bridge.hpp"
#include "actors/block_server/peer_connection.hpp"
#include "fs/chunk_store.hpp"
#include "runtime/errc.hpp"
#include "runtime/rpc_server.hpp"

using namespace shoal;
using namespace shoal::block_server;
namespace stdfs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  std::string dir = "/var/tmp/shoal-blkbench";
  double gib = 2;
  bool mix = false;
  int runs = 3;
  bool sync = true;
  size_t streams = 1;
  size_t store_threads = 1;
  bool breakdown = false;
};

[[noreturn]] void die(const std::string& what) {
  std::cerr << "block_transfer_bench: " << what << "\n";
  std::exit(1);
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// Deterministic distinct bytes (xorshift64, 8 bytes a step).
void fill_chunk(uint64_t index, std::string& out, size_t size) {
  out.resize(size);
  uint64_t x = 0x9E3779B97F4A7C15ull * (index + 1);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(&out[i], &x, 8);
  }
  for (; i < size; ++i)
    out[i] = static_cast<char>(x >> (8 * (i % 8)));
}

/// Chunk sizes of the dataset, in order.
std::vector<size_t> dataset(const options& o) {
  uint64_t total = static_cast<uint64_t>(o.gib * (1ull << 30));
  std::vector<size_t> sizes;
  uint64_t sum = 0;
  for (uint64_t i = 0; sum < total; ++i) {
    // --mix: every other MiB of the dataset is sixteen 64 KiB chunks.
    if (o.mix && (i % 2 == 1)) {
      for (int k = 0; k < 16; ++k)
        sizes.push_back(64u << 10);
    } else {
      sizes.push_back(1u << 20);
    }
    sum += 1u << 20;
  }
  return sizes;
}

std::string a_dir(const options& o) { return o.dir + (o.mix ? "/a-mix" : "/a-1m"); }

std::unique_ptr<fs::chunk_store> open_store(const std::string& dir, bool sync) {
  fs::chunk_store_options so;
  so.sync = sync;
  // SHOAL_BENCH_BUFFERED_APPENDS=1: appends through the page cache (direct_appends = false).
  so.direct_appends = std::getenv("SHOAL_BENCH_BUFFERED_APPENDS") == nullptr;
  auto s = fs::chunk_store::open(dir, so);
  if (!s)
    die("open " + dir + ": " + message_of(s.error()));
  return std::move(*s);
}

/// Fills A if it does not hold the dataset yet; returns the ids in order.
std::vector<fs::chunk_id> fill(fs::chunk_store& store, const std::vector<size_t>& sizes) {
  std::vector<fs::chunk_id> ids;
  ids.reserve(sizes.size());
  std::vector<std::string> bufs(32);
  auto t0 = clock_type::now();
  uint64_t bytes = 0;
  for (size_t first = 0; first < sizes.size(); first += bufs.size()) {
    size_t n = std::min(bufs.size(), sizes.size() - first);
    std::vector<std::string_view> views;
    for (size_t k = 0; k < n; ++k) {
      fill_chunk(first + k, bufs[k], sizes[first + k]);
      views.emplace_back(bufs[k]);
      bytes += sizes[first + k];
    }
    auto put = store.put(views);
    if (!put)
      die("fill: " + message_of(put.error()));
    ids.insert(ids.end(), put->begin(), put->end());
  }
  std::cerr << "A: " << ids.size() << " chunks, " << bytes / 1e9 << " GB ready in "
            << seconds_since(t0) << " s\n";
  return ids;
}

/// Writes back and drops A's pack files from the page cache (cold start for run 1).
void drop_packs(const std::string& dir) {
  for (auto& e : stdfs::directory_iterator(dir)) {
    auto name = e.path().filename().string();
    if (name.rfind("pack-", 0) != 0)
      continue;
    int fd = ::open(e.path().c_str(), O_RDONLY);
    if (fd < 0)
      continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

void write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    auto n = ::write(fd, s.data() + off, s.size() - off);
    if (n <= 0)
      die("pipe write failed");
    off += static_cast<size_t>(n);
  }
}

/// The child: A. Serves until the control pipe closes.
[[noreturn]] void run_a(const options& o, int out_fd, int control_fd) {
  stdfs::create_directories(a_dir(o));
  std::vector<fs::chunk_id> ids;
  {
    auto sizes = dataset(o);
    auto store = open_store(a_dir(o), /*sync=*/false);
    ids = fill(*store, sizes); // put() skips chunks already there: a second invocation only hashes
  }
  drop_packs(a_dir(o));
  std::shared_ptr<fs::chunk_store> store = open_store(a_dir(o), false);
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  block_server_config bc;
  bc.verify_served_reads = false; // the fetching block_peer verifies (RESULTS.md)
  bc.store = store;
  bc.name = "block_server_a";
  auto server = spawn_block_server(sys, bc);
  auto rpc = rpc_server::start("127.0.0.1:0", [&](rpc_context& ctx) {
    return capnp::Capability::Client(make_block_server_bridge(ctx, sys, server));
  });
  if (!rpc)
    die("A: " + message_of(rpc.error()));
  std::string msg = (*rpc)->address() + "\n";
  for (auto& id : ids)
    msg += id.hex() + "\n";
  msg += "end\n";
  write_all(out_fd, msg);
  ::close(out_fd);
  char c;
  while (::read(control_fd, &c, 1) > 0) {
  }
  (*rpc)->stop(std::chrono::milliseconds{1000});
  rpc->reset();
  {
    caf::scoped_actor self{sys};
    self->request(server, std::chrono::seconds(10), inspect_atom::value)
      .receive(
        [](actor_snapshot& s) {
          std::cerr << "A:";
          for (auto& [k, v] : s.counters)
            if (k == "chunks_served" || k == "bytes_served" || k == "read_busy_ms")
              std::cerr << " " << k << "=" << v;
          std::cerr << "\n";
        },
        [](caf::error&) {});
  }
  caf::anon_send_exit(server, caf::exit_reason::user_shutdown);
  std::_Exit(0);
}

/// One fetch of everything into a fresh B store; returns seconds.
double run_b(const options& o, const std::string& address, const std::vector<fs::chunk_id>& ids,
             uint64_t& bytes_out) {
  auto bdir = o.dir + "/b";
  stdfs::remove_all(bdir);
  stdfs::create_directories(bdir);
  std::shared_ptr<fs::chunk_store> store = open_store(bdir, o.sync);
  block_peer_options po;
  po.streams = o.streams;
  po.store_threads = o.store_threads;
  auto peer = peer_connection::start(address, store, po);
  if (!peer)
    die("B: " + message_of(peer.error()));
  caf::actor_system_config cfg;
  double secs = 0;
  {
    caf::actor_system sys{cfg};
    block_server_config bc;
    bc.verify_served_reads = false; // the fetching block_peer verifies (RESULTS.md)
    bc.store = store;
    bc.peer = (*peer)->source();
    auto server = spawn_block_server(sys, bc);
    caf::scoped_actor self{sys};
    auto t0 = clock_type::now();
    self->request(server, std::chrono::minutes(10), fetch_atom::value, ids)
      .receive(
        [&](fetch_result& r) {
          secs = seconds_since(t0);
          bytes_out = r.bytes;
          if (r.chunks != ids.size())
            die("B fetched " + std::to_string(r.chunks) + " of " + std::to_string(ids.size()));
        },
        [&](caf::error& err) { die("B: fetch failed: " + message_of(err)); });
    auto missing = store->missing(ids);
    if (!missing.empty())
      die("B: still missing " + std::to_string(missing.size()));
    caf::anon_send_exit(server, caf::exit_reason::user_shutdown);
  }
  (*peer)->stop();
  return secs;
}

void breakdown(const options& o) {
  auto sizes = dataset(o);
  auto a = open_store(a_dir(o), false);
  std::vector<fs::chunk_id> ids;
  {
    std::string buf;
    for (size_t i = 0; i < sizes.size(); ++i) {
      fill_chunk(i, buf, sizes[i]);
      ids.push_back(fs::hash_chunk(buf));
    }
  }
  if (!a->missing(ids).empty())
    die("run the transfer first (A is not filled)");
  uint64_t total = 0;
  for (auto s : sizes)
    total += s;
  // get() (io_uring reads + verify) of A's chunks in 4 MiB batches, page cache warm.
  std::vector<std::vector<fs::chunk_id>> batches;
  {
    std::vector<fs::chunk_id> cur;
    uint64_t b = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!cur.empty() && b + sizes[i] > (4u << 20)) {
        batches.push_back(std::move(cur));
        cur.clear();
        b = 0;
      }
      cur.push_back(ids[i]);
      b += sizes[i];
    }
    if (!cur.empty())
      batches.push_back(std::move(cur));
  }
  fs::chunk_buffer buf; // reused by every read, as the block server does
  for (int pass = 0; pass < 2; ++pass) {
    auto t0 = clock_type::now();
    for (auto& b : batches)
      if (auto err = a->read(b, buf))
        die("read failed: " + message_of(err));
    std::printf("read (verified), 4 MiB batches, pass %d: %.2f GB/s\n", pass + 1,
                total / seconds_since(t0) / 1e9);
  }
  {
    fs::chunk_store::read_options ro;
    ro.verify = false;
    auto t0 = clock_type::now();
    for (auto& b : batches)
      if (auto err = a->read(b, buf, ro))
        die("read failed: " + message_of(err));
    std::printf("read (unverified, as served), 4 MiB:      %.2f GB/s\n",
                total / seconds_since(t0) / 1e9);
  }
  {
    auto t0 = clock_type::now();
    for (size_t k = 0; k < batches.size() && k < 64; ++k)
      if (!a->get(batches[k]))
        die("get failed");
    uint64_t some = 0;
    for (size_t k = 0; k < batches.size() && k < 64; ++k)
      for (auto& id : batches[k])
        some += *a->size_of(id);
    std::printf("get (verified, std::string per chunk):    %.2f GB/s\n",
                some / seconds_since(t0) / 1e9);
  }
  // SHA-256 alone.
  {
    std::string buf;
    fill_chunk(1, buf, 1u << 20);
    auto t0 = clock_type::now();
    for (int i = 0; i < 1024; ++i)
      (void)fs::hash_chunk(buf);
    std::printf("sha256 (1 MiB chunks, one thread):        %.2f GB/s\n",
                1024.0 * (1u << 20) / seconds_since(t0) / 1e9);
  }
  // memcpy of 4 MiB.
  {
    std::string src(4u << 20, 'x'), dst(4u << 20, 'y');
    auto t0 = clock_type::now();
    for (int i = 0; i < 512; ++i) {
      std::memcpy(dst.data(), src.data(), src.size());
      src[i] = dst[i + 1];
    }
    std::printf("memcpy 4 MiB:                             %.2f GB/s\n",
                512.0 * (4u << 20) / seconds_since(t0) / 1e9);
  }
  // put_verified into a fresh store from memory (what B's store worker does).
  {
    auto bdir = o.dir + "/b-breakdown";
    stdfs::remove_all(bdir);
    auto b = open_store(bdir, o.sync);
    double put_secs = 0;
    for (auto& batch : batches) {
      if (auto err = a->read(batch, buf))
        die("read failed: " + message_of(err));
      std::vector<std::pair<fs::chunk_id, std::string_view>> lent;
      for (size_t i = 0; i < batch.size(); ++i)
        lent.emplace_back(batch[i], buf[i]);
      auto t0 = clock_type::now();
      if (auto err = b->put_verified(lent))
        die("put_verified: " + message_of(err));
      put_secs += seconds_since(t0);
    }
    std::printf("put_verified 4 MiB batches (sync=%d):     %.2f GB/s\n", o.sync ? 1 : 0,
                total / put_secs / 1e9);
    stdfs::remove_all(bdir);
  }
}

options parse(int argc, char** argv) {
  options o;
  int i = 1;
  if (argc > 1 && std::string{argv[1]} == "breakdown") {
    o.breakdown = true;
    i = 2;
  }
  for (; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--dir")
      o.dir = v;
    else if (k == "--gib")
      o.gib = std::stod(v);
    else if (k == "--mix")
      o.mix = v == "1";
    else if (k == "--runs")
      o.runs = std::stoi(v);
    else if (k == "--sync")
      o.sync = v == "1";
    else if (k == "--streams")
      o.streams = std::stoul(v);
    else if (k == "--store-threads")
      o.store_threads = std::stoul(v);
    else
      die("unknown option " + k);
  }
  if (i < argc)
    die("option " + std::string{argv[i]} + " needs a value");
  return o;
}

} // namespace

int main(int argc, char** argv) {
  auto o = parse(argc, argv);
  stdfs::create_directories(o.dir);
  if (o.breakdown) {
    breakdown(o);
    return 0;
  }
  int to_b[2], control[2];
  if (::pipe(to_b) != 0 || ::pipe(control) != 0)
    die("pipe failed");
  pid_t child = ::fork(); // before any thread exists in this process
  if (child < 0)
    die("fork failed");
  if (child == 0) {
    ::close(to_b[0]);
    ::close(control[1]);
    run_a(o, to_b[1], control[0]);
  }
  ::close(to_b[1]);
  ::close(control[0]);
  std::string text;
  char buf[65536];
  for (;;) {
    auto n = ::read(to_b[0], buf, sizeof buf);
    if (n <= 0)
      break;
    text.append(buf, static_cast<size_t>(n));
  }
  std::vector<std::string> lines;
  for (size_t p = 0, q; (q = text.find('\n', p)) != std::string::npos; p = q + 1)
    lines.push_back(text.substr(p, q - p));
  if (lines.empty() || lines.back() != "end")
    die("A did not start");
  auto address = lines.front();
  std::vector<fs::chunk_id> ids;
  for (size_t i = 1; i + 1 < lines.size(); ++i)
    ids.push_back(*fs::chunk_id::from_hex(lines[i]));
  std::printf("dataset %s: %zu chunks; B sync=%d streams=%zu store_threads=%zu\n",
              o.mix ? "mix (1 MiB + 64 KiB)" : "1 MiB", ids.size(), o.sync ? 1 : 0, o.streams,
              o.store_threads);
  for (int r = 0; r < o.runs; ++r) {
    uint64_t bytes = 0;
    double secs = run_b(o, address, ids, bytes);
    std::printf("run %d (%s): %.3f GB in %.3f s = %.2f GB/s\n", r + 1, r == 0 ? "cold" : "warm",
                bytes / 1e9, secs, bytes / secs / 1e9);
    std::fflush(stdout);
  }
  stdfs::remove_all(o.dir + "/b");
  ::close(control[1]);
  int status = 0;
  ::waitpid(child, &status, 0);
  return 0;
}
