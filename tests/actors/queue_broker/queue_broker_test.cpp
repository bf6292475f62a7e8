#include "actors/queue_broker/queue_broker_actor.hpp"

#include <future>
#include <memory>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <catch2/catch.hpp>

#include "actors/container_supervisor/data_calls.hpp"
#include "runtime/errc.hpp"
#include "runtime/guest/guest_wire.hpp"
#include "runtime/inspect.hpp"
#include "storage/store.hpp"
#include "storage/writer.hpp"
#include "tests/storage/gated_commit.hpp"
#include "tests/support/temp_dir.hpp"

using namespace shoal;
using namespace shoal::queue_broker;
using shoal::storage::test::gated_commit;
using shoal::test::temp_dir;
using std::chrono::milliseconds;

namespace {

/// Only bounds how long a broken broker can hang a test; nothing waits for it to pass.
constexpr auto reply_timeout = std::chrono::seconds(30);
const std::string env = "main";

using strings = std::vector<std::string>;

/// A broker over a real store whose writer commits through a gate (tests/storage/gated_commit):
/// a test can hold a commit in progress, fail one, and count the groups.
struct fixture {
  temp_dir tmp;
  std::unique_ptr<storage::store> db;
  gated_commit gate;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  storage::writer_actor writer;
  queue_broker_config broker_cfg;
  queue_broker_actor broker;

  explicit fixture(queue_broker_config c = {}) : broker_cfg(c) {
    auto opened = storage::store::open(tmp.path());
    if (!opened)
      FAIL("store::open failed: " << message_of(opened.error()));
    db = std::move(*opened);
    cfg.set("scheduler.max-threads", 2);
    sys = std::make_unique<caf::actor_system>(cfg);
    auto commit = gate.function();
    writer = storage::spawn_writer(*sys, [this, commit](const storage::write_batch& b) -> caf::error {
      if (auto err = commit(b))
        return err;
      return db->write(b, /*sync=*/false);
    });
    broker = spawn_queue_broker(*sys, *db, writer, broker_cfg);
  }

  ~fixture() {
    gate.open(); // a writer held at the gate would keep the actor system from shutting down
    caf::anon_send_exit(broker, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
    broker = nullptr;
    writer = nullptr;
    sys.reset();
  }

  /// Stops the broker, waits until it is gone, and starts a new one on the same store.
  void restart_broker() {
    caf::scoped_actor self{*sys};
    self->monitor(broker);
    caf::anon_send_exit(broker, caf::exit_reason::user_shutdown);
    self->receive([](const caf::down_msg&) {});
    broker = spawn_queue_broker(*sys, *db, writer, broker_cfg);
  }

  template <class R, class... Ts>
  R ask(Ts... xs) {
    caf::scoped_actor self{*sys};
    R out{};
    self->request(broker, reply_timeout, xs...)
      .receive([&](R& r) { out = std::move(r); },
               [&](caf::error& err) { FAIL("request failed: " << message_of(err)); });
    return out;
  }

  template <class... Ts>
  void ask_void(Ts... xs) {
    caf::scoped_actor self{*sys};
    self->request(broker, reply_timeout, xs...)
      .receive([] {}, [&](caf::error& err) { FAIL("request failed: " << message_of(err)); });
  }

  /// The error a request fails with (any reply type; a success fails the test).
  template <class R, class... Ts>
  caf::error ask_error(Ts... xs) {
    caf::scoped_actor self{*sys};
    caf::error out;
    if constexpr (std::is_void_v<R>)
      self->request(broker, reply_timeout, xs...)
        .receive([] { FAIL("the request succeeded"); }, [&](caf::error& err) { out = err; });
    else
      self->request(broker, reply_timeout, xs...)
        .receive([](R&) { FAIL("the request succeeded"); }, [&](caf::error& err) { out = err; });
    return out;
  }

  void create_queue(const std::string& name) {
    ask<object_info>(lookup_atom::value, object_kind::queue, env, name, true);
  }
  void create_dict(const std::string& name) {
    ask<object_info>(lookup_atom::value, object_kind::dict, env, name, true);
  }

  void put(const std::string& name, const std::string& partition, strings items,
           uint64_t ttl_ms = 0) {
    ask_void(queue_put_atom::value, queue_put_request{env, name, partition, std::move(items), ttl_ms});
  }

  caf::error put_error(const std::string& name, const std::string& partition, strings items) {
    caf::scoped_actor self{*sys};
    caf::error out;
    self->request(broker, reply_timeout, queue_put_atom::value,
                  queue_put_request{env, name, partition, std::move(items), 0})
      .receive([] { FAIL("the put succeeded"); }, [&](caf::error& err) { out = err; });
    return out;
  }

  strings get(const std::string& name, const std::string& partition, uint32_t n,
              uint64_t block_ms = 0) {
    return ask<strings>(queue_get_atom::value, queue_get_request{env, name, partition, n, block_ms});
  }

  uint64_t len(const std::string& name, const std::string& partition, bool total = false) {
    return ask<uint64_t>(queue_len_atom::value, env, name, partition, total);
  }

  int64_t counter(const actor_snapshot& s, const std::string& name) {
    for (const auto& [k, v] : s.counters)
      if (k == name)
        return v;
    FAIL("no counter " << name);
    return 0;
  }

  int64_t broker_counter(const std::string& name) {
    return counter(ask<actor_snapshot>(inspect_atom::value), name);
  }

  int64_t writer_batches() {
    caf::scoped_actor self{*sys};
    actor_snapshot s;
    self->request(writer, reply_timeout, inspect_atom::value)
      .receive([&](actor_snapshot& snap) { s = std::move(snap); },
               [&](caf::error& err) { FAIL("inspect failed: " << message_of(err)); });
    return counter(s, "batches_committed");
  }
};

/// Waits (bounded) for something driven by the broker's own timers: TTL sweeps and the
/// termination of an owner. Not a sleep-then-assert: it returns as soon as `pred` holds.
template <class Pred>
bool eventually(Pred pred, milliseconds limit = milliseconds(10000)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred())
      return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return pred();
}

} // namespace

