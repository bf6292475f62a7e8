/// `shoal._native`: the Python binding of the C++ client core (runtime/client). Every blocking
/// call releases the GIL, so other Python threads run while a call waits on the network.

#include <pybind11/pybind11.h>
#include <pybind11/eval.h>
#include <pybind11/stl.h>

#include "runtime/client/client.hpp"

namespace py = pybind11;
using shoal::client::actor_info;
using shoal::client::cluster_info;
using shoal::client::connection;
using shoal::client::rpc_error;
using shoal::client::token_info;
using shoal::client::secret_summary;

namespace {

py::dict to_dict(const cluster_info& c) {
  py::dict d;
  d["version"] = c.version;
  d["node_id"] = c.node_id;
  d["roles"] = c.roles;
  d["listen_address"] = c.listen_address;
  d["state_dir"] = c.state_dir;
  d["pid"] = c.pid;
  d["started_at_ms"] = c.started_at_ms;
  d["environment"] = c.environment;
  d["schema_version"] = c.schema_version;
  d["actor_count"] = c.actor_count;
  return d;
}

py::dict to_dict(const actor_info& a) {
  py::dict d;
  d["name"] = a.name;
  d["kind"] = a.kind;
  d["state"] = a.state;
  d["mailbox_depth"] = a.mailbox_depth;
  py::dict counters;
  for (const auto& [k, v] : a.counters)
    counters[py::str(k)] = v;
  d["counters"] = counters;
  py::dict details;
  for (const auto& [k, v] : a.details)
    details[py::str(k)] = v;
  d["details"] = details;
  return d;
}

py::dict to_dict(const token_info& t) {
  py::dict d;
  d["token_id"] = t.token_id;
  d["environment"] = t.environment;
  d["label"] = t.label;
  d["created_at_ms"] = t.created_at_ms;
  d["admin"] = t.admin;
  return d;
}

namespace sc = shoal::client;

py::dict to_dict(const sc::output& o) {
  py::dict d;
  d["index"] = o.index;
  d["status"] = o.status;
  d["data"] = py::bytes(o.data);
  d["error"] = o.error;
  d["attempts"] = o.attempts;
  return d;
}

py::list to_list(const std::vector<sc::output>& outs) {
  py::list l;
  for (const auto& o : outs)
    l.append(to_dict(o));
  return l;
}

py::dict to_dict(const sc::app_info& a) {
  py::dict d;
  d["app_id"] = a.app_id;
  d["name"] = a.name;
  d["mode"] = a.mode;
  d["state"] = a.state;
  d["version"] = a.version;
  d["created_at_ms"] = a.created_at_ms;
  d["function_names"] = a.function_names;
  d["environment"] = a.environment;
  return d;
}

py::dict to_dict(const sc::function_ref& f) {
  py::dict d;
  d["function_id"] = f.function_id;
  d["name"] = f.name;
  d["app_name"] = f.app_name;
  d["is_class"] = f.is_class;
  d["is_generator"] = f.is_generator;
  d["definition"] = py::bytes(f.definition);
  return d;
}

py::dict to_dict(const sc::log_line& l) {
  py::dict d;
  d["at_ms"] = l.at_ms;
  d["container_id"] = l.container_id;
  d["stream"] = l.stream;
  d["text"] = l.text;
  return d;
}

py::dict to_dict(const sc::container_info& c) {
  py::dict d;
  d["container_id"] = c.container_id;
  d["app_name"] = c.app_name;
  d["function_name"] = c.function_name;
  d["state"] = c.state;
  d["inflight"] = c.inflight;
  d["started_at_ms"] = c.started_at_ms;
  d["node_id"] = c.node_id;
  return d;
}

template <class T>
T get_or(const py::dict& d, const char* key, T fallback) {
  return d.contains(key) && !d[key].is_none() ? d[key].cast<T>() : fallback;
}

sc::function_spec spec_from(const py::dict& d) {
  sc::function_spec f;
  f.name = d["name"].cast<std::string>();
  f.is_class = get_or<bool>(d, "is_class", false);
  f.is_generator = get_or<bool>(d, "is_generator", false);
  f.definition = d.contains("definition") ? std::string(d["definition"].cast<py::bytes>()) : "";
  f.timeout_ms = get_or<uint64_t>(d, "timeout_ms", f.timeout_ms);
  f.max_retries = get_or<uint32_t>(d, "max_retries", 0);
  f.retry_initial_delay_ms = get_or<uint64_t>(d, "retry_initial_delay_ms", f.retry_initial_delay_ms);
  f.retry_backoff_coefficient = get_or<double>(d, "retry_backoff_coefficient", 1.0);
  f.retry_max_delay_ms = get_or<uint64_t>(d, "retry_max_delay_ms", f.retry_max_delay_ms);
  f.min_containers = get_or<uint32_t>(d, "min_containers", 0);
  f.max_containers = get_or<uint32_t>(d, "max_containers", 0);
  f.buffer_containers = get_or<uint32_t>(d, "buffer_containers", 0);
  f.scaledown_window_ms = get_or<uint64_t>(d, "scaledown_window_ms", f.scaledown_window_ms);
  f.max_inputs = get_or<uint32_t>(d, "max_inputs", 1);
  f.cpu_millis = get_or<uint32_t>(d, "cpu_millis", 0);
  f.memory_mb = get_or<uint32_t>(d, "memory_mb", 0);
  f.image = get_or<std::string>(d, "image", "");
  if (d.contains("env") && !d["env"].is_none()) {
    // A dict, or an ordered list of (key, value) pairs (repeatable "@secret" entries).
    py::object env = d["env"];
    if (py::isinstance<py::dict>(env))
      for (auto item : env.cast<py::dict>())
        f.env.emplace_back(item.first.cast<std::string>(), item.second.cast<std::string>());
    else
      for (auto item : env)
        f.env.push_back(item.cast<std::pair<std::string, std::string>>());
  }
  if (d.contains("files") && !d["files"].is_none())
    for (auto item : d["files"]) {
      auto file = item.cast<py::dict>();
      f.files.push_back(sc::code_file{file["path"].cast<std::string>(),
                                      file["sha256"].cast<std::string>(),
                                      get_or<uint32_t>(file, "mode", 0644)});
    }
  return f;
}

class app_object {
public:
  explicit app_object(std::unique_ptr<sc::app_handle> h) : handle_(std::move(h)) {}
  py::dict info() {
    sc::app_info a;
    {
      py::gil_scoped_release release;
      a = handle_->info();
    }
    return to_dict(a);
  }
  void heartbeat() {
    py::gil_scoped_release release;
    handle_->heartbeat();
  }
  void stop() {
    py::gil_scoped_release release;
    handle_->stop();
  }
  void close() {
    py::gil_scoped_release release;
    handle_->close();
  }

private:
  std::unique_ptr<sc::app_handle> handle_;
};

class map_object {
public:
  explicit map_object(std::unique_ptr<sc::map_call> m) : call_(std::move(m)) {}
  std::string call_id() const { return call_->call_id(); }
  void push(const py::list& items) {
    std::vector<std::pair<uint64_t, std::string>> inputs;
    inputs.reserve(items.size());
    for (auto item : items) {
      auto t = item.cast<py::tuple>();
      inputs.emplace_back(t[0].cast<uint64_t>(), std::string(t[1].cast<py::bytes>()));
    }
    py::gil_scoped_release release;
    call_->push(std::move(inputs));
  }
  void close() {
    py::gil_scoped_release release;
    call_->close();
  }
  py::tuple poll(double timeout_s) {
    std::pair<std::vector<sc::output>, bool> r;
    {
      py::gil_scoped_release release;
      r = call_->poll(std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
    }
    return py::make_tuple(to_list(r.first), r.second);
  }

private:
  std::unique_ptr<sc::map_call> call_;
};

class log_object {
public:
  explicit log_object(std::unique_ptr<sc::log_stream> s) : stream_(std::move(s)) {}
  py::tuple poll(double timeout_s) {
    std::pair<std::vector<sc::log_line>, bool> r;
    {
      py::gil_scoped_release release;
      r = stream_->poll(std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
    }
    py::list lines;
    for (const auto& l : r.first)
      lines.append(to_dict(l));
    return py::make_tuple(lines, r.second);
  }
  void close() { stream_->close(); }
  bool will_end() const { return stream_->will_end(); }
  bool ended() const { return stream_->ended(); }

private:
  std::unique_ptr<sc::log_stream> stream_;
};

// -- images ---------------------------------------------------------------------------------------

py::dict to_dict(const sc::image_step_result& r) {
  py::dict d;
  d["type"] = "step";
  d["index"] = r.index;
  d["image_id"] = r.image_id;
  d["status"] = r.status;
  d["reason"] = r.reason;
  d["duration_ms"] = r.duration_ms;
  d["layer_bytes"] = r.layer_bytes;
  return d;
}

py::dict to_dict(const sc::image_info& x) {
  py::dict d;
  d["image_id"] = x.image_id;
  d["parent_id"] = x.parent_id;
  d["step"] = x.step;
  d["created_at_ms"] = x.created_at_ms;
  d["layers"] = x.layers;
  d["content_bytes"] = x.content_bytes;
  py::dict env;
  for (const auto& [k, v] : x.env)
    env[py::str(k)] = v;
  d["env"] = env;
  d["workdir"] = x.workdir;
  d["user"] = x.user;
  d["entrypoint"] = x.entrypoint;
  d["cmd"] = x.cmd;
  d["python"] = x.python;
  return d;
}

sc::image_build_spec build_spec_from(const py::dict& spec) {
  sc::image_build_spec out;
  if (spec.contains("ignore_cache"))
    out.ignore_cache = py::cast<bool>(spec["ignore_cache"]);
  for (auto item : py::cast<py::list>(spec["steps"])) {
    auto step = py::cast<py::dict>(item);
    sc::image_step_spec s;
    s.kind = py::cast<std::string>(step["kind"]);
    if (step.contains("args"))
      for (auto a : py::cast<py::list>(step["args"]))
        s.args.push_back(py::cast<std::string>(a));
    if (step.contains("blob") && !step["blob"].is_none())
      s.blob = py::cast<std::string>(step["blob"]);
    if (step.contains("env") && !step["env"].is_none())
      for (auto kv : py::cast<py::dict>(step["env"]))
        s.env.emplace_back(py::cast<std::string>(kv.first), py::cast<std::string>(kv.second));
    if (step.contains("force_build"))
      s.force_build = py::cast<bool>(step["force_build"]);
    if (step.contains("registry_auth") && !step["registry_auth"].is_none()) {
      auto auth = py::cast<py::tuple>(step["registry_auth"]);
      s.has_registry_auth = true;
      s.registry_user = py::cast<std::string>(auth[0]);
      s.registry_password = py::cast<std::string>(auth[1]);
    }
    if (step.contains("label") && !step["label"].is_none())
      s.label = py::cast<std::string>(step["label"]);
    out.steps.push_back(std::move(s));
  }
  return out;
}

class build_object {
public:
  explicit build_object(std::unique_ptr<sc::image_build> b) : build_(std::move(b)) {}

