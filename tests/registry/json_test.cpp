#include "fs/registry/detail/json.hpp"

#include <string>

#include <catch2/catch.hpp>

#include "fs/registry/detail/http.hpp"
#include "fs/registry/registry_client.hpp"
#include "runtime/errc.hpp"

using namespace shoal;
using namespace shoal::registry;
using detail::json_value;
using detail::parse_json;

namespace {

json_value parse_ok(std::string_view text) {
  auto v = parse_json(text);
  if (!v)
    FAIL("parse_json(" << text << "): " << message_of(v.error()));
  return *v;
}

} // namespace

TEST_CASE("json: objects, arrays, numbers, literals and nesting") {
  auto v = parse_ok(R"( {"a": [1, -2.5e3, 0, true, false, null], "b": {"c": "d"}, "n": 18446744073709551615} )");
  REQUIRE(v.is_object());
  const json_value* a = v.find("a");
  REQUIRE(a != nullptr);
  REQUIRE(a->items().size() == 6);
  CHECK(a->items()[0].as_uint64() == 1u);
  CHECK(a->items()[1].as_double() == -2500.0);
  CHECK(!a->items()[1].as_uint64());
  CHECK(a->items()[2].as_uint64() == 0u);
  CHECK(a->items()[3].as_bool());
  CHECK(a->items()[4].is_bool());
  CHECK(!a->items()[4].as_bool());
  CHECK(a->items()[5].is_null());
  CHECK(v.find("b")->string_at("c") == "d");
  CHECK(v.find("n")->as_uint64() == UINT64_MAX);
  CHECK(v.find("missing") == nullptr);
  CHECK(parse_ok("[]").items().empty());
  CHECK(parse_ok("{}").members().empty());
  CHECK(parse_ok("\"x\"").as_string() == "x");
  CHECK(parse_ok("{\"k\":1,\"k\":2}").find("k")->as_uint64() == 2u);
}

TEST_CASE("json: string escapes, \\u escapes and surrogate pairs decode to UTF-8") {
  CHECK(parse_ok(R"("a\"b\\c\/d\b\f\n\r\t")").as_string() == "a\"b\\c/d\b\f\n\r\t");
  CHECK(parse_ok(R"("\u0041\u00e9\u20AC")").as_string() == "A\xC3\xA9\xE2\x82\xAC");
  CHECK(parse_ok(R"("\ud83d\ude00")").as_string() == "\xF0\x9F\x98\x80");
  CHECK(parse_ok(R"("\ud83dx")").as_string() == "\xEF\xBF\xBDx"); // lone surrogate: U+FFFD
  CHECK(parse_ok(R"("\u0000")").as_string() == std::string(1, '\0'));
  CHECK(parse_ok("\"h\xC3\xA9\"").as_string() == "h\xC3\xA9");
}

TEST_CASE("json: malformed documents are invalid_argument naming the offset") {
  for (std::string bad : {"", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "01", "1.", "-", "tru",
                          "\"abc", "\"\\x\"", "\"\\u12\"", "\"a\nb\"", "[1] 2", "{1:2}", "nul"}) {
    INFO(bad);
    auto v = parse_json(bad, "the test document");
    REQUIRE(!v);
    CHECK(code_of(v.error()) == errc::invalid_argument);
    CHECK_THAT(message_of(v.error()),
               Catch::StartsWith("the test document is not valid JSON") && Catch::Contains("byte"));
  }
  std::string deep(1000, '[');
  CHECK(!parse_json(deep + std::string(1000, ']')));
}

TEST_CASE("an image config's Env, WorkingDir, User, Entrypoint and Cmd are read") {
  auto c = parse_image_config(
    R"({"architecture":"amd64","config":{"Env":["PATH=/usr/bin:/bin","EMPTY=","X=a=b","BARE"],
        "WorkingDir":"/app","User":"1000:1000","Entrypoint":["/bin/sh","-c"],"Cmd":null}})",
    "cfg");
  REQUIRE(c);
  CHECK(c->env
        == std::vector<std::pair<std::string, std::string>>{
          {"PATH", "/usr/bin:/bin"}, {"EMPTY", ""}, {"X", "a=b"}, {"BARE", ""}});
  CHECK(c->workdir == "/app");
  CHECK(c->user == "1000:1000");
  CHECK(c->entrypoint == std::vector<std::string>{"/bin/sh", "-c"});
  CHECK(c->cmd.empty());

  auto empty = parse_image_config(R"({"rootfs":{}})", "cfg");
  REQUIRE(empty);
  CHECK(empty->env.empty());
  auto bad = parse_image_config(R"({"config":{"Env":[1]}})", "the config of x");
  REQUIRE(!bad);
  CHECK_THAT(message_of(bad.error()), Catch::Contains("config.Env"));
}

TEST_CASE("WWW-Authenticate challenges are parsed with quoted parameters") {
  auto cs = detail::parse_www_authenticate(
    R"(Bearer realm="https://auth.example.internal/token",service="reg, internal",scope="repository:a/b:pull")");
  REQUIRE(cs.size() == 1);
  CHECK(cs[0].scheme == "bearer");
  CHECK(cs[0].params["realm"] == "https://auth.example.internal/token");
  CHECK(cs[0].params["service"] == "reg, internal");
  CHECK(cs[0].params["scope"] == "repository:a/b:pull");

  auto two = detail::parse_www_authenticate(R"(Basic realm="shoal", Bearer realm="x\"y",service=s)");
  REQUIRE(two.size() == 2);
  CHECK(two[0].scheme == "basic");
  CHECK(two[0].params["realm"] == "shoal");
  CHECK(two[1].scheme == "bearer");
  CHECK(two[1].params["realm"] == "x\"y");
  CHECK(two[1].params["service"] == "s");
}
