#include "runtime/client/client.hpp"
#include "runtime/client/sync_rpc.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <pthread.h>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/timer.h>

#include <deque>
#include <unordered_map>
#include <map>

#include "runtime/buffered_stream.hpp"
#include "schema/functions.capnp.h"
#include "schema/gateway.capnp.h"
#include "schema/images.capnp.h"
#include "schema/queues.capnp.h"

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
  out.admin = r.getAdmin();
  return out;
}

environment_summary convert(wire::EnvironmentInfo::Reader r) {
  environment_summary out;
  out.name = r.getName();
  out.created_at_ms = r.getCreatedAtMs();
  return out;
}

secret_summary convert(wire::SecretInfo::Reader r) {
  secret_summary out;
  out.name = r.getName();
  out.environment = r.getEnvironment();
  for (auto k : r.getKeys())
    out.keys.emplace_back(k);
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
  kj::Maybe<wire::Functions::Client> functions;
  /// Capabilities behind the handles given to callers, by handle id.
  std::map<uint64_t, wire::App::Client> apps;
  std::map<uint64_t, wire::InputSink::Client> sinks;
  uint64_t next_handle = 1;
  // Queues and dicts: the session's Queues capability (fetched once) and the handles of
  // ephemeral objects, by handle id (dropping one deletes its object).
  kj::Maybe<wire::Queues::Client> queues;
  std::map<uint64_t, wire::EphemeralObject::Client> ephemerals;
  kj::Promise<void> disconnect_watch = nullptr;
};

/// Items pushed by the kj thread, pulled by callers; `done` once the stream ended.
template <class T>
struct pull_queue {
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<T> items;
  bool done = false;
  std::string failure; ///< non-empty: the stream broke

  void push(std::vector<T> batch) {
    std::lock_guard<std::mutex> guard{mutex};
    for (auto& x : batch)
      items.push_back(std::move(x));
    changed.notify_all();
  }
  void finish(std::string why = {}) {
    std::lock_guard<std::mutex> guard{mutex};
    if (!done) {
      done = true;
      failure = std::move(why);
    }
    changed.notify_all();
  }
  std::pair<std::vector<T>, bool> pull(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock{mutex};
    changed.wait_for(lock, timeout, [this] { return !items.empty() || done; });
    std::vector<T> out{std::make_move_iterator(items.begin()), std::make_move_iterator(items.end())};
    items.clear();
    if (done && out.empty() && !failure.empty())
      throw rpc_error("unavailable", failure);
    return {std::move(out), done && items.empty()};
  }
};

output convert(wire::Output::Reader r) {
  static const char* names[] = {"success",        "failure",        "timeout",       "cancelled",
                                "internal_error", "generator_item", "generator_done"};
  output out;
  out.index = r.getIndex();
  auto status = static_cast<unsigned>(r.getStatus());
  out.status = status < 7 ? names[status] : "internal_error";
  auto data = r.getData();
  out.data.assign(reinterpret_cast<const char*>(data.begin()), data.size());
  out.error = r.getError();
  out.attempts = r.getAttempts();
  return out;
}

app_info convert(wire::AppInfo::Reader r) {
  static const char* modes[] = {"ephemeral", "detached", "deployed"};
  app_info out;
  out.app_id = r.getAppId();
  out.name = r.getName();
  auto mode = static_cast<unsigned>(r.getMode());
  out.mode = mode < 3 ? modes[mode] : "ephemeral";
  out.state = r.getState();
  out.version = r.getVersion();
  out.created_at_ms = r.getCreatedAtMs();
  for (auto n : r.getFunctionNames())
    out.function_names.emplace_back(n);
  out.environment = r.getEnvironment();
  return out;
}

function_ref convert(wire::FunctionRef::Reader r) {
  function_ref out;
  out.function_id = r.getFunctionId();
  out.name = r.getName();
  out.app_name = r.getAppName();
  out.is_class = r.getIsClass();
  out.is_generator = r.getIsGenerator();
  auto def = r.getDefinition();
  out.definition.assign(reinterpret_cast<const char*>(def.begin()), def.size());
  return out;
}

