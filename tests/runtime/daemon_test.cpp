/// The daemon wired up for real: RocksDB in a temp state dir, the RPC server on a loopback port,
/// and the C++ client core talking Cap'n Proto to it.

#include <catch2/catch.hpp>

#include <fstream>
#include <future>
#include <set>
#include <thread>

#include <kj/async.h>
#include <unistd.h>

#include "runtime/client/client.hpp"
#include "runtime/daemon.hpp"
#include "runtime/errc.hpp"
#include "storage/key.hpp"
#include "storage/store.hpp"
#include "tests/support/temp_dir.hpp"

using shoal::client::connect_options;
using shoal::client::connection;
using shoal::client::rpc_error;

namespace {

shoal::daemon_config config_for(const std::string& dir) {
  shoal::daemon_config cfg;
  cfg.state_dir = dir;
  cfg.listen = "127.0.0.1:0";
  cfg.scheduler_threads = 2;
  cfg.drain_timeout = std::chrono::milliseconds(1000);
  cfg.log_level = shoal::log::level::warn;
  return cfg;
}

std::string read_line(const std::string& path) {
  std::ifstream in{path};
  std::string line;
  std::getline(in, line);
  return line;
}

std::string error_code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const rpc_error& e) {
    return e.code();
  }
  return "none";
}

} // namespace

TEST_CASE("a client with the bootstrap token sees the node's info and its actors") {
  shoal::test::temp_dir tmp;
  auto d = shoal::daemon::start(config_for(tmp.path()));
  REQUIRE(d);
  const auto& facts = (*d)->facts();
  CHECK(read_line(tmp.sub("shoald.addr")) == facts.listen_address);

  auto conn = connection::open(facts.listen_address, read_line(tmp.sub("admin.token")));
  CHECK(conn->hello().environment == "main");
  auto info = conn->info();
  CHECK(info.version == shoal::shoal_version);
  CHECK(info.pid == static_cast<uint32_t>(::getpid()));
  CHECK(info.roles == std::vector<std::string>{"control", "worker"});
  CHECK(info.node_id == facts.node_id);

  auto actors = conn->list_actors();
  std::set<std::string> names;
  for (const auto& a : actors)
    names.insert(a.name);
  CHECK(names == std::set<std::string>{"admin", "block_server", "gateway", "image_builder",
                                      "node_agent", "queue_broker", "queue_writer", "scheduler",
                                      "storage_writer"});
  CHECK(info.actor_count == actors.size());
  for (const auto& a : actors)
    CHECK(a.state != "unresponsive");

  auto gateway = conn->inspect_actor("gateway");
  CHECK(gateway.kind == "gateway");
  bool has_auth_counter = false;
  for (const auto& [name, value] : gateway.counters)
    has_auth_counter = has_auth_counter || (name == "authentications" && value >= 1);
  CHECK(has_auth_counter);

  try {
    conn->inspect_actor("gatway");
    FAIL("inspecting a missing actor must fail");
  } catch (const rpc_error& e) {
    CHECK(e.code() == "not_found");
    CHECK(e.message().find("'gatway'") != std::string::npos);
  }
}

TEST_CASE("wrong and missing tokens are refused and reach nothing") {
  shoal::test::temp_dir tmp;
  auto d = shoal::daemon::start(config_for(tmp.path()));
  REQUIRE(d);
  auto addr = (*d)->facts().listen_address;
  auto good = read_line(tmp.sub("admin.token"));
  auto bad = good;
  bad.back() = bad.back() == 'a' ? 'b' : 'a';
  CHECK(error_code_of([&] { connection::open(addr, bad); }) == "unauthenticated");
  CHECK(error_code_of([&] { connection::open(addr, ""); }) == "unauthenticated");
  CHECK(error_code_of([&] { connection::open(addr, "not-a-token"); }) == "unauthenticated");
}

TEST_CASE("a new token works until it is revoked, and revocation cuts its open sessions") {
  shoal::test::temp_dir tmp;
  auto d = shoal::daemon::start(config_for(tmp.path()));
  REQUIRE(d);
  auto addr = (*d)->facts().listen_address;
  auto admin = connection::open(addr, read_line(tmp.sub("admin.token")));
  auto [secret, info] = admin->create_token("", "ci");
  CHECK(info.environment == "main");
  CHECK(info.label == "ci");
  auto second = connection::open(addr, secret);
  CHECK(second->info().environment == "main");
  auto listed = admin->list_tokens();
  CHECK(listed.size() == 2);

  // The admin token mints for any existing environment; a scoped token only for its own.
  CHECK(error_code_of([&] { admin->create_token("prod", "x"); }) == "not_found");
  CHECK(error_code_of([&] { second->create_token("prod", "x"); }) == "permission_denied");
  admin->create_environment("prod");
  auto prod = admin->create_token("prod", "x").second;
  CHECK(prod.environment == "prod");
  CHECK_FALSE(prod.admin);
  CHECK(error_code_of([&] { second->create_token("prod", "x"); }) == "permission_denied");
  CHECK(error_code_of([&] { second->revoke_token(prod.token_id); }) == "permission_denied");
  for (const auto& t : admin->list_tokens())
    if (t.admin) // a scoped token of "main" cannot revoke the admin token
      CHECK(error_code_of([&] { second->revoke_token(t.token_id); }) == "permission_denied");
  admin->revoke_token(prod.token_id);

  admin->revoke_token(info.token_id);
  CHECK(error_code_of([&] { second->info(); }) == "unauthenticated");
  CHECK(error_code_of([&] { connection::open(addr, secret); }) == "unauthenticated");
  CHECK(error_code_of([&] { admin->revoke_token(info.token_id); }) == "not_found");
}

