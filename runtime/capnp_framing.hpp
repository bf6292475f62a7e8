#pragma once
/// Cap'n Proto's stream framing, appended to a byte buffer: (segment count - 1), each segment's
/// size in words, padding to a word, then the segments. What `capnp::writeMessage` puts on a
/// stream, for code that batches messages into one buffer of its own (sync_rpc, channel_vat).

#include <cstdint>
#include <cstring>
#include <vector>

#include <capnp/message.h>

namespace shoal {

inline void append_framed(std::vector<uint8_t>& out, capnp::MessageBuilder& message) {
  auto segments = message.getSegmentsForOutput();
  size_t table_words = (segments.size() + 2) / 2;
  size_t total = table_words * sizeof(capnp::word);
  for (auto s : segments)
    total += s.size() * sizeof(capnp::word);
  size_t at = out.size();
  out.resize(at + total);
  auto* table = reinterpret_cast<uint32_t*>(out.data() + at);
  table[0] = static_cast<uint32_t>(segments.size() - 1);
  for (size_t i = 0; i < segments.size(); ++i)
    table[i + 1] = static_cast<uint32_t>(segments[i].size());
  if (segments.size() % 2 == 0)
    table[segments.size() + 1] = 0;
  at += table_words * sizeof(capnp::word);
  for (auto s : segments) {
    std::memcpy(out.data() + at, s.begin(), s.size() * sizeof(capnp::word));
    at += s.size() * sizeof(capnp::word);
  }
}

} // namespace shoal
