#include "runtime/container/path_beneath.hpp"

#include <cerrno>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "runtime/container/detail/subprocess.hpp"
#include "runtime/errc.hpp"

namespace shoal::container {

namespace {

caf::expected<std::vector<std::string>> components(std::string_view path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    auto slash = path.find('/', start);
    auto part = path.substr(start, slash == std::string_view::npos ? std::string_view::npos
                                                                   : slash - start);
    if (part == "..")
      return make_error(errc::invalid_argument,
                        "the path '" + std::string{path} + "' must not contain '..'");
    if (!part.empty() && part != ".")
      parts.emplace_back(part);
    if (slash == std::string_view::npos)
      break;
    start = slash + 1;
  }
  return parts;
}

} // namespace

caf::expected<std::string> path_beneath(const std::string& root, std::string_view path) {
  auto parts = components(path);
  if (!parts)
    return parts.error();
  std::string host = root;
  std::string inside;
  for (size_t i = 0; i < parts->size(); ++i) {
    host += "/" + (*parts)[i];
    inside += "/" + (*parts)[i];
    if (i + 1 == parts->size())
      break;
    struct stat st;
    if (::lstat(host.c_str(), &st) != 0) {
      if (errno == ENOENT) {
        // Nothing below a missing directory can be a symlink: append the rest unchecked.
        for (size_t j = i + 1; j < parts->size(); ++j)
          host += "/" + (*parts)[j];
        return host;
      }
      return make_error(errc::storage_failure,
                        "cannot inspect " + inside + ": " + detail::errno_text(errno));
    }
    if (S_ISLNK(st.st_mode))
      return make_error(errc::invalid_argument,
                        inside + " is a symlink; use the path it points to");
    if (!S_ISDIR(st.st_mode))
      return make_error(errc::invalid_argument, inside + " is not a directory");
  }
  return host;
}

caf::error make_directory_beneath(const std::string& root, std::string_view path, unsigned mode,
                                  unsigned uid, unsigned gid) {
  auto parts = components(path);
  if (!parts)
    return parts.error();
  std::string host = root;
  std::string inside;
  for (size_t i = 0; i < parts->size(); ++i) {
    host += "/" + (*parts)[i];
    inside += "/" + (*parts)[i];
    bool last = i + 1 == parts->size();
    struct stat st;
    if (::lstat(host.c_str(), &st) == 0) {
      if (S_ISLNK(st.st_mode))
        return make_error(errc::invalid_argument,
                          inside + " is a symlink; use the path it points to");
      if (!S_ISDIR(st.st_mode))
        return make_error(errc::invalid_argument, inside + " is not a directory");
      continue;
    }
    if (errno != ENOENT)
      return make_error(errc::storage_failure,
                        "cannot inspect " + inside + ": " + detail::errno_text(errno));
    if (::mkdir(host.c_str(), last ? mode : 0755) != 0 && errno != EEXIST)
      return make_error(errc::storage_failure,
                        "cannot create " + inside + ": " + detail::errno_text(errno));
    if (last) {
      // mkdir applied the umask; the mode asked for is the mode wanted.
      if (::chmod(host.c_str(), mode) != 0
          || ((uid != 0 || gid != 0) && ::lchown(host.c_str(), uid, gid) != 0))
        return make_error(errc::storage_failure,
                          "cannot set the owner or mode of " + inside + ": "
                            + detail::errno_text(errno));
    }
  }
  return {};
}

} // namespace shoal::container
