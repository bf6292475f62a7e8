// channel_vat behind a real rpc_server: sync_rpc (which opens with the channel preface) against
// fake Gateway/Session/Queues servers of the test's own. Checks that calls on a direct_server are
// served directly, other calls through ordinary local calls, errors read as kj's RpcSystem makes
// them, a session ends with its channel, plain capnp clients still get capnp's RpcSystem on the
// same port, and messages a channel may not send are refused with an Abort.

#include "runtime/channel_vat.hpp"

#include <atomic>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <catch2/catch.hpp>
#include <kj/async-io.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/capnp_framing.hpp"
#include "runtime/channel_preface.hpp"
#include "runtime/client/sync_rpc.hpp"
#include "tests/support/sync_rpc_calls.hpp"
#include "runtime/rpc_server.hpp"
#include "schema/gateway.capnp.h"
#include "schema/queues.capnp.h"

using shoal::direct_server;
using shoal::client::sync_rpc;
namespace wire = shoal::wire;
using shoal::test::description_of;
using shoal::test::put;

namespace {

/// Touched on the server's kj thread while a call is in flight; read by the test between calls.
struct fake_state {
  std::vector<std::string> items;
  std::atomic<int> direct_calls{0};
  std::atomic<int> plain_calls{0};
  std::atomic<int> sessions{0};
};

class fake_queues final : public wire::Queues::Server, public direct_server {
public:
  explicit fake_queues(fake_state& st) : st_(st) {}

  // The ordinary capnp path (a plain client, or a channel before the vat found this server).
  kj::Promise<void> queuePut(QueuePutContext ctx) override {
    ++st_.plain_calls;
    return put(ctx.getParams());
  }
  kj::Promise<void> queueLen(QueueLenContext ctx) override {
    ++st_.plain_calls;
    ctx.getResults().setCount(st_.items.size());
    return kj::READY_NOW;
  }

  kj::Maybe<kj::Promise<results_writer>> call_direct(uint64_t interface_id, uint16_t method_id,
                                                     capnp::AnyPointer::Reader params) override {
    if (interface_id != capnp::typeId<wire::Queues>() || method_id != 5 /* queuePut */)
      return nullptr;
    ++st_.direct_calls;
    return put(params.getAs<wire::Queues::QueuePutParams>()).then([] {
      return results_writer([](capnp::AnyPointer::Builder results) {
        results.initAs<wire::Queues::QueuePutResults>();
      });
    });
  }

private:
  kj::Promise<void> put(wire::Queues::QueuePutParams::Reader p) {
    if (p.getName() == "bad")
      return KJ_EXCEPTION(FAILED, "[invalid_argument] no queue may be named 'bad'");
    for (auto item : p.getItems())
      st_.items.emplace_back(reinterpret_cast<const char*>(item.begin()), item.size());
    return kj::READY_NOW;
  }

  fake_state& st_;
};

class fake_session final : public wire::Session::Server {
public:
  fake_session(fake_state& st, shoal::rpc_context& ctx) : st_(st), ctx_(ctx) { ++st_.sessions; }
  ~fake_session() { --st_.sessions; }

  kj::Promise<void> queues(QueuesContext ctx) override {
    ctx.getResults().setQueues(ctx_.direct_servers.add(kj::heap<fake_queues>(st_)).castAs<wire::Queues>());
    return kj::READY_NOW;
  }

private:
  fake_state& st_;
  shoal::rpc_context& ctx_;
};

class fake_gateway final : public wire::Gateway::Server {
public:
  fake_gateway(fake_state& st, shoal::rpc_context& ctx) : st_(st), ctx_(ctx) {}

  kj::Promise<void> authenticate(AuthenticateContext ctx) override {
    if (ctx.getParams().getToken() != "good")
      return KJ_EXCEPTION(FAILED, "[unauthenticated] unknown token");
    ctx.getResults().setSession(kj::heap<fake_session>(st_, ctx_));
    return kj::READY_NOW;
  }

private:
  fake_state& st_;
  shoal::rpc_context& ctx_;
};

struct fake_shoald {
  fake_state state;
  std::unique_ptr<shoal::rpc_server> server;

