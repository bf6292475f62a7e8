#pragma once
/// Queue and dict calls from a guest (docs/guest-protocol.md, "Queues and dicts"): the CALL
/// methods `queue.*` and `dict.*`, served by the queue broker in the container's environment.
/// Kept apart from container_supervisor.cpp, whose `handle_call` forwards these methods here.

#include <functional>
#include <string>
#include <string_view>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include "actors/queue_broker/queue_broker_actor.hpp"
#include "runtime/guest/guest_frame.hpp"

namespace shoal::container_supervisor {

/// True for the methods `handle_data_call` serves ("queue.put", "dict.get", ...).
bool is_data_method(std::string_view method);

/// Serves one CALL: decodes its body, asks `broker` and hands the REPLY to `reply`, which may run
/// on any thread (it must be thread-safe: `guest_hub::send` is). A malformed body or an unknown
/// method is answered with `invalid_argument` and never drops the channel. Ephemeral objects the
/// guest creates are owned by `owner` (the supervisor): they are deleted when it terminates.
/// Without a broker (no control role) every call is answered with `unavailable`.
void handle_data_call(caf::actor_system& sys, const queue_broker::queue_broker_actor& broker,
                      caf::actor owner, std::string environment, guest::call call,
                      std::function<void(guest::reply)> reply);

} // namespace shoal::container_supervisor
