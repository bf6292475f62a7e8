#include "actors/image_builder/image_service.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <unordered_set>

#include "actors/gateway/secret_store.hpp"
#include "fs/registry/registry_client.hpp"
#include "fs/tar_import.hpp"
#include "fs/tree.hpp"
#include "runtime/binary_codec.hpp"
#include "runtime/container/oci_runtime.hpp"
#include "runtime/container/oci_spec.hpp"
#include "runtime/container/overlay_rootfs.hpp"
#include "runtime/errc.hpp"
#include "runtime/log.hpp"
#include "storage/key.hpp"

namespace shoal::images {

namespace stdfs = std::filesystem;

namespace {

constexpr std::string_view default_path =
  "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The Python versions the Debian suite offers (bookworm: 3.11 only).
constexpr std::string_view debian_python = "3.11";

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

bool is_base(std::string_view kind) {
  return kind == "debian_slim" || kind == "scratch" || kind == "registry";
}

bool is_metadata(std::string_view kind) {
  return kind == "env" || kind == "workdir" || kind == "user" || kind == "entrypoint"
         || kind == "cmd";
}

bool is_layer(std::string_view kind) {
  return kind == "apt_install" || kind == "pip_install" || kind == "run_commands"
         || kind == "run_function" || kind == "add_files";
}

std::string step_name(const image_step& step, size_t index) {
  auto name = "step " + std::to_string(index + 1);
  name += " (" + (step.label.empty() ? step.kind : step.label) + ")";
  return name;
}

caf::error invalid_step(const image_step& step, size_t index, const std::string& what) {
  return make_error(errc::invalid_argument, step_name(step, index) + ": " + what);
}

/// Single-quotes `s` for sh.
std::string sh_quote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

std::string random_suffix() {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08x%04x", rd(), static_cast<unsigned>(counter++ & 0xffff));
  return buf;
}

std::string human_bytes(uint64_t n) {
  char buf[32];
  if (n >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", n / double(1ull << 30));
  else if (n >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", n / double(1ull << 20));
  else
    std::snprintf(buf, sizeof buf, "%.1f KiB", n / 1024.0);
  return buf;
}

void set_env(key_values& env, const std::string& key, const std::string& value) {
  for (auto& kv : env)
    if (kv.first == key) {
      kv.second = value;
      return;
    }
  env.emplace_back(key, value);
}

/// Where the image's interpreter is, judged from the layer a step added (or none).
std::string python_after(const std::string& before, const fs::layer& added) {
  std::string found = before;
  for (const auto& e : added.entries) {
    bool exec = e.kind == fs::entry_kind::file || e.kind == fs::entry_kind::symlink
                || e.kind == fs::entry_kind::hardlink;
    if (e.path == "usr/local/bin/python3" && exec)
      return "/usr/local/bin/python3";
    if (e.path == "usr/bin/python3" && exec && found.empty())
      found = "/usr/bin/python3";
    if ((e.path == "usr/bin/python3" || e.path == "usr/bin" || e.path == "usr")
        && e.kind == fs::entry_kind::whiteout && found == "/usr/bin/python3")
      found.clear();
  }
  return found;
}

/// Drops what a build container leaves in its upper dir that is not the step's work: the
/// mount points crun creates (/proc, /dev, /sys, /tmp, /shoal, /etc/resolv.conf).
void drop_mount_artifacts(fs::layer& l) {
  static const std::vector<std::string> roots = {"proc", "dev", "sys", "tmp", "shoal",
                                                 "etc/resolv.conf"};
  auto artifact = [](const fs::entry& e) {
    for (const auto& r : roots)
      if (e.path == r || (e.path.size() > r.size() && e.path.compare(0, r.size(), r) == 0
                          && e.path[r.size()] == '/'))
        return true;
    return false;
  };
  l.entries.erase(std::remove_if(l.entries.begin(), l.entries.end(), artifact), l.entries.end());
}

std::string tree_key(const std::vector<std::string>& layers) {
  if (layers.empty())
    return "empty";
  std::string joined;
  for (const auto& l : layers)
    joined += l + "\n";
  return fs::hash_chunk(joined).hex().substr(0, 32);
}

/// Reads two pipes to their ends, passing whole lines to `on_line` and keeping the last ones.
void pump_output(int out_fd, int err_fd, const std::function<void(std::string)>& on_line,
                 std::deque<std::string>& tail) {
  struct stream {
    int fd;
    std::string pending;
  };
  stream streams[2] = {{out_fd, {}}, {err_fd, {}}};
  auto emit = [&](std::string text) {
    tail.push_back(text);
    if (tail.size() > 20)
      tail.pop_front();
    on_line(std::move(text));
  };
  char buf[16384];
  int open = 2;
  while (open > 0) {
    pollfd fds[2];
    int n = 0;
    int which[2];
    for (int i = 0; i < 2; ++i)
      if (streams[i].fd >= 0) {
        fds[n] = {streams[i].fd, POLLIN, 0};
        which[n++] = i;
      }
    if (::poll(fds, n, -1) < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    for (int k = 0; k < n; ++k) {
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      auto& s = streams[which[k]];
      auto got = ::read(s.fd, buf, sizeof buf);
      if (got <= 0) {
        if (got < 0 && errno == EINTR)
          continue;
        if (!s.pending.empty())
          emit(std::move(s.pending));
        s.pending.clear();
        ::close(s.fd);
        s.fd = -1;
        --open;
        continue;
      }
      s.pending.append(buf, static_cast<size_t>(got));
      size_t start = 0;
      for (size_t nl; (nl = s.pending.find('\n', start)) != std::string::npos; start = nl + 1) {
        auto line = s.pending.substr(start, nl - start);
        if (!line.empty() && line.back() == '\r')
          line.pop_back();
        // apt and pip redraw progress with '\r': keep the last redraw only.
        auto cr = line.rfind('\r');
        if (cr != std::string::npos)
          line = line.substr(cr + 1);
        emit(std::move(line));
      }
      s.pending.erase(0, start);
      if (s.pending.size() > 65536) {
        emit(std::move(s.pending));
        s.pending.clear();
      }
    }
  }
}

std::string quote_tail(const std::deque<std::string>& tail) {
  std::string out;
  for (const auto& l : tail)
    out += "\n  " + l;
  return out;
}

} // namespace

// -- ids --------------------------------------------------------------------------------------

caf::expected<std::string> canonical_step(const image_step& step, size_t index) {
  const auto& k = step.kind;
  if (index == 0 && !is_base(k))
    return invalid_step(step, index,
                        "an image starts with a base (debian_slim, from_registry, from_scratch or "
                        "from_dockerfile), not '" + k + "'");
  if (index > 0 && is_base(k))
    return invalid_step(step, index, "'" + k + "' is a base and can only be the first step");
  if (!is_base(k) && !is_layer(k) && !is_metadata(k))
    return invalid_step(step, index, "unknown step kind '" + k + "'");
  auto need_args = [&](size_t min, size_t max) -> caf::error {
    if (step.args.size() < min || step.args.size() > max)
      return invalid_step(step, index,
                          "takes " + (min == max ? std::to_string(min)
                                                 : std::to_string(min) + " to "
                                                     + std::to_string(max))
                            + " arguments, got " + std::to_string(step.args.size()));
    return {};
  };
  caf::error err;
  if (k == "debian_slim") {
    err = need_args(0, 1);
    if (!err && !step.args.empty() && !step.args[0].empty() && step.args[0] != debian_python)
      err = invalid_step(step, index,
                         "python_version='" + step.args[0]
                           + "' is not available: this cluster's Debian suite (bookworm) offers "
                             "Python 3.11; use Image.debian_slim() or python_version='3.11'");
  } else if (k == "scratch") {
    err = need_args(0, 0);
  } else if (k == "registry") {
    err = need_args(1, 1);
    if (!err && step.args[0].empty())
      err = invalid_step(step, index, "the image reference is empty");
  } else if (k == "apt_install" || k == "pip_install" || k == "run_commands"
             || k == "entrypoint" || k == "cmd") {
    err = need_args(k == "entrypoint" || k == "cmd" ? 0 : 1, 100000);
  } else if (k == "run_function") {
    err = need_args(1, 1);
    if (!err && step.blob.empty())
      err = invalid_step(step, index, "run_function needs the pickled function (blob)");
  } else if (k == "add_files") {
    err = need_args(1, 1);
    if (!err && step.blob.empty())
      err = invalid_step(step, index, "add_files needs the uploaded archive (blob)");
    if (!err && (step.args[0].empty() || step.args[0][0] != '/'))
      err = invalid_step(step, index, "the destination '" + step.args[0] + "' must be absolute");
  } else if (k == "env") {
    for (const auto& a : step.args) {
      auto eq = a.find('=');
      if (eq == std::string::npos || eq == 0) {
        err = invalid_step(step, index, "environment entries are KEY=VALUE, got '" + a + "'");
        break;
      }
    }
  } else if (k == "workdir") {
    err = need_args(1, 1);
    if (!err && (step.args[0].empty() || step.args[0][0] != '/'))
      err = invalid_step(step, index, "workdir '" + step.args[0] + "' must be absolute");
  } else if (k == "user") {
    err = need_args(1, 1);
  }
  if (err)
    return err;
  for (const auto& a : step.args)
    if (a.find('\0') != std::string::npos)
      return invalid_step(step, index, "arguments may not contain NUL bytes");
  // Unambiguous: every field length-prefixed. Secrets, credentials, labels and force_build are
  // not part of what an image is.
  std::string out = k;
  for (const auto& a : step.args)
    out += "\n" + std::to_string(a.size()) + ":" + a;
  if (k == "add_files")
    out += "\nblob:" + step.blob;
  if (k == "debian_slim")
    out += "\npython:" + std::string{debian_python};
  return out;
}

std::string image_id_of(std::string_view parent_id, std::string_view canonical) {
  std::string text{parent_id};
  text += "\n";
  text += canonical;
  return "im-" + fs::hash_chunk(text).hex().substr(0, 32);
}

image_spec default_image_spec() {
  image_spec spec;
  image_step base;
  base.kind = "debian_slim";
  base.args = {std::string{debian_python}};
  base.label = "debian_slim " + std::string{debian_python};
  spec.steps.push_back(std::move(base));
  return spec;
}

// -- once per key ------------------------------------------------------------------------------

struct image_service::once {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  caf::error result;
};

caf::error image_service::once_per_key(std::map<std::string, std::shared_ptr<once>>& table,
                                       const std::string& key,
                                       const std::function<caf::error()>& work) {
  std::shared_ptr<once> o;
  bool mine = false;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    auto i = table.find(key);
    if (i == table.end()) {
      o = std::make_shared<once>();
      table.emplace(key, o);
      mine = true;
    } else {
      o = i->second;
    }
  }
  if (!mine) {
    std::unique_lock<std::mutex> lock{o->m};
    o->cv.wait(lock, [&] { return o->done; });
    return o->result;
  }
  auto err = work();
  {
    std::lock_guard<std::mutex> guard{mutex_};
    table.erase(key);
  }
  {
    std::lock_guard<std::mutex> lock{o->m};
    o->done = true;
    o->result = err;
  }
  o->cv.notify_all();
  return err;
}

// -- the service -------------------------------------------------------------------------------

image_service::image_service(storage::store& db, std::shared_ptr<fs::chunk_store> chunks,
                             container::oci_runtime& runtime, image_service_options options)
  : db_(db), chunks_(std::move(chunks)), runtime_(runtime), options_(std::move(options)) {
  std::error_code ec;
  stdfs::remove_all(options_.state_dir + "/images/work", ec); // builds a crash interrupted
  // State dirs from before the image store kept one debootstrapped tree here; nothing reads it.
  for (auto old : {"/images/default", "/images/default.partial", "/images/default.stale"})
    stdfs::remove_all(options_.state_dir + old, ec);
}

image_service::~image_service() = default;

std::string image_service::default_image_id() const {
  auto spec = default_image_spec();
  auto canonical = canonical_step(spec.steps[0], 0);
  return image_id_of("", *canonical);
}

caf::expected<image_record> image_service::record(const std::string& image_id) const {
  auto raw = db_.get(storage::table::images, image_id);
  if (!raw)
    return raw.error();
  if (!*raw)
    return make_error(errc::not_found, "no image " + image_id
                                         + " on this cluster; `shoal image list` shows them");
  image_record rec;
  if (auto err = decode_record(**raw, image_record_version, rec))
    return err;
  return rec;
}

caf::expected<std::vector<image_record>> image_service::list() const {
  std::vector<image_record> out;
  caf::error bad;
  auto err = db_.scan(storage::table::images, "", [&](std::string_view, std::string_view v) {
    image_record rec;
    if (auto e = decode_record(v, image_record_version, rec)) {
      bad = e;
      return false;
    }
    out.push_back(std::move(rec));
    return true;
  });
  if (err)
    return err;
  if (bad)
    return bad;
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.created_at_ms < b.created_at_ms; });
  return out;
}

caf::error image_service::remove(const std::string& image_id) {
  auto rec = record(image_id);
  if (!rec)
    return rec.error();
  auto all = list();
  if (!all)
    return all.error();
  for (const auto& other : *all)
    if (other.parent == image_id)
      return make_error(errc::invalid_argument,
                        "image " + image_id + " is the parent of " + other.id
                          + "; remove that one first");
  storage::write_batch batch;
  batch.erase(storage::table::images, image_id);
  return db_.write(batch, true);
}

image_service::counters image_service::stats() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return counters_;
}

