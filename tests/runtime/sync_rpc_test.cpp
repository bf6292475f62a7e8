// sync_rpc against a small capnp server of the test's own (a fake, unit-test only): the protocol
// paths shoald's real server does not take, e.g. a capability that arrives as a promise and is
// resolved later (senderPromise, Resolve, Release), an Abort, and a server that goes away. The
// fake is a plain capnp server, which refuses the channel preface: every test here also covers
// sync_rpc's reconnect without it (shoald's own side is tests/runtime/channel_vat_test.cpp).

#include "runtime/client/sync_rpc.hpp"
#include "tests/support/sync_rpc_calls.hpp"

#include <future>
#include <string>
#include <thread>
#include <vector>

#include <capnp/rpc-twoparty.h>
#include <catch2/catch.hpp>
#include <kj/async-io.h>

#include "schema/gateway.capnp.h"
#include "schema/queues.capnp.h"

using shoal::client::reply_poll;
using shoal::client::sync_rpc;
using namespace std::chrono_literals;
namespace wire = shoal::wire;
using shoal::test::description_of;
using shoal::test::put;

namespace {

struct fake_state {
  std::vector<std::string> items;
  int resolves = 0;
};

class fake_queues final : public wire::Queues::Server {
public:
  fake_queues(fake_state& st, kj::Timer& timer) : st_(st), timer_(timer) {}

  kj::Promise<void> queuePut(QueuePutContext ctx) override {
    auto p = ctx.getParams();
    if (p.getName() == "bad")
      return KJ_EXCEPTION(FAILED, "[invalid_argument] no queue may be named 'bad'");
    for (auto item : p.getItems())
      st_.items.emplace_back(reinterpret_cast<const char*>(item.begin()), item.size());
    if (p.getName() == "slow") // answers after 200 ms
      return timer_.afterDelay(200 * kj::MILLISECONDS);
    return kj::READY_NOW;
  }

  kj::Promise<void> queueGet(QueueGetContext ctx) override {
    auto out = ctx.getResults().initItems(static_cast<unsigned>(st_.items.size()));
    for (unsigned i = 0; i < st_.items.size(); ++i)
      out.set(i, kj::arrayPtr(reinterpret_cast<const kj::byte*>(st_.items[i].data()),
                              st_.items[i].size()));
    st_.items.clear();
    return kj::READY_NOW;
  }

private:
  fake_state& st_;
  kj::Timer& timer_;
};

/// Hands out its Queues as a promise that resolves a little later, so the client sees a
/// senderPromise capability and then a Resolve message.
class fake_session final : public wire::Session::Server {
public:
  fake_session(fake_state& st, kj::Timer& timer) : st_(st), timer_(timer) {}

  kj::Promise<void> queues(QueuesContext ctx) override {
    auto& st = st_;
    auto& timer = timer_;
    wire::Queues::Client later = timer_.afterDelay(20 * kj::MILLISECONDS).then([&st, &timer]() {
      ++st.resolves;
      return wire::Queues::Client(kj::heap<fake_queues>(st, timer));
    });
    ctx.getResults().setQueues(kj::mv(later));
    return kj::READY_NOW;
  }

private:
  fake_state& st_;
  kj::Timer& timer_;
};

class fake_gateway final : public wire::Gateway::Server {
public:
  fake_gateway(fake_state& st, kj::Timer& timer) : st_(st), timer_(timer) {}

  kj::Promise<void> authenticate(AuthenticateContext ctx) override {
    if (ctx.getParams().getToken() != "good")
      return KJ_EXCEPTION(FAILED, "[unauthenticated] unknown token");
    ctx.getResults().setSession(kj::heap<fake_session>(st_, timer_));
    return kj::READY_NOW;
  }

private:
  fake_state& st_;
  kj::Timer& timer_;
};

/// The fake server on its own kj thread, on 127.0.0.1 and a free port, until destroyed.
class fake_server {
public:
  fake_server() {
    std::promise<std::string> address;
    auto ready = address.get_future();
    thread_ = std::thread([this, &address] {
      auto io = kj::setupAsyncIo();
      auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
      stop_ = kj::mv(stop.fulfiller);
      auto listener = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope)->listen();
      capnp::TwoPartyServer server(kj::heap<fake_gateway>(state, io.provider->getTimer()));
      auto serving = server.listen(*listener);
      address.set_value("127.0.0.1:" + std::to_string(listener->getPort()));
      stop.promise.exclusiveJoin(kj::mv(serving)).wait(io.waitScope);
    });
    address_ = ready.get();
  }

  ~fake_server() {
    stop_->fulfill();
    thread_.join();
  }

  const std::string& address() const { return address_; }

  fake_state state; ///< touched by the server thread only while a call is in flight

private:
  std::thread thread_;
  std::string address_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
};

std::vector<std::string> get_all(sync_rpc& rpc) {
  return rpc.call<wire::Queues::QueueGetParams, wire::Queues::QueueGetResults>(
    rpc.caps().queues, capnp::typeId<wire::Queues>(), 6, [](auto p) { p.setMaxItems(10); },
    [](wire::Queues::QueueGetResults::Reader r) {
      std::vector<std::string> out;
      for (auto item : r.getItems())
        out.emplace_back(reinterpret_cast<const char*>(item.begin()), item.size());
      return out;
    });
}



} // namespace