kj::ArrayPtr<const kj::byte> bytes_of(const std::string& s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

void fill_spec(wire::FunctionSpec::Builder w, const function_spec& f) {
  w.setName(f.name);
  w.setIsClass(f.is_class);
  w.setIsGenerator(f.is_generator);
  w.setDefinition(bytes_of(f.definition));
  w.setTimeoutMs(f.timeout_ms);
  auto r = w.initRetries();
  r.setMaxRetries(f.max_retries);
  r.setInitialDelayMs(f.retry_initial_delay_ms);
  r.setBackoffCoefficient(f.retry_backoff_coefficient);
  r.setMaxDelayMs(f.retry_max_delay_ms);
  auto a = w.initAutoscaling();
  a.setMinContainers(f.min_containers);
  a.setMaxContainers(f.max_containers);
  a.setBufferContainers(f.buffer_containers);
  a.setScaledownWindowMs(f.scaledown_window_ms);
  w.setMaxInputs(f.max_inputs);
  w.setCpuMillis(f.cpu_millis);
  w.setMemoryMb(f.memory_mb);
  w.setImage(f.image);
  auto env = w.initEnv(static_cast<unsigned>(f.env.size()));
  for (unsigned j = 0; j < f.env.size(); ++j) {
    env[j].setKey(f.env[j].first);
    env[j].setValue(f.env[j].second);
  }
  auto files = w.initFiles(static_cast<unsigned>(f.files.size()));
  for (unsigned j = 0; j < f.files.size(); ++j) {
    files[j].setPath(f.files[j].path);
    files[j].setSha256(f.files[j].sha256);
    files[j].setMode(f.files[j].mode);
  }
}

class output_receiver final : public wire::OutputReceiver::Server {
public:
  explicit output_receiver(std::shared_ptr<pull_queue<output>> q) : queue_(std::move(q)) {}
  ~output_receiver() { queue_->finish("the server dropped the call before it finished"); }

  kj::Promise<void> outputs(OutputsContext ctx) override {
    std::vector<output> batch;
    for (auto o : ctx.getParams().getOutputs())
      batch.push_back(convert(o));
    queue_->push(std::move(batch));
    return kj::READY_NOW;
  }
  kj::Promise<void> done(DoneContext) override {
    queue_->finish();
    return kj::READY_NOW;
  }

private:
  std::shared_ptr<pull_queue<output>> queue_;
};

class log_receiver final : public wire::LogReceiver::Server {
public:
  log_receiver(std::shared_ptr<pull_queue<log_line>> q, std::shared_ptr<std::atomic<bool>> ended)
    : queue_(std::move(q)), ended_(std::move(ended)) {}
  ~log_receiver() { queue_->finish(); }

  kj::Promise<void> lines(LinesContext ctx) override {
    std::vector<log_line> batch;
    for (auto l : ctx.getParams().getLines())
      batch.push_back(log_line{l.getAtMs(), l.getContainerId(), l.getStream(), l.getText()});
    queue_->push(std::move(batch));
    return kj::READY_NOW;
  }

  kj::Promise<void> end(EndContext) override {
    *ended_ = true; // before finish: a caller that sees the stream done also sees why
    queue_->finish();
    return kj::READY_NOW;
  }

private:
  std::shared_ptr<pull_queue<log_line>> queue_;
  std::shared_ptr<std::atomic<bool>> ended_;
};

/// Connects to `address` over a `buffered_stream` (kept in `stream`, `rpc`, which must outlive
/// the promise) and authenticates: the connection's kj thread does this once.
static kj::Promise<capnp::Response<wire::Gateway::AuthenticateResults>>
connect_and_authenticate(kj::AsyncIoProvider& io, const std::string& address, const std::string& token,
                         const connect_options& options, kj::Own<kj::AsyncIoStream>& stream,
                         kj::Own<capnp::TwoPartyClient>& rpc) {
  return io.getNetwork()
    .parseAddress(address)
    .then([](kj::Own<kj::NetworkAddress> addr) { return addr->connect(); })
    .then([&stream, &rpc, token, options](kj::Own<kj::AsyncIoStream> connected) {
      stream = kj::heap<buffered_stream>(kj::mv(connected));
      rpc = kj::heap<capnp::TwoPartyClient>(*stream);
      auto req = rpc->bootstrap().castAs<wire::Gateway>().authenticateRequest();
      req.setToken(token);
      req.setClientVersion(options.client_version);
      req.setEnvironment(options.environment);
      return req.send();
    });
}

/// Bumped in a forked child (pthread_atfork): channels from before the fork are the parent's.
static std::atomic<uint64_t> fork_generation{0};

static uint64_t current_fork_generation() {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, [] { ++fork_generation; });
    return true;
  }();
  (void)registered;
  return fork_generation.load(std::memory_order_relaxed);
}

/// A connection of the calling thread's own, for queue puts and gets: a `sync_rpc` (capnp RPC
/// over a blocking socket, no event loop), so a call is one `send` and a blocking `recv` on the
/// calling thread instead of a hand-off to the connection's kj thread and back, as with
/// redis-py's socket per thread. Opened on a thread's first queue put or get (the same token and
/// environment as the connection, its own session), kept until the thread ends. If a channel
/// cannot be opened, queue calls go through the kj thread like every other call.
struct thread_channel {
  /// Channels from before a fork are the parent's: a child closes its copy and opens its own.
  uint64_t generation = current_fork_generation();
  std::unique_ptr<sync_rpc> rpc;
  std::shared_ptr<std::atomic<int>> open; ///< the connection's count of open channels

  ~thread_channel() {
    if (open)
      --*open;
  }
};

/// The calling thread's channels, by connection id.
static thread_local std::unordered_map<uint64_t, std::unique_ptr<thread_channel>> this_thread_channels;

static std::atomic<uint64_t> next_connection_id{1};

struct connection::impl {
  std::string address;
  uint64_t id = next_connection_id++;
  std::string token;
  connect_options options;
  std::atomic<bool> lost{false};         ///< the kj thread saw the server go away
  std::atomic<bool> channels_off{false}; ///< not wanted, or opening one failed: do not try
  /// Thread channels open now (shared with them: a thread may outlive the connection).
  std::shared_ptr<std::atomic<int>> open_channels = std::make_shared<std::atomic<int>>(0);
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
      throw translate(ex);
    }
  }

  rpc_error translate(const kj::Exception& ex) const {
    std::string description = ex.getDescription().cStr();
    if (ex.getType() == kj::Exception::Type::DISCONNECTED)
      return rpc_error("unavailable", "lost the connection to shoald at " + address + " ("
                                        + lowercase_errno_text(description) + ")");
    auto [code, message] = parse_error(description, "internal");
    return rpc_error(code, message);
  }

  /// The calling thread's channel to this connection's server, opened on first use; nullptr
  /// when calls must go through the kj thread (closed or lost connection, or no channel).
  thread_channel* channel() {
    {
      std::lock_guard<std::mutex> guard{mutex};
      if (closed)
        return nullptr;
    }
    if (lost || channels_off)
      return nullptr;
    auto& mine = this_thread_channels;
    auto it = mine.find(id);
    if (it != mine.end()) {
      if (it->second->generation == current_fork_generation())
        return it->second.get();
      mine.erase(it); // inherited through fork: closing our copy leaves the parent's socket alone
    }
    if (open_channels->load() >= options.max_thread_channels)
      return nullptr; // at the cap: this call goes through the kj thread
    try {
      auto opened = open_channel();
      auto* raw = opened.get();
      mine.emplace(id, std::move(opened));
      return raw;
    } catch (...) {
      // E.g. an address this client cannot dial itself, or the server refused a second session.
      channels_off = true;
      return nullptr;
    }
  }

  /// Runs `f(rpc)` on the calling thread's channel.
  template <class F>
  auto run_on(thread_channel& ch, F&& f) {
    try {
      return f(*ch.rpc);
    } catch (const kj::Exception& ex) {
      if (ex.getType() == kj::Exception::Type::DISCONNECTED)
        this_thread_channels.erase(id); // the next call opens a new one, if it may
      throw translate(ex);
    }
  }

  std::unique_ptr<thread_channel> open_channel() {
    auto ch = std::make_unique<thread_channel>();
    ch->rpc = std::make_unique<sync_rpc>(address, token, options.client_version, options.environment,
                                         options.connect_timeout, options.reply_poll);
    ch->open = open_channels;
    ++*open_channels;
    return ch;
  }

  wire::Session::Client& session(kj_side& s) {
    KJ_IF_MAYBE (sess, s.session)
      return *sess;
    throw rpc_error("unauthenticated", "not authenticated");
  }

  /// The session's Functions capability, fetched once (pipelined).
  wire::Functions::Client& functions(kj_side& s) {
    KJ_IF_MAYBE (f, s.functions)
      return *f;
    s.functions = session(s).functionsRequest().send().getFunctions();
    KJ_IF_MAYBE (f, s.functions)
      return *f;
    KJ_UNREACHABLE;
  }
};

