#include "runtime/client/client.hpp"

#include <condition_variable>
#include <mutex>
#include <thread>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/timer.h>

#include "schema/gateway.capnp.h"

namespace shoal::client {

namespace {

std::string lowercase_errno_text(std::string text) {
  // kj describes socket errors as "connect(): Connection refused"; keep the useful part.
  auto colon = text.rfind(": ");
  if (colon != std::string::npos)
    text = text.substr(colon + 2);
  if (!text.empty() && text[0] >= 'A' && text[0] <= 'Z')
    text[0] = static_cast<char>(text[0] - 'A' + 'a');
  return text;
}

cluster_info convert(wire::ClusterInfo::Reader r) {
  cluster_info out;
  out.version = r.getVersion();
  out.node_id = r.getNodeId();
  for (auto role : r.getRoles())
    out.roles.emplace_back(role);
  out.listen_address = r.getListenAddress();
  out.state_dir = r.getStateDir();
  out.pid = r.getPid();
  out.started_at_ms = r.getStartedAtMs();
  out.environment = r.getEnvironment();
  out.schema_version = r.getSchemaVersion();
  out.actor_count = r.getActorCount();
  return out;
}

actor_info convert(wire::ActorSnapshot::Reader r) {
  actor_info out;
  out.name = r.getName();
  out.kind = r.getKind();
  out.state = r.getState();
  out.mailbox_depth = r.getMailboxDepth();
  for (auto c : r.getCounters())
    out.counters.emplace_back(c.getName(), c.getValue());
  for (auto d : r.getDetails())
    out.details.emplace_back(d.getKey(), d.getValue());
  return out;
}

token_info convert(wire::TokenInfo::Reader r) {
  token_info out;
  out.token_id = r.getTokenId();
  out.environment = r.getEnvironment();
  out.label = r.getLabel();
  out.created_at_ms = r.getCreatedAtMs();
  return out;
}

} // namespace

std::pair<std::string, std::string> parse_error(const std::string& description,
                                                const std::string& fallback_code) {
  auto open = description.find('[');
  auto close = open == std::string::npos ? std::string::npos : description.find("] ", open);
  if (open != std::string::npos && close != std::string::npos) {
    auto code = description.substr(open + 1, close - open - 1);
    bool plausible = !code.empty();
    for (char c : code)
      plausible = plausible && ((c >= 'a' && c <= 'z') || c == '_');
    if (plausible)
      return {code, description.substr(close + 2)};
  }
  return {fallback_code, description};
}

/// Lives on the kj thread; only touched there.
struct kj_side {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  kj::Maybe<wire::Session::Client> session;
};

struct connection::impl {
  std::string address;
  cluster_info hello;
  std::thread thread;
  std::mutex mutex;
  std::condition_variable ready;
  kj::Own<const kj::Executor> executor;
  kj_side* side = nullptr; // owned by the kj thread's stack
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop;
  bool closed = false;

  /// Runs `f(side)` on the kj thread and waits for its promise; kj exceptions pass through.
  template <class F>
  auto run_raw(F&& f) -> decltype(f(*side).wait(std::declval<kj::WaitScope&>())) {
    const kj::Executor* exec = nullptr;
    {
      std::lock_guard<std::mutex> guard{mutex};
      if (closed || !executor)
        throw rpc_error("unavailable", "the connection to " + address + " is closed");
      exec = executor.get();
    }
    return exec->executeSync([this, &f] { return f(*side); });
  }

  /// `run_raw`, with failures translated into `rpc_error`.
  template <class F>
  auto run(F&& f) -> decltype(f(*side).wait(std::declval<kj::WaitScope&>())) {
    try {
      return run_raw(std::forward<F>(f));
    } catch (const kj::Exception& ex) {
      std::string description = ex.getDescription().cStr();
      if (ex.getType() == kj::Exception::Type::DISCONNECTED)
        throw rpc_error("unavailable", "lost the connection to shoald at " + address + " ("
                                         + lowercase_errno_text(description) + ")");
      auto [code, message] = parse_error(description, "internal");
      throw rpc_error(code, message);
    }
  }

