#include <catch2/catch.hpp>

#include "actors/scheduler/function_queue.hpp"
#include "actors/scheduler/retry_policy.hpp"

using namespace shoal::scheduler;
using namespace std::chrono_literals;

namespace {

queued_input input(uint64_t id, clock::time_point not_before = {}) {
  queued_input in;
  in.input_id = id;
  in.call_id = "fc-1";
  in.index = id;
  in.args = "args" + std::to_string(id);
  in.not_before = not_before;
  return in;
}

scaling_limits limits(uint32_t min, uint32_t max, uint32_t buffer, uint32_t max_inputs = 1) {
  scaling_limits l;
  l.min_containers = min;
  l.max_containers = max;
  l.buffer_containers = buffer;
  l.max_inputs = max_inputs;
  l.scaledown_window = 10s;
  return l;
}

const clock::time_point t0 = clock::time_point{} + 1000s;

} // namespace

TEST_CASE("inputs wait until a container is ready and then go out oldest first") {
  function_queue q{limits(0, 0, 0)};
  q.add(input(1));
  q.add(input(2));
  CHECK(q.dispatch(t0).empty());
  q.container_requested("ct-a");
  CHECK(q.dispatch(t0).empty()); // booting containers take nothing
  q.container_ready("ct-a", 1, t0);
  auto batches = q.dispatch(t0);
  REQUIRE(batches.size() == 1);
  CHECK(batches[0].container_id == "ct-a");
  REQUIRE(batches[0].inputs.size() == 1);
  CHECK(batches[0].inputs[0].input_id == 1);
  CHECK(q.dispatch(t0).empty()); // no credit left
  REQUIRE(q.finish(1, t0));
  auto next = q.dispatch(t0);
  REQUIRE(next.size() == 1);
  CHECK(next[0].inputs[0].input_id == 2);
}

TEST_CASE("a container never has more inputs in flight than its credits") {
  function_queue q{limits(0, 0, 0, 3)};
  for (uint64_t i = 1; i <= 10; ++i)
    q.add(input(i));
  q.container_requested("ct-a");
  q.container_requested("ct-b");
  q.container_ready("ct-a", 3, t0);
  q.container_ready("ct-b", 3, t0);
  auto batches = q.dispatch(t0);
  size_t total = 0;
  for (auto& b : batches) {
    CHECK(b.inputs.size() <= 3);
    total += b.inputs.size();
  }
  CHECK(total == 6);
  CHECK(q.inflight_on("ct-a").size() == 3);
  CHECK(q.inflight_on("ct-b").size() == 3);
  CHECK(q.waiting_count() == 4);
}

TEST_CASE("a retried input waits for its backoff before it is dispatched again") {
  function_queue q{limits(0, 0, 0)};
  q.container_requested("ct-a");
  q.container_ready("ct-a", 1, t0);
  q.add(input(7, t0 + 2s));
  CHECK(q.dispatch(t0).empty());
  CHECK(q.dispatch(t0 + 1999ms).empty());
  auto later = q.dispatch(t0 + 2s);
  REQUIRE(later.size() == 1);
  CHECK(later[0].inputs[0].input_id == 7);
}

TEST_CASE("the autoscaler asks for enough containers for the demand, within the limits") {
  function_queue q{limits(0, 2, 0)};
  for (uint64_t i = 1; i <= 5; ++i)
    q.add(input(i));
  CHECK(q.plan(t0).start == 2); // capped by max_containers
  q.container_requested("ct-a");
  q.container_requested("ct-b");
  CHECK(q.plan(t0).start == 0); // booting ones count
  CHECK(q.live_container_count() == 2);

  function_queue concurrent{limits(0, 0, 0, 4)};
  for (uint64_t i = 1; i <= 5; ++i)
    concurrent.add(input(i));
  CHECK(concurrent.plan(t0).start == 2); // ceil(5 / 4)

  function_queue buffered{limits(1, 0, 2)};
  CHECK(buffered.plan(t0).start == 2); // max(min 1, 0 demand + 2 buffer)
  for (uint64_t i = 1; i <= 3; ++i)
    buffered.add(input(i));
  CHECK(buffered.plan(t0).start == 5); // 3 for the demand + 2 idle buffer
}

