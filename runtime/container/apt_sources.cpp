#include "runtime/container/apt_sources.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "runtime/errc.hpp"

namespace shoal::container {

namespace fs = std::filesystem;

namespace {

std::string_view trim(std::string_view s) {
  auto b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos)
    return {};
  auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

std::vector<std::string> words(std::string_view s) {
  std::vector<std::string> out;
  std::istringstream in{std::string{s}};
  for (std::string w; in >> w;)
    out.push_back(w);
  return out;
}

bool contains(const std::vector<std::string>& list, std::string_view item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

std::string lower(std::string_view s) {
  std::string out{s};
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string without_trailing_slash(std::string uri) {
  while (uri.size() > 1 && uri.back() == '/')
    uri.pop_back();
  return uri;
}

/// Lines of `text`, without their newlines.
std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= text.size()) {
    auto nl = text.find('\n', start);
    auto line = text.substr(start, nl == std::string_view::npos ? std::string_view::npos
                                                                : nl - start);
    out.push_back(line);
    if (nl == std::string_view::npos)
      break;
    start = nl + 1;
  }
  return out;
}

std::optional<std::string> match_stanza(const std::map<std::string, std::string>& fields,
                                        std::string_view suite) {
  auto get = [&](const char* key) -> std::string {
    auto it = fields.find(key);
    return it == fields.end() ? std::string{} : it->second;
  };
  if (lower(trim(get("enabled"))) == "no")
    return std::nullopt;
  auto types = words(get("types"));
  if (!contains(types, "deb") || !contains(words(get("suites")), suite))
    return std::nullopt;
  auto uris = words(get("uris"));
  if (uris.empty())
    return std::nullopt;
  return without_trailing_slash(uris.front());
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    return {};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace

std::optional<std::string> mirror_from_deb822(std::string_view text, std::string_view suite) {
  std::map<std::string, std::string> fields;
  std::string last_key;
  // A sentinel empty line flushes the last stanza.
  auto lines = lines_of(text);
  lines.push_back({});
  for (auto raw : lines) {
    if (auto t = trim(raw); !t.empty() && t[0] == '#')
      continue; // a comment line, which does not end a stanza
    if (trim(raw).empty()) {
      if (!fields.empty()) {
        if (auto uri = match_stanza(fields, suite))
          return uri;
        fields.clear();
      }
      last_key.clear();
      continue;
    }
    if (raw[0] == ' ' || raw[0] == '\t') {
      if (!last_key.empty()) // continuation line: part of the previous field's value
        fields[last_key] += " " + std::string{trim(raw)};
      continue;
    }
    auto colon = raw.find(':');
    if (colon == std::string_view::npos)
      continue;
    last_key = lower(trim(raw.substr(0, colon)));
    fields[last_key] = std::string{trim(raw.substr(colon + 1))};
  }
  return std::nullopt;
}

std::optional<std::string> mirror_from_one_line(std::string_view text, std::string_view suite) {
  for (auto raw : lines_of(text)) {
    if (auto hash = raw.find('#'); hash != std::string_view::npos)
      raw = raw.substr(0, hash);
    auto line = std::string{trim(raw)};
    if (line.rfind("deb", 0) != 0 || line.rfind("deb-src", 0) == 0)
      continue;
    // Drop the "[option=value ...]" block, which may contain spaces.
    if (auto open = line.find('['); open != std::string::npos) {
      auto close = line.find(']', open);
      if (close == std::string::npos)
        continue;
      line.erase(open, close - open + 1);
    }
    auto w = words(line);
    // deb URI SUITE [COMPONENT...]
    if (w.size() < 3 || w[0] != "deb")
      continue;
    if (w[2] == suite)
      return without_trailing_slash(w[1]);
  }
  return std::nullopt;
}

caf::expected<std::string> find_debian_mirror(std::string_view suite,
                                              const apt_source_paths& paths) {
  std::vector<std::string> deb822_files, one_line_files;
  std::error_code ec;
  for (fs::directory_iterator it(paths.parts_dir, ec), end; !ec && it != end; it.increment(ec)) {
    auto ext = it->path().extension().string();
    if (ext == ".sources")
      deb822_files.push_back(it->path().string());
    else if (ext == ".list")
      one_line_files.push_back(it->path().string());
  }
  std::sort(deb822_files.begin(), deb822_files.end());
  std::sort(one_line_files.begin(), one_line_files.end());
  one_line_files.insert(one_line_files.begin(), paths.list_file);

  for (const auto& file : deb822_files)
    if (auto uri = mirror_from_deb822(read_text(file), suite))
      return *uri;
  for (const auto& file : one_line_files)
    if (auto uri = mirror_from_one_line(read_text(file), suite))
      return *uri;
  return make_error(errc::not_found,
                    "no Debian mirror for suite " + std::string{suite} + " in " + paths.list_file
                      + " or " + paths.parts_dir
                      + "/*.{sources,list}; add an apt source for it or configure a mirror");
}

} // namespace shoal::container
