#include "runtime/container/process_user.hpp"

#include <cerrno>
#include <charconv>
#include <fcntl.h>
#include <optional>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/container/detail/subprocess.hpp"
#include "runtime/container/path_beneath.hpp"
#include "runtime/errc.hpp"

namespace shoal::container {

namespace {

/// /etc/passwd and /etc/group are small; anything this large is not one.
constexpr size_t max_file_bytes = 16u << 20;

std::optional<uint32_t> number(std::string_view text) {
  uint32_t value = 0;
  if (text.empty())
    return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size())
    return std::nullopt;
  return value;
}

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    auto at = text.find(sep, start);
    out.push_back(text.substr(start, at == std::string_view::npos ? at : at - start));
    if (at == std::string_view::npos)
      return out;
    start = at + 1;
  }
}

/// The colon-separated records of a passwd/group file with at least `fields` fields; comments,
/// blank lines and short (malformed) lines skipped, as glibc does.
std::vector<std::vector<std::string_view>> records(std::string_view text, size_t fields) {
  std::vector<std::vector<std::string_view>> out;
  for (auto line : split(text, '\n')) {
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    if (line.empty() || line.front() == '#')
      continue;
    auto parts = split(line, ':');
    if (parts.size() >= fields && number(parts[2]))
      out.push_back(std::move(parts));
  }
  return out;
}

caf::error unknown(std::string what) {
  return make_error(errc::invalid_argument, std::move(what));
}

caf::expected<std::string> read_small_file(const std::string& root, std::string_view path) {
  auto host = path_beneath(root, path);
  if (!host)
    return host.error();
  int fd = ::open(host->c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      return std::string{};
    if (errno == ELOOP)
      return make_error(errc::invalid_argument, std::string{path} + " is a symlink");
    return make_error(errc::storage_failure,
                      "cannot read " + std::string{path} + ": " + detail::errno_text(errno));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<size_t>(st.st_size) > max_file_bytes) {
    ::close(fd);
    return make_error(errc::invalid_argument,
                      std::string{path} + " is not a regular file of at most 16 MiB");
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    auto n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(done);
  return out;
}

} // namespace

caf::expected<process_user> resolve_process_user(std::string_view user, std::string_view passwd,
                                                 std::string_view group) {
  process_user out;
  if (user.empty())
    return out;
  auto colon = user.find(':');
  auto user_part = user.substr(0, colon);
  auto group_part = colon == std::string_view::npos ? std::string_view{} : user.substr(colon + 1);
  if (user_part.empty() || (colon != std::string_view::npos && group_part.empty()))
    return unknown("USER '" + std::string{user}
                   + "' is not a user name or uid, optionally followed by :group or :gid");

  auto users = records(passwd, 7);
  const std::vector<std::string_view>* entry = nullptr;
  if (auto uid = number(user_part)) {
    out.uid = *uid;
    for (const auto& r : users)
      if (number(r[2]) == uid) {
        entry = &r;
        break;
      }
  } else {
    for (const auto& r : users)
      if (r[0] == user_part) {
        entry = &r;
        break;
      }
    if (entry == nullptr)
      return unknown("no user '" + std::string{user_part} + "' in /etc/passwd");
    out.uid = *number((*entry)[2]);
  }
  if (entry != nullptr) {
    out.name = std::string{(*entry)[0]};
    out.gid = number((*entry)[3]).value_or(0);
    out.home = (*entry)[5].empty() ? "/" : std::string{(*entry)[5]};
  }

  auto groups = records(group, 3);
  if (!group_part.empty()) {
    if (auto gid = number(group_part)) {
      out.gid = *gid;
    } else {
      bool found = false;
      for (const auto& r : groups)
        if (r[0] == group_part) {
          out.gid = *number(r[2]);
          found = true;
          break;
        }
      if (!found)
        return unknown("no group '" + std::string{group_part} + "' in /etc/group");
    }
    return out;
  }
  if (!out.name.empty())
    for (const auto& r : groups) {
      if (r.size() < 4)
        continue;
      auto gid = *number(r[2]);
      if (gid == out.gid)
        continue;
      for (auto member : split(r[3], ','))
        if (member == out.name) {
          out.additional_gids.push_back(gid);
          break;
        }
    }
  return out;
}

caf::expected<process_user> resolve_process_user_in(std::string_view user,
                                                    const std::string& root_dir) {
  if (user.empty())
    return process_user{};
  auto passwd = read_small_file(root_dir, "/etc/passwd");
  if (!passwd)
    return passwd.error();
  auto group = read_small_file(root_dir, "/etc/group");
  if (!group)
    return group.error();
  return resolve_process_user(user, *passwd, *group);
}

} // namespace shoal::container