  py::tuple poll(double timeout_s) {
    std::pair<std::vector<sc::image_build_event>, bool> r;
    {
      py::gil_scoped_release release;
      r = build_->poll(std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
    }
    py::list events;
    for (const auto& e : r.first) {
      if (e.type == "step") {
        events.append(to_dict(e.step));
      } else {
        py::dict d;
        d["type"] = "line";
        d["index"] = e.index;
        d["text"] = e.text;
        events.append(d);
      }
    }
    return py::make_tuple(events, r.second);
  }

  py::dict result() {
    sc::image_build_result r;
    {
      py::gil_scoped_release release;
      r = build_->result();
    }
    py::dict d;
    d["image_id"] = r.image_id;
    py::list steps;
    for (const auto& s : r.steps)
      steps.append(to_dict(s));
    d["steps"] = steps;
    return d;
  }

private:
  std::unique_ptr<sc::image_build> build_;
};

// -- queues and dicts -------------------------------------------------------------------------------

sc::data_kind kind_from(const std::string& kind) {
  if (kind == "queue")
    return sc::data_kind::queue;
  if (kind == "dict")
    return sc::data_kind::dict;
  throw rpc_error("invalid_argument", "object kind '" + kind + "' is not 'queue' or 'dict'");
}

py::dict to_dict(const sc::data_object_info& o) {
  py::dict d;
  d["name"] = o.name;
  d["kind"] = o.kind == sc::data_kind::dict ? "dict" : "queue";
  d["ephemeral"] = o.ephemeral;
  d["created_at_ms"] = o.created_at_ms;
  d["item_count"] = o.item_count;
  d["byte_count"] = o.byte_count;
  d["partition_count"] = o.partition_count;
  d["environment"] = o.environment;
  return d;
}

/// An ephemeral queue or dict: closing it (or the GC) deletes the object on the server.
class ephemeral_object {
public:
  explicit ephemeral_object(std::unique_ptr<sc::ephemeral_handle> h) : handle_(std::move(h)) {}
  std::string name() const { return handle_->info().name; }
  py::dict info() const { return to_dict(handle_->info()); }
  void close() {
    py::gil_scoped_release release;
    handle_->close();
  }

private:
  std::unique_ptr<sc::ephemeral_handle> handle_;
};

/// The Python-facing client: a connection that can be closed explicitly or by the GC.
class client {
public:
  client(const std::string& address, const std::string& token, const std::string& version,
         const std::string& environment, int64_t reply_poll_us) {
    shoal::client::connect_options opts;
    opts.client_version = version;
    opts.environment = environment;
    if (reply_poll_us >= 0)
      opts.reply_poll = std::chrono::microseconds{reply_poll_us};
    py::gil_scoped_release release;
    conn_ = connection::open(address, token, opts);
  }

