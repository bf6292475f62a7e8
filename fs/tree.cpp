#include "fs/tree.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <unordered_map>
#include <utility>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "runtime/errc.hpp"

namespace shoal::fs {

namespace {

caf::error os_failure(std::string what, int e) {
  return make_error(errc::storage_failure, std::move(what) + ": " + std::strerror(e));
}

int64_t to_ns(const struct timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct timespec from_ns(int64_t ns) {
  struct timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1'000'000'000;
    ts.tv_sec -= 1;
  }
  return ts;
}

/// Closes the descriptor when the scope ends.
struct unique_fd {
  int fd = -1;
  unique_fd() = default;
  explicit unique_fd(int f) : fd(f) {}
  unique_fd(unique_fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  ~unique_fd() { reset(); }
  void reset(int f = -1) {
    if (fd >= 0)
      ::close(fd);
    fd = f;
  }
};

std::string join(const std::string& dir, std::string_view name) {
  if (dir.empty())
    return std::string{name};
  std::string out;
  out.reserve(dir.size() + 1 + name.size());
  out.append(dir).push_back('/');
  out.append(name);
  return out;
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string{} : path.substr(0, slash);
}

std::string_view name_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string_view{path}
                                    : std::string_view{path}.substr(slash + 1);
}

bool is_dir_kind(entry_kind k) {
  return k == entry_kind::directory || k == entry_kind::opaque_directory;
}

/// Is `path` equal to `dir` or below it ("" is the root, above everything)?
bool within(const std::string& path, const std::string& dir) {
  if (dir.empty())
    return true;
  return path.size() >= dir.size() && path.compare(0, dir.size(), dir) == 0
         && (path.size() == dir.size() || path[dir.size()] == '/');
}

// -- scanning -------------------------------------------------------------------------------------

struct scan_state {
  const std::string& root;
  const scan_options& options;
  std::vector<std::string>* skipped;
  std::vector<entry> entries;
  /// Per entry index: (dev, ino) of regular files with more than one link.
  std::unordered_map<size_t, std::pair<dev_t, ino_t>> linked;
};

void fill_meta(entry& e, const struct stat& st) {
  e.mode = st.st_mode & 07777;
  e.uid = st.st_uid;
  e.gid = st.st_gid;
  e.mtime_ns = to_ns(st.st_mtim);
}

caf::error walk(scan_state& s, int dir_fd, const std::string& rel) {
  int dup_fd = ::dup(dir_fd);
  if (dup_fd < 0)
    return os_failure("dup while scanning " + s.root, errno);
  DIR* d = ::fdopendir(dup_fd);
  if (d == nullptr) {
    ::close(dup_fd);
    return os_failure("listing " + join(s.root, rel), errno);
  }
  std::vector<std::string> names;
  errno = 0;
  while (auto* ent = ::readdir(d)) {
    std::string_view n = ent->d_name;
    if (n != "." && n != "..")
      names.emplace_back(n);
  }
  int e = errno;
  ::closedir(d);
  if (e != 0)
    return os_failure("listing " + join(s.root, rel), e);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    auto path = join(rel, name);
    struct stat st{};
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT)
        continue; // removed while scanning
      return os_failure("stat of " + join(s.root, path), errno);
    }
    entry en;
    en.path = path;
    fill_meta(en, st);
    if (S_ISDIR(st.st_mode)) {
      unique_fd child{::openat(dir_fd, name.c_str(),
                               O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
      if (child.fd < 0)
        return os_failure("opening directory " + join(s.root, path), errno);
      en.kind = entry_kind::directory;
      if (s.options.overlay_upper) {
        char value[8];
        auto n = ::fgetxattr(child.fd, "trusted.overlay.opaque", value, sizeof(value));
        if (n == 1 && value[0] == 'y')
          en.kind = entry_kind::opaque_directory;
      }
      s.entries.push_back(std::move(en));
      if (auto err = walk(s, child.fd, path))
        return err;
    } else if (S_ISREG(st.st_mode)) {
      en.kind = entry_kind::file;
      en.size = static_cast<uint64_t>(st.st_size);
      if (st.st_nlink > 1)
        s.linked.emplace(s.entries.size(), std::make_pair(st.st_dev, st.st_ino));
      s.entries.push_back(std::move(en));
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      for (;;) {
        auto n = ::readlinkat(dir_fd, name.c_str(), target.data(), target.size());
        if (n < 0)
          return os_failure("reading symlink " + join(s.root, path), errno);
        if (static_cast<size_t>(n) < target.size()) {
          target.resize(static_cast<size_t>(n));
          break;
        }
        target.resize(target.size() * 2);
      }
      en.kind = entry_kind::symlink;
      en.link_target = std::move(target);
      s.entries.push_back(std::move(en));
    } else if (S_ISCHR(st.st_mode) && s.options.overlay_upper && st.st_rdev == makedev(0, 0)) {
      en.kind = entry_kind::whiteout;
      en.mode = 0;
      s.entries.push_back(std::move(en));
    } else if (s.skipped != nullptr) {
      s.skipped->push_back(path);
    }
  }
  return {};
}

} // namespace