caf::error image_service::put_record(const image_record& rec) {
  storage::write_batch batch;
  batch.put(storage::table::images, rec.id, encode_record(image_record_version, rec));
  return db_.write(batch, true);
}

caf::expected<build_result> image_service::build(const image_spec& spec,
                                                 const build_progress_ptr& progress) {
  std::shared_lock gc{gc_mutex_}; // collect_garbage waits for builds, and they for it
  if (spec.steps.empty())
    return make_error(errc::invalid_argument, "an image spec needs at least a base step");
  std::vector<std::string> canonicals;
  std::vector<std::string> ids;
  std::string parent_id;
  for (size_t i = 0; i < spec.steps.size(); ++i) {
    auto c = canonical_step(spec.steps[i], i);
    if (!c)
      return c.error();
    ids.push_back(image_id_of(parent_id, *c));
    canonicals.push_back(std::move(*c));
    parent_id = ids.back();
  }
  {
    std::lock_guard<std::mutex> guard{mutex_};
    ++counters_.builds;
  }
  build_result result;
  result.image_id = ids.back();
  std::optional<image_record> parent;
  bool rebuilt = false;
  for (size_t i = 0; i < spec.steps.size(); ++i) {
    const auto& step = spec.steps[i];
    const auto& id = ids[i];
    step_result sr;
    sr.index = static_cast<uint32_t>(i);
    sr.image_id = id;
    bool force = step.force_build || (spec.ignore_cache && !is_metadata(step.kind));
    auto existing = record(id);
    if (!existing && code_of(existing.error()) != errc::not_found)
      return existing.error();
    if (existing && !force && !rebuilt) {
      sr.status = step_status::cached;
      if (progress)
        progress->step(sr);
      result.steps.push_back(sr);
      parent = std::move(*existing);
      std::lock_guard<std::mutex> guard{mutex_};
      ++counters_.steps_cached;
      continue;
    }
    sr.reason = step.force_build        ? "forced (force_build=True)"
                : (spec.ignore_cache && !is_metadata(step.kind)) ? "SHOAL_IGNORE_CACHE is set"
                : rebuilt               ? "its parent was rebuilt"
                                        : "no cached layer for this step (it or an input changed)";
    sr.status = step_status::building;
    if (progress)
      progress->step(sr);
    auto started = std::chrono::steady_clock::now();
    const image_record* parent_ptr = parent ? &*parent : nullptr;
    auto err = once_per_key(building_, id, [&]() -> caf::error {
      log::info("image_step_started")
        .kv("image", id)
        .kv("step", i + 1)
        .kv("kind", step.kind)
        .kv("reason", sr.reason);
      auto rec = build_step(step, i, canonicals[i], id, parent_ptr, progress,
                            spec.environment);
      if (!rec)
        return rec.error();
      return put_record(*rec);
    });
    sr.duration_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::steady_clock::now() - started)
                                             .count());
    if (err) {
      sr.status = step_status::failed;
      sr.reason = message_of(err);
      if (progress)
        progress->step(sr);
      log::warn("image_step_failed").kv("image", id).kv("step", i + 1).kv("error", sr.reason);
      return err;
    }
    auto rec = record(id);
    if (!rec)
      return rec.error();
    sr.status = step_status::built;
    sr.layer_bytes = rec->layer_bytes;
    if (progress)
      progress->step(sr);
    result.steps.push_back(sr);
    log::info("image_step_built")
      .kv("image", id)
      .kv("step", i + 1)
      .kv("ms", sr.duration_ms)
      .kv("layer_bytes", sr.layer_bytes);
    parent = std::move(*rec);
    rebuilt = true;
    std::lock_guard<std::mutex> guard{mutex_};
    ++counters_.steps_built;
  }
  return result;
}