  py::dict info() {
    cluster_info c;
    {
      py::gil_scoped_release release;
      c = live().info();
    }
    return to_dict(c);
  }

  py::list list_actors() {
    std::vector<actor_info> actors;
    {
      py::gil_scoped_release release;
      actors = live().list_actors();
    }
    py::list out;
    for (const auto& a : actors)
      out.append(to_dict(a));
    return out;
  }

  py::dict inspect_actor(const std::string& name) {
    actor_info a;
    {
      py::gil_scoped_release release;
      a = live().inspect_actor(name);
    }
    return to_dict(a);
  }

  py::tuple create_token(const std::string& environment, const std::string& label) {
    std::pair<std::string, token_info> minted;
    {
      py::gil_scoped_release release;
      minted = live().create_token(environment, label);
    }
    return py::make_tuple(minted.first, to_dict(minted.second));
  }

  py::list list_tokens() {
    std::vector<token_info> tokens;
    {
      py::gil_scoped_release release;
      tokens = live().list_tokens();
    }
    py::list out;
    for (const auto& t : tokens)
      out.append(to_dict(t));
    return out;
  }

  void revoke_token(const std::string& token_id) {
    py::gil_scoped_release release;
    live().revoke_token(token_id);
  }

  py::dict create_environment(const std::string& name) {
    sc::environment_summary e;
    {
      py::gil_scoped_release release;
      e = live().create_environment(name);
    }
    return environment_dict(e);
  }

