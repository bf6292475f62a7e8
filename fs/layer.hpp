#pragma once
/// A layer: the sorted entries of one file tree or of one tree's changes (DESIGN.md §5), and the
/// rules that keep its paths inside the root. Encoded with Cap'n Proto (schema/layer.capnp); the
/// encoded manifest is stored as one chunk and its chunk id is the layer digest.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "fs/chunk_store.hpp"

namespace shoal::fs {

enum class entry_kind : uint8_t {
  file = 0,
  directory = 1,
  symlink = 2,
  hardlink = 3,          ///< link_target is another entry's path in the same layer
  whiteout = 4,          ///< deletes the path (and everything below it) in lower layers
  opaque_directory = 5,  ///< a directory that hides the contents of the same directory below
};

std::string_view to_string(entry_kind kind) noexcept;

struct chunk_ref {
  chunk_id id;
  uint32_t size = 0;
};

struct entry {
  std::string path;            ///< normalised, relative, no "..", "" is the root directory
  entry_kind kind = entry_kind::file;
  uint32_t mode = 0;           ///< permission bits incl. setuid/setgid/sticky (no type bits)
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;           ///< file size (files only)
  int64_t mtime_ns = 0;
  std::string link_target;     ///< symlinks and hardlinks
  std::vector<chunk_ref> chunks;
};

struct layer {
  std::vector<entry> entries;  ///< sorted by path (byte order), unique paths
  /// Bytes of file content referenced by the entries.
  uint64_t content_bytes() const;
};

/// Normalises a path from a tarball or a scan: strips leading "/" and "./", collapses "//" and
/// "/./", drops a trailing "/". Errors (errc::invalid_argument, naming the path): a ".."
/// component, an empty component after normalisation other than the root, a NUL byte.
caf::expected<std::string> normalize_path(std::string_view path);

/// Sorts entries by path and checks the layer: paths normalised and unique, parents present or
/// implied, hardlink targets inside the layer, no entry below a symlink of the same layer.
/// `untrusted` (registry layers) additionally means: nothing but files, dirs, symlinks,
/// hardlinks and whiteouts. Errors name the offending path.
caf::error validate(layer& l, bool untrusted);

/// Cap'n Proto encoding (packed) of a layer, and back. Decoding validates.
std::string encode(const layer& l);
caf::expected<layer> decode(std::string_view bytes);

/// Stores the encoded layer as a chunk; returns its digest (the chunk id).
caf::expected<chunk_id> store_layer(chunk_store& store, const layer& l);
/// Loads and decodes a stored layer.
caf::expected<layer> load_layer(const chunk_store& store, const chunk_id& digest);

} // namespace shoal::fs
