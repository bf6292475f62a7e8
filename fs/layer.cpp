#include "fs/layer.hpp"

#include <algorithm>
#include <unordered_map>

#include <capnp/message.h>
#include <capnp/serialize-packed.h>
#include <kj/exception.h>
#include <kj/io.h>

#include "runtime/errc.hpp"
#include "schema/layer.capnp.h"

namespace shoal::fs {

std::string_view to_string(entry_kind kind) noexcept {
  switch (kind) {
    case entry_kind::file:
      return "file";
    case entry_kind::directory:
      return "directory";
    case entry_kind::symlink:
      return "symlink";
    case entry_kind::hardlink:
      return "hardlink";
    case entry_kind::whiteout:
      return "whiteout";
    case entry_kind::opaque_directory:
      return "opaque_directory";
  }
  return "unknown";
}

uint64_t layer::content_bytes() const {
  uint64_t total = 0;
  for (const auto& e : entries)
    if (e.kind == entry_kind::file)
      total += e.size;
  return total;
}

caf::expected<std::string> normalize_path(std::string_view path) {
  if (path.find('\0') != std::string_view::npos)
    return make_error(errc::invalid_argument,
                      "path \"" + std::string{path.substr(0, path.find('\0'))}
                        + "\\0...\" contains a NUL byte");
  std::string out;
  out.reserve(path.size());
  size_t i = 0;
  while (i <= path.size()) {
    size_t slash = path.find('/', i);
    if (slash == std::string_view::npos)
      slash = path.size();
    auto part = path.substr(i, slash - i);
    i = slash + 1;
    if (part.empty() || part == ".")
      continue;
    if (part == "..")
      return make_error(errc::invalid_argument,
                        "path \"" + std::string{path}
                          + "\" contains a \"..\" component; layer paths must stay inside the root");
    if (!out.empty())
      out.push_back('/');
    out.append(part);
  }
  return out;
}

namespace {

bool is_directory_kind(entry_kind k) {
  return k == entry_kind::directory || k == entry_kind::opaque_directory;
}

bool known_kind(entry_kind k) {
  return static_cast<uint8_t>(k) <= static_cast<uint8_t>(entry_kind::opaque_directory);
}

std::string quoted(const std::string& path) {
  return "\"" + (path.empty() ? std::string{"/"} : path) + "\"";
}

} // namespace

caf::error validate(layer& l, bool untrusted) {
  std::sort(l.entries.begin(), l.entries.end(),
            [](const entry& a, const entry& b) { return a.path < b.path; });
  std::unordered_map<std::string_view, const entry*> by_path;
  by_path.reserve(l.entries.size());
  for (size_t i = 0; i < l.entries.size(); ++i) {
    const auto& e = l.entries[i];
    auto norm = normalize_path(e.path);
    if (!norm)
      return std::move(norm.error());
    if (*norm != e.path)
      return make_error(errc::invalid_argument, "layer path \"" + e.path
                                                  + "\" is not normalised (expected \"" + *norm
                                                  + "\")");
    if (i > 0 && l.entries[i - 1].path == e.path)
      return make_error(errc::invalid_argument,
                        "layer path " + quoted(e.path) + " appears twice");
    if (!known_kind(e.kind))
      return make_error(errc::invalid_argument,
                        "layer entry " + quoted(e.path) + " has kind "
                          + std::to_string(static_cast<unsigned>(e.kind))
                          + (untrusted ? ": a device node or other special file, which a registry "
                                         "layer may not contain"
                                       : ", which this build does not know"));
    if ((e.mode & ~07777u) != 0)
      return make_error(errc::invalid_argument,
                        "layer entry " + quoted(e.path) + " has mode "
                          + std::to_string(e.mode) + " with file type bits"
                          + (untrusted ? " (a device node, fifo or socket), which a registry layer "
                                         "may not contain"
                                       : "; modes hold permission bits only"));
    if (e.path.empty() && !is_directory_kind(e.kind))
      return make_error(errc::invalid_argument,
                        "the root of a layer must be a directory, not a " + std::string{to_string(e.kind)});
    if (e.kind == entry_kind::file) {
      uint64_t total = 0;
      for (const auto& c : e.chunks) {
        if (c.size > max_chunk_size)
          return make_error(errc::invalid_argument, "layer entry " + quoted(e.path)
                                                      + " refers to a chunk larger than the limit");
        total += c.size;
      }
      if (total != e.size)
        return make_error(errc::invalid_argument,
                          "layer entry " + quoted(e.path) + " has size " + std::to_string(e.size)
                            + " but its chunks hold " + std::to_string(total) + " bytes");
    } else if (!e.chunks.empty()) {
      return make_error(errc::invalid_argument, "layer entry " + quoted(e.path) + " is a "
                                                  + std::string{to_string(e.kind)}
                                                  + " but has file chunks");
    }
    by_path.emplace(e.path, &e);
  }
  for (const auto& e : l.entries) {
    // Every ancestor present in the layer must be a directory: nothing below a symlink or a file.
    for (size_t slash = e.path.rfind('/'); slash != std::string::npos && slash > 0;
         slash = e.path.rfind('/', slash - 1)) {
      auto found = by_path.find(std::string_view{e.path}.substr(0, slash));
      if (found == by_path.end())
        continue; // implied directory
      auto k = found->second->kind;
      if (is_directory_kind(k) || k == entry_kind::whiteout)
        continue; // below a whiteout: the layer recreates the path after deleting the lower one
      return make_error(errc::invalid_argument,
                        "layer entry " + quoted(e.path) + " is below the "
                          + std::string{to_string(k)} + " " + quoted(found->second->path)
                          + "; a layer may only place entries inside directories");
    }
    if (e.kind == entry_kind::hardlink) {
      auto target = normalize_path(e.link_target);
      if (!target || *target != e.link_target || target->empty())
        return make_error(errc::invalid_argument,
                          "hardlink " + quoted(e.path) + " points to \"" + e.link_target
                            + "\", which is not a normalised path inside the layer");
      auto found = by_path.find(*target);
      if (found == by_path.end() || found->second->kind != entry_kind::file)
        return make_error(errc::invalid_argument,
                          "hardlink " + quoted(e.path) + " points to \"" + e.link_target
                            + "\", which is not a file of the same layer");
    }
  }
  return {};
}

std::string encode(const layer& l) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<wire::Layer>();
  auto entries = root.initEntries(static_cast<unsigned>(l.entries.size()));
  for (size_t i = 0; i < l.entries.size(); ++i) {
    const auto& e = l.entries[i];
    auto out = entries[static_cast<unsigned>(i)];
    out.setPath(capnp::Text::Reader{e.path.data(), e.path.size()});
    out.setKind(static_cast<wire::EntryKind>(e.kind));
    out.setMode(e.mode);
    out.setUid(e.uid);
    out.setGid(e.gid);
    out.setSize(e.size);
    out.setMtimeNs(e.mtime_ns);
    if (!e.link_target.empty())
      out.setLinkTarget(capnp::Text::Reader{e.link_target.data(), e.link_target.size()});
    if (!e.chunks.empty()) {
      auto chunks = out.initChunks(static_cast<unsigned>(e.chunks.size()));
      for (size_t c = 0; c < e.chunks.size(); ++c) {
        auto ref = chunks[static_cast<unsigned>(c)];
        ref.setId(capnp::Data::Reader{e.chunks[c].id.bytes.data(), 32});
        ref.setSize(e.chunks[c].size);
      }
    }
  }
  kj::VectorOutputStream stream;
  capnp::writePackedMessage(stream, message);
  auto bytes = stream.getArray();
  return std::string{reinterpret_cast<const char*>(bytes.begin()), bytes.size()};
}

