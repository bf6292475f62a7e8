#include "actors/container_supervisor/container_supervisor.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/blocking_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/container_supervisor/data_calls.hpp"
#include "actors/gateway/secret_store.hpp"
#include "actors/scheduler/scheduler_types.hpp"
#include "runtime/binary_codec.hpp"
#include "actors/image_builder/image_service.hpp"
#include "fs/chunk_store.hpp"
#include "runtime/container/oci_runtime.hpp"
#include "runtime/container/oci_spec.hpp"
#include "runtime/container/overlay_rootfs.hpp"
#include "runtime/container/path_beneath.hpp"
#include "runtime/container/process_user.hpp"
#include "runtime/errc.hpp"
#include "runtime/guest/guest_frame.hpp"
#include "runtime/guest/guest_hub.hpp"
#include "runtime/guest/guest_wire.hpp"
#include "runtime/log.hpp"
#include "storage/key.hpp"

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::guest::frame)

namespace shoal::container_supervisor {

namespace {

namespace fs = std::filesystem;
using namespace std::chrono;
using scheduler::output_status;

using frame_atom = caf::atom_constant<caf::atom("cs_frame")>;
using closed_atom = caf::atom_constant<caf::atom("cs_closed")>;
using shim_exit_atom = caf::atom_constant<caf::atom("cs_exit")>;
using deadline_atom = caf::atom_constant<caf::atom("cs_dead")>;
using kill_atom = caf::atom_constant<caf::atom("cs_kill")>;
using booted_atom = caf::atom_constant<caf::atom("cs_booted")>;
using released_atom = caf::atom_constant<caf::atom("cs_freed")>;
using finished_atom = caf::atom_constant<caf::atom("cs_done")>;

using impl_actor = container_supervisor_actor::extend<
  caf::reacts_to<frame_atom, guest::frame>, caf::reacts_to<closed_atom, caf::error>,
  caf::reacts_to<shim_exit_atom, int>, caf::reacts_to<deadline_atom, uint64_t>,
  caf::reacts_to<kill_atom>, caf::reacts_to<booted_atom, std::string>,
  caf::reacts_to<released_atom, bool>, caf::reacts_to<finished_atom, std::vector<uint64_t>>>;

constexpr uint8_t record_version = 1;

int64_t now_ms() {
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

/// What a materialised directory of shipped files takes from the image below it: the mode and
/// owner of the image's own directory at a relative path ("" is the root), if it has one.
using directory_attributes = std::function<std::optional<struct stat>(const std::string& rel)>;

/// Writes `files` (their content from the blobs table) into `dir`, once: concurrent supervisors
/// may race, so each writes a private temp dir and renames it; the loser's rename fails
/// harmlessly. Files keep their mode plus read for everyone, directories are 0755 owned by root
/// (or what `attributes` says): a container's process may run as any user.
caf::expected<std::string> materialize_files(const node_services& svc, const std::string& dir,
                                             const std::vector<scheduler::code_file>& files,
                                             const directory_attributes& attributes = {}) {
  std::error_code ec;
  if (fs::exists(dir, ec))
    return dir;
  auto tmp = dir + ".tmp-" + std::to_string(::getpid()) + "-"
             + std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id()));
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec)
    return make_error(errc::storage_failure, "cannot create " + tmp + ": " + ec.message());
  auto abandon = [&](caf::error err) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    return err;
  };
  for (const auto& f : files) {
    auto blob = svc.db->get(storage::table::blobs, storage::key{}.str(f.sha256).bytes());
    if (!blob)
      return abandon(blob.error());
    if (!*blob)
      return abandon(make_error(errc::not_found, "the content of " + f.path + " is not stored"));
    auto target = fs::path{tmp} / f.path; // paths were validated by the scheduler
    fs::create_directories(target.parent_path(), ec);
    std::ofstream out{target, std::ios::binary};
    out.write((*blob)->data(), static_cast<std::streamsize>((*blob)->size()));
    out.close();
    if (!out)
      return abandon(make_error(errc::storage_failure, "cannot write " + target.string()));
    ::chmod(target.c_str(), (f.mode & 0755) | 0444);
  }
  std::vector<fs::path> dirs{fs::path{tmp}};
  for (auto it = fs::recursive_directory_iterator(tmp, ec); !ec && it != fs::end(it);
       it.increment(ec))
    if (it->is_directory(ec) && !it->is_symlink(ec))
      dirs.push_back(it->path());
  for (const auto& d : dirs) {
    auto rel = d.lexically_relative(tmp).generic_string();
    auto image_dir = attributes ? attributes(rel == "." ? "" : rel) : std::nullopt;
    bool set = image_dir ? ::chmod(d.c_str(), image_dir->st_mode & 07777) == 0
                             && ::lchown(d.c_str(), image_dir->st_uid, image_dir->st_gid) == 0
                         : ::chmod(d.c_str(), 0755) == 0;
    if (!set)
      return abandon(make_error(errc::storage_failure, "cannot set the mode of " + d.string()
                                                         + ": " + std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), dir.c_str()) != 0)
    fs::remove_all(tmp, ec); // another supervisor won the race
  return dir;
}

