#include "runtime/container/host_cgroups.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include <linux/magic.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "runtime/container/detail/subprocess.hpp"
#include "runtime/errc.hpp"
#include "runtime/log.hpp"

namespace shoal::container {

namespace fs = std::filesystem;
using detail::errno_text;

namespace {

/// Set once this process hid the unified mount, so that later calls report what was done.
std::atomic<bool> unified_hidden{false};

/// The file system magic of `path`, or 0 when it cannot be stat'ed.
long fs_magic(const std::string& path) {
  struct statfs st {};
  if (::statfs(path.c_str(), &st) != 0)
    return 0;
  return static_cast<long>(st.f_type);
}

bool is_cgroup_fs(long magic) {
  return magic == CGROUP_SUPER_MAGIC || magic == CGROUP2_SUPER_MAGIC;
}

std::string read_file(const std::string& path, bool& ok) {
  std::ifstream in(path);
  ok = static_cast<bool>(in);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t thread_count() {
  size_t n = 0;
  std::error_code ec;
  for (fs::directory_iterator it("/proc/self/task", ec), end; !ec && it != end; it.increment(ec))
    ++n;
  return n;
}

/// The value of `key` in a "key value" per line file (memory.oom_control, memory.events).
bool find_counter(const std::string& text, const std::string& key, uint64_t& value) {
  std::istringstream lines(text);
  std::string k;
  uint64_t v = 0;
  while (lines >> k >> v) {
    if (k == key) {
      value = v;
      return true;
    }
  }
  return false;
}

} // namespace

const char* to_string(host_cgroup_layout layout) noexcept {
  switch (layout) {
    case host_cgroup_layout::v1: return "v1";
    case host_cgroup_layout::v2: return "v2";
    case host_cgroup_layout::hybrid_without_v2_controllers: return "hybrid_without_v2_controllers";
    case host_cgroup_layout::hybrid_unified_hidden: return "hybrid_unified_hidden";
  }
  return "unknown";
}

caf::expected<host_cgroup_layout> prepare_host_for_crun() {
  const std::string root = "/sys/fs/cgroup";
  const std::string unified = root + "/unified";
  if (fs_magic(root) == CGROUP2_SUPER_MAGIC)
    return host_cgroup_layout::v2;
  if (fs_magic(unified) != CGROUP2_SUPER_MAGIC)
    return unified_hidden ? host_cgroup_layout::hybrid_unified_hidden : host_cgroup_layout::v1;

  bool ok = false;
  auto controllers = read_file(unified + "/cgroup.controllers", ok);
  if (!ok)
    return make_error(errc::internal,
                      "cannot read " + unified + "/cgroup.controllers to check the cgroup layout");
  if (controllers.find_first_not_of(" \n\t") == std::string::npos)
    return host_cgroup_layout::hybrid_without_v2_controllers;

  // Hybrid with controllers on v2: crun refuses this layout. Hide the unified mount in a mount
  // namespace of our own; everything this process starts afterwards inherits it.
  if (auto threads = thread_count(); threads > 1)
    return make_error(errc::internal,
                      "prepare_host_for_crun must run before any thread starts: this process has "
                        + std::to_string(threads)
                        + " threads, and only the calling one would see the new mount namespace");
  if (::unshare(CLONE_NEWNS) != 0) {
    int err = errno;
    return make_error(err == EPERM ? errc::permission_denied : errc::internal,
                      "this host mixes cgroup v1 and v2 (" + unified + " has controllers: "
                        + controllers.substr(0, controllers.find('\n'))
                        + "), which crun refuses; hiding it needs a private mount namespace, but "
                          "unshare(CLONE_NEWNS) failed: "
                        + errno_text(err) + " (run shoald as root)");
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0)
    return make_error(errc::internal,
                      "cannot make / a recursive slave mount in shoald's mount namespace: "
                        + errno_text(errno));
  if (::umount2(unified.c_str(), MNT_DETACH) != 0)
    return make_error(errc::internal, "cannot unmount " + unified
                                        + " in shoald's mount namespace: " + errno_text(errno));
  unified_hidden = true;
  log::info("cgroup_unified_hidden")
    .kv("path", unified)
    .kv("v2_controllers", controllers.substr(0, controllers.find('\n')));
  return host_cgroup_layout::hybrid_unified_hidden;
}

caf::error remove_cgroup_parents(const std::string& cgroups_path, const std::string& cgroup_root) {
  std::vector<std::string> parts;
  {
    std::istringstream in(cgroups_path);
    for (std::string part; std::getline(in, part, '/');) {
      if (part.empty() || part == ".")
        continue;
      if (part == "..")
        return make_error(errc::invalid_argument,
                          "cgroups path '" + cgroups_path + "' must not contain '..'");
      parts.push_back(part);
    }
  }
  if (parts.empty())
    return make_error(errc::invalid_argument,
                      "cgroups path '" + cgroups_path + "' names the root cgroup");

  // Every hierarchy: the root itself when it is cgroup2, and each directory under it (v1
  // controllers, name=systemd, unified). Symlinked aliases (cpu -> cpu,cpuacct) are visited once.
  std::vector<std::string> hierarchies;
  std::set<std::string> seen;
  if (fs_magic(cgroup_root) == CGROUP2_SUPER_MAGIC)
    hierarchies.push_back(cgroup_root);
  std::error_code ec;
  for (fs::directory_iterator it(cgroup_root, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (!it->is_directory(ec2))
      continue;
    auto canonical = fs::canonical(it->path(), ec2);
    if (ec2 || !seen.insert(canonical.string()).second)
      continue;
    hierarchies.push_back(canonical.string());
  }
  if (ec)
    return make_error(errc::storage_failure,
                      "cannot list cgroup hierarchies in " + cgroup_root + ": " + ec.message());

  caf::error first_error;
  for (const auto& h : hierarchies) {
    for (size_t depth = parts.size(); depth > 0; --depth) {
      std::string dir = h;
      for (size_t i = 0; i < depth; ++i)
        dir += "/" + parts[i];
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT)
        continue;
      int err = errno;
      // The container's own cgroup (the leaf) is busy only while its killed processes are still
      // exiting (e.g. children it left behind when a pids limit stopped it): give them a second.
      for (int tries = 0; err == EBUSY && depth == parts.size() && tries < 100; ++tries) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        err = ::rmdir(dir.c_str()) == 0 || errno == ENOENT ? 0 : errno;
      }
      if (err == 0)
        continue;
      if (err == ENOTEMPTY && !is_cgroup_fs(fs_magic(dir))) {
        // A plain directory (the tmpfs under a hidden unified mount) where crun wrote files such
        // as cgroup.procs: remove those files, keep subdirectories (other containers).
        std::error_code ec3;
        for (fs::directory_iterator it(dir, ec3), end; !ec3 && it != end; it.increment(ec3)) {
          std::error_code ec4;
          if (!it->is_directory(ec4))
            fs::remove(it->path(), ec4);
        }
        if (::rmdir(dir.c_str()) == 0)
          continue;
        err = errno;
      }
      if (err == EBUSY || err == ENOTEMPTY)
        break; // still used by another container: keep it and its parents
      if (!first_error)
        first_error = make_error(errc::storage_failure,
                                 "cannot remove cgroup dir " + dir + ": " + errno_text(err));
      break;
    }
  }
  return first_error;
}

caf::expected<bool> read_oom_killed(const std::string& cgroups_path,
                                    const std::string& cgroup_root) {
  auto rel = cgroups_path;
  if (rel.empty() || rel[0] != '/')
    rel = "/" + rel;
  bool ok = false;
  uint64_t count = 0;
  // v1: the memory hierarchy.
  auto v1_dir = cgroup_root + "/memory" + rel;
  auto text = read_file(v1_dir + "/memory.oom_control", ok);
  if (ok) {
    if (find_counter(text, "oom_kill", count))
      return count > 0;
    // Kernels before 4.13 have no oom_kill line: fall back to "the limit was hit".
    auto failcnt = read_file(v1_dir + "/memory.failcnt", ok);
    return ok && std::strtoull(failcnt.c_str(), nullptr, 10) > 0;
  }
  // v2: the unified hierarchy at the root (pure v2) or at unified/ (hybrid).
  for (const auto& base : {cgroup_root, cgroup_root + "/unified"}) {
    text = read_file(base + rel + "/memory.events", ok);
    if (ok)
      return find_counter(text, "oom_kill", count) && count > 0;
  }
  return make_error(errc::not_found,
                    "no memory cgroup at " + cgroups_path + " under " + cgroup_root
                      + ": it was removed already (read the OOM state before removing the "
                        "container)");
}

} // namespace shoal::container