caf::expected<layer> scan_tree(const std::string& root, chunk_store& store, scan_options options,
                               std::vector<std::string>* skipped) {
  unique_fd root_fd{::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
  if (root_fd.fd < 0) {
    int e = errno;
    if (e == ENOENT)
      return make_error(errc::not_found, "cannot scan " + root + ": it does not exist");
    return os_failure("opening " + root + " to scan it (it must be a directory, not a symlink)", e);
  }
  struct stat st{};
  if (::fstat(root_fd.fd, &st) != 0)
    return os_failure("stat of " + root, errno);
  scan_state s{root, options, skipped, {}, {}};
  entry top;
  top.path = "";
  top.kind = entry_kind::directory;
  fill_meta(top, st);
  s.entries.push_back(std::move(top));
  if (auto err = walk(s, root_fd.fd, ""))
    return err;

  // Sort (the walk's order is not byte order: "a.b" < "a/c"), keeping the link identities.
  std::vector<size_t> order(s.entries.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return s.entries[a].path < s.entries[b].path; });
  layer l;
  l.entries.reserve(s.entries.size());
  std::map<std::pair<dev_t, ino_t>, std::string> first_path;
  std::vector<size_t> files; // indexes into l.entries
  for (size_t i : order) {
    auto& e = s.entries[i];
    if (e.kind == entry_kind::file) {
      auto linked = s.linked.find(i);
      if (linked != s.linked.end()) {
        auto [it, first] = first_path.emplace(linked->second, e.path);
        if (!first) {
          e.kind = entry_kind::hardlink;
          e.link_target = it->second;
          e.size = 0;
        }
      }
      if (e.kind == entry_kind::file)
        files.push_back(l.entries.size());
    }
    l.entries.push_back(std::move(e));
  }

  std::vector<std::string> paths;
  paths.reserve(files.size());
  for (size_t i : files)
    paths.push_back(join(root, l.entries[i].path));
  chunk_store::put_files_options put_options;
  put_options.store = options.store_data;
  auto stored = store.put_files(paths, put_options);
  if (!stored)
    return std::move(stored.error());
  for (size_t k = 0; k < files.size(); ++k) {
    auto& e = l.entries[files[k]];
    e.chunks.clear();
    e.size = 0;
    for (auto& [id, size] : (*stored)[k]) {
      e.chunks.push_back({id, size});
      e.size += size;
    }
  }
  if (auto err = validate(l, false))
    return err;
  return l;
}

// -- merging --------------------------------------------------------------------------------------