/// The app's shipped files, written once per code id under <state>/code/<id> and mounted
/// read-only at /shoal/code.
caf::expected<std::string> materialize_code(const node_services& svc, const std::string& code_id) {
  auto dir = svc.state_dir + "/code/" + code_id;
  std::error_code ec;
  if (fs::exists(dir, ec))
    return dir;
  auto manifest_bytes = svc.db->get(storage::table::code, storage::key{}.str(code_id).bytes());
  if (!manifest_bytes)
    return manifest_bytes.error();
  if (!*manifest_bytes)
    return make_error(errc::not_found, "the code of this app (" + code_id + ") is not stored");
  std::vector<scheduler::code_file> files;
  if (auto err = decode_record(**manifest_bytes, record_version, files))
    return err;
  return materialize_files(svc, dir, files);
}

/// The function's copy=False files (`Image.add_local_*(copy=False)`), laid out as the paths they
/// take in the container, written once per (image tree, files) under <state>/code/files-<key>:
/// the top lower layer of the container's overlay, so they merge into the image's directories
/// the way a layer does. Each directory takes the mode and owner the image gives it. A file whose
/// parent is a symlink or a file in the image is refused (following it could leave the tree).
caf::expected<std::string> materialize_image_files(const node_services& svc,
                                                   const std::vector<scheduler::code_file>& files,
                                                   const std::string& tree,
                                                   const std::string& image_id) {
  auto sorted = files;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  std::string manifest = tree + "\n";
  for (const auto& f : sorted) {
    manifest += f.path + '\0' + f.sha256 + '\0' + std::to_string(f.mode) + '\n';
    if (auto placed = container::path_beneath(tree, f.path); !placed)
      return make_error(errc::invalid_argument,
                        "the copy=False file /" + f.path + " cannot be placed in image "
                          + image_id + ": " + message_of(placed.error()));
  }
  auto dir = svc.state_dir + "/code/files-" + shoal::fs::hash_chunk(manifest).hex().substr(0, 32);
  return materialize_files(svc, dir, sorted, [&tree](const std::string& rel) {
    std::optional<struct stat> out;
    auto host = container::path_beneath(tree, rel);
    struct stat st;
    if (host && ::lstat(host->c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      out = st;
    return out;
  });
}

output_status from_guest(guest::output_status s) {
  switch (s) {
    case guest::output_status::success: return output_status::success;
    case guest::output_status::failure: return output_status::failure;
    case guest::output_status::item: return output_status::generator_item;
    case guest::output_status::done: return output_status::generator_done;
    case guest::output_status::cancelled: return output_status::cancelled;
  }
  return output_status::internal_error;
}

/// Reads a pipe until EOF and forwards complete lines to the scheduler as log lines.
void pump_logs(int fd, uint8_t stream, std::string container_id,
               scheduler::scheduler_actor scheduler) {
  std::string partial;
  char buf[16384];
  for (;;) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    partial.append(buf, static_cast<size_t>(n));
    std::vector<scheduler::log_line> lines;
    size_t start = 0;
    for (size_t nl; (nl = partial.find('\n', start)) != std::string::npos; start = nl + 1)
      lines.push_back(scheduler::log_line{now_ms(), container_id, stream,
                                          partial.substr(start, nl - start)});
    partial.erase(0, start);
    if (partial.size() > 65536) { // a very long line without newline: flush it as is
      lines.push_back(scheduler::log_line{now_ms(), container_id, stream, std::move(partial)});
      partial.clear();
    }
    if (!lines.empty())
      caf::anon_send(scheduler, scheduler::log_atom::value, container_id, std::move(lines));
  }
  if (!partial.empty())
    caf::anon_send(scheduler, scheduler::log_atom::value, container_id,
                   std::vector<scheduler::log_line>{
                     scheduler::log_line{now_ms(), container_id, stream, std::move(partial)}});
  ::close(fd);
}

/// What a running container holds on the host. Filled by the boot helper, released by the
/// cleanup helper (both detached: mounts, crun and fsyncs block); the supervisor itself only reads
/// it between the `booted_atom` and the cleanup it starts. shared_ptr: handed between those threads
/// through messages, never used by two at once.
struct container_resources {
  std::string bundle;
  std::string guest_dir;
  std::optional<container::overlay_rootfs> rootfs;
  bool started = false; ///< crun started (the shim runs)
  /// The image's ENTRYPOINT (empty: none), named when the container ends before its guest did.
  std::vector<std::string> entrypoint;
  pid_t shim_pid = -1;
  pid_t init_pid = -1;  ///< the container's pid 1 on the host, for SIGKILL without forking crun
  std::thread waiter;
  std::vector<std::thread> log_readers;
};

using resources_ptr = std::shared_ptr<container_resources>;

struct supervisor_state {
  supervisor_config cfg;
  std::string lifecycle = "booting";
  resources_ptr res = std::make_shared<container_resources>();
  std::optional<guest::channel_id> channel;
  bool booted = false;
  bool kill_pending = false;  ///< a kill was asked for before the container was running
  /// Inputs handed to the guest: id -> when it started (ms), or -1 while it waits in the guest's
  /// queue (the scheduler may prefetch beyond max_inputs). The guest starts inputs in FIFO order
  /// as slots free, so a timeout is armed when an input's turn comes, not when it arrived.
  std::map<uint64_t, int64_t> inflight;
  std::deque<uint64_t> waiting;
  uint32_t running = 0;
  bool was_ready = false;
  bool stop_requested = false;
  bool timed_out = false;
  bool exit_reported = false; ///< the cleanup helper runs or ran
  std::string fatal;          ///< FATAL text from the guest, if any
  std::string boot_error;
  container::exit_status exit_status;
  uint32_t max_inputs = 1;
  uint64_t inputs_run = 0;
  uint64_t outputs_sent = 0;
  uint64_t nested_calls = 0;
  int64_t started_at_ms = now_ms();
  static inline const char* name = "container_supervisor";
};

using self_ptr = impl_actor::stateful_pointer<supervisor_state>;

void system_log(const scheduler::scheduler_actor& scheduler, const std::string& container_id,
                const std::string& text) {
  caf::anon_send(scheduler, scheduler::log_atom::value, container_id,
                 std::vector<scheduler::log_line>{
                   scheduler::log_line{now_ms(), container_id, 3, text}});
}

void system_log(self_ptr self, const std::string& text) {
  system_log(self->state.cfg.scheduler, self->state.cfg.container_id, text);
}

/// Detached: releases everything the container held, in the order the runtime requires —
/// (exit observed) → OOM read → crun delete → cgroup parents → threads → overlay → dirs — then
/// tells the supervisor whether the kernel OOM-killed it.
void release_resources(resources_ptr res, const node_services* svc, std::string id,
                       impl_actor supervisor) {
  bool oom = false;
  if (res->started) {
    if (auto killed = svc->runtime->was_oom_killed(id); killed && *killed)
      oom = true;
    if (auto err = svc->runtime->remove(id))
      log::warn("container_remove_failed").kv("container_id", id).kv("error", message_of(err));
    if (auto err = svc->runtime->remove_cgroup_parents(container::cgroups_path_for(id)))
      log::debug("cgroup_cleanup_incomplete").kv("container_id", id).kv("error", message_of(err));
  }
  if (res->waiter.joinable())
    res->waiter.join();
  // The readers end at EOF, having sent every line: the container's output is all in the
  // scheduler's mailbox before its exited_atom, which is what ends the app's log streams.
  for (auto& t : res->log_readers)
    if (t.joinable())
      t.join();
  if (res->rootfs)
    if (auto err = res->rootfs->release())
      log::warn("overlay_release_failed").kv("container_id", id).kv("error", message_of(err));
  std::error_code ec;
  if (!res->bundle.empty())
    fs::remove_all(res->bundle, ec);
  if (!res->guest_dir.empty())
    fs::remove_all(res->guest_dir, ec);
  caf::anon_send(supervisor, released_atom::value, oom);
}

/// Starts the cleanup once: from the shim's exit, or from a failed boot.
void begin_cleanup(self_ptr self, container::exit_status status) {
  auto& st = self->state;
  if (st.exit_reported)
    return;
  st.exit_reported = true;
  st.exit_status = status;
  if (st.channel)
    st.cfg.services->hub->close(*st.channel);
  st.channel.reset();
  auto res = st.res;
  auto* svc = st.cfg.services;
  auto id = st.cfg.container_id;
  auto handle = caf::actor_cast<impl_actor>(self);
  self->system().spawn<caf::detached>([res, svc, id, handle](caf::blocking_actor*) {
    release_resources(res, svc, id, handle);
  });
}

/// The cleanup finished: report the container's end to the scheduler, then stop.
void finish(self_ptr self, bool oom_killed) {
  auto& st = self->state;
  auto status = st.exit_status;
  status.oom_killed = status.oom_killed || oom_killed;
  scheduler::container_exit exit;
  exit.was_ready = st.was_ready;
  exit.oom_killed = status.oom_killed;
  exit.timed_out = st.timed_out;
  exit.requested = st.stop_requested && !st.timed_out;
  if (!st.boot_error.empty())
    exit.reason = st.boot_error;
  else if (!st.fatal.empty())
    exit.reason = st.fatal;
  else if (status.oom_killed)
    exit.reason = "killed for exceeding its memory limit";
  else
    exit.reason = status.describe();
  if (!st.was_ready && st.boot_error.empty() && st.fatal.empty() && !st.res->entrypoint.empty()
      && !st.stop_requested) {
    std::string argv;
    for (const auto& a : st.res->entrypoint)
      argv += (argv.empty() ? "" : " ") + a;
    exit.reason += " before the function runner started: the image's ENTRYPOINT (" + argv
                   + ") must run the command it is given, e.g. end it with exec \"$@\"";
  }
  st.lifecycle = exit.requested || status.success() ? "stopped" : "crashed";
  log::info("container_ended")
    .kv("container_id", st.cfg.container_id)
    .kv("function", st.cfg.function.name)
    .kv("state", st.lifecycle)
    .kv("reason", exit.reason);
  self->send(st.cfg.scheduler, scheduler::exited_atom::value, st.cfg.container_id,
             std::move(exit));
  self->quit();
}

/// The function's environment variables in order, later entries winning: plain `KEY=VALUE` pairs
/// from the SDK (app secrets, then the function's, then `Secret.from_dict`/dotenv/environ values),
/// and `@secret:NAME=NAME` entries that stand for the named secret's variables, read here from the
/// `secrets` table of the function's environment. A missing secret fails the start; the error
/// names the secret, never a value.
caf::expected<std::vector<std::string>> resolve_env(const node_services& svc,
                                                    const scheduler::function_def& fn) {
  std::vector<std::pair<std::string, std::string>> out;
  std::map<std::string, size_t> index;
  auto set = [&](const std::string& k, const std::string& v) {
    auto [i, fresh] = index.emplace(k, out.size());
    if (fresh)
      out.emplace_back(k, v);
    else
      out[i->second].second = v;
  };
  for (const auto& [k, v] : fn.env) {
    if (k.rfind("@secret:", 0) != 0) {
      set(k, v);
      continue;
    }
    if (svc.db == nullptr)
      return make_error(errc::unavailable, "secret '" + v
                                             + "' cannot be read: this node has no state store");
    auto entries = gateway::secret_store{*svc.db}.read(fn.environment, v);
    if (!entries)
      return entries.error();
    for (const auto& [sk, sv] : *entries)
      set(sk, sv);
  }
  std::vector<std::string> env;
  env.reserve(out.size());
  for (auto& [k, v] : out)
    env.push_back(k + "=" + v);
  return env;
}

/// Detached: everything slow about starting a container — the image (built once per state dir),
/// the code, the overlay, the OCI spec, crun. Answers the supervisor with `booted_atom` and the
/// error text (empty on success).
void boot(resources_ptr res, supervisor_config cfg, impl_actor supervisor) {
  auto* svc = cfg.services;
  const auto& fn = cfg.function;
  const auto& id = cfg.container_id;
  auto fail = [&](const caf::error& err) {
    caf::anon_send(supervisor, booted_atom::value,
                   "container could not start: " + message_of(err));
  };
  auto user_env = resolve_env(*svc, fn);
  if (!user_env)
    return fail(user_env.error());
  std::error_code ec;
  if (svc->images == nullptr)
    return fail(make_error(errc::unavailable, "this node has no image service"));
  auto image = svc->images->tree(fn.image, [&](std::string_view line) {
    system_log(cfg.scheduler, id, "image: " + std::string{line});
  });
  if (!image)
    return fail(image.error());
  auto record = svc->images->record(fn.image.empty() ? svc->images->default_image_id() : fn.image);
  if (!record)
    return fail(record.error());
  if (record->python.empty())
    return fail(make_error(errc::invalid_argument,
                           "image " + record->id + " has no Python interpreter (no /usr/bin/python3 "
                           "or /usr/local/bin/python3); build the function's image on "
                           "Image.debian_slim() or add .apt_install(\"python3\", "
                           "\"python3-cloudpickle\")"));
  // The guest socket's directory, whatever shoald's umask: the guest may run as any user (the
  // socket itself is 0666, guest_hub_config::socket_mode).
  (void) ::chmod(res->guest_dir.c_str(), 0755); // if it fails, the guest says why it cannot connect
  // The image's USER, resolved against the image's own /etc/passwd and /etc/group.
  auto user = container::resolve_process_user_in(record->config.user, *image);
  if (!user)
    return fail(make_error(errc::invalid_argument,
                           "image " + record->id + " runs as USER '" + record->config.user
                             + "': " + message_of(user.error())
                             + "; create it in an earlier step (RUN useradd ...) or give a "
                               "numeric uid[:gid]"));
  std::string code_dir;
  if (!fn.code_id.empty()) {
    auto dir = materialize_code(*svc, fn.code_id);
    if (!dir)
      return fail(dir.error());
    code_dir = *dir;
  }
  std::vector<std::string> lower_dirs{*image};
  if (!fn.files.empty()) {
    auto dir = materialize_image_files(*svc, fn.files, *image, record->id);
    if (!dir)
      return fail(dir.error());
    lower_dirs.insert(lower_dirs.begin(), *dir);
  }
  res->bundle = svc->state_dir + "/containers/" + id;
  fs::create_directories(res->bundle, ec);
  if (ec)
    return fail(make_error(errc::storage_failure,
                           "cannot create " + res->bundle + ": " + ec.message()));
  auto rootfs = container::overlay_rootfs::mount(lower_dirs, res->bundle);
  if (!rootfs)
    return fail(rootfs.error());
  res->rootfs.emplace(std::move(*rootfs));

  container::container_spec spec;
  spec.id = id;
  spec.hostname = id;
  // The image's ENTRYPOINT wraps the guest (`exec "$@"` runs it); CMD is not used for functions.
  res->entrypoint = record->config.entrypoint;
  spec.args = record->config.entrypoint;
  spec.args.insert(spec.args.end(), {record->python, "-m", "shoal._guest"});
  spec.uid = user->uid;
  spec.gid = user->gid;
  spec.additional_gids = user->additional_gids;
  spec.cwd = record->config.workdir.empty() ? "/" : record->config.workdir;
  // WORKDIR and HOME are made in this container's overlay upper when the image lacks them, never
  // through a symlink of the image (that would resolve on the host). One that leads through a
  // symlink is left as it is: crun resolves the working directory inside the container.
  if (!record->config.workdir.empty())
    if (auto err = container::make_directory_beneath(res->rootfs->rootfs(), record->config.workdir))
      system_log(cfg.scheduler, id, "WORKDIR " + record->config.workdir + " not made here: "
                                      + message_of(err));
  // HOME: root's is /root; another user's is its passwd home (owned by the user, 0700, when made
  // here), or /tmp for a uid passwd does not know.
  std::string home = "/root";
  if (!user->is_root()) {
    home = user->name.empty() || user->home == "/" ? "/tmp" : user->home;
    if (home != "/tmp")
      if (auto err = container::make_directory_beneath(res->rootfs->rootfs(), home, 0700,
                                                       user->uid, user->gid))
        system_log(cfg.scheduler, id, "HOME " + home + " not made here: " + message_of(err));
  }
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const auto& [k, v] : record->config.env)
    if (k == "PATH")
      path = v;
  spec.env = {
    "PATH=" + path,
    "HOME=" + home,
    "PYTHONUNBUFFERED=1",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONPATH=/shoal/sdk:/root",
    "SHOAL_GUEST_SOCKET=/shoal/guest/guest.sock",
    "SHOAL_CONTAINER_ID=" + id,
    "SHOAL_FUNCTION_NAME=" + fn.name,
    "SHOAL_APP_NAME=" + fn.app_name,
    "SHOAL_APP_ID=" + fn.app_id,
    "SHOAL_ENVIRONMENT=" + fn.environment,
    "SHOAL_CODE_DIR=/shoal/code",
  };
  for (const auto& [k, v] : record->config.env)
    if (k != "PATH")
      spec.env.push_back(k + "=" + v);
  for (auto& kv : *user_env)
    spec.env.push_back(std::move(kv));
  {
    // One entry per variable, the last value winning (getenv would find the first).
    std::vector<std::string> unique;
    std::map<std::string, size_t> at;
    for (auto& kv : spec.env) {
      auto key = kv.substr(0, kv.find('='));
      auto [i, fresh] = at.emplace(key, unique.size());
      if (fresh)
        unique.push_back(std::move(kv));
      else
        unique[i->second] = std::move(kv);
    }
    spec.env = std::move(unique);
  }
  spec.mounts = container::standard_mounts();
  spec.mounts.push_back(container::guest_mount(res->guest_dir));
  if (!code_dir.empty())
    spec.mounts.push_back(container::code_mount(code_dir));
  spec.mounts.push_back(container::mount_spec{"/shoal/sdk/shoal", svc->sdk_dir + "/shoal", "bind",
                                              {"rbind", "ro", "nosuid", "nodev"}});
  spec.limits.memory_bytes = static_cast<uint64_t>(fn.memory_mb) << 20;
  spec.limits.cpu_millis = fn.cpu_millis;
  spec.limits.pids_max = 4096;
  spec.cgroups_path = container::cgroups_path_for(id);
  if (auto err = container::write_bundle_config(res->bundle, spec))
    return fail(err);

  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0)
    return fail(make_error(errc::unavailable, std::string{"pipe: "} + std::strerror(errno)));
  auto pid = svc->runtime->start(res->bundle, id, out_pipe[1], err_pipe[1]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  res->log_readers.emplace_back(pump_logs, out_pipe[0], uint8_t{1}, id, cfg.scheduler);
  res->log_readers.emplace_back(pump_logs, err_pipe[0], uint8_t{2}, id, cfg.scheduler);
  if (!pid)
    return fail(pid.error());
  res->started = true;
  res->shim_pid = *pid;
  std::ifstream pid_file{res->bundle + "/crun.pid"};
  pid_file >> res->init_pid;
  res->waiter = std::thread([supervisor, shim = *pid] {
    int status = 0;
    while (::waitpid(shim, &status, 0) < 0 && errno == EINTR) {
    }
    caf::anon_send(supervisor, shim_exit_atom::value, status);
  });
  caf::anon_send(supervisor, booted_atom::value, std::string{});
}