TEST_CASE("a put is acknowledged once durable and gets return items in FIFO order") {
  fixture f;
  f.create_queue("q");
  f.put("q", "", {"a", "b"});
  f.put("q", "", {"c"});
  CHECK(f.gate.durable(queue_store::item_key(env, "q", "", 3)));
  CHECK(f.len("q", "") == 3);
  CHECK(f.get("q", "", 2) == strings{"a", "b"});
  CHECK(f.get("q", "", 5) == strings{"c"});
  CHECK(f.get("q", "", 1).empty());
  CHECK(f.len("q", "") == 0);
}

TEST_CASE("blocking gets are parked and served first come, first served as items arrive") {
  fixture f;
  f.create_queue("q");
  caf::scoped_actor first{*f.sys};
  caf::scoped_actor second{*f.sys};
  auto h1 = first->request(f.broker, reply_timeout, queue_get_atom::value,
                           queue_get_request{env, "q", "", 1, 20000});
  // The second get is sent after the first is parked: its inspect reply proves the order.
  REQUIRE(f.broker_counter("parked_gets") == 1);
  auto h2 = second->request(f.broker, reply_timeout, queue_get_atom::value,
                            queue_get_request{env, "q", "", 1, 20000});
  REQUIRE(f.broker_counter("parked_gets") == 2);
  f.put("q", "", {"one"});
  strings got1;
  h1.receive([&](strings& items) { got1 = items; },
             [&](caf::error& err) { FAIL(message_of(err)); });
  CHECK(got1 == strings{"one"});
  CHECK(f.broker_counter("parked_gets") == 1);
  f.put("q", "", {"two", "three"});
  strings got2;
  h2.receive([&](strings& items) { got2 = items; },
             [&](caf::error& err) { FAIL(message_of(err)); });
  CHECK(got2 == strings{"two"});
  CHECK(f.get("q", "", 10) == strings{"three"});
}

TEST_CASE("a blocking get that sees no item before its deadline returns none") {
  fixture f;
  f.create_queue("q");
  auto started = std::chrono::steady_clock::now();
  CHECK(f.get("q", "", 1, 100).empty());
  CHECK(std::chrono::steady_clock::now() - started >= milliseconds(100));
  CHECK(f.broker_counter("gets_timed_out") == 1);
  CHECK(f.broker_counter("parked_gets") == 0);
  // A later item is not taken by the expired get.
  f.put("q", "", {"late"});
  CHECK(f.get("q", "", 1) == strings{"late"});
}

