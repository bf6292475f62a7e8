#include "actors/scheduler/scheduler.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <set>
#include <thread>
#include <unordered_map>

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <openssl/evp.h>

#include "actors/container_supervisor/container_supervisor_actor.hpp"
#include "actors/scheduler/function_queue.hpp"
#include "actors/scheduler/retry_policy.hpp"
#include "runtime/binary_codec.hpp"
#include "runtime/errc.hpp"
#include "runtime/ids.hpp"
#include "runtime/log.hpp"
#include "storage/key.hpp"

namespace shoal::scheduler {

namespace {

using namespace std::chrono;
using storage::key;
using storage::table;
using supervisor_actor = container_supervisor::container_supervisor_actor;

// Private messages: the housekeeping tick and the expiry of a waiting `get`.
using tick_atom = caf::atom_constant<caf::atom("sch_tick")>;
using expire_atom = caf::atom_constant<caf::atom("sch_expire")>;

using impl_actor = scheduler_actor::extend<caf::reacts_to<tick_atom>,
                                           caf::reacts_to<expire_atom, std::string, uint64_t>>;

constexpr uint8_t record_version = 1;
/// Function records (table::functions) only: version 2 added `function_def::files`; version 1
/// records are still read.
constexpr uint8_t function_record_version = 2;
constexpr auto write_deadline = seconds(30);

int64_t now_ms() {
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

/// What a spawned call keeps on disk besides its inputs and outputs.
struct stored_call {
  std::string function_id;
  int64_t created_at_ms = 0;
  uint64_t input_count = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stored_call& x) {
  return f(caf::meta::type_name("stored_call"), x.function_id, x.created_at_ms, x.input_count);
}

enum class call_kind : uint8_t { remote, map, spawn };

struct waiter {
  uint64_t id = 0;
  caf::typed_response_promise<call_result> promise;
};

struct call_state {
  std::string call_id;
  std::string function_id;
  call_kind kind = call_kind::remote;
  uint64_t inputs_seen = 0;
  uint64_t finished = 0;
  bool closed = false; ///< no more inputs will come
  bool cancelled = false;
  std::set<uint64_t> live_inputs;
  std::vector<call_output> outputs; ///< spawn: kept for `get`; map: not yet pushed to the sink
  caf::typed_response_promise<call_output> remote_promise;
  output_sink_ptr sink;
  std::vector<waiter> waiters;
  uint32_t unwritten = 0; ///< spawn: outputs whose RocksDB write has not been acknowledged yet

  bool done() const noexcept { return closed && finished == inputs_seen; }
};

struct function_state {
  function_def def;
  function_queue queue;
  retry_policy retry;
  uint32_t crash_streak = 0;
  std::string last_crash;
  clock::time_point broken_until{};
  bool stopped = false;
  /// Moving average of dispatch-to-output time; decides whether containers prefetch inputs.
  double avg_run_us = -1;

  explicit function_state(function_def d) : def(std::move(d)), queue(limits_of(def)) {
    retry.max_retries = def.max_retries;
    retry.initial_delay = milliseconds(def.retry_initial_delay_ms);
    retry.backoff_coefficient = def.retry_backoff_coefficient;
    retry.max_delay = milliseconds(def.retry_max_delay_ms);
  }

  static scaling_limits limits_of(const function_def& d) {
    scaling_limits l;
    l.min_containers = d.min_containers;
    l.max_containers = d.max_containers;
    l.buffer_containers = d.buffer_containers;
    l.scaledown_window = milliseconds(d.scaledown_window_ms);
    l.max_inputs = std::max<uint32_t>(d.max_inputs, 1);
    return l;
  }
};

struct container_entry {
  std::string container_id;
  std::string function_id;
  supervisor_actor handle; ///< valid once READY
  std::string state = "booting";
  int64_t started_at_ms = 0;
  bool stop_sent = false;
};

struct app_entry {
  app_info info;
  std::vector<std::string> function_ids;
  clock::time_point last_heartbeat{};
  std::deque<log_line> recent_logs;
  std::vector<log_sink_ptr> followers;
};

/// Where an input is: its function and its call.
struct input_route {
  std::string function_id;
  std::string call_id;
  uint64_t index = 0;
  clock::time_point dispatched_at{};
};

struct scheduler_state {
  const storage::store* db = nullptr;
  storage::writer_actor writer;
  node_agent::node_agent_actor node;
  scheduler_config cfg;

  std::map<std::string, app_entry> apps;                 ///< by app id
  std::map<std::string, std::string> app_by_name;        ///< "env/name" -> newest app id
  std::map<std::string, function_state> functions;       ///< by function id
  std::unordered_map<std::string, call_state> calls;     ///< by call id, unfinished (or waited on)
  std::map<std::string, container_entry> containers;     ///< by container id
  std::unordered_map<uint64_t, input_route> inputs;      ///< live input id -> route
  std::set<std::string> unflushed;                       ///< map calls with outputs to push
  uint64_t next_input_id = 1;
  uint64_t next_waiter_id = 1;

  // Counters for inspection.
  uint64_t calls_started = 0;
  uint64_t inputs_finished = 0;
  uint64_t retries = 0;
  uint64_t containers_requested = 0;
  uint64_t containers_crashed = 0;

  static inline const char* name = "scheduler";
};

using self_ptr = impl_actor::stateful_pointer<scheduler_state>;

std::string app_key(const std::string& environment, const std::string& name) {
  return environment + "/" + name;
}

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr);
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < size; ++i) {
    out.push_back(digits[digest[i] >> 4]);
    out.push_back(digits[digest[i] & 0xf]);
  }
  return out;
}

/// Code paths are relative, normalised and confined: no "..", no absolute paths, no empty parts.
bool valid_code_path(const std::string& path) {
  if (path.empty() || path.front() == '/' || path.size() > 1024)
    return false;
  size_t start = 0;
  while (start <= path.size()) {
    auto slash = path.find('/', start);
    auto part = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty() || part == "." || part == ".." || part.find('\0') != std::string::npos)
      return false;
    if (slash == std::string::npos)
      break;
    start = slash + 1;
  }
  return true;
}

/// Files a function ships with its image (copy=False): confined paths whose content was
/// uploaded. invalid_argument naming the first that is not.
caf::error check_files(const storage::store& db, const function_def& fn) {
  for (const auto& f : fn.files) {
    if (!valid_code_path(f.path))
      return make_error(errc::invalid_argument,
                        "function " + fn.name + ": the file path '" + f.path
                          + "' must be relative (the container path without its leading '/'), "
                            "without '..' or empty parts");
    auto blob = db.get(table::blobs, key{}.str(f.sha256).bytes());
    if (!blob)
      return blob.error();
    if (!*blob)
      return make_error(errc::invalid_argument,
                        "function " + fn.name + ": the content of /" + f.path + " (sha256 "
                          + f.sha256 + ") was not uploaded; call putBlobs first");
  }
  return {};
}

class scheduler_logic {
public:
  explicit scheduler_logic(self_ptr self) : self_(self), st_(self->state) {}

  // -- persistence -------------------------------------------------------------------------------