  py::list list_environments() {
    std::vector<sc::environment_summary> all;
    {
      py::gil_scoped_release release;
      all = live().list_environments();
    }
    py::list out;
    for (const auto& e : all)
      out.append(environment_dict(e));
    return out;
  }

  void delete_environment(const std::string& name) {
    py::gil_scoped_release release;
    live().delete_environment(name);
  }

  static py::dict environment_dict(const sc::environment_summary& e) {
    py::dict d;
    d["name"] = e.name;
    d["created_at_ms"] = e.created_at_ms;
    return d;
  }

  py::dict create_secret(const std::string& name,
                         const std::vector<std::pair<std::string, std::string>>& entries,
                         bool force) {
    secret_summary info;
    {
      py::gil_scoped_release release;
      info = live().create_secret(name, entries, force);
    }
    return secret_dict(info);
  }

  py::list list_secrets() {
    std::vector<secret_summary> all;
    {
      py::gil_scoped_release release;
      all = live().list_secrets();
    }
    py::list out;
    for (const auto& x : all)
      out.append(secret_dict(x));
    return out;
  }

  void delete_secret(const std::string& name) {
    py::gil_scoped_release release;
    live().delete_secret(name);
  }

  build_object build_image(const py::dict& spec) {
    auto parsed = build_spec_from(spec);
    std::unique_ptr<sc::image_build> b;
    {
      py::gil_scoped_release release;
      b = live().build_image(parsed);
    }
    return build_object{std::move(b)};
  }

  py::list list_images() {
    std::vector<sc::image_info> all;
    {
      py::gil_scoped_release release;
      all = live().list_images();
    }
    py::list out;
    for (const auto& x : all)
      out.append(to_dict(x));
    return out;
  }

  py::dict inspect_image(const std::string& image_id) {
    sc::image_info info;
    {
      py::gil_scoped_release release;
      info = live().inspect_image(image_id);
    }
    return to_dict(info);
  }

  void remove_image(const std::string& image_id) {
    py::gil_scoped_release release;
    live().remove_image(image_id);
  }

