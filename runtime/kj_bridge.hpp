#pragma once
/// The bridge from the kj thread (Cap'n Proto) to CAF actors ("Pattern A" in PLATFORM.md §3).
///
/// A capnp method body calls `ask<R>(sys, actor, timeout, msg...)` and returns the kj promise it
/// gets: a short-lived helper actor sends the request, and when the reply (or error) arrives on a
/// CAF worker thread it fulfils a `kj::CrossThreadPromiseFulfiller`, which wakes the kj loop. Only
/// the fulfiller and plain message data cross threads; no kj object is touched by CAF threads.
///
/// Errors come back as `kj::Exception`s made by `to_kj_exception`: description
/// "[<errc name>] <message>", type OVERLOADED for errc::unavailable, FAILED otherwise.

#include <chrono>
#include <memory>
#include <string>
#include <type_traits>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <kj/async.h>
#include <kj/exception.h>

#include "runtime/errc.hpp"

namespace shoal::bridge {

/// The exception a capnp caller sees for `code` and `message`.
kj::Exception to_kj_exception(errc code, const std::string& message);

/// The exception a capnp caller sees for `err`.
kj::Exception to_kj_exception(const caf::error& err);

/// Default deadline for a bridged request.
inline constexpr std::chrono::seconds default_timeout{30};

/// Sends `xs...` to `dest` and returns a promise for its reply of type `R` (use `void` for
/// actors whose interface says `with<void>`). Call only on the kj thread.
template <class R, class Handle, class... Ts>
kj::Promise<R> ask(caf::actor_system& sys, const Handle& dest, caf::timespan timeout, Ts... xs) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<R>();
  // shared_ptr: the helper's two continuations both reference the fulfiller; exactly one runs.
  auto fulfiller = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<R>>>(
    kj::mv(paf.fulfiller));
  auto on_error = [fulfiller](caf::error& err) { (*fulfiller)->reject(to_kj_exception(err)); };
  sys.spawn([=](caf::event_based_actor* self) {
    if constexpr (std::is_void_v<R>) {
      self->request(dest, timeout, xs...).then([fulfiller]() { (*fulfiller)->fulfill(); },
                                               on_error);
    } else {
      self->request(dest, timeout, xs...).then(
        [fulfiller](R& result) { (*fulfiller)->fulfill(std::move(result)); }, on_error);
    }
  });
  return kj::mv(paf.promise);
}

} // namespace shoal::bridge
