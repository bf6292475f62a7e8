#pragma once
/// Helpers for tests that drive a `sync_rpc` against a (fake) Queues server.

#include <functional>
#include <string>

#include <kj/exception.h>

#include "runtime/client/sync_rpc.hpp"
#include "schema/queues.capnp.h"

namespace shoal::test {

/// Queues.queuePut (@5) of one item on the channel's Queues capability.
inline void put(client::sync_rpc& rpc, const std::string& name, const std::string& item) {
  rpc.call<wire::Queues::QueuePutParams, wire::Queues::QueuePutResults>(
    rpc.caps().queues, capnp::typeId<wire::Queues>(), 5,
    [&](auto p) {
      p.setName(name);
      p.initItems(1).set(0, kj::arrayPtr(reinterpret_cast<const kj::byte*>(item.data()), item.size()));
    },
    [](auto) { return true; });
}

/// The description of the kj::Exception `f` throws, or "no exception".
inline std::string description_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kj::Exception& e) {
    return e.getDescription().cStr();
  }
  return "no exception";
}

} // namespace shoal::test
