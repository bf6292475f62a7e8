#include "actors/gateway/secret_store.hpp"

#include <algorithm>
#include <map>

#include "runtime/errc.hpp"
#include "storage/key.hpp"

namespace shoal::gateway {

namespace {

constexpr uint64_t record_version = 1;
constexpr size_t max_name = 64;
constexpr size_t max_key = 256;
constexpr size_t max_entries = 1000;
constexpr size_t max_bytes = 1 << 20;

std::string key_of(const std::string& environment, const std::string& name) {
  return storage::key{}.str(environment).str(name).bytes();
}

struct record {
  int64_t created_at_ms = 0;
  secret_entries entries;
};

bool decode(std::string_view value, record& out) {
  storage::key::reader r{value};
  uint64_t version = 0;
  uint64_t created = 0;
  uint64_t n = 0;
  if (!r.u64(version) || version != record_version || !r.u64(created) || !r.u64(n)
      || n > max_entries)
    return false;
  out.created_at_ms = static_cast<int64_t>(created);
  out.entries.clear();
  for (uint64_t i = 0; i < n; ++i) {
    std::string k;
    std::string v;
    if (!r.str(k) || !r.str(v))
      return false;
    out.entries.emplace_back(std::move(k), std::move(v));
  }
  return true;
}

secret_info info_of(const std::string& environment, const std::string& name, const record& rec) {
  secret_info out;
  out.name = name;
  out.environment = environment;
  out.created_at_ms = rec.created_at_ms;
  for (const auto& kv : rec.entries)
    out.keys.push_back(kv.first);
  std::sort(out.keys.begin(), out.keys.end());
  return out;
}

caf::error corrupt(const std::string& name) {
  return make_error(errc::storage_failure,
                    "the secrets table holds a record for '" + name
                      + "' this shoald cannot read");
}

} // namespace

std::string secret_store::check_name(const std::string& name) {
  auto ok_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.'
           || c == '_' || c == '-';
  };
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (name.empty() || name.size() > max_name || !alnum(name[0])
      || !std::all_of(name.begin(), name.end(), ok_char))
    return "secret name '" + name.substr(0, max_name)
           + "' is invalid: use 1-64 characters from A-Z, a-z, 0-9, '.', '_' and '-', starting "
             "with a letter or digit";
  return {};
}

std::string secret_store::check_key(const std::string& key) {
  auto head = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  auto tail = [&](char c) { return head(c) || (c >= '0' && c <= '9'); };
  if (key.empty() || key.size() > max_key || !head(key[0])
      || !std::all_of(key.begin(), key.end(), tail))
    return "variable name '" + key.substr(0, max_key)
           + "' is invalid: use letters, digits and '_', not starting with a digit";
  return {};
}

caf::expected<secret_info> secret_store::create(const std::string& environment,
                                                const std::string& name,
                                                const secret_entries& entries, bool force,
                                                int64_t now_ms, storage::write_batch& batch) const {
  if (auto why = check_name(name); !why.empty())
    return make_error(errc::invalid_argument, why);
  if (entries.empty())
    return make_error(errc::invalid_argument,
                      "secret '" + name + "' has no variables: give at least one KEY=VALUE");
  if (entries.size() > max_entries)
    return make_error(errc::invalid_argument, "secret '" + name + "' has "
                                                + std::to_string(entries.size())
                                                + " variables; the limit is 1000");
  std::map<std::string, std::string> merged; // later wins, like the environment
  size_t bytes = 0;
  for (const auto& [k, v] : entries) {
    if (auto why = check_key(k); !why.empty())
      return make_error(errc::invalid_argument, "secret '" + name + "': " + why);
    if (v.find('\0') != std::string::npos)
      return make_error(errc::invalid_argument,
                        "secret '" + name + "': the value of " + k
                          + " contains a NUL byte, which an environment variable cannot hold");
    bytes += k.size() + v.size();
    merged[k] = v;
  }
  if (bytes > max_bytes)
    return make_error(errc::invalid_argument,
                      "secret '" + name + "' is " + std::to_string(bytes)
                        + " bytes; the limit is 1 MiB of names and values");
  auto k = key_of(environment, name);
  if (!force) {
    auto existing = db_.get(storage::table::secrets, k);
    if (!existing)
      return existing.error();
    if (*existing)
      return make_error(errc::already_exists,
                        "secret '" + name + "' already exists in environment '" + environment
                          + "'; pass --force to replace it");
  }
  record rec;
  rec.created_at_ms = now_ms;
  storage::key value;
  value.u64(record_version).u64(static_cast<uint64_t>(now_ms)).u64(merged.size());
  for (auto& [mk, mv] : merged) {
    value.str(mk).str(mv);
    rec.entries.emplace_back(mk, std::string{});
  }
  batch.put(storage::table::secrets, k, value.bytes());
  return info_of(environment, name, rec);
}

caf::expected<std::vector<secret_info>>
secret_store::list(const std::string& environment) const {
  std::vector<secret_info> out;
  std::string bad;
  auto prefix = storage::key{}.str(environment).bytes();
  auto err = db_.scan(storage::table::secrets, prefix,
                      [&](std::string_view k, std::string_view v) {
                        storage::key::reader r{k};
                        std::string env;
                        std::string name;
                        record rec;
                        if (!r.str(env) || !r.str(name) || !decode(v, rec)) {
                          bad = name.empty() ? "?" : name;
                          return false;
                        }
                        out.push_back(info_of(env, name, rec));
                        return true;
                      });
  if (err)
    return err;
  if (!bad.empty())
    return corrupt(bad);
  return out;
}

caf::error secret_store::remove(const std::string& environment, const std::string& name,
                                storage::write_batch& batch) const {
  auto k = key_of(environment, name);
  auto value = db_.get(storage::table::secrets, k);
  if (!value)
    return value.error();
  if (!*value)
    return make_error(errc::not_found, "secret '" + name + "' does not exist in environment '"
                                         + environment + "'; `shoal secret list` shows them");
  batch.erase(storage::table::secrets, k);
  return {};
}

caf::expected<secret_entries> secret_store::read(const std::string& environment,
                                                 const std::string& name) const {
  auto value = db_.get(storage::table::secrets, key_of(environment, name));
  if (!value)
    return value.error();
  if (!*value)
    return make_error(errc::not_found, "secret '" + name + "' does not exist in environment '"
                                         + environment + "'; create it with `shoal secret create "
                                         + name + " KEY=VALUE`");
  record rec;
  if (!decode(**value, rec))
    return corrupt(name);
  return std::move(rec.entries);
}

} // namespace shoal::gateway
