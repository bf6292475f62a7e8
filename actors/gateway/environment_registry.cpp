#include "actors/gateway/environment_registry.hpp"

#include "actors/gateway/token_registry.hpp"
#include "runtime/errc.hpp"
#include "storage/key.hpp"

namespace shoal::gateway {

namespace {

constexpr uint64_t record_version = 1;

std::string key_of(const std::string& name) { return storage::key{}.str(name).bytes(); }

std::string value_of(int64_t now_ms) {
  return storage::key{}.u64(record_version).u64(static_cast<uint64_t>(now_ms)).bytes();
}

bool decode(std::string_view value, int64_t& created_at_ms) {
  storage::key::reader r{value};
  uint64_t version = 0;
  uint64_t created = 0;
  if (!r.u64(version) || version != record_version || !r.u64(created))
    return false;
  created_at_ms = static_cast<int64_t>(created);
  return true;
}

} // namespace

std::string environment_registry::missing(const std::string& name) {
  return "environment '" + name + "' does not exist; create it with `shoal environment create "
         + name + "` (`shoal environment list` shows them)";
}

caf::expected<environment_info>
environment_registry::create(const std::string& name, int64_t now_ms,
                             storage::write_batch& batch) const {
  if (!token_registry::valid_environment(name))
    return make_error(errc::invalid_argument,
                      "environment name '" + name.substr(0, 64)
                        + "' is invalid: use 1-64 characters from a-z, 0-9, '-' and '_'");
  auto found = exists(name);
  if (!found)
    return found.error();
  if (*found)
    return make_error(errc::already_exists, "environment '" + name + "' already exists");
  batch.put(storage::table::environments, key_of(name), value_of(now_ms));
  return environment_info{name, now_ms};
}

caf::error environment_registry::ensure(const std::string& name, int64_t now_ms,
                                        storage::write_batch& batch) const {
  auto found = exists(name);
  if (!found)
    return found.error();
  if (!*found)
    batch.put(storage::table::environments, key_of(name), value_of(now_ms));
  return {};
}

caf::expected<std::vector<environment_info>> environment_registry::list() const {
  std::vector<environment_info> out;
  bool corrupt = false;
  auto err = db_.scan(storage::table::environments, {},
                      [&](std::string_view k, std::string_view v) {
                        storage::key::reader r{k};
                        environment_info info;
                        if (!r.str(info.name) || !decode(v, info.created_at_ms)) {
                          corrupt = true;
                          return false;
                        }
                        out.push_back(std::move(info));
                        return true;
                      });
  if (err)
    return err;
  if (corrupt)
    return make_error(errc::storage_failure,
                      "the environments table holds a record this shoald cannot read");
  return out;
}

caf::expected<bool> environment_registry::exists(const std::string& name) const {
  auto value = db_.get(storage::table::environments, key_of(name));
  if (!value)
    return value.error();
  return static_cast<bool>(*value);
}

caf::error environment_registry::remove(const std::string& name,
                                        storage::write_batch& batch) const {
  if (name == main_environment)
    return make_error(errc::invalid_argument, "environment 'main' cannot be deleted");
  auto found = exists(name);
  if (!found)
    return found.error();
  if (!*found)
    return make_error(errc::not_found, "environment '" + name
                                         + "' does not exist; `shoal environment list` shows them");
  // Secrets are keyed by environment: one prefix probe.
  bool has_secret = false;
  auto err = db_.scan(storage::table::secrets, storage::key{}.str(name).bytes(),
                      [&](std::string_view, std::string_view) {
                        has_secret = true;
                        return false;
                      });
  if (err)
    return err;
  if (has_secret)
    return make_error(errc::invalid_argument,
                      "environment '" + name
                        + "' still holds secrets; delete them first (`shoal -e " + name
                        + " secret list`)");
  auto tokens = token_registry{db_}.list();
  if (!tokens)
    return tokens.error();
  for (const auto& t : *tokens)
    if (t.environment == name && !t.admin)
      return make_error(errc::invalid_argument,
                        "environment '" + name + "' still has token " + t.token_id
                          + "; revoke its tokens first (`shoal token revoke ID`)");
  batch.erase(storage::table::environments, key_of(name));
  return {};
}

} // namespace shoal::gateway
