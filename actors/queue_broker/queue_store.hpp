#pragma once
/// `queue_store`: the pure logic of queues and dicts — key layout, record encoding and limits.
/// The queue broker (queue_broker.cpp) owns the in-memory state and the actor protocol; this
/// class only says how that state looks on disk and what a request may contain. No actors here.
///
/// Key layout (storage/key.hpp, order-preserving; "env" is the environment name):
///
///   queues table
///     ("o", env, name)                    -> object record   (one per queue)
///     ("p", env, name, partition)         -> partition record (expiry of the partition)
///     ("i", env, name, partition, seq)    -> item record     (seq: u64, FIFO order)
///   dicts table
///     ("o", env, name)                    -> object record   (one per dict)
///     ("e", env, name, key)               -> entry record    (key: the SDK's pickled key bytes)
///
/// So the items of one partition are one prefix scan, in FIFO order; the entries of one dict are
/// one prefix scan in key-byte order. The default partition is the empty string.
///
/// Records start with their record version (docs/schema-conventions.md, "State on disk"):
///   object    = version:u8=1, then key-encoded u64 created_at_ms, u64 flags (bit 0: ephemeral)
///   partition = version:u8=1, then key-encoded u64 expires_at_ms
///   item      = version:u8=1, then the payload bytes
///   entry     = version:u8=1, then the value bytes

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>

namespace shoal::queue_broker {

enum class object_kind : uint8_t { queue = 0, dict = 1 };

/// "queue" or "dict".
std::string_view to_string(object_kind kind) noexcept;

/// What the broker enforces. Every violation fails with a message that states the limit.
struct queue_limits {
  /// One queue item (its pickled bytes).
  size_t max_item_bytes = size_t{1} << 20;
  /// Items one partition may hold (durable plus in-flight puts).
  uint64_t max_partition_items = 100000;
  /// One put / update request, all items or entries together.
  size_t max_request_bytes = size_t{32} << 20;
  /// Items one get may return; it returns fewer when their bytes would exceed max_reply_bytes.
  uint32_t max_get_items = 10000;
  size_t max_reply_bytes = size_t{32} << 20;
  /// Partition TTL when the put gives none, and the largest one accepted.
  uint64_t default_partition_ttl_ms = 24ull * 3600 * 1000;
  uint64_t max_partition_ttl_ms = 30ull * 24 * 3600 * 1000;
  /// The longest a get or peek waits on the server; the SDK waits longer by asking again.
  uint64_t max_block_ms = 300000;
  /// Names of queues and dicts, and partition keys.
  size_t max_name_bytes = 64;
  size_t max_partition_bytes = 64;
  /// Dict keys and values (pickled bytes).
  size_t max_dict_key_bytes = size_t{64} << 10;
  size_t max_dict_value_bytes = size_t{16} << 20;
  /// Entries one scan page may return.
  uint32_t max_scan_entries = 1000;
};

/// The stored facts of a queue or dict object.
struct object_record {
  int64_t created_at_ms = 0;
  bool ephemeral = false;
};

class queue_store {
public:
  explicit queue_store(queue_limits limits = {}) : limits_(limits) {}

  const queue_limits& limits() const noexcept { return limits_; }

  // -- keys ------------------------------------------------------------------------------------
  static std::string object_key(std::string_view env, std::string_view name);
  /// Prefix of every object record (both tables use the same object layout).
  static std::string object_prefix();
  static std::string partition_key(std::string_view env, std::string_view name,
                                   std::string_view partition);
  static std::string partition_prefix(std::string_view env, std::string_view name);
  static std::string all_partitions_prefix();
  static std::string item_key(std::string_view env, std::string_view name,
                              std::string_view partition, uint64_t seq);
  static std::string item_prefix(std::string_view env, std::string_view name);
  static std::string all_items_prefix();
  static std::string entry_key(std::string_view env, std::string_view name, std::string_view key);
  static std::string entry_prefix(std::string_view env, std::string_view name);
  static std::string all_entries_prefix();

  /// Parsed keys, for the scans at start-up. False when `encoded` is not of that shape.
  [[nodiscard]] static bool parse_object_key(std::string_view encoded, std::string& env,
                                             std::string& name);
  [[nodiscard]] static bool parse_partition_key(std::string_view encoded, std::string& env,
                                                std::string& name, std::string& partition);
  [[nodiscard]] static bool parse_item_key(std::string_view encoded, std::string& env,
                                           std::string& name, std::string& partition,
                                           uint64_t& seq);
  [[nodiscard]] static bool parse_entry_key(std::string_view encoded, std::string& env,
                                            std::string& name, std::string& key);
  /// The dict key of an entry key whose prefix is `entry_prefix(env, name)`.
  [[nodiscard]] static bool entry_key_suffix(std::string_view encoded, std::string_view prefix,
                                             std::string& key);

  // -- records ---------------------------------------------------------------------------------
  static std::string encode_object(const object_record& r);
  [[nodiscard]] static caf::error decode_object(std::string_view value, object_record& out);
  static std::string encode_partition(int64_t expires_at_ms);
  [[nodiscard]] static caf::error decode_partition(std::string_view value, int64_t& expires_at_ms);
  /// Items and dict entries: the version byte, then the payload.
  static std::string encode_payload(std::string_view payload);
  [[nodiscard]] static caf::error decode_payload(std::string_view value, std::string& payload);
  /// Payload size of an encoded item or entry (0 for a malformed one).
  static size_t payload_size(std::string_view value) noexcept;

  // -- validation (errc::invalid_argument unless said otherwise) --------------------------------
  /// 1..max_name_bytes of [A-Za-z0-9._-], not starting with '.' or '-'.
  [[nodiscard]] caf::error check_name(object_kind kind, std::string_view name) const;
  /// 0..max_partition_bytes of printable ASCII ("" is the default partition).
  [[nodiscard]] caf::error check_partition(std::string_view partition) const;
  /// Every item within max_item_bytes, the request within max_request_bytes, at least one item.
  [[nodiscard]] caf::error check_items(const std::vector<std::string>& items) const;
  /// errc::resource_exhausted when `held + adding` exceeds max_partition_items.
  [[nodiscard]] caf::error check_capacity(std::string_view queue, std::string_view partition,
                                          uint64_t held, uint64_t adding) const;
  /// The TTL to use for `requested_ms` (0: the default); invalid_argument above the maximum.
  [[nodiscard]] caf::error resolve_ttl(uint64_t requested_ms, uint64_t& ttl_ms) const;
  [[nodiscard]] caf::error check_dict_key(std::string_view key) const;
  [[nodiscard]] caf::error check_dict_value(std::string_view value) const;
  /// Entries of one update: each key and value within limits, all of them within
  /// max_request_bytes.
  [[nodiscard]] caf::error
  check_entries(const std::vector<std::pair<std::string, std::string>>& entries) const;

  /// `n` clamped to 1..max_get_items.
  uint32_t clamp_get(uint32_t n) const noexcept;
  /// `ms` clamped to 0..max_block_ms.
  uint64_t clamp_block(uint64_t ms) const noexcept;

  /// "1 MiB", "64 KiB", "100 B": the sizes in limit messages.
  static std::string human_bytes(uint64_t bytes);

private:
  queue_limits limits_;
};

} // namespace shoal::queue_broker
