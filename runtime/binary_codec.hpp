#pragma once
/// Binary encoding of inspectable types for values stored in RocksDB. A record is one version
/// byte followed by CAF's binary serialization of the value; readers refuse other versions and
/// trailing bytes. Fields may only be appended to a persisted type together with a version bump
/// and a reader for the old version (docs/schema-conventions.md, "State on disk").

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>

#include "runtime/errc.hpp"

namespace shoal {

template <class T>
std::string encode_record(uint8_t version, T value) {
  std::vector<char> buf;
  caf::binary_serializer sink{nullptr, buf};
  if (auto err = sink(value))
    throw std::logic_error("encoding a record failed: " + message_of(err));
  std::string out;
  out.reserve(buf.size() + 1);
  out.push_back(static_cast<char>(version));
  out.append(buf.data(), buf.size());
  return out;
}

template <class T>
[[nodiscard]] caf::error decode_record(std::string_view bytes, uint8_t version, T& out) {
  if (bytes.empty() || static_cast<uint8_t>(bytes[0]) != version)
    return make_error(errc::incompatible_state,
                      "a stored record has version " + std::to_string(bytes.empty() ? 0 : static_cast<uint8_t>(bytes[0]))
                        + ", expected " + std::to_string(version));
  caf::binary_deserializer source{nullptr, bytes.data() + 1, bytes.size() - 1};
  if (auto err = source(out))
    return make_error(errc::storage_failure, "a stored record is corrupt: " + message_of(err));
  if (source.remaining() != 0)
    return make_error(errc::storage_failure, "a stored record has trailing bytes");
  return {};
}

} // namespace shoal
