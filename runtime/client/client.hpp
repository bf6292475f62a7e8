#pragma once
/// The C++ client core: one authenticated connection to a shoald, used by the Python extension
/// (`shoal._native`) and by C++ programs and tests.
///
/// Threading: the connection owns a kj thread that runs Cap'n Proto. Every method may be called
/// from any thread (including several at once); it hands the call to the kj thread and blocks the
/// caller until the reply arrives. No kj or capnp type appears in this header.
///
/// Errors: every failure throws `rpc_error` whose `code` is an errc name ("not_found",
/// "unauthenticated", ...). A connection that cannot be made or is lost is "unavailable".

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace shoal::client {

class rpc_error : public std::runtime_error {
public:
  rpc_error(std::string code, std::string message)
    : std::runtime_error(message), code_(std::move(code)), message_(std::move(message)) {}
  const std::string& code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

private:
  std::string code_;
  std::string message_;
};

/// Splits a capnp exception description "remote exception: [code] message" into its parts.
/// Descriptions without a code become {fallback_code, description}.
std::pair<std::string, std::string> parse_error(const std::string& description,
                                                const std::string& fallback_code);

struct cluster_info {
  std::string version;
  std::string node_id;
  std::vector<std::string> roles;
  std::string listen_address;
  std::string state_dir;
  uint32_t pid = 0;
  int64_t started_at_ms = 0;
  std::string environment;
  uint32_t schema_version = 0;
  uint32_t actor_count = 0;
};

struct actor_info {
  std::string name;
  std::string kind;
  std::string state;
  uint64_t mailbox_depth = 0;
  std::vector<std::pair<std::string, int64_t>> counters;
  std::vector<std::pair<std::string, std::string>> details;
};

struct token_info {
  std::string token_id;
  std::string environment;
  std::string label;
  int64_t created_at_ms = 0;
  bool admin = false;
};

/// A named secret as the server lists it: never its values.
struct secret_summary {
  std::string name;
  std::string environment;
  std::vector<std::string> keys;
  int64_t created_at_ms = 0;
};

/// One result of one input of a call. `status`: success, failure, timeout, cancelled,
/// internal_error, generator_item, generator_done.
struct output {
  uint64_t index = 0;
  std::string status;
  std::string data;
  std::string error;
  uint32_t attempts = 0;
};

/// One shipped file; its content is uploaded with put_blobs first.
struct code_file {
  std::string path;
  std::string sha256;
  uint32_t mode = 0644;
};

struct function_spec {
  std::string name;
  bool is_class = false;
  bool is_generator = false;
  std::string definition;
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
  /// The image's copy=False files: `path` is where each goes in the container, without the
  /// leading '/' (schema/functions.capnp FunctionSpec.files).
  std::vector<code_file> files;
};

struct app_info {
  std::string app_id;
  std::string name;
  std::string mode; ///< ephemeral, detached, deployed
  std::string state;
  uint32_t version = 0;
  int64_t created_at_ms = 0;
  std::vector<std::string> function_names;
  std::string environment;
};

struct function_ref {
  std::string function_id;
  std::string name;
  std::string app_name;
  bool is_class = false;
  bool is_generator = false;
  std::string definition;
};

struct log_line {
  int64_t at_ms = 0;
  std::string container_id;
  uint8_t stream = 1;
  std::string text;
};

struct container_info {
  std::string container_id;
  std::string app_name;
  std::string function_name;
  std::string state;
  uint32_t inflight = 0;
  int64_t started_at_ms = 0;
  std::string node_id;
};

class connection;

// -- queues and dicts (schema/queues.capnp) -------------------------------------------------------

/// "queue" or "dict" on the wire; the SDK passes these strings through.
enum class data_kind : uint8_t { queue, dict };

struct data_object_info {
  std::string name;
  data_kind kind = data_kind::queue;
  bool ephemeral = false;
  int64_t created_at_ms = 0;
  uint64_t item_count = 0;
  uint64_t byte_count = 0;
  uint32_t partition_count = 0;
  std::string environment;
};

struct queue_item {
  uint64_t seq = 0;
  std::string data;
};

/// One page of `dict_scan`: entries in key order, the cursor for the next page, and whether the
/// listing is complete.
struct dict_page {
  std::vector<std::pair<std::string, std::string>> entries;
  std::string next_cursor;
  bool done = true;
};

/// An ephemeral queue or dict created by this client. Closing or destroying the handle (or losing
/// the connection) deletes the object on the server.
class ephemeral_handle {
public:
  ~ephemeral_handle();
  const data_object_info& info() const noexcept { return info_; }
  void close();

  struct state;
  ephemeral_handle(std::shared_ptr<state> st, data_object_info info)
    : st_(std::move(st)), info_(std::move(info)) {}

private:
  std::shared_ptr<state> st_;
  data_object_info info_;
};

/// An app created by this client. For an ephemeral app, `close()` (or destroying the handle)
/// stops it; `heartbeat()` must be called regularly (the SDK does every 10 s).
class app_handle {
public:
  ~app_handle();
  app_info info();
  void heartbeat();
  void stop();
  void close();

  struct state;
  explicit app_handle(std::shared_ptr<state> st) : st_(std::move(st)) {}

private:
  std::shared_ptr<state> st_;
};

/// A streaming call (`.map`, `.remote_gen`): push inputs, then poll outputs as they arrive.
class map_call {
public:
  ~map_call();
  const std::string& call_id() const noexcept;
  /// Flow controlled: blocks while the server is behind.
  void push(std::vector<std::pair<uint64_t, std::string>> inputs);
  /// No more inputs.
  void close();
  /// Outputs received so far (waits up to `timeout` for at least one), and whether the call is
  /// finished (every output delivered).
  std::pair<std::vector<output>, bool> poll(std::chrono::milliseconds timeout);

  struct state;
  explicit map_call(std::shared_ptr<state> st) : st_(std::move(st)) {}

private:
  std::shared_ptr<state> st_;
};

// -- images (Session.images, schema/images.capnp) -------------------------------------------------

struct image_step_spec {
  std::string kind;
  std::vector<std::string> args;
  std::string blob;
  std::vector<std::pair<std::string, std::string>> env;
  bool force_build = false;
  bool has_registry_auth = false;
  std::string registry_user;
  std::string registry_password;
  std::string label;
};

struct image_build_spec {
  std::vector<image_step_spec> steps;
  bool ignore_cache = false;
};

struct image_step_result {
  uint32_t index = 0;
  std::string image_id;
  std::string status; ///< "cached", "building", "built", "failed"
  std::string reason;
  uint64_t duration_ms = 0;
  uint64_t layer_bytes = 0;
};

/// One progress event of a build: a step's status ("step") or a line of its output ("line").
struct image_build_event {
  std::string type;
  image_step_result step; ///< type "step"
  uint32_t index = 0;     ///< type "line"
  std::string text;       ///< type "line"
};

struct image_build_result {
  std::string image_id;
  std::vector<image_step_result> steps;
};

struct image_info {
  std::string image_id;
  std::string parent_id;
  std::string step;
  int64_t created_at_ms = 0;
  std::vector<std::string> layers;
  uint64_t content_bytes = 0;
  std::vector<std::pair<std::string, std::string>> env;
  std::string workdir;
  std::string user;
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::string python;
};

/// What Images.collectGarbage freed (schema/images.capnp GarbageReport).
struct image_gc_report {
  uint64_t images = 0;
  uint64_t trees_removed = 0;
  std::vector<std::string> trees_in_use;
  uint64_t chunks_removed = 0;
  uint64_t chunk_bytes_removed = 0;
  uint64_t packs_rewritten = 0;
  uint64_t packs_removed = 0;
  uint64_t chunks_moved = 0;
  uint64_t bytes_moved = 0;
  uint64_t disk_bytes_freed = 0;
};

/// A build in progress: its events as they arrive, then its result. The request runs on a
/// thread of its own (it may take minutes), so the caller polls without blocking the connection.
class image_build {
public:
  ~image_build();
  /// Events since the last poll; true once the build has finished (result() is then ready).
  std::pair<std::vector<image_build_event>, bool> poll(std::chrono::milliseconds timeout);
  /// Waits for the end; the result, or the build's error as rpc_error.
  image_build_result result();

  struct state;
  explicit image_build(std::shared_ptr<state> st) : st_(std::move(st)) {}

private:
  std::shared_ptr<state> st_;
};

/// Log lines of an app, as they arrive.
class log_stream {
public:
  ~log_stream();
  /// Lines that arrived within `timeout`, and whether the stream is over (no line follows):
  /// a one-shot read after its backlog, a followed stream after `ended()`, after `close()` or
  /// when the connection is gone.
  std::pair<std::vector<log_line>, bool> poll(std::chrono::milliseconds timeout);
  void close();
  /// A followed stream of a server that marks the end of an app's output (false: an older server,
  /// whose follow never ends until `close()`).
  bool will_end() const noexcept;
  /// The server marked the end: the app stopped and every line of its containers was delivered.
  bool ended() const noexcept;

  struct state;
  explicit log_stream(std::shared_ptr<state> st) : st_(std::move(st)) {}

private:
  std::shared_ptr<state> st_;
};

struct connect_options {
  std::chrono::milliseconds connect_timeout{10000};
  std::string client_version = "0.1.0";
  /// The environment to open: "" means the token's own (for an admin token, "main").
  std::string environment;
  /// Queue puts and gets go over a connection of the calling thread's own (one per thread, opened
  /// on its first queue call): no thread hand-off per call. False: every call goes through this
  /// connection's kj thread, and the server sees one session.
  bool thread_channels = true;
  /// At most this many thread channels at once (each is a session and a socket in shoald);
  /// threads beyond it go through the kj thread until a channel closes with its thread.
  int max_thread_channels = 64;
  /// How long a thread channel's call may busy-poll for its reply before sleeping (sync_rpc.hpp,
  /// `reply_poll`): it saves the wake-up, tens of µs on a VM. 0: always sleep.
  std::chrono::microseconds reply_poll{400};
};

/// An environment as the server lists it.
struct environment_summary {
  std::string name;
  int64_t created_at_ms = 0;
};

class connection {
public:
  /// Connects to "host:port" and authenticates with `token`.
  static std::unique_ptr<connection> open(const std::string& address, const std::string& token,
                                          connect_options opts = {});
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  /// What `authenticate` returned.
  const cluster_info& hello() const noexcept;

  cluster_info info();
  std::vector<actor_info> list_actors();
  actor_info inspect_actor(const std::string& name);
  /// Returns the secret token (shown once) and its public record.
  std::pair<std::string, token_info> create_token(const std::string& environment,
                                                  const std::string& label);
  std::vector<token_info> list_tokens();
  void revoke_token(const std::string& token_id);

  // -- environments (Session.createEnvironment..., schema/gateway.capnp) -------------------------
  environment_summary create_environment(const std::string& name);
  std::vector<environment_summary> list_environments();
  void delete_environment(const std::string& name);

  // -- images (Session.images, schema/images.capnp) ---------------------------------------------
  std::unique_ptr<image_build> build_image(const image_build_spec& spec);
  std::vector<image_info> list_images();
  image_info inspect_image(const std::string& image_id);
  void remove_image(const std::string& image_id);
  /// Frees what removed images held on the server (admin tokens only).
  image_gc_report collect_image_garbage();

  // -- secrets (Session.secrets, schema/gateway.capnp) ------------------------------------------
  secret_summary create_secret(const std::string& name,
                               const std::vector<std::pair<std::string, std::string>>& entries,
                               bool force);
  std::vector<secret_summary> list_secrets();
  void delete_secret(const std::string& name);

  // -- functions (schema/functions.capnp) -------------------------------------------------------
  std::vector<std::string> missing_blobs(const std::vector<std::string>& sha256);
  void put_blobs(const std::vector<std::pair<std::string, std::string>>& blobs);
  struct created_app {
    std::unique_ptr<app_handle> app;
    app_info info;
    std::vector<function_ref> functions;
  };
  created_app create_app(const std::string& name, const std::string& mode,
                         const std::vector<function_spec>& functions,
                         const std::vector<code_file>& code);
  function_ref lookup(const std::string& app_name, const std::string& name);
  /// A function added to `function_id`'s running app with `fields` of `spec` replaced
  /// (`Functions.derive`); idempotent by name.
  function_ref derive_function(const std::string& function_id, const std::string& name,
                               const function_spec& spec, const std::vector<std::string>& fields);
  output call(const std::string& function_id, const std::string& args);
  std::unique_ptr<map_call> map(const std::string& function_id);
  std::string spawn(const std::string& function_id, const std::string& args);
  std::pair<std::vector<output>, bool> get_outputs(const std::string& call_id, uint64_t timeout_ms);
  void cancel(const std::string& call_id);
  std::vector<app_info> list_apps();
  void stop_app(const std::string& name);
  std::unique_ptr<log_stream> app_logs(const std::string& name, bool follow);
  std::vector<container_info> list_containers();
  void stop_container(const std::string& container_id);

  // -- queues and dicts (schema/queues.capnp), scoped to the session's environment ----------------
  /// `create_if_missing` false: not_found when it does not exist.
  data_object_info lookup_object(data_kind kind, const std::string& name, bool create_if_missing);
  /// already_exists when the name is taken.
  data_object_info create_object(data_kind kind, const std::string& name);
  std::unique_ptr<ephemeral_handle> create_ephemeral(data_kind kind);
  void delete_object(data_kind kind, const std::string& name);
  std::vector<data_object_info> list_objects(data_kind kind);
  /// Returns once the items are durable. `partition_ttl_ms` 0: the server's default.
  void queue_put(const std::string& name, const std::string& partition,
                 const std::vector<std::string>& items, uint64_t partition_ttl_ms);
  /// Up to `max_items` items, waiting up to `block_timeout_ms` for the first; none on timeout.
  std::vector<std::string> queue_get(const std::string& name, const std::string& partition,
                                     uint32_t max_items, uint64_t block_timeout_ms);
  uint64_t queue_len(const std::string& name, const std::string& partition, bool total);
  void queue_clear(const std::string& name, const std::string& partition, bool all);
  /// Items with seq >= cursor without consuming them, and the cursor of the next page.
  std::pair<std::vector<queue_item>, uint64_t> queue_peek(const std::string& name,
                                                          const std::string& partition,
                                                          uint64_t cursor, uint32_t limit,
                                                          uint64_t block_timeout_ms);
  /// nullopt-like: `found` false when the key is absent.
  std::pair<bool, std::string> dict_get(const std::string& name, const std::string& key);
  /// False only when `skip_if_exists` and the key was present.
  bool dict_put(const std::string& name, const std::string& key, const std::string& value,
                bool skip_if_exists);
  void dict_update(const std::string& name,
                   const std::vector<std::pair<std::string, std::string>>& entries);
  std::pair<bool, std::string> dict_pop(const std::string& name, const std::string& key);
  bool dict_contains(const std::string& name, const std::string& key);
  uint64_t dict_len(const std::string& name);
  /// `cursor` "" starts at the first key.
  dict_page dict_scan(const std::string& name, const std::string& cursor, uint32_t limit,
                      bool with_values);
  void dict_clear(const std::string& name);

  /// Disconnects and joins the kj thread; idempotent. Later calls throw "unavailable".
  void close();

  struct impl;

private:
  explicit connection(std::shared_ptr<impl> self);
  /// shared_ptr: app, map and log handles keep the connection's kj thread reachable.
  std::shared_ptr<impl> impl_;
};

} // namespace shoal::client
