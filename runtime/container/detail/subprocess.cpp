#include "runtime/container/detail/subprocess.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/errc.hpp"

extern char** environ;

namespace shoal::container::detail {

namespace {

/// Closes a descriptor on scope exit.
struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

/// posix_spawn file actions and attributes, destroyed on scope exit.
struct spawn_setup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  spawn_setup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~spawn_setup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
};

/// A CLOEXEC copy of `fd` numbered >= 10, so that dup2 into 0-3 in the child cannot clobber a
/// source that happens to be one of the targets (e.g. stderr_fd == 1). -1 stays -1.
caf::expected<int> high_copy(int fd) {
  if (fd < 0)
    return -1;
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
  if (copy < 0)
    return make_error(errc::internal,
                      "cannot duplicate descriptor " + std::to_string(fd) + ": "
                        + errno_text(errno));
  return copy;
}

} // namespace

std::string errno_text(int err) {
  return std::strerror(err);
}

caf::expected<pid_t> spawn_process(const std::vector<std::string>& argv, const child_stdio& stdio) {
  if (argv.empty())
    return make_error(errc::internal, "spawn_process called with an empty argv");
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  auto out = high_copy(stdio.stdout_fd);
  if (!out)
    return out.error();
  fd_guard out_guard{*out};
  auto err = high_copy(stdio.stderr_fd);
  if (!err)
    return err.error();
  fd_guard err_guard{*err};
  auto fd3 = high_copy(stdio.fd3);
  if (!fd3)
    return fd3.error();
  fd_guard fd3_guard{*fd3};

  spawn_setup s;
  posix_spawn_file_actions_addopen(&s.actions, 0, "/dev/null", O_RDONLY, 0);
  if (*out >= 0)
    posix_spawn_file_actions_adddup2(&s.actions, *out, 1);
  else
    posix_spawn_file_actions_addopen(&s.actions, 1, "/dev/null", O_WRONLY, 0);
  if (*err >= 0)
    posix_spawn_file_actions_adddup2(&s.actions, *err, 2);
  else
    posix_spawn_file_actions_addopen(&s.actions, 2, "/dev/null", O_WRONLY, 0);
  int first_closed = 3;
  if (*fd3 >= 0) {
    posix_spawn_file_actions_adddup2(&s.actions, *fd3, 3);
    first_closed = 4;
  }
  posix_spawn_file_actions_addclosefrom_np(&s.actions, first_closed);

  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&s.attr, &all);
  posix_spawnattr_setsigmask(&s.attr, &none);
  posix_spawnattr_setflags(&s.attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], &s.actions, &s.attr, args.data(), environ);
  if (rc != 0)
    return make_error(errc::internal, "cannot start " + argv[0] + ": " + errno_text(rc));
  return pid;
}

bool process_output::ok() const noexcept {
  return WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
}

std::string process_output::describe() const {
  if (WIFEXITED(wait_status))
    return "exited with code " + std::to_string(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status))
    return "killed by signal " + std::to_string(WTERMSIG(wait_status));
  return "ended with wait status " + std::to_string(wait_status);
}

caf::expected<process_output> run_process(const std::vector<std::string>& argv,
                                          const line_callback& on_line, size_t keep_bytes) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    return make_error(errc::internal, "cannot create a pipe: " + errno_text(errno));
  fd_guard read_end{fds[0]};
  fd_guard write_end{fds[1]};
  auto pid = spawn_process(argv, child_stdio{fds[1], fds[1], -1});
  if (!pid)
    return pid.error();
  ::close(write_end.fd);
  write_end.fd = -1;

  process_output result;
  std::string pending; // bytes after the last newline
  char buf[4096];
  for (;;) {
    auto n = ::read(read_end.fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    std::string_view chunk(buf, static_cast<size_t>(n));
    result.output.append(chunk);
    if (result.output.size() > 2 * keep_bytes)
      result.output.erase(0, result.output.size() - keep_bytes);
    if (on_line) {
      pending.append(chunk);
      size_t start = 0;
      for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1)
        on_line(std::string_view(pending).substr(start, nl - start));
      pending.erase(0, start);
    }
  }
  if (on_line && !pending.empty())
    on_line(pending);
  if (result.output.size() > keep_bytes)
    result.output.erase(0, result.output.size() - keep_bytes);

  int status = 0;
  while (::waitpid(*pid, &status, 0) < 0) {
    if (errno != EINTR)
      return make_error(errc::internal, "waitpid for " + argv[0] + " failed: " + errno_text(errno));
  }
  result.wait_status = status;
  return result;
}

} // namespace shoal::container::detail
