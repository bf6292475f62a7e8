#include "runtime/guest/guest_frame.hpp"

#include <array>
#include <cassert>
#include <limits>
#include <type_traits>

#include "runtime/guest/guest_wire.hpp"

namespace shoal::guest {

namespace {

constexpr uint8_t first_type = 1;
constexpr uint8_t last_type = static_cast<uint8_t>(frame_type::fatal);
static_assert(std::variant_size_v<frame> == last_type);

constexpr std::array<std::string_view, last_type + 1> type_names = {
  "INVALID", "HELLO", "INIT",  "READY", "INPUTS",   "OUTPUTS",
  "CANCEL",  "CALL",  "REPLY", "SHUTDOWN", "FATAL",
};

// Fixed sizes of records, for payload_size and for rejecting absurd counts early.
constexpr size_t u32_bytes = 4;
constexpr size_t u64_bytes = 8;
constexpr size_t min_input_bytes = u64_bytes + u32_bytes;                 // id, args length
constexpr size_t min_output_bytes = u64_bytes + 1 + u32_bytes + u32_bytes; // id, status, 2 lengths

size_t bytes_field(const std::string& s) noexcept { return u32_bytes + s.size(); }

void write_payload(wire_writer& w, const hello& f) {
  w.u32(f.protocol).str(f.python_version).str(f.cloudpickle_version);
}
void write_payload(wire_writer& w, const init& f) { w.bytes(f.definition).u32(f.max_inputs); }
void write_payload(wire_writer& w, const ready& f) { w.u32(f.max_inputs); }
void write_payload(wire_writer& w, const inputs& f) {
  assert(f.items.size() <= std::numeric_limits<uint32_t>::max());
  w.u32(static_cast<uint32_t>(f.items.size()));
  for (auto& in : f.items)
    w.u64(in.id).bytes(in.args);
}
void write_payload(wire_writer& w, const outputs& f) {
  assert(f.items.size() <= std::numeric_limits<uint32_t>::max());
  w.u32(static_cast<uint32_t>(f.items.size()));
  for (auto& out : f.items)
    w.u64(out.id).u8(static_cast<uint8_t>(out.status)).bytes(out.data).str(out.error);
}
void write_payload(wire_writer& w, const cancel& f) { w.u64(f.input_id); }
void write_payload(wire_writer& w, const call& f) {
  w.u64(f.request_id).str(f.method).bytes(f.body);
}
void write_payload(wire_writer& w, const reply& f) {
  w.u64(f.request_id).u8(static_cast<uint8_t>(f.status)).bytes(f.body).str(f.error);
}
void write_payload(wire_writer&, const shutdown&) {}
void write_payload(wire_writer& w, const fatal& f) { w.str(f.error); }

size_t size_of(const hello& f) {
  return u32_bytes + bytes_field(f.python_version) + bytes_field(f.cloudpickle_version);
}
size_t size_of(const init& f) { return bytes_field(f.definition) + u32_bytes; }
size_t size_of(const ready&) { return u32_bytes; }
size_t size_of(const inputs& f) {
  size_t n = u32_bytes;
  for (auto& in : f.items)
    n += min_input_bytes + in.args.size();
  return n;
}
size_t size_of(const outputs& f) {
  size_t n = u32_bytes;
  for (auto& out : f.items)
    n += min_output_bytes + out.data.size() + out.error.size();
  return n;
}
size_t size_of(const cancel&) { return u64_bytes; }
size_t size_of(const call& f) { return u64_bytes + bytes_field(f.method) + bytes_field(f.body); }
size_t size_of(const reply& f) {
  return u64_bytes + 1 + bytes_field(f.body) + bytes_field(f.error);
}
size_t size_of(const shutdown&) { return 0; }
size_t size_of(const fatal& f) { return bytes_field(f.error); }

// A count whose records cannot possibly fit in what is left is rejected before any allocation.
uint32_t read_count(wire_reader& r, size_t min_record_bytes, const char* field) {
  uint32_t count = r.u32(field);
  if (!r.failed() && count > r.remaining() / min_record_bytes) {
    r.fail(std::string{"guest payload field '"} + field + "' is " + std::to_string(count)
           + " but only " + std::to_string(r.remaining()) + " bytes follow");
    return 0;
  }
  return count;
}

frame read_payload(frame_type type, wire_reader& r) {
  switch (type) {
    case frame_type::hello: {
      hello f;
      f.protocol = r.u32("protocol");
      f.python_version = r.str("python_version");
      f.cloudpickle_version = r.str("cloudpickle_version");
      return f;
    }
    case frame_type::init: {
      init f;
      f.definition = r.bytes("definition");
      f.max_inputs = r.u32("max_inputs");
      return f;
    }
    case frame_type::ready:
      return ready{r.u32("max_inputs")};
    case frame_type::inputs: {
      inputs f;
      uint32_t count = read_count(r, min_input_bytes, "count");
      f.items.reserve(count);
      for (uint32_t i = 0; i < count && !r.failed(); ++i) {
        input in;
        in.id = r.u64("input_id");
        in.args = r.bytes("args");
        f.items.push_back(std::move(in));
      }
      return f;
    }
    case frame_type::outputs: {
      outputs f;
      uint32_t count = read_count(r, min_output_bytes, "count");
      f.items.reserve(count);
      for (uint32_t i = 0; i < count && !r.failed(); ++i) {
        output out;
        out.id = r.u64("input_id");
        uint8_t status = r.u8("status");
        if (status > static_cast<uint8_t>(output_status::cancelled))
          r.fail("guest output status " + std::to_string(status)
                 + " is not one of 0 (success) .. 4 (cancelled)");
        out.status = static_cast<output_status>(status);
        out.data = r.bytes("data");
        out.error = r.str("error");
        f.items.push_back(std::move(out));
      }
      return f;
    }
    case frame_type::cancel:
      return cancel{r.u64("input_id")};
    case frame_type::call: {
      call f;
      f.request_id = r.u64("request_id");
      f.method = r.str("method");
      f.body = r.bytes("body");
      return f;
    }
    case frame_type::reply: {
      reply f;
      f.request_id = r.u64("request_id");
      f.status = static_cast<errc>(r.u8("status"));
      f.body = r.bytes("body");
      f.error = r.str("error");
      return f;
    }
    case frame_type::shutdown:
      return shutdown{};
    case frame_type::fatal:
      return fatal{r.str("error")};
  }
  return shutdown{}; // unreachable: callers validate the type first
}

bool known_type(uint8_t type) noexcept { return type >= first_type && type <= last_type; }

caf::error unknown_type_error(uint8_t type) {
  return make_error(errc::invalid_argument, "guest frame type " + std::to_string(type)
                                              + " is unknown (known: 1 HELLO .. 10 FATAL)");
}

} // namespace

std::string_view to_string(frame_type type) noexcept {
  auto i = static_cast<uint8_t>(type);
  return known_type(i) ? type_names[i] : type_names[0];
}

bool sent_by_guest(frame_type type) noexcept {
  switch (type) {
    case frame_type::hello:
    case frame_type::ready:
    case frame_type::outputs:
    case frame_type::call:
    case frame_type::fatal:
      return true;
    default:
      return false;
  }
}

frame_type type_of(const frame& f) noexcept {
  return static_cast<frame_type>(f.index() + 1);
}

size_t payload_size(const frame& f) noexcept {
  return std::visit([](const auto& x) { return size_of(x); }, f);
}

std::string encode(const frame& f) {
  size_t payload = payload_size(f);
  assert(payload < std::numeric_limits<uint32_t>::max());
  wire_writer w;
  w.u32(static_cast<uint32_t>(payload + 1)).u8(static_cast<uint8_t>(type_of(f)));
  std::visit([&w](const auto& x) { write_payload(w, x); }, f);
  assert(w.size() == frame_header_bytes + payload);
  return w.take();
}

caf::expected<frame> decode_payload(uint8_t type, std::string_view payload) {
  if (!known_type(type))
    return unknown_type_error(type);
  auto ft = static_cast<frame_type>(type);
  wire_reader r{payload};
  frame f = read_payload(ft, r);
  std::string what = std::string{to_string(ft)} + " payload";
  if (auto err = r.finish(what.c_str()))
    return err;
  return f;
}

void frame_decoder::feed(const char* data, size_t size) {
  if (error_)
    return; // poisoned: nothing more is looked at
  // Drop consumed bytes before growing, so a long stream does not accumulate them.
  if (pos_ > 0 && (pos_ == buffer_.size() || pos_ >= buffer_.size() / 2)) {
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  buffer_.append(data, size);
}

caf::expected<std::optional<frame>> frame_decoder::next() {
  if (error_)
    return error_;
  if (buffered_bytes() < frame_header_bytes)
    return std::optional<frame>{};
  wire_reader header{std::string_view{buffer_}.substr(pos_, frame_header_bytes)};
  uint32_t length = header.u32("length");
  uint8_t type = header.u8("type");
  if (length == 0) {
    error_ = make_error(errc::invalid_argument,
                        "guest frame has length 0 (a frame holds at least its type byte)");
    return error_;
  }
  size_t payload_bytes = length - 1;
  if (payload_bytes > max_payload_bytes_) {
    error_ = make_error(errc::invalid_argument,
                        "guest frame of " + std::to_string(payload_bytes) + " bytes exceeds the "
                          + std::to_string(max_payload_bytes_) + "-byte limit");
    return error_;
  }
  if (!known_type(type)) {
    error_ = unknown_type_error(type);
    return error_;
  }
  if (buffered_bytes() < frame_header_bytes + payload_bytes)
    return std::optional<frame>{};
  auto payload = std::string_view{buffer_}.substr(pos_ + frame_header_bytes, payload_bytes);
  auto decoded = decode_payload(type, payload);
  if (!decoded) {
    error_ = decoded.error();
    return error_;
  }
  pos_ += frame_header_bytes + payload_bytes;
  if (pos_ == buffer_.size()) {
    buffer_.clear();
    pos_ = 0;
  }
  return std::optional<frame>{std::move(*decoded)};
}

bool operator==(const hello& a, const hello& b) noexcept {
  return a.protocol == b.protocol && a.python_version == b.python_version
         && a.cloudpickle_version == b.cloudpickle_version;
}
bool operator==(const init& a, const init& b) noexcept {
  return a.definition == b.definition && a.max_inputs == b.max_inputs;
}
bool operator==(const ready& a, const ready& b) noexcept { return a.max_inputs == b.max_inputs; }
bool operator==(const input& a, const input& b) noexcept {
  return a.id == b.id && a.args == b.args;
}
bool operator==(const inputs& a, const inputs& b) noexcept { return a.items == b.items; }
bool operator==(const output& a, const output& b) noexcept {
  return a.id == b.id && a.status == b.status && a.data == b.data && a.error == b.error;
}
bool operator==(const outputs& a, const outputs& b) noexcept { return a.items == b.items; }
bool operator==(const cancel& a, const cancel& b) noexcept { return a.input_id == b.input_id; }
bool operator==(const call& a, const call& b) noexcept {
  return a.request_id == b.request_id && a.method == b.method && a.body == b.body;
}
bool operator==(const reply& a, const reply& b) noexcept {
  return a.request_id == b.request_id && a.status == b.status && a.body == b.body
         && a.error == b.error;
}
bool operator==(const shutdown&, const shutdown&) noexcept { return true; }
bool operator==(const fatal& a, const fatal& b) noexcept { return a.error == b.error; }

} // namespace shoal::guest
