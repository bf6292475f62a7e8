#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "runtime/container/apt_sources.hpp"
#include "runtime/errc.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal::container;
using shoal::test::temp_dir;

namespace {

// What Debian 12's installer writes (this machine's file, with a comment inside each stanza).
const char* debian_sources = R"(Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.example.org/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://security.example.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
)";

void write(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

} // namespace

TEST_CASE("the deb822 reader finds the URI of the stanza whose suites include the suite") {
  CHECK(mirror_from_deb822(debian_sources, "bookworm") == "http://deb.example.org/debian");
  CHECK(mirror_from_deb822(debian_sources, "bookworm-security")
        == "http://security.example.org/debian-security");
  CHECK(mirror_from_deb822(debian_sources, "bookworm-updates") == "http://deb.example.org/debian");
  CHECK_FALSE(mirror_from_deb822(debian_sources, "trixie"));
  CHECK_FALSE(mirror_from_deb822(debian_sources, "book")); // whole suite names only
}

TEST_CASE("the deb822 reader skips disabled, source-only and URI-less stanzas") {
  const char* text = "Types: deb-src\nURIs: http://src.example.org/debian\nSuites: bookworm\n\n"
                     "Types: deb\nURIs: http://off.example.org/debian\nSuites: bookworm\n"
                     "Enabled: no\n\n"
                     "types: deb\nsuites: bookworm\n\n"
                     "Types: deb deb-src\nURIs: http://one.example.org/debian\n"
                     "  http://two.example.org/debian\nSuites: bookworm\n";
  CHECK(mirror_from_deb822(text, "bookworm") == "http://one.example.org/debian");
}

TEST_CASE("the one-line reader handles options, comments and deb-src lines") {
  const char* text = "# deb http://commented.example.org/debian bookworm main\n"
                     "deb-src http://src.example.org/debian bookworm main\n"
                     "deb http://security.example.org/debian-security bookworm-security main\n"
                     "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] "
                     "http://mirror.example.org/debian/ bookworm main contrib # trailing\n";
  CHECK(mirror_from_one_line(text, "bookworm") == "http://mirror.example.org/debian");
  CHECK(mirror_from_one_line(text, "bookworm-security")
        == "http://security.example.org/debian-security");
  CHECK_FALSE(mirror_from_one_line(text, "trixie"));
  CHECK_FALSE(mirror_from_one_line("deb http://x.example.org/debian\n", "bookworm"));
}

TEST_CASE("find_debian_mirror prefers deb822 files and falls back to sources.list") {
  temp_dir tmp;
  auto parts = tmp.sub("sources.list.d");
  std::filesystem::create_directories(parts);
  apt_source_paths paths{parts, tmp.sub("sources.list")};

  auto none = find_debian_mirror("bookworm", paths);
  REQUIRE_FALSE(none);
  CHECK(shoal::code_of(none.error()) == shoal::errc::not_found);
  CHECK(shoal::message_of(none.error()).find(paths.list_file) != std::string::npos);

  write(paths.list_file, "deb http://list.example.org/debian bookworm main\n");
  CHECK(find_debian_mirror("bookworm", paths) == std::string{"http://list.example.org/debian"});

  write(parts + "/debian.sources", debian_sources);
  CHECK(find_debian_mirror("bookworm", paths) == std::string{"http://deb.example.org/debian"});
  CHECK(find_debian_mirror("bookworm-security", paths)
        == std::string{"http://security.example.org/debian-security"});
}