TEST_CASE("sync_rpc calls a capability that arrived as a promise, before and after it resolved") {
  fake_server server;
  sync_rpc rpc{server.address(), "good", "test", "", std::chrono::seconds(5)};
  put(rpc, "q", "a"); // sent to the promise: the server queues it until the promise resolves
  put(rpc, "q", "b");
  CHECK(get_all(rpc) == std::vector<std::string>{"a", "b"});
  std::this_thread::sleep_for(std::chrono::milliseconds(50)); // resolved long ago now
  put(rpc, "q", "c");
  CHECK(get_all(rpc) == std::vector<std::string>{"c"});
  CHECK(server.state.resolves == 1);
}

TEST_CASE("sync_rpc reports server errors as kj's RpcSystem does, and the call after still works") {
  fake_server server;
  sync_rpc rpc{server.address(), "good", "test", "", std::chrono::seconds(5)};
  auto text = description_of([&] { put(rpc, "bad", "x"); });
  CHECK(text == "remote exception: [invalid_argument] no queue may be named 'bad'");
  put(rpc, "q", "y");
  CHECK(get_all(rpc) == std::vector<std::string>{"y"});
}

TEST_CASE("sync_rpc fails the handshake for a refused token and for an address nobody serves") {
  fake_server server;
  auto text = description_of([&] { sync_rpc rpc(server.address(), "bad", "test", "", std::chrono::seconds(5)); });
  CHECK(text == "remote exception: [unauthenticated] unknown token");
  std::string closed;
  {
    fake_server gone;
    closed = gone.address();
  }
  try {
    sync_rpc rpc(closed, "good", "test", "", std::chrono::seconds(5));
    FAIL("connected to a closed port");
  } catch (const kj::Exception& e) {
    CHECK(e.getType() == kj::Exception::Type::DISCONNECTED);
  }
}

TEST_CASE("sync_rpc reports a server that went away as disconnected") {
  std::unique_ptr<fake_server> server = std::make_unique<fake_server>();
  sync_rpc rpc{server->address(), "good", "test", "", std::chrono::seconds(5)};
  put(rpc, "q", "a");
  server.reset();
  try {
    put(rpc, "q", "b");
    FAIL("a call to a stopped server succeeded");
  } catch (const kj::Exception& e) {
    CHECK(e.getType() == kj::Exception::Type::DISCONNECTED);
  }
}

TEST_CASE("reply_poll polls for quick replies only, and wins polling back once they are quick") {
  SECTION("a limit of zero never polls") {
    reply_poll off{0us};
    CHECK(off.budget_ns() == 0);
    off.replied(1000);
    CHECK(off.budget_ns() == 0);
  }
  SECTION("twice the typical reply, at most the limit") {
    reply_poll p{400us};
    CHECK(p.budget_ns() == 400000); // no reply yet: assume a quick one
    p.replied(100000);
    CHECK(p.typical_ns() == 100000);
    CHECK(p.budget_ns() == 200000);
    p.replied(300000);
    CHECK(p.typical_ns() == 150000);
    CHECK(p.budget_ns() == 300000);
  }
  SECTION("a long wait stops polling for a few calls, not for long") {
    reply_poll p{400us};
    p.replied(100000);
    p.replied(10'000'000'000); // a blocking get that waited 10 s counts as 4 limits
    CHECK(p.typical_ns() == 100000 + (1600000 - 100000) / 4);
    CHECK(p.budget_ns() == 0);
    int quick = 0;
    while (p.budget_ns() == 0 && quick < 100) {
      p.replied(100000);
      ++quick;
    }
    CHECK(quick == 1);
    CHECK(p.budget_ns() > 0);
  }
  SECTION("a process lets only so many threads poll at once, half its cores") {
    CHECK(reply_poll::slots() == static_cast<int>(std::thread::hardware_concurrency() / 2));
    int taken = 0;
    while (taken <= reply_poll::slots() && reply_poll::try_enter())
      ++taken;
    CHECK(taken == reply_poll::slots());
    CHECK_FALSE(reply_poll::try_enter());
    if (taken > 0) { // a slot given back can be taken again
      reply_poll::leave();
      CHECK(reply_poll::try_enter());
    }
    for (int i = 0; i < taken; ++i)
      reply_poll::leave();
  }
}

TEST_CASE("sync_rpc busy-polls for quick replies, then sleeps for a reply that takes longer") {
  fake_server server;
  // A limit far above a quick reply even on a loaded machine; the slow reply is 10x the limit.
  sync_rpc rpc{server.address(), "good", "test", "", std::chrono::seconds(5), 20000us};
  std::this_thread::sleep_for(std::chrono::milliseconds(50)); // the Queues promise resolved
  put(rpc, "q", "a");
  CHECK(rpc.polling().typical_ns() > 0);
  CHECK(rpc.polling().budget_ns() > 0);
  put(rpc, "slow", "b"); // outlasts the 20 ms of polling: the rest of the wait sleeps in recv
  CHECK(rpc.polling().typical_ns() > 20'000'000);
  CHECK(rpc.polling().budget_ns() == 0);
  put(rpc, "slow", "c"); // answered while not polling at all
  for (int i = 0; i < 20 && rpc.polling().budget_ns() == 0; ++i)
    put(rpc, "q", "d");
  CHECK(rpc.polling().budget_ns() > 0);
  auto got = get_all(rpc);
  REQUIRE(got.size() >= 4);
  CHECK(std::vector<std::string>(got.begin(), got.begin() + 3) == std::vector<std::string>{"a", "b", "c"});
}
