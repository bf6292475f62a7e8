#pragma once
/// `path_beneath`: a path inside an image tree or a container's root file system, as a host path,
/// without ever going through a symlink the image put there. Images hold whatever their author
/// wrote: a symlink `/home -> /etc` resolved on the host would reach the host's own `/etc`.

#include <string>
#include <string_view>

#include <caf/expected.hpp>

namespace shoal::container {

/// `root` + `path` (absolute or relative, resolved below `root`; "." and empty parts ignored,
/// ".." refused), once every component before the last one was checked with lstat to be a
/// directory, not a symlink. The last component is not checked: it may be absent, a file, or a
/// symlink (lstat it, or open it with O_NOFOLLOW). A missing intermediate component is fine too
/// (the result names a path that does not exist yet).
///
/// errc::invalid_argument naming the component when one is a symlink or not a directory.
/// Only safe on trees nothing else changes meanwhile: an image tree, or a container's root file
/// system before its container starts.
[[nodiscard]] caf::expected<std::string> path_beneath(const std::string& root,
                                                      std::string_view path);

/// Creates directory `path` below `root` with path_beneath's rules, and any missing parent
/// (mode 0755, owned by root). Only the last component, when this call creates it, gets `mode`,
/// `uid` and `gid`. An existing directory is left as it is. errc::invalid_argument when a
/// component is a symlink or not a directory, errc::storage_failure when mkdir or chown fails.
[[nodiscard]] caf::error make_directory_beneath(const std::string& root, std::string_view path,
                                                unsigned mode = 0755, unsigned uid = 0,
                                                unsigned gid = 0);

} // namespace shoal::container