caf::expected<image_record>
image_service::build_step(const image_step& step, size_t index, const std::string& canonical,
                          const std::string& id, const image_record* parent,
                          const build_progress_ptr& progress, const std::string& environment) {
  image_record rec;
  rec.id = id;
  rec.kind = step.kind;
  rec.canonical = canonical;
  rec.label = step.label.empty() ? step.kind : step.label;
  rec.created_at_ms = now_ms();
  if (parent) {
    rec.parent = parent->id;
    rec.layers = parent->layers;
    rec.config = parent->config;
    rec.python = parent->python;
    rec.content_bytes = parent->content_bytes;
  }
  auto say = [&](std::string text) {
    if (progress)
      progress->line(static_cast<uint32_t>(index), std::move(text));
  };
  auto add_layer = [&](const fs::layer& l) -> caf::error {
    auto digest = fs::store_layer(*chunks_, l);
    if (!digest)
      return digest.error();
    rec.layers.push_back(digest->hex());
    rec.layer_bytes = l.content_bytes();
    rec.content_bytes += rec.layer_bytes;
    rec.python = python_after(rec.python, l);
    return {};
  };
  const auto& k = step.kind;

  if (k == "debian_slim") {
    auto work = options_.state_dir + "/images/work/" + id + "-" + random_suffix();
    container::default_image_options opts;
    opts.mirror = options_.debian_mirror;
    opts.runner = options_.debootstrap_runner;
    opts.cache_dir = options_.debootstrap_cache.empty()
                       ? stdfs::absolute(options_.state_dir).string() + "/images/debs"
                       : options_.debootstrap_cache;
    container::default_image base{work, {}, opts};
    auto rootfs = base.prepare([&](std::string_view line) { say(std::string{line}); });
    std::error_code ec;
    if (!rootfs) {
      stdfs::remove_all(work, ec);
      return rootfs.error();
    }
    say("storing the tree as a layer");
    auto l = fs::scan_tree(*rootfs, *chunks_);
    stdfs::remove_all(work, ec);
    if (!l)
      return l.error();
    rec.layers.clear();
    rec.content_bytes = 0;
    if (auto err = add_layer(*l))
      return err;
    rec.python = "/usr/bin/python3";
    rec.config.env = {{"PATH", std::string{default_path.substr(5)}}};
    return rec;
  }
  if (k == "scratch")
    return rec;
  if (k == "registry") {
    auto ref = registry::parse_reference(step.args[0], options_.default_registry);
    if (!ref)
      return invalid_step(step, index, message_of(ref.error()));
    registry::registry_client::options ropts;
    ropts.insecure_registries = options_.insecure_registries;
    registry::registry_client client{ropts};
    registry::registry_credentials creds{step.registry_user, step.registry_password};
    auto pulled = client.pull(*ref, creds, *chunks_,
                              [&](std::string_view line) { say(std::string{line}); });
    if (!pulled)
      return pulled.error();
    rec.layers.clear();
    rec.content_bytes = 0;
    for (const auto& digest : pulled->layers) {
      auto l = fs::load_layer(*chunks_, digest);
      if (!l)
        return l.error();
      rec.layers.push_back(digest.hex());
      rec.content_bytes += l->content_bytes();
      rec.python = python_after(rec.python, *l);
    }
    rec.layer_bytes = rec.content_bytes;
    rec.config.env = pulled->config.env;
    rec.config.workdir = pulled->config.workdir;
    rec.config.user = pulled->config.user;
    rec.config.entrypoint = pulled->config.entrypoint;
    rec.config.cmd = pulled->config.cmd;
    return rec;
  }
  if (k == "env") {
    for (const auto& a : step.args) {
      auto eq = a.find('=');
      set_env(rec.config.env, a.substr(0, eq), a.substr(eq + 1));
    }
    rec.layer_bytes = 0;
    return rec;
  }
  if (k == "workdir") {
    rec.config.workdir = step.args[0];
    rec.layer_bytes = 0;
    return rec;
  }
  if (k == "user") {
    rec.config.user = step.args[0];
    rec.layer_bytes = 0;
    return rec;
  }
  if (k == "entrypoint" || k == "cmd") {
    (k == "entrypoint" ? rec.config.entrypoint : rec.config.cmd) = step.args;
    rec.layer_bytes = 0;
    return rec;
  }
  if (k == "add_files") {
    auto blob = db_.get(storage::table::blobs, storage::key{}.str(step.blob).bytes());
    if (!blob)
      return blob.error();
    if (!*blob)
      return invalid_step(step, index, "the uploaded archive " + step.blob
                                         + " is not on the server; upload it with putBlobs first");
    auto l = fs::import_tar(std::string_view{**blob}, *chunks_, step_name(step, index));
    if (!l)
      return l.error();
    auto dest = step.args[0];
    while (!dest.empty() && dest.front() == '/')
      dest.erase(0, 1);
    if (!dest.empty()) {
      for (auto& e : l->entries) {
        e.path = e.path.empty() ? dest : dest + "/" + e.path;
        if (e.kind == fs::entry_kind::hardlink)
          e.link_target = dest + "/" + e.link_target;
      }
      if (auto err = fs::validate(*l, true))
        return err;
    }
    say("added " + std::to_string(l->entries.size()) + " entries ("
        + human_bytes(l->content_bytes()) + ")");
    if (auto err = add_layer(*l))
      return err;
    return rec;
  }
  // apt_install, pip_install, run_commands, run_function: a build container.
  if (!parent)
    return invalid_step(step, index, "has no parent image");
  return run_in_container(step, index, *parent, std::move(rec), progress, environment);
}