TEST_CASE("partitions are independent FIFOs") {
  fixture f;
  f.create_queue("q");
  f.put("q", "a", {"a1", "a2"});
  f.put("q", "", {"d1"});
  f.put("q", "b", {"b1"});
  CHECK(f.len("q", "a") == 2);
  CHECK(f.len("q", "", true) == 4);
  CHECK(f.get("q", "b", 10) == strings{"b1"});
  CHECK(f.get("q", "b", 10).empty());
  CHECK(f.get("q", "", 10) == strings{"d1"});
  CHECK(f.get("q", "a", 1) == strings{"a1"});
  f.ask_void(queue_clear_atom::value, env, std::string{"q"}, std::string{"a"}, false);
  CHECK(f.len("q", "", true) == 0);
}

TEST_CASE("a put into a full partition fails with resource_exhausted stating the limit") {
  queue_broker_config cfg;
  cfg.limits.max_partition_items = 3;
  fixture f{cfg};
  f.create_queue("q");
  f.put("q", "", {"1", "2"});
  auto err = f.put_error("q", "", {"3", "4"}); // all or nothing
  REQUIRE(err);
  CHECK(code_of(err) == errc::resource_exhausted);
  CHECK(message_of(err).find("limit is 3 items per partition") != std::string::npos);
  CHECK(f.len("q", "") == 2);
  f.put("q", "other", {"x", "y", "z"}); // other partitions have their own room
  f.get("q", "", 1);
  f.put("q", "", {"3", "4"});
  CHECK(f.get("q", "", 10) == strings{"2", "3", "4"});
}

TEST_CASE("an item over the size limit is refused with a message stating the limit") {
  queue_broker_config cfg;
  cfg.limits.max_item_bytes = 8;
  fixture f{cfg};
  f.create_queue("q");
  auto err = f.put_error("q", "", {"small", std::string(9, 'x')});
  REQUIRE(err);
  CHECK(code_of(err) == errc::invalid_argument);
  CHECK(message_of(err).find("limit is 8 B per item") != std::string::npos);
  CHECK(f.len("q", "") == 0);
}

TEST_CASE("concurrent puts share one fsync: the writer commits them as one group") {
  fixture f;
  f.create_queue("q");
  auto before = f.writer_batches();
  auto groups_before = f.gate.groups().size();
  f.gate.close();
  caf::scoped_actor self{*f.sys};
  using handle = decltype(self->request(f.broker, reply_timeout, queue_put_atom::value,
                                        queue_put_request{}));
  std::vector<handle> puts;
  puts.push_back(self->request(f.broker, reply_timeout, queue_put_atom::value,
                               queue_put_request{env, "q", "", {"0"}, 0}));
  f.gate.wait_started(groups_before + 1); // the first put is being committed (held at the gate)
  for (int i = 1; i <= 20; ++i)
    puts.push_back(self->request(f.broker, reply_timeout, queue_put_atom::value,
                                 queue_put_request{env, "q", "", {std::to_string(i)}, 0}));
  // The broker has forwarded all 20 once it answers this (messages from one sender keep order).
  f.broker_counter("puts");
  f.gate.open();
  for (auto& h : puts)
    h.receive([] {}, [&](caf::error& err) { FAIL(message_of(err)); });
  CHECK(f.writer_batches() - before == 2);
  CHECK(f.gate.groups().size() - groups_before == 2);
  auto items = f.get("q", "", 100);
  REQUIRE(items.size() == 21);
  for (int i = 0; i <= 20; ++i)
    CHECK(items[static_cast<size_t>(i)] == std::to_string(i));
}

TEST_CASE("a failed commit fails the put and leaves nothing of it visible") {
  fixture f;
  f.create_queue("q");
  f.put("q", "", {"kept"});
  f.gate.fail_commit(f.gate.groups().size() + 1, make_error(errc::storage_failure, "disk gone"));
  auto err = f.put_error("q", "", {"lost1", "lost2"});
  REQUIRE(err);
  CHECK(code_of(err) == errc::storage_failure);
  CHECK(f.len("q", "") == 1);
  f.put("q", "", {"after"});
  CHECK(f.get("q", "", 10) == strings{"kept", "after"});
}

