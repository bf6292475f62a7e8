#pragma once
/// The 8 bytes a thread channel (runtime/client/sync_rpc.hpp) sends before its first Cap'n Proto
/// message, so shoald serves the connection with its `channel_vat` instead of capnp's RpcSystem.
///
/// As a capnp frame they would announce 0x4f4853ff segments, which every capnp reader refuses:
/// a server that does not know the preface closes the connection at once, and the channel
/// reconnects without it.

#include <cstddef>
#include <cstring>

namespace shoal {

inline constexpr char channel_preface[8] = {'\xff', 'S', 'H', 'O', 'A', 'L', 'c', '1'};
inline constexpr size_t channel_preface_size = sizeof channel_preface;

inline bool is_channel_preface(const void* bytes, size_t size) {
  return size >= channel_preface_size && std::memcmp(bytes, channel_preface, channel_preface_size) == 0;
}

} // namespace shoal
