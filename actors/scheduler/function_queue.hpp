#pragma once
/// `function_queue`: the inputs and containers of one function, and the decisions about them —
/// which inputs go to which container (credit-based flow control) and how many containers there
/// should be (autoscaling). Pure logic: no actors, no clocks of its own (callers pass `now`), so
/// every decision is unit-tested directly.
///
/// Input states here: delayed (retry backoff) → pending → in flight (on a container) → finished.
/// Container states here: booting → ready (idle when no input in flight, busy otherwise) →
/// draining (gets no new inputs) → gone.
///
/// Credits: a ready container has `capacity` slots (the function's maxInputs); `dispatch` never puts
/// more inputs in flight on a container than it has slots.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace shoal::scheduler {

using clock = std::chrono::steady_clock;

struct queued_input {
  uint64_t input_id = 0;  ///< stable across attempts
  std::string call_id;
  uint64_t index = 0;     ///< position within its call
  std::string args;       ///< opaque payload for the guest
  uint32_t attempt = 1;   ///< 1-based number of the attempt about to run (or running)
  clock::time_point not_before{};
};

struct scaling_limits {
  uint32_t min_containers = 0;
  uint32_t max_containers = 0; ///< 0: unlimited
  uint32_t buffer_containers = 0;
  std::chrono::milliseconds scaledown_window{60000};
  uint32_t max_inputs = 1; ///< credits per container
};

class function_queue {
public:
  explicit function_queue(scaling_limits limits) : limits_(limits) {}

  struct assignment {
    std::string container_id;
    std::vector<queued_input> inputs;
  };

  struct scale_plan {
    uint32_t start = 0;               ///< containers to request
    std::vector<std::string> stop;    ///< idle containers to stop
  };

  /// Queues an input; it becomes eligible once `now >= not_before`.
  void add(queued_input input);

  /// Assigns eligible inputs, oldest first, to ready containers with free credits (the container
  /// with the most free credits first, so load spreads). Moves copies of the inputs out.
  std::vector<assignment> dispatch(clock::time_point now);

  /// What the container count should become: see the file comment in autoscaler terms.
  scale_plan plan(clock::time_point now) const;

  void container_requested(const std::string& container_id);
  /// The guest sent READY: it takes `capacity` inputs at once.
  void container_ready(const std::string& container_id, uint32_t capacity, clock::time_point now);
  /// No new inputs for this container (it is being stopped).
  void container_draining(const std::string& container_id);
  /// The container is gone; returns the inputs that were in flight on it (no longer tracked:
  /// the caller re-adds or fails them).
  std::vector<queued_input> container_gone(const std::string& container_id);

  /// An in-flight input finished (any outcome): frees its credit and forgets it.
  std::optional<queued_input> finish(uint64_t input_id, clock::time_point now);

  /// Removes an input that has not started (delayed or pending); nullopt when it is in flight or
  /// unknown.
  std::optional<queued_input> take_waiting(uint64_t input_id);

  /// The container running `input_id`, if it is in flight.
  std::optional<std::string> container_of(uint64_t input_id) const;

  /// Inputs a ready container may hold beyond its capacity: they queue in the guest and start as
  /// soon as a slot frees, so a fast function does not wait a round trip per input. Does not
  /// change how many containers the autoscaler asks for.
  void set_prefetch(uint32_t inputs) noexcept { prefetch_ = inputs; }
  uint32_t prefetch() const noexcept { return prefetch_; }

  /// Every input still waiting (delayed or pending), removed from the queue.
  std::vector<queued_input> drain_waiting();

  size_t waiting_count() const noexcept { return pending_.size() + delayed_.size(); }
  size_t inflight_count() const noexcept;
  size_t container_count() const noexcept { return containers_.size(); }
  /// Containers not draining: booting + ready.
  uint32_t live_container_count() const noexcept;
  uint32_t booting_count() const noexcept;
  /// Ready containers with nothing in flight, with the time each became idle.
  std::vector<std::pair<clock::time_point, std::string>> idle_containers() const;
  /// In-flight input ids on `container_id` (empty for unknown ids).
  std::vector<uint64_t> inflight_on(const std::string& container_id) const;
  const scaling_limits& limits() const noexcept { return limits_; }

private:
  enum class slot_state { booting, ready, draining };

  struct container_slot {
    slot_state state = slot_state::booting;
    uint32_t capacity = 0;
    std::set<uint64_t> inflight;
    clock::time_point idle_since{};
  };

  void promote_due(clock::time_point now);

  scaling_limits limits_;
  uint32_t prefetch_ = 0;
  std::deque<uint64_t> pending_;
  std::multimap<clock::time_point, uint64_t> delayed_;
  std::unordered_map<uint64_t, queued_input> inputs_;
  std::unordered_map<uint64_t, std::string> running_on_;
  std::map<std::string, container_slot> containers_;
};

} // namespace shoal::scheduler