  py::dict collect_image_garbage() {
    sc::image_gc_report r;
    {
      py::gil_scoped_release release;
      r = live().collect_image_garbage();
    }
    py::dict d;
    d["images"] = r.images;
    d["trees_removed"] = r.trees_removed;
    d["trees_in_use"] = r.trees_in_use;
    d["chunks_removed"] = r.chunks_removed;
    d["chunk_bytes_removed"] = r.chunk_bytes_removed;
    d["packs_rewritten"] = r.packs_rewritten;
    d["packs_removed"] = r.packs_removed;
    d["chunks_moved"] = r.chunks_moved;
    d["bytes_moved"] = r.bytes_moved;
    d["disk_bytes_freed"] = r.disk_bytes_freed;
    return d;
  }

  static py::dict secret_dict(const secret_summary& x) {
    py::dict d;
    d["name"] = x.name;
    d["environment"] = x.environment;
    d["keys"] = x.keys;
    d["created_at_ms"] = x.created_at_ms;
    return d;
  }

  void close() {
    py::gil_scoped_release release;
    if (conn_)
      conn_->close();
  }

  // -- functions --
  std::vector<std::string> missing_blobs(const std::vector<std::string>& hashes) {
    py::gil_scoped_release release;
    return live().missing_blobs(hashes);
  }
  void put_blobs(const py::list& blobs) {
    std::vector<std::pair<std::string, std::string>> items;
    for (auto b : blobs) {
      auto t = b.cast<py::tuple>();
      items.emplace_back(t[0].cast<std::string>(), std::string(t[1].cast<py::bytes>()));
    }
    py::gil_scoped_release release;
    live().put_blobs(items);
  }
  py::tuple create_app(const std::string& name, const std::string& mode, const py::list& functions,
                       const py::list& code) {
    std::vector<sc::function_spec> specs;
    for (auto f : functions)
      specs.push_back(spec_from(f.cast<py::dict>()));
    std::vector<sc::code_file> files;
    for (auto c : code) {
      auto d = c.cast<py::dict>();
      files.push_back(sc::code_file{d["path"].cast<std::string>(), d["sha256"].cast<std::string>(),
                                    get_or<uint32_t>(d, "mode", 0644)});
    }
    connection::created_app created;
    {
      py::gil_scoped_release release;
      created = live().create_app(name, mode, specs, files);
    }
    py::list refs;
    for (const auto& r : created.functions)
      refs.append(to_dict(r));
    return py::make_tuple(app_object(std::move(created.app)), to_dict(created.info), refs);
  }
  py::dict lookup(const std::string& app_name, const std::string& name) {
    sc::function_ref r;
    {
      py::gil_scoped_release release;
      r = live().lookup(app_name, name);
    }
    return to_dict(r);
  }
  py::dict derive_function(const std::string& function_id, const std::string& name,
                           const py::dict& overrides) {
    py::dict spec_dict(overrides);
    spec_dict["name"] = name;
    auto spec = spec_from(spec_dict);
    std::vector<std::string> fields;
    for (auto item : overrides)
      fields.push_back(item.first.cast<std::string>());
    sc::function_ref r;
    {
      py::gil_scoped_release release;
      r = live().derive_function(function_id, name, spec, fields);
    }
    return to_dict(r);
  }
  py::dict call(const std::string& function_id, const py::bytes& args) {
    std::string payload = args;
    sc::output o;
    {
      py::gil_scoped_release release;
      o = live().call(function_id, payload);
    }
    return to_dict(o);
  }
  map_object map(const std::string& function_id) {
    py::gil_scoped_release release;
    return map_object(live().map(function_id));
  }
  std::string spawn(const std::string& function_id, const py::bytes& args) {
    std::string payload = args;
    py::gil_scoped_release release;
    return live().spawn(function_id, payload);
  }
  py::tuple get_outputs(const std::string& call_id, uint64_t timeout_ms) {
    std::pair<std::vector<sc::output>, bool> r;
    {
      py::gil_scoped_release release;
      r = live().get_outputs(call_id, timeout_ms);
    }
    return py::make_tuple(to_list(r.first), r.second);
  }
  void cancel(const std::string& call_id) {
    py::gil_scoped_release release;
    live().cancel(call_id);
  }
  py::list list_apps() {
    std::vector<sc::app_info> apps;
    {
      py::gil_scoped_release release;
      apps = live().list_apps();
    }
    py::list out;
    for (const auto& a : apps)
      out.append(to_dict(a));
    return out;
  }
  void stop_app(const std::string& name) {
    py::gil_scoped_release release;
    live().stop_app(name);
  }
  log_object app_logs(const std::string& name, bool follow) {
    py::gil_scoped_release release;
    return log_object(live().app_logs(name, follow));
  }
  py::list list_containers() {
    std::vector<sc::container_info> cs;
    {
      py::gil_scoped_release release;
      cs = live().list_containers();
    }
    py::list out;
    for (const auto& c : cs)
      out.append(to_dict(c));
    return out;
  }
  void stop_container(const std::string& id) {
    py::gil_scoped_release release;
    live().stop_container(id);
  }