struct app_handle::state {
  std::shared_ptr<connection::impl> conn;
  uint64_t id = 0;
  bool closed = false;
};

struct map_call::state {
  std::shared_ptr<connection::impl> conn;
  uint64_t id = 0;
  std::string call_id;
  std::shared_ptr<pull_queue<output>> queue;
  bool closed = false;
};

struct log_stream::state {
  std::shared_ptr<connection::impl> conn;
  std::shared_ptr<pull_queue<log_line>> queue;
  bool will_end = false;
  /// Set by the receiver on the kj thread.
  std::shared_ptr<std::atomic<bool>> ended = std::make_shared<std::atomic<bool>>(false);
};

connection::connection(std::shared_ptr<impl> self) : impl_(std::move(self)) {}

connection::~connection() { close(); }

const cluster_info& connection::hello() const noexcept { return impl_->hello; }

std::unique_ptr<connection> connection::open(const std::string& address, const std::string& token,
                                             connect_options opts) {
  auto self = std::make_shared<impl>();
  self->address = address;
  self->token = token;
  self->options = opts;
  self->channels_off = !opts.thread_channels;
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
    side.apps.clear();
    side.sinks.clear();
    side.ephemerals.clear();
    side.queues = nullptr;
    side.disconnect_watch = nullptr;
    side.functions = nullptr;
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
  try {
    p->hello = p->run_raw([&](kj_side& s) {
      auto& timer = s.io.provider->getTimer();
      auto connected
        = connect_and_authenticate(*s.io.provider, address, token, opts, s.stream, s.rpc)
            .then([&s, p](capnp::Response<wire::Gateway::AuthenticateResults> r) {
              s.session = r.getSession();
              // Threads' channels must not outlive the server this connection talks to.
              s.disconnect_watch = s.rpc->onDisconnect()
                                     .then([p] { p->lost = true; }, [p](kj::Exception&&) { p->lost = true; })
                                     .eagerlyEvaluate(nullptr);
              return convert(r.getInfo());
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

// -- environments ---------------------------------------------------------------------------------

environment_summary connection::create_environment(const std::string& name) {
  return impl_->run([this, &name](kj_side& s) {
    auto req = impl_->session(s).createEnvironmentRequest();
    req.setName(name);
    return req.send().then([](capnp::Response<wire::Session::CreateEnvironmentResults> r) {
      return convert(r.getEnvironment());
    });
  });
}

std::vector<environment_summary> connection::list_environments() {
  return impl_->run([this](kj_side& s) {
    return impl_->session(s).listEnvironmentsRequest().send().then(
      [](capnp::Response<wire::Session::ListEnvironmentsResults> r) {
        std::vector<environment_summary> out;
        for (auto e : r.getEnvironments())
          out.push_back(convert(e));
        return out;
      });
  });
}

void connection::delete_environment(const std::string& name) {
  impl_->run([this, &name](kj_side& s) {
    auto req = impl_->session(s).deleteEnvironmentRequest();
    req.setName(name);
    return req.send().ignoreResult();
  });
}

// -- secrets --------------------------------------------------------------------------------------

secret_summary connection::create_secret(
  const std::string& name, const std::vector<std::pair<std::string, std::string>>& entries,
  bool force) {
  return impl_->run([this, &name, &entries, force](kj_side& s) {
    auto req = impl_->session(s).secretsRequest().send().getSecrets().createRequest();
    req.setName(name);
    req.setForce(force);
    auto list = req.initEntries(static_cast<unsigned>(entries.size()));
    for (unsigned i = 0; i < entries.size(); ++i) {
      list[i].setKey(entries[i].first);
      list[i].setValue(entries[i].second);
    }
    return req.send().then([](capnp::Response<wire::Secrets::CreateResults> r) {
      return convert(r.getSecret());
    });
  });
}

std::vector<secret_summary> connection::list_secrets() {
  return impl_->run([this](kj_side& s) {
    auto req = impl_->session(s).secretsRequest().send().getSecrets().listRequest();
    return req.send().then([](capnp::Response<wire::Secrets::ListResults> r) {
      std::vector<secret_summary> out;
      for (auto x : r.getSecrets())
        out.push_back(convert(x));
      return out;
    });
  });
}

void connection::delete_secret(const std::string& name) {
  impl_->run([this, &name](kj_side& s) {
    auto req = impl_->session(s).secretsRequest().send().getSecrets().deleteRequest();
    req.setName(name);
    return req.send().ignoreResult();
  });
}

// -- images ---------------------------------------------------------------------------------------

namespace {

image_step_result convert(wire::StepResult::Reader r) {
  static const char* names[] = {"cached", "building", "built", "failed"};
  image_step_result out;
  out.index = r.getIndex();
  out.image_id = r.getImageId();
  auto status = static_cast<unsigned>(r.getStatus());
  out.status = status < 4 ? names[status] : "failed";
  out.reason = r.getReason();
  out.duration_ms = r.getDurationMs();
  out.layer_bytes = r.getLayerBytes();
  return out;
}

image_info convert(wire::ImageInfo::Reader r) {
  image_info out;
  out.image_id = r.getImageId();
  out.parent_id = r.getParentId();
  out.step = r.getStep();
  out.created_at_ms = r.getCreatedAtMs();
  for (auto l : r.getLayers())
    out.layers.emplace_back(l);
  out.content_bytes = r.getContentBytes();
  for (auto kv : r.getEnv())
    out.env.emplace_back(kv.getKey(), kv.getValue());
  out.workdir = r.getWorkdir();
  out.user = r.getUser();
  for (auto a : r.getEntrypoint())
    out.entrypoint.emplace_back(a);
  for (auto a : r.getCmd())
    out.cmd.emplace_back(a);
  out.python = r.getPython();
  return out;
}

class build_receiver final : public wire::BuildProgress::Server {
public:
  explicit build_receiver(std::shared_ptr<pull_queue<image_build_event>> q) : queue_(std::move(q)) {}

  kj::Promise<void> step(StepContext ctx) override {
    image_build_event e;
    e.type = "step";
    e.step = convert(ctx.getParams().getResult());
    e.index = e.step.index;
    queue_->push({std::move(e)});
    return kj::READY_NOW;
  }

  kj::Promise<void> line(LineContext ctx) override {
    image_build_event e;
    e.type = "line";
    e.index = ctx.getParams().getIndex();
    e.text = ctx.getParams().getText();
    queue_->push({std::move(e)});
    return kj::READY_NOW;
  }

private:
  std::shared_ptr<pull_queue<image_build_event>> queue_;
};

} // namespace

struct image_build::state {
  std::shared_ptr<pull_queue<image_build_event>> queue;
  std::thread worker;
  std::mutex mutex;
  std::condition_variable finished;
  bool done = false;
  image_build_result result;
  std::string error_code;
  std::string error_message;
};

std::unique_ptr<image_build> connection::build_image(const image_build_spec& spec) {
  auto st = std::make_shared<image_build::state>();
  st->queue = std::make_shared<pull_queue<image_build_event>>();
  auto conn = impl_;
  st->worker = std::thread([conn, st, spec] {
    image_build_result result;
    std::string code;
    std::string message;
    try {
      result = conn->run([&](kj_side& s) {
        auto req = conn->session(s).imagesRequest().send().getImages().buildRequest();
        auto steps = req.initSpec().initSteps(static_cast<unsigned>(spec.steps.size()));
        req.getSpec().setIgnoreCache(spec.ignore_cache);
        for (unsigned i = 0; i < spec.steps.size(); ++i) {
          const auto& in = spec.steps[i];
          auto out = steps[i];
          out.setKind(in.kind);
          auto args = out.initArgs(static_cast<unsigned>(in.args.size()));
          for (unsigned j = 0; j < in.args.size(); ++j)
            args.set(j, in.args[j]);
          out.setBlob(in.blob);
          auto env = out.initEnv(static_cast<unsigned>(in.env.size()));
          for (unsigned j = 0; j < in.env.size(); ++j) {
            env[j].setKey(in.env[j].first);
            env[j].setValue(in.env[j].second);
          }
          out.setForceBuild(in.force_build);
          if (in.has_registry_auth) {
            auto auth = out.initRegistryAuth();
            auth.setKey(in.registry_user);
            auth.setValue(in.registry_password);
          }
          out.setLabel(in.label);
        }
        req.setProgress(kj::heap<build_receiver>(st->queue));
        return req.send().then([](capnp::Response<wire::Images::BuildResults> r) {
          image_build_result out;
          out.image_id = r.getImageId();
          for (auto x : r.getSteps())
            out.steps.push_back(convert(x));
          return out;
        });
      });
    } catch (const rpc_error& e) {
      code = e.code();
      message = e.message();
    } catch (const std::exception& e) {
      code = "internal";
      message = e.what();
    }
    {
      std::lock_guard<std::mutex> guard{st->mutex};
      st->result = std::move(result);
      st->error_code = std::move(code);
      st->error_message = std::move(message);
      st->done = true;
    }
    st->finished.notify_all();
    st->queue->finish();
  });
  return std::make_unique<image_build>(st);
}

image_build::~image_build() {
  // The worker owns what it uses (shared state and connection): dropping the handle of a build
  // still running lets it finish on the server and end on its own.
  if (st_->worker.joinable())
    st_->worker.detach();
}

std::pair<std::vector<image_build_event>, bool>
image_build::poll(std::chrono::milliseconds timeout) {
  return st_->queue->pull(timeout);
}

image_build_result image_build::result() {
  std::unique_lock<std::mutex> lock{st_->mutex};
  st_->finished.wait(lock, [this] { return st_->done; });
  if (!st_->error_code.empty())
    throw rpc_error(st_->error_code, st_->error_message);
  return st_->result;
}

std::vector<image_info> connection::list_images() {
  return impl_->run([this](kj_side& s) {
    auto req = impl_->session(s).imagesRequest().send().getImages().listRequest();
    return req.send().then([](capnp::Response<wire::Images::ListResults> r) {
      std::vector<image_info> out;
      for (auto x : r.getImages())
        out.push_back(convert(x));
      return out;
    });
  });
}

image_info connection::inspect_image(const std::string& image_id) {
  return impl_->run([this, &image_id](kj_side& s) {
    auto req = impl_->session(s).imagesRequest().send().getImages().inspectRequest();
    req.setImageId(image_id);
    return req.send().then(
      [](capnp::Response<wire::Images::InspectResults> r) { return convert(r.getImage()); });
  });
}

void connection::remove_image(const std::string& image_id) {
  impl_->run([this, &image_id](kj_side& s) {
    auto req = impl_->session(s).imagesRequest().send().getImages().removeRequest();
    req.setImageId(image_id);
    return req.send().ignoreResult();
  });
}

image_gc_report connection::collect_image_garbage() {
  return impl_->run([this](kj_side& s) {
    auto req = impl_->session(s).imagesRequest().send().getImages().collectGarbageRequest();
    return req.send().then([](capnp::Response<wire::Images::CollectGarbageResults> r) {
      auto in = r.getReport();
      image_gc_report out;
      out.images = in.getImages();
      out.trees_removed = in.getTreesRemoved();
      for (auto t : in.getTreesInUse())
        out.trees_in_use.emplace_back(t);
      out.chunks_removed = in.getChunksRemoved();
      out.chunk_bytes_removed = in.getChunkBytesRemoved();
      out.packs_rewritten = in.getPacksRewritten();
      out.packs_removed = in.getPacksRemoved();
      out.chunks_moved = in.getChunksMoved();
      out.bytes_moved = in.getBytesMoved();
      out.disk_bytes_freed = in.getDiskBytesFreed();
      return out;
    });
  });
}

// -- functions ------------------------------------------------------------------------------------

std::vector<std::string> connection::missing_blobs(const std::vector<std::string>& sha256) {
  return impl_->run([this, &sha256](kj_side& s) {
    auto req = impl_->functions(s).missingBlobsRequest();
    auto list = req.initSha256(static_cast<unsigned>(sha256.size()));
    for (unsigned i = 0; i < sha256.size(); ++i)
      list.set(i, sha256[i]);
    return req.send().then([](capnp::Response<wire::Functions::MissingBlobsResults> r) {
      std::vector<std::string> out;
      for (auto h : r.getMissing())
        out.emplace_back(h);
      return out;
    });
  });
}

void connection::put_blobs(const std::vector<std::pair<std::string, std::string>>& blobs) {
  impl_->run([this, &blobs](kj_side& s) {
    auto req = impl_->functions(s).putBlobsRequest();
    auto list = req.initBlobs(static_cast<unsigned>(blobs.size()));
    for (unsigned i = 0; i < blobs.size(); ++i) {
      list[i].setSha256(blobs[i].first);
      list[i].setData(bytes_of(blobs[i].second));
    }
    return req.send().ignoreResult();
  });
}

connection::created_app connection::create_app(const std::string& name, const std::string& mode,
                                               const std::vector<function_spec>& functions,
                                               const std::vector<code_file>& code) {
  wire::AppMode wire_mode;
  if (mode == "ephemeral")
    wire_mode = wire::AppMode::EPHEMERAL;
  else if (mode == "detached")
    wire_mode = wire::AppMode::DETACHED;
  else if (mode == "deployed")
    wire_mode = wire::AppMode::DEPLOYED;
  else
    throw rpc_error("invalid_argument",
                    "app mode '" + mode + "' is not one of ephemeral, detached, deployed");
  auto [id, info, refs] = impl_->run([&](kj_side& s) {
    auto req = impl_->functions(s).createAppRequest();
    req.setName(name);
    req.setMode(wire_mode);
    auto fns = req.initFunctions(static_cast<unsigned>(functions.size()));
    for (unsigned i = 0; i < functions.size(); ++i)
      fill_spec(fns[i], functions[i]);
    auto files = req.initCode(static_cast<unsigned>(code.size()));
    for (unsigned i = 0; i < code.size(); ++i) {
      files[i].setPath(code[i].path);
      files[i].setSha256(code[i].sha256);
      files[i].setMode(code[i].mode);
    }
    return req.send().then([&s](capnp::Response<wire::Functions::CreateAppResults> r) {
      auto handle = s.next_handle++;
      s.apps.emplace(handle, r.getApp());
      std::vector<function_ref> refs;
      for (auto f : r.getFunctions())
        refs.push_back(convert(f));
      return std::make_tuple(handle, convert(r.getInfo()), kj::mv(refs));
    });
  });
  auto st = std::make_shared<app_handle::state>();
  st->conn = impl_;
  st->id = id;
  return created_app{std::make_unique<app_handle>(st), std::move(info), std::move(refs)};
}

app_handle::~app_handle() {
  try {
    close();
  } catch (...) {
    // A handle outliving its connection has nothing left to release.
  }
}

app_info app_handle::info() {
  auto& c = *st_->conn;
  return c.run([this, &c](kj_side& s) {
    auto a = s.apps.find(st_->id);
    if (a == s.apps.end())
      throw rpc_error("invalid_argument", "the app handle was closed");
    return a->second.infoRequest().send().then(
      [](capnp::Response<wire::App::InfoResults> r) { return convert(r.getInfo()); });
  });
}

void app_handle::heartbeat() {
  auto& c = *st_->conn;
  c.run([this](kj_side& s) -> kj::Promise<void> {
    auto a = s.apps.find(st_->id);
    if (a == s.apps.end())
      return kj::READY_NOW;
    return a->second.heartbeatRequest().send().ignoreResult();
  });
}

void app_handle::stop() {
  auto& c = *st_->conn;
  c.run([this](kj_side& s) -> kj::Promise<void> {
    auto a = s.apps.find(st_->id);
    if (a == s.apps.end())
      return kj::READY_NOW;
    return a->second.stopRequest().send().ignoreResult();
  });
}

void app_handle::close() {
  if (st_->closed)
    return;
  st_->closed = true;
  auto& c = *st_->conn;
  c.run([this](kj_side& s) -> kj::Promise<void> {
    s.apps.erase(st_->id);
    return kj::READY_NOW;
  });
}

function_ref connection::derive_function(const std::string& function_id, const std::string& name,
                                         const function_spec& spec,
                                         const std::vector<std::string>& fields) {
  return impl_->run([&](kj_side& s) {
    auto req = impl_->functions(s).deriveRequest();
    req.setFunctionId(function_id);
    req.setName(name);
    fill_spec(req.initSpec(), spec);
    auto list = req.initFields(static_cast<unsigned>(fields.size()));
    for (unsigned i = 0; i < fields.size(); ++i)
      list.set(i, fields[i]);
    return req.send().then([](capnp::Response<wire::Functions::DeriveResults> r) {
      return convert(r.getFunction());
    });
  });
}

function_ref connection::lookup(const std::string& app_name, const std::string& name) {
  return impl_->run([&](kj_side& s) {
    auto req = impl_->functions(s).lookupRequest();
    req.setAppName(app_name);
    req.setName(name);
    return req.send().then([](capnp::Response<wire::Functions::LookupResults> r) {
      return convert(r.getFunction());
    });
  });
}

output connection::call(const std::string& function_id, const std::string& args) {
  return impl_->run([&](kj_side& s) {
    auto req = impl_->functions(s).callRequest();
    req.setFunctionId(function_id);
    req.setArgs(bytes_of(args));
    return req.send().then(
      [](capnp::Response<wire::Functions::CallResults> r) { return convert(r.getOutput()); });
  });
}

std::unique_ptr<map_call> connection::map(const std::string& function_id) {
  auto st = std::make_shared<map_call::state>();
  st->conn = impl_;
  st->queue = std::make_shared<pull_queue<output>>();
  std::tie(st->id, st->call_id) = impl_->run([&](kj_side& s) {
    auto req = impl_->functions(s).mapRequest();
    req.setFunctionId(function_id);
    req.setReceiver(kj::heap<output_receiver>(st->queue));
    auto promise = req.send();
    auto handle = s.next_handle++;
    s.sinks.emplace(handle, promise.getInputs());
    return promise.then([handle](capnp::Response<wire::Functions::MapResults> r) {
      return std::make_pair(handle, std::string{r.getCallId()});
    });
  });
  return std::make_unique<map_call>(st);
}

map_call::~map_call() {
  try {
    close();
  } catch (...) {
    // The connection is gone: the server ends the call on its own.
  }
}

const std::string& map_call::call_id() const noexcept { return st_->call_id; }

void map_call::push(std::vector<std::pair<uint64_t, std::string>> inputs) {
  auto& c = *st_->conn;
  c.run([this, &inputs](kj_side& s) {
    auto sink = s.sinks.find(st_->id);
    if (sink == s.sinks.end())
      throw rpc_error("invalid_argument", "inputs pushed after the map call was closed");
    auto req = sink->second.pushRequest();
    auto list = req.initInputs(static_cast<unsigned>(inputs.size()));
    for (unsigned i = 0; i < inputs.size(); ++i) {
      list[i].setIndex(inputs[i].first);
      list[i].setArgs(bytes_of(inputs[i].second));
    }
    return req.send();
  });
}

void map_call::close() {
  if (st_->closed)
    return;
  st_->closed = true;
  auto& c = *st_->conn;
  c.run([this](kj_side& s) -> kj::Promise<void> {
    auto sink = s.sinks.find(st_->id);
    if (sink == s.sinks.end())
      return kj::READY_NOW;
    auto client = sink->second;
    s.sinks.erase(sink);
    return client.closeRequest().send().ignoreResult();
  });
}

std::pair<std::vector<output>, bool> map_call::poll(std::chrono::milliseconds timeout) {
  return st_->queue->pull(timeout);
}

std::string connection::spawn(const std::string& function_id, const std::string& args) {
  return impl_->run([&](kj_side& s) {
    auto req = impl_->functions(s).spawnRequest();
    req.setFunctionId(function_id);
    req.setArgs(bytes_of(args));
    return req.send().then([](capnp::Response<wire::Functions::SpawnResults> r) {
      return std::string{r.getCallId()};
    });
  });
}

std::pair<std::vector<output>, bool> connection::get_outputs(const std::string& call_id,
                                                             uint64_t timeout_ms) {
  return impl_->run([&](kj_side& s) {
    auto req = impl_->functions(s).getOutputsRequest();
    req.setCallId(call_id);
    req.setTimeoutMs(timeout_ms);
    return req.send().then([](capnp::Response<wire::Functions::GetOutputsResults> r) {
      std::vector<output> out;
      for (auto o : r.getOutputs())
        out.push_back(convert(o));
      return std::make_pair(kj::mv(out), r.getDone());
    });
  });
}

void connection::cancel(const std::string& call_id) {
  impl_->run([&](kj_side& s) {
    auto req = impl_->functions(s).cancelRequest();
    req.setCallId(call_id);
    return req.send().ignoreResult();
  });
}

std::vector<app_info> connection::list_apps() {
  return impl_->run([&](kj_side& s) {
    return impl_->functions(s).listAppsRequest().send().then(
      [](capnp::Response<wire::Functions::ListAppsResults> r) {
        std::vector<app_info> out;
        for (auto a : r.getApps())
          out.push_back(convert(a));
        return out;
      });
  });
}

void connection::stop_app(const std::string& name) {
  impl_->run([&](kj_side& s) {
    auto req = impl_->functions(s).stopAppRequest();
    req.setName(name);
    return req.send().ignoreResult();
  });
}

std::unique_ptr<log_stream> connection::app_logs(const std::string& name, bool follow) {
  auto st = std::make_shared<log_stream::state>();
  st->conn = impl_;
  st->queue = std::make_shared<pull_queue<log_line>>();
  impl_->run([&](kj_side& s) {
    auto req = impl_->functions(s).appLogsRequest();
    req.setName(name);
    req.setFollow(follow);
    req.setReceiver(kj::heap<log_receiver>(st->queue, st->ended));
    auto queue = st->queue;
    return req.send().then([st, queue, follow](auto&& response) {
      st->will_end = follow && response.getWillEnd(); // read by the caller after run() returns
      if (!follow)
        queue->finish(); // the backlog arrived before the reply (E-order)
    });
  });
  return std::make_unique<log_stream>(st);
}

log_stream::~log_stream() { close(); }

std::pair<std::vector<log_line>, bool> log_stream::poll(std::chrono::milliseconds timeout) {
  return st_->queue->pull(timeout);
}

void log_stream::close() { st_->queue->finish(); }

bool log_stream::will_end() const noexcept { return st_->will_end; }

bool log_stream::ended() const noexcept { return *st_->ended; }

std::vector<container_info> connection::list_containers() {
  return impl_->run([&](kj_side& s) {
    return impl_->functions(s).listContainersRequest().send().then(
      [](capnp::Response<wire::Functions::ListContainersResults> r) {
        std::vector<container_info> out;
        for (auto c : r.getContainers())
          out.push_back(container_info{c.getContainerId(), c.getAppName(), c.getFunctionName(),
                                       c.getState(), c.getInflight(), c.getStartedAtMs(),
                                       c.getNodeId()});
        return out;
      });
  });
}

void connection::stop_container(const std::string& container_id) {
  impl_->run([&](kj_side& s) {
    auto req = impl_->functions(s).stopContainerRequest();
    req.setContainerId(container_id);
    return req.send().ignoreResult();
  });
}

// -- queues and dicts (schema/queues.capnp) ------------------------------------------------------

namespace {

wire::ObjectKind to_wire(data_kind kind) {
  return kind == data_kind::dict ? wire::ObjectKind::DICT : wire::ObjectKind::QUEUE;
}

data_object_info convert(wire::DataObjectInfo::Reader r) {
  data_object_info out;
  out.name = r.getName();
  out.kind = r.getKind() == wire::ObjectKind::DICT ? data_kind::dict : data_kind::queue;
  out.ephemeral = r.getEphemeral();
  out.created_at_ms = r.getCreatedAtMs();
  out.item_count = r.getItemCount();
  out.byte_count = r.getByteCount();
  out.partition_count = r.getPartitionCount();
  out.environment = r.getEnvironment();
  return out;
}

std::string data_string(capnp::Data::Reader data) {
  return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
}

/// The session's Queues capability, fetched once (pipelined).
wire::Queues::Client& queues_of(connection::impl& c, kj_side& s) {
  KJ_IF_MAYBE (q, s.queues)
    return *q;
  s.queues = c.session(s).queuesRequest().send().getQueues();
  KJ_IF_MAYBE (q, s.queues)
    return *q;
  KJ_UNREACHABLE;
}

} // namespace

struct ephemeral_handle::state {
  std::shared_ptr<connection::impl> conn;
  uint64_t id = 0;
  bool closed = false;
};

ephemeral_handle::~ephemeral_handle() {
  try {
    close();
  } catch (...) {
    // The connection is gone: the server dropped the handle (and deleted the object) with it.
  }
}

void ephemeral_handle::close() {
  if (st_->closed)
    return;
  st_->closed = true;
  st_->conn->run([this](kj_side& s) -> kj::Promise<void> {
    s.ephemerals.erase(st_->id);
    return kj::READY_NOW;
  });
}

data_object_info connection::lookup_object(data_kind kind, const std::string& name,
                                           bool create_if_missing) {
  return impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).lookupRequest();
    req.setKind(to_wire(kind));
    req.setName(name);
    req.setCreateIfMissing(create_if_missing);
    return req.send().then(
      [](capnp::Response<wire::Queues::LookupResults> r) { return convert(r.getInfo()); });
  });
}

data_object_info connection::create_object(data_kind kind, const std::string& name) {
  return impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).createRequest();
    req.setKind(to_wire(kind));
    req.setName(name);
    return req.send().then(
      [](capnp::Response<wire::Queues::CreateResults> r) { return convert(r.getInfo()); });
  });
}

