#pragma once
/// Helpers shared by the fs tests: opening a store, writing files, reading them back.

#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

#include "fs/chunk_store.hpp"
#include "runtime/errc.hpp"

namespace shoal::test {

inline std::unique_ptr<fs::chunk_store> open_store(const std::string& dir,
                                                   fs::chunk_store_options options = {}) {
  auto s = fs::chunk_store::open(dir, options);
  if (!s)
    FAIL("chunk_store::open(" << dir << ") failed: " << shoal::message_of(s.error()));
  return std::move(*s);
}

/// `size` pseudo-random bytes from `seed` (distinct seeds: distinct chunks).
inline std::string random_bytes(size_t size, uint32_t seed) {
  std::mt19937_64 gen{seed};
  std::string out(size, '\0');
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t v = gen();
    std::memcpy(out.data() + i, &v, 8);
  }
  for (; i < size; ++i)
    out[i] = static_cast<char>(gen());
  return out;
}

inline void write_file(const std::string& path, const std::string& data) {
  std::ofstream out{path, std::ios::binary | std::ios::trunc};
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  REQUIRE(out.good());
}

inline std::string read_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace shoal::test
