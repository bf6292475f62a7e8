#pragma once
/// `image_reference`: which image in which registry, parsed from the text a user writes
/// (`HOST[:PORT]/NAME[:TAG][@sha256:HEX]`), with Docker's rules for telling a registry host from
/// a repository path component.

#include <string>
#include <string_view>

#include <caf/expected.hpp>

namespace shoal::registry {

struct image_reference {
  std::string registry;    ///< host[:port], e.g. "127.0.0.1:5000" or "[::1]:5000"
  std::string repository;  ///< path in the registry, e.g. "team/app"; never invented ("library/")
  std::string tag;         ///< "latest" when neither a tag nor a digest was given
  std::string digest;      ///< "sha256:<64 hex>" or empty; wins over the tag when both are set

  /// `registry/repository[:tag][@digest]`, which parse_reference() reads back unchanged.
  std::string str() const;
  /// The tag or, when set, the digest: what the manifest is fetched by.
  const std::string& manifest_ref() const noexcept { return digest.empty() ? tag : digest; }

  friend bool operator==(const image_reference& a, const image_reference& b) {
    return a.registry == b.registry && a.repository == b.repository && a.tag == b.tag
           && a.digest == b.digest;
  }
};

/// Parses `ref`. The first path component is a registry host when it contains '.' or ':' or is
/// "localhost" (and more components follow); otherwise the registry is `default_registry`
/// (host[:port]). Repository components are lowercase `[a-z0-9]` runs joined by '.', '_', "__"
/// or dashes; tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; digests are `sha256:` + 64 lowercase
/// hex digits. Errors: errc::invalid_argument naming the reference and what to write instead
/// (including when it names no registry and `default_registry` is empty).
[[nodiscard]] caf::expected<image_reference>
parse_reference(std::string_view ref, std::string_view default_registry);

} // namespace shoal::registry