  wire::Session::Client& session(kj_side& s) {
    KJ_IF_MAYBE (sess, s.session)
      return *sess;
    throw rpc_error("unauthenticated", "not authenticated");
  }
};

connection::connection(std::unique_ptr<impl> self) : impl_(std::move(self)) {}

connection::~connection() { close(); }

const cluster_info& connection::hello() const noexcept { return impl_->hello; }

std::unique_ptr<connection> connection::open(const std::string& address, const std::string& token,
                                             connect_options opts) {
  auto self = std::make_unique<impl>();
  self->address = address;
  auto* p = self.get();
  p->thread = std::thread([p] {
    kj_side side;
    auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
    {
      std::lock_guard<std::mutex> guard{p->mutex};
      p->executor = kj::getCurrentThreadExecutor().addRef();
      p->side = &side;
      p->stop = kj::mv(stop.fulfiller);
    }
    p->ready.notify_all();
    stop.promise.wait(side.io.waitScope);
    side.session = nullptr;
    side.rpc = nullptr;
    side.stream = nullptr;
  });
  {
    std::unique_lock<std::mutex> lock{p->mutex};
    p->ready.wait(lock, [p] { return p->side != nullptr; });
  }
  std::unique_ptr<connection> conn{new connection(std::move(self))};

  auto timeout = opts.connect_timeout;
  auto version = opts.client_version;
  try {
    p->hello = p->run_raw([&](kj_side& s) {
      auto& timer = s.io.provider->getTimer();
      auto connected
        = s.io.provider->getNetwork()
            .parseAddress(address)
            .then([](kj::Own<kj::NetworkAddress> addr) { return addr->connect(); })
            .then([&s, token, version](kj::Own<kj::AsyncIoStream> stream) {
              s.stream = kj::mv(stream);
              s.rpc = kj::heap<capnp::TwoPartyClient>(*s.stream);
              auto gateway = s.rpc->bootstrap().castAs<wire::Gateway>();
              auto req = gateway.authenticateRequest();
              req.setToken(token);
              req.setClientVersion(version);
              return req.send().then([&s](capnp::Response<wire::Gateway::AuthenticateResults> r) {
                s.session = r.getSession();
                return convert(r.getInfo());
              });
            });
      return timer.timeoutAfter(timeout.count() * kj::MILLISECONDS, kj::mv(connected));
    });
  } catch (const kj::Exception& ex) {
    std::string description = ex.getDescription().cStr();
    auto [code, message] = parse_error(description, "");
    if (!code.empty()) // the server answered: e.g. [unauthenticated]
      throw rpc_error(code, message);
    // Anything else before the server answered is a reachability problem.
    std::string what = ex.getType() == kj::Exception::Type::OVERLOADED
                           && description.find("timed out") != std::string::npos
                         ? "no answer within " + std::to_string(timeout.count()) + " ms"
                         : lowercase_errno_text(description);
    if (description.find("too many segments") != std::string::npos
        || description.find("Message ends prematurely") != std::string::npos)
      what = "the peer does not speak the Shoal protocol";
    throw rpc_error("unavailable", "cannot reach shoald at " + address + " (" + what + ")");
  }
  return conn;
}

void connection::close() {
  {
    std::lock_guard<std::mutex> guard{impl_->mutex};
    if (impl_->closed)
      return;
    impl_->closed = true;
    if (impl_->stop)
      impl_->stop->fulfill();
  }
  if (impl_->thread.joinable())
    impl_->thread.join();
  impl_->executor = nullptr;
}

cluster_info connection::info() {
  return impl_->run([this](kj_side& s) {
    return impl_->session(s).infoRequest().send().then(
      [](capnp::Response<wire::Session::InfoResults> r) { return convert(r.getInfo()); });
  });
}

std::vector<actor_info> connection::list_actors() {
  std::vector<actor_info> all;
  std::string cursor;
  do {
    auto [page, next] = impl_->run([this, &cursor](kj_side& s) {
      auto req = impl_->session(s).listActorsRequest();
      req.initPage().setCursor(cursor);
      return req.send().then([](capnp::Response<wire::Session::ListActorsResults> r) {
        std::vector<actor_info> items;
        for (auto a : r.getActors())
          items.push_back(convert(a));
        return std::make_pair(kj::mv(items), std::string{r.getPage().getNextCursor()});
      });
    });
    for (auto& a : page)
      all.push_back(std::move(a));
    cursor = next;
  } while (!cursor.empty());
  return all;
}

actor_info connection::inspect_actor(const std::string& name) {
  return impl_->run([this, &name](kj_side& s) {
    auto req = impl_->session(s).inspectActorRequest();
    req.setName(name);
    return req.send().then(
      [](capnp::Response<wire::Session::InspectActorResults> r) { return convert(r.getActor()); });
  });
}

std::pair<std::string, token_info> connection::create_token(const std::string& environment,
                                                            const std::string& label) {
  return impl_->run([this, &environment, &label](kj_side& s) {
    auto req = impl_->session(s).createTokenRequest();
    req.setEnvironment(environment);
    req.setLabel(label);
    return req.send().then([](capnp::Response<wire::Session::CreateTokenResults> r) {
      return std::make_pair(std::string{r.getToken()}, convert(r.getInfo()));
    });
  });
}

std::vector<token_info> connection::list_tokens() {
  std::vector<token_info> all;
  std::string cursor;
  do {
    auto [page, next] = impl_->run([this, &cursor](kj_side& s) {
      auto req = impl_->session(s).listTokensRequest();
      req.initPage().setCursor(cursor);
      return req.send().then([](capnp::Response<wire::Session::ListTokensResults> r) {
        std::vector<token_info> items;
        for (auto t : r.getTokens())
          items.push_back(convert(t));
        return std::make_pair(kj::mv(items), std::string{r.getPage().getNextCursor()});
      });
    });
    for (auto& t : page)
      all.push_back(std::move(t));
    cursor = next;
  } while (!cursor.empty());
  return all;
}

void connection::revoke_token(const std::string& token_id) {
  impl_->run([this, &token_id](kj_side& s) {
    auto req = impl_->session(s).revokeTokenRequest();
    req.setTokenId(token_id);
    return req.send().ignoreResult();
  });
}

} // namespace shoal::client
