#include "runtime/guest/guest_wire.hpp"

#include <cassert>
#include <cstring>
#include <limits>

#include "runtime/errc.hpp"

namespace shoal::guest {

wire_writer& wire_writer::u8(uint8_t value) {
  out_.push_back(static_cast<char>(value));
  return *this;
}

wire_writer& wire_writer::u32(uint32_t value) {
  char buf[4] = {static_cast<char>(value >> 24), static_cast<char>(value >> 16),
                 static_cast<char>(value >> 8), static_cast<char>(value)};
  out_.append(buf, sizeof buf);
  return *this;
}

wire_writer& wire_writer::u64(uint64_t value) {
  u32(static_cast<uint32_t>(value >> 32));
  return u32(static_cast<uint32_t>(value));
}

wire_writer& wire_writer::bytes(std::string_view data) {
  assert(data.size() <= std::numeric_limits<uint32_t>::max());
  u32(static_cast<uint32_t>(data.size()));
  out_.append(data.data(), data.size());
  return *this;
}

void wire_reader::fail(std::string message) {
  if (!error_)
    error_ = make_error(errc::invalid_argument, std::move(message));
}

bool wire_reader::take(size_t n, const char* field) {
  if (error_)
    return false;
  if (remaining() < n) {
    fail(std::string{"guest payload ends inside field '"} + field + "' (" + std::to_string(n)
         + " bytes needed, " + std::to_string(remaining()) + " left)");
    return false;
  }
  return true;
}

uint8_t wire_reader::u8(const char* field) {
  if (!take(1, field))
    return 0;
  return static_cast<uint8_t>(in_[pos_++]);
}

uint32_t wire_reader::u32(const char* field) {
  if (!take(4, field))
    return 0;
  auto p = reinterpret_cast<const unsigned char*>(in_.data() + pos_);
  pos_ += 4;
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

uint64_t wire_reader::u64(const char* field) {
  uint64_t hi = u32(field);
  uint64_t lo = u32(field);
  return (hi << 32) | lo;
}

std::string wire_reader::bytes(const char* field) {
  uint32_t n = u32(field);
  if (!take(n, field))
    return {};
  std::string out{in_.substr(pos_, n)};
  pos_ += n;
  return out;
}

std::string wire_reader::str(const char* field) {
  auto out = bytes(field);
  if (!error_ && !valid_utf8(out)) {
    fail(std::string{"guest payload field '"} + field + "' is not valid UTF-8");
    return {};
  }
  return out;
}

caf::error wire_reader::finish(const char* what) {
  if (error_)
    return error_;
  if (remaining() != 0)
    return make_error(errc::invalid_argument, std::string{what} + " has "
                                                + std::to_string(remaining())
                                                + " trailing bytes");
  return {};
}

bool valid_utf8(std::string_view text) noexcept {
  auto s = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len)
      return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    static constexpr uint32_t min_of_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_of_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

} // namespace shoal::guest