  fake_shoald() {
    auto started = shoal::rpc_server::start("127.0.0.1:0", [this](shoal::rpc_context& ctx) {
      return capnp::Capability::Client(kj::heap<fake_gateway>(state, ctx));
    });
    REQUIRE(started);
    server = std::move(*started);
  }
  ~fake_shoald() { server->stop(std::chrono::milliseconds(100)); }
};


uint64_t len(sync_rpc& rpc) {
  return rpc.call<wire::Queues::QueueLenParams, wire::Queues::QueueLenResults>(
    rpc.caps().queues, capnp::typeId<wire::Queues>(), 7, [](auto) {},
    [](wire::Queues::QueueLenResults::Reader r) { return r.getCount(); });
}


template <class Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

/// A raw TCP connection to `address` ("127.0.0.1:port").
int dial(const std::string& address) {
  auto port = static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

} // namespace

TEST_CASE("a thread channel is served by the channel vat: direct calls, local calls, errors") {
  fake_shoald shoald;
  {
    sync_rpc rpc{shoald.server->address(), "good", "test", "", std::chrono::seconds(5)};
    CHECK(shoald.state.sessions == 1);
    for (int i = 0; i < 20; ++i)
      put(rpc, "q", "item" + std::to_string(i));
    // The vat finds the direct server behind the export right after the handshake; at most the
    // first call may have gone the ordinary way.
    CHECK(shoald.state.direct_calls >= 19);
    CHECK(shoald.state.plain_calls <= 1);
    CHECK(shoald.state.items.size() == 20);

    // A method the direct server does not take: an ordinary local call, results copied back.
    auto plain_before = shoald.state.plain_calls.load();
    CHECK(len(rpc) == 20);
    CHECK(shoald.state.plain_calls == plain_before + 1);

    // Errors read exactly as kj's RpcSystem makes them, and the channel goes on.
    CHECK(description_of([&] { put(rpc, "bad", "x"); }) ==
          "remote exception: [invalid_argument] no queue may be named 'bad'");
    put(rpc, "q", "after");
    CHECK(shoald.state.items.size() == 21);
  }
  // The channel closed: its exports (the session among them) are dropped.
  CHECK(eventually([&] { return shoald.state.sessions == 0; }));
}

TEST_CASE("a channel's refused token fails its handshake as with capnp's RpcSystem") {
  fake_shoald shoald;
  auto text = description_of([&] { sync_rpc rpc(shoald.server->address(), "bad", "test", "", std::chrono::seconds(5)); });
  CHECK(text == "remote exception: [unauthenticated] unknown token");
}

TEST_CASE("ordinary capnp clients get capnp's RpcSystem on the same port") {
  fake_shoald shoald;
  auto io = kj::setupAsyncIo();
  auto address = shoald.server->address();
  auto port = static_cast<unsigned>(std::stoi(address.substr(address.rfind(':') + 1)));
  auto stream = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(io.waitScope)->connect().wait(io.waitScope);
  capnp::TwoPartyClient client(*stream);
  auto gateway = client.bootstrap().castAs<wire::Gateway>();
  auto auth = gateway.authenticateRequest();
  auth.setToken("good");
  auto session = auth.send().getSession();
  auto queues = session.queuesRequest().send().getQueues();
  auto req = queues.queuePutRequest();
  req.setName("q");
  req.initItems(1).set(0, kj::arrayPtr(reinterpret_cast<const kj::byte*>("x"), 1));
  req.send().wait(io.waitScope);
  CHECK(shoald.state.plain_calls == 1);
  CHECK(shoald.state.direct_calls == 0);
  CHECK(shoald.state.items == std::vector<std::string>{"x"});
}

/// Sends the preface and `messages` on a raw connection, reads until the server closes, and
/// returns the reason of the Abort it ended with ("" if it sent none).
std::string abort_reason_after(const std::string& address,
                               const std::vector<std::function<void(capnp::rpc::Message::Builder)>>& messages) {
  int fd = dial(address);
  std::vector<uint8_t> out(shoal::channel_preface, shoal::channel_preface + shoal::channel_preface_size);
  for (auto& build : messages) {
    capnp::MallocMessageBuilder message;
    build(message.initRoot<capnp::rpc::Message>());
    shoal::append_framed(out, message);
  }
  REQUIRE(::send(fd, out.data(), out.size(), 0) == static_cast<ssize_t>(out.size()));
  std::vector<capnp::word> in(4096);
  size_t got = 0;
  for (;;) {
    auto n = ::recv(fd, reinterpret_cast<char*>(in.data()) + got, in.size() * sizeof(capnp::word) - got, 0);
    if (n <= 0)
      break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  auto words = kj::arrayPtr(const_cast<const capnp::word*>(in.data()), got / sizeof(capnp::word));
  std::string reason;
  while (words.size() > 0) { // the replies in order; the Abort is the last
    capnp::FlatArrayMessageReader reader(words);
    auto reply = reader.getRoot<capnp::rpc::Message>();
    if (reply.isAbort())
      reason = reply.getAbort().getReason();
    words = kj::arrayPtr(reader.getEnd(), static_cast<const capnp::word*>(words.end()));
  }
  return reason;
}

TEST_CASE("a channel that sends what a thread channel may not send gets an Abort and is closed") {
  fake_shoald shoald;
  auto bootstrap = [](capnp::rpc::Message::Builder m) { m.initBootstrap().setQuestionId(0); };
  auto call = [](capnp::rpc::Message::Builder m) {
    auto c = m.initCall();
    c.setQuestionId(1);
    c.initTarget().setImportedCap(0); // the bootstrap's export
    c.setInterfaceId(capnp::typeId<wire::Gateway>());
    c.setMethodId(0);
    return c;
  };
  SECTION("a message kind it does not take") {
    auto reason = abort_reason_after(shoald.server->address(), {[](capnp::rpc::Message::Builder m) {
      m.initResolve().setPromiseId(7);
    }});
    CHECK(reason.find("does not take Resolve") != std::string::npos);
  }
  SECTION("capabilities in a call's parameters") {
    auto reason = abort_reason_after(shoald.server->address(), {bootstrap, [&](capnp::rpc::Message::Builder m) {
      call(m).getParams().initCapTable(1)[0].setSenderHosted(0);
    }});
    CHECK(reason.find("may not carry capabilities") != std::string::npos);
  }
  SECTION("pipelining on a call's results") {
    auto reason = abort_reason_after(shoald.server->address(), {bootstrap, [&](capnp::rpc::Message::Builder m) {
      call(m).initTarget().initPromisedAnswer().setQuestionId(5);
    }});
    CHECK(reason.find("pipeline only on its Bootstrap") != std::string::npos);
  }
  SECTION("results sent elsewhere than to the caller") {
    auto reason = abort_reason_after(shoald.server->address(), {bootstrap, [&](capnp::rpc::Message::Builder m) {
      call(m).initSendResultsTo().setYourself();
    }});
    CHECK(reason.find("results go to the caller only") != std::string::npos);
  }
}
