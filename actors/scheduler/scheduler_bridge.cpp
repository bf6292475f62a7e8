#include "actors/scheduler/scheduler_bridge.hpp"

#include <map>
#include <memory>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>

#include "runtime/kj_bridge.hpp"
#include "runtime/log.hpp"
#include "schema/functions.capnp.h"

namespace shoal::scheduler {

namespace {

constexpr auto call_deadline = std::chrono::hours(24 * 7);

template <class T>
std::string to_std(T reader) {
  return std::string{reader.begin(), reader.end()};
}

wire::OutputStatus to_wire(output_status s) {
  switch (s) {
    case output_status::success: return wire::OutputStatus::SUCCESS;
    case output_status::failure: return wire::OutputStatus::FAILURE;
    case output_status::timeout: return wire::OutputStatus::TIMEOUT;
    case output_status::cancelled: return wire::OutputStatus::CANCELLED;
    case output_status::internal_error: return wire::OutputStatus::INTERNAL_ERROR;
    case output_status::generator_item: return wire::OutputStatus::GENERATOR_ITEM;
    case output_status::generator_done: return wire::OutputStatus::GENERATOR_DONE;
  }
  return wire::OutputStatus::INTERNAL_ERROR;
}

wire::AppMode to_wire(app_mode m) {
  switch (m) {
    case app_mode::ephemeral: return wire::AppMode::EPHEMERAL;
    case app_mode::detached: return wire::AppMode::DETACHED;
    case app_mode::deployed: return wire::AppMode::DEPLOYED;
  }
  return wire::AppMode::EPHEMERAL;
}

app_mode from_wire(wire::AppMode m) {
  switch (m) {
    case wire::AppMode::DETACHED: return app_mode::detached;
    case wire::AppMode::DEPLOYED: return app_mode::deployed;
    default: return app_mode::ephemeral;
  }
}

kj::ArrayPtr<const kj::byte> bytes_of(const std::string& s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

void fill(wire::Output::Builder out, const call_output& o) {
  out.setIndex(o.index);
  out.setStatus(to_wire(o.status));
  out.setData(bytes_of(o.data));
  out.setError(o.error);
  out.setAttempts(o.attempts);
}

void fill(wire::AppInfo::Builder out, const app_info& a) {
  out.setAppId(a.app_id);
  out.setName(a.name);
  out.setMode(to_wire(a.mode));
  out.setState(a.state);
  out.setVersion(a.version);
  out.setCreatedAtMs(a.created_at_ms);
  auto names = out.initFunctionNames(static_cast<unsigned>(a.function_names.size()));
  for (unsigned i = 0; i < a.function_names.size(); ++i)
    names.set(i, a.function_names[i]);
  out.setEnvironment(a.environment);
}

void fill(wire::FunctionRef::Builder out, const function_def& f) {
  out.setFunctionId(f.function_id);
  out.setName(f.name);
  out.setAppName(f.app_name);
  out.setIsClass(f.is_class);
  out.setIsGenerator(f.is_generator);
  out.setDefinition(bytes_of(f.definition));
}

function_def from_wire(wire::FunctionSpec::Reader s) {
  function_def f;
  f.name = s.getName();
  f.is_class = s.getIsClass();
  f.is_generator = s.getIsGenerator();
  auto def = s.getDefinition();
  f.definition.assign(reinterpret_cast<const char*>(def.begin()), def.size());
  f.timeout_ms = s.getTimeoutMs();
  auto r = s.getRetries();
  f.max_retries = r.getMaxRetries();
  f.retry_initial_delay_ms = r.getInitialDelayMs();
  f.retry_backoff_coefficient = r.getBackoffCoefficient();
  f.retry_max_delay_ms = r.getMaxDelayMs();
  auto a = s.getAutoscaling();
  f.min_containers = a.getMinContainers();
  f.max_containers = a.getMaxContainers();
  f.buffer_containers = a.getBufferContainers();
  f.scaledown_window_ms = a.getScaledownWindowMs();
  f.max_inputs = std::max<uint32_t>(s.getMaxInputs(), 1);
  f.cpu_millis = s.getCpuMillis();
  f.memory_mb = s.getMemoryMb();
  f.image = s.getImage();
  for (auto kv : s.getEnv())
    f.env.emplace_back(kv.getKey(), kv.getValue());
  for (auto c : s.getFiles())
    f.files.push_back(code_file{c.getPath(), c.getSha256(), c.getMode()});
  return f;
}

/// The kj-thread end of an output stream: owns the client's OutputReceiver.
class output_relay final : private kj::TaskSet::ErrorHandler {
public:
  explicit output_relay(wire::OutputReceiver::Client receiver)
    : receiver_(kj::mv(receiver)), tasks_(*this) {}

  void outputs(const std::vector<call_output>& batch) {
    auto req = receiver_.outputsRequest();
    auto list = req.initOutputs(static_cast<unsigned>(batch.size()));
    for (unsigned i = 0; i < batch.size(); ++i)
      fill(list[i], batch[i]);
    tasks_.add(req.send());
  }

  void done() { tasks_.add(receiver_.doneRequest().send().ignoreResult()); }

  /// Resolves once every call sent so far has returned.
  kj::Promise<void> drained() { return tasks_.onEmpty(); }

private:
  void taskFailed(kj::Exception&& ex) override {
    log::debug("output_receiver_failed").kv("error", ex.getDescription().cStr());
  }

  wire::OutputReceiver::Client receiver_;
  kj::TaskSet tasks_;
};

struct functions_env;

/// CAF side of an output stream: posts every batch to the kj thread. The relay is owned by the
/// kj-thread environment; this sink only holds a weak reference to it, locked (and released)
/// inside kj tasks, so it never touches kj objects itself.
class kj_output_sink final : public output_sink {
public:
  kj_output_sink(std::shared_ptr<kj_mailbox> mailbox, std::weak_ptr<functions_env> env,
                 uint64_t relay_id)
    : mailbox_(std::move(mailbox)), env_(std::move(env)), relay_id_(relay_id) {}

  void outputs(std::vector<call_output> batch) override;
  void done() override;

private:
  std::shared_ptr<kj_mailbox> mailbox_;
  std::weak_ptr<functions_env> env_;
  uint64_t relay_id_;
};

class log_relay final : private kj::TaskSet::ErrorHandler {
public:
  explicit log_relay(wire::LogReceiver::Client receiver)
    : receiver_(kj::mv(receiver)), tasks_(*this) {}

  void lines(const std::vector<log_line>& batch) {
    if (broken_)
      return;
    auto req = receiver_.linesRequest();
    auto list = req.initLines(static_cast<unsigned>(batch.size()));
    for (unsigned i = 0; i < batch.size(); ++i) {
      list[i].setAtMs(batch[i].at_ms);
      list[i].setContainerId(batch[i].container_id);
      list[i].setStream(batch[i].stream);
      list[i].setText(batch[i].text);
    }
    tasks_.add(req.send());
  }

  /// After the last `lines`: calls on one capability arrive in the order they were sent.
  void end() {
    if (!broken_)
      tasks_.add(receiver_.endRequest().send().ignoreResult());
  }

  bool broken() const noexcept { return broken_; }

  /// Resolves once every batch sent so far has been delivered.
  kj::Promise<void> drained() { return tasks_.onEmpty(); }

private:
  void taskFailed(kj::Exception&&) override { broken_ = true; }

  wire::LogReceiver::Client receiver_;
  kj::TaskSet tasks_;
  bool broken_ = false;
};

/// CAF side of a log stream; like kj_output_sink, it reaches the relay only inside kj tasks.
class kj_log_sink final : public log_sink {
public:
  kj_log_sink(std::shared_ptr<kj_mailbox> mailbox, std::weak_ptr<functions_env> env,
              std::weak_ptr<log_relay> relay, uint64_t relay_id,
              std::shared_ptr<std::atomic<bool>> alive)
    : mailbox_(std::move(mailbox)), env_(std::move(env)), relay_(std::move(relay)),
      relay_id_(relay_id), alive_(std::move(alive)) {}

  void lines(std::vector<log_line> batch) override {
    mailbox_->post([relay = relay_, alive = alive_, batch = std::move(batch)] {
      auto r = relay.lock();
      if (!r || r->broken())
        *alive = false;
      else
        r->lines(batch);
    });
  }

  void end() override;

  bool alive() const override { return *alive_; }

private:
  std::shared_ptr<kj_mailbox> mailbox_;
  std::weak_ptr<functions_env> env_;
  std::weak_ptr<log_relay> relay_;
  uint64_t relay_id_;
  std::shared_ptr<std::atomic<bool>> alive_;
};

/// Everything a Functions capability and its children share; kj thread only.
struct functions_env final : private kj::TaskSet::ErrorHandler {
  functions_env(rpc_context& c, caf::actor_system& s, scheduler_actor sch, std::string env)
    : ctx(c), sys(s), scheduler(std::move(sch)), environment(std::move(env)), cleanup(*this) {}

  rpc_context& ctx;
  caf::actor_system& sys;
  scheduler_actor scheduler;
  std::string environment;
  /// The relays of live calls and log streams, by id; sinks refer to them by id.
  std::map<uint64_t, kj::Own<output_relay>> outputs;
  std::map<uint64_t, std::shared_ptr<log_relay>> logs;
  uint64_t next_relay = 1;
  /// Forgets finished relays once their last call has returned.
  kj::TaskSet cleanup;

  void finish_outputs(uint64_t id) {
    auto r = outputs.find(id);
    if (r == outputs.end())
      return;
    r->second->done();
    cleanup.add(r->second->drained().then([this, id] { outputs.erase(id); }));
  }

  /// Forgets a log relay once what was sent through it (`end` included) has been delivered.
  void finish_logs(uint64_t id) {
    auto r = logs.find(id);
    if (r == logs.end())
      return;
    cleanup.add(r->second->drained().then([this, id] { logs.erase(id); }));
  }

  void taskFailed(kj::Exception&& ex) override {
    log::debug("functions_cleanup_failed").kv("error", ex.getDescription().cStr());
  }

  template <class R, class... Ts>
  kj::Promise<R> ask(Ts... xs) {
    return bridge::ask<R>(sys, scheduler, bridge::default_timeout, std::move(xs)...);
  }
};

void kj_output_sink::outputs(std::vector<call_output> batch) {
  mailbox_->post([env = env_, id = relay_id_, batch = std::move(batch)] {
    if (auto e = env.lock()) {
      auto r = e->outputs.find(id);
      if (r != e->outputs.end())
        r->second->outputs(batch);
    }
  });
}

void kj_output_sink::done() {
  mailbox_->post([env = env_, id = relay_id_] {
    if (auto e = env.lock())
      e->finish_outputs(id);
  });
}

void kj_log_sink::end() {
  *alive_ = false;
  mailbox_->post([env = env_, relay = relay_, id = relay_id_] {
    if (auto r = relay.lock())
      r->end();
    if (auto e = env.lock())
      e->finish_logs(id);
  });
}

class app_impl final : public wire::App::Server {
public:
  app_impl(std::shared_ptr<functions_env> env, app_info info)
    : env_(std::move(env)), info_(std::move(info)) {}

  ~app_impl() {
    // Dropping an ephemeral app's capability (the client went away) stops it.
    if (info_.mode == app_mode::ephemeral && !stopped_)
      caf::anon_send(env_->scheduler, stop_app_atom::value, info_.environment, info_.app_id);
  }

  kj::Promise<void> info(InfoContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    return env_->ask<std::vector<app_info>>(list_apps_atom::value, info_.environment)
      .then([this, ctx](std::vector<app_info> apps) mutable {
        for (const auto& a : apps)
          if (a.app_id == info_.app_id) {
            fill(ctx.getResults().initInfo(), a);
            return;
          }
        fill(ctx.getResults().initInfo(), info_);
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> heartbeat(HeartbeatContext) override {
    caf::anon_send(env_->scheduler, heartbeat_atom::value, info_.app_id);
    return kj::READY_NOW;
  }

  kj::Promise<void> stop(StopContext) override {
    auto pass = env_->ctx.gate.enter();
    stopped_ = true;
    return env_->ask<void>(stop_app_atom::value, info_.environment, info_.app_id).attach(kj::mv(pass));
  }

private:
  std::shared_ptr<functions_env> env_;
  app_info info_;
  bool stopped_ = false;
};

class input_sink_impl final : public wire::InputSink::Server {
public:
  input_sink_impl(std::shared_ptr<functions_env> env, std::string call_id)
    : env_(std::move(env)), call_id_(std::move(call_id)) {}

  ~input_sink_impl() {
    if (!closed_)
      caf::anon_send(env_->scheduler, close_atom::value, call_id_);
  }

  kj::Promise<void> push(PushContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    std::vector<std::pair<uint64_t, std::string>> items;
    auto inputs = ctx.getParams().getInputs();
    items.reserve(inputs.size());
    for (auto in : inputs) {
      auto args = in.getArgs();
      items.emplace_back(in.getIndex(),
                         std::string(reinterpret_cast<const char*>(args.begin()), args.size()));
    }
    return env_->ask<void>(push_atom::value, call_id_, std::move(items)).attach(kj::mv(pass));
  }

  kj::Promise<void> close(CloseContext) override {
    auto pass = env_->ctx.gate.enter();
    closed_ = true;
    return env_->ask<void>(close_atom::value, call_id_).attach(kj::mv(pass));
  }

private:
  std::shared_ptr<functions_env> env_;
  std::string call_id_;
  bool closed_ = false;
};

class functions_impl final : public wire::Functions::Server {
public:
  explicit functions_impl(std::shared_ptr<functions_env> env) : env_(std::move(env)) {}

  kj::Promise<void> missingBlobs(MissingBlobsContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    std::vector<std::string> hashes;
    for (auto h : ctx.getParams().getSha256())
      hashes.emplace_back(h);
    return env_->ask<std::vector<std::string>>(missing_atom::value, std::move(hashes))
      .then([ctx](std::vector<std::string> missing) mutable {
        auto out = ctx.getResults().initMissing(static_cast<unsigned>(missing.size()));
        for (unsigned i = 0; i < missing.size(); ++i)
          out.set(i, missing[i]);
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> putBlobs(PutBlobsContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    std::vector<std::pair<std::string, std::string>> blobs;
    for (auto b : ctx.getParams().getBlobs()) {
      auto data = b.getData();
      blobs.emplace_back(b.getSha256(),
                         std::string(reinterpret_cast<const char*>(data.begin()), data.size()));
    }
    return env_->ask<void>(put_blobs_atom::value, std::move(blobs)).attach(kj::mv(pass));
  }

  kj::Promise<void> createApp(CreateAppContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto params = ctx.getParams();
    app_request req;
    req.name = params.getName();
    req.environment = env_->environment;
    req.mode = from_wire(params.getMode());
    for (auto spec : params.getFunctions())
      req.functions.push_back(from_wire(spec));
    for (auto file : params.getCode())
      req.code.push_back(code_file{file.getPath(), file.getSha256(), file.getMode()});
    return env_->ask<app_created>(create_app_atom::value, std::move(req))
      .then([this, ctx](app_created created) mutable {
        auto results = ctx.getResults();
        fill(results.initInfo(), created.app);
        auto fns = results.initFunctions(static_cast<unsigned>(created.functions.size()));
        for (unsigned i = 0; i < created.functions.size(); ++i)
          fill(fns[i], created.functions[i]);
        results.setApp(kj::heap<app_impl>(env_, created.app));
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> lookup(LookupContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    std::string app = ctx.getParams().getAppName();
    std::string name = ctx.getParams().getName();
    return env_->ask<function_def>(lookup_atom::value, env_->environment, app, name)
      .then([ctx](function_def f) mutable { fill(ctx.getResults().initFunction(), f); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> call(CallContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    std::string function_id = ctx.getParams().getFunctionId();
    auto args = ctx.getParams().getArgs();
    std::string payload(reinterpret_cast<const char*>(args.begin()), args.size());
    // No bridge deadline worth the name: the scheduler ends the call (function timeout, retries,
    // crash) and a first call may wait for an image build.
    return bridge::ask<call_output>(env_->sys, env_->scheduler, call_deadline, call_atom::value,
                                    function_id, std::move(payload))
      .then([ctx](call_output out) mutable { fill(ctx.getResults().initOutput(), out); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> map(MapContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    std::string function_id = ctx.getParams().getFunctionId();
    auto relay_id = env_->next_relay++;
    env_->outputs[relay_id] = kj::heap<output_relay>(ctx.getParams().getReceiver());
    output_sink_ptr sink = std::make_shared<kj_output_sink>(env_->ctx.mailbox, env_, relay_id);
    return env_->ask<std::string>(map_atom::value, function_id, sink)
      .then([this, ctx](std::string call_id) mutable {
        ctx.getResults().setCallId(call_id);
        ctx.getResults().setInputs(kj::heap<input_sink_impl>(env_, call_id));
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> spawn(SpawnContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    std::string function_id = ctx.getParams().getFunctionId();
    auto args = ctx.getParams().getArgs();
    std::string payload(reinterpret_cast<const char*>(args.begin()), args.size());
    return env_->ask<std::string>(spawn_atom::value, function_id, std::move(payload))
      .then([ctx](std::string call_id) mutable { ctx.getResults().setCallId(call_id); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> getOutputs(GetOutputsContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    std::string call_id = ctx.getParams().getCallId();
    uint64_t timeout_ms = ctx.getParams().getTimeoutMs();
    // The scheduler answers by the deadline; the bridge's own deadline must be later.
    auto deadline = std::chrono::milliseconds(timeout_ms) + bridge::default_timeout;
    return bridge::ask<call_result>(env_->sys, env_->scheduler, deadline, get_atom::value, call_id,
                                    timeout_ms)
      .then([ctx](call_result r) mutable {
        auto results = ctx.getResults();
        auto list = results.initOutputs(static_cast<unsigned>(r.outputs.size()));
        for (unsigned i = 0; i < r.outputs.size(); ++i)
          fill(list[i], r.outputs[i]);
        results.setDone(r.done);
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> cancel(CancelContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    std::string call_id = ctx.getParams().getCallId();
    return env_->ask<void>(cancel_atom::value, call_id).attach(kj::mv(pass));
  }

  kj::Promise<void> listApps(ListAppsContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    return env_->ask<std::vector<app_info>>(list_apps_atom::value, env_->environment)
      .then([ctx](std::vector<app_info> apps) mutable {
        auto list = ctx.getResults().initApps(static_cast<unsigned>(apps.size()));
        for (unsigned i = 0; i < apps.size(); ++i)
          fill(list[i], apps[i]);
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> stopApp(StopAppContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    std::string name = ctx.getParams().getName();
    return env_->ask<void>(stop_app_atom::value, env_->environment, name).attach(kj::mv(pass));
  }

  kj::Promise<void> appLogs(AppLogsContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    std::string name = ctx.getParams().getName();
    bool follow = ctx.getParams().getFollow();
    // Relays whose receiver went away are forgotten here (the scheduler drops their sinks on its
    // next tick, see log_sink::alive).
    for (auto i = env_->logs.begin(); i != env_->logs.end();)
      i = i->second->broken() ? env_->logs.erase(i) : std::next(i);
    auto relay = std::make_shared<log_relay>(ctx.getParams().getReceiver());
    auto relay_id = env_->next_relay++;
    env_->logs[relay_id] = relay;
    auto alive = std::make_shared<std::atomic<bool>>(true);
    log_sink_ptr sink
      = std::make_shared<kj_log_sink>(env_->ctx.mailbox, env_, relay, relay_id, alive);
    auto env = env_;
    return env_->ask<void>(logs_atom::value, env_->environment, name, sink, follow)
      .then([env, relay_id, follow, alive, ctx]() mutable {
        // A followed stream ends with `end()` (kj_log_sink::end) when the app's output is done.
        ctx.getResults().setWillEnd(follow);
        if (follow)
          return;
        // A one-shot read: the backlog was posted before the reply; drop the relay once sent.
        *alive = false;
        env->finish_logs(relay_id);
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> listContainers(ListContainersContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    return env_->ask<std::vector<container_summary>>(containers_atom::value)
      .then([ctx](std::vector<container_summary> cs) mutable {
        auto list = ctx.getResults().initContainers(static_cast<unsigned>(cs.size()));
        for (unsigned i = 0; i < cs.size(); ++i) {
          list[i].setContainerId(cs[i].container_id);
          list[i].setAppName(cs[i].app_name);
          list[i].setFunctionName(cs[i].function_name);
          list[i].setState(cs[i].state);
          list[i].setInflight(cs[i].inflight);
          list[i].setStartedAtMs(cs[i].started_at_ms);
          list[i].setNodeId(cs[i].node_id);
        }
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> derive(DeriveContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto params = ctx.getParams();
    std::string base = params.getFunctionId();
    std::string name = params.getName();
    auto spec = from_wire(params.getSpec());
    std::vector<std::string> fields;
    for (auto f : params.getFields())
      fields.emplace_back(f);
    return env_->ask<function_def>(derive_atom::value, env_->environment, base, name,
                                   std::move(spec), std::move(fields))
      .then([ctx](function_def f) mutable { fill(ctx.getResults().initFunction(), f); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> stopContainer(StopContainerContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    std::string id = ctx.getParams().getContainerId();
    return env_->ask<void>(stop_ct_atom::value, id).attach(kj::mv(pass));
  }

private:
  std::shared_ptr<functions_env> env_;
};

} // namespace

capnp::Capability::Client make_functions(rpc_context& ctx, caf::actor_system& sys,
                                         scheduler_actor scheduler, std::string environment) {
  // shared_ptr (kj thread only): the Functions capability and the App/InputSink capabilities it
  // hands out all use the environment; it lives until the last of them is dropped.
  auto env = std::make_shared<functions_env>(ctx, sys, std::move(scheduler), std::move(environment));
  return kj::heap<functions_impl>(std::move(env));
}

} // namespace shoal::scheduler
