#include "fs/tree.hpp"

#include <filesystem>
#include <map>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "runtime/errc.hpp"
#include "tests/fs/fs_test_support.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::fs;
using shoal::test::random_bytes;
using shoal::test::read_file;
using shoal::test::temp_dir;
using shoal::test::write_file;

namespace {

struct stat lstat_ok(const std::string& path) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0)
    FAIL("lstat(" << path << ") failed: " << std::strerror(errno));
  return st;
}

void set_mtime(const std::string& path, int64_t sec, long nsec) {
  struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0);
}

std::string link_target(const std::string& path) {
  char buf[4096];
  auto n = ::readlink(path.c_str(), buf, sizeof(buf));
  REQUIRE(n >= 0);
  return std::string(buf, static_cast<size_t>(n));
}

const entry* find(const layer& l, const std::string& path) {
  for (const auto& e : l.entries)
    if (e.path == path)
      return &e;
  return nullptr;
}

layer scan_ok(const std::string& root, chunk_store& store, scan_options options = {},
              std::vector<std::string>* skipped = nullptr) {
  auto l = scan_tree(root, store, options, skipped);
  if (!l)
    FAIL("scan_tree(" << root << ") failed: " << shoal::message_of(l.error()));
  return *l;
}

entry make(std::string path, entry_kind kind, std::string target = {}) {
  entry e;
  e.path = std::move(path);
  e.kind = kind;
  e.mode = kind == entry_kind::file ? 0644 : 0755;
  e.link_target = std::move(target);
  return e;
}

} // namespace