  void reload() {
    auto& db = *st_.db;
    auto err = db.scan(table::functions, {}, [&](std::string_view, std::string_view v) {
      function_def def;
      function_def_v1 v1{def};
      bool old = !v.empty() && static_cast<uint8_t>(v[0]) == 1;
      if (auto e = old ? decode_record(v, 1, v1) : decode_record(v, function_record_version, def)) {
        log::error("scheduler_reload_skipped").kv("what", "function").kv("error", message_of(e));
        return true;
      }
      st_.functions.emplace(def.function_id, function_state{def});
      return true;
    });
    err = err ? err : db.scan(table::apps, {}, [&](std::string_view, std::string_view v) {
      app_info info;
      if (auto e = decode_record(v, record_version, info)) {
        log::error("scheduler_reload_skipped").kv("what", "app").kv("error", message_of(e));
        return true;
      }
      // Only deployed apps outlive their client; others come back stopped (their durable
      // spawned calls still finish).
      if (info.mode != app_mode::deployed)
        info.state = "stopped";
      app_entry entry;
      entry.info = info;
      for (auto& [fid, fs] : st_.functions)
        if (fs.def.app_id == info.app_id) {
          entry.function_ids.push_back(fid);
          fs.stopped = info.state == "stopped";
        }
      auto k = app_key(info.environment, info.name);
      auto current = st_.app_by_name.find(k);
      if (info.state == "running" && info.mode == app_mode::deployed
          && (current == st_.app_by_name.end()
              || st_.apps[current->second].info.version < info.version))
        st_.app_by_name[k] = info.app_id;
      st_.apps[info.app_id] = std::move(entry);
      return true;
    });
    size_t requeued = 0;
    err = err ? err : db.scan(table::calls, {}, [&](std::string_view k, std::string_view v) {
      key::reader r{k};
      std::string call_id;
      stored_call stored;
      if (!r.str(call_id) || decode_record(v, record_version, stored))
        return true;
      auto& call = st_.calls[call_id];
      call.call_id = call_id;
      call.function_id = stored.function_id;
      call.kind = call_kind::spawn;
      call.inputs_seen = stored.input_count;
      call.closed = true;
      return true;
    });
    err = err ? err : db.scan(table::outputs, {}, [&](std::string_view k, std::string_view v) {
      key::reader r{k};
      std::string call_id;
      uint64_t index = 0;
      call_output out;
      if (!r.str(call_id) || !r.u64(index) || decode_record(v, record_version, out))
        return true;
      auto c = st_.calls.find(call_id);
      if (c != st_.calls.end()) {
        ++c->second.finished;
        c->second.outputs.push_back(std::move(out));
      }
      return true;
    });
    err = err ? err : db.scan(table::inputs, {}, [&](std::string_view k, std::string_view v) {
      key::reader r{k};
      std::string call_id;
      uint64_t index = 0;
      if (!r.str(call_id) || !r.u64(index))
        return true;
      auto c = st_.calls.find(call_id);
      if (c == st_.calls.end())
        return true;
      if (st_.functions.count(c->second.function_id) == 0)
        return true;
      enqueue(c->second, index, std::string{v}, 1, {});
      ++requeued;
      return true;
    });
    // Finished calls need not stay in memory: `get` reads them from disk.
    for (auto i = st_.calls.begin(); i != st_.calls.end();)
      if (i->second.done())
        i = st_.calls.erase(i);
      else
        ++i;
    if (err)
      log::error("scheduler_reload_failed").kv("error", message_of(err));
    log::info("scheduler_reloaded")
      .kv("apps", st_.apps.size())
      .kv("functions", st_.functions.size())
      .kv("pending_calls", st_.calls.size())
      .kv("requeued_inputs", requeued);
    for (auto& [fid, fs] : st_.functions)
      pump(fid);
  }

  void persist(storage::write_batch batch) {
    if (batch.empty())
      return;
    self_->request(st_.writer, write_deadline, storage::write_atom::value, std::move(batch))
      .then([] {},
            [](caf::error& err) {
              log::error("scheduler_write_failed").kv("error", message_of(err));
            });
  }

  // -- apps --------------------------------------------------------------------------------------

