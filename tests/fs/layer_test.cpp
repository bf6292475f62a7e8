#include "fs/layer.hpp"

#include <string>

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "runtime/errc.hpp"
#include "tests/fs/fs_test_support.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::fs;
using shoal::test::temp_dir;

namespace {

entry make(std::string path, entry_kind kind, std::string target = {}) {
  entry e;
  e.path = std::move(path);
  e.kind = kind;
  e.mode = kind == entry_kind::file ? 0644 : 0755;
  e.link_target = std::move(target);
  return e;
}

std::string normalized(std::string_view p) {
  auto n = normalize_path(p);
  if (!n)
    FAIL("normalize_path(" << p << ") failed: " << shoal::message_of(n.error()));
  return *n;
}

} // namespace

TEST_CASE("paths are normalised to relative paths without dot components") {
  CHECK(normalized("/usr/bin/env") == "usr/bin/env");
  CHECK(normalized("./etc//passwd") == "etc/passwd");
  CHECK(normalized("a/./b/") == "a/b");
  CHECK(normalized("./") == "");
  CHECK(normalized("/") == "");
  CHECK(normalized("") == "");
  CHECK(normalized("a..b/..c") == "a..b/..c");
}

TEST_CASE("paths with a dot-dot component or a NUL byte are rejected") {
  for (std::string_view bad : {"../x", "a/../../etc", "/..", "a/..", ".."}) {
    auto n = normalize_path(bad);
    REQUIRE_FALSE(n);
    CHECK(shoal::code_of(n.error()) == shoal::errc::invalid_argument);
    CHECK_THAT(shoal::message_of(n.error()), Catch::Contains(std::string{bad}));
  }
  auto nul = normalize_path(std::string_view{"a\0b", 3});
  REQUIRE_FALSE(nul);
  CHECK_THAT(shoal::message_of(nul.error()), Catch::Contains("NUL"));
}

TEST_CASE("validate sorts entries and accepts implied parents") {
  layer l;
  l.entries = {make("usr/bin/sh", entry_kind::symlink, "/bin/busybox"),
               make("etc", entry_kind::directory), make("", entry_kind::directory),
               make("etc/hosts", entry_kind::file), make("etc/hosts2", entry_kind::hardlink,
                                                         "etc/hosts")};
  REQUIRE_FALSE(validate(l, true));
  CHECK(l.entries[0].path == "");
  CHECK(l.entries[1].path == "etc");
  CHECK(l.entries.back().path == "usr/bin/sh");
}

TEST_CASE("validate rejects entries below a symlink of the same layer") {
  layer l;
  l.entries = {make("lib", entry_kind::symlink, "/"), make("lib/evil", entry_kind::file)};
  auto err = validate(l, false);
  REQUIRE(err);
  CHECK(shoal::code_of(err) == shoal::errc::invalid_argument);
  CHECK_THAT(shoal::message_of(err), Catch::Contains("lib/evil"));
  CHECK_THAT(shoal::message_of(err), Catch::Contains("symlink"));
}

TEST_CASE("validate rejects duplicates, unnormalised paths and escaping hardlinks") {
  layer dup;
  dup.entries = {make("a", entry_kind::directory), make("a", entry_kind::file)};
  CHECK(validate(dup, false));
  layer unnorm;
  unnorm.entries = {make("a//b", entry_kind::file)};
  CHECK(validate(unnorm, false));
  layer dotdot;
  dotdot.entries = {make("a/../b", entry_kind::file)};
  CHECK(validate(dotdot, false));
  layer link;
  link.entries = {make("x", entry_kind::hardlink, "../etc/shadow")};
  auto err = validate(link, true);
  REQUIRE(err);
  CHECK_THAT(shoal::message_of(err), Catch::Contains("\"x\""));
  layer size_mismatch;
  size_mismatch.entries = {make("f", entry_kind::file)};
  size_mismatch.entries[0].size = 5;
  CHECK(validate(size_mismatch, false));
}

