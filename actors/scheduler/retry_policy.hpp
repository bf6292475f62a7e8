#pragma once
/// Retry backoff (pure). `retries=N` in the SDK is N retries with a fixed 1 s delay;
/// `shoal.Retries(max_retries, backoff_coefficient, initial_delay, max_delay)` is exponential.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>

namespace shoal::scheduler {

struct retry_policy {
  uint32_t max_retries = 0;
  std::chrono::milliseconds initial_delay{1000};
  double backoff_coefficient = 1.0;
  std::chrono::milliseconds max_delay{60000};

  /// Whether an input that just failed its `attempt`-th try (1-based) may run again.
  bool allows_retry(uint32_t attempt) const noexcept { return attempt <= max_retries; }

  /// The wait before attempt `next_attempt` (≥ 2): initial × coefficient^(next_attempt − 2),
  /// capped at max_delay.
  std::chrono::milliseconds delay_before(uint32_t next_attempt) const noexcept {
    if (next_attempt < 2)
      return std::chrono::milliseconds{0};
    double factor = std::pow(std::max(backoff_coefficient, 1.0), next_attempt - 2);
    double ms = static_cast<double>(initial_delay.count()) * factor;
    double cap = static_cast<double>(max_delay.count());
    return std::chrono::milliseconds{static_cast<int64_t>(std::min(ms, cap))};
  }
};

} // namespace shoal::scheduler
