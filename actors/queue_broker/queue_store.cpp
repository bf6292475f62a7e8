#include "actors/queue_broker/queue_store.hpp"

#include <cstdio>

#include "runtime/errc.hpp"
#include "storage/key.hpp"

namespace shoal::queue_broker {

namespace {

using storage::key;

constexpr uint8_t record_version = 1;
constexpr uint64_t flag_ephemeral = 1;

constexpr std::string_view object_tag = "o";
constexpr std::string_view partition_tag = "p";
constexpr std::string_view item_tag = "i";
constexpr std::string_view entry_tag = "e";

bool read_tag(key::reader& r, std::string_view tag) {
  std::string t;
  return r.str(t) && t == tag;
}

caf::error bad_record(std::string_view what) {
  return make_error(errc::storage_failure, "a stored " + std::string{what} + " record is corrupt");
}

caf::error check_version(std::string_view value, std::string_view what) {
  if (value.empty())
    return bad_record(what);
  if (static_cast<uint8_t>(value[0]) != record_version)
    return make_error(errc::incompatible_state,
                      "a stored " + std::string{what} + " record has version "
                        + std::to_string(static_cast<uint8_t>(value[0])) + ", this shoald reads "
                        + std::to_string(record_version));
  return {};
}

std::string quoted(std::string_view s) {
  return "'" + std::string{s} + "'";
}

} // namespace

std::string_view to_string(object_kind kind) noexcept {
  return kind == object_kind::queue ? "queue" : "dict";
}

// -- keys ------------------------------------------------------------------------------------------

std::string queue_store::object_key(std::string_view env, std::string_view name) {
  return key{}.str(object_tag).str(env).str(name).bytes();
}

std::string queue_store::object_prefix() {
  return key{}.str(object_tag).bytes();
}

std::string queue_store::partition_key(std::string_view env, std::string_view name,
                                       std::string_view partition) {
  return key{}.str(partition_tag).str(env).str(name).str(partition).bytes();
}

std::string queue_store::partition_prefix(std::string_view env, std::string_view name) {
  return key{}.str(partition_tag).str(env).str(name).bytes();
}

std::string queue_store::all_partitions_prefix() {
  return key{}.str(partition_tag).bytes();
}

std::string queue_store::item_key(std::string_view env, std::string_view name,
                                  std::string_view partition, uint64_t seq) {
  return key{}.str(item_tag).str(env).str(name).str(partition).u64(seq).bytes();
}

std::string queue_store::item_prefix(std::string_view env, std::string_view name) {
  return key{}.str(item_tag).str(env).str(name).bytes();
}

std::string queue_store::all_items_prefix() {
  return key{}.str(item_tag).bytes();
}

std::string queue_store::entry_key(std::string_view env, std::string_view name,
                                   std::string_view k) {
  return key{}.str(entry_tag).str(env).str(name).str(k).bytes();
}

std::string queue_store::entry_prefix(std::string_view env, std::string_view name) {
  return key{}.str(entry_tag).str(env).str(name).bytes();
}

std::string queue_store::all_entries_prefix() {
  return key{}.str(entry_tag).bytes();
}

bool queue_store::parse_object_key(std::string_view encoded, std::string& env, std::string& name) {
  key::reader r{encoded};
  return read_tag(r, object_tag) && r.str(env) && r.str(name) && r.done();
}

bool queue_store::parse_partition_key(std::string_view encoded, std::string& env,
                                      std::string& name, std::string& partition) {
  key::reader r{encoded};
  return read_tag(r, partition_tag) && r.str(env) && r.str(name) && r.str(partition) && r.done();
}

bool queue_store::parse_item_key(std::string_view encoded, std::string& env, std::string& name,
                                 std::string& partition, uint64_t& seq) {
  key::reader r{encoded};
  return read_tag(r, item_tag) && r.str(env) && r.str(name) && r.str(partition) && r.u64(seq)
         && r.done();
}

bool queue_store::parse_entry_key(std::string_view encoded, std::string& env, std::string& name,
                                  std::string& k) {
  key::reader r{encoded};
  return read_tag(r, entry_tag) && r.str(env) && r.str(name) && r.str(k) && r.done();
}

bool queue_store::entry_key_suffix(std::string_view encoded, std::string_view prefix,
                                   std::string& k) {
  if (encoded.substr(0, prefix.size()) != prefix)
    return false;
  key::reader r{encoded.substr(prefix.size())};
  return r.str(k) && r.done();
}

// -- records ---------------------------------------------------------------------------------------

std::string queue_store::encode_object(const object_record& rec) {
  std::string out(1, static_cast<char>(record_version));
  out += key{}
           .u64(static_cast<uint64_t>(rec.created_at_ms))
           .u64(rec.ephemeral ? flag_ephemeral : 0)
           .bytes();
  return out;
}

caf::error queue_store::decode_object(std::string_view value, object_record& out) {
  if (auto err = check_version(value, "queue object"))
    return err;
  key::reader r{value.substr(1)};
  uint64_t created = 0;
  uint64_t flags = 0;
  if (!r.u64(created) || !r.u64(flags) || !r.done())
    return bad_record("queue object");
  out.created_at_ms = static_cast<int64_t>(created);
  out.ephemeral = (flags & flag_ephemeral) != 0;
  return {};
}

std::string queue_store::encode_partition(int64_t expires_at_ms) {
  std::string out(1, static_cast<char>(record_version));
  out += key{}.u64(static_cast<uint64_t>(expires_at_ms)).bytes();
  return out;
}

caf::error queue_store::decode_partition(std::string_view value, int64_t& expires_at_ms) {
  if (auto err = check_version(value, "queue partition"))
    return err;
  key::reader r{value.substr(1)};
  uint64_t expires = 0;
  if (!r.u64(expires) || !r.done())
    return bad_record("queue partition");
  expires_at_ms = static_cast<int64_t>(expires);
  return {};
}

std::string queue_store::encode_payload(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 1);
  out.push_back(static_cast<char>(record_version));
  out.append(payload.data(), payload.size());
  return out;
}

