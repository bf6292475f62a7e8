#include "actors/block_server/block_server.hpp"

#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <capnp/rpc-twoparty.h>
#include <caf/all.hpp>
#include <catch2/catch.hpp>
#include <kj/async-io.h>

#include "actors/block_server/block_server_bridge.hpp"
#include "actors/block_server/peer_connection.hpp"
#include "fs/chunk_store.hpp"
#include "runtime/errc.hpp"
#include "runtime/inspect.hpp"
#include "runtime/rpc_server.hpp"
#include "schema/blocks.capnp.h"
#include "tests/support/temp_dir.hpp"

using namespace shoal;
using namespace shoal::block_server;
using shoal::test::temp_dir;

namespace {

/// Only bounds how long a broken server can hang a test.
constexpr auto reply_timeout = std::chrono::seconds(60);

/// Deterministic, distinct bytes for chunk `index`.
std::string make_chunk(uint64_t index, size_t size) {
  std::string out(size, '\0');
  uint64_t x = 0x9E3779B97F4A7C15ull * (index + 1);
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<char>(x);
  }
  return out;
}

std::shared_ptr<fs::chunk_store> open_store(const std::string& dir) {
  auto opened = fs::chunk_store::open(dir);
  if (!opened)
    FAIL("chunk_store::open failed: " << message_of(opened.error()));
  return std::shared_ptr<fs::chunk_store>(std::move(*opened));
}

/// A node: a chunk store in a temp dir, an actor system, a block server, and (when `serve` is
/// called) its BlockServer bridge on a real rpc_server listening on loopback TCP.
struct node {
  temp_dir tmp;
  std::shared_ptr<fs::chunk_store> store = open_store(tmp.sub("chunks"));
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<peer_connection> peer;
  block_server_actor server;
  std::unique_ptr<rpc_server> rpc;

  /// `peer_address`: fetch missing chunks from there ("" = no peer).
  explicit node(const std::string& peer_address = "") {
    cfg.set("scheduler.max-threads", 2);
    sys = std::make_unique<caf::actor_system>(cfg);
    block_server_config bc;
    bc.store = store;
    if (!peer_address.empty()) {
      auto started = peer_connection::start(peer_address, store);
      if (!started)
        FAIL("peer_connection::start failed: " << message_of(started.error()));
      peer = std::move(*started);
      bc.peer = peer->source();
    }
    server = spawn_block_server(*sys, bc);
  }

  ~node() {
    if (rpc)
      rpc->stop(std::chrono::milliseconds{1000});
    rpc.reset();
    if (peer)
      peer->stop();
    caf::anon_send_exit(server, caf::exit_reason::user_shutdown);
    server = nullptr;
    sys.reset();
  }

  std::string serve() {
    auto started = rpc_server::start("127.0.0.1:0", [this](rpc_context& ctx) {
      return capnp::Capability::Client(make_block_server_bridge(ctx, *sys, server));
    });
    if (!started)
      FAIL("rpc_server::start failed: " << message_of(started.error()));
    rpc = std::move(*started);
    return rpc->address();
  }

  /// Puts chunks straight into the store; returns their ids.
  std::vector<fs::chunk_id> put(const std::vector<std::string>& chunks) {
    std::vector<std::string_view> views(chunks.begin(), chunks.end());
    auto ids = store->put(views);
    if (!ids)
      FAIL("put failed: " << message_of(ids.error()));
    return *ids;
  }

  template <class R, class... Ts>
  caf::expected<R> ask(Ts... xs) {
    caf::scoped_actor self{*sys};
    caf::expected<R> out{R{}};
    self->request(server, reply_timeout, xs...)
      .receive([&](R& r) { out = std::move(r); }, [&](caf::error& err) { out = std::move(err); });
    return out;
  }

  int64_t counter(const std::string& name) {
    auto snap = ask<actor_snapshot>(inspect_atom::value);
    REQUIRE(snap);
    for (auto& [key, value] : snap->counters)
      if (key == name)
        return value;
    FAIL("no counter " << name);
    return -1;
  }
};

/// A capnp client on the test thread, connected over TCP to `address`.
struct client {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  wire::BlockServer::Client blocks = nullptr;

  explicit client(const std::string& address) {
    std::string host;
    uint16_t port = 0;
    REQUIRE(split_host_port(address, host, port));
    stream = io.provider->getNetwork().parseAddress(host, port).wait(io.waitScope)->connect().wait(
      io.waitScope);
    rpc = kj::heap<capnp::TwoPartyClient>(*stream);
    blocks = rpc->bootstrap().castAs<wire::BlockServer>();
  }

