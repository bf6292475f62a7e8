// Aggregates of `member` leave trailing fields at their defaults on purpose.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include "fs/tar_import.hpp"

#include <filesystem>
#include <string>
#include <vector>

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <catch2/catch.hpp>

#include "fs/tree.hpp"
#include "runtime/errc.hpp"
#include "tests/fs/fs_test_support.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::fs;
using shoal::test::random_bytes;
using shoal::test::read_file;
using shoal::test::temp_dir;

namespace {

enum class compression { none, gzip, zstd };

struct member {
  std::string path;
  mode_t type = AE_IFREG;
  std::string data;   ///< file data
  std::string link;   ///< symlink target
  std::string hardlink;
  unsigned mode = 0644;
  dev_t rdev = 0;
};

/// Writes a tar (pax) archive in memory with libarchive's writer.
std::string make_tar(const std::vector<member>& members, compression c) {
  struct archive* a = archive_write_new();
  REQUIRE(a != nullptr);
  REQUIRE(archive_write_set_format_pax(a) == ARCHIVE_OK);
  if (c == compression::gzip)
    REQUIRE(archive_write_add_filter_gzip(a) == ARCHIVE_OK);
  else if (c == compression::zstd)
    REQUIRE(archive_write_add_filter_zstd(a) == ARCHIVE_OK);
  else
    REQUIRE(archive_write_add_filter_none(a) == ARCHIVE_OK);
  std::vector<char> buffer(64u << 20);
  size_t used = 0;
  REQUIRE(archive_write_open_memory(a, buffer.data(), buffer.size(), &used) == ARCHIVE_OK);
  for (const auto& m : members) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, m.path.c_str());
    archive_entry_set_perm(e, m.mode);
    archive_entry_set_mtime(e, 1'650'000'000, 42);
    archive_entry_set_uid(e, 7);
    archive_entry_set_gid(e, 8);
    if (!m.hardlink.empty()) {
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_hardlink(e, m.hardlink.c_str());
      archive_entry_set_size(e, 0);
    } else {
      archive_entry_set_filetype(e, m.type);
      if (m.type == AE_IFREG)
        archive_entry_set_size(e, static_cast<la_int64_t>(m.data.size()));
      if (m.type == AE_IFLNK)
        archive_entry_set_symlink(e, m.link.c_str());
      if (m.type == AE_IFCHR || m.type == AE_IFBLK)
        archive_entry_set_rdev(e, m.rdev);
    }
    REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
    if (m.type == AE_IFREG && m.hardlink.empty() && !m.data.empty())
      REQUIRE(archive_write_data(a, m.data.data(), m.data.size())
              == static_cast<la_ssize_t>(m.data.size()));
    archive_entry_free(e);
  }
  REQUIRE(archive_write_close(a) == ARCHIVE_OK);
  archive_write_free(a);
  return std::string(buffer.data(), used);
}

const entry* find(const layer& l, const std::string& path) {
  for (const auto& e : l.entries)
    if (e.path == path)
      return &e;
  return nullptr;
}

std::vector<member> sample_members(const std::string& big) {
  return {
    {"./", AE_IFDIR, "", "", "", 0755},
    {"./bin/", AE_IFDIR, "", "", "", 0755},
    {"./bin/busybox", AE_IFREG, big, "", "", 04755},
    {"./bin/sh", AE_IFLNK, "", "busybox"},
    {"./bin/ash", AE_IFREG, "", "", "./bin/busybox"},
    {"./etc/", AE_IFDIR, "", "", "", 0755},
    {"./etc/.wh.motd", AE_IFREG, ""},
    {"./etc/hosts", AE_IFREG, "127.0.0.1 localhost\n", "", "", 0644},
    {"./var/cache/.wh..wh..opq", AE_IFREG, ""},
    {"./var/cache/fresh", AE_IFREG, "fresh"},
    {"./empty", AE_IFREG, ""},
  };
}

} // namespace

