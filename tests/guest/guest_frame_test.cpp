#include "runtime/guest/guest_frame.hpp"

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "runtime/errc.hpp"
#include "runtime/guest/guest_wire.hpp"

using namespace shoal::guest;
using shoal::errc;

namespace {

std::vector<frame> every_frame() {
  std::string all_bytes;
  for (int i = 0; i < 256; ++i)
    all_bytes.push_back(static_cast<char>(i));
  return {
    hello{1, "3.11.2", "2.2.0"},
    init{std::string("\0definition\xff", 12), 8},
    ready{3},
    inputs{{{1, "a"}, {UINT64_MAX, ""}, {5, all_bytes}}},
    inputs{},
    outputs{{{1, output_status::success, "value", ""},
             {2, output_status::failure, "", "Traceback ...\nValueError: \xc3\xa9"},
             {3, output_status::item, "x", ""},
             {3, output_status::done, "", ""},
             {4, output_status::cancelled, "", ""}}},
    cancel{42},
    call{9, "function.call", std::string("\x01\x02", 2)},
    reply{9, errc::none, "body", ""},
    reply{10, static_cast<errc>(200), "", "a code from a newer supervisor"},
    shutdown{},
    fatal{"Traceback (most recent call last, in container ct-1):\nImportError: x"},
  };
}

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

/// A frame with a hand-made header and payload.
std::string raw_frame(uint8_t type, const std::string& payload) {
  wire_writer w;
  w.u32(static_cast<uint32_t>(payload.size() + 1)).u8(type);
  return w.take() + payload;
}

/// Every frame `data` holds; fails the test on an error.
std::vector<frame> decode_all(const std::string& data, frame_decoder& d) {
  d.feed(data.data(), data.size());
  std::vector<frame> out;
  for (;;) {
    auto next = d.next();
    REQUIRE(next);
    if (!*next)
      return out;
    out.push_back(std::move(**next));
  }
}

/// The error decoding `data` produces (the test fails if there is none).
std::string decode_error(const std::string& data, size_t cap = default_max_payload_bytes) {
  frame_decoder d{cap};
  d.feed(data.data(), data.size());
  for (;;) {
    auto next = d.next();
    if (!next) {
      CHECK(shoal::code_of(next.error()) == errc::invalid_argument);
      return shoal::message_of(next.error());
    }
    if (!*next)
      FAIL("decoded without an error");
  }
}

} // namespace

TEST_CASE("every guest frame type survives an encode/decode round trip") {
  for (auto& f : every_frame()) {
    INFO(to_string(type_of(f)));
    auto bytes = encode(f);
    CHECK(bytes.size() == frame_header_bytes + payload_size(f));
    frame_decoder d;
    auto got = decode_all(bytes, d);
    REQUIRE(got.size() == 1);
    CHECK(got[0] == f);
    CHECK(d.buffered_bytes() == 0);
  }
}

TEST_CASE("guest frame encodings match the Python codec byte for byte") {
  // The same bytes tests/guest_py/test_protocol.py checks.
  CHECK(hex(encode(hello{1, "3.11.2", "2.2.0"}))
        == "00000018010000000100000006332e31312e3200000005322e322e30");
  CHECK(hex(encode(outputs{{{7, output_status::failure, "\x80", "\xc3\xa9"}}}))
        == "000000190500000001000000000000000701000000018000000002c3a9");
  CHECK(hex(encode(reply{0x0102030405060708, errc::not_found, "ab", "nope"}))
        == "0000001808010203040506070802000000026162000000046e6f7065");
  CHECK(hex(encode(shutdown{})) == "0000000109");
}

TEST_CASE("a guest frame over the cap is rejected from its header alone") {
  wire_writer w;
  w.u32(80'000'001).u8(static_cast<uint8_t>(frame_type::inputs)); // no payload sent at all
  CHECK(decode_error(w.take())
        == "guest frame of 80000000 bytes exceeds the 67108864-byte limit");
}

TEST_CASE("the guest frame cap is configurable and inclusive") {
  auto ok = encode(fatal{"abcdef"}); // payload of 10 bytes
  frame_decoder d{10};
  CHECK(decode_all(ok, d) == std::vector<frame>{fatal{"abcdef"}});
  CHECK(decode_error(ok, 9) == "guest frame of 10 bytes exceeds the 9-byte limit");
}

TEST_CASE("an unknown guest frame type is rejected") {
  for (uint8_t t : {0, 11, 255}) {
    CHECK(decode_error(raw_frame(t, ""))
          == "guest frame type " + std::to_string(t) + " is unknown (known: 1 HELLO .. 10 FATAL)");
    CHECK_FALSE(decode_payload(t, ""));
  }
}

TEST_CASE("a guest frame of length zero is rejected") {
  CHECK(decode_error(std::string("\0\0\0\0\x05", 5)).find("length 0") != std::string::npos);
}

TEST_CASE("a truncated guest payload is rejected at every cut") {
  for (auto& f : every_frame()) {
    auto payload = encode(f).substr(frame_header_bytes);
    auto type = static_cast<uint8_t>(type_of(f));
    for (size_t cut = 0; cut < payload.size(); ++cut) {
      INFO(to_string(type_of(f)) << " cut at " << cut);
      auto got = decode_payload(type, std::string_view{payload}.substr(0, cut));
      REQUIRE_FALSE(got);
      auto msg = shoal::message_of(got.error());
      CHECK((msg.find("ends inside field") != std::string::npos
             || msg.find("bytes follow") != std::string::npos));
    }
  }
}

