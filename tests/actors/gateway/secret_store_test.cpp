#include <catch2/catch.hpp>

#include "actors/gateway/secret_store.hpp"
#include "runtime/errc.hpp"
#include "storage/store.hpp"
#include "tests/support/temp_dir.hpp"

using shoal::errc;
using shoal::gateway::secret_entries;
using shoal::gateway::secret_store;
using shoal::storage::store;
using shoal::storage::write_batch;

namespace {

struct fixture {
  shoal::test::temp_dir tmp;
  std::unique_ptr<store> db = std::move(*store::open(tmp.sub("db")));
  secret_store secrets{*db};

  caf::expected<shoal::gateway::secret_info> create(const std::string& env, const std::string& name,
                                                    const secret_entries& entries,
                                                    bool force = false) {
    write_batch batch;
    auto info = secrets.create(env, name, entries, force, 1700000000000, batch);
    if (info)
      REQUIRE_FALSE(db->write(batch, true));
    return info;
  }
};

errc code_of(const caf::error& err) { return static_cast<errc>(err.code()); }

} // namespace

TEST_CASE("a created secret lists its keys, never its values, and reads back in its environment") {
  fixture f;
  auto info = f.create("main", "stripe", {{"KEY", "sk-planted"}, {"ACCOUNT", "acct"}});
  REQUIRE(info);
  CHECK(info->keys == std::vector<std::string>{"ACCOUNT", "KEY"});
  REQUIRE(f.create("main", "stripe2", {{"X", "1"}}));
  REQUIRE(f.create("dev", "stripe", {{"OTHER", "2"}}));
  auto listed = f.secrets.list("main");
  REQUIRE(listed);
  REQUIRE(listed->size() == 2);
  CHECK((*listed)[0].name == "stripe");
  CHECK((*listed)[0].created_at_ms == 1700000000000);
  CHECK((*listed)[1].name == "stripe2");
  auto read = f.secrets.read("main", "stripe");
  REQUIRE(read);
  CHECK(*read == secret_entries{{"ACCOUNT", "acct"}, {"KEY", "sk-planted"}});
  auto dev = f.secrets.read("dev", "stripe");
  REQUIRE(dev);
  CHECK(*dev == secret_entries{{"OTHER", "2"}});
}

TEST_CASE("create refuses an existing name unless forced, and bad names without echoing values") {
  fixture f;
  REQUIRE(f.create("main", "s", {{"A", "1"}}));
  auto again = f.create("main", "s", {{"A", "2"}});
  REQUIRE_FALSE(again);
  CHECK(code_of(again.error()) == errc::already_exists);
  REQUIRE(f.create("main", "s", {{"B", "2"}}, true));
  CHECK(*f.secrets.read("main", "s") == secret_entries{{"B", "2"}});
  auto bad_key = f.create("main", "t", {{"1X", "planted-value"}});
  REQUIRE_FALSE(bad_key);
  CHECK(code_of(bad_key.error()) == errc::invalid_argument);
  CHECK(shoal::message_of(bad_key.error()).find("planted-value") == std::string::npos);
  CHECK_FALSE(f.create("main", "bad/name", {{"A", "1"}}));
  CHECK_FALSE(f.create("main", "empty", {}));
}

TEST_CASE("reading or deleting a missing secret says how to create it") {
  fixture f;
  auto read = f.secrets.read("main", "x");
  REQUIRE_FALSE(read);
  CHECK(code_of(read.error()) == errc::not_found);
  CHECK(shoal::message_of(read.error())
        == "secret 'x' does not exist in environment 'main'; create it with `shoal secret create x "
           "KEY=VALUE`");
  REQUIRE(f.create("main", "x", {{"A", "1"}}));
  write_batch batch;
  REQUIRE_FALSE(f.secrets.remove("main", "x", batch));
  REQUIRE_FALSE(f.db->write(batch, true));
  CHECK_FALSE(f.secrets.read("main", "x"));
  write_batch again;
  CHECK(code_of(f.secrets.remove("main", "x", again)) == errc::not_found);
}