layer merge(const std::vector<layer>& layers) {
  struct slot {
    entry e;
    size_t layer_index;
  };
  std::map<std::string, slot> result;
  auto remove_below = [&](const std::string& path) {
    if (path.empty()) {
      auto keep = result.find("");
      std::optional<slot> root;
      if (keep != result.end())
        root = std::move(keep->second);
      result.clear();
      if (root)
        result.emplace("", std::move(*root));
      return;
    }
    // Keys with the prefix "path/" are contiguous: ["path/", "path0") ('0' follows '/').
    auto first = result.lower_bound(path + "/");
    auto last = result.lower_bound(path + "0");
    result.erase(first, last);
  };
  // Hardlinks keep the data of their target as it was in their own layer, in case a later layer
  // replaces or deletes the target.
  std::map<std::string, entry> link_data;

  for (size_t li = 0; li < layers.size(); ++li) {
    const auto& entries = layers[li].entries;
    std::unordered_map<std::string_view, const entry*> by_path; // built for hardlinks only
    for (const auto& e : entries) {
      if (e.kind == entry_kind::whiteout) {
        result.erase(e.path);
        remove_below(e.path);
      } else if (e.kind == entry_kind::opaque_directory) {
        remove_below(e.path);
      }
    }
    for (const auto& e : entries) {
      if (e.kind == entry_kind::whiteout)
        continue;
      entry copy = e;
      if (copy.kind == entry_kind::opaque_directory)
        copy.kind = entry_kind::directory;
      if (!is_dir_kind(copy.kind))
        remove_below(copy.path); // a file over a lower directory hides the directory
      // A lower non-directory where this layer has a child becomes a directory.
      for (auto p = parent_of(copy.path); !copy.path.empty();) {
        auto found = result.find(p);
        if (found != result.end()) {
          if (!is_dir_kind(found->second.e.kind)) {
            entry dir;
            dir.path = p;
            dir.kind = entry_kind::directory;
            dir.mode = 0755;
            found->second = slot{std::move(dir), li};
          }
          break; // an existing directory: its own parents were checked when it was added
        }
        if (p.empty())
          break;
        p = parent_of(p);
      }
      if (copy.kind == entry_kind::hardlink) {
        if (by_path.empty())
          for (const auto& other : entries)
            by_path.emplace(other.path, &other);
        auto target = by_path.find(copy.link_target);
        if (target != by_path.end())
          link_data[copy.path] = *target->second;
      }
      auto path = copy.path;
      result[path] = slot{std::move(copy), li};
    }
  }

  layer out;
  out.entries.reserve(result.size());
  for (auto& [path, s] : result) {
    if (s.e.kind == entry_kind::hardlink) {
      auto target = result.find(s.e.link_target);
      bool intact = target != result.end() && target->second.e.kind == entry_kind::file
                    && target->second.layer_index == s.layer_index;
      if (!intact) {
        // The target was replaced or deleted above: this path keeps the old content as a file.
        auto data = link_data.find(path);
        entry file = data != link_data.end() ? data->second : entry{};
        file.path = path;
        file.kind = entry_kind::file;
        file.link_target.clear();
        s.e = std::move(file);
      }
    }
    out.entries.push_back(std::move(s.e));
  }
  return out;
}

// -- materialising --------------------------------------------------------------------------------

