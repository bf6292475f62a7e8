#pragma once
/// `process_user`: who a container's process runs as, resolved from an image's `USER` (Dockerfile
/// syntax: `name`, `uid`, `name:group`, `uid:gid`, mixes of both) against the image's own
/// `/etc/passwd` and `/etc/group`, the way Docker resolves it:
///
/// - a name must be in /etc/passwd (a group name in /etc/group); a number need not be;
/// - without `:group`, the gid is the user's passwd gid (0 for a uid passwd does not know);
/// - the supplementary groups are those /etc/group lists the user name in (none with `:group`);
/// - home is the passwd home directory ("/" for a uid passwd does not know).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

namespace shoal::container {

struct process_user {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> additional_gids;
  std::string name; ///< the passwd name, empty for a uid passwd does not know
  std::string home = "/";

  bool is_root() const noexcept { return uid == 0; }
};

/// Resolves `user` against the text of a passwd and a group file. Empty `user`: root.
/// errc::invalid_argument saying what is unknown or malformed ("no user 'alice' in
/// /etc/passwd"); the caller adds which image it is.
[[nodiscard]] caf::expected<process_user>
resolve_process_user(std::string_view user, std::string_view passwd, std::string_view group);

/// Same, reading `/etc/passwd` and `/etc/group` of the root file system at `root_dir` (an image
/// tree) without following symlinks (path_beneath.hpp); a missing file counts as empty.
[[nodiscard]] caf::expected<process_user> resolve_process_user_in(std::string_view user,
                                                                  const std::string& root_dir);

} // namespace shoal::container