  std::vector<fs::chunk_id> missing(const std::vector<fs::chunk_id>& ids) {
    auto req = blocks.missingRequest();
    auto list = req.initIds(static_cast<unsigned>(ids.size()));
    for (unsigned i = 0; i < ids.size(); ++i)
      list.set(i, chunk_id_to_wire(ids[i]));
    auto resp = req.send().wait(io.waitScope);
    std::vector<fs::chunk_id> out;
    for (auto raw : resp.getIds())
      out.push_back(chunk_id_from_wire(raw, out.size()));
    return out;
  }

  void write(const std::vector<fs::chunk_id>& ids, const std::vector<std::string>& chunks) {
    auto req = blocks.writeRequest();
    auto list = req.initIds(static_cast<unsigned>(ids.size()));
    auto data = req.initChunks(static_cast<unsigned>(chunks.size()));
    for (unsigned i = 0; i < ids.size(); ++i)
      list.set(i, chunk_id_to_wire(ids[i]));
    for (unsigned i = 0; i < chunks.size(); ++i)
      data.set(i, capnp::Data::Reader(reinterpret_cast<const kj::byte*>(chunks[i].data()),
                                      chunks[i].size()));
    req.send().wait(io.waitScope);
  }
};

/// Records every batch a `read` streams to it.
struct recording_sink final : wire::ChunkSink::Server {
  struct batch {
    std::vector<fs::chunk_id> ids;
    std::vector<std::string> chunks;
    uint64_t bytes = 0;
  };
  std::vector<batch>& out;

  explicit recording_sink(std::vector<batch>& o) : out(o) {}

  kj::Promise<void> write(WriteContext ctx) override {
    auto p = ctx.getParams();
    batch b;
    for (auto raw : p.getIds())
      b.ids.push_back(chunk_id_from_wire(raw, b.ids.size()));
    for (auto c : p.getChunks()) {
      b.chunks.emplace_back(reinterpret_cast<const char*>(c.begin()), c.size());
      b.bytes += c.size();
    }
    out.push_back(std::move(b));
    return kj::READY_NOW;
  }
};

/// What a kj exception from a bridge says, or "" if `f` succeeded.
template <class F>
std::string failure_of(F f) {
  std::string out;
  KJ_IF_MAYBE (ex, kj::runCatchingExceptions(f))
    out = ex->getDescription().cStr();
  return out;
}

/// 210 chunks from 1 B to 4 MiB (about 41 MB in all).
std::vector<std::string> varied_chunks() {
  const size_t sizes[] = {1, 13, 1000, 4096, 65539, 300000, 2, 777};
  std::vector<std::string> out;
  for (uint64_t i = 0; i < 210; ++i) {
    size_t size = sizes[i % 8];
    if (i % 50 == 7)
      size = 4u << 20;
    else if (i % 25 == 3)
      size = 1u << 20;
    out.push_back(make_chunk(i, size));
  }
  return out;
}

} // namespace

TEST_CASE("missing() answers the ids the block server does not hold, in order") {
  node a;
  auto held = a.put({make_chunk(1, 100), make_chunk(2, 5000)});
  auto absent1 = fs::hash_chunk(make_chunk(3, 10));
  auto absent2 = fs::hash_chunk(make_chunk(4, 10));
  client c{a.serve()};
  auto missing = c.missing({absent2, held[0], absent1, held[1], absent2});
  REQUIRE(missing.size() == 2);
  CHECK(missing[0] == absent2);
  CHECK(missing[1] == absent1);
  CHECK(c.missing(held).empty());
}

TEST_CASE("read streams 200+ chunks of 1 B to 4 MiB to the sink in order, each verified") {
  node a;
  auto chunks = varied_chunks();
  auto ids = a.put(chunks);
  client c{a.serve()};
  std::vector<recording_sink::batch> batches;
  auto req = c.blocks.readRequest();
  auto list = req.initIds(static_cast<unsigned>(ids.size()));
  for (unsigned i = 0; i < ids.size(); ++i)
    list.set(i, chunk_id_to_wire(ids[i]));
  req.setSink(kj::heap<recording_sink>(batches));
  auto resp = req.send().wait(c.io.waitScope);
  uint64_t total = 0;
  for (auto& s : chunks)
    total += s.size();
  CHECK(resp.getChunks() == ids.size());
  CHECK(resp.getBytes() == total);

  size_t next = 0;
  REQUIRE(batches.size() > 1);
  for (auto& b : batches) {
    REQUIRE(b.ids.size() == b.chunks.size());
    CHECK((b.bytes <= (4u << 20) || b.ids.size() == 1)); // at most 4 MiB, or one larger chunk
    for (size_t i = 0; i < b.ids.size(); ++i, ++next) {
      REQUIRE(next < ids.size());
      CHECK(b.ids[i] == ids[next]);
      CHECK(fs::hash_chunk(b.chunks[i]) == b.ids[i]);
      CHECK(b.chunks[i] == chunks[next]);
    }
  }
  CHECK(next == ids.size());
  CHECK(a.counter("chunks_served") == static_cast<int64_t>(ids.size()));
  CHECK(a.counter("bytes_served") == static_cast<int64_t>(total));
}