TEST_CASE("validate rejects device nodes in untrusted layers") {
  layer dev_mode;
  auto e = make("dev/sda", entry_kind::file);
  e.mode = S_IFBLK | 0600;
  dev_mode.entries = {e};
  auto err = validate(dev_mode, true);
  REQUIRE(err);
  CHECK_THAT(shoal::message_of(err), Catch::Contains("dev/sda"));
  CHECK_THAT(shoal::message_of(err), Catch::Contains("device"));

  layer dev_kind;
  dev_kind.entries = {make("dev/null", static_cast<entry_kind>(9))};
  auto err2 = validate(dev_kind, true);
  REQUIRE(err2);
  CHECK_THAT(shoal::message_of(err2), Catch::Contains("dev/null"));
  CHECK_THAT(shoal::message_of(err2), Catch::Contains("device"));

  layer fine;
  fine.entries = {make("a", entry_kind::whiteout), make("b", entry_kind::opaque_directory)};
  CHECK_FALSE(validate(fine, true));
}

TEST_CASE("a layer survives encode and decode unchanged") {
  layer l;
  auto f = make("bin/busybox", entry_kind::file);
  f.mode = 04755;
  f.uid = 1000;
  f.gid = 2000;
  f.mtime_ns = 1'700'000'000'123'456'789;
  f.chunks = {{hash_chunk("one"), 1u << 20}, {hash_chunk("two"), 17}};
  f.size = (1u << 20) + 17;
  l.entries = {make("", entry_kind::directory), make("bin", entry_kind::opaque_directory), f,
               make("bin/sh", entry_kind::symlink, "busybox"),
               make("bin/ash", entry_kind::hardlink, "bin/busybox"),
               make("old", entry_kind::whiteout)};
  l.entries[5].mtime_ns = -5;
  REQUIRE_FALSE(validate(l, false));
  auto bytes = encode(l);
  auto back = decode(bytes);
  REQUIRE(back);
  REQUIRE(back->entries.size() == l.entries.size());
  for (size_t i = 0; i < l.entries.size(); ++i) {
    const auto& a = l.entries[i];
    const auto& b = back->entries[i];
    CHECK(a.path == b.path);
    CHECK(a.kind == b.kind);
    CHECK(a.mode == b.mode);
    CHECK(a.uid == b.uid);
    CHECK(a.gid == b.gid);
    CHECK(a.size == b.size);
    CHECK(a.mtime_ns == b.mtime_ns);
    CHECK(a.link_target == b.link_target);
    REQUIRE(a.chunks.size() == b.chunks.size());
    for (size_t c = 0; c < a.chunks.size(); ++c) {
      CHECK(a.chunks[c].id == b.chunks[c].id);
      CHECK(a.chunks[c].size == b.chunks[c].size);
    }
  }
  CHECK(back->content_bytes() == f.size);
  CHECK(to_string(entry_kind::opaque_directory) == "opaque_directory");
  auto garbage = decode("this is not a capnp message at all");
  REQUIRE_FALSE(garbage);
  CHECK(shoal::code_of(garbage.error()) == shoal::errc::invalid_argument);
}

TEST_CASE("a large layer round-trips through the chunk store") {
  temp_dir dir;
  auto store = shoal::test::open_store(dir.sub("store"));
  layer l;
  for (int i = 0; i < 200'000; ++i) {
    auto e = make("d" + std::to_string(i % 100) + "/file-" + std::to_string(i), entry_kind::file);
    e.chunks = {{hash_chunk(std::to_string(i)), 10}};
    e.size = 10;
    l.entries.push_back(std::move(e));
  }
  REQUIRE_FALSE(validate(l, false));
  auto digest = store_layer(*store, l);
  REQUIRE(digest);
  CHECK(*digest == hash_chunk(encode(l)));
  auto back = load_layer(*store, *digest);
  REQUIRE(back);
  REQUIRE(back->entries.size() == l.entries.size());
  CHECK(back->entries[12345].path == l.entries[12345].path);
  CHECK(back->entries[12345].chunks[0].id == l.entries[12345].chunks[0].id);
  auto absent = load_layer(*store, hash_chunk("nope"));
  REQUIRE_FALSE(absent);
  CHECK(shoal::code_of(absent.error()) == shoal::errc::not_found);
}