TEST_CASE("a scanned tree materialises back with its files, links, modes and mtimes") {
  temp_dir dir;
  auto store = shoal::test::open_store(dir.sub("store"));
  auto src = dir.sub("src");
  std::filesystem::create_directories(src + "/usr/bin");
  std::filesystem::create_directories(src + "/etc/private");
  std::filesystem::create_directories(dir.sub("outside"));
  auto big = random_bytes(3 * file_chunk_size + 12345, 5);
  write_file(src + "/usr/bin/big", big);
  write_file(src + "/etc/hosts", "127.0.0.1 localhost\n");
  write_file(src + "/etc/empty", "");
  write_file(src + "/etc/private/key", "secret");
  REQUIRE(::link((src + "/usr/bin/big").c_str(), (src + "/usr/bin/big-again").c_str()) == 0);
  REQUIRE(::symlink("big", (src + "/usr/bin/rel").c_str()) == 0);
  REQUIRE(::symlink(dir.sub("outside").c_str(), (src + "/abs").c_str()) == 0);
  REQUIRE(::chmod((src + "/usr/bin/big").c_str(), 04755) == 0);
  REQUIRE(::chmod((src + "/etc/private").c_str(), 0700) == 0);
  REQUIRE(::chmod((src + "/etc/hosts").c_str(), 0600) == 0);
  REQUIRE(::lchown((src + "/etc/hosts").c_str(), 1234, 5678) == 0);
  set_mtime(src + "/etc/hosts", 1'600'000'000, 123'456'789);
  set_mtime(src + "/usr/bin/rel", 1'500'000'000, 1);
  set_mtime(src + "/abs", 1'400'000'000, 2);
  set_mtime(src + "/etc/private", 1'300'000'000, 3);
  set_mtime(src + "/etc", 1'200'000'000, 4);
  auto outside_before = lstat_ok(dir.sub("outside"));

  auto l = scan_ok(src, *store);
  REQUIRE(find(l, "") != nullptr);
  REQUIRE(find(l, "usr/bin/big") != nullptr);
  CHECK(find(l, "usr/bin/big")->kind == entry_kind::file);
  CHECK(find(l, "usr/bin/big")->chunks.size() == 4);
  CHECK(find(l, "usr/bin/big-again")->kind == entry_kind::hardlink);
  CHECK(find(l, "usr/bin/big-again")->link_target == "usr/bin/big");
  CHECK(find(l, "abs")->kind == entry_kind::symlink);
  CHECK(find(l, "etc/hosts")->mtime_ns == 1'600'000'000'123'456'789);
  CHECK(l.content_bytes() == big.size() + 20 + 6);

  auto digest = store_layer(*store, l);
  REQUIRE(digest);
  auto loaded = load_layer(*store, *digest);
  REQUIRE(loaded);
  auto out = dir.sub("out");
  auto err = materialise(merge({*loaded}), *store, out);
  REQUIRE_FALSE(err);

  CHECK(read_file(out + "/usr/bin/big") == big);
  CHECK(read_file(out + "/etc/hosts") == "127.0.0.1 localhost\n");
  CHECK(read_file(out + "/etc/empty").empty());
  CHECK(read_file(out + "/etc/private/key") == "secret");
  CHECK(lstat_ok(out + "/usr/bin/big").st_ino == lstat_ok(out + "/usr/bin/big-again").st_ino);
  CHECK(lstat_ok(out + "/usr/bin/big").st_nlink == 2);
  CHECK((lstat_ok(out + "/usr/bin/big").st_mode & 07777) == 04755);
  CHECK((lstat_ok(out + "/etc/private").st_mode & 07777) == 0700);
  auto hosts = lstat_ok(out + "/etc/hosts");
  CHECK((hosts.st_mode & 07777) == 0600);
  CHECK(hosts.st_uid == 1234);
  CHECK(hosts.st_gid == 5678);
  CHECK(hosts.st_mtim.tv_sec == 1'600'000'000);
  CHECK(hosts.st_mtim.tv_nsec == 123'456'789);
  CHECK(link_target(out + "/usr/bin/rel") == "big");
  CHECK(lstat_ok(out + "/usr/bin/rel").st_mtim.tv_sec == 1'500'000'000);
  // The absolute symlink is a symlink, and its target outside the tree was not touched.
  auto abs = lstat_ok(out + "/abs");
  CHECK(S_ISLNK(abs.st_mode));
  CHECK(link_target(out + "/abs") == dir.sub("outside"));
  CHECK(abs.st_mtim.tv_sec == 1'400'000'000);
  auto outside_after = lstat_ok(dir.sub("outside"));
  CHECK(outside_after.st_mtim.tv_sec == outside_before.st_mtim.tv_sec);
  CHECK(outside_after.st_mtim.tv_nsec == outside_before.st_mtim.tv_nsec);
  CHECK(std::filesystem::is_empty(dir.sub("outside")));
  // Directory mtimes are set after their contents.
  CHECK(lstat_ok(out + "/etc/private").st_mtim.tv_sec == 1'300'000'000);
  CHECK(lstat_ok(out + "/etc").st_mtim.tv_sec == 1'200'000'000);
  CHECK(lstat_ok(out + "/etc").st_mtim.tv_nsec == 4);

  // A second materialisation into a non-empty directory is refused.
  auto again = materialise(merge({*loaded}), *store, out);
  REQUIRE(again);
  CHECK_THAT(shoal::message_of(again), Catch::Contains("not empty"));
}

TEST_CASE("many small files are stored in one batch and come back") {
  temp_dir dir;
  auto store = shoal::test::open_store(dir.sub("store"));
  auto src = dir.sub("src");
  std::filesystem::create_directories(src);
  for (int i = 0; i < 2000; ++i)
    write_file(src + "/f" + std::to_string(i), "content of file " + std::to_string(i % 1500));
  auto l = scan_ok(src, *store);
  CHECK(l.entries.size() == 2001);
  auto s = store->stats();
  CHECK(s.chunks == 1500);
  CHECK(s.deduplicated == 500);
  auto out = dir.sub("out");
  REQUIRE_FALSE(materialise(l, *store, out));
  CHECK(read_file(out + "/f1999") == "content of file 499");
  CHECK(read_file(out + "/f7") == "content of file 7");
}

TEST_CASE("an overlay upper dir scans whiteouts and opaque dirs, and merge applies them") {
  temp_dir dir;
  auto store = shoal::test::open_store(dir.sub("store"));
  auto lower = dir.sub("lower");
  for (auto d : {"/etc", "/gone/deep", "/opq", "/keep"})
    std::filesystem::create_directories(lower + d);
  write_file(lower + "/etc/a", "old a");
  write_file(lower + "/etc/b", "b");
  write_file(lower + "/gone/deep/x", "x");
  write_file(lower + "/gonefile", "y");
  write_file(lower + "/opq/old", "hidden");
  write_file(lower + "/keep/k", "k");
  auto upper = dir.sub("upper");
  std::filesystem::create_directories(upper + "/etc");
  std::filesystem::create_directories(upper + "/opq");
  write_file(upper + "/etc/a", "new a");
  write_file(upper + "/opq/new", "new");
  REQUIRE(::mknod((upper + "/gone").c_str(), S_IFCHR | 0000, makedev(0, 0)) == 0);
  REQUIRE(::mknod((upper + "/gonefile").c_str(), S_IFCHR | 0000, makedev(0, 0)) == 0);
  REQUIRE(::mkfifo((upper + "/fifo").c_str(), 0644) == 0);
  REQUIRE(::setxattr((upper + "/opq").c_str(), "trusted.overlay.opaque", "y", 1, 0) == 0);

  auto low = scan_ok(lower, *store);
  std::vector<std::string> skipped;
  scan_options overlay;
  overlay.overlay_upper = true;
  auto up = scan_ok(upper, *store, overlay, &skipped);
  REQUIRE(find(up, "gone") != nullptr);
  CHECK(find(up, "gone")->kind == entry_kind::whiteout);
  CHECK(find(up, "opq")->kind == entry_kind::opaque_directory);
  CHECK(skipped == std::vector<std::string>{"fifo"});
  // Without overlay_upper the whiteout is just a device node: skipped.
  std::vector<std::string> plain_skipped;
  auto plain = scan_ok(upper, *store, {}, &plain_skipped);
  CHECK(find(plain, "gone") == nullptr);
  CHECK(find(plain, "opq")->kind == entry_kind::directory);
  CHECK(plain_skipped.size() == 3);

  auto merged = merge({low, up});
  for (const auto& e : merged.entries) {
    CHECK(e.kind != entry_kind::whiteout);
    CHECK(e.kind != entry_kind::opaque_directory);
  }
  CHECK(find(merged, "gone") == nullptr);
  CHECK(find(merged, "gone/deep") == nullptr);
  CHECK(find(merged, "gone/deep/x") == nullptr);
  CHECK(find(merged, "gonefile") == nullptr);
  CHECK(find(merged, "opq/old") == nullptr);
  REQUIRE(find(merged, "opq") != nullptr);
  CHECK(find(merged, "opq")->kind == entry_kind::directory);
  CHECK(find(merged, "opq/new") != nullptr);
  CHECK(find(merged, "keep/k") != nullptr);
  CHECK(find(merged, "etc/b") != nullptr);
  REQUIRE(find(merged, "etc/a") != nullptr);
  CHECK(find(merged, "etc/a")->chunks[0].id == hash_chunk("new a"));
  CHECK(std::is_sorted(merged.entries.begin(), merged.entries.end(),
                       [](const entry& a, const entry& b) { return a.path < b.path; }));

  auto out = dir.sub("out");
  REQUIRE_FALSE(materialise(merged, *store, out));
  CHECK(read_file(out + "/etc/a") == "new a");
  CHECK(read_file(out + "/keep/k") == "k");
  CHECK_FALSE(std::filesystem::exists(out + "/gone"));
  CHECK_FALSE(std::filesystem::exists(out + "/opq/old"));
}

TEST_CASE("merge lets a later file hide a lower directory and keeps hardlinks whose target changed") {
  layer lower;
  auto target = make("bin/tool", entry_kind::file);
  target.chunks = {{hash_chunk("v1"), 2}};
  target.size = 2;
  lower.entries = {make("bin", entry_kind::directory), target,
                   make("bin/alias", entry_kind::hardlink, "bin/tool"),
                   make("data", entry_kind::directory), make("data/x", entry_kind::file)};
  layer upper;
  auto replaced = make("bin/tool", entry_kind::file);
  replaced.chunks = {{hash_chunk("v2"), 2}};
  replaced.size = 2;
  upper.entries = {replaced, make("data", entry_kind::symlink, "/elsewhere")};
  auto merged = merge({lower, upper});
  REQUIRE(find(merged, "data") != nullptr);
  CHECK(find(merged, "data")->kind == entry_kind::symlink);
  CHECK(find(merged, "data/x") == nullptr);
  REQUIRE(find(merged, "bin/alias") != nullptr);
  CHECK(find(merged, "bin/alias")->kind == entry_kind::file);
  REQUIRE(find(merged, "bin/alias")->chunks.size() == 1);
  CHECK(find(merged, "bin/alias")->chunks[0].id == hash_chunk("v1"));
  CHECK(find(merged, "bin/tool")->chunks[0].id == hash_chunk("v2"));
  CHECK_FALSE(validate(merged, false));
}

TEST_CASE("materialise refuses a layer that would write through a symlink") {
  temp_dir dir;
  auto store = shoal::test::open_store(dir.sub("store"));
  std::filesystem::create_directories(dir.sub("victim"));
  auto ids = store->put({std::string_view{"pwned"}});
  REQUIRE(ids);
  layer l;
  auto evil = make("lib/evil", entry_kind::file);
  evil.chunks = {{(*ids)[0], 5}};
  evil.size = 5;
  l.entries = {make("lib", entry_kind::symlink, dir.sub("victim")), evil};
  auto err = materialise(l, *store, dir.sub("out"));
  REQUIRE(err);
  CHECK(shoal::code_of(err) == shoal::errc::invalid_argument);
  CHECK_THAT(shoal::message_of(err), Catch::Contains("lib/evil"));
  CHECK(std::filesystem::is_empty(dir.sub("victim")));
  CHECK_FALSE(std::filesystem::exists(dir.sub("out/lib")));
}

TEST_CASE("materialise with link_from hard-links unchanged files from the base tree") {
  temp_dir dir;
  auto store = shoal::test::open_store(dir.sub("store"));
  auto src = dir.sub("src");
  std::filesystem::create_directories(src + "/lib");
  write_file(src + "/lib/same.so", random_bytes(200'000, 41));
  write_file(src + "/lib/changes.so", "version 1");
  auto base = scan_ok(src, *store);
  REQUIRE_FALSE(materialise(base, *store, dir.sub("base")));

  write_file(src + "/lib/changes.so", "version 2");
  write_file(src + "/lib/new", "new");
  auto child = scan_ok(src, *store);
  materialise_options options;
  options.link_from = dir.sub("base");
  options.link_base = &base;
  REQUIRE_FALSE(materialise(child, *store, dir.sub("child"), options));

  CHECK(lstat_ok(dir.sub("child/lib/same.so")).st_ino
        == lstat_ok(dir.sub("base/lib/same.so")).st_ino);
  CHECK(lstat_ok(dir.sub("base/lib/same.so")).st_nlink == 2);
  CHECK(lstat_ok(dir.sub("child/lib/changes.so")).st_ino
        != lstat_ok(dir.sub("base/lib/changes.so")).st_ino);
  CHECK(read_file(dir.sub("child/lib/changes.so")) == "version 2");
  CHECK(read_file(dir.sub("base/lib/changes.so")) == "version 1");
  CHECK(read_file(dir.sub("child/lib/new")) == "new");
  CHECK(read_file(dir.sub("child/lib/same.so")) == random_bytes(200'000, 41));
}
