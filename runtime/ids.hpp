#pragma once
/// Random object ids: `<prefix>-<hex>` ("fc-3f2a9c01d4e5b6a7"). 64 random bits from the kernel.

#include <cstdint>
#include <string>
#include <sys/random.h>

namespace shoal {

inline std::string make_id(const char* prefix) {
  uint64_t bits = 0;
  while (getrandom(&bits, sizeof bits, 0) != static_cast<ssize_t>(sizeof bits)) {
  }
  static const char digits[] = "0123456789abcdef";
  std::string out{prefix};
  out.push_back('-');
  for (int shift = 60; shift >= 0; shift -= 4)
    out.push_back(digits[(bits >> shift) & 0xf]);
  return out;
}

} // namespace shoal