caf::error queue_store::decode_payload(std::string_view value, std::string& payload) {
  if (auto err = check_version(value, "queue item"))
    return err;
  payload.assign(value.data() + 1, value.size() - 1);
  return {};
}

size_t queue_store::payload_size(std::string_view value) noexcept {
  return value.empty() ? 0 : value.size() - 1;
}

// -- validation ------------------------------------------------------------------------------------

caf::error queue_store::check_name(object_kind kind, std::string_view name) const {
  auto what = std::string{to_string(kind)};
  if (name.empty())
    return make_error(errc::invalid_argument, "a " + what + " name must not be empty");
  if (name.size() > limits_.max_name_bytes)
    return make_error(errc::invalid_argument,
                      what + " name " + quoted(name.substr(0, 20)) + "... is "
                        + std::to_string(name.size()) + " characters; the limit is "
                        + std::to_string(limits_.max_name_bytes));
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
              || c == '_' || c == '.';
    if (!ok)
      return make_error(errc::invalid_argument,
                        what + " name " + quoted(name)
                          + " may contain only letters, digits, '-', '_' and '.'");
  }
  if (name.front() == '.' || name.front() == '-')
    return make_error(errc::invalid_argument,
                      what + " name " + quoted(name) + " must start with a letter or a digit");
  return {};
}

caf::error queue_store::check_partition(std::string_view partition) const {
  if (partition.size() > limits_.max_partition_bytes)
    return make_error(errc::invalid_argument,
                      "partition key is " + std::to_string(partition.size())
                        + " bytes; the limit is " + std::to_string(limits_.max_partition_bytes));
  for (char c : partition)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return make_error(errc::invalid_argument,
                        "partition keys may not contain control characters");
  return {};
}

