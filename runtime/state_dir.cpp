#include "runtime/state_dir.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/errc.hpp"

namespace shoal {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

std::string read_small_file(int fd) {
  char buf[64] = {};
  auto n = pread(fd, buf, sizeof(buf) - 1, 0);
  std::string out = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string{};
  while (!out.empty() && (out.back() == '\n' || out.back() == ' '))
    out.pop_back();
  return out;
}

} // namespace

caf::expected<std::unique_ptr<state_dir>> state_dir::acquire(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec)
    return make_error(errc::storage_failure,
                      "cannot create state dir " + path + ": " + ec.message());
  auto abs = std::filesystem::absolute(path, ec).lexically_normal().string();
  if (ec)
    abs = path;
  while (abs.size() > 1 && abs.back() == '/')
    abs.pop_back();
  auto lock_path = abs + "/shoald.pid";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return make_error(errc::storage_failure,
                      "cannot open " + lock_path + ": " + errno_text(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    auto holder = read_small_file(fd);
    ::close(fd);
    if (err == EWOULDBLOCK)
      return make_error(errc::state_dir_locked,
                        "state dir " + abs + " is in use by another shoald (pid "
                          + (holder.empty() ? std::string{"unknown"} : holder)
                          + "); stop that process first or pass a different --state-dir");
    return make_error(errc::storage_failure, "cannot lock " + lock_path + ": " + errno_text(err));
  }
  auto pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    int err = errno;
    ::close(fd);
    return make_error(errc::storage_failure, "cannot write " + lock_path + ": " + errno_text(err));
  }
  return std::unique_ptr<state_dir>{new state_dir(abs, fd)};
}

state_dir::~state_dir() {
  // The pid file stays (it is the lock's inode); emptying it tells readers nobody holds it.
  if (::ftruncate(lock_fd_, 0) != 0) {
    // Ignored on purpose: the flock is what matters and closing releases it.
  }
  ::close(lock_fd_);
}

caf::error state_dir::write_file(const std::string& name, const std::string& contents,
                                 mode_t mode) const {
  auto target = file(name);
  auto tmp = target + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return make_error(errc::storage_failure, "cannot write " + tmp + ": " + errno_text(errno));
  ::fchmod(fd, mode);
  size_t done = 0;
  while (done < contents.size()) {
    auto n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return make_error(errc::storage_failure, "cannot write " + tmp + ": " + errno_text(err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    return make_error(errc::storage_failure, "cannot sync " + tmp + ": " + errno_text(errno));
  if (::rename(tmp.c_str(), target.c_str()) != 0)
    return make_error(errc::storage_failure,
                      "cannot rename " + tmp + " to " + target + ": " + errno_text(errno));
  return {};
}

void state_dir::remove_file(const std::string& name) const { ::unlink(file(name).c_str()); }

} // namespace shoal
