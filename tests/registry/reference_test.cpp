#include "fs/registry/reference.hpp"

#include <string>

#include <catch2/catch.hpp>

#include "runtime/errc.hpp"

using namespace shoal;
using namespace shoal::registry;

namespace {

image_reference parse_ok(std::string_view text, std::string_view def = "") {
  auto r = parse_reference(text, def);
  if (!r)
    FAIL("parse_reference(" << text << "): " << message_of(r.error()));
  return *r;
}

const std::string hex64(64, 'a');

} // namespace

TEST_CASE("a reference names its registry host, repository and tag") {
  auto r = parse_ok("127.0.0.1:5000/team/app:v1.2");
  CHECK(r.registry == "127.0.0.1:5000");
  CHECK(r.repository == "team/app");
  CHECK(r.tag == "v1.2");
  CHECK(r.digest.empty());
  CHECK(r.str() == "127.0.0.1:5000/team/app:v1.2");
  CHECK(r.manifest_ref() == "v1.2");

  auto host = parse_ok("registry.example.internal/app");
  CHECK(host.registry == "registry.example.internal");
  CHECK(host.repository == "app"); // used as is, no "library/" invented
  CHECK(host.tag == "latest");

  auto local = parse_ok("localhost/a/b/c");
  CHECK(local.registry == "localhost");
  CHECK(local.repository == "a/b/c");

  auto v6 = parse_ok("[::1]:5000/x:t");
  CHECK(v6.registry == "[::1]:5000");
  CHECK(v6.repository == "x");
}

TEST_CASE("a digest pins the manifest and wins over the tag") {
  auto d = parse_ok("reg.local:443/app@sha256:" + hex64);
  CHECK(d.digest == "sha256:" + hex64);
  CHECK(d.tag.empty());
  CHECK(d.manifest_ref() == "sha256:" + hex64);
  CHECK(d.str() == "reg.local:443/app@sha256:" + hex64);

  auto both = parse_ok("reg.local/app:1@sha256:" + hex64);
  CHECK(both.tag == "1");
  CHECK(both.manifest_ref() == "sha256:" + hex64);
  CHECK(parse_ok(both.str()) == both);
}

TEST_CASE("a reference without a registry host uses the default registry or says how to name one") {
  auto d = parse_ok("team/app:3", "10.0.0.5:5000");
  CHECK(d.registry == "10.0.0.5:5000");
  CHECK(d.repository == "team/app");
  // The first component is a path component unless it looks like a host.
  CHECK(parse_ok("team/app", "reg.local").registry == "reg.local");

  auto none = parse_reference("python:3.11", "");
  REQUIRE(!none);
  CHECK(code_of(none.error()) == errc::invalid_argument);
  CHECK(message_of(none.error())
        == "'python:3.11' names no registry host; write HOST[:PORT]/NAME:TAG or set "
           "SHOAL_DEFAULT_REGISTRY");
}

TEST_CASE("a malformed reference is invalid_argument naming what is wrong") {
  struct bad_case {
    std::string ref;
    std::string says;
  };
  for (const auto& c : std::vector<bad_case>{
         {"", "empty"},
         {"reg.local/App:1", "lowercase"},
         {"reg.local/app:", "not a valid tag"},
         {"reg.local/app:-x", "not a valid tag"},
         {"reg.local/app@sha256:abc", "64 hex digits"},
         {"reg.local/app@md5:" + hex64, "only sha256"},
         {"reg.local//app", "repository name component"},
         {"reg.local/app-/x", "repository name component"},
         {"https://reg.local/app", "URL scheme"},
         {"reg.local/app name", "whitespace"},
         {"reg.local:port/app", "HOST[:PORT]"},
         {"reg.local/", "no repository"},
       }) {
    INFO(c.ref);
    auto r = parse_reference(c.ref, "reg.local");
    REQUIRE(!r);
    CHECK(code_of(r.error()) == errc::invalid_argument);
    CHECK_THAT(message_of(r.error()), Catch::Contains(c.says));
  }
  auto bad_default = parse_reference("app", "not a host");
  REQUIRE(!bad_default);
  CHECK_THAT(message_of(bad_default.error()), Catch::Contains("SHOAL_DEFAULT_REGISTRY"));
}

TEST_CASE("repository components accept Docker's separators") {
  CHECK(parse_ok("r.local/a.b_c__d---e/f:t").repository == "a.b_c__d---e/f");
  CHECK(!parse_reference("r.local/a___b", ""));
  CHECK(!parse_reference("r.local/a..b", ""));
  CHECK(parse_ok("r.local/a:Tag_1.2-x").tag == "Tag_1.2-x");
}