TEST_CASE("a state dir from before environments keeps working: admin.token becomes admin") {
  shoal::test::temp_dir tmp;
  std::string scoped;
  {
    auto d = shoal::daemon::start(config_for(tmp.path()));
    REQUIRE(d);
    auto admin = connection::open((*d)->facts().listen_address, read_line(tmp.sub("admin.token")));
    admin->create_environment("dev");
    scoped = admin->create_token("dev", "old").first;
  }
  { // Rewrite what a shoald before environments left: version 1 tokens, no environments table.
    auto db = shoal::storage::store::open(tmp.sub("db"));
    REQUIRE(db);
    shoal::storage::write_batch batch;
    REQUIRE_FALSE((*db)->scan(shoal::storage::table::tokens, {},
                              [&](std::string_view k, std::string_view v) {
                                shoal::storage::key::reader r{v};
                                uint64_t version = 0, created = 0, admin = 0;
                                std::string hash, env, label;
                                REQUIRE((r.u64(version) && r.str(hash) && r.str(env)
                                         && r.str(label) && r.u64(created) && r.u64(admin)));
                                batch.put(shoal::storage::table::tokens, std::string{k},
                                          shoal::storage::key{}.u64(1).str(hash).str(env).str(
                                            label).u64(created).bytes());
                                return true;
                              }));
    for (const char* env : {"main", "dev"})
      batch.erase(shoal::storage::table::environments, shoal::storage::key{}.str(env).bytes());
    REQUIRE_FALSE((*db)->write(batch, true));
  }
  auto d = shoal::daemon::start(config_for(tmp.path()));
  REQUIRE(d);
  auto addr = (*d)->facts().listen_address;
  connect_options in_dev;
  in_dev.environment = "dev";
  auto admin = connection::open(addr, read_line(tmp.sub("admin.token")), in_dev);
  CHECK(admin->info().environment == "dev");
  std::set<std::string> names;
  for (const auto& e : admin->list_environments())
    names.insert(e.name);
  CHECK(names == std::set<std::string>{"dev", "main"});
  auto old = connection::open(addr, scoped);
  CHECK(old->info().environment == "dev");
  connect_options in_main;
  in_main.environment = "main";
  CHECK(error_code_of([&] { connection::open(addr, scoped, in_main); }) == "permission_denied");
}

TEST_CASE("a second daemon on the same state dir refuses to start") {
  shoal::test::temp_dir tmp;
  auto first = shoal::daemon::start(config_for(tmp.path()));
  REQUIRE(first);
  auto second = shoal::daemon::start(config_for(tmp.path()));
  REQUIRE_FALSE(second);
  CHECK(shoal::code_of(second.error()) == shoal::errc::state_dir_locked);
  CHECK(shoal::message_of(second.error()).find("pid " + std::to_string(::getpid()))
        != std::string::npos);
  // The refused start must not have disturbed the running one.
  CHECK(connection::open((*first)->facts().listen_address, read_line(tmp.sub("admin.token"))));
}

TEST_CASE("an unreachable daemon is reported as unavailable with the address") {
  shoal::test::temp_dir tmp;
  std::string addr;
  {
    auto d = shoal::daemon::start(config_for(tmp.path()));
    REQUIRE(d);
    addr = (*d)->facts().listen_address;
  } // stopped: nothing listens on addr any more
  try {
    connection::open(addr, "tok-0000000000000000.000000000000000000000000000000000000000000000000");
    FAIL("connecting to a stopped daemon must fail");
  } catch (const rpc_error& e) {
    CHECK(e.code() == "unavailable");
    CHECK(e.message().find(addr) != std::string::npos);
  }
}

TEST_CASE("tokens and the node id survive a restart, and the addr file goes with the daemon") {
  shoal::test::temp_dir tmp;
  std::string secret;
  std::string node_id;
  {
    auto d = shoal::daemon::start(config_for(tmp.path()));
    REQUIRE(d);
    node_id = (*d)->facts().node_id;
    auto admin = connection::open((*d)->facts().listen_address, read_line(tmp.sub("admin.token")));
    secret = admin->create_token("main", "survivor").first;
    admin->close();
    (*d)->stop();
    CHECK(::access(tmp.sub("shoald.addr").c_str(), F_OK) != 0);
  }
  auto d = shoal::daemon::start(config_for(tmp.path()));
  REQUIRE(d);
  CHECK((*d)->facts().node_id == node_id);
  auto conn = connection::open((*d)->facts().listen_address, secret);
  CHECK(conn->info().environment == "main");
}

