#pragma once
/// A small io_uring driver for the chunk store: groups of reads/writes/sync_file_range ops,
/// submitted in big batches, with short transfers resubmitted and at most `depth` ops in flight
/// (so the completion queue, twice as deep, never overflows).
///
/// Threads: one ring is used by one thread at a time. Ownership: an op's buffer and the op itself
/// (inside its `io_group`) must stay alive until the group has been waited for, or the ring
/// drained; the destructor drains.

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include <liburing.h>

namespace shoal::fs::detail {

enum class io_kind : uint8_t { read, write, sync_range };

struct io_group;

struct io_op {
  int fd = -1;
  char* buf = nullptr;
  uint32_t len = 0;
  uint64_t offset = 0;
  io_kind kind = io_kind::read;
  uint32_t done = 0;        ///< bytes transferred so far
  /// Reads: the op succeeds once this many bytes arrived, even if the file ends before `len`
  /// (O_DIRECT reads are rounded up to the block size and may cross a pack's end). 0: `len`.
  uint32_t need = 0;
  io_group* group = nullptr;
  size_t tag = 0;           ///< the caller's index (which chunk/file this op belongs to)
};

/// Ops waited for together. Ops live in a deque, so adding one never moves the others.
struct io_group {
  std::deque<io_op> ops;
  size_t outstanding = 0;
  /// First failure: -errno of a failed op (or EIO for a transfer of 0 bytes), and which op.
  int error = 0;
  const io_op* failed = nullptr;
  /// A read hit the end of the file before `len` bytes.
  bool short_read = false;

  bool ok() const noexcept { return error == 0 && !short_read; }
  void clear() {
    ops.clear();
    outstanding = 0;
    error = 0;
    failed = nullptr;
    short_read = false;
  }
};

class io_ring {
public:
  /// Errors: a negative errno from io_uring_queue_init.
  static std::unique_ptr<io_ring> make(unsigned depth, int* error);
  ~io_ring();
  io_ring(const io_ring&) = delete;
  io_ring& operator=(const io_ring&) = delete;

  /// Appends an op to `g` and queues it (not yet submitted: call `kick` or `wait`).
  io_op& add(io_group& g, const io_op& op);
  /// Submits whatever is queued, within the in-flight limit, without waiting.
  void kick();
  /// Submits and reaps until every op of `g` finished (successfully or not).
  void wait(io_group& g);
  /// Waits for everything in flight or queued (errors are left in their groups).
  void drain();
  /// The ring failed in a way that left ops in an unknown state (io_uring_enter errors).
  bool broken() const noexcept { return broken_; }

private:
  explicit io_ring(unsigned depth) : depth_(depth) {}
  unsigned fill_sq();
  void reap();
  void complete(io_op* op, int res);
  void submit_and_wait(unsigned wait_nr);

  io_uring ring_{};
  unsigned depth_;
  unsigned inflight_ = 0;
  std::deque<io_op*> backlog_;
  bool broken_ = false;
  bool initialized_ = false;
};

} // namespace shoal::fs::detail
