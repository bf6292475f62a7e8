#include "runtime/buffered_stream.hpp"

#include <algorithm>
#include <cstring>

#include <kj/debug.h>

#include "runtime/busy_poll.hpp"

namespace shoal {

buffered_stream::buffered_stream(kj::Own<kj::AsyncIoStream> inner, busy_poll* poller)
  : inner_(kj::mv(inner)), poller_(poller), in_(kj::heapArray<kj::byte>(read_buffer_bytes)) {}

// --- reads ----------------------------------------------------------------------------------------

size_t buffered_stream::take_buffered(kj::byte* out, size_t max_bytes) {
  size_t n = std::min(in_end_ - in_begin_, max_bytes);
  if (n > 0) {
    std::memcpy(out, in_.begin() + in_begin_, n);
    in_begin_ += n;
  }
  if (in_begin_ == in_end_)
    in_begin_ = in_end_ = 0;
  return n;
}

kj::Promise<size_t> buffered_stream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  auto* out = static_cast<kj::byte*>(buffer);
  size_t got = take_buffered(out, max_bytes);
  if (got >= min_bytes) {
    if (got > 0)
      ++buffered_reads_;
    return got;
  }
  if (max_bytes - got >= in_.size()) // a large body: straight into the caller's memory
    return inner_->tryRead(out + got, min_bytes - got, max_bytes - got).then([this, got](size_t n) {
      if (n > 0 && poller_ != nullptr)
        poller_->on_request(this);
      return got + n;
    });
  return inner_->tryRead(in_.begin(), min_bytes - got, in_.size())
    .then([this, out, got, max_bytes](size_t n) {
      in_begin_ = 0;
      in_end_ = n;
      if (n > 0 && poller_ != nullptr)
        poller_->on_request(this);
      return got + take_buffered(out + got, max_bytes - got);
    });
}

kj::Promise<kj::ArrayPtr<const kj::byte>> buffered_stream::peek(size_t n) {
  KJ_REQUIRE(n <= in_.size(), "peek beyond the read buffer");
  if (in_end_ - in_begin_ >= n)
    return in_.slice(in_begin_, in_end_).asConst();
  if (in_begin_ > 0) { // room at the end for the rest
    std::memmove(in_.begin(), in_.begin() + in_begin_, in_end_ - in_begin_);
    in_end_ -= in_begin_;
    in_begin_ = 0;
  }
  return inner_->tryRead(in_.begin() + in_end_, 1, in_.size() - in_end_)
    .then([this, n](size_t got) -> kj::Promise<kj::ArrayPtr<const kj::byte>> {
      in_end_ += got;
      if (got == 0) // the end of the stream: what there is
        return in_.slice(in_begin_, in_end_).asConst();
      return peek(n);
    });
}

void buffered_stream::skip(size_t n) {
  in_begin_ += std::min(n, in_end_ - in_begin_);
  if (in_begin_ == in_end_)
    in_begin_ = in_end_ = 0;
}

void buffered_stream::abortRead() { inner_->abortRead(); }

// --- writes ---------------------------------------------------------------------------------------

kj::Promise<void> buffered_stream::write(const void* buffer, size_t size) {
  auto piece = kj::arrayPtr(static_cast<const kj::byte*>(buffer), size);
  return write(kj::arrayPtr(&piece, 1));
}

kj::Promise<void> buffered_stream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  KJ_IF_MAYBE (failure, write_failure_)
    return kj::cp(*failure);
  ++writes_;
  size_t size = 0;
  for (auto& piece : pieces)
    size += piece.size();
  if (size >= direct_write_bytes) {
    // After the buffered bytes, in order. The caller keeps the bytes alive until we resolve,
    // but not necessarily the list of pieces.
    auto list = kj::heapArray(pieces);
    return flushed().then([this, list = kj::mv(list)]() mutable {
      writing_ = true;
      ++socket_writes_;
      return inner_->write(list).attach(kj::mv(list)).then(
        [this] {
          writing_ = false;
          if (out_.empty())
            settle();
          else
            tasks_.add(drain());
        },
        [this](kj::Exception&& e) {
          fail(kj::cp(e));
          kj::throwFatalException(kj::mv(e));
        });
    });
  }
  for (auto& piece : pieces)
    out_.addAll(piece);
  if (out_.size() >= high_water_bytes)
    return flushed();
  schedule_flush();
  return kj::READY_NOW;
}

void buffered_stream::schedule_flush() {
  if (flush_scheduled_ || writing_)
    return; // a running drain picks up what was appended
  flush_scheduled_ = true;
  tasks_.add(kj::evalLast([this]() -> kj::Promise<void> {
    flush_scheduled_ = false;
    if (writing_ || out_.empty())
      return kj::READY_NOW;
    return drain();
  }));
}

kj::Promise<void> buffered_stream::drain() {
  writing_ = true;
  auto data = out_.releaseAsArray();
  out_.reserve(data.size());
  ++socket_writes_;
  auto written = inner_->write(data.begin(), data.size());
  return written.attach(kj::mv(data)).then([this]() -> kj::Promise<void> {
    if (!out_.empty())
      return drain();
    writing_ = false;
    settle();
    return kj::READY_NOW;
  });
}

void buffered_stream::settle() {
  auto waiters = kj::mv(flush_waiters_);
  for (auto& waiter : waiters)
    waiter->fulfill();
  if (shutdown_pending_) {
    shutdown_pending_ = false;
    inner_->shutdownWrite();
  }
}

kj::Promise<void> buffered_stream::flushed() {
  KJ_IF_MAYBE (failure, write_failure_)
    return kj::cp(*failure);
  if (out_.empty() && !writing_)
    return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  flush_waiters_.add(kj::mv(paf.fulfiller));
  if (!writing_)
    tasks_.add(drain());
  return kj::mv(paf.promise);
}

void buffered_stream::fail(kj::Exception&& exception) {
  writing_ = false;
  out_.clear();
  auto waiters = kj::mv(flush_waiters_);
  for (auto& waiter : waiters)
    waiter->reject(kj::cp(exception));
  if (write_failure_ == nullptr)
    write_failure_ = kj::mv(exception);
}

void buffered_stream::error_handler::taskFailed(kj::Exception&& exception) {
  owner_.fail(kj::mv(exception));
}

kj::Promise<void> buffered_stream::whenWriteDisconnected() { return inner_->whenWriteDisconnected(); }

void buffered_stream::shutdownWrite() {
  if (writing_ || !out_.empty()) {
    shutdown_pending_ = true;
    if (!writing_)
      tasks_.add(drain());
    return;
  }
  inner_->shutdownWrite();
}

// --- socket options -------------------------------------------------------------------------------

void buffered_stream::getsockopt(int level, int option, void* value, kj::uint* length) {
  inner_->getsockopt(level, option, value, length);
}

void buffered_stream::setsockopt(int level, int option, const void* value, kj::uint length) {
  inner_->setsockopt(level, option, value, length);
}

void buffered_stream::getsockname(struct sockaddr* addr, kj::uint* length) {
  inner_->getsockname(addr, length);
}

void buffered_stream::getpeername(struct sockaddr* addr, kj::uint* length) {
  inner_->getpeername(addr, length);
}

kj::Maybe<int> buffered_stream::getFd() const { return inner_->getFd(); }

} // namespace shoal