  caf::result<app_created> create_app(app_request& req) {
    if (req.name.empty())
      return make_error(errc::invalid_argument, "an app needs a name");
    std::vector<std::pair<std::string, std::string>> manifest;
    for (const auto& f : req.code) {
      if (!valid_code_path(f.path))
        return make_error(errc::invalid_argument,
                          "code path '" + f.path + "' must be relative, without '..' or empty parts");
      manifest.emplace_back(f.path, f.sha256);
    }
    std::set<std::string> names;
    for (const auto& fn : req.functions)
      if (fn.name.empty() || !names.insert(fn.name).second)
        return make_error(errc::invalid_argument,
                          fn.name.empty() ? "a function needs a name"
                                          : "the app defines '" + fn.name + "' twice");
    for (const auto& fn : req.functions)
      if (auto err = check_files(*st_.db, fn))
        return err;
    // Code blobs must have been uploaded.
    for (const auto& f : req.code) {
      auto blob = st_.db->get(table::blobs, key{}.str(f.sha256).bytes());
      if (!blob)
        return blob.error();
      if (!*blob)
        return make_error(errc::invalid_argument,
                          "the content of " + f.path + " (sha256 " + f.sha256
                            + ") was not uploaded; call putBlobs first");
    }
    std::sort(req.code.begin(), req.code.end(),
              [](const auto& a, const auto& b) { return a.path < b.path; });
    std::string manifest_text;
    for (const auto& f : req.code)
      manifest_text += f.path + '\0' + f.sha256 + '\0' + std::to_string(f.mode) + '\n';

    app_entry entry;
    auto& info = entry.info;
    info.app_id = make_id("ap");
    info.name = req.name;
    info.environment = req.environment;
    info.mode = req.mode;
    info.state = "running";
    info.created_at_ms = now_ms();
    info.code_id = req.code.empty() ? "" : sha256_hex(manifest_text);
    auto k = app_key(req.environment, req.name);
    uint32_t version = 1;
    for (const auto& [id, app] : st_.apps)
      if (app.info.environment == req.environment && app.info.name == req.name)
        version = std::max(version, app.info.version + 1);
    info.version = req.mode == app_mode::deployed ? version : 1;
    entry.last_heartbeat = clock::now();

    storage::write_batch batch;
    app_created out;
    for (auto& fn : req.functions) {
      fn.function_id = make_id("fu");
      fn.app_id = info.app_id;
      fn.app_name = info.name;
      fn.environment = info.environment;
      fn.code_id = info.code_id;
      info.function_names.push_back(fn.name);
      entry.function_ids.push_back(fn.function_id);
      batch.put(table::functions, key{}.str(fn.function_id).bytes(), encode_record(function_record_version, fn));
      out.functions.push_back(fn);
      st_.functions.emplace(fn.function_id, function_state{fn});
    }
    if (!req.code.empty())
      batch.put(table::code, key{}.str(info.code_id).bytes(), encode_record(record_version, req.code));
    batch.put(table::apps, key{}.str(info.app_id).bytes(), encode_record(record_version, info));
    out.app = info;

    // A deployed app replaces its previous version: the old one stops taking new calls, but its
    // containers finish what they run.
    if (req.mode == app_mode::deployed) {
      auto previous = st_.app_by_name.find(k);
      if (previous != st_.app_by_name.end() && previous->second != info.app_id)
        retire_app(previous->second, "replaced by version " + std::to_string(info.version), batch,
                   /*fail_waiting=*/false);
    }
    log::info("app_created")
      .kv("app_id", info.app_id)
      .kv("name", info.name)
      .kv("environment", info.environment)
      .kv("version", static_cast<int64_t>(info.version))
      .kv("functions", info.function_names.size());
    // Names resolve to deployed apps only: an ephemeral run of the same name must not hide them.
    if (req.mode == app_mode::deployed)
      st_.app_by_name[k] = info.app_id;
    st_.apps[info.app_id] = std::move(entry);

    auto rp = self_->make_response_promise<app_created>();
    self_->request(st_.writer, write_deadline, storage::write_atom::value, std::move(batch))
      .then(
        // scheduler_logic is a per-message temporary: continuations capture the actor, not it.
        [self = self_, rp, out, ids = out.functions]() mutable {
          for (const auto& fn : ids)
            scheduler_logic{self}.pump(fn.function_id); // min_containers start now
          rp.deliver(std::move(out));
        },
        [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
    return rp;
  }

  /// Stops an app: its functions take no new inputs, waiting inputs end (when `fail_waiting`),
  /// containers drain.
  void retire_app(const std::string& app_id, const std::string& why, storage::write_batch& batch,
                  bool fail_waiting) {
    auto a = st_.apps.find(app_id);
    if (a == st_.apps.end() || a->second.info.state == "stopped")
      return;
    auto& app = a->second;
    app.info.state = "stopped";
    batch.put(table::apps, key{}.str(app_id).bytes(), encode_record(record_version, app.info));
    auto k = app_key(app.info.environment, app.info.name);
    if (auto n = st_.app_by_name.find(k); n != st_.app_by_name.end() && n->second == app_id)
      st_.app_by_name.erase(n);
    for (const auto& fid : app.function_ids) {
      auto f = st_.functions.find(fid);
      if (f == st_.functions.end())
        continue;
      auto& fs = f->second;
      fs.stopped = true;
      if (fail_waiting)
        for (auto& in : fs.queue.drain_waiting())
          finish_input(in, call_output{in.index, output_status::cancelled, {},
                                       "app " + app.info.name + " was stopped (" + why + ")",
                                       in.attempt - 1});
      for (auto& [cid, c] : st_.containers)
        if (c.function_id == fid)
          stop_container(c);
    }
    log::info("app_stopped").kv("app_id", app_id).kv("name", app.info.name).kv("why", why);
    end_logs_if_done(app_id); // an app without containers has nothing more to say
  }

  /// An app by id, else the deployed app of that name, else the newest running app of that name.
  std::optional<std::string> find_app(const std::string& environment,
                                      const std::string& name_or_id) const {
    if (auto a = st_.apps.find(name_or_id);
        a != st_.apps.end() && a->second.info.environment == environment)
      return name_or_id;
    if (auto n = st_.app_by_name.find(app_key(environment, name_or_id)); n != st_.app_by_name.end())
      return n->second;
    std::optional<std::string> newest;
    int64_t newest_at = -1;
    for (const auto& [id, app] : st_.apps)
      if (app.info.environment == environment && app.info.name == name_or_id
          && app.info.state == "running" && app.info.created_at_ms > newest_at) {
        newest = id;
        newest_at = app.info.created_at_ms;
      }
    return newest;
  }

  caf::result<void> stop_app(const std::string& environment, const std::string& name_or_id) {
    auto app_id = find_app(environment, name_or_id);
    if (!app_id)
      return make_error(errc::not_found, "no running app named '" + name_or_id
                                           + "' in environment '" + environment
                                           + "'; `shoal app list` shows the apps");
    storage::write_batch batch;
    retire_app(*app_id, "stopped by request", batch, /*fail_waiting=*/true);
    persist(std::move(batch));
    return caf::unit;
  }

  std::vector<app_info> list_apps(const std::string& environment) {
    std::vector<app_info> out;
    for (const auto& [id, app] : st_.apps)
      if (environment.empty() || app.info.environment == environment)
        out.push_back(app.info);
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
      return a.created_at_ms != b.created_at_ms ? a.created_at_ms > b.created_at_ms
                                                : a.app_id < b.app_id;
    });
    return out;
  }

  caf::result<function_def> lookup(const std::string& environment, const std::string& app_name,
                                   const std::string& name) {
    // An app id ("ap-...") names any app, e.g. a container's own ephemeral app; a name resolves
    // to the deployed app.
    std::optional<std::string> app_id;
    if (auto a = st_.apps.find(app_name);
        a != st_.apps.end() && a->second.info.environment == environment)
      app_id = app_name;
    else if (auto n = st_.app_by_name.find(app_key(environment, app_name));
             n != st_.app_by_name.end())
      app_id = n->second;
    if (!app_id)
      return make_error(errc::not_found, "no deployed app named '" + app_name
                                           + "' in environment '" + environment
                                           + "'; deploy it with `shoal deploy`");
    auto& app = st_.apps[*app_id];
    for (const auto& fid : app.function_ids) {
      auto& fs = st_.functions.at(fid);
      if (fs.def.name == name)
        return fs.def;
    }
    return make_error(errc::not_found, "app '" + app_name + "' has no function named '" + name
                                         + "'; it has: " + join(app.info.function_names));
  }

