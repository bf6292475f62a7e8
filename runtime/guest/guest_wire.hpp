#pragma once
/// The primitive encoding of the guest protocol (docs/guest-protocol.md): big-endian `u8`/`u32`/
/// `u64`, `bytes := n:u32 data[n]`, `str := bytes` holding UTF-8. Frames (`guest_frame.hpp`) and
/// the bodies of CALL/REPLY (`function.call`, ...) are both written with it.
///
///     wire_writer w;
///     w.str(function_id).bytes(args);
///     send(encode(call{id, "function.call", w.take()}));
///
///     wire_reader r{reply.body};
///     auto function_id = r.str("function_id");
///     if (auto err = r.finish("function.lookup reply")) ...   // rejects trailing bytes
///
/// A reader never throws: the first malformed field records an error (invalid_argument, naming
/// the field) and every later read returns a zero value, so a parser reads all fields and checks
/// `finish()` once.

#include <cstdint>
#include <string>
#include <string_view>

#include <caf/error.hpp>

namespace shoal::guest {

/// Appends primitives to a byte string.
class wire_writer {
public:
  wire_writer& u8(uint8_t value);
  wire_writer& u32(uint32_t value);
  wire_writer& u64(uint64_t value);
  /// Length-prefixed bytes. `data` must be shorter than 4 GiB (a bug otherwise: frames are capped
  /// far below that).
  wire_writer& bytes(std::string_view data);
  /// Same encoding as `bytes`; the caller promises UTF-8 (the receiver validates it).
  wire_writer& str(std::string_view text) { return bytes(text); }

  const std::string& data() const noexcept { return out_; }
  std::string take() noexcept { return std::move(out_); }
  size_t size() const noexcept { return out_.size(); }

private:
  std::string out_;
};

/// Reads primitives from a view; the view's data must outlive the reader.
class wire_reader {
public:
  explicit wire_reader(std::string_view in) noexcept : in_(in) {}

  /// Each read names its field, so the error says which one was malformed.
  uint8_t u8(const char* field);
  uint32_t u32(const char* field);
  uint64_t u64(const char* field);
  std::string bytes(const char* field);
  /// Like `bytes`, and the content must be valid UTF-8.
  std::string str(const char* field);

  /// Bytes not read yet.
  size_t remaining() const noexcept { return in_.size() - pos_; }
  /// True once a read failed.
  bool failed() const noexcept { return static_cast<bool>(error_); }
  /// Records an error found by the caller (e.g. a value out of range) unless one is recorded.
  void fail(std::string message);

  /// The first error, or one for trailing bytes; `what` names the record ("INPUTS payload").
  [[nodiscard]] caf::error finish(const char* what);

private:
  bool take(size_t n, const char* field);

  std::string_view in_;
  size_t pos_ = 0;
  caf::error error_;
};

/// True if `text` is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
bool valid_utf8(std::string_view text) noexcept;

} // namespace shoal::guest
