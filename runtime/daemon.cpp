#include "runtime/daemon.hpp"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sys/mount.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/logger.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "actors/admin/admin_actor.hpp"
#include "actors/block_server/block_server.hpp"
#include "actors/image_builder/image_builder_actor.hpp"
#include "actors/image_builder/image_service.hpp"
#include "actors/gateway/gateway_actor.hpp"
#include "actors/gateway/gateway_bridge.hpp"
#include "actors/gateway/environment_registry.hpp"
#include "actors/gateway/token_registry.hpp"
#include "actors/node_agent/node_agent.hpp"
#include "actors/queue_broker/queue_broker_actor.hpp"
#include "actors/scheduler/scheduler.hpp"
#include "fs/chunk_store.hpp"
#include "runtime/container/crun_runtime.hpp"
#include "runtime/guest/guest_hub.hpp"
#include "runtime/errc.hpp"
#include "runtime/log.hpp"
#include "runtime/rpc_server.hpp"
#include "runtime/state_dir.hpp"
#include "storage/key.hpp"
#include "storage/store.hpp"
#include "storage/writer.hpp"

#ifndef SHOAL_CAF_POLICY
#define SHOAL_CAF_POLICY "sharing"
#endif

namespace shoal {

namespace {

constexpr const char* bootstrap_environment = "main";

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

/// The node id is minted once per state dir and kept in meta/node_id.
caf::expected<std::string> load_or_create_node_id(storage::store& db) {
  auto k = storage::key{}.str("node_id").bytes();
  auto existing = db.get(storage::table::meta, k);
  if (!existing)
    return existing.error();
  if (*existing)
    return **existing;
  char host[64] = {};
  ::gethostname(host, sizeof(host) - 1);
  auto id = std::string{"node-"} + host + "-" + std::to_string(now_ms() % 1000000007);
  storage::write_batch batch;
  batch.put(storage::table::meta, k, id);
  if (auto err = db.write(batch, true))
    return err;
  return id;
}

/// Environments and admin tokens on a state dir made before they existed: "main" and every
/// token's environment are registered, and the token in admin.token (the bootstrap token, which
/// version-1 records did not flag) is rewritten as an admin token. The file, not a label, decides:
/// a user could label any token "bootstrap admin".
caf::error migrate_environments(storage::store& db, const state_dir& dir) {
  gateway::token_registry tokens{db};
  gateway::environment_registry environments{db};
  storage::write_batch batch;
  if (auto err = environments.ensure(gateway::main_environment, now_ms(), batch))
    return err;
  auto all = tokens.list();
  if (!all)
    return all.error();
  for (const auto& t : *all)
    if (t.environment != gateway::main_environment)
      if (auto err = environments.ensure(t.environment, t.created_at_ms, batch))
        return err;
  std::ifstream in{dir.file("admin.token")};
  std::string secret;
  if (in && std::getline(in, secret)) {
    while (!secret.empty() && (secret.back() == '\r' || secret.back() == ' '))
      secret.pop_back();
    auto info = tokens.verify(secret);
    if (info && !info->admin) {
      if (auto err = tokens.mark_admin(info->token_id, batch))
        return err;
      log::info("bootstrap_token_marked_admin").kv("token_id", info->token_id);
    }
  }
  if (batch.empty())
    return {};
  return db.write(batch, true);
}

/// On a fresh state dir: mint the admin token. The file is written before the record, so a crash
/// in between leaves no token on disk and the next start simply mints again.
caf::error ensure_bootstrap_token(storage::store& db, const state_dir& dir) {
  gateway::token_registry tokens{db};
  auto empty = tokens.empty();
  if (!empty)
    return empty.error();
  if (!*empty)
    return migrate_environments(db, dir);
  storage::write_batch batch;
  auto minted = tokens.mint(bootstrap_environment, "bootstrap admin", now_ms(), batch,
                            /*admin=*/true);
  if (!minted)
    return minted.error();
  if (auto err = gateway::environment_registry{db}.ensure(gateway::main_environment, now_ms(),
                                                            batch))
    return err;
  if (auto err = dir.write_file("admin.token", minted->secret + "\n", 0600))
    return err;
  if (auto err = db.write(batch, true))
    return err;
  log::info("bootstrap_token_created")
    .kv("token_id", minted->info.token_id)
    .kv("environment", bootstrap_environment)
    .kv("path", dir.file("admin.token"));
  return {};
}

/// Containers left behind by a shoald that died (kill -9, power loss): delete them with crun and
/// remove their bundles, so their mounts and cgroups do not pile up.
void clean_stale_containers(const std::string& state_dir, container::oci_runtime& runtime) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto root = fs::path{state_dir} / "containers";
  if (!fs::exists(root, ec))
    return;
  for (const auto& entry : fs::directory_iterator{root, ec}) {
    auto id = entry.path().filename().string();
    (void) runtime.remove(id); // best effort: it may never have started
    (void) runtime.remove_cgroup_parents(container::cgroups_path_for(id));
    auto rootfs = entry.path() / "rootfs";
    ::umount2(rootfs.c_str(), MNT_DETACH);
    fs::remove_all(entry.path(), ec);
    log::info("stale_container_removed").kv("container_id", id);
  }
}

/// `<state>/code` holds the apps' shipped files and copy=False files materialised from the blobs
/// table (container_supervisor.cpp): a cache that grows with every code change. Once the stale
/// containers are gone nothing uses it, so a worker starts with it empty; containers
/// materialise what they need again.
void clear_code_cache(const std::string& state_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto root = fs::path{state_dir} / "code";
  if (!fs::exists(root, ec))
    return;
  size_t removed = 0;
  for (const auto& entry : fs::directory_iterator{root, ec}) {
    std::error_code e;
    fs::remove_all(entry.path(), e);
    if (e)
      log::warn("code_cache_entry_not_removed").kv("path", entry.path().string()).kv("error", e.message());
    else
      ++removed;
  }
  log::info("code_cache_cleared").kv("entries", removed);
}

std::string default_sdk_dir() {
  if (const char* env = std::getenv("SHOAL_SDK_DIR"); env != nullptr && *env != '\0')
    return env;
  return SHOAL_SOURCE_SDK_DIR;
}

} // namespace

