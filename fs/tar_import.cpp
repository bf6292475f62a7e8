#include "fs/tar_import.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <utility>

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include "runtime/errc.hpp"

namespace shoal::fs {

namespace {

/// Feeds libarchive from a byte_source; keeps the source's error for the caller.
struct reader_state {
  const byte_source* source;
  caf::error error;
  std::string_view current; ///< must stay valid until the next read: the source guarantees it
};

la_ssize_t read_callback(struct archive* a, void* client, const void** buffer) {
  auto* state = static_cast<reader_state*>(client);
  auto next = (*state->source)();
  if (!next) {
    state->error = std::move(next.error());
    archive_set_error(a, EIO, "the archive's source failed");
    return -1;
  }
  state->current = *next;
  *buffer = state->current.data();
  return static_cast<la_ssize_t>(state->current.size());
}

struct archive_deleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

constexpr std::string_view whiteout_prefix = ".wh.";
constexpr std::string_view opaque_marker = ".wh..wh..opq";
/// File data is put to the store in batches of about this many bytes.
constexpr size_t batch_bytes = 32u << 20;

/// Chunks waiting to be stored, and which entry each belongs to.
struct chunk_batch {
  std::vector<std::string> data;
  std::vector<std::pair<size_t, size_t>> owners; ///< (entry index, chunk index)
  size_t bytes = 0;
};

} // namespace

caf::expected<layer> import_tar(const byte_source& source, chunk_store& store,
                                const std::string& what) {
  std::unique_ptr<struct archive, archive_deleter> a{archive_read_new()};
  if (!a)
    return make_error(errc::resource_exhausted, "no memory to read " + what);
  archive_read_support_filter_all(a.get());
  archive_read_support_format_tar(a.get());
  archive_read_support_format_gnutar(a.get());
  reader_state state{&source, {}, {}};
  auto archive_error = [&](std::string_view doing) -> caf::error {
    if (state.error)
      return make_error(code_of(state.error),
                        "reading " + what + ": " + message_of(state.error));
    const char* msg = archive_error_string(a.get());
    return make_error(errc::invalid_argument, std::string{doing} + " " + what + ": "
                                                + (msg != nullptr ? msg : "unknown error")
                                                + " (is it a tar, tar.gz or tar.zst?)");
  };
  if (archive_read_open(a.get(), &state, nullptr, read_callback, nullptr) != ARCHIVE_OK)
    return archive_error("opening");

  layer l;
  std::map<std::string, size_t> index; // path -> entry index (a later member replaces)
  chunk_batch batch;
  auto flush = [&]() -> caf::error {
    if (batch.data.empty())
      return {};
    std::vector<std::string_view> views(batch.data.begin(), batch.data.end());
    auto ids = store.put(views);
    if (!ids)
      return make_error(code_of(ids.error()),
                        "storing the files of " + what + ": " + message_of(ids.error()));
    for (size_t i = 0; i < ids->size(); ++i) {
      auto [e, c] = batch.owners[i];
      l.entries[e].chunks[c].id = (*ids)[i];
    }
    batch = chunk_batch{};
    return {};
  };
  auto member_error = [&](const std::string& member, const std::string& why) {
    return make_error(errc::invalid_argument,
                      "member \"" + member + "\" of " + what + " " + why);
  };
  auto put_entry = [&](entry e) -> caf::expected<size_t> {
    auto found = index.find(e.path);
    if (found != index.end()) {
      // The replaced entry may own chunks still waiting in the batch: store them first.
      if (auto err = flush())
        return err;
      // A later member replaces an earlier one; an opaque marker stays with its directory.
      auto& old = l.entries[found->second];
      if (old.kind == entry_kind::opaque_directory && e.kind == entry_kind::directory)
        e.kind = entry_kind::opaque_directory;
      old = std::move(e);
      return found->second;
    }
    index.emplace(e.path, l.entries.size());
    l.entries.push_back(std::move(e));
    return l.entries.size() - 1;
  };

  struct archive_entry* member = nullptr;
  for (;;) {
    int rc = archive_read_next_header(a.get(), &member);
    if (rc == ARCHIVE_EOF)
      break;
    if (rc == ARCHIVE_FATAL || rc == ARCHIVE_RETRY)
      return archive_error("reading");
    // ARCHIVE_WARN: e.g. an unknown pax keyword; the member itself is usable.
    const char* raw_name = archive_entry_pathname(member);
    std::string name = raw_name != nullptr ? raw_name : "";
    auto path = normalize_path(name);
    if (!path)
      return member_error(name, "has an unsafe path: " + message_of(path.error()));
    auto type = archive_entry_filetype(member);
    entry e;
    e.path = *path;
    e.mode = static_cast<uint32_t>(archive_entry_perm(member)) & 07777;
    e.uid = static_cast<uint32_t>(archive_entry_uid(member));
    e.gid = static_cast<uint32_t>(archive_entry_gid(member));
    e.mtime_ns = static_cast<int64_t>(archive_entry_mtime(member)) * 1'000'000'000
                 + archive_entry_mtime_nsec(member);

    // OCI whiteouts.
    std::string_view base = e.path;
    std::string parent;
    if (auto slash = e.path.rfind('/'); slash != std::string::npos) {
      base = std::string_view{e.path}.substr(slash + 1);
      parent = e.path.substr(0, slash);
    }
    if (base == opaque_marker) {
      entry dir;
      dir.path = parent;
      dir.kind = entry_kind::opaque_directory;
      dir.mode = 0755;
      auto found = index.find(parent);
      if (found != index.end()) {
        auto& old = l.entries[found->second];
        if (old.kind != entry_kind::directory && old.kind != entry_kind::opaque_directory)
          return member_error(name, "marks \"" + parent + "\" opaque, but it is a "
                                      + std::string{to_string(old.kind)});
        old.kind = entry_kind::opaque_directory;
      } else if (auto put = put_entry(std::move(dir)); !put) {
        return std::move(put.error());
      }
      continue;
    }
    if (base.substr(0, whiteout_prefix.size()) == whiteout_prefix) {
      auto victim = std::string{base.substr(whiteout_prefix.size())};
      if (victim.empty() || victim == "." || victim == "..")
        return member_error(name, "is a whiteout of an invalid name");
      entry w;
      w.path = parent.empty() ? victim : parent + "/" + victim;
      w.kind = entry_kind::whiteout;
      if (auto put = put_entry(std::move(w)); !put)
        return std::move(put.error());
      continue;
    }

    if (const char* hard = archive_entry_hardlink(member); hard != nullptr) {
      auto target = normalize_path(hard);
      if (!target)
        return member_error(name, "is a hard link leaving the layer (to \"" + std::string{hard}
                                    + "\")");
      auto found = index.find(*target);
      if (found == index.end() || l.entries[found->second].kind != entry_kind::file)
        return member_error(name, "is a hard link to \"" + std::string{hard}
                                    + "\", which is not a file earlier in the layer");
      e.kind = entry_kind::hardlink;
      e.link_target = *target;
      e.mode = l.entries[found->second].mode;
      if (auto put = put_entry(std::move(e)); !put)
        return std::move(put.error());
      continue;
    }

    switch (type) {
      case AE_IFDIR:
        e.kind = entry_kind::directory;
        if (auto put = put_entry(std::move(e)); !put)
          return std::move(put.error());
        break;
      case AE_IFLNK: {
        const char* link = archive_entry_symlink(member);
        e.kind = entry_kind::symlink;
        e.link_target = link != nullptr ? link : "";
        if (auto put = put_entry(std::move(e)); !put)
          return std::move(put.error());
        break;
      }
      case AE_IFREG: {
        e.kind = entry_kind::file;
        if (e.path.empty())
          return member_error(name, "is a file at the root of the layer");
        auto put = put_entry(std::move(e));
        if (!put)
          return std::move(put.error());
        size_t at = *put;
        auto& file = l.entries[at];
        file.chunks.clear();
        file.size = 0;
        // Read the data (sparse regions come back as offset gaps: zeros).
        std::string chunk;
        chunk.reserve(file_chunk_size);
        uint64_t logical = 0;
        auto emit = [&]() -> caf::error {
          file.chunks.push_back({chunk_id{}, static_cast<uint32_t>(chunk.size())});
          file.size += chunk.size();
          batch.bytes += chunk.size();
          batch.owners.emplace_back(at, file.chunks.size() - 1);
          batch.data.push_back(std::move(chunk));
          chunk = std::string{};
          chunk.reserve(file_chunk_size);
          return {};
        };
        auto append = [&](const char* p, size_t n) -> caf::error {
          while (n > 0) {
            size_t take = std::min(n, file_chunk_size - chunk.size());
            if (p != nullptr)
              chunk.append(p, take);
            else
              chunk.append(take, '\0');
            if (p != nullptr)
              p += take;
            n -= take;
            logical += take;
            if (chunk.size() == file_chunk_size)
              if (auto err = emit())
                return err;
          }
          return {};
        };
        for (;;) {
          const void* block = nullptr;
          size_t size = 0;
          la_int64_t offset = 0;
          int r = archive_read_data_block(a.get(), &block, &size, &offset);
          if (r == ARCHIVE_EOF)
            break;
          if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            auto err = archive_error("reading member \"" + name + "\" of");
            return err;
          }
          if (static_cast<uint64_t>(offset) > logical)
            if (auto err = append(nullptr, static_cast<uint64_t>(offset) - logical))
              return err;
          if (auto err = append(static_cast<const char*>(block), size))
            return err;
        }
        auto declared = archive_entry_size_is_set(member) ? archive_entry_size(member) : 0;
        if (declared > 0 && logical < static_cast<uint64_t>(declared))
          if (auto err = append(nullptr, static_cast<uint64_t>(declared) - logical))
            return err; // a sparse file ending in a hole
        if (!chunk.empty())
          if (auto err = emit())
            return err;
        if (batch.bytes >= batch_bytes)
          if (auto err = flush())
            return err;
        break;
      }
      case AE_IFCHR:
        return member_error(name, "is a character device; registry layers may not contain "
                                  "device nodes");
      case AE_IFBLK:
        return member_error(name, "is a block device; registry layers may not contain "
                                  "device nodes");
      case AE_IFIFO:
        return member_error(name, "is a fifo; registry layers may not contain fifos");
      case AE_IFSOCK:
        return member_error(name, "is a socket; registry layers may not contain sockets");
      default:
        return member_error(name, "has an unsupported type");
    }
  }
  if (auto err = flush())
    return err;
  // A file replaced by a later member of another kind keeps no chunks (put_entry replaced it).
  if (auto err = validate(l, true))
    return make_error(code_of(err), what + ": " + message_of(err));
  return l;
}

caf::expected<layer> import_tar(std::string_view archive, chunk_store& store,
                                const std::string& what) {
  bool served = false;
  byte_source source = [&]() -> caf::expected<std::string_view> {
    if (served)
      return std::string_view{};
    served = true;
    return archive;
  };
  return import_tar(source, store, what);
}

} // namespace shoal::fs