caf::expected<layer> decode(std::string_view bytes) {
  layer l;
  kj::Maybe<kj::Exception> failure = kj::runCatchingExceptions([&] {
    kj::ArrayInputStream stream{
      kj::ArrayPtr<const kj::byte>{reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()}};
    capnp::ReaderOptions options;
    // A packed message expands at most 8x... per word of input, plus headers; large layers
    // (hundreds of thousands of entries) need more than the default 64 MiB traversal limit.
    options.traversalLimitInWords = std::max<uint64_t>(bytes.size() * 8 + 1024, 8u << 20);
    capnp::PackedMessageReader message{stream, options};
    auto root = message.getRoot<wire::Layer>();
    auto entries = root.getEntries();
    l.entries.reserve(entries.size());
    for (auto in : entries) {
      entry e;
      auto path = in.getPath();
      e.path.assign(path.begin(), path.size());
      e.kind = static_cast<entry_kind>(static_cast<uint16_t>(in.getKind()));
      e.mode = in.getMode();
      e.uid = in.getUid();
      e.gid = in.getGid();
      e.size = in.getSize();
      e.mtime_ns = in.getMtimeNs();
      auto target = in.getLinkTarget();
      e.link_target.assign(target.begin(), target.size());
      auto chunks = in.getChunks();
      e.chunks.reserve(chunks.size());
      for (auto ref : chunks) {
        auto id = chunk_id::from_raw(std::string_view{
          reinterpret_cast<const char*>(ref.getId().begin()), ref.getId().size()});
        if (!id)
          kj::throwFatalException(KJ_EXCEPTION(FAILED, "a chunk id is not 32 bytes"));
        e.chunks.push_back({*id, ref.getSize()});
      }
      l.entries.push_back(std::move(e));
    }
  });
  KJ_IF_MAYBE (e, failure) {
    return make_error(errc::invalid_argument,
                      "the layer manifest (" + std::to_string(bytes.size())
                        + " bytes) does not decode: " + std::string{e->getDescription().cStr()});
  }
  if (auto err = validate(l, false))
    return err;
  return l;
}

caf::expected<chunk_id> store_layer(chunk_store& store, const layer& l) {
  auto bytes = encode(l);
  if (bytes.size() > max_chunk_size)
    return make_error(errc::resource_exhausted,
                      "the layer manifest has " + std::to_string(bytes.size())
                        + " bytes, more than the chunk limit of " + std::to_string(max_chunk_size)
                        + " (" + std::to_string(l.entries.size()) + " entries)");
  auto ids = store.put({std::string_view{bytes}});
  if (!ids)
    return std::move(ids.error());
  return ids->front();
}

caf::expected<layer> load_layer(const chunk_store& store, const chunk_id& digest) {
  auto bytes = store.get(digest);
  if (!bytes)
    return std::move(bytes.error());
  auto l = decode(*bytes);
  if (!l)
    return make_error(code_of(l.error()),
                      "layer " + digest.hex() + ": " + message_of(l.error()));
  return l;
}

} // namespace shoal::fs