struct daemon::parts {
  daemon_config config;
  node_facts facts;
  std::unique_ptr<state_dir> dir;
  std::unique_ptr<storage::store> db;
  /// shared_ptr: the image service and (later) the block server both hold it.
  std::shared_ptr<fs::chunk_store> chunks;
  std::unique_ptr<container::oci_runtime> runtime;
  /// Declared before the actor system: builds running in detached actors use it until
  /// the system is joined.
  std::unique_ptr<images::image_service> images;
  caf::actor_system_config actor_config;
  std::unique_ptr<caf::actor_system> sys;
  storage::writer_actor writer;
  /// Runs the queue broker and its writer on the RPC server's kj thread (pinned_actor.hpp).
  std::shared_ptr<kj_execution_unit> rpc_unit;
  storage::writer_actor queue_writer; ///< the queue broker's own, pinned with it
  admin::admin_actor admin;
  gateway::gateway_actor gateway;
  node_agent::node_agent_actor agent;
  scheduler::scheduler_actor scheduler;
  queue_broker::queue_broker_actor queue_broker;
  images::image_builder_actor image_builder;
  block_server::block_server_actor block_server;
  std::unique_ptr<guest::guest_hub> hub;
  container_supervisor::node_services services;
  std::unique_ptr<rpc_server> rpc;
  bool stopped = false;
};

daemon::daemon(std::unique_ptr<parts> p) : parts_(std::move(p)) {}

daemon::~daemon() { stop(); }

const node_facts& daemon::facts() const noexcept { return parts_->facts; }