TEST_CASE("a get whose erasure fails leaves its items at the head, in order") {
  fixture f;
  f.create_queue("q");
  f.put("q", "", {"a", "b", "c"});
  f.gate.fail_commit(f.gate.groups().size() + 1, make_error(errc::storage_failure, "disk gone"));
  auto err = f.ask_error<strings>(queue_get_atom::value, queue_get_request{env, "q", "", 2, 0});
  CHECK(code_of(err) == errc::storage_failure);
  CHECK(f.get("q", "", 10) == strings{"a", "b", "c"});
}

TEST_CASE("items, partitions and their order survive a restart of the broker") {
  fixture f;
  f.create_queue("q");
  f.put("q", "", {"1", "2", "3"});
  f.put("q", "p", {"x"});
  f.get("q", "", 1);
  f.restart_broker();
  CHECK(f.len("q", "", true) == 3);
  f.put("q", "", {"4"}); // sequence numbers go on after the stored ones
  CHECK(f.get("q", "", 10) == strings{"2", "3", "4"});
  CHECK(f.get("q", "p", 10) == strings{"x"});
}

TEST_CASE("peek reads without consuming, pages by cursor and waits for new items") {
  fixture f;
  f.create_queue("q");
  f.put("q", "", {"a", "b", "c"});
  auto page = f.ask<queue_page>(queue_peek_atom::value, queue_peek_request{env, "q", "", 0, 2, 0});
  REQUIRE(page.items.size() == 2);
  CHECK(page.items[0].second == "a");
  CHECK(page.items[1].second == "b");
  auto rest = f.ask<queue_page>(queue_peek_atom::value,
                                queue_peek_request{env, "q", "", page.next_cursor, 10, 0});
  REQUIRE(rest.items.size() == 1);
  CHECK(rest.items[0].second == "c");
  CHECK(f.len("q", "") == 3);

  caf::scoped_actor self{*f.sys};
  auto waiting = self->request(f.broker, reply_timeout, queue_peek_atom::value,
                               queue_peek_request{env, "q", "", rest.next_cursor, 10, 20000});
  f.put("q", "", {"d"});
  queue_page fresh;
  waiting.receive([&](queue_page& p) { fresh = std::move(p); },
                  [&](caf::error& err) { FAIL(message_of(err)); });
  REQUIRE(fresh.items.size() == 1);
  CHECK(fresh.items[0].second == "d");
  auto empty = f.ask<queue_page>(queue_peek_atom::value,
                                 queue_peek_request{env, "q", "", fresh.next_cursor, 10, 50});
  CHECK(empty.items.empty());
}

TEST_CASE("a partition is cleared once its TTL passes without a put") {
  queue_broker_config cfg;
  cfg.sweep_interval = milliseconds(20);
  fixture f{cfg};
  f.create_queue("q");
  f.put("q", "short", {"x", "y"}, /*ttl_ms=*/100);
  f.put("q", "long", {"z"});
  CHECK(f.len("q", "short") == 2);
  REQUIRE(eventually([&] { return f.len("q", "short") == 0; }));
  CHECK(f.len("q", "long") == 1);
  CHECK(f.broker_counter("partitions_expired") == 1);
  // The expiry is durable: the items do not come back with a restart.
  f.restart_broker();
  CHECK(f.len("q", "short") == 0);
  CHECK(f.len("q", "long") == 1);
}

TEST_CASE("puts rewrite the partition record only when its expiry must move beyond the slack") {
  fixture f;
  f.create_queue("q");
  auto wall_ms = [] {
    return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
  };
  auto stored_expiry = [&] {
    auto v = f.db->get(storage::table::queues, queue_store::partition_key(env, "q", ""));
    REQUIRE(v);
    REQUIRE(*v);
    int64_t expires = 0;
    REQUIRE_FALSE(queue_store::decode_partition(**v, expires));
    return expires;
  };
  auto before = f.gate.groups().size();
  auto t0 = wall_ms();
  f.put("q", "", {"a"}); // the record (24 h TTL, 60 s slack) and the item
  f.put("q", "", {"b"}); // the item only: the record is still ahead of the new expiry
  auto day = int64_t{24} * 3600 * 1000;
  CHECK(stored_expiry() >= t0 + day);
  CHECK(stored_expiry() <= wall_ms() + day + 60000);
  auto t1 = wall_ms();
  f.put("q", "", {"c"}, /*ttl_ms=*/1000000); // a shorter TTL: the record moves back (slack 100 s)
  auto groups = f.gate.groups();
  REQUIRE(groups.size() - before == 3);
  CHECK(groups[before] == 2);
  CHECK(groups[before + 1] == 1);
  CHECK(groups[before + 2] == 2);
  CHECK(stored_expiry() >= t1 + 1000000);
  CHECK(stored_expiry() <= wall_ms() + 1000000 + 100000);
  f.restart_broker();
  CHECK(f.get("q", "", 5) == strings{"a", "b", "c"});
}