void kill_container(self_ptr self) {
  auto& st = self->state;
  if (st.exit_reported)
    return;
  if (!st.booted) {
    st.kill_pending = true;
    return;
  }
  // pid 1 of the container's pid namespace: its death takes every process in it.
  if (st.res->init_pid > 0)
    ::kill(st.res->init_pid, SIGKILL);
}

/// Starts the clock of queued inputs while the guest has free slots.
void start_waiting(self_ptr self) {
  auto& st = self->state;
  auto timeout = milliseconds(st.cfg.function.timeout_ms);
  while (st.running < st.max_inputs && !st.waiting.empty()) {
    auto id = st.waiting.front();
    st.waiting.pop_front();
    auto i = st.inflight.find(id);
    if (i == st.inflight.end() || i->second >= 0)
      continue; // finished (cancelled) before its turn
    i->second = now_ms();
    ++st.running;
    if (timeout.count() > 0)
      self->delayed_send(self, timeout, deadline_atom::value, id);
  }
}

/// An input reached its terminal output: its slot goes to the next queued input.
void input_done(self_ptr self, uint64_t id) {
  auto& st = self->state;
  auto i = st.inflight.find(id);
  if (i == st.inflight.end())
    return;
  if (i->second >= 0 && st.running > 0)
    --st.running;
  st.inflight.erase(i);
  start_waiting(self);
}

