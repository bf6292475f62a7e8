#include "runtime/guest/guest_hub.hpp"

#include <sys/stat.h>
#include <sys/socket.h>

#include <atomic>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "runtime/errc.hpp"
#include "tests/guest/guest_test_support.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::guest;
using namespace shoal::guest::test;
using shoal::errc;
using shoal::test::temp_dir;
/// Spelled out: `shutdown` alone is ambiguous with ::shutdown(2) from <sys/socket.h>.
using shutdown_frame = shoal::guest::shutdown;

namespace {

std::unique_ptr<guest_hub> start_hub(guest_hub_config cfg = {}) {
  auto hub = guest_hub::start(cfg);
  if (!hub)
    FAIL("guest_hub::start failed: " << shoal::message_of(hub.error()));
  return std::move(*hub);
}

channel_id listen_on(guest_hub& hub, const std::string& path, inbox& box) {
  auto id = hub.listen(path, box.handlers());
  if (!id)
    FAIL("listen failed: " << shoal::message_of(id.error()));
  return *id;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

template <class T>
T recv_as(client_socket& client) {
  auto f = client.recv();
  REQUIRE(f);
  REQUIRE(std::holds_alternative<T>(*f));
  return std::get<T>(std::move(*f));
}

/// Waits until `pred` holds; the hub's counters are updated on its own thread.
template <class Pred>
bool eventually(Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + wait_limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

} // namespace

TEST_CASE("the guest hub exchanges frames with a connected guest both ways") {
  temp_dir tmp;
  inbox box; // outlives the hub: callbacks may run until stop()
  auto hub = start_hub();
  auto path = tmp.sub("guest.sock");
  auto id = listen_on(*hub, path, box);

  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0666);
  CHECK(hub->counters().channels_open == 1);

  client_socket guest{path};
  guest.send(hello{protocol_version, "3.11.2", "2.2.0"});
  auto h = box.next_frame<hello>();
  CHECK(h.python_version == "3.11.2");
  CHECK_FALSE(exists(path)); // removed once the guest connected: nobody else may connect

  hub->send(id, encode(init{"definition", 4}));
  CHECK(recv_as<init>(guest) == init{"definition", 4});
  guest.send(ready{4});
  CHECK(box.next_frame<ready>().max_inputs == 4);
  hub->send(id, encode(inputs{{{1, "args"}}}));
  CHECK(recv_as<inputs>(guest).items.at(0).args == "args");
  guest.send(outputs{{{1, output_status::success, "result", ""}}});
  CHECK(box.next_frame<outputs>().items.at(0).data == "result");
  guest.send(call{7, "function.lookup", "body"});
  CHECK(box.next_frame<call>().request_id == 7);
  hub->send(id, encode(reply{7, errc::none, "ok", ""}));
  CHECK(recv_as<reply>(guest).body == "ok");

  REQUIRE(eventually([&] { return hub->counters().frames_out == 3; }));
  auto c = hub->counters();
  CHECK(c.frames_in == 4);
  CHECK(c.bytes_in > 0);
  CHECK(c.bytes_out == encode(init{"definition", 4}).size() + encode(inputs{{{1, "args"}}}).size()
                         + encode(reply{7, errc::none, "ok", ""}).size());
}

TEST_CASE("10,000 small guest frames arrive in order in both directions") {
  temp_dir tmp;
  inbox box; // outlives the hub: callbacks may run until stop()
  auto hub = start_hub();
  auto id = listen_on(*hub, tmp.sub("guest.sock"), box);
  client_socket guest{tmp.sub("guest.sock")};
  constexpr uint64_t n = 10'000;

  // Guest → hub: one big write, decoded frame by frame.
  std::string stream;
  for (uint64_t i = 0; i < n; ++i)
    stream += encode(outputs{{{i, output_status::success, "", ""}}});
  std::thread writer{[&] { guest.write_all(stream); }};
  for (uint64_t i = 0; i < n; ++i) {
    auto out = box.next_frame<outputs>();
    REQUIRE(out.items.at(0).id == i);
  }
  writer.join();

  // Hub → guest: 10,000 sends from two threads at once; each thread's frames stay in order.
  auto sender = [&](uint64_t first) {
    for (uint64_t i = first; i < n; i += 2)
      hub->send(id, encode(cancel{i}));
  };
  std::thread even{sender, 0};
  std::thread odd{sender, 1};
  uint64_t next_even = 0, next_odd = 1;
  for (uint64_t k = 0; k < n; ++k) {
    auto c = recv_as<cancel>(guest);
    auto& expected = c.input_id % 2 == 0 ? next_even : next_odd;
    REQUIRE(c.input_id == expected);
    expected += 2;
  }
  even.join();
  odd.join();
  REQUIRE(eventually([&] { return hub->counters().frames_out == n; }));
  CHECK(hub->counters().frames_in == n);
}

TEST_CASE("a guest that hangs up triggers on_closed once, and later sends are harmless") {
  temp_dir tmp;
  inbox box; // outlives the hub: callbacks may run until stop()
  auto hub = start_hub();
  auto id = listen_on(*hub, tmp.sub("guest.sock"), box);
  {
    client_socket guest{tmp.sub("guest.sock")};
    guest.send(fatal{"Traceback ...\nImportError: x"});
  } // closed
  CHECK(box.next_frame<fatal>().error.find("ImportError") != std::string::npos);
  auto closed = box.next();
  REQUIRE(closed);
  CHECK(closed->id == id);
  CHECK_FALSE(closed->f);
  CHECK(shoal::code_of(closed->closed) == errc::unavailable);
  CHECK(shoal::message_of(closed->closed) == "the guest closed its channel");
  CHECK(hub->counters().channels_open == 0);

  hub->send(id, encode(shutdown_frame{}));
  hub->close(id);
  hub->send(id, encode(shutdown_frame{}));
  REQUIRE(eventually([&] { return hub->counters().sends_dropped == 2; }));
  CHECK(box.next(std::chrono::milliseconds(50)) == std::nullopt); // nothing more for it
}

TEST_CASE("a guest that hangs up inside a frame is reported with the bytes it sent") {
  temp_dir tmp;
  inbox box; // outlives the hub: callbacks may run until stop()
  auto hub = start_hub();
  listen_on(*hub, tmp.sub("guest.sock"), box);
  {
    client_socket guest{tmp.sub("guest.sock")};
    guest.write_all(encode(fatal{"cut short"}).substr(0, 8));
  }
  auto closed = box.next();
  REQUIRE(closed);
  CHECK(shoal::message_of(closed->closed)
        == "the guest closed its channel in the middle of a frame (8 bytes of it received)");
}

TEST_CASE("close ends a guest channel without on_closed and removes its socket file") {
  temp_dir tmp;
  inbox box; // outlives the hub: callbacks may run until stop()
  auto hub = start_hub();
  auto path = tmp.sub("a.sock");
  auto id = listen_on(*hub, path, box);
  hub->close(id);
  REQUIRE(eventually([&] { return !exists(path); }));
  CHECK_THROWS(client_socket{path});

  auto id2 = listen_on(*hub, tmp.sub("b.sock"), box);
  client_socket guest{tmp.sub("b.sock")};
  guest.send(hello{});
  box.next_frame<hello>(); // accepted
  hub->send(id2, encode(shutdown_frame{}));
  hub->close(id2); // the queued SHUTDOWN still goes out first
  CHECK(recv_as<shutdown_frame>(guest) == shutdown_frame{});
  CHECK(guest.sees_eof());
  CHECK(box.next(std::chrono::milliseconds(50)) == std::nullopt);
  CHECK(hub->counters().channels_open == 0);
}

TEST_CASE("a guest that sends a frame only the supervisor sends is disconnected") {
  temp_dir tmp;
  inbox box; // outlives the hub: callbacks may run until stop()
  auto hub = start_hub();
  listen_on(*hub, tmp.sub("guest.sock"), box);
  client_socket guest{tmp.sub("guest.sock")};
  guest.send(init{"x", 1});
  auto closed = box.next();
  REQUIRE(closed);
  CHECK(shoal::code_of(closed->closed) == errc::invalid_argument);
  CHECK(shoal::message_of(closed->closed) == "the guest sent INIT, a frame only the supervisor sends");
  CHECK(guest.sees_eof());
}

TEST_CASE("an oversized or malformed frame from a guest closes its channel") {
  temp_dir tmp;
  guest_hub_config cfg;
  cfg.max_payload_bytes = 1024;
  inbox box;
  auto hub = start_hub(cfg);
  listen_on(*hub, tmp.sub("a.sock"), box);
  client_socket big{tmp.sub("a.sock")};
  big.send(fatal{std::string(2000, 'x')});
  auto closed = box.next();
  REQUIRE(closed);
  CHECK(shoal::message_of(closed->closed) == "guest frame of 2004 bytes exceeds the 1024-byte limit");

  listen_on(*hub, tmp.sub("b.sock"), box);
  client_socket garbage{tmp.sub("b.sock")};
  garbage.send(ready{1});
  garbage.write_all(std::string("\0\0\0\x02\x03\x00", 6)); // READY with a 1-byte payload
  CHECK(box.next_frame<ready>().max_inputs == 1);          // the good frame before it arrives
  closed = box.next();
  REQUIRE(closed);
  CHECK(shoal::code_of(closed->closed) == errc::invalid_argument);
}

TEST_CASE("frames sent before the guest connects are written once it does") {
  temp_dir tmp;
  inbox box; // outlives the hub: callbacks may run until stop()
  auto hub = start_hub();
  auto id = listen_on(*hub, tmp.sub("guest.sock"), box);
  hub->send(id, encode(init{"early", 1}));
  hub->send(id, encode(cancel{1}));
  client_socket guest{tmp.sub("guest.sock")};
  CHECK(recv_as<init>(guest).definition == "early");
  CHECK(recv_as<cancel>(guest).input_id == 1);
}

TEST_CASE("a large frame reaches a slow guest whole across partial writes") {
  temp_dir tmp;
  inbox box; // outlives the hub: callbacks may run until stop()
  auto hub = start_hub();
  auto id = listen_on(*hub, tmp.sub("guest.sock"), box);
  client_socket guest{tmp.sub("guest.sock")};
  int small = 4096;
  ::setsockopt(guest.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  std::string big(16 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>(i * 7);
  hub->send(id, encode(init{big, 2}));
  hub->send(id, encode(cancel{99}));
  CHECK(recv_as<init>(guest).definition == big);
  CHECK(recv_as<cancel>(guest).input_id == 99);
}

TEST_CASE("one guest hub serves many channels at once") {
  temp_dir tmp;
  inbox box;
  auto hub = start_hub();
  constexpr int channels = 32;
  std::vector<channel_id> ids;
  std::vector<std::unique_ptr<client_socket>> guests;
  for (int i = 0; i < channels; ++i)
    ids.push_back(listen_on(*hub, tmp.sub("g" + std::to_string(i) + ".sock"), box));
  CHECK(hub->counters().channels_open == channels);
  for (int i = 0; i < channels; ++i)
    guests.push_back(std::make_unique<client_socket>(tmp.sub("g" + std::to_string(i) + ".sock")));
  for (int i = 0; i < channels; ++i)
    hub->send(ids[i], encode(cancel{static_cast<uint64_t>(i)}));
  for (int i = 0; i < channels; ++i) {
    CHECK(recv_as<cancel>(*guests[i]).input_id == static_cast<uint64_t>(i));
    guests[i]->send(ready{static_cast<uint32_t>(i)});
  }
  std::vector<bool> seen(channels);
  for (int i = 0; i < channels; ++i) {
    auto e = box.next();
    REQUIRE(e);
    REQUIRE(e->f);
    auto r = std::get<ready>(*e->f);
    CHECK(e->id == ids[r.max_inputs]); // each frame is reported on its own channel
    seen[r.max_inputs] = true;
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [](bool b) { return b; }));
}

TEST_CASE("the guest hub rejects bad socket paths") {
  temp_dir tmp;
  inbox box; // outlives the hub: callbacks may run until stop()
  auto hub = start_hub();
  auto too_long = hub->listen("/tmp/" + std::string(200, 'x'), box.handlers());
  REQUIRE_FALSE(too_long);
  CHECK(shoal::code_of(too_long.error()) == errc::invalid_argument);

  auto file = tmp.sub("regular");
  std::ofstream{file} << "not a socket";
  auto taken = hub->listen(file, box.handlers());
  REQUIRE_FALSE(taken);
  CHECK(shoal::code_of(taken.error()) == errc::already_exists);

  auto missing_dir = hub->listen(tmp.sub("no/such/dir.sock"), box.handlers());
  REQUIRE_FALSE(missing_dir);
  CHECK(shoal::code_of(missing_dir.error()) == errc::unavailable);

  // A stale socket file from an earlier run (bound, never cleaned up) is replaced.
  auto stale = tmp.sub("stale.sock");
  {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, stale.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    ::close(fd);
  }
  REQUIRE(exists(stale));
  auto id = listen_on(*hub, stale, box);
  client_socket guest{stale};
  hub->send(id, encode(cancel{5}));
  CHECK(recv_as<cancel>(guest).input_id == 5);
}

TEST_CASE("stopping the guest hub closes every channel without callbacks") {
  temp_dir tmp;
  inbox box; // outlives the hub: callbacks may run until stop()
  auto hub = start_hub();
  auto id = listen_on(*hub, tmp.sub("a.sock"), box);
  listen_on(*hub, tmp.sub("b.sock"), box);
  client_socket guest{tmp.sub("a.sock")};
  hub->send(id, encode(shutdown_frame{}));
  CHECK(recv_as<shutdown_frame>(guest) == shutdown_frame{});
  hub->stop();
  hub->stop(); // idempotent
  CHECK(guest.sees_eof());
  CHECK_FALSE(exists(tmp.sub("b.sock")));
  CHECK(hub->counters().channels_open == 0);
  CHECK(box.size() == 0);
  auto late = hub->listen(tmp.sub("c.sock"), box.handlers());
  REQUIRE_FALSE(late);
  CHECK(shoal::code_of(late.error()) == errc::unavailable);
  hub->send(id, encode(shutdown_frame{})); // harmless
}

TEST_CASE("guest hub callbacks may send and close on their own channel") {
  temp_dir tmp;
  std::atomic<int> closed_calls{0}; // outlives the hub: callbacks may run until stop()
  std::unique_ptr<guest_hub> hub = start_hub();
  channel_handlers h;
  h.on_frame = [&](channel_id id, frame f) {
    if (std::holds_alternative<hello>(f))
      hub->send(id, encode(init{"from the callback", 1}));
    else if (std::holds_alternative<fatal>(f))
      hub->close(id);
  };
  h.on_closed = [&](channel_id, caf::error) { ++closed_calls; };
  auto id = hub->listen(tmp.sub("guest.sock"), h);
  REQUIRE(id);
  client_socket guest{tmp.sub("guest.sock")};
  guest.send(hello{});
  CHECK(recv_as<init>(guest).definition == "from the callback");
  guest.send(fatal{"bye"});
  CHECK(guest.sees_eof());
  hub->stop();
  CHECK(closed_calls == 0); // closed by close(), not reported
}
