#pragma once
/// What crash_test.cpp (the parent) and crash_child.cpp (the process it kills) agree on.
///
/// The child is started as `storage_crash_child <db dir> <cycle> <ack fd>`. It writes the keys
/// seq_key(cycle_base(cycle) + i), i = 0, 1, 2, ..., through the writer actor with
/// `crash_clients` requests in flight, and writes each acknowledged sequence number to `ack fd`
/// as 8 native-endian bytes (one write(2) each, so atomic on a pipe). It runs until killed.
/// Exit codes when it stops on its own: 2 bad arguments or store::open failed, 4 writing an ack
/// failed, 5 a write request failed, 6 an exception.

#include <cstdint>
#include <string>

#include "storage/key.hpp"

namespace shoal::storage::test {

/// Requests each child keeps in flight: one per client actor.
inline constexpr uint64_t crash_clients = 4;

inline uint64_t cycle_base(int cycle) {
  return static_cast<uint64_t>(cycle) << 32;
}

inline std::string seq_key(uint64_t seq) {
  return key{}.str("seq").u64(seq).bytes();
}

inline std::string value_for(uint64_t seq) {
  return "value-" + std::to_string(seq) + "-" + std::string(48, 'x');
}

} // namespace shoal::storage::test
