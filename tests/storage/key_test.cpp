#include "storage/key.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

using shoal::storage::key;
using namespace std::string_literals;

namespace {

/// Every string of length 0..3 over an alphabet holding the bytes that matter to the encoding.
std::vector<std::string> small_strings() {
  const std::string alphabet = "\x00\x01\xFF"s + "a";
  std::vector<std::string> out{""};
  size_t begin = 0;
  for (int len = 1; len <= 3; ++len) {
    size_t end = out.size();
    for (size_t i = begin; i < end; ++i)
      for (char c : alphabet)
        out.push_back(out[i] + c);
    begin = end;
  }
  return out;
}

/// Compares strings as unsigned bytes, the way RocksDB's default comparator does.
bool bytes_less(const std::string& a, const std::string& b) {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(),
                                      [](char x, char y) {
                                        return static_cast<uint8_t>(x) < static_cast<uint8_t>(y);
                                      });
}

bool is_prefix(const std::string& prefix, const std::string& s) {
  return s.compare(0, prefix.size(), prefix) == 0 && s.size() >= prefix.size();
}

} // namespace

TEST_CASE("string keys sort like their components, including embedded NUL bytes and prefixes") {
  auto enc = [](const std::string& s) { return key{}.str(s).bytes(); };
  CHECK(bytes_less(enc("a"), enc("a\0"s)));
  CHECK(bytes_less(enc("a\0"s), enc("a\0\0"s)));
  CHECK(bytes_less(enc("a\0\0"s), enc("a\x01"s)));
  CHECK(bytes_less(enc("a\x01"s), enc("ab")));
  CHECK(bytes_less(enc(""), enc("\0"s)));
  CHECK(bytes_less(enc("ab"), enc("b")));
  CHECK(bytes_less(enc("\xFF"s), enc("\xFF\xFF"s)));
  CHECK(enc("a\0b"s) == "a\x00\xFF"s + "b\x00\x01"s);
}

TEST_CASE("two-component keys sort exactly like the component pairs, byte for byte") {
  auto strings = small_strings();
  REQUIRE(strings.size() == 85);
  std::vector<std::pair<std::string, std::string>> tuples;
  for (const auto& a : strings)
    for (const auto& b : strings)
      tuples.emplace_back(a, b);
  auto encoded = [](const std::pair<std::string, std::string>& t) {
    return key{}.str(t.first).str(t.second).bytes();
  };

  auto by_tuple = tuples;
  std::sort(by_tuple.begin(), by_tuple.end(), [](const auto& x, const auto& y) {
    return bytes_less(x.first, y.first) || (x.first == y.first && bytes_less(x.second, y.second));
  });
  auto by_bytes = tuples;
  std::sort(by_bytes.begin(), by_bytes.end(), [&](const auto& x, const auto& y) {
    return bytes_less(encoded(x), encoded(y));
  });
  REQUIRE(by_tuple == by_bytes);

  // Distinct tuples never share an encoding.
  std::vector<std::string> all;
  for (const auto& t : tuples)
    all.push_back(encoded(t));
  std::sort(all.begin(), all.end());
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());
}

TEST_CASE("unsigned integers encode as 8 big-endian bytes and sort numerically") {
  CHECK(key{}.u64(0x0102030405060708).bytes() == "\x01\x02\x03\x04\x05\x06\x07\x08"s);
  CHECK(key{}.u64(0).bytes() == std::string(8, '\0'));
  const std::vector<uint64_t> ascending = {
    0, 1, 255, 256, 65535, 1ull << 32, (1ull << 56) - 1, 1ull << 56,
    std::numeric_limits<uint64_t>::max() - 1, std::numeric_limits<uint64_t>::max()};
  for (size_t i = 1; i < ascending.size(); ++i) {
    INFO(ascending[i - 1] << " < " << ascending[i]);
    CHECK(bytes_less(key{}.u64(ascending[i - 1]).bytes(), key{}.u64(ascending[i]).bytes()));
    CHECK(bytes_less(key{}.str("x").u64(ascending[i - 1]).bytes(),
                     key{}.str("x").u64(ascending[i]).bytes()));
  }
}

TEST_CASE("keys with a common prefix of components scan together in component order") {
  auto prefix = key{}.str("app").str("env");
  auto child = key{prefix}.u64(7);
  auto grandchild = key{prefix}.str("fn").u64(1);
  CHECK(is_prefix(prefix.bytes(), child.bytes()));
  CHECK(is_prefix(prefix.bytes(), grandchild.bytes()));
  // A component that merely starts with the prefix's last component is not under the prefix.
  CHECK_FALSE(is_prefix(prefix.bytes(), key{}.str("app").str("env2").bytes()));
  CHECK_FALSE(is_prefix(prefix.bytes(), key{}.str("app").str("env\0"s).bytes()));
  CHECK_FALSE(is_prefix(key{}.str("ap").bytes(), key{}.str("app").bytes()));
  // Every key under ("app", "env") sorts between ("app", "en") and ("app", "env2") keys.
  CHECK(bytes_less(key{}.str("app").str("en").u64(99).bytes(), child.bytes()));
  CHECK(bytes_less(grandchild.bytes(), key{}.str("app").str("env2").bytes()));
}

TEST_CASE("a reader returns the components a key was built from, in order") {
  const std::string nul_heavy = "\0\0x\0\xFF\x01"s;
  auto k = key{}.str("calls").u64(42).str("").str(nul_heavy).u64(UINT64_MAX);
  key::reader r{k.bytes()};
  std::string s;
  uint64_t n = 0;
  REQUIRE(r.str(s));
  CHECK(s == "calls");
  REQUIRE(r.u64(n));
  CHECK(n == 42);
  REQUIRE(r.str(s));
  CHECK(s.empty());
  REQUIRE(r.str(s));
  CHECK(s == nul_heavy);
  REQUIRE_FALSE(r.done());
  REQUIRE(r.u64(n));
  CHECK(n == UINT64_MAX);
  CHECK(r.done());
  CHECK_FALSE(r.str(s));
  CHECK_FALSE(r.u64(n));
}

TEST_CASE("a reader rejects truncated and malformed components and leaves its position alone") {
  std::string s = "unchanged";
  uint64_t n = 5;

  SECTION("a string without its terminator") {
    key::reader r{"abc"};
    CHECK_FALSE(r.str(s));
    CHECK_FALSE(r.done());
  }
  SECTION("a string cut inside its terminator") {
    key::reader r{"abc\0"s};
    CHECK_FALSE(r.str(s));
  }
  SECTION("a NUL followed by a byte that is neither escape nor terminator") {
    key::reader r{"ab\0\x02"s + "\0\x01"s};
    CHECK_FALSE(r.str(s));
  }
  SECTION("an integer shorter than 8 bytes") {
    key::reader r{std::string(7, '\x01')};
    CHECK_FALSE(r.u64(n));
    CHECK_FALSE(r.done());
  }
  SECTION("an empty input") {
    key::reader r{""};
    CHECK(r.done());
    CHECK_FALSE(r.str(s));
    CHECK_FALSE(r.u64(n));
  }
  CHECK(s == "unchanged");
  CHECK(n == 5);
}

TEST_CASE("a failed read consumes nothing, so the same bytes can be read as another type") {
  key::reader r{"abcdefgh"};
  std::string s;
  CHECK_FALSE(r.str(s)); // no terminator
  uint64_t n = 0;
  REQUIRE(r.u64(n));
  CHECK(n == 0x6162636465666768);
  CHECK(r.done());
}
