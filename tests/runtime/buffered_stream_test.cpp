#include <catch2/catch.hpp>

#include <string>

#include <kj/async-io.h>

#include "runtime/buffered_stream.hpp"

using shoal::buffered_stream;

namespace {

struct pipe_fixture {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::Own<buffered_stream> local;  ///< under test
  kj::Own<kj::AsyncIoStream> peer; ///< the raw other end

  pipe_fixture() {
    auto pipe = io.provider->newTwoWayPipe();
    local = kj::heap<buffered_stream>(kj::mv(pipe.ends[0]));
    peer = kj::mv(pipe.ends[1]);
  }

  /// Reads from the peer until EOF.
  std::string read_all_from_peer() {
    std::string all;
    char buf[8192];
    for (;;) {
      size_t n = peer->tryRead(buf, 1, sizeof(buf)).wait(io.waitScope);
      if (n == 0)
        return all;
      all.append(buf, n);
    }
  }

  /// Reads from the peer into `into` until EOF, concurrently with the caller's waits.
  kj::Promise<void> collect_from_peer(std::string& into) {
    auto buf = kj::heapArray<char>(8192);
    auto* raw = buf.begin();
    return peer->tryRead(raw, 1, buf.size())
      .then([this, &into, raw, buf = kj::mv(buf)](size_t n) mutable -> kj::Promise<void> {
        if (n == 0)
          return kj::READY_NOW;
        into.append(raw, n);
        return collect_from_peer(into);
      });
  }

  std::string read_exactly(size_t n) {
    std::string s(n, '\0');
    size_t got = local->tryRead(&s[0], n, n).wait(io.waitScope);
    s.resize(got);
    return s;
  }
};

std::string pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>(seed + i % 23);
  return s;
}

} // namespace

TEST_CASE("buffered_stream merges the writes of one burst into one socket write") {
  pipe_fixture f;
  std::string expected;
  for (int i = 0; i < 100; ++i) {
    auto piece = "message " + std::to_string(i) + ";";
    expected += piece;
    // Small writes complete at once: the bytes were copied.
    f.local->write(piece.data(), piece.size()).wait(f.io.waitScope);
  }
  CHECK(f.local->socket_writes() == 0); // nothing was idle yet: no flush ran
  f.local->shutdownWrite();             // flushes first, then closes the write side
  CHECK(f.read_all_from_peer() == expected);
  CHECK(f.local->writes() == 100);
  CHECK(f.local->socket_writes() == 1);
}

TEST_CASE("buffered_stream keeps order across small, large and multi-piece writes") {
  pipe_fixture f;
  auto small1 = pattern(100, 'a');
  auto large = pattern(3 * buffered_stream::direct_write_bytes + 7, 'A');
  auto small2 = pattern(50, '0');
  auto part1 = pattern(10, 'k');
  auto part2 = pattern(20, 'p');

  // The peer reads concurrently: the large write need not fit the socket buffer.
  std::string all;
  auto reading = f.collect_from_peer(all).eagerlyEvaluate(nullptr);
  f.local->write(small1.data(), small1.size()).wait(f.io.waitScope);
  f.local->write(large.data(), large.size()).wait(f.io.waitScope);
  f.local->write(small2.data(), small2.size()).wait(f.io.waitScope);
  kj::ArrayPtr<const kj::byte> pieces[] = {
    kj::arrayPtr(reinterpret_cast<const kj::byte*>(part1.data()), part1.size()),
    kj::arrayPtr(reinterpret_cast<const kj::byte*>(part2.data()), part2.size())};
  f.local->write(kj::arrayPtr(pieces, 2)).wait(f.io.waitScope);
  f.local->shutdownWrite();
  reading.wait(f.io.waitScope);
  CHECK(all.size() == small1.size() + large.size() + small2.size() + part1.size() + part2.size());
  CHECK(all == small1 + large + small2 + part1 + part2);
  CHECK(f.local->socket_writes() == 3); // small1; large; small2 + both pieces
}

TEST_CASE("buffered_stream serves a burst of small reads from one socket read") {
  pipe_fixture f;
  std::string burst = "head" + pattern(1000, 'x') + "tail";
  f.peer->write(burst.data(), burst.size()).wait(f.io.waitScope);

  CHECK(f.read_exactly(4) == "head");
  CHECK(f.read_exactly(1000) == pattern(1000, 'x'));
  CHECK(f.read_exactly(4) == "tail");
  CHECK(f.local->buffered_reads() == 2); // the second and third came from the buffer

  SECTION("tryRead returns what is buffered, up to max, without waiting for more") {
    std::string more = "0123456789";
    f.peer->write(more.data(), more.size()).wait(f.io.waitScope);
    char buf[4];
    CHECK(f.local->tryRead(buf, 1, 4).wait(f.io.waitScope) == 4);
    CHECK(std::string(buf, 4) == "0123");
    char rest[64];
    CHECK(f.local->tryRead(rest, 1, sizeof(rest)).wait(f.io.waitScope) == 6);
    CHECK(std::string(rest, 6) == "456789");
  }
}

TEST_CASE("buffered_stream reads a body larger than its buffer straight into the caller's memory") {
  pipe_fixture f;
  auto body = pattern(5 * buffered_stream::read_buffer_bytes + 3, 'q');
  std::string wire = "len:" + body;
  auto writing = f.peer->write(wire.data(), wire.size()).then([&] { f.peer->shutdownWrite(); });
  CHECK(f.read_exactly(4) == "len:");
  std::string got(body.size(), '\0');
  size_t n = f.local->tryRead(&got[0], body.size(), body.size()).wait(f.io.waitScope);
  writing.wait(f.io.waitScope);
  CHECK(n == body.size());
  CHECK(got == body);

  SECTION("end of stream: a read gets what was left, then 0") {
    char c;
    CHECK(f.local->tryRead(&c, 1, 1).wait(f.io.waitScope) == 0);
  }
}

TEST_CASE("buffered_stream fails every write after the socket failed") {
  pipe_fixture f;
  f.peer = nullptr; // the other end is gone: writes get EPIPE
  auto piece = pattern(1000, 'e');
  bool failed = false;
  for (int i = 0; i < 10 && !failed; ++i) {
    try {
      f.local->write(piece.data(), piece.size()).wait(f.io.waitScope);
      // The copy succeeded; the socket write happens when the loop is idle.
      f.io.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(f.io.waitScope);
    } catch (const kj::Exception&) {
      failed = true;
    }
  }
  CHECK(failed);
  CHECK_THROWS_AS(f.local->write(piece.data(), piece.size()).wait(f.io.waitScope), kj::Exception);
}
