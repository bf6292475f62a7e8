#include "runtime/call_gate.hpp"

#include "runtime/kj_bridge.hpp"

namespace shoal {

call_gate::pass::~pass() {
  if (--gate_.inflight_ == 0 && gate_.closed_ && gate_.drained_.get() != nullptr)
    gate_.drained_->fulfill();
}

kj::Own<call_gate::pass> call_gate::enter() {
  if (closed_)
    kj::throwFatalException(
      bridge::to_kj_exception(errc::unavailable, "shoald is shutting down; retry on another node "
                                                 "or once it is back"));
  return kj::heap<pass>(*this);
}

kj::Promise<void> call_gate::close() {
  closed_ = true;
  if (inflight_ == 0)
    return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  drained_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

} // namespace shoal
