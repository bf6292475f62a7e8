#pragma once
/// OCI/Docker layer tarballs into layers (libarchive: plain tar, gzip and zstd, detected from
/// the bytes). OCI whiteouts are translated: `dir/.wh.name` deletes `dir/name`, and
/// `dir/.wh..wh..opq` makes `dir` opaque. Untrusted input: device nodes, fifos, `..` and hard
/// links leaving the layer are errors naming the member.

#include <functional>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "fs/chunk_store.hpp"
#include "fs/layer.hpp"

namespace shoal::fs {

/// Returns the next block of the archive's bytes; an empty view at the end. (Lets a registry
/// download stream into the importer without holding the whole blob.)
using byte_source = std::function<caf::expected<std::string_view>()>;

/// Imports one layer tarball; file data goes to `store`. `what` names the archive in errors
/// ("layer sha256:ab12… of 127.0.0.1:5000/busybox:1").
caf::expected<layer> import_tar(const byte_source& source, chunk_store& store,
                                const std::string& what);

/// Convenience: the archive is in memory.
caf::expected<layer> import_tar(std::string_view archive, chunk_store& store,
                                const std::string& what);

} // namespace shoal::fs