  // -- queues and dicts (schema/queues.capnp); every call releases the GIL while it waits ------
  py::dict lookup_object(const std::string& kind, const std::string& name, bool create_if_missing) {
    auto k = kind_from(kind);
    sc::data_object_info info;
    {
      py::gil_scoped_release release;
      info = live().lookup_object(k, name, create_if_missing);
    }
    return to_dict(info);
  }
  py::dict create_object(const std::string& kind, const std::string& name) {
    auto k = kind_from(kind);
    sc::data_object_info info;
    {
      py::gil_scoped_release release;
      info = live().create_object(k, name);
    }
    return to_dict(info);
  }
  ephemeral_object create_ephemeral(const std::string& kind) {
    auto k = kind_from(kind);
    py::gil_scoped_release release;
    return ephemeral_object(live().create_ephemeral(k));
  }
  void delete_object(const std::string& kind, const std::string& name) {
    auto k = kind_from(kind);
    py::gil_scoped_release release;
    live().delete_object(k, name);
  }
  py::list list_objects(const std::string& kind) {
    auto k = kind_from(kind);
    std::vector<sc::data_object_info> objects;
    {
      py::gil_scoped_release release;
      objects = live().list_objects(k);
    }
    py::list out;
    for (const auto& o : objects)
      out.append(to_dict(o));
    return out;
  }
  void queue_put(const std::string& name, const std::string& partition, const py::list& items,
                 uint64_t partition_ttl_ms) {
    std::vector<std::string> payloads;
    payloads.reserve(items.size());
    for (auto item : items)
      payloads.emplace_back(item.cast<py::bytes>());
    py::gil_scoped_release release;
    live().queue_put(name, partition, payloads, partition_ttl_ms);
  }
  py::list queue_get(const std::string& name, const std::string& partition, uint32_t max_items,
                     uint64_t block_timeout_ms) {
    std::vector<std::string> items;
    {
      py::gil_scoped_release release;
      items = live().queue_get(name, partition, max_items, block_timeout_ms);
    }
    py::list out;
    for (const auto& item : items)
      out.append(py::bytes(item));
    return out;
  }
  uint64_t queue_len(const std::string& name, const std::string& partition, bool total) {
    py::gil_scoped_release release;
    return live().queue_len(name, partition, total);
  }
  void queue_clear(const std::string& name, const std::string& partition, bool all) {
    py::gil_scoped_release release;
    live().queue_clear(name, partition, all);
  }
  py::tuple queue_peek(const std::string& name, const std::string& partition, uint64_t cursor,
                       uint32_t limit, uint64_t block_timeout_ms) {
    std::pair<std::vector<sc::queue_item>, uint64_t> page;
    {
      py::gil_scoped_release release;
      page = live().queue_peek(name, partition, cursor, limit, block_timeout_ms);
    }
    py::list items;
    for (const auto& item : page.first)
      items.append(py::make_tuple(item.seq, py::bytes(item.data)));
    return py::make_tuple(items, page.second);
  }
  py::tuple dict_get(const std::string& name, const py::bytes& key) {
    std::string k = key;
    std::pair<bool, std::string> r;
    {
      py::gil_scoped_release release;
      r = live().dict_get(name, k);
    }
    return py::make_tuple(r.first, py::bytes(r.second));
  }
  bool dict_put(const std::string& name, const py::bytes& key, const py::bytes& value,
                bool skip_if_exists) {
    std::string k = key;
    std::string v = value;
    py::gil_scoped_release release;
    return live().dict_put(name, k, v, skip_if_exists);
  }
  void dict_update(const std::string& name, const py::list& entries) {
    std::vector<std::pair<std::string, std::string>> items;
    items.reserve(entries.size());
    for (auto e : entries) {
      auto t = e.cast<py::tuple>();
      items.emplace_back(std::string(t[0].cast<py::bytes>()), std::string(t[1].cast<py::bytes>()));
    }
    py::gil_scoped_release release;
    live().dict_update(name, items);
  }
  py::tuple dict_pop(const std::string& name, const py::bytes& key) {
    std::string k = key;
    std::pair<bool, std::string> r;
    {
      py::gil_scoped_release release;
      r = live().dict_pop(name, k);
    }
    return py::make_tuple(r.first, py::bytes(r.second));
  }
  bool dict_contains(const std::string& name, const py::bytes& key) {
    std::string k = key;
    py::gil_scoped_release release;
    return live().dict_contains(name, k);
  }
  uint64_t dict_len(const std::string& name) {
    py::gil_scoped_release release;
    return live().dict_len(name);
  }
  py::tuple dict_scan(const std::string& name, const py::bytes& cursor, uint32_t limit,
                      bool with_values) {
    std::string c = cursor;
    sc::dict_page page;
    {
      py::gil_scoped_release release;
      page = live().dict_scan(name, c, limit, with_values);
    }
    py::list entries;
    for (const auto& [k, v] : page.entries)
      entries.append(py::make_tuple(py::bytes(k), py::bytes(v)));
    return py::make_tuple(entries, py::bytes(page.next_cursor), page.done);
  }
  void dict_clear(const std::string& name) {
    py::gil_scoped_release release;
    live().dict_clear(name);
  }

private:
  connection& live() {
    if (!conn_)
      throw rpc_error("unavailable", "the client is closed");
    return *conn_;
  }

