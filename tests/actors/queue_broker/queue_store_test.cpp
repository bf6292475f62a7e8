#include "actors/queue_broker/queue_store.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "runtime/errc.hpp"

using namespace shoal;
using namespace shoal::queue_broker;

TEST_CASE("queue item keys sort by partition, then by sequence number") {
  std::vector<std::string> keys = {
    queue_store::item_key("main", "q", "b", 1),   queue_store::item_key("main", "q", "", 256),
    queue_store::item_key("main", "q", "", 2),    queue_store::item_key("main", "q", "a", 7),
    queue_store::item_key("main", "q", "", 1),    queue_store::item_key("main", "q2", "", 1),
  };
  std::sort(keys.begin(), keys.end());
  auto at = [&](size_t i) {
    std::string env, name, partition;
    uint64_t seq = 0;
    REQUIRE(queue_store::parse_item_key(keys[i], env, name, partition, seq));
    return name + "/" + partition + "/" + std::to_string(seq);
  };
  CHECK(at(0) == "q//1");
  CHECK(at(1) == "q//2");
  CHECK(at(2) == "q//256");
  CHECK(at(3) == "q/a/7");
  CHECK(at(4) == "q/b/1");
  CHECK(at(5) == "q2//1");
}

TEST_CASE("a queue's item prefix covers its items and no other queue's") {
  auto prefix = queue_store::item_prefix("main", "q");
  auto starts = [&](const std::string& k) { return k.rfind(prefix, 0) == 0; };
  CHECK(starts(queue_store::item_key("main", "q", "", 1)));
  CHECK(starts(queue_store::item_key("main", "q", "p", 9)));
  CHECK_FALSE(starts(queue_store::item_key("main", "q2", "", 1)));
  CHECK_FALSE(starts(queue_store::item_key("dev", "q", "", 1)));
  CHECK_FALSE(starts(queue_store::partition_key("main", "q", "")));
}

TEST_CASE("keys parse back into their parts") {
  std::string env, name, partition, key;
  uint64_t seq = 0;
  REQUIRE(queue_store::parse_object_key(queue_store::object_key("dev", "jobs"), env, name));
  CHECK((env == "dev" && name == "jobs"));
  REQUIRE(queue_store::parse_partition_key(queue_store::partition_key("dev", "jobs", "p\x01"), env,
                                           name, partition));
  CHECK(partition == "p\x01");
  REQUIRE(queue_store::parse_entry_key(queue_store::entry_key("dev", "d", std::string("k\0y", 3)),
                                       env, name, key));
  CHECK(key == std::string("k\0y", 3));
  CHECK_FALSE(queue_store::parse_item_key(queue_store::object_key("dev", "jobs"), env, name,
                                          partition, seq));
  std::string suffix;
  auto prefix = queue_store::entry_prefix("dev", "d");
  REQUIRE(queue_store::entry_key_suffix(queue_store::entry_key("dev", "d", "abc"), prefix, suffix));
  CHECK(suffix == "abc");
}

TEST_CASE("records round-trip and carry their version") {
  object_record rec{1234, true};
  object_record back;
  REQUIRE_FALSE(queue_store::decode_object(queue_store::encode_object(rec), back));
  CHECK(back.created_at_ms == 1234);
  CHECK(back.ephemeral);
  int64_t expires = 0;
  REQUIRE_FALSE(queue_store::decode_partition(queue_store::encode_partition(99), expires));
  CHECK(expires == 99);
  std::string payload;
  REQUIRE_FALSE(queue_store::decode_payload(queue_store::encode_payload("abc"), payload));
  CHECK(payload == "abc");
  CHECK(queue_store::payload_size(queue_store::encode_payload("abcd")) == 4);
  auto future = queue_store::encode_payload("x");
  future[0] = 9;
  auto err = queue_store::decode_payload(future, payload);
  REQUIRE(err);
  CHECK(code_of(err) == errc::incompatible_state);
}

TEST_CASE("names are checked with messages that say what is allowed") {
  queue_store s;
  CHECK_FALSE(s.check_name(object_kind::queue, "jobs-1.v2_a"));
  auto empty = s.check_name(object_kind::queue, "");
  REQUIRE(empty);
  CHECK(code_of(empty) == errc::invalid_argument);
  auto bad = s.check_name(object_kind::dict, "a/b");
  REQUIRE(bad);
  CHECK(message_of(bad).find("letters, digits") != std::string::npos);
  auto long_name = s.check_name(object_kind::queue, std::string(65, 'a'));
  REQUIRE(long_name);
  CHECK(message_of(long_name).find("limit is 64") != std::string::npos);
  CHECK(s.check_name(object_kind::queue, "-x"));
  CHECK(s.check_partition(std::string(65, 'p')));
  CHECK(s.check_partition("tab\there"));
  CHECK_FALSE(s.check_partition(""));
}

TEST_CASE("limits are enforced with errors that state the limit") {
  queue_limits limits;
  limits.max_item_bytes = 10;
  limits.max_request_bytes = 25;
  limits.max_partition_items = 5;
  queue_store s{limits};

  auto big = s.check_items({std::string(11, 'x')});
  REQUIRE(big);
  CHECK(code_of(big) == errc::invalid_argument);
  CHECK(message_of(big).find("limit is 10 B per item") != std::string::npos);

  auto many = s.check_items({std::string(10, 'x'), std::string(10, 'x'), std::string(10, 'x')});
  REQUIRE(many);
  CHECK(message_of(many).find("limit is 25 B per put") != std::string::npos);
  CHECK(s.check_items({}));
  CHECK_FALSE(s.check_items({"a", "b"}));

  auto full = s.check_capacity("jobs", "p", 4, 2);
  REQUIRE(full);
  CHECK(code_of(full) == errc::resource_exhausted);
  CHECK(message_of(full).find("limit is 5 items per partition") != std::string::npos);
  CHECK_FALSE(s.check_capacity("jobs", "", 3, 2));

  uint64_t ttl = 0;
  REQUIRE_FALSE(s.resolve_ttl(0, ttl));
  CHECK(ttl == limits.default_partition_ttl_ms);
  REQUIRE_FALSE(s.resolve_ttl(5000, ttl));
  CHECK(ttl == 5000);
  CHECK(s.resolve_ttl(limits.max_partition_ttl_ms + 1, ttl));

  CHECK(s.clamp_get(0) == 1);
  CHECK(s.clamp_get(1u << 30) == limits.max_get_items);
  CHECK(s.clamp_block(1ull << 40) == limits.max_block_ms);
}

TEST_CASE("sizes in messages read like a person wrote them") {
  CHECK(queue_store::human_bytes(100) == "100 B");
  CHECK(queue_store::human_bytes(64 << 10) == "64 KiB");
  CHECK(queue_store::human_bytes(1 << 20) == "1 MiB");
  CHECK(queue_store::human_bytes((1 << 20) + (1 << 19)) == "1.5 MiB");
}
