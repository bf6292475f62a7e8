#pragma once
/// `chunk_loan`: chunk bytes that live in memory the kj thread owns (the parameters of a capnp
/// call), lent to another thread (the block server actor, a block peer's store worker) so that
/// it can verify and store them without copying them first.
///
/// The kj thread calls `lend(...)`, hands the `std::shared_ptr<chunk_loan>` to the borrower and
/// keeps the returned promise (together with whatever owns the memory) until it resolves. The
/// borrower reads `chunks()` and ends the loan with `finish(err)` (or by dropping its last
/// reference, which finishes with errc::unavailable): after that it must not touch the bytes.
///
/// Lifetime rule that makes this safe: the promise resolves only after the loan ended, and if
/// the kj side drops the promise early (a cancelled call, a connection torn down) its destructor
/// blocks until the borrower has ended the loan — at most the time of one store write. So the
/// lent memory is never freed while another thread reads it.

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

#include <kj/async.h>
#include <kj/function.h>

#include "fs/chunk_store.hpp"
#include "runtime/errc.hpp"
#include "runtime/kj_bridge.hpp"

namespace shoal::block_server {

/// (claimed id, bytes) pairs, in order.
using lent_chunks = std::vector<std::pair<fs::chunk_id, std::string_view>>;

class chunk_loan {
public:
  /// Shared by the loan and the kj side's guard; `returned` flips once, under `mutex`.
  struct state {
    std::mutex mutex;
    std::condition_variable changed;
    bool returned = false;
  };

  chunk_loan(lent_chunks chunks, std::shared_ptr<state> st,
             kj::Own<kj::CrossThreadPromiseFulfiller<void>> done)
    : chunks_(std::move(chunks)), state_(std::move(st)), done_(kj::mv(done)) {
    for (auto& c : chunks_)
      bytes_ += c.second.size();
  }

  ~chunk_loan() {
    if (state_)
      finish(make_error(errc::unavailable, "a lent chunk batch was dropped before it was stored"));
  }

  chunk_loan(const chunk_loan&) = delete;
  chunk_loan& operator=(const chunk_loan&) = delete;

  /// The borrowed chunks; valid until `finish`. Borrower's thread only.
  const lent_chunks& chunks() const noexcept { return chunks_; }
  uint64_t bytes() const noexcept { return bytes_; }

  /// Ends the loan and reports the outcome to the kj side. Idempotent (later calls do nothing).
  void finish(caf::error err) {
    if (!state_)
      return;
    chunks_.clear(); // no view survives the loan
    {
      std::lock_guard<std::mutex> lock{state_->mutex};
      state_->returned = true;
      state_->changed.notify_all();
    }
    state_.reset();
    if (err)
      done_->reject(bridge::to_kj_exception(err));
    else
      done_->fulfill();
  }

private:
  lent_chunks chunks_;
  uint64_t bytes_ = 0;
  std::shared_ptr<state> state_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> done_;
};

/// What the kj side keeps: the loan to hand over, and the promise to hold until it resolves.
struct lent_batch {
  /// shared_ptr: it travels in a CAF message (or a worker queue) and may be copied on the way;
  /// the last copy to go ends the loan if nobody finished it.
  std::shared_ptr<chunk_loan> loan;
  kj::Promise<void> done;
};

/// Lends `chunks` (views into memory the caller keeps alive until `done` resolves or is
/// destroyed). kj thread only.
inline lent_batch lend(lent_chunks chunks) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  auto st = std::make_shared<chunk_loan::state>();
  auto loan = std::make_shared<chunk_loan>(std::move(chunks), st, kj::mv(paf.fulfiller));
  // Runs when the promise is destroyed: after resolution (returned already) or on cancellation
  // (wait for the borrower, which never takes longer than one store write).
  auto guard = kj::defer([st] {
    std::unique_lock<std::mutex> lock{st->mutex};
    st->changed.wait(lock, [&] { return st->returned; });
  });
  return {std::move(loan), paf.promise.attach(kj::mv(guard))};
}

} // namespace shoal::block_server