TEST_CASE("idle containers are stopped only after the scaledown window, down to min_containers") {
  function_queue q{limits(1, 0, 0)};
  q.container_requested("ct-a");
  q.container_requested("ct-b");
  q.container_ready("ct-a", 1, t0);
  q.container_ready("ct-b", 1, t0 + 1s);
  CHECK(q.plan(t0 + 5s).stop.empty());
  auto plan = q.plan(t0 + 10s);
  REQUIRE(plan.stop.size() == 1);
  CHECK(plan.stop[0] == "ct-a"); // idle the longest
  q.container_draining("ct-a");
  CHECK(q.plan(t0 + 60s).stop.empty()); // min_containers = 1 stays warm
}

TEST_CASE("scale to zero: with no demand and no minimum every idle container goes") {
  function_queue q{limits(0, 0, 0)};
  q.container_requested("ct-a");
  q.container_ready("ct-a", 1, t0);
  q.add(input(1));
  q.dispatch(t0);
  CHECK(q.plan(t0 + 60s).stop.empty()); // busy
  q.finish(1, t0 + 20s);
  CHECK(q.plan(t0 + 29s).stop.empty());
  CHECK(q.plan(t0 + 30s).stop == std::vector<std::string>{"ct-a"});
}

TEST_CASE("a container that goes away hands back the inputs it was running") {
  function_queue q{limits(0, 0, 0, 2)};
  q.container_requested("ct-a");
  q.container_ready("ct-a", 2, t0);
  q.add(input(1));
  q.add(input(2));
  q.add(input(3));
  q.dispatch(t0);
  auto orphans = q.container_gone("ct-a");
  REQUIRE(orphans.size() == 2);
  CHECK(q.inflight_count() == 0);
  CHECK(q.waiting_count() == 1);
  CHECK_FALSE(q.finish(orphans[0].input_id, t0)); // no longer tracked
}

TEST_CASE("a waiting input can be taken out, an input in flight cannot") {
  function_queue q{limits(0, 0, 0)};
  q.container_requested("ct-a");
  q.container_ready("ct-a", 1, t0);
  q.add(input(1));
  q.add(input(2));
  q.dispatch(t0);
  CHECK_FALSE(q.take_waiting(1));
  CHECK(q.container_of(1) == std::optional<std::string>{"ct-a"});
  auto taken = q.take_waiting(2);
  REQUIRE(taken);
  CHECK(taken->args == "args2");
  CHECK(q.waiting_count() == 0);
}

TEST_CASE("retry delays grow by the coefficient and stop at the cap") {
  retry_policy fixed;
  fixed.max_retries = 2;
  CHECK(fixed.allows_retry(1));
  CHECK(fixed.allows_retry(2));
  CHECK_FALSE(fixed.allows_retry(3));
  CHECK(fixed.delay_before(2) == 1000ms);
  CHECK(fixed.delay_before(3) == 1000ms);

  retry_policy exp;
  exp.max_retries = 10;
  exp.initial_delay = 100ms;
  exp.backoff_coefficient = 2.0;
  exp.max_delay = 500ms;
  CHECK(exp.delay_before(2) == 100ms);
  CHECK(exp.delay_before(3) == 200ms);
  CHECK(exp.delay_before(4) == 400ms);
  CHECK(exp.delay_before(5) == 500ms);
}

TEST_CASE("prefetch lets a ready container hold more inputs than it runs at once") {
  function_queue q{limits(0, 0, 0, 2)};
  q.set_prefetch(3);
  for (uint64_t i = 1; i <= 10; ++i)
    q.add(input(i));
  q.container_requested("ct-a");
  q.container_ready("ct-a", 2, t0);
  auto batches = q.dispatch(t0);
  REQUIRE(batches.size() == 1);
  CHECK(batches[0].inputs.size() == 5); // 2 running + 3 queued in the guest
  CHECK(q.plan(t0).start == 4);         // demand 10 / capacity 2 = 5 containers, 1 live
}
