#pragma once
/// Plain data the scheduler exchanges with the functions bridge, the node agent and the container
/// supervisors. Every type has an `inspect` overload (CAF messages, and the binary encoding the
/// scheduler persists in RocksDB).

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/meta/type_name.hpp>

namespace shoal::scheduler {

/// `Output.status` on the wire; `guest` statuses 0–4 map onto the first five.
enum class output_status : uint8_t {
  success = 0,
  failure = 1,
  timeout = 2,
  cancelled = 3,
  internal_error = 4,
  generator_item = 5,
  generator_done = 6,
};

enum class app_mode : uint8_t { ephemeral = 0, detached = 1, deployed = 2 };

/// One shipped file: its content is the blob `sha256` (uploaded with putBlobs).
struct code_file {
  std::string path; ///< relative, normalised, confined (the scheduler checks it)
  std::string sha256;
  uint32_t mode = 0644;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, code_file& x) {
  return f(caf::meta::type_name("code_file"), x.path, x.sha256, x.mode);
}

struct function_def {
  std::string function_id;   ///< "fu-<hex>", assigned by the scheduler
  std::string app_id;
  std::string app_name;
  std::string environment;
  std::string name;
  bool is_class = false;
  bool is_generator = false;
  std::string definition;    ///< opaque, for the guest's INIT
  uint64_t timeout_ms = 300000;
  uint32_t max_retries = 0;
  uint64_t retry_initial_delay_ms = 1000;
  double retry_backoff_coefficient = 1.0;
  uint64_t retry_max_delay_ms = 60000;
  uint32_t min_containers = 0;
  uint32_t max_containers = 0;
  uint32_t buffer_containers = 0;
  uint64_t scaledown_window_ms = 60000;
  uint32_t max_inputs = 1;
  uint32_t cpu_millis = 0;
  uint32_t memory_mb = 0;
  std::string image;
  std::vector<std::pair<std::string, std::string>> env;
  std::string code_id;       ///< content hash of the app's code manifest ("" = no code)
  /// The image's copy=False files (`Image.add_local_*(copy=False)`): `path` is where the file
  /// goes in the container, without the leading '/'. Not part of the image id; the supervisor
  /// lays them over the image when a container starts.
  std::vector<code_file> files;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, function_def& x) {
  return f(caf::meta::type_name("function_def"), x.function_id, x.app_id, x.app_name,
           x.environment, x.name, x.is_class, x.is_generator, x.definition, x.timeout_ms,
           x.max_retries, x.retry_initial_delay_ms, x.retry_backoff_coefficient,
           x.retry_max_delay_ms, x.min_containers, x.max_containers, x.buffer_containers,
           x.scaledown_window_ms, x.max_inputs, x.cpu_millis, x.memory_mb, x.image, x.env,
           x.code_id, x.files);
}

/// A function record as version 1 stored it (before `files`): reading old state dirs.
struct function_def_v1 {
  function_def& def;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, function_def_v1& v) {
  auto& x = v.def;
  return f(caf::meta::type_name("function_def"), x.function_id, x.app_id, x.app_name,
           x.environment, x.name, x.is_class, x.is_generator, x.definition, x.timeout_ms,
           x.max_retries, x.retry_initial_delay_ms, x.retry_backoff_coefficient,
           x.retry_max_delay_ms, x.min_containers, x.max_containers, x.buffer_containers,
           x.scaledown_window_ms, x.max_inputs, x.cpu_millis, x.memory_mb, x.image, x.env,
           x.code_id);
}

struct app_info {
  std::string app_id;
  std::string name;
  std::string environment;
  app_mode mode = app_mode::ephemeral;
  std::string state = "running";
  uint32_t version = 0;
  int64_t created_at_ms = 0;
  std::vector<std::string> function_names;
  std::string code_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, app_info& x) {
  return f(caf::meta::type_name("app_info"), x.app_id, x.name, x.environment, x.mode, x.state,
           x.version, x.created_at_ms, x.function_names, x.code_id);
}

/// What `create_app` is asked to do.
struct app_request {
  std::string name;
  std::string environment;
  app_mode mode = app_mode::ephemeral;
  std::vector<function_def> functions; ///< ids and app fields are filled by the scheduler
  std::vector<code_file> code;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, app_request& x) {
  return f(caf::meta::type_name("app_request"), x.name, x.environment, x.mode, x.functions,
           x.code);
}

struct app_created {
  app_info app;
  std::vector<function_def> functions;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, app_created& x) {
  return f(caf::meta::type_name("app_created"), x.app, x.functions);
}

/// The final (or, for generators, intermediate) result of one input of a call.
struct call_output {
  uint64_t index = 0;
  output_status status = output_status::success;
  std::string data;
  std::string error;
  uint32_t attempts = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, call_output& x) {
  return f(caf::meta::type_name("call_output"), x.index, x.status, x.data, x.error, x.attempts);
}

struct call_result {
  std::vector<call_output> outputs;
  bool done = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, call_result& x) {
  return f(caf::meta::type_name("call_result"), x.outputs, x.done);
}

/// One input handed to a container: `input_id` is what the guest sees.
struct run_input {
  uint64_t input_id = 0;
  std::string args;
  uint64_t timeout_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, run_input& x) {
  return f(caf::meta::type_name("run_input"), x.input_id, x.args, x.timeout_ms);
}

/// One output from a container.
struct guest_output {
  uint64_t input_id = 0;
  output_status status = output_status::success;
  std::string data;
  std::string error;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, guest_output& x) {
  return f(caf::meta::type_name("guest_output"), x.input_id, x.status, x.data, x.error);
}

/// Why a container ended.
struct container_exit {
  bool was_ready = false;     ///< it had sent READY before it ended
  bool oom_killed = false;
  bool timed_out = false;     ///< killed because an input exceeded its timeout
  bool requested = false;     ///< stopped on purpose (scale down, app stop)
  std::string reason;         ///< a sentence: exit code, signal, FATAL text
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, container_exit& x) {
  return f(caf::meta::type_name("container_exit"), x.was_ready, x.oom_killed, x.timed_out,
           x.requested, x.reason);
}

struct container_summary {
  std::string container_id;
  std::string app_name;
  std::string function_name;
  std::string state;
  uint32_t inflight = 0;
  int64_t started_at_ms = 0;
  std::string node_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, container_summary& x) {
  return f(caf::meta::type_name("container_summary"), x.container_id, x.app_name,
           x.function_name, x.state, x.inflight, x.started_at_ms, x.node_id);
}

struct log_line {
  int64_t at_ms = 0;
  std::string container_id;
  uint8_t stream = 1; ///< 1 stdout, 2 stderr, 3 system
  std::string text;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, log_line& x) {
  return f(caf::meta::type_name("log_line"), x.at_ms, x.container_id, x.stream, x.text);
}

/// Where the scheduler pushes a call's outputs as they finish (`.map`, `.remote_gen`). Called on
/// the scheduler's thread; implementations must not block (the bridge's posts to the kj mailbox).
class output_sink {
public:
  virtual ~output_sink() = default;
  virtual void outputs(std::vector<call_output> batch) = 0;
  /// Every input has its final output and no more inputs will come.
  virtual void done() = 0;
};

/// Receives an app's log lines (`shoal run`, `shoal app logs -f`). Same rules as output_sink.
class log_sink {
public:
  virtual ~log_sink() = default;
  virtual void lines(std::vector<log_line> batch) = 0;
  /// Called once on a followed sink, after its last `lines`: the app has stopped and every one of
  /// its containers has ended with its output delivered. The scheduler forgets the sink then.
  virtual void end() = 0;
  /// False once the receiver is gone; the scheduler then forgets the sink.
  virtual bool alive() const = 0;
};

/// shared_ptr: the sink is shared by the bridge (which made it) and the scheduler (which feeds
/// it) and dies with whichever lets go last.
using output_sink_ptr = std::shared_ptr<output_sink>;
using log_sink_ptr = std::shared_ptr<log_sink>;

} // namespace shoal::scheduler

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::scheduler::output_sink_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::scheduler::log_sink_ptr)