std::unique_ptr<ephemeral_handle> connection::create_ephemeral(data_kind kind) {
  auto [id, info] = impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).createEphemeralRequest();
    req.setKind(to_wire(kind));
    return req.send().then([&s](capnp::Response<wire::Queues::CreateEphemeralResults> r) {
      auto handle = s.next_handle++;
      s.ephemerals.emplace(handle, r.getHandle());
      return std::make_pair(handle, convert(r.getInfo()));
    });
  });
  auto st = std::make_shared<ephemeral_handle::state>();
  st->conn = impl_;
  st->id = id;
  return std::make_unique<ephemeral_handle>(std::move(st), std::move(info));
}

void connection::delete_object(data_kind kind, const std::string& name) {
  impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).deleteRequest();
    req.setKind(to_wire(kind));
    req.setName(name);
    return req.send().ignoreResult();
  });
}

std::vector<data_object_info> connection::list_objects(data_kind kind) {
  std::vector<data_object_info> all;
  std::string cursor;
  do {
    auto [page, next] = impl_->run([&](kj_side& s) {
      auto req = queues_of(*impl_, s).listRequest();
      req.setKind(to_wire(kind));
      req.initPage().setCursor(cursor);
      return req.send().then([](capnp::Response<wire::Queues::ListResults> r) {
        std::vector<data_object_info> items;
        for (auto o : r.getObjects())
          items.push_back(convert(o));
        return std::make_pair(kj::mv(items), std::string{r.getPage().getNextCursor()});
      });
    });
    for (auto& o : page)
      all.push_back(std::move(o));
    cursor = next;
  } while (!cursor.empty());
  return all;
}