caf::expected<image_record> image_service::run_in_container(const image_step& step, size_t index,
                                                            const image_record& parent,
                                                            image_record rec,
                                                            const build_progress_ptr& progress,
                                                            const std::string& environment) {
  auto say = [&](std::string text) {
    if (progress)
      progress->line(static_cast<uint32_t>(index), std::move(text));
  };
  auto lower = tree_of(parent);
  if (!lower)
    return lower.error();
  std::error_code ec;
  auto sh = *lower + "/bin/sh";
  struct stat st_sh;
  if (::lstat(sh.c_str(), &st_sh) != 0)
    return invalid_step(step, index, "the image has no /bin/sh to run the step with; build on "
                                     "Image.debian_slim() or an image that has a shell");
  const auto& k = step.kind;
  std::string script = "set -e\n";
  std::string function_file;
  if (k == "apt_install") {
    script += "export DEBIAN_FRONTEND=noninteractive\n"
              "apt-get update -q\n"
              "apt-get install -y -q --no-install-recommends";
    for (const auto& p : step.args)
      script += " " + sh_quote(p);
    script += "\napt-get clean\nrm -rf /var/lib/apt/lists/*\n";
  } else if (k == "pip_install") {
    if (parent.python.empty())
      return invalid_step(step, index, "the image has no Python for pip; install python3 first");
    auto py = sh_quote(parent.python);
    script += "if ! " + py + " -m pip --version >/dev/null 2>&1; then\n"
              "  echo 'pip is missing: installing python3-pip from Debian'\n"
              "  export DEBIAN_FRONTEND=noninteractive\n"
              "  apt-get update -q\n"
              "  apt-get install -y -q --no-install-recommends python3-pip\n"
              "  apt-get clean\n"
              "  rm -rf /var/lib/apt/lists/*\n"
              "fi\n";
    script += py + " -m pip install --no-cache-dir --disable-pip-version-check "
                   "--root-user-action=ignore --break-system-packages";
    bool verbatim = false;
    for (const auto& a : step.args) {
      if (!verbatim && a == "--") {
        verbatim = true;
        continue;
      }
      script += " " + sh_quote(a);
    }
    script += "\n";
  } else if (k == "run_commands") {
    for (const auto& c : step.args)
      script += "echo " + sh_quote("$ " + c) + "\n/bin/sh -c " + sh_quote(c) + "\n";
  } else if (k == "run_function") {
    if (parent.python.empty())
      return invalid_step(step, index, "run_function needs Python in the image");
    auto blob = db_.get(storage::table::blobs, storage::key{}.str(step.blob).bytes());
    if (!blob)
      return blob.error();
    if (!*blob)
      return invalid_step(step, index, "the pickled function " + step.blob
                                         + " is not on the server; upload it first");
    function_file = **blob;
    script += "export PYTHONPATH=/shoal/sdk${PYTHONPATH:+:$PYTHONPATH}\n"
              "exec " + sh_quote(parent.python)
              + " -c 'import pickle; f = pickle.load(open(\"/shoal/build/function.pkl\", \"rb\"));"
                " f()'\n";
  }

  auto work = options_.state_dir + "/images/work/" + rec.id + "-" + random_suffix();
  auto bundle = work + "/bundle";
  auto build_dir = work + "/build";
  stdfs::create_directories(build_dir, ec);
  if (ec)
    return make_error(errc::storage_failure, "cannot create " + build_dir + ": " + ec.message());
  auto cleanup_work = [&] {
    std::error_code ignored;
    stdfs::remove_all(work, ignored);
  };
  {
    std::ofstream out{build_dir + "/step.sh"};
    out << script;
    if (!function_file.empty()) {
      std::ofstream fn{build_dir + "/function.pkl", std::ios::binary};
      fn << function_file;
    }
    if (!out) {
      cleanup_work();
      return make_error(errc::storage_failure, "cannot write " + build_dir + "/step.sh");
    }
  }
  auto rootfs = container::overlay_rootfs::mount(*lower, bundle);
  if (!rootfs) {
    cleanup_work();
    return rootfs.error();
  }
  /// Every failure from here on: unmount, drop the work dir, pass the error on.
  auto abandon = [&](caf::error err) {
    (void) rootfs->release(); // best effort: the error being returned matters more
    cleanup_work();
    return err;
  };
  // The workdir must exist for crun; making it is part of the step (as in a Dockerfile).
  if (!rec.config.workdir.empty())
    stdfs::create_directories(rootfs->rootfs() + rec.config.workdir, ec);

  // Environment: the image's, then the step's own (secrets resolved here, never logged).
  key_values env = {{"PATH", std::string{default_path.substr(5)}}, {"HOME", "/root"}};
  for (const auto& [key, value] : rec.config.env)
    set_env(env, key, value);
  for (const auto& [key, value] : step.env) {
    if (key.rfind("@secret:", 0) != 0) {
      set_env(env, key, value);
      continue;
    }
    auto entries = gateway::secret_store{db_}.read(environment, value);
    if (!entries)
      return abandon(entries.error());
    for (const auto& [sk, sv] : *entries)
      set_env(env, sk, sv);
  }

  auto cid = "build-" + rec.id.substr(3, 12) + "-" + random_suffix();
  container::container_spec spec;
  spec.id = cid;
  spec.hostname = "shoal-build";
  spec.args = {"/bin/sh", "/shoal/build/step.sh"};
  spec.cwd = rec.config.workdir.empty() ? "/" : rec.config.workdir;
  for (const auto& [key, value] : env)
    spec.env.push_back(key + "=" + value);
  // Builds reach the network (apt mirrors, package indexes): no network namespace.
  spec.namespaces = {"pid", "mount", "uts", "ipc"};
  spec.mounts = container::standard_mounts();
  spec.mounts.push_back({"/shoal/build", build_dir, "bind", {"rbind", "ro", "nosuid", "nodev"}});
  if (k == "run_function" && !options_.sdk_dir.empty())
    spec.mounts.push_back({"/shoal/sdk/shoal", options_.sdk_dir + "/shoal", "bind",
                           {"rbind", "ro", "nosuid", "nodev"}});
  if (stdfs::exists("/etc/resolv.conf", ec))
    spec.mounts.push_back({"/etc/resolv.conf", "/etc/resolv.conf", "bind",
                           {"rbind", "ro", "nosuid", "nodev"}});
  // What a Dockerfile RUN gets: package managers drop privileges (apt's _apt user), chown files
  // and make device-less special files. No network or system administration beyond that.
  spec.capabilities = {"CAP_CHOWN",        "CAP_DAC_OVERRIDE", "CAP_FOWNER",     "CAP_FSETID",
                       "CAP_KILL",         "CAP_SETGID",       "CAP_SETUID",     "CAP_SETPCAP",
                       "CAP_SETFCAP",      "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SYS_CHROOT",
                       "CAP_MKNOD",        "CAP_AUDIT_WRITE"};
  spec.limits.pids_max = 8192;
  spec.cgroups_path = container::cgroups_path_for(cid);
  if (auto err = container::write_bundle_config(bundle, spec))
    return abandon(err);
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0)
    return abandon(make_error(errc::unavailable, std::string{"pipe: "} + std::strerror(errno)));
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return abandon(make_error(errc::unavailable, std::string{"pipe: "} + std::strerror(errno)));
  }
  auto pid = runtime_.start(bundle, cid, out_pipe[1], err_pipe[1]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  std::deque<std::string> tail;
  pump_output(out_pipe[0], err_pipe[0], say, tail);
  container::exit_status status;
  if (pid) {
    int wstatus = 0;
    while (::waitpid(*pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    auto oom = runtime_.was_oom_killed(cid);
    status = container::decode_wait_status(wstatus, oom && *oom);
  }
  (void) runtime_.remove(cid); // best effort: the container has exited
  (void) runtime_.remove_cgroup_parents(spec.cgroups_path);
  if (!pid)
    return abandon(pid.error());
  if (!status.success())
    return abandon(make_error(errc::invalid_argument, step_name(step, index) + " failed: "
                                                        + status.describe() + "; its last lines:"
                                                        + quote_tail(tail)));
  say("storing the step's changes as a layer");
  auto l = fs::scan_tree(rootfs->upper_dir(), *chunks_, fs::scan_options{true, true});
  auto released = rootfs->release();
  cleanup_work();
  if (!l)
    return l.error();
  if (released)
    log::warn("image_build_release_failed").kv("error", message_of(released));
  drop_mount_artifacts(*l);
  auto digest = fs::store_layer(*chunks_, *l);
  if (!digest)
    return digest.error();
  rec.layers.push_back(digest->hex());
  rec.layer_bytes = l->content_bytes();
  rec.content_bytes += rec.layer_bytes;
  rec.python = python_after(rec.python, *l);
  say("layer " + digest->hex().substr(0, 12) + ": " + std::to_string(l->entries.size())
      + " entries, " + human_bytes(rec.layer_bytes));
  return rec;
}

// -- trees -------------------------------------------------------------------------------------

caf::expected<std::string> image_service::tree(const std::string& image_id,
                                               const container::progress_callback& on_line) {
  auto id = image_id.empty() ? default_image_id() : image_id;
  auto rec = record(id);
  if (!rec && image_id.empty() && code_of(rec.error()) == errc::not_found) {
    struct line_progress final : build_progress {
      explicit line_progress(const container::progress_callback& f) : on_line(f) {}
      void step(const step_result&) override {}
      void line(uint32_t, std::string text) override {
        if (on_line)
          on_line(text);
      }
      const container::progress_callback& on_line;
    };
    auto built = build(default_image_spec(), std::make_shared<line_progress>(on_line));
    if (!built)
      return built.error();
    rec = record(id);
  }
  if (!rec)
    return rec.error();
  // A materialised tree is answered without the lock, so container starts do not wait for a
  // garbage collection (which only deletes trees of removed images).
  auto dir = trees_root() + "/" + tree_key(rec->layers);
  std::error_code ec;
  if (stdfs::exists(dir + ".done", ec))
    return dir;
  std::shared_lock gc{gc_mutex_};
  return tree_of(*rec);
}

caf::expected<std::string> image_service::tree_of(const image_record& rec) {
  auto key = tree_key(rec.layers);
  auto root = trees_root();
  auto dir = root + "/" + key;
  auto done = dir + ".done";
  std::error_code ec;
  if (stdfs::exists(done, ec))
    return dir;
  auto err = once_per_key(materialising_, key, [&]() -> caf::error {
    std::error_code e;
    if (stdfs::exists(done, e))
      return {};
    auto partial = dir + ".partial";
    stdfs::remove_all(partial, e);
    stdfs::remove_all(dir, e);
    stdfs::create_directories(root, e);
    if (e)
      return make_error(errc::storage_failure, "cannot create " + root + ": " + e.message());
    std::vector<fs::layer> layers;
    for (const auto& hex : rec.layers) {
      auto digest = fs::chunk_id::from_hex(hex);
      if (!digest)
        return make_error(errc::storage_failure, "image " + rec.id + " names a bad layer digest");
      auto l = fs::load_layer(*chunks_, *digest);
      if (!l)
        return l.error();
      layers.push_back(std::move(*l));
    }
    auto merged = fs::merge(layers);
    // Reuse the nearest ancestor's tree by hard links when it is on disk.
    fs::materialise_options opts;
    std::optional<fs::layer> base;
    std::string base_dir;
    if (layers.size() > 1) {
      std::vector<std::string> below(rec.layers.begin(), rec.layers.end() - 1);
      auto below_dir = root + "/" + tree_key(below);
      if (stdfs::exists(below_dir + ".done", e)) {
        base = fs::merge(std::vector<fs::layer>(layers.begin(), layers.end() - 1));
        opts.link_from = below_dir;
        opts.link_base = &*base;
      }
    }
    auto started = std::chrono::steady_clock::now();
    if (auto err = fs::materialise(merged, *chunks_, partial, opts)) {
      stdfs::remove_all(partial, e);
      return err;
    }
    stdfs::rename(partial, dir, e);
    if (e)
      return make_error(errc::storage_failure, "cannot rename " + partial + ": " + e.message());
    std::ofstream{done} << rec.id << "\n";
    log::info("image_tree_materialised")
      .kv("image", rec.id)
      .kv("tree", key)
      .kv("entries", merged.entries.size())
      .kv("linked", opts.link_from.empty() ? "no" : "yes")
      .kv("ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - started)
                  .count());
    std::lock_guard<std::mutex> guard{mutex_};
    ++counters_.trees_materialised;
    return {};
  });
  if (err)
    return err;
  return dir;
}

// -- garbage collection --------------------------------------------------------------------------

namespace {

/// This process's mount table (/proc/self/mountinfo), read once per collection.
std::string read_mountinfo() {
  std::ifstream in{"/proc/self/mountinfo"};
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Whether a mount in `mountinfo` uses `dir` (an overlay's lowerdir, or a mount point below it).
/// /proc/self/mountinfo escapes spaces and such as octal; state dirs have none.
bool mounted_from(const std::string& mountinfo, const std::string& dir) {
  for (size_t at = mountinfo.find(dir); at != std::string::npos; at = mountinfo.find(dir, at + 1)) {
    size_t end = at + dir.size();
    if (end == mountinfo.size() || mountinfo[end] == ' ' || mountinfo[end] == ','
        || mountinfo[end] == ':' || mountinfo[end] == '/' || mountinfo[end] == '\n')
      return true;
  }
  return false;
}

} // namespace

caf::expected<gc_result> image_service::collect_garbage() {
  std::unique_lock gc{gc_mutex_};
  gc_result rep;
  auto all = list();
  if (!all)
    return all.error();
  rep.images = all->size();

  // The live set: every chunk of every recorded image's layers, and the manifests themselves.
  std::set<std::string> live_layers, live_trees;
  for (const auto& rec : *all) {
    live_layers.insert(rec.layers.begin(), rec.layers.end());
    live_trees.insert(tree_key(rec.layers));
  }
  std::unordered_set<fs::chunk_id, fs::chunk_id_hash> live;
  for (const auto& hex : live_layers) {
    auto digest = fs::chunk_id::from_hex(hex);
    if (!digest)
      return make_error(errc::storage_failure, "an image names the malformed layer digest '" + hex
                                                 + "'; nothing was collected");
    auto l = fs::load_layer(*chunks_, *digest);
    if (!l)
      return make_error(errc::storage_failure, "layer " + hex + " of a recorded image cannot be read ("
                                                 + message_of(l.error())
                                                 + "); nothing was collected");
    live.insert(*digest);
    for (const auto& e : l->entries)
      for (const auto& c : e.chunks)
        live.insert(c.id);
  }

  // Trees of removed images. The marker goes first: a half-removed tree is never used.
  auto root = trees_root();
  auto mountinfo = read_mountinfo();
  std::error_code ec;
  std::set<std::string> keys;
  for (const auto& entry : stdfs::directory_iterator(root, ec)) {
    auto name = entry.path().filename().string();
    for (std::string_view suffix : {".done", ".partial"})
      if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
        name.resize(name.size() - suffix.size());
    keys.insert(name);
  }
  for (const auto& key : keys) {
    if (live_trees.count(key) != 0)
      continue;
    auto dir = root + "/" + key;
    if (mounted_from(mountinfo, dir)) {
      rep.trees_in_use.push_back(key);
      continue;
    }
    std::error_code e;
    stdfs::remove(dir + ".done", e);
    stdfs::remove_all(dir + ".partial", e);
    stdfs::remove_all(dir, e);
    if (e)
      return make_error(errc::storage_failure, "cannot remove the image tree " + dir + ": " + e.message());
    ++rep.trees_removed;
  }

  auto collected = chunks_->collect([&](const fs::chunk_id& id) { return live.count(id) != 0; });
  if (!collected)
    return collected.error();
  rep.chunks_removed = collected->chunks_removed;
  rep.chunk_bytes_removed = collected->bytes_removed;
  rep.packs_rewritten = collected->packs_rewritten;
  rep.packs_removed = collected->packs_removed;
  rep.chunks_moved = collected->chunks_moved;
  rep.bytes_moved = collected->bytes_moved;
  rep.disk_bytes_freed = collected->disk_bytes_freed;
  log::info("image_gc")
    .kv("images", rep.images)
    .kv("trees_removed", rep.trees_removed)
    .kv("trees_in_use", rep.trees_in_use.size())
    .kv("chunks_removed", rep.chunks_removed)
    .kv("packs_removed", rep.packs_removed)
    .kv("disk_bytes_freed", rep.disk_bytes_freed);
  return rep;
}

} // namespace shoal::images
