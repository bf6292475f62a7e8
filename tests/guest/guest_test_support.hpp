#pragma once
/// Helpers for the guest tests: an inbox that collects what hub callbacks deliver (assertions stay
/// on the test thread), a blocking client socket playing the guest, and child processes.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "runtime/errc.hpp"
#include "runtime/guest/guest_frame.hpp"
#include "runtime/guest/guest_hub.hpp"

extern char** environ;

namespace shoal::guest::test {

/// Only bounds how long a broken test can hang; nothing waits for it to pass.
constexpr auto wait_limit = std::chrono::seconds(30);

/// What the hub delivered, in order, for any number of channels.
class inbox {
public:
  struct event {
    channel_id id = 0;
    std::optional<frame> f;  // set for on_frame
    caf::error closed;       // set for on_closed
  };

  channel_handlers handlers() {
    return channel_handlers{
      [this](channel_id id, frame f) { push(event{id, std::move(f), {}}); },
      [this](channel_id id, caf::error err) { push(event{id, std::nullopt, std::move(err)}); },
    };
  }

  /// The next event, or nullopt after `limit`.
  std::optional<event> next(std::chrono::milliseconds limit = wait_limit) {
    std::unique_lock<std::mutex> lock{mu_};
    if (!cv_.wait_for(lock, limit, [&] { return !events_.empty(); }))
      return std::nullopt;
    auto e = std::move(events_.front());
    events_.pop_front();
    return e;
  }

  /// The next event, which must be a frame of type T.
  template <class T>
  T next_frame() {
    auto e = next();
    if (!e)
      throw std::runtime_error("no frame within the wait limit");
    if (!e->f)
      throw std::runtime_error("channel closed instead of a frame: " + message_of(e->closed));
    if (!std::holds_alternative<T>(*e->f))
      throw std::runtime_error("expected another frame than "
                               + std::string{to_string(type_of(*e->f))});
    return std::get<T>(std::move(*e->f));
  }

  size_t size() {
    std::lock_guard<std::mutex> lock{mu_};
    return events_.size();
  }

private:
  void push(event e) {
    {
      std::lock_guard<std::mutex> lock{mu_};
      events_.push_back(std::move(e));
    }
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<event> events_;
};

/// The guest's end of a channel, blocking, for tests.
class client_socket {
public:
  explicit client_socket(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      int e = errno;
      ::close(fd_);
      fd_ = -1;
      throw std::runtime_error("connect " + path + ": " + std::strerror(e));
    }
  }
  ~client_socket() { close(); }
  client_socket(const client_socket&) = delete;
  client_socket& operator=(const client_socket&) = delete;

  void write_all(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t w = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR)
          continue;
        throw std::runtime_error(std::string{"client write: "} + std::strerror(errno));
      }
      off += static_cast<size_t>(w);
    }
  }

  void send(const frame& f) { write_all(encode(f)); }

  /// The next frame; nullopt at end of stream or after `limit` without one.
  std::optional<frame> recv(std::chrono::milliseconds limit = wait_limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      auto next = decoder_.next();
      if (!next)
        throw std::runtime_error("client decode: " + message_of(next.error()));
      if (*next)
        return std::move(**next);
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0)
        return std::nullopt;
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
        continue;
      char buf[65536];
      ssize_t r = ::read(fd_, buf, sizeof buf);
      if (r <= 0)
        return std::nullopt;
      decoder_.feed(buf, static_cast<size_t>(r));
    }
  }

  /// True once the peer closed (reads EOF), within `limit`.
  bool sees_eof(std::chrono::milliseconds limit = wait_limit) {
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(limit.count())) <= 0)
      return false;
    char c;
    return ::read(fd_, &c, 1) == 0;
  }

  void close() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }

  int fd() const { return fd_; }

private:
  int fd_ = -1;
  frame_decoder decoder_;
};

/// A child process started with posix_spawn (safe in a process that has threads).
class child_process {
public:
  /// `stdout_fd` / `stderr_fd` (when >= 0) become the child's stdout / stderr.
  child_process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                int stdout_fd = -1, int stderr_fd = -1) {
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& e : env)
      envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (stdout_fd >= 0)
      posix_spawn_file_actions_adddup2(&actions, stdout_fd, STDOUT_FILENO);
    if (stderr_fd >= 0)
      posix_spawn_file_actions_adddup2(&actions, stderr_fd, STDERR_FILENO);
    int rc = posix_spawn(&pid_, argv[0].c_str(), &actions, nullptr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0)
      throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  }
  ~child_process() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      int status;
      ::waitpid(pid_, &status, 0);
    }
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  /// The exit code (128 + signal for a signal), or nullopt if it did not exit within `limit`.
  std::optional<int> wait(std::chrono::milliseconds limit = wait_limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() >= deadline)
        return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

private:
  pid_t pid_ = -1;
  bool exited_ = false;
};

/// Runs argv to completion and returns its stdout; throws if it fails.
inline std::string run_capture(const std::vector<std::string>& argv,
                               const std::vector<std::string>& env) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe2 failed");
  std::string out;
  std::optional<int> code;
  {
    child_process child{argv, env, fds[1]};
    ::close(fds[1]);
    char buf[65536];
    ssize_t r;
    while ((r = ::read(fds[0], buf, sizeof buf)) > 0)
      out.append(buf, static_cast<size_t>(r));
    ::close(fds[0]);
    code = child.wait();
  }
  if (code != 0)
    throw std::runtime_error(argv[0] + " " + (argv.size() > 1 ? argv[1] : "") + " failed with "
                             + (code ? std::to_string(*code) : std::string{"a timeout"}));
  return out;
}

} // namespace shoal::guest::test
