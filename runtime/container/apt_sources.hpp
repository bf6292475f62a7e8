#pragma once
/// Finding the Debian mirror this machine is configured to use, from its apt sources, so that
/// images are bootstrapped from it (no host name is ever compiled in).
///
/// Two formats are read:
///   deb822 (`/etc/apt/sources.list.d/*.sources`): stanzas separated by blank lines, with
///     `Types:`, `URIs:`, `Suites:` (space-separated lists) and optionally `Enabled: no`;
///   one-line (`/etc/apt/sources.list`, `/etc/apt/sources.list.d/*.list`):
///     `deb [option=value ...] URI SUITE COMPONENT...`.
/// Only binary (`deb`) entries whose suites include the requested one exactly count
/// ("bookworm" does not match "bookworm-security"). The first URI of the first match wins,
/// without a trailing slash. Comments (`#`) are ignored.

#include <optional>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

namespace shoal::container {

/// The mirror for `suite` in deb822 text, if any.
std::optional<std::string> mirror_from_deb822(std::string_view text, std::string_view suite);

/// The mirror for `suite` in one-line sources.list text, if any.
std::optional<std::string> mirror_from_one_line(std::string_view text, std::string_view suite);

/// Where apt's sources live; tests point these at fixtures.
struct apt_source_paths {
  /// `*.sources` (deb822) and `*.list` (one-line) files here are read, in name order.
  std::string parts_dir = "/etc/apt/sources.list.d";
  /// One-line format.
  std::string list_file = "/etc/apt/sources.list";
};

/// The mirror for `suite`: the deb822 files first (debian.sources on Debian 12), then the
/// one-line files. errc::not_found naming the files read when none carries the suite.
[[nodiscard]] caf::expected<std::string> find_debian_mirror(std::string_view suite,
                                                            const apt_source_paths& paths = {});

} // namespace shoal::container
