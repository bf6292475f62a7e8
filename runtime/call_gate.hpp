#pragma once
/// `call_gate`: counts the RPCs in flight so that shutdown can stop taking calls and wait for the
/// running ones (modelled on Seastar's `gate`). kj thread only.
///
///     return doWork().attach(gate.enter());   // in every bridged capnp method
///
/// After `close()`, `enter()` throws an [unavailable] exception ("shoald is shutting down"), and
/// the promise `close()` returned resolves once every pass has been dropped.

#include <cstddef>

#include <kj/async.h>
#include <kj/memory.h>

namespace shoal {

class call_gate {
public:
  class pass {
  public:
    explicit pass(call_gate& gate) : gate_(gate) { ++gate_.inflight_; }
    ~pass();
    pass(const pass&) = delete;
    pass& operator=(const pass&) = delete;

  private:
    call_gate& gate_;
  };

  /// Admits one call; throws [unavailable] once closed.
  kj::Own<pass> enter();

  /// Refuses new calls; resolves when the last admitted call finishes.
  kj::Promise<void> close();

  size_t inflight() const noexcept { return inflight_; }
  bool closed() const noexcept { return closed_; }

private:
  size_t inflight_ = 0;
  bool closed_ = false;
  kj::Own<kj::PromiseFulfiller<void>> drained_;
};

} // namespace shoal
