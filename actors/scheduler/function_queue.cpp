#include "actors/scheduler/function_queue.hpp"

#include <algorithm>

namespace shoal::scheduler {

void function_queue::add(queued_input input) {
  auto id = input.input_id;
  auto not_before = input.not_before;
  inputs_[id] = std::move(input);
  if (not_before > clock::time_point{})
    delayed_.emplace(not_before, id);
  else
    pending_.push_back(id);
}

void function_queue::promote_due(clock::time_point now) {
  while (!delayed_.empty() && delayed_.begin()->first <= now) {
    pending_.push_back(delayed_.begin()->second);
    delayed_.erase(delayed_.begin());
  }
}

std::vector<function_queue::assignment> function_queue::dispatch(clock::time_point now) {
  promote_due(now);
  std::vector<assignment> out;
  if (pending_.empty())
    return out;
  // Ready containers by free credits, most first.
  std::vector<std::pair<uint32_t, const std::string*>> free;
  for (auto& [id, slot] : containers_) {
    uint32_t credits = slot.capacity + prefetch_;
    if (slot.state == slot_state::ready && slot.inflight.size() < credits)
      free.emplace_back(credits - static_cast<uint32_t>(slot.inflight.size()), &id);
  }
  std::stable_sort(free.begin(), free.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (auto& [credits, id] : free) {
    if (pending_.empty())
      break;
    auto& slot = containers_[*id];
    assignment batch;
    batch.container_id = *id;
    while (credits > 0 && !pending_.empty()) {
      auto input_id = pending_.front();
      pending_.pop_front();
      auto i = inputs_.find(input_id);
      if (i == inputs_.end())
        continue; // taken meanwhile
      slot.inflight.insert(input_id);
      running_on_[input_id] = *id;
      batch.inputs.push_back(i->second);
      --credits;
    }
    if (!batch.inputs.empty())
      out.push_back(std::move(batch));
  }
  return out;
}

function_queue::scale_plan function_queue::plan(clock::time_point now) const {
  scale_plan out;
  uint32_t capacity = std::max<uint32_t>(limits_.max_inputs, 1);
  size_t demand = pending_.size() + delayed_.size() + running_on_.size();
  uint32_t needed = static_cast<uint32_t>((demand + capacity - 1) / capacity);
  uint32_t desired = std::max(limits_.min_containers, needed + limits_.buffer_containers);
  if (limits_.max_containers > 0)
    desired = std::min(desired, limits_.max_containers);
  uint32_t live = live_container_count();
  if (desired > live) {
    out.start = desired - live;
    return out;
  }
  if (live > desired) {
    // Stop the containers idle the longest, once idle past the scaledown window.
    std::vector<std::pair<clock::time_point, const std::string*>> idle;
    for (auto& [id, slot] : containers_)
      if (slot.state == slot_state::ready && slot.inflight.empty()
          && slot.idle_since + limits_.scaledown_window <= now)
        idle.emplace_back(slot.idle_since, &id);
    std::sort(idle.begin(), idle.end());
    for (size_t i = 0; i < idle.size() && out.stop.size() < live - desired; ++i)
      out.stop.push_back(*idle[i].second);
  }
  return out;
}

void function_queue::container_requested(const std::string& container_id) {
  containers_[container_id] = container_slot{};
}

void function_queue::container_ready(const std::string& container_id, uint32_t capacity,
                                     clock::time_point now) {
  auto& slot = containers_[container_id];
  slot.state = slot_state::ready;
  slot.capacity = std::max<uint32_t>(capacity, 1);
  slot.idle_since = now;
}

void function_queue::container_draining(const std::string& container_id) {
  auto i = containers_.find(container_id);
  if (i != containers_.end())
    i->second.state = slot_state::draining;
}

std::vector<queued_input> function_queue::container_gone(const std::string& container_id) {
  std::vector<queued_input> orphans;
  auto i = containers_.find(container_id);
  if (i == containers_.end())
    return orphans;
  for (auto input_id : i->second.inflight) {
    running_on_.erase(input_id);
    auto in = inputs_.find(input_id);
    if (in != inputs_.end()) {
      orphans.push_back(std::move(in->second));
      inputs_.erase(in);
    }
  }
  containers_.erase(i);
  return orphans;
}

std::optional<queued_input> function_queue::finish(uint64_t input_id, clock::time_point now) {
  auto r = running_on_.find(input_id);
  if (r == running_on_.end())
    return std::nullopt;
  auto c = containers_.find(r->second);
  if (c != containers_.end()) {
    c->second.inflight.erase(input_id);
    if (c->second.inflight.empty())
      c->second.idle_since = now;
  }
  running_on_.erase(r);
  auto in = inputs_.find(input_id);
  if (in == inputs_.end())
    return std::nullopt;
  auto out = std::move(in->second);
  inputs_.erase(in);
  return out;
}

std::optional<queued_input> function_queue::take_waiting(uint64_t input_id) {
  if (running_on_.count(input_id) != 0)
    return std::nullopt;
  auto in = inputs_.find(input_id);
  if (in == inputs_.end())
    return std::nullopt;
  auto p = std::find(pending_.begin(), pending_.end(), input_id);
  if (p != pending_.end())
    pending_.erase(p);
  for (auto d = delayed_.begin(); d != delayed_.end(); ++d)
    if (d->second == input_id) {
      delayed_.erase(d);
      break;
    }
  auto out = std::move(in->second);
  inputs_.erase(in);
  return out;
}

std::optional<std::string> function_queue::container_of(uint64_t input_id) const {
  auto r = running_on_.find(input_id);
  if (r == running_on_.end())
    return std::nullopt;
  return r->second;
}

std::vector<queued_input> function_queue::drain_waiting() {
  std::vector<queued_input> out;
  for (auto id : pending_)
    if (auto in = inputs_.find(id); in != inputs_.end()) {
      out.push_back(std::move(in->second));
      inputs_.erase(in);
    }
  for (auto& [when, id] : delayed_)
    if (auto in = inputs_.find(id); in != inputs_.end()) {
      out.push_back(std::move(in->second));
      inputs_.erase(in);
    }
  pending_.clear();
  delayed_.clear();
  return out;
}

size_t function_queue::inflight_count() const noexcept { return running_on_.size(); }

uint32_t function_queue::live_container_count() const noexcept {
  uint32_t n = 0;
  for (auto& [id, slot] : containers_)
    if (slot.state != slot_state::draining)
      ++n;
  return n;
}

uint32_t function_queue::booting_count() const noexcept {
  uint32_t n = 0;
  for (auto& [id, slot] : containers_)
    if (slot.state == slot_state::booting)
      ++n;
  return n;
}

std::vector<std::pair<clock::time_point, std::string>> function_queue::idle_containers() const {
  std::vector<std::pair<clock::time_point, std::string>> out;
  for (auto& [id, slot] : containers_)
    if (slot.state == slot_state::ready && slot.inflight.empty())
      out.emplace_back(slot.idle_since, id);
  return out;
}

std::vector<uint64_t> function_queue::inflight_on(const std::string& container_id) const {
  auto i = containers_.find(container_id);
  if (i == containers_.end())
    return {};
  return {i->second.inflight.begin(), i->second.inflight.end()};
}

} // namespace shoal::scheduler
