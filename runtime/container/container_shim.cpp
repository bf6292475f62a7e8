#include "runtime/container/container_shim.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <string>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "runtime/container/detail/shim_protocol.hpp"

extern char** environ;

namespace shoal::container {

namespace {

using detail::shim_report;
using detail::shim_report_fd;
using detail::shim_stage;

void report(shim_stage stage, int32_t detail_value, int32_t init_pid = 0) {
  shim_report r;
  r.stage = stage;
  r.detail = detail_value;
  r.init_pid = init_pid;
  // A pipe write of this size is atomic; if the reader is gone there is nobody to tell.
  if (::write(shim_report_fd, &r, sizeof(r)) != static_cast<ssize_t>(sizeof(r))) {
  }
}

/// Runs crun with `args` after the global options and returns its wait status, or -errno when
/// it could not be started.
int run_crun(const std::string& crun, const std::string& root, const std::string& log,
             std::vector<std::string> args) {
  std::vector<std::string> argv{crun};
  if (!root.empty())
    argv.push_back("--root=" + root);
  if (!log.empty())
    argv.push_back("--log=" + log);
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv)
    cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, crun.c_str(), nullptr, nullptr, cargv.data(), environ);
  if (rc != 0)
    return -rc;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR)
      return -errno;
  }
  return status;
}

bool succeeded(int status) {
  return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int read_pid_file(const char* path) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  char buf[32] = {};
  auto n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0)
    return -EIO;
  long pid = std::strtol(buf, nullptr, 10);
  return pid > 0 ? static_cast<int>(pid) : -EINVAL;
}

/// Ends this process the way the container's pid 1 ended.
[[noreturn]] void mirror(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    struct rlimit no_core {0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core); // the shim's own core is of no use to anybody
    ::signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
    ::kill(::getpid(), sig);
    ::_exit(128 + sig); // a signal whose default is to ignore it
  }
  ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 255);
}

} // namespace

int container_shim_main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s CRUN STATE_ROOT LOG BUNDLE ID PID_FILE\n",
                 argc > 0 ? argv[0] : "shoal-container-shim");
    report(shim_stage::usage, argc);
    return 64;
  }
  std::string crun = argv[1], root = argv[2], log = argv[3], bundle = argv[4], id = argv[5];
  const char* pid_file = argv[6];
  ::fcntl(shim_report_fd, F_SETFD, FD_CLOEXEC); // crun must not inherit the report pipe

  // Own session: a terminal's ^C aimed at shoald must not reach the containers directly.
  ::setsid();
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    report(shim_stage::subreaper_failed, errno);
    return 1;
  }
  ::unlink(pid_file);
  int status = run_crun(crun, root, log, {"create", "--bundle", bundle, "--pid-file", pid_file, id});
  if (!succeeded(status)) {
    report(shim_stage::create_failed, status);
    return 1;
  }
  int init_pid = read_pid_file(pid_file);
  if (init_pid <= 0) {
    report(shim_stage::pid_file_unreadable, -init_pid);
    return 1;
  }
  status = run_crun(crun, root, log, {"start", id});
  if (!succeeded(status)) {
    report(shim_stage::start_failed, status);
    return 1;
  }
  report(shim_stage::running, 0, init_pid);
  // Hold nothing of the container's stdio, so its readers see EOF when the container is done.
  ::close(shim_report_fd);
  int null_fd = ::open("/dev/null", O_RDWR);
  if (null_fd >= 0) {
    ::dup2(null_fd, 0);
    ::dup2(null_fd, 1);
    ::dup2(null_fd, 2);
    if (null_fd > 2)
      ::close(null_fd);
  }

  // pid 1 was forked by `crun create`, which has exited: it is our child now (subreaper). When
  // it dies the kernel kills the rest of its pid namespace, and those orphans come to us too.
  bool seen = false;
  int init_status = 0;
  for (;;) {
    int st = 0;
    pid_t pid = ::waitpid(-1, &st, 0);
    if (pid < 0) {
      if (errno == EINTR)
        continue;
      break; // ECHILD: nothing left
    }
    if (pid == init_pid) {
      seen = true;
      init_status = st;
    }
  }
  if (!seen) {
    // pid 1 was never our child (a crun that double-forks?): wait for it through a pidfd; its
    // status is unknowable from here.
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, init_pid, 0));
    if (pidfd >= 0) {
      struct pollfd p {pidfd, POLLIN, 0};
      while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
      }
    }
    ::_exit(255);
  }
  mirror(init_status);
}

} // namespace shoal::container