TEST_CASE("read of a chunk the server lacks fails with not_found naming it") {
  node a;
  auto ids = a.put({make_chunk(1, 100), make_chunk(2, 100)});
  auto absent = fs::hash_chunk(make_chunk(3, 100));
  client c{a.serve()};
  std::vector<recording_sink::batch> batches;
  auto req = c.blocks.readRequest();
  auto list = req.initIds(3);
  list.set(0, chunk_id_to_wire(ids[0]));
  list.set(1, chunk_id_to_wire(absent));
  list.set(2, chunk_id_to_wire(ids[1]));
  req.setSink(kj::heap<recording_sink>(batches));
  auto what = failure_of([&] { req.send().wait(c.io.waitScope); });
  CHECK_THAT(what, Catch::Contains("[not_found]"));
  CHECK_THAT(what, Catch::Contains(absent.hex()));
}

TEST_CASE("chunks written through write() are no longer missing, and a bad one is refused") {
  node a;
  client c{a.serve()};
  std::vector<std::string> chunks{make_chunk(10, 1), make_chunk(11, 70000), make_chunk(12, 1 << 20)};
  std::vector<fs::chunk_id> ids;
  for (auto& s : chunks)
    ids.push_back(fs::hash_chunk(s));
  REQUIRE(c.missing(ids).size() == 3);
  c.write(ids, chunks);
  CHECK(c.missing(ids).empty());
  CHECK(a.counter("chunks_written") == 3);

  auto good = make_chunk(13, 500);
  auto bad = make_chunk(14, 500);
  auto claimed = fs::hash_chunk(bad);
  bad[100] ^= 1;
  // A `-> stream` call's own promise only says that flow control let it go; its failure shows on
  // the calls that follow it on the same capability (capnp breaks the capability after a failed
  // streaming call).
  auto what = failure_of([&] {
    c.write({fs::hash_chunk(good), claimed}, {good, bad});
    c.missing({claimed});
  });
  CHECK_THAT(what, Catch::Contains("[storage_failure]"));
  CHECK_THAT(what, Catch::Contains(claimed.hex()));
  CHECK_FALSE(a.store->contains(claimed));
  CHECK_FALSE(a.store->contains(fs::hash_chunk(good))); // nothing of the refused batch
}

TEST_CASE("block server B fetches from A the chunks it lacks, and a second fetch moves nothing") {
  node a;
  std::vector<std::string> chunks;
  for (uint64_t i = 0; i < 40; ++i)
    chunks.push_back(make_chunk(100 + i, i % 3 == 0 ? (1u << 20) : 65536 + i));
  auto ids = a.put(chunks);
  auto address = a.serve();
  node b{address};
  // B already has a few of them.
  b.put({chunks[0], chunks[5], chunks[39]});
  uint64_t expected_bytes = 0;
  for (size_t i = 0; i < chunks.size(); ++i)
    if (i != 0 && i != 5 && i != 39)
      expected_bytes += chunks[i].size();

  auto first = b.ask<fetch_result>(fetch_atom::value, ids);
  REQUIRE(first);
  CHECK(first->chunks == ids.size() - 3);
  CHECK(first->bytes == expected_bytes);
  CHECK(b.store->missing(ids).empty());
  auto copied = b.store->get(ids);
  REQUIRE(copied);
  CHECK(*copied == chunks);

  auto second = b.ask<fetch_result>(fetch_atom::value, ids);
  REQUIRE(second);
  CHECK(second->chunks == 0);
  CHECK(second->bytes == 0);

  // The snapshots show the traffic on both sides.
  CHECK(a.counter("chunks_served") == static_cast<int64_t>(ids.size() - 3));
  CHECK(a.counter("bytes_served") == static_cast<int64_t>(expected_bytes));
  CHECK(b.counter("chunks_fetched") == static_cast<int64_t>(ids.size() - 3));
  CHECK(b.counter("bytes_fetched") == static_cast<int64_t>(expected_bytes));
  CHECK(b.counter("fetches_done") == 1); // the second fetch found everything local
  auto snap = b.ask<actor_snapshot>(inspect_atom::value);
  REQUIRE(snap);
  CHECK(snap->kind == "block_server");
  bool peer_shown = false;
  for (auto& [key, value] : snap->details)
    if (key == "peer")
      peer_shown = value == address;
  CHECK(peer_shown);
}

TEST_CASE("fetch without a peer fails with not_found naming a missing chunk") {
  node b;
  auto held = b.put({make_chunk(1, 10)});
  auto absent = fs::hash_chunk(make_chunk(2, 10));
  auto r = b.ask<fetch_result>(fetch_atom::value, std::vector<fs::chunk_id>{held[0], absent});
  REQUIRE_FALSE(r);
  CHECK(code_of(r.error()) == errc::not_found);
  CHECK_THAT(message_of(r.error()), Catch::Contains(absent.hex()));
}