TEST_CASE("deleting a queue fails its parked gets and removes every item") {
  fixture f;
  f.create_queue("q");
  f.put("q", "p", {"x"});
  caf::scoped_actor self{*f.sys};
  auto waiting = self->request(f.broker, reply_timeout, queue_get_atom::value,
                               queue_get_request{env, "q", "", 1, 20000});
  REQUIRE(f.broker_counter("parked_gets") == 1);
  f.ask_void(delete_atom::value, object_kind::queue, env, std::string{"q"});
  caf::error err;
  waiting.receive([](strings&) { FAIL("the parked get got items"); },
                  [&](caf::error& e) { err = e; });
  CHECK(code_of(err) == errc::not_found);
  auto missing = f.ask_error<uint64_t>(queue_len_atom::value, env, std::string{"q"},
                                       std::string{""}, true);
  CHECK(code_of(missing) == errc::not_found);
  // A queue made again under the same name starts empty, also after a restart.
  f.create_queue("q");
  f.restart_broker();
  CHECK(f.len("q", "p") == 0);
}

TEST_CASE("objects are named per environment, and list shows named ones only") {
  fixture f;
  f.create_queue("q");
  f.ask<object_info>(lookup_atom::value, object_kind::queue, std::string{"dev"},
                     std::string{"other"}, true);
  auto eph = f.ask<object_info>(ephemeral_atom::value, object_kind::queue, env, caf::actor{});
  CHECK(eph.ephemeral);
  CHECK(eph.name.rfind("eq-", 0) == 0);
  auto listed = f.ask<std::vector<object_info>>(list_atom::value, object_kind::queue, env);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].name == "q");
  auto missing = f.ask_error<object_info>(lookup_atom::value, object_kind::queue, env,
                                          std::string{"other"}, false);
  CHECK(code_of(missing) == errc::not_found);
  auto taken = f.ask_error<object_info>(create_atom::value, object_kind::queue, env,
                                        std::string{"q"});
  CHECK(code_of(taken) == errc::already_exists);
  auto bad = f.ask_error<object_info>(create_atom::value, object_kind::dict, env,
                                      std::string{"no/slash"});
  CHECK(code_of(bad) == errc::invalid_argument);
}

TEST_CASE("an ephemeral object is deleted when its owner terminates") {
  fixture f;
  auto owner = f.sys->spawn([](caf::event_based_actor*) -> caf::behavior {
    return {[](int) {}};
  });
  auto eph = f.ask<object_info>(ephemeral_atom::value, object_kind::dict, env, owner);
  f.ask<bool>(dict_put_atom::value, dict_put_request{env, eph.name, "k", "v", false});
  caf::anon_send_exit(owner, caf::exit_reason::user_shutdown);
  owner = nullptr;
  auto gone = [&] {
    caf::scoped_actor self{*f.sys};
    bool missing = false;
    self->request(f.broker, reply_timeout, lookup_atom::value, object_kind::dict, env, eph.name,
                  false)
      .receive([](object_info&) {}, [&](caf::error& err) { missing = code_of(err) == errc::not_found; });
    return missing;
  };
  CHECK(eventually(gone));
}

