#pragma once
/// Typed, order-preserving keys. A key is a sequence of components; the byte encoding sorts the
/// same way the component tuples do, and every key built from a prefix of components starts with
/// that prefix's encoding, so `store::scan(table, key{}.str("app").str(env))` visits exactly the
/// keys that begin with those two components.
///
/// Encoding: a string component is its bytes with 0x00 escaped as 0x00 0xFF, then 0x00 0x01;
/// an unsigned integer is 8 bytes big-endian. Components carry no type tag: a table's key layout
/// is fixed by the code that owns the table, documented beside it.

#include <cstdint>
#include <string>
#include <string_view>

namespace shoal::storage {

class key {
public:
  key() = default;

  key& str(std::string_view component);
  key& u64(uint64_t component);

  /// The encoded bytes.
  const std::string& bytes() const noexcept { return bytes_; }

  /// Decoding, for scans: reads components in order from `encoded`.
  class reader {
  public:
    explicit reader(std::string_view encoded) : rest_(encoded) {}
    /// False when the next component is missing or malformed; then neither the reader nor `out`
    /// changes.
    [[nodiscard]] bool str(std::string& out);
    [[nodiscard]] bool u64(uint64_t& out);
    bool done() const noexcept { return rest_.empty(); }

  private:
    std::string_view rest_;
  };

private:
  std::string bytes_;
};

} // namespace shoal::storage