caf::expected<std::unique_ptr<daemon>> daemon::start(const daemon_config& cfg) {
  log::set_min_level(cfg.log_level);
  // Owned by the daemon from the start: on any failure below, ~daemon() takes down what exists.
  std::unique_ptr<daemon> result{new daemon(std::make_unique<parts>())};
  auto* p = result->parts_.get();
  p->config = cfg;

  auto dir = state_dir::acquire(cfg.state_dir);
  if (!dir)
    return dir.error();
  p->dir = std::move(*dir);
  log::info("starting")
    .kv("version", shoal_version)
    .kv("pid", static_cast<int64_t>(::getpid()))
    .kv("state_dir", p->dir->path())
    .kv("roles", cfg.control && cfg.worker ? "control,worker" : cfg.control ? "control" : "worker");

  auto db = storage::store::open(p->dir->db_path());
  if (!db)
    return db.error();
  p->db = std::move(*db);

  auto node_id = load_or_create_node_id(*p->db);
  if (!node_id)
    return node_id.error();
  if (auto err = ensure_bootstrap_token(*p->db, *p->dir))
    return err;

  p->facts.version = shoal_version;
  p->facts.node_id = *node_id;
  p->facts.roles = cfg.roles();
  p->facts.state_dir = p->dir->path();
  p->facts.pid = static_cast<uint32_t>(::getpid());
  p->facts.started_at_ms = now_ms();
  p->facts.schema_version = p->db->schema_version();

  if (cfg.scheduler_threads > 0)
    p->actor_config.set("scheduler.max-threads", cfg.scheduler_threads);
  // CAF's default work-stealing workers back off into 50 µs..10 ms sleeps when idle, and a call
  // crosses several actors: each hop could wait out a sleep. The sharing policy parks idle
  // workers on a condition variable and wakes one per enqueue.
  p->actor_config.set("scheduler.policy", caf::atom(SHOAL_CAF_POLICY));
  // Idle CAF workers poll with 50 us sleeps for up to 500 rounds before they wait on a condition
  // variable; under a steady request rate that is a context switch every 50 us per worker (a third
  // of shoald's CPU in the queue benchmark). Go straight to the condition variable after the short
  // spin (docs/queues.md, "Performance").
  p->actor_config.set("work-stealing.moderate-poll-attempts", 0);
  p->sys = std::make_unique<caf::actor_system>(p->actor_config);
  auto& sys = *p->sys;

  p->writer = storage::spawn_writer(sys, *p->db);
  p->admin = admin::spawn_admin(sys);
  p->gateway = gateway::spawn_gateway(sys, *p->db, p->writer);
  auto enroll = [&](const char* name, const auto& handle) {
    caf::anon_send(p->admin, admin::register_atom::value, std::string{name},
                   caf::actor_cast<inspectable_actor>(handle));
  };
  enroll("storage_writer", p->writer);
  enroll("gateway", p->gateway);
  {
    // Images: every node keeps chunks and materialises trees; control nodes also build.
    auto chunks = fs::chunk_store::open(p->dir->path() + "/chunks");
    if (!chunks)
      return chunks.error();
    p->chunks = std::move(*chunks);
    p->runtime = std::make_unique<container::crun_runtime>();
    images::image_service_options io;
    io.state_dir = p->dir->path();
    io.sdk_dir = cfg.sdk_dir.empty() ? default_sdk_dir() : cfg.sdk_dir;
    if (const char* cache = std::getenv("SHOAL_DEBOOTSTRAP_CACHE"))
      io.debootstrap_cache = cache;
    if (const char* reg = std::getenv("SHOAL_DEFAULT_REGISTRY"))
      io.default_registry = reg;
    if (const char* insecure = std::getenv("SHOAL_INSECURE_REGISTRIES")) {
      std::string list = insecure;
      for (size_t start = 0; start <= list.size();) {
        auto comma = list.find(',', start);
        if (comma == std::string::npos)
          comma = list.size();
        if (comma > start)
          io.insecure_registries.push_back(list.substr(start, comma - start));
        start = comma + 1;
      }
    }
    p->images = std::make_unique<images::image_service>(*p->db, p->chunks, *p->runtime, io);
    p->services.images = p->images.get();
  }
  {
    block_server::block_server_config bsc;
    bsc.store = p->chunks;
    p->block_server = block_server::spawn_block_server(sys, bsc);
    enroll("block_server", p->block_server);
  }
  if (cfg.worker) {
    auto hub = guest::guest_hub::start();
    if (!hub)
      return hub.error();
    p->hub = std::move(*hub);
    clean_stale_containers(p->dir->path(), *p->runtime);
    clear_code_cache(p->dir->path());
    auto& svc = p->services;
    svc.node_id = p->facts.node_id;
    svc.state_dir = p->dir->path();
    svc.run_dir = "/run/shoal/" + std::to_string(::getpid());
    svc.sdk_dir = cfg.sdk_dir.empty() ? default_sdk_dir() : cfg.sdk_dir;
    svc.db = p->db.get();
    svc.hub = p->hub.get();
    svc.runtime = p->runtime.get();
    p->agent = node_agent::spawn_node_agent(sys, node_agent::measure_capacity({}), &svc, p->admin);
    enroll("node_agent", p->agent);
  }
  p->rpc_unit = std::make_shared<kj_execution_unit>(sys);
  if (cfg.control) {
    p->queue_writer = storage::spawn_pinned_writer(sys, *p->db, p->rpc_unit, "queue_writer");
    enroll("queue_writer", p->queue_writer);
    p->queue_broker
      = queue_broker::spawn_queue_broker(sys, *p->db, p->queue_writer, {}, p->rpc_unit);
    p->services.queue_broker = p->queue_broker; // nested queue/dict calls from containers
    enroll("queue_broker", p->queue_broker);
    p->image_builder = images::spawn_image_builder(sys, *p->images);
    enroll("image_builder", p->image_builder);
    scheduler::scheduler_config sched_cfg;
    sched_cfg.node_id = p->facts.node_id;
    p->scheduler = scheduler::spawn_scheduler(sys, *p->db, p->writer, p->agent, sched_cfg);
    enroll("scheduler", p->scheduler);
  }

  gateway::bridge_targets targets{&sys, p->gateway, p->admin, p->scheduler, p->facts};
  targets.queue_broker = p->queue_broker;
  targets.image_builder = p->image_builder;
  targets.block_server = p->block_server;
  auto rpc = rpc_server::start(
    cfg.listen, [targets](rpc_context& ctx) { return gateway::make_bootstrap(ctx, targets); },
    p->rpc_unit, cfg.busy_poll);
  if (!rpc) {
    p->rpc_unit->close(); // never ran: pinned actors go to CAF's workers
    return rpc.error();
  }
  p->rpc = std::move(*rpc);
  p->facts.listen_address = p->rpc->address();

  if (auto err = p->dir->write_file("shoald.addr", p->facts.listen_address + "\n", 0644))
    return err;
  log::info("ready")
    .kv("addr", p->facts.listen_address)
    .kv("node_id", p->facts.node_id)
    .kv("schema_version", static_cast<int64_t>(p->facts.schema_version));
  // CAF 0.17 keeps a reference to the system's logger in a thread-local of every thread that
  // constructed the system or spawned and asked actors from outside, and the system's destructor
  // waits until the logger is gone: destroyed on another thread, it would wait forever for this
  // thread's reference. Drop it, so an embedder may stop the daemon on any thread.
  caf::logger::set_current_actor_system(nullptr);
  return result;
}