TEST_CASE("a listen address that is not host:port is refused before anything starts") {
  shoal::test::temp_dir tmp;
  auto cfg = config_for(tmp.path());
  cfg.listen = "localhost";
  auto d = shoal::daemon::start(cfg);
  REQUIRE_FALSE(d);
  CHECK(shoal::code_of(d.error()) == shoal::errc::invalid_argument);
  CHECK(shoal::message_of(d.error()).find("'localhost'") != std::string::npos);
}

namespace {

int64_t authentications(connection& conn) {
  for (const auto& a : conn.list_actors())
    if (a.name == "gateway")
      for (const auto& [name, value] : a.counters)
        if (name == "authentications")
          return value;
  FAIL("the gateway reports no authentications counter");
  return -1;
}

} // namespace

TEST_CASE("queue puts and gets use a connection of the calling thread's own, unless told not to") {
  shoal::test::temp_dir tmp;
  auto d = shoal::daemon::start(config_for(tmp.path()));
  REQUIRE(d);
  auto address = (*d)->facts().listen_address;
  auto token = read_line(tmp.sub("admin.token"));
  auto conn = connection::open(address, token);
  conn->lookup_object(shoal::client::data_kind::queue, "q", true);
  auto round_trip = [](connection& c, const std::string& item) {
    c.queue_put("q", "", {item}, 0);
    auto got = c.queue_get("q", "", 1, 1000);
    REQUIRE(got.size() == 1);
    CHECK(got[0] == item);
  };

  auto before = authentications(*conn);
  std::thread([&] {
    round_trip(*conn, "a");
    round_trip(*conn, "b"); // the same channel
  }).join();
  CHECK(authentications(*conn) == before + 1); // the thread's channel authenticated once
  round_trip(*conn, "c");
  CHECK(authentications(*conn) == before + 2); // and this thread's

  SECTION("a thread that runs a kj event loop of its own gets a channel too (it needs no loop)") {
    auto now = authentications(*conn);
    std::thread([&] {
      kj::EventLoop loop;
      kj::WaitScope scope{loop};
      round_trip(*conn, "d");
    }).join();
    CHECK(authentications(*conn) == now + 1);
  }

  SECTION("server errors reach the caller with their code, and the channel stays usable") {
    std::thread([&] {
      auto code = error_code_of([&] { conn->queue_put("missing", "", {"x"}, 0); });
      CHECK(code == "not_found");
      code = error_code_of([&] { conn->queue_put("q", "", {std::string(2u << 20, 'x')}, 0); });
      CHECK(code == "invalid_argument");
      round_trip(*conn, "e");
    }).join();
  }

  SECTION("thread_channels = false: every call goes through the connection's kj thread") {
    shoal::client::connect_options options;
    options.thread_channels = false;
    auto single = connection::open(address, token, options);
    auto now = authentications(*single);
    std::thread([&] { round_trip(*single, "f"); }).join();
    round_trip(*single, "g");
    CHECK(authentications(*single) == now);
  }

  SECTION("at max_thread_channels, further threads go through the kj thread until one closes") {
    shoal::client::connect_options options;
    options.max_thread_channels = 1;
    auto capped = connection::open(address, token, options);
    auto now = authentications(*capped);
    std::thread([&] { round_trip(*capped, "j"); }).join(); // opened, and closed with its thread
    CHECK(authentications(*capped) == now + 1);
    round_trip(*capped, "k"); // this thread's channel takes the one place
    CHECK(authentications(*capped) == now + 2);
    std::thread([&] { round_trip(*capped, "l"); }).join(); // no place left
    CHECK(authentications(*capped) == now + 2);
  }

  SECTION("a channel whose server is gone reports unavailable") {
    std::promise<void> opened, stopped;
    std::string code;
    std::thread caller([&] {
      round_trip(*conn, "h"); // this thread's channel is open
      opened.set_value();
      stopped.get_future().wait();
      code = error_code_of([&] { conn->queue_put("q", "", {"i"}, 0); });
    });
    opened.get_future().wait();
    d->reset();
    stopped.set_value();
    caller.join();
    CHECK(code == "unavailable");
  }
}

TEST_CASE("a daemon may be stopped on another thread than the one that started it") {
  // CAF 0.17 keeps the system's logger alive in a thread-local of the starting thread; the daemon
  // drops it, or the stop would wait for it forever.
  shoal::test::temp_dir tmp;
  auto d = shoal::daemon::start(config_for(tmp.path()));
  REQUIRE(d);
  auto conn = connection::open((*d)->facts().listen_address, read_line(tmp.sub("admin.token")));
  conn->info();
  std::thread([&] { d->reset(); }).join();
  CHECK(error_code_of([&] { conn->info(); }) == "unavailable");
}
