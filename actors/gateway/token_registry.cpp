#include "actors/gateway/token_registry.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "runtime/errc.hpp"
#include "storage/key.hpp"

namespace shoal::gateway {

namespace {

constexpr size_t id_hex_chars = 16;
constexpr size_t secret_hex_chars = 48;
constexpr uint64_t record_version = 2;

std::string to_hex(const unsigned char* data, size_t size) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out.push_back(digits[data[i] >> 4]);
    out.push_back(digits[data[i] & 0xf]);
  }
  return out;
}

std::string random_hex(size_t hex_chars) {
  std::vector<unsigned char> bytes(hex_chars / 2);
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1)
    throw std::runtime_error("OpenSSL RAND_bytes failed: no entropy");
  return to_hex(bytes.data(), bytes.size());
}

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr);
  return to_hex(digest, size);
}

bool is_hex(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  return true;
}

struct stored_token {
  std::string secret_hash;
  token_info info;
};

bool decode(std::string_view token_id, std::string_view value, stored_token& out) {
  storage::key::reader r{value};
  uint64_t version = 0;
  uint64_t created = 0;
  if (!r.u64(version) || (version != 1 && version != record_version) || !r.str(out.secret_hash)
      || !r.str(out.info.environment) || !r.str(out.info.label) || !r.u64(created))
    return false;
  uint64_t admin = 0;
  if (version == record_version && !r.u64(admin))
    return false;
  out.info.admin = admin != 0; // version 1 records predate the flag: never admin
  out.info.token_id = std::string{token_id};
  out.info.created_at_ms = static_cast<int64_t>(created);
  return true;
}

caf::error unauthenticated(std::string_view why) {
  return make_error(errc::unauthenticated, std::string{why});
}

std::string encode(const stored_token& t) {
  storage::key value;
  value.u64(record_version)
    .str(t.secret_hash)
    .str(t.info.environment)
    .str(t.info.label)
    .u64(static_cast<uint64_t>(t.info.created_at_ms))
    .u64(t.info.admin ? 1 : 0);
  return value.bytes();
}

} // namespace

bool token_registry::valid_environment(const std::string& env) {
  if (env.empty() || env.size() > 64)
    return false;
  for (char c : env)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
      return false;
  return true;
}

caf::error token_registry::mark_admin(const std::string& token_id,
                                      storage::write_batch& batch) const {
  auto k = storage::key{}.str(token_id).bytes();
  auto value = db_.get(storage::table::tokens, k);
  if (!value)
    return value.error();
  if (!*value)
    return make_error(errc::not_found, "no token with id '" + token_id + "'");
  stored_token stored;
  if (!decode(token_id, **value, stored))
    return make_error(errc::storage_failure,
                      "the tokens table holds a record for " + token_id
                        + " this shoald cannot read");
  if (stored.info.admin)
    return {};
  stored.info.admin = true;
  batch.put(storage::table::tokens, k, encode(stored));
  return {};
}

std::string token_registry::id_of(std::string_view token) {
  auto dot = token.find('.');
  if (dot != 4 + id_hex_chars || token.substr(0, 4) != "tok-" || !is_hex(token.substr(4, dot - 4)))
    return {};
  return std::string{token.substr(0, dot)};
}

caf::expected<minted_token> token_registry::mint(const std::string& environment,
                                                 const std::string& label, int64_t now_ms,
                                                 storage::write_batch& batch, bool admin) const {
  if (!valid_environment(environment))
    return make_error(errc::invalid_argument,
                      "environment name '" + environment
                        + "' is invalid: use 1-64 characters from a-z, 0-9, '-' and '_'");
  minted_token out;
  out.info.token_id = "tok-" + random_hex(id_hex_chars);
  out.info.environment = environment;
  out.info.label = label;
  out.info.created_at_ms = now_ms;
  out.info.admin = admin;
  auto secret = random_hex(secret_hex_chars);
  out.secret = out.info.token_id + "." + secret;
  stored_token stored{sha256_hex(secret), out.info};
  batch.put(storage::table::tokens, storage::key{}.str(out.info.token_id).bytes(), encode(stored));
  return out;
}

caf::expected<token_info> token_registry::verify(std::string_view token) const {
  if (token.empty())
    return unauthenticated("no token was presented");
  auto id = id_of(token);
  auto secret = id.empty() ? std::string_view{} : token.substr(id.size() + 1);
  if (id.empty() || secret.size() != secret_hex_chars || !is_hex(secret))
    return unauthenticated("the token is malformed (expected tok-<id>.<secret>)");
  auto value = db_.get(storage::table::tokens, storage::key{}.str(id).bytes());
  if (!value)
    return value.error();
  stored_token stored;
  if (!*value || !decode(id, **value, stored))
    return unauthenticated("token " + id + " is unknown or was revoked");
  auto presented = sha256_hex(secret);
  if (presented.size() != stored.secret_hash.size()
      || CRYPTO_memcmp(presented.data(), stored.secret_hash.data(), presented.size()) != 0)
    return unauthenticated("token " + id + " does not match its secret");
  return stored.info;
}

caf::expected<std::vector<token_info>> token_registry::list() const {
  std::vector<token_info> out;
  bool corrupt = false;
  auto err = db_.scan(storage::table::tokens, {}, [&](std::string_view k, std::string_view v) {
    storage::key::reader r{k};
    std::string id;
    stored_token stored;
    if (!r.str(id) || !decode(id, v, stored)) {
      corrupt = true;
      return false;
    }
    out.push_back(std::move(stored.info));
    return true;
  });
  if (err)
    return err;
  if (corrupt)
    return make_error(errc::storage_failure, "the tokens table holds a record this shoald cannot read");
  return out;
}

caf::error token_registry::revoke(const std::string& token_id, storage::write_batch& batch) const {
  auto k = storage::key{}.str(token_id).bytes();
  auto value = db_.get(storage::table::tokens, k);
  if (!value)
    return value.error();
  if (!*value)
    return make_error(errc::not_found, "no token with id '" + token_id
                                         + "'; `shoal token list` shows the ids");
  batch.erase(storage::table::tokens, k);
  return {};
}

caf::expected<bool> token_registry::empty() const {
  bool found = false;
  auto err = db_.scan(storage::table::tokens, {}, [&](std::string_view, std::string_view) {
    found = true;
    return false;
  });
  if (err)
    return err;
  return !found;
}

} // namespace shoal::gateway