void send_frame(self_ptr self, const guest::frame& f) {
  auto& st = self->state;
  if (st.channel)
    st.cfg.services->hub->send(*st.channel, guest::encode(f));
}

std::string output_record(const scheduler::call_output& o) {
  guest::wire_writer w;
  w.u8(static_cast<uint8_t>(o.status)).bytes(o.data).str(o.error).u32(o.attempts);
  return w.take();
}

/// A nested call from the guest: run it against the scheduler in the container's environment.
void handle_call(self_ptr self, guest::call& c) {
  auto& st = self->state;
  ++st.nested_calls;
  auto request_id = c.request_id;
  auto reply_ok = [self, request_id](std::string body) {
    send_frame(self, guest::reply{request_id, errc::none, std::move(body), {}});
  };
  auto reply_err = [self, request_id](const caf::error& err) {
    send_frame(self, guest::reply{request_id, code_of(err), {}, message_of(err)});
  };
  guest::wire_reader r{c.body};
  const auto& env = st.cfg.function.environment;
  constexpr auto deadline = seconds(86400);
  if (c.method == "function.lookup") {
    auto app = r.str("app");
    auto name = r.str("name");
    if (auto err = r.finish("function.lookup body"))
      return reply_err(err);
    self->request(st.cfg.scheduler, seconds(30), scheduler::lookup_atom::value, env, app, name)
      .then(
        [reply_ok](scheduler::function_def& f) {
          guest::wire_writer w;
          uint32_t flags = (f.is_class ? 1u : 0u) | (f.is_generator ? 2u : 0u);
          w.str(f.function_id).u32(flags).bytes(f.definition);
          reply_ok(w.take());
        },
        reply_err);
  } else if (c.method == "function.call") {
    auto function_id = r.str("function_id");
    auto args = r.bytes("args");
    if (auto err = r.finish("function.call body"))
      return reply_err(err);
    self->request(st.cfg.scheduler, deadline, scheduler::call_atom::value, function_id, args)
      .then([reply_ok](scheduler::call_output& o) { reply_ok(output_record(o)); }, reply_err);
  } else if (c.method == "function.spawn") {
    auto function_id = r.str("function_id");
    auto args = r.bytes("args");
    if (auto err = r.finish("function.spawn body"))
      return reply_err(err);
    self->request(st.cfg.scheduler, seconds(30), scheduler::spawn_atom::value, function_id, args)
      .then(
        [reply_ok](std::string& call_id) {
          guest::wire_writer w;
          w.str(call_id);
          reply_ok(w.take());
        },
        reply_err);
  } else if (c.method == "call.get") {
    auto call_id = r.str("call_id");
    auto timeout_ms = r.u64("timeout_ms");
    if (auto err = r.finish("call.get body"))
      return reply_err(err);
    self->request(st.cfg.scheduler, milliseconds(timeout_ms) + seconds(30),
                  scheduler::get_atom::value, call_id, timeout_ms)
      .then(
        [reply_ok](scheduler::call_result& res) {
          guest::wire_writer w;
          bool done = res.done && !res.outputs.empty();
          w.u8(done ? 1 : 0);
          std::string body = w.take();
          if (done)
            body += output_record(res.outputs.front());
          reply_ok(std::move(body));
        },
        reply_err);
  } else if (is_data_method(c.method)) {
    // queue.* and dict.* (data_calls.cpp); the REPLY goes straight to the hub (thread-safe).
    if (!st.channel)
      return;
    auto* svc = st.cfg.services;
    handle_data_call(self->system(), svc->queue_broker, caf::actor_cast<caf::actor>(self), env,
                     std::move(c), [hub = svc->hub, channel = *st.channel](guest::reply reply) {
                       hub->send(channel, guest::encode(reply));
                     });
  } else {
    reply_err(make_error(errc::invalid_argument,
                         "unknown nested call method '" + c.method + "' (this shoald is "
                           + "older than the SDK in the container?)"));
  }
}