TEST_CASE("ephemeral objects left by a previous run are deleted at start") {
  fixture f;
  auto eph = f.ask<object_info>(ephemeral_atom::value, object_kind::queue, env, caf::actor{});
  f.put(eph.name, "", {"x"});
  f.restart_broker();
  auto err = f.ask_error<object_info>(lookup_atom::value, object_kind::queue, env, eph.name, false);
  CHECK(code_of(err) == errc::not_found);
  f.restart_broker(); // and nothing of it is left on disk
  CHECK(f.ask<std::vector<object_info>>(list_atom::value, object_kind::queue, env).empty());
  {
    // The clean-up is written without waiting (a crash before it only repeats it at the next
    // start); the writer received it before this flush, so after the flush it is on disk.
    caf::scoped_actor self{*f.sys};
    self->request(f.writer, reply_timeout, storage::flush_atom::value)
      .receive([] {}, [&](caf::error& err) { FAIL("flush failed: " << message_of(err)); });
  }
  size_t keys = 0;
  REQUIRE_FALSE(f.db->scan(storage::table::queues, "", [&](std::string_view, std::string_view) {
    ++keys;
    return true;
  }));
  CHECK(keys == 0);
}

TEST_CASE("dict put, get, skip_if_exists, pop, update, contains and len") {
  fixture f;
  f.create_dict("d");
  CHECK(f.ask<bool>(dict_put_atom::value, dict_put_request{env, "d", "k", "v1", false}));
  CHECK_FALSE(f.ask<bool>(dict_put_atom::value, dict_put_request{env, "d", "k", "v2", true}));
  auto v = f.ask<dict_value>(dict_get_atom::value, env, std::string{"d"}, std::string{"k"});
  CHECK((v.found && v.value == "v1"));
  CHECK_FALSE(f.ask<dict_value>(dict_get_atom::value, env, std::string{"d"}, std::string{"x"}).found);
  f.ask_void(dict_update_atom::value, env, std::string{"d"},
             entry_list{{"a", "1"}, {"b", "2"}, {"a", "3"}});
  CHECK(f.ask<uint64_t>(dict_len_atom::value, env, std::string{"d"}) == 3);
  CHECK(f.ask<bool>(dict_has_atom::value, env, std::string{"d"}, std::string{"a"}));
  auto popped = f.ask<dict_value>(dict_pop_atom::value, env, std::string{"d"}, std::string{"a"});
  CHECK((popped.found && popped.value == "3"));
  CHECK_FALSE(f.ask<bool>(dict_has_atom::value, env, std::string{"d"}, std::string{"a"}));
  CHECK_FALSE(f.ask<dict_value>(dict_pop_atom::value, env, std::string{"d"}, std::string{"a"}).found);
  CHECK(f.ask<uint64_t>(dict_len_atom::value, env, std::string{"d"}) == 2);
  f.restart_broker();
  CHECK(f.ask<uint64_t>(dict_len_atom::value, env, std::string{"d"}) == 2);
  f.ask_void(dict_clear_atom::value, env, std::string{"d"});
  CHECK(f.ask<uint64_t>(dict_len_atom::value, env, std::string{"d"}) == 0);
}

TEST_CASE("dict scans page through the entries in key order") {
  fixture f;
  f.create_dict("d");
  entry_list entries;
  for (int i = 0; i < 25; ++i) {
    char k[8];
    std::snprintf(k, sizeof k, "k%02d", i);
    entries.emplace_back(k, std::to_string(i));
  }
  f.ask_void(dict_update_atom::value, env, std::string{"d"}, entries);
  std::vector<std::string> keys;
  dict_scan_request req{env, "d", "", true, 10, true};
  for (;;) {
    auto page = f.ask<dict_page>(dict_scan_atom::value, req);
    for (auto& [k, v] : page.entries)
      keys.push_back(k);
    if (page.done)
      break;
    req.cursor = page.next_cursor;
    req.from_start = false;
  }
  REQUIRE(keys.size() == 25);
  CHECK(keys.front() == "k00");
  CHECK(keys.back() == "k24");
  CHECK(std::is_sorted(keys.begin(), keys.end()));
}

