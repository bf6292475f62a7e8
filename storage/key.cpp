#include "storage/key.hpp"

namespace shoal::storage {

namespace {

// String components: 0x00 inside the component is escaped as 0x00 0xFF; the component ends with
// 0x00 0x01. Since 0x01 < 0xFF, a component sorts before every longer component it prefixes,
// and the terminator keeps ("a", "b") apart from ("ab").
constexpr char escape_byte = '\x00';
constexpr char escaped_nul = '\xFF';
constexpr char terminator = '\x01';

constexpr size_t u64_size = 8;

} // namespace

key& key::str(std::string_view component) {
  bytes_.reserve(bytes_.size() + component.size() + 2);
  for (char c : component) {
    bytes_.push_back(c);
    if (c == escape_byte)
      bytes_.push_back(escaped_nul);
  }
  bytes_.push_back(escape_byte);
  bytes_.push_back(terminator);
  return *this;
}

key& key::u64(uint64_t component) {
  for (int shift = 56; shift >= 0; shift -= 8)
    bytes_.push_back(static_cast<char>((component >> shift) & 0xFF));
  return *this;
}

bool key::reader::str(std::string& out) {
  std::string decoded;
  for (size_t i = 0; i < rest_.size(); ++i) {
    char c = rest_[i];
    if (c != escape_byte) {
      decoded.push_back(c);
      continue;
    }
    if (i + 1 == rest_.size())
      return false; // 0x00 as the last byte: neither an escape nor a terminator
    char next = rest_[i + 1];
    if (next == terminator) {
      rest_.remove_prefix(i + 2);
      out = std::move(decoded);
      return true;
    }
    if (next != escaped_nul)
      return false;
    decoded.push_back(escape_byte);
    ++i;
  }
  return false; // no terminator
}

bool key::reader::u64(uint64_t& out) {
  if (rest_.size() < u64_size)
    return false;
  uint64_t value = 0;
  for (size_t i = 0; i < u64_size; ++i)
    value = (value << 8) | static_cast<uint8_t>(rest_[i]);
  rest_.remove_prefix(u64_size);
  out = value;
  return true;
}

} // namespace shoal::storage