void on_frame(self_ptr self, guest::frame& f) {
  auto& st = self->state;
  std::visit(
    [&](auto& x) {
      using T = std::decay_t<decltype(x)>;
      if constexpr (std::is_same_v<T, guest::hello>) {
        if (x.protocol != guest::protocol_version) {
          st.fatal = "the guest speaks protocol " + std::to_string(x.protocol) + ", shoald "
                     + std::to_string(guest::protocol_version);
          return kill_container(self);
        }
        send_frame(self, guest::init{st.cfg.function.definition,
                                     std::max<uint32_t>(st.cfg.function.max_inputs, 1)});
      } else if constexpr (std::is_same_v<T, guest::ready>) {
        st.was_ready = true;
        st.max_inputs = std::max<uint32_t>(x.max_inputs, 1);
        st.lifecycle = "idle";
        log::info("container_ready_for_inputs")
          .kv("container_id", st.cfg.container_id)
          .kv("startup_ms", now_ms() - st.started_at_ms);
        if (st.stop_requested)
          send_frame(self, guest::shutdown{});
        else
          self->send(st.cfg.scheduler, scheduler::ready_atom::value, st.cfg.container_id,
                     st.max_inputs);
      } else if constexpr (std::is_same_v<T, guest::call>) {
        handle_call(self, x);
      } else if constexpr (std::is_same_v<T, guest::fatal>) {
        st.fatal = x.error;
        log::warn("guest_fatal").kv("container_id", st.cfg.container_id);
        system_log(self, x.error);
      } else {
        // The hub accepts only guest-to-supervisor frames; anything else is a bug there.
        log::error("unexpected_guest_frame").kv("container_id", st.cfg.container_id);
      }
    },
    f);
}