TEST_CASE("operations on a dict key wait for its write in flight and apply in order") {
  fixture f;
  f.create_dict("d");
  auto groups = f.gate.groups().size();
  f.gate.close();
  caf::scoped_actor self{*f.sys};
  auto put = self->request(f.broker, reply_timeout, dict_put_atom::value,
                           dict_put_request{env, "d", "k", "v1", false});
  f.gate.wait_started(groups + 1);
  // Sent while the put is held at the gate: a get of the same key and a skip_if_exists put.
  auto get = self->request(f.broker, reply_timeout, dict_get_atom::value, env, std::string{"d"},
                           std::string{"k"});
  auto second = self->request(f.broker, reply_timeout, dict_put_atom::value,
                              dict_put_request{env, "d", "k", "v2", true});
  f.gate.open();
  bool written = false;
  put.receive([&](bool w) { written = w; }, [&](caf::error& err) { FAIL(message_of(err)); });
  CHECK(written);
  dict_value seen;
  get.receive([&](dict_value& v) { seen = v; }, [&](caf::error& err) { FAIL(message_of(err)); });
  CHECK((seen.found && seen.value == "v1"));
  bool second_written = true;
  second.receive([&](bool w) { second_written = w; }, [&](caf::error& err) { FAIL(message_of(err)); });
  CHECK_FALSE(second_written);
}

TEST_CASE("deleting a dict waits for its writes and removes every entry") {
  fixture f;
  f.create_dict("d");
  f.ask_void(dict_update_atom::value, env, std::string{"d"}, entry_list{{"a", "1"}, {"b", "2"}});
  f.ask_void(delete_atom::value, object_kind::dict, env, std::string{"d"});
  auto err = f.ask_error<uint64_t>(dict_len_atom::value, env, std::string{"d"});
  CHECK(code_of(err) == errc::not_found);
  f.create_dict("d");
  CHECK(f.ask<uint64_t>(dict_len_atom::value, env, std::string{"d"}) == 0);
  CHECK_FALSE(f.ask<dict_value>(dict_get_atom::value, env, std::string{"d"}, std::string{"a"}).found);
}

// -- guest CALLs (actors/container_supervisor/data_calls.cpp) ------------------------------------

namespace {

/// Runs one guest CALL through handle_data_call and waits for its REPLY.
guest::reply guest_call(fixture& f, const std::string& method, const std::string& body,
                        caf::actor owner = {}) {
  auto done = std::make_shared<std::promise<guest::reply>>();
  auto future = done->get_future();
  container_supervisor::handle_data_call(*f.sys, f.broker, owner, env,
                                         guest::call{7, method, body},
                                         [done](guest::reply r) { done->set_value(std::move(r)); });
  REQUIRE(future.wait_for(reply_timeout) == std::future_status::ready);
  auto reply = future.get();
  CHECK(reply.request_id == 7);
  return reply;
}

} // namespace

TEST_CASE("guest queue calls put, get, peek and count with the documented bodies") {
  fixture f;
  auto ok = [](const guest::reply& r) {
    INFO(r.error);
    CHECK(r.status == errc::none);
  };
  ok(guest_call(f, "queue.lookup", guest::wire_writer{}.str("gq").u8(1).take()));
  ok(guest_call(f, "queue.put",
                guest::wire_writer{}.str("gq").str("").u64(0).u32(2).bytes("a").bytes("b").take()));
  auto len = guest_call(f, "queue.len", guest::wire_writer{}.str("gq").str("").u8(0).take());
  ok(len);
  guest::wire_reader lr{len.body};
  CHECK(lr.u64("count") == 2);
  CHECK_FALSE(lr.finish("len"));

  auto peek = guest_call(f, "queue.peek",
                         guest::wire_writer{}.str("gq").str("").u64(0).u32(10).u64(0).take());
  ok(peek);
  guest::wire_reader pr{peek.body};
  REQUIRE(pr.u32("count") == 2);
  auto seq = pr.u64("seq");
  CHECK(pr.bytes("item") == "a");
  CHECK(pr.u64("seq") == seq + 1);
  CHECK(pr.bytes("item") == "b");
  CHECK(pr.u64("next_cursor") == seq + 2);
  CHECK_FALSE(pr.finish("peek"));

  auto got = guest_call(f, "queue.get", guest::wire_writer{}.str("gq").str("").u32(5).u64(0).take());
  ok(got);
  guest::wire_reader gr{got.body};
  REQUIRE(gr.u32("count") == 2);
  CHECK(gr.bytes("item") == "a");
  CHECK(gr.bytes("item") == "b");
  CHECK_FALSE(gr.finish("get"));
  ok(guest_call(f, "queue.clear", guest::wire_writer{}.str("gq").str("").u8(1).take()));
  ok(guest_call(f, "queue.delete", guest::wire_writer{}.str("gq").take()));
  auto missing = guest_call(f, "queue.len", guest::wire_writer{}.str("gq").str("").u8(1).take());
  CHECK(missing.status == errc::not_found);
}