namespace {

/// Runs Queues method `method` (its ordinal in schema/queues.capnp) on the calling thread's
/// channel, or else through the kj thread, where `request(queues)` makes the request: `fill`
/// writes the parameters, `read` turns the results into the return value.
template <class Params, class Results, class Request, class Fill, class Read>
auto queues_call(connection::impl& c, uint16_t method, Request&& request, Fill&& fill, Read&& read) {
  if (auto* ch = c.channel())
    return c.run_on(*ch, [&](sync_rpc& rpc) {
      return rpc.call<Params, Results>(rpc.caps().queues, capnp::typeId<wire::Queues>(), method,
                                       fill, read);
    });
  return c.run([&](kj_side& s) {
    auto req = request(queues_of(c, s));
    fill(req);
    return req.send().then([&read](capnp::Response<Results> r) { return read(r); });
  });
}

} // namespace

void connection::queue_put(const std::string& name, const std::string& partition,
                           const std::vector<std::string>& items, uint64_t partition_ttl_ms) {
  using W = wire::Queues;
  queues_call<W::QueuePutParams, W::QueuePutResults>(
    *impl_, 5 /* queuePut @5 */, [](W::Client& q) { return q.queuePutRequest(); },
    [&](W::QueuePutParams::Builder req) {
      req.setName(name);
      req.setPartition(partition);
      req.setPartitionTtlMs(partition_ttl_ms);
      auto list = req.initItems(static_cast<unsigned>(items.size()));
      for (unsigned i = 0; i < items.size(); ++i)
        list.set(i, bytes_of(items[i]));
    },
    [](W::QueuePutResults::Reader) { return true; });
}