void daemon::stop() {
  auto& p = *parts_;
  if (p.stopped || !p.dir)
    return;
  p.stopped = true;
  log::info("stopping");
  p.dir->remove_file("shoald.addr");
  if (p.rpc)
    p.rpc->stop(p.config.drain_timeout);
  p.rpc.reset();
  log::info("rpc_stopped");
  if (p.sys && p.writer) {
    // Ask the writer to make everything acknowledged so far durable before anyone exits.
    caf::scoped_actor self{*p.sys};
    if (p.agent) {
      // Containers go first: each cleans up its mounts and cgroups before it reports its end.
      self->request(p.agent, std::chrono::seconds(30), node_agent::drain_atom::value)
        .receive([](uint32_t n) { log::info("containers_stopped").kv("count", static_cast<int64_t>(n)); },
                 [](caf::error& err) {
                   log::error("container_drain_failed").kv("error", message_of(err));
                 });
    }
    self->request(p.writer, std::chrono::seconds(30), storage::flush_atom::value)
      .receive([]() {},
               [](caf::error& err) {
                 log::error("final_flush_failed").kv("error", message_of(err));
               });
    // The queue broker goes before the writers: its mutations in flight still get their replies.
    for (auto handle : {caf::actor_cast<caf::actor>(p.scheduler), caf::actor_cast<caf::actor>(p.queue_broker),
                        caf::actor_cast<caf::actor>(p.queue_writer),
                        caf::actor_cast<caf::actor>(p.image_builder),
                        caf::actor_cast<caf::actor>(p.block_server),
                        caf::actor_cast<caf::actor>(p.agent), caf::actor_cast<caf::actor>(p.gateway),
                        caf::actor_cast<caf::actor>(p.admin), caf::actor_cast<caf::actor>(p.writer)})
      if (handle)
        caf::anon_send_exit(handle, caf::exit_reason::user_shutdown);
    p.scheduler = nullptr;
    p.queue_broker = nullptr;
    p.queue_writer = nullptr;
    p.image_builder = nullptr;
    p.block_server = nullptr;
    p.services.queue_broker = nullptr;
    p.agent = nullptr;
    p.gateway = nullptr;
    p.admin = nullptr;
    p.writer = nullptr;
  }
  p.sys.reset(); // joins every actor
  log::info("actors_stopped");
  if (p.hub)
    p.hub->stop();
  if (!p.services.run_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(p.services.run_dir, ec);
  }
  if (p.db) {
    if (auto err = p.db->flush())
      log::error("store_flush_failed").kv("error", message_of(err));
    p.db.reset();
    log::info("storage_closed");
  }
  log::info("stopped");
  p.dir.reset();
}

} // namespace shoal