TEST_CASE("guest dict calls get, put, update, pop, contains, len, scan and clear") {
  fixture f;
  auto flag = [](const guest::reply& r) {
    INFO(r.error);
    REQUIRE(r.status == errc::none);
    guest::wire_reader rd{r.body};
    auto v = rd.u8("flag");
    return v != 0;
  };
  REQUIRE(guest_call(f, "dict.lookup", guest::wire_writer{}.str("gd").u8(1).take()).status == errc::none);
  CHECK(flag(guest_call(f, "dict.put", guest::wire_writer{}.str("gd").bytes("k").bytes("v").u8(0).take())));
  CHECK_FALSE(flag(guest_call(f, "dict.put", guest::wire_writer{}.str("gd").bytes("k").bytes("w").u8(1).take())));
  auto got = guest_call(f, "dict.get", guest::wire_writer{}.str("gd").bytes("k").take());
  guest::wire_reader gr{got.body};
  CHECK(gr.u8("found") == 1);
  CHECK(gr.bytes("value") == "v");
  REQUIRE(guest_call(f, "dict.update",
                     guest::wire_writer{}.str("gd").u32(2).bytes("a").bytes("1").bytes("b").bytes("2").take())
            .status == errc::none);
  auto len = guest_call(f, "dict.len", guest::wire_writer{}.str("gd").take());
  CHECK(guest::wire_reader{len.body}.u64("count") == 3);
  CHECK(flag(guest_call(f, "dict.contains", guest::wire_writer{}.str("gd").bytes("a").take())));
  auto popped = guest_call(f, "dict.pop", guest::wire_writer{}.str("gd").bytes("a").take());
  guest::wire_reader pr{popped.body};
  CHECK(pr.u8("found") == 1);
  CHECK(pr.bytes("value") == "1");
  auto scan = guest_call(f, "dict.scan", guest::wire_writer{}.str("gd").bytes("").u32(10).u8(1).take());
  guest::wire_reader sr{scan.body};
  REQUIRE(sr.u32("count") == 2);
  CHECK(sr.bytes("key") == "b");
  CHECK(sr.bytes("value") == "2");
  CHECK(sr.bytes("key") == "k");
  CHECK(sr.bytes("value") == "v");
  CHECK(sr.bytes("next_cursor") == "k");
  CHECK(sr.u8("done") == 1);
  CHECK_FALSE(sr.finish("scan"));
  REQUIRE(guest_call(f, "dict.clear", guest::wire_writer{}.str("gd").take()).status == errc::none);
  CHECK(guest::wire_reader{guest_call(f, "dict.len", guest::wire_writer{}.str("gd").take()).body}
          .u64("count") == 0);
}

TEST_CASE("a container's ephemeral queue goes when the container's supervisor ends") {
  fixture f;
  auto owner = f.sys->spawn([](caf::event_based_actor*) -> caf::behavior { return {[](int) {}}; });
  auto made = guest_call(f, "queue.ephemeral", "", owner);
  REQUIRE(made.status == errc::none);
  guest::wire_reader r{made.body};
  auto name = r.str("name");
  CHECK(name.rfind("eq-", 0) == 0);
  caf::anon_send_exit(owner, caf::exit_reason::user_shutdown);
  owner = nullptr;
  CHECK(eventually([&] {
    return guest_call(f, "queue.len", guest::wire_writer{}.str(name).str("").u8(1).take()).status
           == errc::not_found;
  }));
}

TEST_CASE("malformed or unknown guest data calls get invalid_argument, never a crash") {
  fixture f;
  CHECK(guest_call(f, "queue.put", guest::wire_writer{}.str("q").take()).status
        == errc::invalid_argument);
  auto huge = guest_call(f, "queue.put", guest::wire_writer{}.str("q").str("").u64(0).u32(1u << 30).take());
  CHECK(huge.status == errc::invalid_argument);
  CHECK(guest_call(f, "dict.frobnicate", guest::wire_writer{}.str("d").take()).status
        == errc::invalid_argument);
  CHECK(container_supervisor::is_data_method("queue.get"));
  CHECK_FALSE(container_supervisor::is_data_method("function.call"));
}