TEST_CASE("tarballs import as layers with OCI whiteouts translated, plain, gzip and zstd") {
  auto c = GENERATE(compression::none, compression::gzip, compression::zstd);
  temp_dir dir;
  auto store = shoal::test::open_store(dir.sub("store"));
  auto big = random_bytes(2 * file_chunk_size + 999, 51);
  auto tar = make_tar(sample_members(big), c);
  auto l = import_tar(std::string_view{tar}, *store, "layer sha256:test");
  if (!l)
    FAIL("import failed: " << shoal::message_of(l.error()));
  REQUIRE(find(*l, "") != nullptr);
  auto* busybox = find(*l, "bin/busybox");
  REQUIRE(busybox != nullptr);
  CHECK(busybox->kind == entry_kind::file);
  CHECK(busybox->mode == 04755);
  CHECK(busybox->uid == 7);
  CHECK(busybox->mtime_ns == 1'650'000'000'000'000'042);
  CHECK(busybox->size == big.size());
  REQUIRE(busybox->chunks.size() == 3);
  CHECK(busybox->chunks[0].id == hash_chunk(std::string_view{big}.substr(0, file_chunk_size)));
  CHECK(find(*l, "bin/sh")->kind == entry_kind::symlink);
  CHECK(find(*l, "bin/sh")->link_target == "busybox");
  CHECK(find(*l, "bin/ash")->kind == entry_kind::hardlink);
  CHECK(find(*l, "bin/ash")->link_target == "bin/busybox");
  REQUIRE(find(*l, "etc/motd") != nullptr);
  CHECK(find(*l, "etc/motd")->kind == entry_kind::whiteout);
  CHECK(find(*l, "etc/.wh.motd") == nullptr);
  REQUIRE(find(*l, "var/cache") != nullptr);
  CHECK(find(*l, "var/cache")->kind == entry_kind::opaque_directory);
  CHECK(find(*l, "empty")->chunks.empty());

  // Applied over a lower layer and materialised.
  layer lower;
  entry motd;
  motd.path = "etc/motd";
  motd.mode = 0644;
  entry stale;
  stale.path = "var/cache/stale";
  stale.mode = 0644;
  lower.entries = {motd, stale};
  auto merged = merge({lower, *l});
  CHECK(find(merged, "etc/motd") == nullptr);
  CHECK(find(merged, "var/cache/stale") == nullptr);
  auto out = dir.sub("out");
  REQUIRE_FALSE(materialise(merged, *store, out));
  CHECK(read_file(out + "/bin/busybox") == big);
  CHECK(read_file(out + "/var/cache/fresh") == "fresh");
  CHECK(read_file(out + "/etc/hosts") == "127.0.0.1 localhost\n");
}

TEST_CASE("a tarball streamed in small blocks imports the same as in memory") {
  temp_dir dir;
  auto store = shoal::test::open_store(dir.sub("store"));
  auto tar = make_tar(sample_members(random_bytes(1'500'000, 52)), compression::gzip);
  size_t pos = 0;
  byte_source source = [&]() -> caf::expected<std::string_view> {
    auto n = std::min<size_t>(777, tar.size() - pos);
    std::string_view out{tar.data() + pos, n};
    pos += n;
    return out;
  };
  auto streamed = import_tar(source, *store, "streamed");
  REQUIRE(streamed);
  auto whole = import_tar(std::string_view{tar}, *store, "whole");
  REQUIRE(whole);
  CHECK(encode(*streamed) == encode(*whole));
}

TEST_CASE("a tarball with a device node is rejected naming the member") {
  temp_dir dir;
  auto store = shoal::test::open_store(dir.sub("store"));
  auto tar = make_tar({{"dev/", AE_IFDIR, "", "", "", 0755},
                       {"dev/sda", AE_IFBLK, "", "", "", 0600, makedev(8, 0)}},
                      compression::none);
  auto l = import_tar(std::string_view{tar}, *store, "layer sha256:devices");
  REQUIRE_FALSE(l);
  CHECK(shoal::code_of(l.error()) == shoal::errc::invalid_argument);
  CHECK_THAT(shoal::message_of(l.error()), Catch::Contains("dev/sda"));
  CHECK_THAT(shoal::message_of(l.error()), Catch::Contains("layer sha256:devices"));
  auto fifo = make_tar({{"pipe", AE_IFIFO}}, compression::none);
  auto f = import_tar(std::string_view{fifo}, *store, "fifo layer");
  REQUIRE_FALSE(f);
  CHECK_THAT(shoal::message_of(f.error()), Catch::Contains("pipe"));
}

TEST_CASE("a tarball with a dot-dot path or an escaping hard link is rejected naming the member") {
  temp_dir dir;
  auto store = shoal::test::open_store(dir.sub("store"));
  auto tar = make_tar({{"ok", AE_IFREG, "fine"}, {"../x", AE_IFREG, "evil"}}, compression::zstd);
  auto l = import_tar(std::string_view{tar}, *store, "layer sha256:escape");
  REQUIRE_FALSE(l);
  CHECK(shoal::code_of(l.error()) == shoal::errc::invalid_argument);
  CHECK_THAT(shoal::message_of(l.error()), Catch::Contains("../x"));
  CHECK_THAT(shoal::message_of(l.error()), Catch::Contains("layer sha256:escape"));

  auto link = make_tar({{"etc/shadow-copy", AE_IFREG, "", "", "../../etc/shadow"}},
                       compression::none);
  auto h = import_tar(std::string_view{link}, *store, "layer sha256:link");
  REQUIRE_FALSE(h);
  CHECK_THAT(shoal::message_of(h.error()), Catch::Contains("etc/shadow-copy"));
  auto dangling = make_tar({{"a", AE_IFREG, "", "", "not/in/layer"}}, compression::none);
  auto d = import_tar(std::string_view{dangling}, *store, "layer sha256:dangling");
  REQUIRE_FALSE(d);
  CHECK_THAT(shoal::message_of(d.error()), Catch::Contains("not/in/layer"));
}

TEST_CASE("bytes that are not a tarball are an error naming the archive") {
  temp_dir dir;
  auto store = shoal::test::open_store(dir.sub("store"));
  auto l = import_tar(std::string_view{"definitely not a tar archive, just text........"}, *store,
                      "layer sha256:junk");
  REQUIRE_FALSE(l);
  CHECK_THAT(shoal::message_of(l.error()), Catch::Contains("layer sha256:junk"));
}