impl_actor::behavior_type supervisor_impl(self_ptr self, supervisor_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  auto* svc = st.cfg.services;
  auto handle = caf::actor_cast<impl_actor>(self);
  // The guest socket first (cheap, on this thread), so the guest finds it as soon as it runs;
  // everything slow happens in a detached boot helper.
  st.res->guest_dir = svc->run_dir + "/" + st.cfg.container_id;
  std::error_code ec;
  fs::create_directories(st.res->guest_dir, ec);
  guest::channel_handlers handlers;
  // OUTPUTS go from the hub thread straight to the scheduler (one hop less on every call);
  // the supervisor gets the finished ids for its slot and timeout bookkeeping.
  handlers.on_frame = [handle, scheduler = st.cfg.scheduler,
                       id = st.cfg.container_id](guest::channel_id, guest::frame f) {
    if (auto* outs = std::get_if<guest::outputs>(&f)) {
      std::vector<scheduler::guest_output> forward;
      std::vector<uint64_t> finished;
      forward.reserve(outs->items.size());
      for (auto& o : outs->items) {
        auto status = from_guest(o.status);
        if (status != output_status::generator_item)
          finished.push_back(o.id);
        forward.push_back(
          scheduler::guest_output{o.id, status, std::move(o.data), std::move(o.error)});
      }
      caf::anon_send(scheduler, scheduler::outputs_atom::value, id, std::move(forward));
      caf::anon_send(handle, finished_atom::value, std::move(finished));
      return;
    }
    caf::anon_send(handle, frame_atom::value, std::move(f));
  };
  handlers.on_closed = [handle](guest::channel_id, caf::error reason) {
    caf::anon_send(handle, closed_atom::value, std::move(reason));
  };
  auto channel = ec ? caf::expected<guest::channel_id>{make_error(
                        errc::storage_failure,
                        "cannot create " + st.res->guest_dir + ": " + ec.message())}
                    : svc->hub->listen(st.res->guest_dir + "/guest.sock", std::move(handlers));
  if (!channel) {
    st.boot_error = "container could not start: " + message_of(channel.error());
    begin_cleanup(self, container::exit_status{});
  } else {
    st.channel = *channel;
    self->system().spawn<caf::detached>(
      [res = st.res, cfg = st.cfg, handle](caf::blocking_actor*) { boot(res, cfg, handle); });
  }
  return {
    [self](booted_atom, const std::string& error) {
      auto& st = self->state;
      st.booted = true;
      if (!error.empty()) {
        st.boot_error = error;
        return begin_cleanup(self, container::exit_status{});
      }
      log::info("container_started")
        .kv("container_id", st.cfg.container_id)
        .kv("function", st.cfg.function.name)
        .kv("app", st.cfg.function.app_name)
        .kv("boot_ms", now_ms() - st.started_at_ms);
      if (st.kill_pending)
        kill_container(self);
    },
    [self](released_atom, bool oom_killed) { finish(self, oom_killed); },
    [self](finished_atom, const std::vector<uint64_t>& ids) {
      auto& st = self->state;
      for (auto id : ids)
        input_done(self, id);
      st.outputs_sent += ids.size();
      st.lifecycle = st.inflight.empty() ? "idle" : "busy";
    },
    [self](run_atom, std::vector<scheduler::run_input>& inputs) {
      auto& st = self->state;
      // After SHUTDOWN the guest drops new inputs; the scheduler re-queues them when this
      // container's exit reaches it (they are in flight here as far as it knows).
      if (st.exit_reported || st.stop_requested)
        return;
      // Frames are capped (64 MiB); a batch of large inputs goes out in several.
      constexpr size_t frame_budget = size_t{32} << 20;
      guest::inputs frame;
      size_t frame_bytes = 0;
      for (auto& in : inputs) {
        st.inflight[in.input_id] = -1;
        st.waiting.push_back(in.input_id);
        if (!frame.items.empty() && frame_bytes + in.args.size() > frame_budget) {
          send_frame(self, frame);
          frame.items.clear();
          frame_bytes = 0;
        }
        frame_bytes += in.args.size() + 12;
        frame.items.push_back(guest::input{in.input_id, std::move(in.args)});
      }
      st.inputs_run += inputs.size();
      st.lifecycle = "busy";
      if (!frame.items.empty())
        send_frame(self, frame);
      start_waiting(self);
    },
    [self](cancel_input_atom, uint64_t input_id) {
      if (self->state.inflight.count(input_id) != 0)
        send_frame(self, guest::cancel{input_id});
    },
    [self](stop_atom) {
      auto& st = self->state;
      if (st.stop_requested || st.exit_reported)
        return;
      st.stop_requested = true;
      st.lifecycle = "draining";
      // A guest not READY yet gets SHUTDOWN when it is (see the READY frame); either way it is
      // killed after the grace period.
      if (st.was_ready)
        send_frame(self, guest::shutdown{});
      self->delayed_send(self, st.cfg.services->stop_grace, kill_atom::value);
    },
    [self](deadline_atom, uint64_t input_id) {
      auto& st = self->state;
      auto i = st.inflight.find(input_id);
      if (i == st.inflight.end() || i->second < 0 || st.exit_reported)
        return;
      st.inflight.erase(i);
      st.timed_out = true;
      const auto& fn = st.cfg.function;
      auto seconds_text = std::to_string(fn.timeout_ms / 1000.0);
      seconds_text.erase(seconds_text.find_last_not_of('0') + 1);
      if (!seconds_text.empty() && seconds_text.back() == '.')
        seconds_text.pop_back();
      std::vector<scheduler::guest_output> outs{scheduler::guest_output{
        input_id, output_status::timeout, {},
        "function " + fn.name + " timed out after " + seconds_text + " s (timeout="
          + seconds_text + ")"}};
      self->send(st.cfg.scheduler, scheduler::outputs_atom::value, st.cfg.container_id,
                 std::move(outs));
      // Python cannot be interrupted safely: the container goes, its other inputs are re-queued.
      system_log(self, "input timed out after " + seconds_text + " s; stopping the container");
      kill_container(self);
    },
    [self](kill_atom) { kill_container(self); },
    [self](frame_atom, guest::frame& f) { on_frame(self, f); },
    [self](closed_atom, const caf::error& reason) {
      auto& st = self->state;
      st.channel.reset();
      if (!st.exit_reported) {
        log::debug("guest_channel_closed")
          .kv("container_id", st.cfg.container_id)
          .kv("reason", message_of(reason));
        // The guest exits on its own after SHUTDOWN or FATAL; anything else is a crash.
        if (!st.stop_requested && st.fatal.empty())
          kill_container(self);
      }
    },
    [self](shim_exit_atom, int wait_status) {
      begin_cleanup(self, container::decode_wait_status(wait_status));
    },
    [self](inspect_atom) {
      auto& st = self->state;
      auto s = snapshot_of(self, st.cfg.container_id, "container_supervisor", st.lifecycle);
      s.counter("inflight", static_cast<int64_t>(st.inflight.size()))
        .counter("inputs_run", static_cast<int64_t>(st.inputs_run))
        .counter("outputs_sent", static_cast<int64_t>(st.outputs_sent))
        .counter("nested_calls", static_cast<int64_t>(st.nested_calls))
        .counter("max_inputs", st.max_inputs)
        .detail("function", st.cfg.function.name)
        .detail("app", st.cfg.function.app_name);
      return s;
    },
  };
}

} // namespace

container_supervisor_actor spawn_supervisor(caf::actor_system& sys, supervisor_config cfg) {
  auto impl = sys.spawn(supervisor_impl, std::move(cfg));
  return caf::actor_cast<container_supervisor_actor>(impl);
}

} // namespace shoal::container_supervisor
