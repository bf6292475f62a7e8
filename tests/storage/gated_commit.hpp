#pragma once
/// A fake commit function for the writer (storage/writer.hpp `commit_function`): it records what
/// it commits, can hold commits at a gate so a test can queue requests behind a commit in
/// progress, and can fail a chosen commit. Thread-safe: the writer calls it on its own thread.

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <caf/error.hpp>

#include "storage/store.hpp"
#include "storage/writer.hpp"

namespace shoal::storage::test {

class gated_commit {
public:
  /// The function to spawn the writer with. `*this` must outlive the writer.
  commit_function function() {
    return [this](const write_batch& batch) { return commit(batch); };
  }

  /// From now on, commits wait at the gate until `open()`.
  void close() {
    std::lock_guard<std::mutex> guard{mtx_};
    open_ = false;
  }

  void open() {
    std::lock_guard<std::mutex> guard{mtx_};
    open_ = true;
    cv_.notify_all();
  }

  /// Blocks until `n` commits have started (counting those that finished).
  void wait_started(size_t n) {
    std::unique_lock<std::mutex> lock{mtx_};
    cv_.wait(lock, [&] { return started_ >= n; });
  }

  /// The `number`-th commit (1-based, counting every call) fails with `err`, committing nothing.
  void fail_commit(size_t number, caf::error err) {
    std::lock_guard<std::mutex> guard{mtx_};
    fail_number_ = number;
    fail_error_ = std::move(err);
  }

  /// Number of operations in each successful commit, in order.
  std::vector<size_t> groups() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return groups_;
  }

  /// Whether a successful commit has returned that put `key`.
  bool durable(const std::string& key) const {
    std::lock_guard<std::mutex> guard{mtx_};
    return durable_.count(key) > 0;
  }

private:
  caf::error commit(const write_batch& batch) {
    std::unique_lock<std::mutex> lock{mtx_};
    auto number = ++started_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
    if (number == fail_number_)
      return fail_error_;
    for (const auto& op : batch.ops)
      durable_.insert(op.key);
    groups_.push_back(batch.ops.size());
    return {};
  }

  mutable std::mutex mtx_;
  std::condition_variable cv_;
  bool open_ = true;
  size_t started_ = 0;
  size_t fail_number_ = 0;
  caf::error fail_error_;
  std::vector<size_t> groups_;
  std::set<std::string> durable_;
};

} // namespace shoal::storage::test