namespace {

/// Opens the directory `rel` below `root_fd` one component at a time, never following a
/// symlink. -1 with errno on failure.
int open_dir_nofollow(int root_fd, const std::string& rel) {
  int fd = ::dup(root_fd);
  if (fd < 0 || rel.empty())
    return fd;
  size_t i = 0;
  while (i <= rel.size()) {
    auto slash = rel.find('/', i);
    if (slash == std::string::npos)
      slash = rel.size();
    auto part = rel.substr(i, slash - i);
    i = slash + 1;
    int next = ::openat(fd, part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    ::close(fd);
    if (next < 0) {
      errno = e;
      return -1;
    }
    fd = next;
  }
  return fd;
}

bool same_file(const entry& a, const entry& b) {
  if (a.kind != entry_kind::file || b.kind != entry_kind::file)
    return false;
  if (a.size != b.size || a.mode != b.mode || a.uid != b.uid || a.gid != b.gid
      || a.mtime_ns != b.mtime_ns || a.chunks.size() != b.chunks.size())
    return false;
  for (size_t i = 0; i < a.chunks.size(); ++i)
    if (a.chunks[i].id != b.chunks[i].id || a.chunks[i].size != b.chunks[i].size)
      return false;
  return true;
}

/// A file created and waiting for its data (written in batches through write_files).
struct pending_file {
  const entry* e;
  unique_fd fd;
};

} // namespace

caf::error materialise(const layer& l, const chunk_store& store, const std::string& target,
                       const materialise_options& options) {
  // 1. Check the whole layer before creating anything.
  std::unordered_map<std::string_view, const entry*> by_path;
  by_path.reserve(l.entries.size());
  for (size_t i = 0; i < l.entries.size(); ++i) {
    const auto& e = l.entries[i];
    if (i > 0 && !(l.entries[i - 1].path < e.path))
      return make_error(errc::invalid_argument,
                        "cannot materialise into " + target + ": the layer is not sorted or has "
                          "the path \"" + e.path + "\" twice (merge() the layers first)");
    if (e.kind == entry_kind::whiteout)
      return make_error(errc::invalid_argument,
                        "cannot materialise into " + target + ": \"" + e.path
                          + "\" is a whiteout; materialise takes a merged layer (merge() first)");
    auto norm = normalize_path(e.path);
    if (!norm || *norm != e.path)
      return make_error(errc::invalid_argument, "cannot materialise into " + target
                                                  + ": the layer path \"" + e.path
                                                  + "\" is not normalised");
    if (static_cast<uint8_t>(e.kind) > static_cast<uint8_t>(entry_kind::opaque_directory))
      return make_error(errc::invalid_argument, "cannot materialise \"" + e.path
                                                  + "\": unknown entry kind");
    if (e.path.empty() && !is_dir_kind(e.kind))
      return make_error(errc::invalid_argument, "cannot materialise into " + target
                                                  + ": the layer's root is not a directory");
    by_path.emplace(e.path, &e);
  }
  for (const auto& e : l.entries) {
    for (auto p = parent_of(e.path); !e.path.empty(); p = parent_of(p)) {
      auto found = by_path.find(p);
      if (found != by_path.end() && !is_dir_kind(found->second->kind))
        return make_error(errc::invalid_argument,
                          "refusing to materialise \"" + e.path + "\" into " + target
                            + ": its parent \"" + p + "\" is a "
                            + std::string{to_string(found->second->kind)}
                            + " in the layer, and writing through it could leave the tree");
      if (p.empty())
        break;
    }
    if (e.kind == entry_kind::hardlink) {
      auto found = by_path.find(e.link_target);
      if (found == by_path.end() || found->second->kind != entry_kind::file)
        return make_error(errc::invalid_argument,
                          "cannot materialise the hardlink \"" + e.path + "\": its target \""
                            + e.link_target + "\" is not a file of the layer");
    }
  }

  // 2. The target: created, or an existing empty directory.
  if (::mkdir(target.c_str(), 0700) != 0) {
    int e = errno;
    if (e != EEXIST)
      return os_failure("creating " + target, e);
  }
  unique_fd root{::open(target.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
  if (root.fd < 0)
    return os_failure("opening " + target + " (it must be a directory, not a symlink)", errno);
  {
    int dup_fd = ::dup(root.fd);
    DIR* d = dup_fd >= 0 ? ::fdopendir(dup_fd) : nullptr;
    if (d == nullptr)
      return os_failure("listing " + target, errno);
    bool empty = true;
    while (auto* ent = ::readdir(d)) {
      std::string_view n = ent->d_name;
      if (n != "." && n != "..")
        empty = false;
    }
    ::closedir(d);
    if (!empty)
      return make_error(errc::invalid_argument,
                        "cannot materialise into " + target + ": it is not empty");
  }

  // The base tree for hard links.
  unique_fd base_root;
  std::unordered_map<std::string_view, const entry*> base;
  if (!options.link_from.empty() && options.link_base != nullptr) {
    base_root.reset(
      ::open(options.link_from.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (base_root.fd >= 0) {
      base.reserve(options.link_base->entries.size());
      for (const auto& e : options.link_base->entries)
        base.emplace(e.path, &e);
    }
  }
  std::string base_parent_path;
  unique_fd base_parent;
  bool base_parent_ok = false;

  // Parents of the current entry, open (sorted order keeps a directory's subtree contiguous).
  struct open_dir {
    std::string path;
    unique_fd fd;
  };
  std::vector<open_dir> stack;
  stack.push_back({"", unique_fd{::dup(root.fd)}});
  auto parent_fd = [&](const std::string& dir) -> caf::expected<int> {
    while (stack.size() > 1 && !within(dir, stack.back().path))
      stack.pop_back();
    while (stack.back().path != dir) {
      const auto& top = stack.back().path;
      auto rest = top.empty() ? dir : dir.substr(top.size() + 1);
      auto part = rest.substr(0, rest.find('/'));
      int fd = ::openat(stack.back().fd.fd, part.c_str(),
                        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0 && errno == ENOENT) {
        // An implied directory (not in the layer): parents precede children in sorted order.
        if (::mkdirat(stack.back().fd.fd, part.c_str(), 0755) != 0)
          return os_failure("creating the directory " + join(target, join(top, part)), errno);
        fd = ::openat(stack.back().fd.fd, part.c_str(),
                      O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      }
      if (fd < 0)
        return os_failure("opening the directory " + join(target, join(top, part))
                            + " without following symlinks",
                          errno);
      stack.push_back({join(top, part), unique_fd{fd}});
    }
    return stack.back().fd.fd;
  };

  std::vector<pending_file> pending;
  uint64_t pending_bytes = 0;
  constexpr size_t max_pending_files = 256;
  constexpr uint64_t max_pending_bytes = 256u << 20;
  auto flush = [&]() -> caf::error {
    if (pending.empty())
      return {};
    std::vector<std::pair<int, std::vector<chunk_id>>> batch;
    batch.reserve(pending.size());
    for (auto& p : pending) {
      std::vector<chunk_id> ids;
      ids.reserve(p.e->chunks.size());
      for (auto& c : p.e->chunks)
        ids.push_back(c.id);
      batch.emplace_back(p.fd.fd, std::move(ids));
    }
    if (auto err = store.write_files(batch))
      return make_error(code_of(err), "materialising into " + target + ": " + message_of(err));
    for (auto& p : pending) {
      const auto& e = *p.e;
      if (options.set_owner && ::fchown(p.fd.fd, e.uid, e.gid) != 0)
        return os_failure("chown of " + join(target, e.path), errno);
      if (::fchmod(p.fd.fd, e.mode) != 0)
        return os_failure("chmod of " + join(target, e.path), errno);
      struct timespec times[2] = {from_ns(e.mtime_ns), from_ns(e.mtime_ns)};
      if (::futimens(p.fd.fd, times) != 0)
        return os_failure("setting the mtime of " + join(target, e.path), errno);
    }
    pending.clear();
    pending_bytes = 0;
    return {};
  };

  std::vector<const entry*> dirs;
  std::vector<const entry*> hardlinks;
  const entry* root_entry = nullptr;
  for (const auto& e : l.entries) {
    if (e.path.empty()) {
      root_entry = &e;
      continue;
    }
    if (e.kind == entry_kind::hardlink) {
      hardlinks.push_back(&e);
      continue;
    }
    auto pfd = parent_fd(parent_of(e.path));
    if (!pfd)
      return std::move(pfd.error());
    std::string name{name_of(e.path)};
    switch (e.kind) {
      case entry_kind::directory:
      case entry_kind::opaque_directory:
        if (::mkdirat(*pfd, name.c_str(), 0700) != 0)
          return os_failure("creating the directory " + join(target, e.path), errno);
        dirs.push_back(&e);
        break;
      case entry_kind::symlink: {
        if (::symlinkat(e.link_target.c_str(), *pfd, name.c_str()) != 0)
          return os_failure("creating the symlink " + join(target, e.path), errno);
        if (options.set_owner
            && ::fchownat(*pfd, name.c_str(), e.uid, e.gid, AT_SYMLINK_NOFOLLOW) != 0)
          return os_failure("chown of the symlink " + join(target, e.path), errno);
        struct timespec times[2] = {from_ns(e.mtime_ns), from_ns(e.mtime_ns)};
        if (::utimensat(*pfd, name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
          return os_failure("setting the mtime of the symlink " + join(target, e.path), errno);
        break;
      }
      case entry_kind::file: {
        if (base_root.fd >= 0) {
          auto b = base.find(e.path);
          if (b != base.end() && same_file(e, *b->second)) {
            auto parent = parent_of(e.path);
            if (!base_parent_ok || base_parent_path != parent) {
              base_parent.reset(open_dir_nofollow(base_root.fd, parent));
              base_parent_path = parent;
              base_parent_ok = true;
            }
            if (base_parent.fd >= 0
                && ::linkat(base_parent.fd, name.c_str(), *pfd, name.c_str(), 0) == 0)
              break; // shared with the base tree: same bytes, same metadata
          }
        }
        int fd = ::openat(*pfd, name.c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
          return os_failure("creating the file " + join(target, e.path), errno);
        pending.push_back({&e, unique_fd{fd}});
        pending_bytes += e.size;
        if (pending.size() >= max_pending_files || pending_bytes >= max_pending_bytes)
          if (auto err = flush())
            return err;
        break;
      }
      case entry_kind::hardlink:
      case entry_kind::whiteout:
        break; // handled above / rejected above
    }
  }
  if (auto err = flush())
    return err;
  stack.clear();

  for (const auto* e : hardlinks) {
    unique_fd from{open_dir_nofollow(root.fd, parent_of(e->link_target))};
    if (from.fd < 0)
      return os_failure("opening the parent of " + join(target, e->link_target), errno);
    // The hardlink's own parent may be implied: create it through the no-follow walk.
    stack.push_back({"", unique_fd{::dup(root.fd)}});
    auto pfd = parent_fd(parent_of(e->path));
    if (!pfd)
      return std::move(pfd.error());
    std::string from_name{name_of(e->link_target)};
    std::string name{name_of(e->path)};
    if (::linkat(from.fd, from_name.c_str(), *pfd, name.c_str(), 0) != 0)
      return os_failure("linking " + join(target, e->path) + " to " + e->link_target, errno);
    stack.clear();
  }

  // Directories last, deepest first, so creating their children does not change their mtimes.
  auto finish_dir = [&](int fd, const entry& e) -> caf::error {
    if (options.set_owner && ::fchown(fd, e.uid, e.gid) != 0)
      return os_failure("chown of " + join(target, e.path), errno);
    if (::fchmod(fd, e.mode) != 0)
      return os_failure("chmod of " + join(target, e.path), errno);
    struct timespec times[2] = {from_ns(e.mtime_ns), from_ns(e.mtime_ns)};
    if (::futimens(fd, times) != 0)
      return os_failure("setting the mtime of " + join(target, e.path), errno);
    return {};
  };
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    unique_fd fd{open_dir_nofollow(root.fd, (*it)->path)};
    if (fd.fd < 0)
      return os_failure("opening " + join(target, (*it)->path), errno);
    if (auto err = finish_dir(fd.fd, **it))
      return err;
  }
  if (root_entry != nullptr)
    if (auto err = finish_dir(root.fd, *root_entry))
      return err;
  return {};
}

} // namespace shoal::fs
