#pragma once
/// `state_dir`: exclusive ownership of a shoald state directory.
///
/// Layout:
///     <dir>/shoald.pid    lock file: flock held for the process lifetime, contains the pid
///     <dir>/shoald.addr   "host:port" the RPC server listens on; present only while serving
///     <dir>/admin.token   the bootstrap admin token (mode 0600), written once at initialisation
///     <dir>/db/           RocksDB (storage::store)
///
/// The lock is an flock on shoald.pid, so it is released by the kernel when the holder dies, even
/// by SIGKILL; a stale pid file never blocks a restart.

#include <memory>
#include <string>
#include <sys/types.h>

#include <caf/expected.hpp>

namespace shoal {

class state_dir {
public:
  /// Creates `path` (and parents) if missing and takes the lock. Fails with
  /// errc::state_dir_locked naming the holder's pid, or errc::storage_failure.
  [[nodiscard]] static caf::expected<std::unique_ptr<state_dir>> acquire(const std::string& path);

  ~state_dir();
  state_dir(const state_dir&) = delete;
  state_dir& operator=(const state_dir&) = delete;

  const std::string& path() const noexcept { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::string db_path() const { return file("db"); }

  /// Writes `contents` to `name` atomically (temp file + fsync + rename) with `mode`.
  [[nodiscard]] caf::error write_file(const std::string& name, const std::string& contents,
                                      mode_t mode) const;

  /// Removes `name` if present.
  void remove_file(const std::string& name) const;

private:
  state_dir(std::string path, int lock_fd) : path_(std::move(path)), lock_fd_(lock_fd) {}

  std::string path_;
  int lock_fd_;
};

} // namespace shoal