namespace {

/// A peer that serves chunks from memory and flips one byte of the chunk at `corrupt_index`.
struct corrupting_server final : wire::BlockServer::Server {
  std::map<fs::chunk_id, std::string> chunks;
  size_t corrupt_index;

  corrupting_server(std::map<fs::chunk_id, std::string> c, size_t i)
    : chunks(std::move(c)), corrupt_index(i) {}

  kj::Promise<void> read(ReadContext ctx) override {
    auto ids = ctx.getParams().getIds();
    auto sink = ctx.getParams().getSink();
    // One chunk per batch, so the good ones before the bad one arrive in batches of their own.
    kj::Promise<void> done = kj::READY_NOW;
    for (unsigned i = 0; i < ids.size(); ++i) {
      auto id = chunk_id_from_wire(ids[i], i);
      std::string bytes = chunks.at(id);
      if (i == corrupt_index)
        bytes[bytes.size() / 2] ^= 0x20;
      auto req = sink.writeRequest();
      req.initIds(1).set(0, chunk_id_to_wire(id));
      req.initChunks(1).set(
        0, capnp::Data::Reader(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()));
      done = done.then([p = req.send()]() mutable { return kj::mv(p); });
    }
    return done.then([ctx, n = ids.size()]() mutable { ctx.getResults().setChunks(n); });
  }
};

} // namespace

TEST_CASE("a peer that sends a corrupted chunk is refused with an error naming it") {
  std::vector<std::string> chunks;
  std::map<fs::chunk_id, std::string> by_id;
  std::vector<fs::chunk_id> ids;
  for (uint64_t i = 0; i < 6; ++i) {
    chunks.push_back(make_chunk(200 + i, 10000 + i));
    ids.push_back(fs::hash_chunk(chunks.back()));
    by_id.emplace(ids.back(), chunks.back());
  }
  auto rpc = rpc_server::start("127.0.0.1:0", [&](rpc_context&) {
    return capnp::Capability::Client(kj::heap<corrupting_server>(by_id, 3));
  });
  REQUIRE(rpc);
  node b{(*rpc)->address()};
  auto r = b.ask<fetch_result>(fetch_atom::value, ids);
  REQUIRE_FALSE(r);
  CHECK(code_of(r.error()) == errc::storage_failure);
  CHECK_THAT(message_of(r.error()), Catch::Contains(ids[3].hex()));
  CHECK_FALSE(b.store->contains(ids[3]));
  // Whatever did get stored is exactly what the good chunks are.
  for (size_t i = 0; i < ids.size(); ++i)
    if (b.store->contains(ids[i])) {
      auto got = b.store->get(ids[i]);
      REQUIRE(got);
      CHECK(*got == chunks[i]);
    }
  CHECK(b.counter("fetches_failed") == 1);
  b.peer->stop();
  (*rpc)->stop(std::chrono::milliseconds{1000});
}

TEST_CASE("a chunk corrupted in the serving node's pack is refused by the fetching node, named") {
  // Whether A catches the bad bytes when serving (verify_served_reads, the default) or B's
  // verified store does, the fetch fails naming the chunk and B stores nothing of it.
  node a;
  std::vector<std::string> chunks;
  for (uint64_t i = 0; i < 8; ++i)
    chunks.push_back(make_chunk(300 + i, 70000 + i));
  auto ids = a.put(chunks);
  {
    auto pack = a.tmp.sub("chunks") + "/pack-000001.dat";
    std::string bytes;
    {
      std::ifstream in{pack, std::ios::binary};
      REQUIRE(in.good());
      bytes.assign(std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{});
    }
    auto at = bytes.find(chunks[5].substr(0, 64));
    REQUIRE(at != std::string::npos);
    int fd = ::open(pack.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    char flipped = static_cast<char>(bytes[at + 999] ^ 0x01);
    REQUIRE(::pwrite(fd, &flipped, 1, static_cast<off_t>(at + 999)) == 1);
    ::fsync(fd);
    ::close(fd);
  }
  node b{a.serve()};
  auto r = b.ask<fetch_result>(fetch_atom::value, ids);
  REQUIRE_FALSE(r);
  CHECK(code_of(r.error()) == errc::storage_failure);
  CHECK_THAT(message_of(r.error()), Catch::Contains(ids[5].hex()));
  CHECK_FALSE(b.store->contains(ids[5]));
  for (size_t i = 0; i < ids.size(); ++i)
    if (b.store->contains(ids[i])) {
      auto got = b.store->get(ids[i]);
      REQUIRE(got);
      CHECK(*got == chunks[i]);
    }
}
