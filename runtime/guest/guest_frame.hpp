#pragma once
/// Typed frames of the guest protocol (docs/guest-protocol.md) and their strict codec.
///
/// On the wire a frame is `length:u32 type:u8 payload` with `length = 1 + len(payload)`. Encoding
/// is total; decoding validates every field before anything else sees it: a payload longer than
/// the cap, an unknown type, a field that does not fit, a `str` that is not UTF-8, an output status
/// outside 0..4 or bytes left over after the last field are all `errc::invalid_argument` with a
/// sentence naming the problem. The receiver then closes the connection.
///
/// No threads, no I/O, no CAF actors: `guest_hub` does the I/O.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <caf/expected.hpp>

#include "runtime/errc.hpp"

namespace shoal::guest {

/// The protocol version the guest announces in HELLO; the supervisor rejects any other.
inline constexpr uint32_t protocol_version = 1;

/// Default cap on a frame's payload (the type byte excluded): 64 MiB.
inline constexpr size_t default_max_payload_bytes = size_t{64} << 20;

/// Bytes before the payload: `length:u32 type:u8`.
inline constexpr size_t frame_header_bytes = 5;

/// The `type` byte. Values are part of the wire contract.
enum class frame_type : uint8_t {
  hello = 1,
  init = 2,
  ready = 3,
  inputs = 4,
  outputs = 5,
  cancel = 6,
  call = 7,
  reply = 8,
  shutdown = 9,
  fatal = 10,
};

/// "HELLO", "INIT", ... as the spec names them; "UNKNOWN(<n>)"-style text is never needed since
/// unknown types never decode.
std::string_view to_string(frame_type type) noexcept;

/// True for the frames only the guest sends (HELLO, READY, OUTPUTS, CALL, FATAL); the others
/// are sent only by the supervisor.
bool sent_by_guest(frame_type type) noexcept;

/// The `status` of one output record.
enum class output_status : uint8_t {
  /// `data` = cloudpickled return value.
  success = 0,
  /// `data` = cloudpickled exception, or empty if it does not pickle; `error` = the traceback.
  failure = 1,
  /// `data` = one yielded value; more records for the same input follow.
  item = 2,
  /// The generator finished; `data` empty.
  done = 3,
  /// The input was cancelled (after a CANCEL) and its result, if any, dropped.
  cancelled = 4,
};

/// HELLO (guest → supervisor): the first frame on every connection.
struct hello {
  uint32_t protocol = protocol_version;
  std::string python_version;       ///< "3.11.2"
  std::string cloudpickle_version;  ///< "2.2.0"
};

/// INIT (supervisor → guest): what to run and how many inputs at once.
struct init {
  std::string definition;  ///< the SDK's pickled definition; opaque here
  uint32_t max_inputs = 1;
};

/// READY (guest → supervisor): `@enter` hooks ran; inputs may flow.
struct ready {
  uint32_t max_inputs = 1;  ///< what the guest will run at once
};

/// One input of an INPUTS frame.
struct input {
  uint64_t id = 0;
  std::string args;  ///< cloudpickle of `(method_or_None, args, kwargs)`; opaque here
};

/// INPUTS (supervisor → guest).
struct inputs {
  std::vector<input> items;
};

/// One output record: of an OUTPUTS frame, and the body of a `function.call` REPLY.
struct output {
  uint64_t id = 0;
  output_status status = output_status::success;
  std::string data;
  std::string error;  ///< UTF-8; the formatted remote traceback for `failure`
};

/// OUTPUTS (guest → supervisor): everything that finished since the guest's previous frame.
struct outputs {
  std::vector<output> items;
};

/// CANCEL (supervisor → guest).
struct cancel {
  uint64_t input_id = 0;
};

/// CALL (guest → supervisor): a nested request from user code, e.g. "function.call".
struct call {
  uint64_t request_id = 0;
  std::string method;  ///< UTF-8
  std::string body;    ///< method-specific, same primitive encoding (guest_wire.hpp)
};

/// REPLY (supervisor → guest): the answer to the CALL with the same `request_id`.
struct reply {
  uint64_t request_id = 0;
  errc status = errc::none;  ///< any u8 decodes: a newer supervisor may send newer codes
  std::string body;
  std::string error;  ///< UTF-8; the message when `status != none`
};

/// SHUTDOWN (supervisor → guest): run `@exit` hooks and exit 0.
struct shutdown {};

/// FATAL (guest → supervisor): import or `@enter` failure; the guest exits 1 after sending it.
struct fatal {
  std::string error;  ///< UTF-8, with the traceback
};

/// One frame. The alternative's index + 1 is its `frame_type`.
using frame = std::variant<hello, init, ready, inputs, outputs, cancel, call, reply, shutdown,
                           fatal>;

frame_type type_of(const frame& f) noexcept;

/// The whole frame, header included, ready to write. Encoding does not check the payload cap:
/// a caller batching inputs keeps each frame's payload within the receiver's cap (the guest
/// uses the default) — `payload_size` says how big a frame will be.
std::string encode(const frame& f);

/// The payload size `encode(f)` produces (without the 5 header bytes), computed without encoding.
size_t payload_size(const frame& f) noexcept;

/// Decodes one payload of the given type byte; the strict rules of the file comment apply
/// (except the size cap, which `frame_decoder` checks from the header alone).
[[nodiscard]] caf::expected<frame> decode_payload(uint8_t type, std::string_view payload);

/// Splits a byte stream into frames. Feed it whatever arrived, then call `next()` until it
/// yields nullopt (a partial frame stays buffered).
///
/// An oversized length or unknown type is rejected as soon as the 5 header bytes arrive, before
/// any of the payload is buffered. After an error the decoder is poisoned: `next()` returns the
/// same error again. Not thread-safe.
class frame_decoder {
public:
  explicit frame_decoder(size_t max_payload_bytes = default_max_payload_bytes) noexcept
    : max_payload_bytes_(max_payload_bytes) {}

  /// Appends bytes; they are copied.
  void feed(const char* data, size_t size);

  /// The next complete frame, nullopt if more bytes are needed, or the error that poisoned it.
  [[nodiscard]] caf::expected<std::optional<frame>> next();

  /// Bytes fed but not yet returned as frames (a partial frame, when nonzero at end of stream).
  size_t buffered_bytes() const noexcept { return buffer_.size() - pos_; }

  size_t max_payload_bytes() const noexcept { return max_payload_bytes_; }

private:
  size_t max_payload_bytes_;
  std::string buffer_;
  size_t pos_ = 0;  // start of the first unconsumed byte in buffer_
  caf::error error_;
};

// Value equality, for tests and for callers that compare what they sent.
bool operator==(const hello& a, const hello& b) noexcept;
bool operator==(const init& a, const init& b) noexcept;
bool operator==(const ready& a, const ready& b) noexcept;
bool operator==(const input& a, const input& b) noexcept;
bool operator==(const inputs& a, const inputs& b) noexcept;
bool operator==(const output& a, const output& b) noexcept;
bool operator==(const outputs& a, const outputs& b) noexcept;
bool operator==(const cancel& a, const cancel& b) noexcept;
bool operator==(const call& a, const call& b) noexcept;
bool operator==(const reply& a, const reply& b) noexcept;
bool operator==(const shutdown& a, const shutdown& b) noexcept;
bool operator==(const fatal& a, const fatal& b) noexcept;

} // namespace shoal::guest