std::vector<std::string> connection::queue_get(const std::string& name,
                                               const std::string& partition, uint32_t max_items,
                                               uint64_t block_timeout_ms) {
  using W = wire::Queues;
  return queues_call<W::QueueGetParams, W::QueueGetResults>(
    *impl_, 6 /* queueGet @6 */, [](W::Client& q) { return q.queueGetRequest(); },
    [&](W::QueueGetParams::Builder req) {
      req.setName(name);
      req.setPartition(partition);
      req.setMaxItems(max_items);
      req.setBlockTimeoutMs(block_timeout_ms);
    },
    [](W::QueueGetResults::Reader r) {
      std::vector<std::string> out;
      auto items = r.getItems();
      out.reserve(items.size());
      for (auto item : items)
        out.push_back(data_string(item));
      return out;
    });
}

uint64_t connection::queue_len(const std::string& name, const std::string& partition, bool total) {
  return impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).queueLenRequest();
    req.setName(name);
    req.setPartition(partition);
    req.setTotal(total);
    return req.send().then(
      [](capnp::Response<wire::Queues::QueueLenResults> r) { return r.getCount(); });
  });
}

void connection::queue_clear(const std::string& name, const std::string& partition, bool all) {
  impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).queueClearRequest();
    req.setName(name);
    req.setPartition(partition);
    req.setAll(all);
    return req.send().ignoreResult();
  });
}