caf::error queue_store::check_items(const std::vector<std::string>& items) const {
  if (items.empty())
    return make_error(errc::invalid_argument, "a put needs at least one item");
  size_t total = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].size() > limits_.max_item_bytes)
      return make_error(errc::invalid_argument,
                        "queue item " + std::to_string(i) + " is " + human_bytes(items[i].size())
                          + " serialized; the limit is " + human_bytes(limits_.max_item_bytes)
                          + " per item");
    total += items[i].size();
  }
  if (total > limits_.max_request_bytes)
    return make_error(errc::invalid_argument,
                      "this put holds " + human_bytes(total) + " of items; the limit is "
                        + human_bytes(limits_.max_request_bytes)
                        + " per put (split it into several puts)");
  return {};
}

caf::error queue_store::check_capacity(std::string_view queue, std::string_view partition,
                                       uint64_t held, uint64_t adding) const {
  if (held + adding <= limits_.max_partition_items)
    return {};
  std::string where = partition.empty() ? std::string{"the default partition"}
                                        : "partition " + quoted(partition);
  return make_error(errc::resource_exhausted,
                    "queue " + quoted(queue) + " is full: " + where + " holds "
                      + std::to_string(held) + " items and the limit is "
                      + std::to_string(limits_.max_partition_items)
                      + " items per partition; get or clear items first");
}

caf::error queue_store::resolve_ttl(uint64_t requested_ms, uint64_t& ttl_ms) const {
  if (requested_ms == 0) {
    ttl_ms = limits_.default_partition_ttl_ms;
    return {};
  }
  if (requested_ms > limits_.max_partition_ttl_ms)
    return make_error(errc::invalid_argument,
                      "partition TTL " + std::to_string(requested_ms / 1000)
                        + " s is above the limit of "
                        + std::to_string(limits_.max_partition_ttl_ms / 1000) + " s");
  ttl_ms = requested_ms;
  return {};
}

caf::error queue_store::check_dict_key(std::string_view k) const {
  if (k.size() > limits_.max_dict_key_bytes)
    return make_error(errc::invalid_argument,
                      "dict key is " + human_bytes(k.size()) + " serialized; the limit is "
                        + human_bytes(limits_.max_dict_key_bytes));
  return {};
}

caf::error queue_store::check_dict_value(std::string_view v) const {
  if (v.size() > limits_.max_dict_value_bytes)
    return make_error(errc::invalid_argument,
                      "dict value is " + human_bytes(v.size()) + " serialized; the limit is "
                        + human_bytes(limits_.max_dict_value_bytes));
  return {};
}

caf::error
queue_store::check_entries(const std::vector<std::pair<std::string, std::string>>& entries) const {
  size_t total = 0;
  for (const auto& [k, v] : entries) {
    if (auto err = check_dict_key(k))
      return err;
    if (auto err = check_dict_value(v))
      return err;
    total += k.size() + v.size();
  }
  if (total > limits_.max_request_bytes)
    return make_error(errc::invalid_argument,
                      "this update holds " + human_bytes(total) + "; the limit is "
                        + human_bytes(limits_.max_request_bytes)
                        + " per update (split it into several updates)");
  return {};
}

uint32_t queue_store::clamp_get(uint32_t n) const noexcept {
  if (n == 0)
    return 1;
  return n > limits_.max_get_items ? limits_.max_get_items : n;
}

uint64_t queue_store::clamp_block(uint64_t ms) const noexcept {
  return ms > limits_.max_block_ms ? limits_.max_block_ms : ms;
}

std::string queue_store::human_bytes(uint64_t bytes) {
  char buf[32];
  if (bytes >= (uint64_t{1} << 20) && bytes % (uint64_t{1} << 20) == 0)
    std::snprintf(buf, sizeof buf, "%llu MiB", static_cast<unsigned long long>(bytes >> 20));
  else if (bytes >= (uint64_t{1} << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  else if (bytes >= 1024 && bytes % 1024 == 0)
    std::snprintf(buf, sizeof buf, "%llu KiB", static_cast<unsigned long long>(bytes >> 10));
  else if (bytes >= 1024)
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / 1024);
  else
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  return buf;
}

} // namespace shoal::queue_broker