  std::unique_ptr<connection> conn_;
};

} // namespace

/// Queues and dicts (schema/queues.capnp): `Client` methods and the `Ephemeral` handle.
void bind_data_objects(py::module_& m, py::class_<client>& cls) {
  cls.def("lookup_object", &client::lookup_object, py::arg("kind"), py::arg("name"),
          py::arg("create_if_missing") = false)
    .def("create_object", &client::create_object, py::arg("kind"), py::arg("name"))
    .def("create_ephemeral", &client::create_ephemeral, py::arg("kind"))
    .def("delete_object", &client::delete_object, py::arg("kind"), py::arg("name"))
    .def("list_objects", &client::list_objects, py::arg("kind"))
    .def("queue_put", &client::queue_put, py::arg("name"), py::arg("partition"), py::arg("items"),
         py::arg("partition_ttl_ms") = 0)
    .def("queue_get", &client::queue_get, py::arg("name"), py::arg("partition"),
         py::arg("max_items"), py::arg("block_timeout_ms"))
    .def("queue_len", &client::queue_len, py::arg("name"), py::arg("partition"), py::arg("total"))
    .def("queue_clear", &client::queue_clear, py::arg("name"), py::arg("partition"), py::arg("all"))
    .def("queue_peek", &client::queue_peek, py::arg("name"), py::arg("partition"),
         py::arg("cursor"), py::arg("limit"), py::arg("block_timeout_ms"))
    .def("dict_get", &client::dict_get, py::arg("name"), py::arg("key"))
    .def("dict_put", &client::dict_put, py::arg("name"), py::arg("key"), py::arg("value"),
         py::arg("skip_if_exists") = false)
    .def("dict_update", &client::dict_update, py::arg("name"), py::arg("entries"))
    .def("dict_pop", &client::dict_pop, py::arg("name"), py::arg("key"))
    .def("dict_contains", &client::dict_contains, py::arg("name"), py::arg("key"))
    .def("dict_len", &client::dict_len, py::arg("name"))
    .def("dict_scan", &client::dict_scan, py::arg("name"), py::arg("cursor"), py::arg("limit"),
         py::arg("with_values"))
    .def("dict_clear", &client::dict_clear, py::arg("name"));

  py::class_<ephemeral_object>(m, "Ephemeral")
    .def_property_readonly("name", &ephemeral_object::name)
    .def("info", &ephemeral_object::info)
    .def("close", &ephemeral_object::close);
}

PYBIND11_MODULE(_native, m) {
  m.doc() = "Shoal's native client core (Cap'n Proto on its own thread).";

  py::dict ns;
  py::exec(R"(
class RpcError(Exception):
    """A call to shoald failed. `code` is Shoal's error name ("not_found", "unauthenticated",
    "unavailable", ...); `message` is a sentence for the user."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):
        return (type(self), (self.code, self.message))
)",
           py::globals(), ns);
  py::object rpc_error_type = ns["RpcError"];
  rpc_error_type.attr("__module__") = "shoal._native";
  m.attr("RpcError") = rpc_error_type;

  static py::object error_type = rpc_error_type; // lives as long as the interpreter
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p)
        std::rethrow_exception(p);
    } catch (const rpc_error& e) {
      PyErr_SetObject(error_type.ptr(), py::make_tuple(e.code(), e.message()).ptr());
    }
  });

  auto client_class = py::class_<client>(m, "Client");
  client_class
    .def(py::init<const std::string&, const std::string&, const std::string&,
                  const std::string&, int64_t>(),
         py::arg("address"), py::arg("token"), py::arg("client_version") = "0.1.0",
         py::arg("environment") = "", py::arg("reply_poll_us") = -1,
         "Connects to shoald at 'host:port' and authenticates; `environment` selects the "
         "session's environment (\"\" = the token's own, \"main\" for an admin token); "
         "`reply_poll_us` caps how long a queue call busy-polls for its reply (0: never; -1: "
         "the default, 400).")
    .def("create_environment", &client::create_environment, py::arg("name"))
    .def("list_environments", &client::list_environments)
    .def("delete_environment", &client::delete_environment, py::arg("name"))
    .def("info", &client::info)
    .def("list_actors", &client::list_actors)
    .def("inspect_actor", &client::inspect_actor, py::arg("name"))
    .def("create_token", &client::create_token, py::arg("environment"), py::arg("label"))
    .def("list_tokens", &client::list_tokens)
    .def("revoke_token", &client::revoke_token, py::arg("token_id"))
    .def("create_secret", &client::create_secret, py::arg("name"), py::arg("entries"),
         py::arg("force"))
    .def("list_secrets", &client::list_secrets)
    .def("delete_secret", &client::delete_secret, py::arg("name"))
    .def("build_image", &client::build_image, py::arg("spec"))
    .def("list_images", &client::list_images)
    .def("inspect_image", &client::inspect_image, py::arg("image_id"))
    .def("remove_image", &client::remove_image, py::arg("image_id"))
    .def("collect_image_garbage", &client::collect_image_garbage)
    .def("close", &client::close)
    .def("missing_blobs", &client::missing_blobs, py::arg("hashes"))
    .def("put_blobs", &client::put_blobs, py::arg("blobs"))
    .def("create_app", &client::create_app, py::arg("name"), py::arg("mode"),
         py::arg("functions"), py::arg("code"))
    .def("lookup", &client::lookup, py::arg("app_name"), py::arg("name"))
    .def("derive_function", &client::derive_function, py::arg("function_id"), py::arg("name"),
         py::arg("overrides"))
    .def("call", &client::call, py::arg("function_id"), py::arg("args"))
    .def("map", &client::map, py::arg("function_id"))
    .def("spawn", &client::spawn, py::arg("function_id"), py::arg("args"))
    .def("get_outputs", &client::get_outputs, py::arg("call_id"), py::arg("timeout_ms"))
    .def("cancel", &client::cancel, py::arg("call_id"))
    .def("list_apps", &client::list_apps)
    .def("stop_app", &client::stop_app, py::arg("name"))
    .def("app_logs", &client::app_logs, py::arg("name"), py::arg("follow"))
    .def("list_containers", &client::list_containers)
    .def("stop_container", &client::stop_container, py::arg("container_id"));
  bind_data_objects(m, client_class);

  py::class_<app_object>(m, "App")
    .def("info", &app_object::info)
    .def("heartbeat", &app_object::heartbeat)
    .def("stop", &app_object::stop)
    .def("close", &app_object::close);

  py::class_<map_object>(m, "MapCall")
    .def_property_readonly("call_id", &map_object::call_id)
    .def("push", &map_object::push, py::arg("items"))
    .def("close", &map_object::close)
    .def("poll", &map_object::poll, py::arg("timeout_s"));

  py::class_<build_object>(m, "ImageBuild")
    .def("poll", &build_object::poll, py::arg("timeout_s"))
    .def("result", &build_object::result);

  py::class_<log_object>(m, "LogStream")
    .def("poll", &log_object::poll, py::arg("timeout_s"))
    .def("close", &log_object::close)
    // True: the server ends this followed stream (poll says done, `ended` is true) once the app
    // has stopped and all of its containers' output was delivered.
    .def_property_readonly("will_end", &log_object::will_end)
    .def_property_readonly("ended", &log_object::ended);
}