std::pair<std::vector<queue_item>, uint64_t>
connection::queue_peek(const std::string& name, const std::string& partition, uint64_t cursor,
                       uint32_t limit, uint64_t block_timeout_ms) {
  return impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).queuePeekRequest();
    req.setName(name);
    req.setPartition(partition);
    req.setCursor(cursor);
    req.setLimit(limit);
    req.setBlockTimeoutMs(block_timeout_ms);
    return req.send().then([](capnp::Response<wire::Queues::QueuePeekResults> r) {
      std::vector<queue_item> out;
      for (auto item : r.getItems())
        out.push_back(queue_item{item.getSeq(), data_string(item.getData())});
      return std::make_pair(kj::mv(out), r.getNextCursor());
    });
  });
}

std::pair<bool, std::string> connection::dict_get(const std::string& name, const std::string& key) {
  return impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).dictGetRequest();
    req.setName(name);
    req.setKey(bytes_of(key));
    return req.send().then([](capnp::Response<wire::Queues::DictGetResults> r) {
      return std::make_pair(r.getFound(), data_string(r.getValue()));
    });
  });
}

bool connection::dict_put(const std::string& name, const std::string& key,
                          const std::string& value, bool skip_if_exists) {
  return impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).dictPutRequest();
    req.setName(name);
    req.setKey(bytes_of(key));
    req.setValue(bytes_of(value));
    req.setSkipIfExists(skip_if_exists);
    return req.send().then(
      [](capnp::Response<wire::Queues::DictPutResults> r) { return r.getWritten(); });
  });
}