TEST_CASE("trailing bytes after a guest payload's last field are rejected") {
  for (auto& f : every_frame()) {
    INFO(to_string(type_of(f)));
    auto payload = encode(f).substr(frame_header_bytes) + std::string(1, '\0');
    CHECK(decode_error(raw_frame(static_cast<uint8_t>(type_of(f)), payload))
          == std::string{to_string(type_of(f))} + " payload has 1 trailing bytes");
  }
}

TEST_CASE("a guest string that is not UTF-8 is rejected") {
  wire_writer w;
  w.bytes("\xc3\x28");
  CHECK(decode_error(raw_frame(static_cast<uint8_t>(frame_type::fatal), w.take()))
        == "guest payload field 'error' is not valid UTF-8");

  CHECK(valid_utf8(""));
  CHECK(valid_utf8("plain ascii"));
  CHECK(valid_utf8("\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80")); // é € 😀
  CHECK_FALSE(valid_utf8("\x80"));             // lone continuation byte
  CHECK_FALSE(valid_utf8("\xc0\xaf"));         // overlong '/'
  CHECK_FALSE(valid_utf8("\xed\xa0\x80"));     // surrogate U+D800
  CHECK_FALSE(valid_utf8("\xf4\x90\x80\x80")); // above U+10FFFF
  CHECK_FALSE(valid_utf8("\xe2\x82"));         // cut short
}

TEST_CASE("a guest output status outside 0 to 4 is rejected") {
  wire_writer w;
  w.u32(1).u64(7).u8(5).u32(0).u32(0);
  CHECK(decode_error(raw_frame(static_cast<uint8_t>(frame_type::outputs), w.take()))
        == "guest output status 5 is not one of 0 (success) .. 4 (cancelled)");
}

TEST_CASE("a guest record count larger than the payload can hold is rejected") {
  wire_writer w;
  w.u32(0xFFFFFFFF);
  CHECK(decode_error(raw_frame(static_cast<uint8_t>(frame_type::inputs), w.take()))
        == "guest payload field 'count' is 4294967295 but only 0 bytes follow");
}

TEST_CASE("a guest frame decoder stays poisoned after an error") {
  frame_decoder d;
  auto bad = raw_frame(99, "");
  d.feed(bad.data(), bad.size());
  CHECK_FALSE(d.next());
  auto good = encode(shutdown{});
  d.feed(good.data(), good.size());
  auto again = d.next();
  REQUIRE_FALSE(again);
  CHECK(shoal::message_of(again.error()).find("type 99") != std::string::npos);
}

TEST_CASE("the guest frame decoder handles frames split at every byte boundary") {
  auto frames = every_frame();
  std::string stream;
  for (auto& f : frames)
    stream += encode(f);
  for (size_t split = 0; split <= stream.size(); ++split) {
    INFO("split at " << split);
    frame_decoder d;
    std::vector<frame> got;
    for (auto part : {stream.substr(0, split), stream.substr(split)}) {
      d.feed(part.data(), part.size());
      for (;;) {
        auto next = d.next();
        REQUIRE(next);
        if (!*next)
          break;
        got.push_back(std::move(**next));
      }
    }
    REQUIRE(got == frames);
  }
  // And one byte at a time.
  frame_decoder d;
  std::vector<frame> got;
  for (char c : stream) {
    d.feed(&c, 1);
    for (;;) {
      auto next = d.next();
      REQUIRE(next);
      if (!*next)
        break;
      got.push_back(std::move(**next));
    }
  }
  CHECK(got == frames);
}

TEST_CASE("many guest frames in one feed come out in order") {
  std::vector<frame> frames;
  std::string stream;
  for (uint64_t i = 0; i < 10'000; ++i) {
    frames.push_back(cancel{i});
    stream += encode(frames.back());
  }
  frame_decoder d;
  CHECK(decode_all(stream, d) == frames);
  CHECK(d.buffered_bytes() == 0);
}

TEST_CASE("only HELLO, READY, OUTPUTS, CALL and FATAL are sent by the guest") {
  for (auto& f : every_frame()) {
    auto t = type_of(f);
    bool guest = t == frame_type::hello || t == frame_type::ready || t == frame_type::outputs
                 || t == frame_type::call || t == frame_type::fatal;
    CHECK(sent_by_guest(t) == guest);
  }
}

TEST_CASE("call bodies use the same strict wire reader") {
  wire_writer w;
  w.str("fu-1").bytes("args").u64(5);
  auto body = w.take();
  wire_reader r{body};
  CHECK(r.str("function_id") == "fu-1");
  CHECK(r.bytes("args") == "args");
  CHECK(r.u64("timeout_ms") == 5);
  CHECK_FALSE(r.finish("function.call body"));

  auto longer = body + "!";
  wire_reader r2{longer};
  r2.str("function_id");
  r2.bytes("args");
  r2.u64("timeout_ms");
  CHECK(shoal::message_of(r2.finish("function.call body"))
        == "function.call body has 1 trailing bytes");
}
