#include "storage/wal_file_system.hpp"

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace shoal::storage {

namespace {

rocksdb::IOStatus io_error(const std::string& what, const std::string& path, int err) {
  return rocksdb::IOStatus::IOError(what + " " + path + ": " + std::strerror(err));
}

/// Writes zeros over [from, from + n) of `fd` and syncs them (data and the new size).
rocksdb::IOStatus write_zeros(int fd, const std::string& path, uint64_t from, size_t n) {
  static const std::vector<char> zeros(1 << 20, 0);
  while (n > 0) {
    size_t piece = n < zeros.size() ? n : zeros.size();
    ssize_t wrote = ::pwrite(fd, zeros.data(), piece, static_cast<off_t>(from));
    if (wrote < 0) {
      if (errno == EINTR)
        continue;
      return io_error("zero-filling", path, errno);
    }
    from += static_cast<uint64_t>(wrote);
    n -= static_cast<size_t>(wrote);
  }
  if (::fdatasync(fd) != 0)
    return io_error("syncing the zero-filled", path, errno);
  return rocksdb::IOStatus::OK();
}

/// RocksDB's own log file, plus the zeroed region ahead of its writes.
class zero_filled_file final : public rocksdb::FSWritableFileOwnerWrapper {
public:
  zero_filled_file(std::unique_ptr<rocksdb::FSWritableFile> file, int fd, std::string path,
                   size_t chunk)
    : FSWritableFileOwnerWrapper(std::move(file)), fd_(fd), path_(std::move(path)), chunk_(chunk),
      zeroed_(chunk) {}

  ~zero_filled_file() override {
    if (fd_ >= 0)
      ::close(fd_);
  }

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    if (auto st = ensure_zeroed(data.size()); !st.ok())
      return st;
    auto st = target()->Append(data, options, dbg);
    if (st.ok())
      written_ += data.size();
    return st;
  }

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    if (auto st = ensure_zeroed(data.size()); !st.ok())
      return st;
    auto st = target()->Append(data, options, info, dbg);
    if (st.ok())
      written_ += data.size();
    return st;
  }

  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
    auto st = target()->Truncate(size, options, dbg);
    if (st.ok()) {
      written_ = size;
      zeroed_ = size; // the zeros past `size` are gone
    }
    return st;
  }

  rocksdb::IOStatus Close(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
    auto st = target()->Close(options, dbg);
    if (fd_ >= 0) {
      // Drop the unused zeros; harmless if this fails (the reader skips them).
      if (::ftruncate(fd_, static_cast<off_t>(written_)) != 0 && st.ok())
        st = io_error("trimming", path_, errno);
      ::close(fd_);
      fd_ = -1;
    }
    return st;
  }

private:
  /// Zeroes the next chunk once a write would come within a quarter chunk of the zeroed end.
  rocksdb::IOStatus ensure_zeroed(size_t incoming) {
    while (written_ + incoming + chunk_ / 4 > zeroed_) {
      if (auto st = write_zeros(fd_, path_, zeroed_, chunk_); !st.ok())
        return st;
      zeroed_ += chunk_;
    }
    return rocksdb::IOStatus::OK();
  }

  int fd_;
  std::string path_;
  size_t chunk_;
  uint64_t written_ = 0; ///< bytes RocksDB appended (its writes go to offset 0 onward)
  uint64_t zeroed_;      ///< bytes of the file that exist (zeros or RocksDB's)
};

class wal_fs final : public rocksdb::FileSystemWrapper {
public:
  wal_fs(std::shared_ptr<rocksdb::FileSystem> base, size_t chunk)
    : FileSystemWrapper(std::move(base)), chunk_(chunk) {}

  const char* Name() const override { return "ShoalZeroFilledWal"; }

  rocksdb::IOStatus NewWritableFile(const std::string& path, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    if (!is_wal_file_name(path) || options.use_direct_writes || options.use_mmap_writes)
      return target()->NewWritableFile(path, options, result, dbg);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
      return io_error("creating", path, errno);
    if (auto st = write_zeros(fd, path, 0, chunk_); !st.ok()) {
      ::close(fd);
      return st;
    }
    // The way RocksDB reopens a recycled log: no truncation, writes start at offset 0.
    std::unique_ptr<rocksdb::FSWritableFile> file;
    auto st = target()->ReuseWritableFile(path, path, options, &file, dbg);
    if (!st.ok()) {
      ::close(fd);
      return st;
    }
    *result = std::make_unique<zero_filled_file>(std::move(file), fd, path, chunk_);
    return rocksdb::IOStatus::OK();
  }

private:
  size_t chunk_;
};

} // namespace

bool is_wal_file_name(const std::string& path) {
  auto slash = path.find_last_of('/');
  std::string_view name{path};
  if (slash != std::string::npos)
    name.remove_prefix(slash + 1);
  constexpr std::string_view suffix = ".log";
  if (name.size() <= suffix.size() || name.substr(name.size() - suffix.size()) != suffix)
    return false;
  for (char c : name.substr(0, name.size() - suffix.size()))
    if (c < '0' || c > '9')
      return false;
  return true;
}

std::shared_ptr<rocksdb::FileSystem> zero_filled_wal_fs(std::shared_ptr<rocksdb::FileSystem> base,
                                                        size_t zero_fill_bytes) {
  return std::make_shared<wal_fs>(std::move(base), zero_fill_bytes);
}

} // namespace shoal::storage
