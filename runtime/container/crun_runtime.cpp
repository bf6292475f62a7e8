#include "runtime/container/crun_runtime.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <mutex>
#include <poll.h>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/container/detail/shim_protocol.hpp"
#include "runtime/container/detail/subprocess.hpp"
#include "runtime/errc.hpp"
#include "runtime/log.hpp"

#ifndef SHOAL_CONTAINER_SHIM_BUILD_PATH
#define SHOAL_CONTAINER_SHIM_BUILD_PATH ""
#endif

namespace shoal::container {

using detail::errno_text;
using detail::shim_report;
using detail::shim_stage;

namespace {

constexpr const char* shim_name = "shoal-container-shim";

struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

/// The last `max_bytes` of a file, trimmed; empty when unreadable.
std::string file_tail(const std::string& path, size_t max_bytes = 2048) {
  std::ifstream in(path);
  if (!in)
    return {};
  std::stringstream ss;
  ss << in.rdbuf();
  auto text = ss.str();
  if (text.size() > max_bytes)
    text = "..." + text.substr(text.size() - max_bytes);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
    text.pop_back();
  return text;
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
    text.pop_back();
  return text;
}

bool plausible_id(const std::string& id) {
  return !id.empty() && id.size() <= 128 && id.find('/') == std::string::npos && id != "."
         && id != "..";
}

std::string describe_status(int32_t status) {
  if (status < 0)
    return "could not be started: " + errno_text(-status);
  detail::process_output out;
  out.wait_status = status;
  return out.describe();
}

/// Waits for `pid` (EINTR-safe); returns its status or -1.
int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR)
      return -1;
  }
  return status;
}

} // namespace

std::string default_shim_path() {
  char buf[4096];
  auto n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n > 0) {
    std::string exe(buf, static_cast<size_t>(n));
    auto slash = exe.rfind('/');
    if (slash != std::string::npos) {
      auto beside = exe.substr(0, slash + 1) + shim_name;
      if (::access(beside.c_str(), X_OK) == 0)
        return beside;
    }
  }
  return SHOAL_CONTAINER_SHIM_BUILD_PATH;
}

crun_runtime::crun_runtime(crun_options options) : options_(std::move(options)) {
  if (options_.shim_path.empty())
    options_.shim_path = default_shim_path();
}

