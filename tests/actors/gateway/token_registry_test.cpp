#include <catch2/catch.hpp>

#include "actors/gateway/token_registry.hpp"
#include "runtime/errc.hpp"
#include "storage/key.hpp"
#include "storage/store.hpp"
#include "tests/support/temp_dir.hpp"

using shoal::errc;
using shoal::gateway::token_registry;
using shoal::storage::store;
using shoal::storage::table;
using shoal::storage::write_batch;

namespace {

struct fixture {
  shoal::test::temp_dir tmp;
  std::unique_ptr<store> db = std::move(*store::open(tmp.sub("db")));
  token_registry tokens{*db};

  shoal::gateway::minted_token mint(const std::string& env = "main") {
    write_batch batch;
    auto minted = tokens.mint(env, "laptop", 1700000000000, batch);
    REQUIRE(minted);
    REQUIRE_FALSE(db->write(batch, true));
    return *minted;
  }
};

} // namespace

TEST_CASE("a minted token verifies and carries its environment and label") {
  fixture f;
  CHECK(*f.tokens.empty());
  auto token = f.mint("dev");
  CHECK_FALSE(*f.tokens.empty());
  auto info = f.tokens.verify(token.secret);
  REQUIRE(info);
  CHECK(info->token_id == token.info.token_id);
  CHECK(info->environment == "dev");
  CHECK(info->label == "laptop");
  CHECK(info->created_at_ms == 1700000000000);
  CHECK(token_registry::id_of(token.secret) == token.info.token_id);
}

TEST_CASE("the tokens table never holds a token's secret") {
  fixture f;
  auto token = f.mint();
  auto secret = token.secret.substr(token.secret.find('.') + 1);
  bool leaked = false;
  REQUIRE_FALSE(f.db->scan(table::tokens, {}, [&](std::string_view k, std::string_view v) {
    leaked = leaked || k.find(secret) != std::string_view::npos
             || v.find(secret) != std::string_view::npos;
    return true;
  }));
  CHECK_FALSE(leaked);
}

TEST_CASE("wrong, malformed, empty and unknown tokens are unauthenticated without echoing them") {
  fixture f;
  auto token = f.mint();
  auto wrong_secret = token.secret;
  wrong_secret.back() = wrong_secret.back() == '0' ? '1' : '0';
  auto unknown_id = "tok-0000000000000000" + token.secret.substr(token.secret.find('.'));
  for (const std::string& bad :
       {wrong_secret, std::string{"hunter2"}, std::string{}, unknown_id, token.secret + "0"}) {
    auto result = f.tokens.verify(bad);
    REQUIRE_FALSE(result);
    CHECK(shoal::code_of(result.error()) == errc::unauthenticated);
    auto message = shoal::message_of(result.error());
    auto secret_part = bad.substr(bad.find('.') + 1);
    if (!secret_part.empty() && secret_part != bad)
      CHECK(message.find(secret_part) == std::string::npos);
  }
}

TEST_CASE("a revoked token no longer verifies, and revoking an unknown id is not_found") {
  fixture f;
  auto keep = f.mint();
  auto drop = f.mint();
  write_batch batch;
  REQUIRE_FALSE(f.tokens.revoke(drop.info.token_id, batch));
  REQUIRE_FALSE(f.db->write(batch, true));
  CHECK_FALSE(f.tokens.verify(drop.secret));
  CHECK(f.tokens.verify(keep.secret));
  write_batch again;
  auto err = f.tokens.revoke(drop.info.token_id, again);
  CHECK(shoal::code_of(err) == errc::not_found);
  auto all = f.tokens.list();
  REQUIRE(all);
  REQUIRE(all->size() == 1);
  CHECK(all->front().token_id == keep.info.token_id);
}

TEST_CASE("an environment name outside a-z, 0-9, '-' and '_' is refused at mint") {
  fixture f;
  write_batch batch;
  auto minted = f.tokens.mint("Prod!", "x", 0, batch);
  REQUIRE_FALSE(minted);
  CHECK(shoal::code_of(minted.error()) == errc::invalid_argument);
  CHECK(batch.empty());
}

namespace {

/// Rewrites `token_id`'s record the way shoald before the admin flag stored it (version 1).
void downgrade_to_v1(store& db, const std::string& token_id) {
  auto k = shoal::storage::key{}.str(token_id).bytes();
  auto value = db.get(table::tokens, k);
  REQUIRE(value);
  REQUIRE(*value);
  shoal::storage::key::reader r{**value};
  uint64_t version = 0;
  uint64_t created = 0;
  uint64_t admin = 0;
  std::string hash, env, label;
  REQUIRE((r.u64(version) && r.str(hash) && r.str(env) && r.str(label) && r.u64(created)
           && r.u64(admin)));
  CHECK(version == 2);
  write_batch batch;
  batch.put(table::tokens, k,
            shoal::storage::key{}.u64(1).str(hash).str(env).str(label).u64(created).bytes());
  REQUIRE_FALSE(db.write(batch, true));
}

} // namespace

TEST_CASE("tokens are scoped unless minted admin, and the flag survives a reread") {
  fixture f;
  auto scoped = f.mint("dev");
  write_batch batch;
  auto admin = f.tokens.mint("main", "bootstrap admin", 1700000000000, batch, /*admin=*/true);
  REQUIRE(admin);
  REQUIRE_FALSE(f.db->write(batch, true));
  CHECK_FALSE(f.tokens.verify(scoped.secret)->admin);
  CHECK(f.tokens.verify(admin->secret)->admin);
  auto all = f.tokens.list();
  REQUIRE(all);
  REQUIRE(all->size() == 2);
  for (const auto& t : *all)
    CHECK(t.admin == (t.token_id == admin->info.token_id));
}

TEST_CASE("version 1 token records still verify, as non-admin, until marked admin") {
  fixture f;
  auto old = f.mint("main");
  auto other = f.mint("dev");
  downgrade_to_v1(*f.db, old.info.token_id);
  downgrade_to_v1(*f.db, other.info.token_id);
  auto info = f.tokens.verify(old.secret);
  REQUIRE(info);
  CHECK_FALSE(info->admin);
  CHECK(info->environment == "main");
  CHECK(info->label == "laptop");
  CHECK(info->created_at_ms == 1700000000000);
  REQUIRE(f.tokens.list());
  CHECK(f.tokens.list()->size() == 2);

  write_batch batch;
  REQUIRE_FALSE(f.tokens.mark_admin(old.info.token_id, batch));
  REQUIRE_FALSE(f.db->write(batch, true));
  info = f.tokens.verify(old.secret);
  REQUIRE(info);
  CHECK(info->admin);
  CHECK(info->environment == "main");
  CHECK(info->created_at_ms == 1700000000000);
  CHECK_FALSE(f.tokens.verify(other.secret)->admin); // only the marked one

  write_batch again;
  CHECK_FALSE(f.tokens.mark_admin(old.info.token_id, again)); // already admin: no-op
  CHECK(again.empty());
  write_batch missing;
  CHECK(shoal::code_of(f.tokens.mark_admin("tok-0000000000000000", missing)) == errc::not_found);
}
