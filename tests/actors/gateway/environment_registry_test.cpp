#include <catch2/catch.hpp>

#include "actors/gateway/environment_registry.hpp"
#include "actors/gateway/secret_store.hpp"
#include "actors/gateway/token_registry.hpp"
#include "runtime/errc.hpp"
#include "storage/store.hpp"
#include "tests/support/temp_dir.hpp"

#include <vector>

using shoal::errc;
using shoal::gateway::environment_registry;
using shoal::storage::store;
using shoal::storage::write_batch;

namespace {

struct fixture {
  shoal::test::temp_dir tmp;
  std::unique_ptr<store> db = std::move(*store::open(tmp.sub("db")));
  environment_registry envs{*db};

  void commit(write_batch& batch) { REQUIRE_FALSE(db->write(batch, true)); }
};

} // namespace

TEST_CASE("environments are created once, listed by name and deleted") {
  fixture f;
  write_batch batch;
  REQUIRE_FALSE(f.envs.ensure("main", 1, batch));
  REQUIRE(f.envs.create("prod", 2, batch));
  f.commit(batch);
  write_batch b2;
  REQUIRE(f.envs.create("dev", 3, b2));
  f.commit(b2);
  auto all = f.envs.list();
  REQUIRE(all);
  REQUIRE(all->size() == 3);
  CHECK((*all)[0].name == "dev");
  CHECK((*all)[0].created_at_ms == 3);
  CHECK((*all)[1].name == "main");
  CHECK((*all)[2].name == "prod");

  write_batch dup;
  CHECK(shoal::code_of(f.envs.create("dev", 4, dup).error()) == errc::already_exists);
  write_batch ensure;
  REQUIRE_FALSE(f.envs.ensure("dev", 5, ensure));
  CHECK(ensure.empty());

  write_batch del;
  REQUIRE_FALSE(f.envs.remove("dev", del));
  f.commit(del);
  CHECK_FALSE(*f.envs.exists("dev"));
  write_batch again;
  CHECK(shoal::code_of(f.envs.remove("dev", again)) == errc::not_found);
}

TEST_CASE("bad names, main and environments still in use are refused") {
  fixture f;
  write_batch batch;
  for (const std::string& bad : std::vector<std::string>{"", "Prod", "a b", std::string(65, 'a'), "ü"})
    CHECK(shoal::code_of(f.envs.create(bad, 1, batch).error()) == errc::invalid_argument);
  REQUIRE_FALSE(f.envs.ensure("main", 1, batch));
  REQUIRE(f.envs.create("dev", 1, batch));
  REQUIRE(f.envs.create("ci", 1, batch));
  f.commit(batch);

  write_batch del;
  auto err = f.envs.remove("main", del);
  CHECK(shoal::code_of(err) == errc::invalid_argument);

  write_batch secret;
  REQUIRE(shoal::gateway::secret_store{*f.db}.create("dev", "s", {{"K", "v"}}, false, 1, secret));
  f.commit(secret);
  err = f.envs.remove("dev", del);
  CHECK(shoal::code_of(err) == errc::invalid_argument);
  CHECK(shoal::message_of(err).find("secrets") != std::string::npos);

  write_batch token;
  REQUIRE(shoal::gateway::token_registry{*f.db}.mint("ci", "bot", 1, token));
  f.commit(token);
  err = f.envs.remove("ci", del);
  CHECK(shoal::code_of(err) == errc::invalid_argument);
  CHECK(shoal::message_of(err).find("token") != std::string::npos);
  CHECK(del.empty());
}