void connection::dict_update(const std::string& name,
                             const std::vector<std::pair<std::string, std::string>>& entries) {
  impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).dictUpdateRequest();
    req.setName(name);
    auto list = req.initEntries(static_cast<unsigned>(entries.size()));
    for (unsigned i = 0; i < entries.size(); ++i) {
      list[i].setKey(bytes_of(entries[i].first));
      list[i].setValue(bytes_of(entries[i].second));
    }
    return req.send().ignoreResult();
  });
}

std::pair<bool, std::string> connection::dict_pop(const std::string& name, const std::string& key) {
  return impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).dictPopRequest();
    req.setName(name);
    req.setKey(bytes_of(key));
    return req.send().then([](capnp::Response<wire::Queues::DictPopResults> r) {
      return std::make_pair(r.getFound(), data_string(r.getValue()));
    });
  });
}

bool connection::dict_contains(const std::string& name, const std::string& key) {
  return impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).dictContainsRequest();
    req.setName(name);
    req.setKey(bytes_of(key));
    return req.send().then(
      [](capnp::Response<wire::Queues::DictContainsResults> r) { return r.getFound(); });
  });
}

uint64_t connection::dict_len(const std::string& name) {
  return impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).dictLenRequest();
    req.setName(name);
    return req.send().then(
      [](capnp::Response<wire::Queues::DictLenResults> r) { return r.getCount(); });
  });
}

dict_page connection::dict_scan(const std::string& name, const std::string& cursor,
                                uint32_t limit, bool with_values) {
  return impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).dictScanRequest();
    req.setName(name);
    req.setCursor(bytes_of(cursor));
    req.setLimit(limit);
    req.setWithValues(with_values);
    return req.send().then([](capnp::Response<wire::Queues::DictScanResults> r) {
      dict_page page;
      for (auto e : r.getEntries())
        page.entries.emplace_back(data_string(e.getKey()), data_string(e.getValue()));
      page.next_cursor = data_string(r.getNextCursor());
      page.done = r.getDone();
      return page;
    });
  });
}

void connection::dict_clear(const std::string& name) {
  impl_->run([&](kj_side& s) {
    auto req = queues_of(*impl_, s).dictClearRequest();
    req.setName(name);
    return req.send().ignoreResult();
  });
}

} // namespace shoal::client