  static std::string join(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names)
      out += (out.empty() ? "" : ", ") + n;
    return out.empty() ? "(none)" : out;
  }

  void heartbeat(const std::string& app_id) {
    auto a = st_.apps.find(app_id);
    if (a != st_.apps.end())
      a->second.last_heartbeat = clock::now();
  }

  // -- calls -------------------------------------------------------------------------------------

  /// The function, or an error the caller returns.
  caf::expected<function_state*> callable(const std::string& function_id) {
    auto f = st_.functions.find(function_id);
    if (f == st_.functions.end())
      return make_error(errc::not_found, "no function with id '" + function_id + "'");
    if (f->second.stopped)
      return make_error(errc::not_found, "function " + f->second.def.name + " belongs to app "
                                           + f->second.def.app_name + ", which was stopped");
    return &f->second;
  }

  /// Fails fast while a function is crash-looping.
  std::optional<call_output> broken_output(function_state& fs, uint64_t index) {
    if (clock::now() >= fs.broken_until)
      return std::nullopt;
    return call_output{index, output_status::internal_error, {},
                       "function " + fs.def.name + " cannot start a container: " + fs.last_crash,
                       0};
  }

  call_state& new_call(const std::string& function_id, call_kind kind) {
    auto id = make_id("fc");
    auto& call = st_.calls[id];
    call.call_id = id;
    call.function_id = function_id;
    call.kind = kind;
    ++st_.calls_started;
    return call;
  }

  void enqueue(call_state& call, uint64_t index, std::string args, uint32_t attempt,
               clock::time_point not_before) {
    auto& fs = st_.functions.at(call.function_id);
    queued_input in;
    in.input_id = st_.next_input_id++;
    in.call_id = call.call_id;
    in.index = index;
    in.args = std::move(args);
    in.attempt = attempt;
    in.not_before = not_before;
    st_.inputs[in.input_id] = input_route{call.function_id, call.call_id, index};
    call.live_inputs.insert(in.input_id);
    fs.queue.add(std::move(in));
  }

  caf::result<call_output> call(const std::string& function_id, std::string& args) {
    auto fs = callable(function_id);
    if (!fs)
      return fs.error();
    if (auto broken = broken_output(**fs, 0))
      return *broken;
    auto& call = new_call(function_id, call_kind::remote);
    call.remote_promise = self_->make_response_promise<call_output>();
    call.inputs_seen = 1;
    call.closed = true;
    auto promise = call.remote_promise;
    enqueue(call, 0, std::move(args), 1, {});
    pump(function_id);
    return promise;
  }

  caf::result<std::string> map(const std::string& function_id, output_sink_ptr sink) {
    auto fs = callable(function_id);
    if (!fs)
      return fs.error();
    auto& call = new_call(function_id, call_kind::map);
    call.sink = std::move(sink);
    return call.call_id;
  }

  caf::result<void> push(const std::string& call_id,
                         std::vector<std::pair<uint64_t, std::string>>& items) {
    auto c = st_.calls.find(call_id);
    if (c == st_.calls.end() || c->second.kind != call_kind::map)
      return make_error(errc::not_found, "no open map call '" + call_id + "'");
    auto& call = c->second;
    if (call.closed)
      return make_error(errc::invalid_argument, "map call " + call_id + " was already closed");
    auto& fs = st_.functions.at(call.function_id);
    std::vector<call_output> immediate;
    for (auto& [index, args] : items) {
      ++call.inputs_seen;
      if (call.cancelled) {
        ++call.finished;
        immediate.push_back(call_output{index, output_status::cancelled, {}, "the call was cancelled", 0});
      } else if (auto broken = broken_output(fs, index)) {
        ++call.finished;
        immediate.push_back(std::move(*broken));
      } else {
        enqueue(call, index, std::move(args), 1, {});
      }
    }
    if (!immediate.empty())
      call.sink->outputs(std::move(immediate));
    pump(call.function_id);
    return caf::unit;
  }

  caf::result<void> close(const std::string& call_id) {
    auto c = st_.calls.find(call_id);
    if (c == st_.calls.end())
      return caf::unit; // finished already
    c->second.closed = true;
    maybe_complete(c->second);
    return caf::unit;
  }

  caf::result<std::string> spawn(const std::string& function_id, std::string& args) {
    auto fs = callable(function_id);
    if (!fs)
      return fs.error();
    auto call_id = make_id("fc");
    stored_call stored{function_id, now_ms(), 1};
    storage::write_batch batch;
    batch.put(table::calls, key{}.str(call_id).bytes(), encode_record(record_version, stored));
    batch.put(table::inputs, key{}.str(call_id).u64(0).bytes(), args);
    auto rp = self_->make_response_promise<std::string>();
    self_->request(st_.writer, write_deadline, storage::write_atom::value, std::move(batch))
      .then(
        [self = self_, rp, call_id, function_id, args = std::move(args)]() mutable {
          scheduler_logic logic{self};
          auto& st_ = self->state;
          auto& call = st_.calls[call_id];
          call.call_id = call_id;
          call.function_id = function_id;
          call.kind = call_kind::spawn;
          call.inputs_seen = 1;
          call.closed = true;
          ++st_.calls_started;
          auto f = st_.functions.find(function_id);
          if (f != st_.functions.end()) {
            if (auto broken = logic.broken_output(f->second, 0)) {
              logic.complete(call, std::move(*broken));
            } else {
              logic.enqueue(call, 0, std::move(args), 1, {});
              logic.pump(function_id);
            }
          }
          rp.deliver(call_id);
        },
        [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
    return rp;
  }

  caf::result<call_result> get(const std::string& call_id, uint64_t timeout_ms) {
    auto c = st_.calls.find(call_id);
    if (c == st_.calls.end())
      return read_finished_call(call_id);
    auto& call = c->second;
    if (call.kind != call_kind::spawn)
      return make_error(errc::invalid_argument,
                        "call " + call_id + " was not spawned; only spawned calls can be fetched");
    if (call.done() || timeout_ms == 0)
      return call_result{call.outputs, call.done()};
    waiter w;
    w.id = st_.next_waiter_id++;
    w.promise = self_->make_response_promise<call_result>();
    auto promise = w.promise;
    call.waiters.push_back(std::move(w));
    self_->delayed_send(caf::actor_cast<impl_actor>(self_), milliseconds(timeout_ms),
                        expire_atom::value, call_id, call.waiters.back().id);
    return promise;
  }

  caf::result<call_result> read_finished_call(const std::string& call_id) {
    auto stored = st_.db->get(table::calls, key{}.str(call_id).bytes());
    if (!stored)
      return stored.error();
    if (!*stored)
      return make_error(errc::not_found, "no call with id '" + call_id
                                           + "' (results are kept for 7 days)");
    call_result out;
    auto prefix = key{}.str(call_id).bytes();
    auto err = st_.db->scan(table::outputs, prefix, [&](std::string_view, std::string_view v) {
      call_output o;
      if (!decode_record(v, record_version, o))
        out.outputs.push_back(std::move(o));
      return true;
    });
    if (err)
      return err;
    out.done = true;
    return out;
  }

  void expire(const std::string& call_id, uint64_t waiter_id) {
    auto c = st_.calls.find(call_id);
    if (c == st_.calls.end())
      return;
    auto& ws = c->second.waiters;
    for (auto i = ws.begin(); i != ws.end(); ++i)
      if (i->id == waiter_id) {
        i->promise.deliver(call_result{c->second.outputs, false});
        ws.erase(i);
        return;
      }
  }

  caf::result<void> cancel(const std::string& call_id) {
    auto c = st_.calls.find(call_id);
    if (c == st_.calls.end()) {
      auto stored = st_.db->get(table::calls, key{}.str(call_id).bytes());
      if (stored && *stored)
        return caf::unit; // already finished
      return make_error(errc::not_found, "no call with id '" + call_id + "'");
    }
    auto& call = c->second;
    call.cancelled = true;
    auto& fs = st_.functions.at(call.function_id);
    auto live = call.live_inputs; // copy: finishing inputs edits it
    for (auto input_id : live) {
      if (auto in = fs.queue.take_waiting(input_id)) {
        finish_input(*in, call_output{in->index, output_status::cancelled, {},
                                      "the call was cancelled", in->attempt - 1});
      } else if (auto cid = fs.queue.container_of(input_id)) {
        auto ct = st_.containers.find(*cid);
        if (ct != st_.containers.end() && ct->second.handle)
          self_->send(ct->second.handle, container_supervisor::cancel_input_atom::value, input_id);
      }
    }
    log::info("call_cancelled").kv("call_id", call_id);
    return caf::unit;
  }

  // -- outputs -----------------------------------------------------------------------------------

  /// An input reached its final state: forget it and complete it in its call.
  void finish_input(const queued_input& in, call_output out) {
    st_.inputs.erase(in.input_id);
    auto c = st_.calls.find(in.call_id);
    if (c == st_.calls.end())
      return;
    c->second.live_inputs.erase(in.input_id);
    ++st_.inputs_finished;
    complete(c->second, std::move(out));
  }

  void complete(call_state& call, call_output out) {
    ++call.finished;
    switch (call.kind) {
      case call_kind::remote:
        call.remote_promise.deliver(std::move(out));
        break;
      case call_kind::map:
        // Batched: flush_outputs() pushes everything a message produced in one sink call.
        call.outputs.push_back(std::move(out));
        st_.unflushed.insert(call.call_id);
        break;
      case call_kind::spawn: {
        storage::write_batch batch;
        batch.put(table::outputs, key{}.str(call.call_id).u64(out.index).bytes(),
                  encode_record(record_version, out));
        batch.erase(table::inputs, key{}.str(call.call_id).u64(out.index).bytes());
        call.outputs.push_back(std::move(out));
        ++call.unwritten;
        // The call stays in memory until its outputs are on disk: `get` falls back to RocksDB
        // for calls it does not hold, and must never find a finished call without its output.
        self_->request(st_.writer, write_deadline, storage::write_atom::value, std::move(batch))
          .then(
            [self = self_, call_id = call.call_id]() {
              auto& calls = self->state.calls;
              auto c = calls.find(call_id);
              if (c == calls.end())
                return;
              --c->second.unwritten;
              if (c->second.done() && c->second.unwritten == 0 && c->second.waiters.empty())
                calls.erase(c);
            },
            [](caf::error& err) {
              log::error("scheduler_write_failed").kv("error", message_of(err));
            });
        break;
      }
    }
    maybe_complete(call);
  }

  /// Pushes the outputs that map calls collected while handling the current message.
  void flush_outputs() {
    for (const auto& call_id : st_.unflushed) {
      auto c = st_.calls.find(call_id);
      if (c == st_.calls.end() || c->second.outputs.empty())
        continue;
      c->second.sink->outputs(std::move(c->second.outputs));
      c->second.outputs.clear();
    }
    st_.unflushed.clear();
  }

  void maybe_complete(call_state& call) {
    if (!call.done())
      return;
    if (call.kind == call_kind::map && call.sink) {
      if (!call.outputs.empty())
        call.sink->outputs(std::move(call.outputs));
      st_.unflushed.erase(call.call_id);
      call.sink->done();
    }
    for (auto& w : call.waiters)
      w.promise.deliver(call_result{call.outputs, true});
    call.waiters.clear();
    if (call.unwritten == 0)
      st_.calls.erase(call.call_id);
  }

  void on_outputs(const std::string& container_id, std::vector<guest_output>& outputs) {
    std::set<std::string> touched;
    auto now = clock::now();
    for (auto& o : outputs) {
      auto r = st_.inputs.find(o.input_id);
      if (r == st_.inputs.end())
        continue; // stale: e.g. the input timed out and was retried elsewhere
      auto route = r->second;
      auto f = st_.functions.find(route.function_id);
      if (f == st_.functions.end())
        continue;
      auto& fs = f->second;
      touched.insert(route.function_id);
      if (o.status == output_status::generator_item) {
        auto c = st_.calls.find(route.call_id);
        if (c != st_.calls.end() && c->second.sink)
          c->second.sink->outputs({call_output{route.index, o.status, std::move(o.data), {}, 0}});
        continue;
      }
      auto in = fs.queue.finish(o.input_id, now);
      if (!in)
        continue;
      observe_runtime(fs, now - route.dispatched_at);
      bool failed = o.status == output_status::failure || o.status == output_status::timeout
                    || o.status == output_status::internal_error;
      auto c = st_.calls.find(route.call_id);
      bool cancelled = c == st_.calls.end() || c->second.cancelled;
      if (failed && !cancelled && fs.retry.allows_retry(in->attempt)) {
        retry(fs, *in);
        continue;
      }
      finish_input(*in, call_output{in->index, o.status, std::move(o.data), std::move(o.error),
                                    in->attempt});
    }
    auto ct = st_.containers.find(container_id);
    if (ct != st_.containers.end()) {
      auto& fs = st_.functions.at(ct->second.function_id);
      ct->second.state = fs.queue.inflight_on(container_id).empty() ? "idle" : "busy";
    }
    for (const auto& fid : touched)
      pump(fid);
  }

  /// Fast functions get inputs prefetched into their containers (they queue in the guest), so
  /// throughput is not bound by one scheduler round trip per input; slow ones do not, so inputs
  /// spread over containers and a queued input never eats into another's timeout.
  static void observe_runtime(function_state& fs, clock::duration took) {
    constexpr double fast_us = 20000;
    constexpr uint32_t prefetch_inputs = 64;
    auto us = static_cast<double>(duration_cast<microseconds>(took).count());
    fs.avg_run_us = fs.avg_run_us < 0 ? us : 0.9 * fs.avg_run_us + 0.1 * us;
    fs.queue.set_prefetch(fs.avg_run_us < fast_us ? prefetch_inputs : 0);
  }

  void retry(function_state& fs, queued_input in) {
    ++st_.retries;
    auto next = in.attempt + 1;
    auto delay = fs.retry.delay_before(next);
    log::info("input_retry")
      .kv("function", fs.def.name)
      .kv("call_id", in.call_id)
      .kv("attempt", static_cast<int64_t>(next))
      .kv("delay_ms", static_cast<int64_t>(delay.count()));
    in.attempt = next;
    in.not_before = clock::now() + delay;
    st_.inputs[in.input_id] = input_route{fs.def.function_id, in.call_id, in.index};
    fs.queue.add(std::move(in));
  }

  // -- containers --------------------------------------------------------------------------------

  void on_ready(const std::string& container_id, uint32_t capacity) {
    auto ct = st_.containers.find(container_id);
    auto sender = caf::actor_cast<supervisor_actor>(self_->current_sender());
    if (ct == st_.containers.end()) {
      // Unknown (e.g. from before a restart): stop it.
      if (sender)
        self_->send(sender, container_supervisor::stop_atom::value);
      return;
    }
    auto& c = ct->second;
    c.handle = sender;
    c.state = "idle";
    auto& fs = st_.functions.at(c.function_id);
    fs.crash_streak = 0;
    fs.queue.container_ready(container_id, capacity, clock::now());
    log::info("container_ready").kv("container_id", container_id).kv("function", fs.def.name);
    if (c.stop_sent || fs.stopped)
      stop_container(c, /*force_send=*/true);
    pump(c.function_id);
  }

  void on_exited(const std::string& container_id, const container_exit& exit) {
    auto ct = st_.containers.find(container_id);
    if (ct == st_.containers.end())
      return;
    auto function_id = ct->second.function_id;
    st_.containers.erase(ct);
    auto f = st_.functions.find(function_id);
    if (f == st_.functions.end())
      return;
    auto& fs = f->second;
    auto orphans = fs.queue.container_gone(container_id);
    if (!exit.requested)
      ++st_.containers_crashed;
    log::info("container_exited")
      .kv("container_id", container_id)
      .kv("function", fs.def.name)
      .kv("requested", exit.requested)
      .kv("reason", exit.reason)
      .kv("inflight", orphans.size());
    std::string why;
    if (exit.oom_killed)
      why = "function " + fs.def.name + " exceeded its memory limit of "
            + std::to_string(fs.def.memory_mb) + " MiB (container " + container_id + ")";
    else
      why = "container " + container_id + " running function " + fs.def.name
            + " exited unexpectedly: " + exit.reason;
    for (auto& in : orphans) {
      auto c = st_.calls.find(in.call_id);
      bool cancelled = c == st_.calls.end() || c->second.cancelled;
      if (exit.requested && !cancelled) {
        // We stopped it: the input did nothing wrong.
        in.not_before = {};
        st_.inputs[in.input_id] = input_route{function_id, in.call_id, in.index};
        fs.queue.add(std::move(in));
      } else if (!cancelled && fs.retry.allows_retry(in.attempt)) {
        retry(fs, std::move(in));
      } else {
        auto status = cancelled ? output_status::cancelled : output_status::internal_error;
        finish_input(in, call_output{in.index, status, {}, cancelled ? "the call was cancelled" : why,
                                     in.attempt});
      }
    }
    if (!exit.was_ready && !exit.requested) {
      ++fs.crash_streak;
      fs.last_crash = exit.reason;
      if (fs.crash_streak >= st_.cfg.crash_loop_limit) {
        log::warn("function_crash_loop").kv("function", fs.def.name).kv("reason", exit.reason);
        fs.broken_until = clock::now() + st_.cfg.crash_loop_cooldown;
        fs.crash_streak = 0;
        for (auto& in : fs.queue.drain_waiting())
          finish_input(in, call_output{in.index, output_status::internal_error, {},
                                       "function " + fs.def.name
                                         + " cannot start a container: " + exit.reason,
                                       in.attempt - 1});
      }
    }
    end_logs_if_done(fs.def.app_id);
    pump(function_id);
    // A slot is free on the node: functions waiting for capacity may start a container now.
    for (auto& [fid, other] : st_.functions)
      if (fid != function_id && other.queue.waiting_count() > 0)
        pump(fid);
  }

  void request_container(function_state& fs) {
    if (!st_.node)
      return; // no worker in this process: inputs wait
    auto id = make_id("ct");
    container_entry c;
    c.container_id = id;
    c.function_id = fs.def.function_id;
    c.started_at_ms = now_ms();
    st_.containers[id] = c;
    fs.queue.container_requested(id);
    ++st_.containers_requested;
    self_->send(st_.node, node_agent::start_container_atom::value,
                node_agent::container_request{id, fs.def});
  }

  void stop_container(container_entry& c, bool force_send = false) {
    if (c.stop_sent && !force_send)
      return;
    c.stop_sent = true;
    c.state = "draining";
    st_.functions.at(c.function_id).queue.container_draining(c.container_id);
    if (c.handle)
      self_->send(c.handle, container_supervisor::stop_atom::value);
    else if (st_.node)
      self_->send(st_.node, node_agent::stop_container_atom::value, c.container_id);
  }

  caf::result<function_def> derive(const std::string& environment, const std::string& base_id,
                                   const std::string& name, const function_def& spec,
                                   const std::vector<std::string>& fields) {
    auto base = st_.functions.find(base_id);
    if (base == st_.functions.end() || base->second.def.environment != environment)
      return make_error(errc::not_found, "no function with id '" + base_id + "'");
    if (name.empty())
      return make_error(errc::invalid_argument, "a derived function needs a name");
    auto a = st_.apps.find(base->second.def.app_id);
    if (a == st_.apps.end() || a->second.info.state != "running")
      return make_error(errc::not_found, "the app of function " + base->second.def.name
                                           + " is not running");
    auto& app = a->second;
    for (const auto& fid : app.function_ids)
      if (st_.functions.at(fid).def.name == name)
        return st_.functions.at(fid).def;
    function_def def = base->second.def;
    def.name = name;
    def.function_id = make_id("fu");
    for (const auto& field : fields) {
      if (field == "definition") def.definition = spec.definition;
      else if (field == "is_generator") def.is_generator = spec.is_generator;
      else if (field == "timeout_ms") def.timeout_ms = spec.timeout_ms;
      else if (field == "max_retries") def.max_retries = spec.max_retries;
      else if (field == "retry_initial_delay_ms") def.retry_initial_delay_ms = spec.retry_initial_delay_ms;
      else if (field == "retry_backoff_coefficient") def.retry_backoff_coefficient = spec.retry_backoff_coefficient;
      else if (field == "retry_max_delay_ms") def.retry_max_delay_ms = spec.retry_max_delay_ms;
      else if (field == "min_containers") def.min_containers = spec.min_containers;
      else if (field == "max_containers") def.max_containers = spec.max_containers;
      else if (field == "buffer_containers") def.buffer_containers = spec.buffer_containers;
      else if (field == "scaledown_window_ms") def.scaledown_window_ms = spec.scaledown_window_ms;
      else if (field == "max_inputs") def.max_inputs = std::max<uint32_t>(spec.max_inputs, 1);
      else if (field == "cpu_millis") def.cpu_millis = spec.cpu_millis;
      else if (field == "memory_mb") def.memory_mb = spec.memory_mb;
      else if (field == "image") def.image = spec.image;
      else if (field == "files") def.files = spec.files;
      else if (field == "env") def.env = spec.env;
      else if (field != "name" && field != "is_class")
        return make_error(errc::invalid_argument,
                          "'" + field + "' cannot be changed on a derived function");
    }
    if (auto err = check_files(*st_.db, def))
      return err;
    app.function_ids.push_back(def.function_id);
    app.info.function_names.push_back(def.name);
    st_.functions.emplace(def.function_id, function_state{def});
    storage::write_batch batch;
    batch.put(table::functions, key{}.str(def.function_id).bytes(), encode_record(function_record_version, def));
    batch.put(table::apps, key{}.str(app.info.app_id).bytes(), encode_record(record_version, app.info));
    log::info("function_derived").kv("app", app.info.name).kv("name", def.name).kv("from", base->second.def.name);
    auto rp = self_->make_response_promise<function_def>();
    self_->request(st_.writer, write_deadline, storage::write_atom::value, std::move(batch))
      .then([self = self_, rp, def]() mutable {
              scheduler_logic{self}.pump(def.function_id);
              rp.deliver(def);
            },
            [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
    return rp;
  }

  caf::result<void> stop_container_by_id(const std::string& container_id) {
    auto ct = st_.containers.find(container_id);
    if (ct == st_.containers.end())
      return make_error(errc::not_found, "no container with id '" + container_id
                                           + "'; `shoal container list` shows them");
    stop_container(ct->second);
    return caf::unit;
  }

  std::vector<container_summary> list_containers() {
    std::vector<container_summary> out;
    for (const auto& [id, c] : st_.containers) {
      const auto& fs = st_.functions.at(c.function_id);
      container_summary s;
      s.container_id = id;
      s.app_name = fs.def.app_name;
      s.function_name = fs.def.name;
      s.state = c.state;
      s.inflight = static_cast<uint32_t>(fs.queue.inflight_on(id).size());
      s.started_at_ms = c.started_at_ms;
      s.node_id = st_.cfg.node_id;
      out.push_back(std::move(s));
    }
    return out;
  }

  /// Dispatches what can run, then scales.
  void pump(const std::string& function_id) {
    auto f = st_.functions.find(function_id);
    if (f == st_.functions.end())
      return;
    auto& fs = f->second;
    auto now = clock::now();
    for (auto& batch : fs.queue.dispatch(now)) {
      auto ct = st_.containers.find(batch.container_id);
      if (ct == st_.containers.end() || !ct->second.handle)
        continue;
      ct->second.state = "busy";
      std::vector<run_input> run;
      run.reserve(batch.inputs.size());
      for (auto& in : batch.inputs) {
        if (auto r = st_.inputs.find(in.input_id); r != st_.inputs.end())
          r->second.dispatched_at = now;
        run.push_back(run_input{in.input_id, std::move(in.args), fs.def.timeout_ms});
      }
      self_->send(ct->second.handle, container_supervisor::run_atom::value, std::move(run));
    }
    if (fs.stopped) {
      for (auto& [cid, c] : st_.containers)
        if (c.function_id == function_id && fs.queue.inflight_on(cid).empty())
          stop_container(c);
      return;
    }
    if (now < fs.broken_until)
      return;
    auto plan = fs.queue.plan(now);
    // The node's capacity bounds what the autoscaler may ask for; a function also boots a few
    // containers at a time, so a burst of inputs does not start one container per input.
    uint32_t total = static_cast<uint32_t>(st_.containers.size());
    uint32_t room = total < st_.cfg.max_total_containers ? st_.cfg.max_total_containers - total : 0;
    uint32_t booting = fs.queue.booting_count();
    uint32_t boot_room = booting < st_.cfg.max_booting_per_function
                           ? st_.cfg.max_booting_per_function - booting
                           : 0;
    uint32_t start = std::min({plan.start, room, boot_room});
    for (uint32_t i = 0; i < start; ++i)
      request_container(fs);
    // At capacity with demand left: an idle container of another function makes room.
    if (plan.start > start && room == 0 && fs.queue.waiting_count() > 0) {
      uint32_t draining = 0;
      for (const auto& [cid, c] : st_.containers)
        draining += c.stop_sent ? 1 : 0;
      if (draining < plan.start - start)
        reclaim_idle_container(function_id);
    }
    for (const auto& cid : plan.stop) {
      auto ct = st_.containers.find(cid);
      if (ct != st_.containers.end())
        stop_container(ct->second);
    }
  }

  /// Stops the container idle the longest among other functions' containers above their
  /// min_containers; its exit pumps every function with waiting inputs.
  void reclaim_idle_container(const std::string& for_function) {
    std::optional<std::pair<clock::time_point, std::string>> best;
    for (auto& [fid, other] : st_.functions) {
      if (fid == for_function || other.queue.live_container_count() <= other.def.min_containers)
        continue;
      for (auto& candidate : other.queue.idle_containers()) {
        auto ct = st_.containers.find(candidate.second);
        if (ct == st_.containers.end() || ct->second.stop_sent)
          continue;
        if (!best || candidate.first < best->first)
          best = candidate;
      }
    }
    if (!best)
      return;
    log::debug("container_reclaimed").kv("container_id", best->second).kv("for", for_function);
    stop_container(st_.containers.at(best->second));
  }

  void tick() {
    auto now = clock::now();
    for (auto& [id, app] : st_.apps) {
      if (app.info.mode == app_mode::ephemeral && app.info.state == "running"
          && now - app.last_heartbeat > st_.cfg.heartbeat_timeout) {
        storage::write_batch batch;
        retire_app(id, "its client stopped sending heartbeats", batch, /*fail_waiting=*/true);
        persist(std::move(batch));
      }
      auto& fl = app.followers;
      fl.erase(std::remove_if(fl.begin(), fl.end(), [](const auto& s) { return !s->alive(); }),
               fl.end());
    }
    for (auto& [fid, fs] : st_.functions)
      if (!fs.stopped || fs.queue.container_count() > 0 || fs.queue.waiting_count() > 0)
        pump(fid);
  }

  // -- logs and blobs ----------------------------------------------------------------------------

  void on_log(const std::string& container_id, std::vector<log_line>& lines) {
    auto ct = st_.containers.find(container_id);
    if (ct == st_.containers.end())
      return;
    auto& fs = st_.functions.at(ct->second.function_id);
    auto a = st_.apps.find(fs.def.app_id);
    if (a == st_.apps.end())
      return;
    auto& app = a->second;
    for (const auto& l : lines) {
      app.recent_logs.push_back(l);
      if (app.recent_logs.size() > st_.cfg.log_lines_kept)
        app.recent_logs.pop_front();
    }
    for (auto& sink : app.followers)
      if (sink->alive())
        sink->lines(lines);
  }

  caf::result<void> logs(const std::string& environment, const std::string& name,
                         log_sink_ptr sink, bool follow) {
    auto app_id = find_app(environment, name);
    if (!app_id) {
      // A stopped app's logs are still readable: the newest app of that name.
      int64_t newest_at = -1;
      for (const auto& [id, app] : st_.apps)
        if (app.info.environment == environment && app.info.name == name
            && app.info.created_at_ms > newest_at) {
          app_id = id;
          newest_at = app.info.created_at_ms;
        }
    }
    if (!app_id)
      return make_error(errc::not_found, "no app named '" + name + "' in environment '"
                                           + environment + "'");
    auto& app = st_.apps[*app_id];
    if (!app.recent_logs.empty())
      sink->lines({app.recent_logs.begin(), app.recent_logs.end()});
    if (follow) {
      app.followers.push_back(std::move(sink));
      end_logs_if_done(*app_id);
    }
    return caf::unit;
  }

  /// True once an app can produce no more output: it is stopped and none of its containers is
  /// left. A container leaves `containers` on its `exited_atom`, which its supervisor sends after
  /// the container's stdout and stderr were read to EOF and every line was sent here (the same
  /// mailbox, earlier), so by then every line of the app has reached `on_log`.
  bool output_done(const std::string& app_id) const {
    auto a = st_.apps.find(app_id);
    if (a == st_.apps.end() || a->second.info.state != "stopped")
      return false;
    for (const auto& [cid, c] : st_.containers)
      if (st_.functions.at(c.function_id).def.app_id == app_id)
        return false;
    return true;
  }

  /// Ends the followed log streams of an app whose output is done (`log_sink::end`).
  void end_logs_if_done(const std::string& app_id) {
    auto a = st_.apps.find(app_id);
    if (a == st_.apps.end() || a->second.followers.empty() || !output_done(app_id))
      return;
    auto followers = std::move(a->second.followers);
    a->second.followers.clear();
    for (auto& sink : followers)
      if (sink->alive())
        sink->end();
    log::debug("app_logs_ended").kv("app_id", app_id).kv("followers", followers.size());
  }

  caf::result<std::vector<std::string>> missing(const std::vector<std::string>& hashes) {
    std::vector<std::string> out;
    for (const auto& h : hashes) {
      auto blob = st_.db->get(table::blobs, key{}.str(h).bytes());
      if (!blob)
        return blob.error();
      if (!*blob)
        out.push_back(h);
    }
    return out;
  }

  caf::result<void> put_blobs(std::vector<std::pair<std::string, std::string>>& blobs) {
    storage::write_batch batch;
    for (auto& [sha, data] : blobs) {
      if (sha256_hex(data) != sha)
        return make_error(errc::invalid_argument,
                          "a blob's content does not match its sha256 " + sha);
      batch.put(table::blobs, key{}.str(sha).bytes(), std::move(data));
    }
    // Untyped: a typed_response_promise<void> cannot deliver an empty reply in CAF 0.17.6.
    auto rp = self_->make_response_promise();
    self_->request(st_.writer, write_deadline, storage::write_atom::value, std::move(batch))
      .then([rp]() mutable { rp.deliver(caf::unit); },
            [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
    return rp;
  }

  actor_snapshot snapshot() {
    auto s = snapshot_of(self_, "scheduler", "scheduler", "running");
    size_t waiting = 0;
    size_t inflight = 0;
    for (auto& [fid, fs] : st_.functions) {
      waiting += fs.queue.waiting_count();
      inflight += fs.queue.inflight_count();
    }
    s.counter("apps", static_cast<int64_t>(st_.apps.size()))
      .counter("functions", static_cast<int64_t>(st_.functions.size()))
      .counter("containers", static_cast<int64_t>(st_.containers.size()))
      .counter("calls_open", static_cast<int64_t>(st_.calls.size()))
      .counter("calls_started", static_cast<int64_t>(st_.calls_started))
      .counter("inputs_waiting", static_cast<int64_t>(waiting))
      .counter("inputs_inflight", static_cast<int64_t>(inflight))
      .counter("inputs_finished", static_cast<int64_t>(st_.inputs_finished))
      .counter("retries", static_cast<int64_t>(st_.retries))
      .counter("containers_requested", static_cast<int64_t>(st_.containers_requested))
      .counter("containers_crashed", static_cast<int64_t>(st_.containers_crashed));
    return s;
  }

private:
  self_ptr self_;
  scheduler_state& st_;
};

impl_actor::behavior_type scheduler_impl(self_ptr self, const storage::store* db,
                                         storage::writer_actor writer,
                                         node_agent::node_agent_actor node, scheduler_config cfg) {
  self->state.db = db;
  self->state.writer = std::move(writer);
  self->state.node = std::move(node);
  if (cfg.max_total_containers == 0) {
    auto cores = std::thread::hardware_concurrency();
    cfg.max_total_containers = std::max(4u, 2 * (cores == 0 ? 1 : cores));
  }
  self->state.cfg = cfg;
  scheduler_logic{self}.reload();
  self->delayed_send(self, cfg.tick, tick_atom::value);
  auto L = [self] { return scheduler_logic{self}; };
  return {
    [=](create_app_atom, app_request& req) { return L().create_app(req); },
    [=](stop_app_atom, const std::string& env, const std::string& name) {
      auto logic = L();
      auto result = logic.stop_app(env, name);
      logic.flush_outputs();
      return result;
    },
    [=](heartbeat_atom, const std::string& app_id) { L().heartbeat(app_id); },
    [=](list_apps_atom, const std::string& env) { return L().list_apps(env); },
    [=](lookup_atom, const std::string& env, const std::string& app, const std::string& name) {
      return L().lookup(env, app, name);
    },
    [=](call_atom, const std::string& fid, std::string& args) { return L().call(fid, args); },
    [=](map_atom, const std::string& fid, output_sink_ptr& sink) {
      return L().map(fid, std::move(sink));
    },
    [=](push_atom, const std::string& call_id,
        std::vector<std::pair<uint64_t, std::string>>& items) { return L().push(call_id, items); },
    [=](close_atom, const std::string& call_id) { return L().close(call_id); },
    [=](spawn_atom, const std::string& fid, std::string& args) { return L().spawn(fid, args); },
    [=](get_atom, const std::string& call_id, uint64_t timeout_ms) {
      return L().get(call_id, timeout_ms);
    },
    [=](cancel_atom, const std::string& call_id) {
      auto logic = L();
      auto result = logic.cancel(call_id);
      logic.flush_outputs();
      return result;
    },
    [=](missing_atom, const std::vector<std::string>& hashes) { return L().missing(hashes); },
    [=](put_blobs_atom, std::vector<std::pair<std::string, std::string>>& blobs) {
      return L().put_blobs(blobs);
    },
    [=](logs_atom, const std::string& env, const std::string& name, log_sink_ptr& sink,
        bool follow) { return L().logs(env, name, std::move(sink), follow); },
    [=](containers_atom) { return L().list_containers(); },
    [=](stop_ct_atom, const std::string& id) { return L().stop_container_by_id(id); },
    [=](derive_atom, const std::string& env, const std::string& base, const std::string& name,
        const function_def& spec, const std::vector<std::string>& fields) {
      return L().derive(env, base, name, spec, fields);
    },
    [=](ready_atom, const std::string& id, uint32_t capacity) { L().on_ready(id, capacity); },
    [=](outputs_atom, const std::string& id, std::vector<guest_output>& outputs) {
      auto logic = L();
      logic.on_outputs(id, outputs);
      logic.flush_outputs();
    },
    [=](exited_atom, const std::string& id, const container_exit& exit) {
      auto logic = L();
      logic.on_exited(id, exit);
      logic.flush_outputs();
    },
    [=](log_atom, const std::string& id, std::vector<log_line>& lines) { L().on_log(id, lines); },
    [=](tick_atom) {
      auto logic = L();
      logic.tick();
      logic.flush_outputs();
      self->delayed_send(self, self->state.cfg.tick, tick_atom::value);
    },
    [=](expire_atom, const std::string& call_id, uint64_t waiter_id) {
      L().expire(call_id, waiter_id);
    },
    [=](inspect_atom) { return L().snapshot(); },
  };
}

} // namespace

scheduler_actor spawn_scheduler(caf::actor_system& sys, const storage::store& db,
                                storage::writer_actor writer, node_agent::node_agent_actor node,
                                scheduler_config cfg) {
  auto impl = sys.spawn(scheduler_impl, &db, std::move(writer), std::move(node), cfg);
  return caf::actor_cast<scheduler_actor>(impl);
}

} // namespace shoal::scheduler