std::vector<std::string> crun_runtime::crun_argv(std::initializer_list<std::string> args) const {
  std::vector<std::string> argv{options_.crun_path};
  if (!options_.state_root.empty())
    argv.push_back("--root=" + options_.state_root);
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

caf::expected<pid_t> crun_runtime::start(const std::string& bundle_dir, const std::string& id,
                                         int stdout_fd, int stderr_fd) {
  if (!plausible_id(id))
    return make_error(errc::invalid_argument, "container id '" + id + "' is not a valid OCI id");
  if (options_.shim_path.empty() || ::access(options_.shim_path.c_str(), X_OK) != 0)
    return make_error(errc::internal, std::string{"cannot find the container shim ("}
                                        + (options_.shim_path.empty() ? shim_name
                                                                      : options_.shim_path)
                                        + "); install it next to shoald");
  auto log_path = bundle_dir + "/crun.log";
  auto pid_path = bundle_dir + "/crun.pid";
  ::unlink(log_path.c_str());

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    return make_error(errc::internal, "cannot create a pipe: " + errno_text(errno));
  fd_guard report_read{fds[0]};
  fd_guard report_write{fds[1]};

  // Held shared while crun creates the cgroups: remove_cgroup_parents waits for it.
  std::shared_lock<std::shared_mutex> creating(cgroup_lock_);
  auto started_at = std::chrono::steady_clock::now();
  auto shim = detail::spawn_process({options_.shim_path, options_.crun_path, options_.state_root,
                                     log_path, bundle_dir, id, pid_path},
                                    detail::child_stdio{stdout_fd, stderr_fd, fds[1]});
  if (!shim)
    return shim.error();
  ::close(report_write.fd);
  report_write.fd = -1;

  shim_report report;
  size_t got = 0;
  bool timed_out = false;
  auto deadline = started_at + std::chrono::milliseconds(options_.start_timeout_ms);
  while (got < sizeof(report)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - std::chrono::steady_clock::now())
                  .count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    struct pollfd p {report_read.fd, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left));
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc == 0)
      continue; // re-check the deadline
    auto n = ::read(report_read.fd, reinterpret_cast<char*>(&report) + got, sizeof(report) - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; // the shim died without a report
    got += static_cast<size_t>(n);
  }

  if (got == sizeof(report) && report.magic == shim_report{}.magic
      && report.stage == shim_stage::running) {
    log::debug("container_started")
      .kv("id", id)
      .kv("shim_pid", *shim)
      .kv("init_pid", report.init_pid)
      .kv("ms", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now()
                                                          - started_at)
                  .count());
    return *shim;
  }

  // Failure: the shim is exiting (or must be made to); reap it, then clean up the container.
  if (timed_out)
    ::kill(*shim, SIGKILL);
  int shim_status = reap(*shim);
  creating.unlock();
  auto crun_message = file_tail(log_path);
  if (auto err = remove(id))
    log::warn("container_remove_after_failed_start")
      .kv("id", id)
      .kv("error", message_of(err));

  std::string what;
  if (timed_out)
    return make_error(errc::timeout, "container " + id + " did not start within "
                                       + std::to_string(options_.start_timeout_ms) + " ms"
                                       + (crun_message.empty() ? "" : ": " + crun_message));
  if (got != sizeof(report) || report.magic != shim_report{}.magic) {
    detail::process_output out;
    out.wait_status = shim_status;
    what = "the container shim " + options_.shim_path + " " + out.describe()
           + " before reporting";
  } else {
    switch (report.stage) {
      case shim_stage::create_failed:
        what = "crun create " + describe_status(report.detail);
        break;
      case shim_stage::start_failed:
        what = "crun start " + describe_status(report.detail);
        break;
      case shim_stage::pid_file_unreadable:
        what = "crun's pid file " + pid_path + " is unreadable: " + errno_text(report.detail);
        break;
      case shim_stage::subreaper_failed:
        what = "the shim cannot become a child subreaper: " + errno_text(report.detail);
        break;
      default:
        what = "the shim rejected its command line (a bug)";
    }
  }
  return make_error(errc::internal, "cannot start container " + id + " from " + bundle_dir + ": "
                                      + what
                                      + (crun_message.empty() ? "" : "; crun: " + crun_message));
}

caf::error crun_runtime::kill(const std::string& id, int signal) {
  if (!plausible_id(id))
    return make_error(errc::invalid_argument, "container id '" + id + "' is not a valid OCI id");
  auto out = detail::run_process(crun_argv({"kill", id, std::to_string(signal)}));
  if (!out)
    return out.error();
  if (out->ok())
    return {};
  auto message = trimmed(out->output);
  bool gone = message.find("not running") != std::string::npos
              || message.find("No such process") != std::string::npos
              || message.find("does not exist") != std::string::npos
              || message.find("No such file or directory") != std::string::npos;
  return make_error(gone ? errc::not_found : errc::internal,
                    "crun kill " + id + " " + std::to_string(signal) + " " + out->describe()
                      + ": " + message);
}

caf::expected<bool> crun_runtime::was_oom_killed(const std::string& id) {
  if (!plausible_id(id))
    return make_error(errc::invalid_argument, "container id '" + id + "' is not a valid OCI id");
  return read_oom_killed(cgroups_path_for(id), options_.cgroup_root);
}

caf::error crun_runtime::remove(const std::string& id) {
  if (!plausible_id(id))
    return make_error(errc::invalid_argument, "container id '" + id + "' is not a valid OCI id");
  auto out = detail::run_process(crun_argv({"delete", "--force", id}));
  if (!out)
    return out.error();
  if (out->ok())
    return {};
  auto message = trimmed(out->output);
  if (message.find("does not exist") != std::string::npos
      || message.find("No such file or directory") != std::string::npos)
    return {}; // already gone
  return make_error(errc::internal,
                    "crun delete --force " + id + " " + out->describe() + ": " + message);
}

caf::error crun_runtime::remove_cgroup_parents(const std::string& cgroups_path) {
  std::unique_lock<std::shared_mutex> exclusive(cgroup_lock_);
  return container::remove_cgroup_parents(cgroups_path, options_.cgroup_root);
}

} // namespace shoal::container
