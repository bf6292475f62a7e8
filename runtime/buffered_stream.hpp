#pragma once
/// `buffered_stream`: the byte stream under every Cap'n Proto RPC connection (server, client,
/// block peers). The bytes on the wire are unchanged; what changes is how many system calls
/// carry them.
///
/// Cap'n Proto 0.9 reads a message in two exact-size reads (segment table, then segments) and
/// writes every message with its own `writev`, so one call costs three messages (Call, Return,
/// Finish) and about nine system calls. Over loopback TCP each `write` also runs the receiver's
/// network stack and wakes it: at 50 concurrent queue clients these calls were a third of the
/// clients' CPU (bench/RESULTS.md, "Queues").
///
/// - Reads fill a 64 KiB buffer with whatever the socket has and answer later reads from it, so
///   a burst of messages costs one `read`. A read asking for at least the buffer's size (a large
///   message body) goes straight into the caller's memory once the buffer is drained.
/// - Writes smaller than 64 KiB are copied into an output buffer and reported done at once; the
///   buffer is written with one `write` when the event loop has nothing else to run
///   (`kj::evalLast`), so every message produced in one burst of events leaves together. Larger
///   writes go straight to the socket after the buffered bytes, in order. Past 1 MiB of pending
///   bytes a write waits until they are on the socket (back-pressure).
/// - A write that fails fails every later write (`whenWriteDisconnected` is the socket's own).
///   `shutdownWrite` sends the buffered bytes first.
///
/// - A server's streams tell its `busy_poll` when request bytes arrive, so its loop keeps polling
///   for the next request for a moment instead of sleeping (busy_poll.hpp).
///
/// One read and one write may be outstanding at a time (the `kj::AsyncIoStream` contract). kj
/// thread only, like the stream it wraps.

#include <cstddef>

#include <kj/async-io.h>
#include <kj/vector.h>

namespace shoal {

class busy_poll;

class buffered_stream final : public kj::AsyncIoStream {
public:
  static constexpr size_t read_buffer_bytes = 64 * 1024;
  static constexpr size_t direct_write_bytes = 64 * 1024; ///< writes at least this large skip the copy
  static constexpr size_t high_water_bytes = 1024 * 1024; ///< pending bytes before writes wait

  /// `poller` (optional) must outlive the stream.
  explicit buffered_stream(kj::Own<kj::AsyncIoStream> inner, busy_poll* poller = nullptr);

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
  /// Resolves once `n` bytes (at most `read_buffer_bytes`) are buffered, or fewer at the end of
  /// the stream, without consuming them: later reads return them. For telling protocols apart by
  /// a connection's first bytes.
  kj::Promise<kj::ArrayPtr<const kj::byte>> peek(size_t n);
  /// Drops up to `n` buffered bytes (after `peek`).
  void skip(size_t n);
  /// Resolves once every byte accepted so far is on the socket (before dropping the stream).
  kj::Promise<void> flushed();
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> whenWriteDisconnected() override;
  void shutdownWrite() override;
  void abortRead() override;
  void getsockopt(int level, int option, void* value, kj::uint* length) override;
  void setsockopt(int level, int option, const void* value, kj::uint length) override;
  void getsockname(struct sockaddr* addr, kj::uint* length) override;
  void getpeername(struct sockaddr* addr, kj::uint* length) override;
  kj::Maybe<int> getFd() const override;

  /// System calls saved, for inspection: reads served from the buffer, writes merged.
  uint64_t buffered_reads() const noexcept { return buffered_reads_; }
  uint64_t socket_writes() const noexcept { return socket_writes_; }
  uint64_t writes() const noexcept { return writes_; }

private:
  class error_handler final : public kj::TaskSet::ErrorHandler {
  public:
    explicit error_handler(buffered_stream& owner) : owner_(owner) {}
    void taskFailed(kj::Exception&& exception) override;

  private:
    buffered_stream& owner_;
  };

  size_t take_buffered(kj::byte* out, size_t max_bytes);
  void schedule_flush();
  /// Writes `out_` (and whatever is appended meanwhile) to the socket until it is empty.
  kj::Promise<void> drain();
  /// Everything is on the socket: release flush waiters, run a pending shutdownWrite.
  void settle();
  void fail(kj::Exception&& exception);

  kj::Own<kj::AsyncIoStream> inner_;
  busy_poll* poller_;

  kj::Array<kj::byte> in_;
  size_t in_begin_ = 0;
  size_t in_end_ = 0;

  kj::Vector<kj::byte> out_;
  bool flush_scheduled_ = false;
  bool writing_ = false;          ///< `drain` is running
  bool shutdown_pending_ = false; ///< shutdownWrite once `out_` is written
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> flush_waiters_;
  kj::Maybe<kj::Exception> write_failure_;

  uint64_t buffered_reads_ = 0;
  uint64_t socket_writes_ = 0;
  uint64_t writes_ = 0;

  error_handler errors_{*this};
  kj::TaskSet tasks_{errors_}; ///< last: cancelled before the members its tasks use
};

} // namespace shoal
