#include "fs/registry/reference.hpp"

#include <string>

#include "runtime/errc.hpp"

namespace shoal::registry {

std::string image_reference::str() const {
  std::string out = registry + "/" + repository;
  if (!tag.empty())
    out += ":" + tag;
  if (!digest.empty())
    out += "@" + digest;
  return out;
}

namespace {

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

bool is_hex_lower(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
bool valid_component(std::string_view c) {
  if (c.empty() || !is_lower_alnum(c.front()) || !is_lower_alnum(c.back()))
    return false;
  for (size_t i = 0; i < c.size();) {
    if (is_lower_alnum(c[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < c.size() && !is_lower_alnum(c[j]))
      ++j;
    std::string_view sep = c.substr(i, j - i);
    bool dashes = sep.find_first_not_of('-') == std::string_view::npos;
    if (!(sep == "." || sep == "_" || sep == "__" || dashes))
      return false;
    i = j;
  }
  return true;
}

bool valid_tag(std::string_view t) {
  if (t.empty() || t.size() > 128)
    return false;
  auto word = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  if (!word(t.front()))
    return false;
  for (char c : t)
    if (!word(c) && c != '.' && c != '-')
      return false;
  return true;
}

/// host[:port]: DNS-ish labels or an IPv4 address, or "[v6]", optionally ":digits".
bool valid_host(std::string_view h) {
  if (h.empty())
    return false;
  std::string_view host = h;
  std::string_view port;
  if (h.front() == '[') {
    size_t close = h.find(']');
    if (close == std::string_view::npos || close == 1)
      return false;
    for (char c : h.substr(1, close - 1))
      if (!(is_hex_lower(c) || (c >= 'A' && c <= 'F') || c == ':' || c == '.'))
        return false;
    std::string_view rest = h.substr(close + 1);
    if (rest.empty())
      return true;
    if (rest.front() != ':')
      return false;
    port = rest.substr(1);
    host = {};
  } else {
    size_t colon = h.find(':');
    if (colon != std::string_view::npos) {
      host = h.substr(0, colon);
      port = h.substr(colon + 1);
      if (port.empty())
        return false;
    }
    if (host.empty())
      return false;
    for (char c : host)
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.'
            || c == '-'))
        return false;
    if (host.front() == '.' || host.front() == '-' || host.back() == '.' || host.back() == '-')
      return false;
  }
  if (h.front() == '[' && port.empty())
    return true;
  if (!port.empty()) {
    if (port.size() > 5)
      return false;
    for (char c : port)
      if (c < '0' || c > '9')
        return false;
  }
  return true;
}

caf::error bad(std::string_view ref, const std::string& why) {
  return make_error(errc::invalid_argument,
                    "'" + std::string{ref} + "' is not a valid image reference: " + why
                      + "; write HOST[:PORT]/NAME[:TAG][@sha256:DIGEST]");
}

} // namespace

caf::expected<image_reference> parse_reference(std::string_view ref,
                                               std::string_view default_registry) {
  if (ref.empty())
    return bad(ref, "it is empty");
  for (char c : ref)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
      return bad(ref, "it contains whitespace or a control character");
  if (ref.find("://") != std::string_view::npos)
    return bad(ref, "it has a URL scheme (drop 'http://' or 'https://')");

  image_reference out;
  std::string_view rest = ref;

  // @digest
  if (size_t at = rest.find('@'); at != std::string_view::npos) {
    std::string_view digest = rest.substr(at + 1);
    rest = rest.substr(0, at);
    constexpr std::string_view prefix = "sha256:";
    if (digest.substr(0, prefix.size()) != prefix)
      return bad(ref, "only sha256 digests are supported ('@sha256:' + 64 hex digits)");
    std::string_view hex = digest.substr(prefix.size());
    if (hex.size() != 64)
      return bad(ref, "a sha256 digest has 64 hex digits, this one has "
                        + std::to_string(hex.size()));
    for (char c : hex)
      if (!is_hex_lower(c))
        return bad(ref, "the digest must be lowercase hex");
    out.digest = std::string{digest};
  }

  // Registry host: the first component, when it looks like one.
  std::string_view name = rest;
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    std::string_view first = rest.substr(0, slash);
    if (first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos
        || first == "localhost") {
      if (!valid_host(first))
        return bad(ref, "'" + std::string{first} + "' is not a valid HOST[:PORT]");
      out.registry = std::string{first};
      name = rest.substr(slash + 1);
    }
  }

  // :tag (a colon after the last slash)
  size_t last_slash = name.rfind('/');
  size_t colon = name.rfind(':');
  if (colon != std::string_view::npos
      && (last_slash == std::string_view::npos || colon > last_slash)) {
    std::string_view tag = name.substr(colon + 1);
    if (!valid_tag(tag))
      return bad(ref, "'" + std::string{tag}
                        + "' is not a valid tag (letters, digits, '_', '.', '-'; at most 128, "
                          "not starting with '.' or '-')");
    out.tag = std::string{tag};
    name = name.substr(0, colon);
  }

  if (name.empty())
    return bad(ref, "it names no repository");
  for (size_t start = 0;;) {
    size_t end = name.find('/', start);
    std::string_view component =
      name.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (!valid_component(component)) {
      bool upper = false;
      for (char c : component)
        upper = upper || (c >= 'A' && c <= 'Z');
      return bad(ref, "'" + std::string{component} + "' is not a valid repository name component"
                        + (upper ? " (repository names must be lowercase)"
                                 : " (lowercase letters and digits, separated by '.', '_', '__' "
                                   "or '-')"));
    }
    if (end == std::string_view::npos)
      break;
    start = end + 1;
  }
  out.repository = std::string{name};
  if (out.repository.size() > 255)
    return bad(ref, "the repository name is longer than 255 characters");

  if (out.registry.empty()) {
    std::string_view def = default_registry;
    while (!def.empty() && def.back() == '/')
      def.remove_suffix(1);
    if (def.empty())
      return make_error(errc::invalid_argument,
                        "'" + std::string{ref}
                          + "' names no registry host; write HOST[:PORT]/NAME:TAG or set "
                            "SHOAL_DEFAULT_REGISTRY");
    if (!valid_host(def))
      return make_error(errc::invalid_argument,
                        "the default registry '" + std::string{default_registry}
                          + "' is not a valid HOST[:PORT] (check SHOAL_DEFAULT_REGISTRY)");
    out.registry = std::string{def};
  }

  if (out.tag.empty() && out.digest.empty())
    out.tag = "latest";
  return out;
}

} // namespace shoal::registry
