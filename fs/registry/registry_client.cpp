#include "fs/registry/registry_client.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "fs/layer.hpp"
#include "fs/registry/detail/http.hpp"
#include "fs/registry/detail/json.hpp"
#include "fs/tar_import.hpp"
#include "runtime/errc.hpp"

namespace shoal::registry {

using detail::http_request;
using detail::http_response;
using detail::http_stream;
using detail::json_value;

namespace {

// -- media types ------------------------------------------------------------------------------

constexpr std::string_view oci_index = "application/vnd.oci.image.index.v1+json";
constexpr std::string_view oci_manifest = "application/vnd.oci.image.manifest.v1+json";
constexpr std::string_view docker_list = "application/vnd.docker.distribution.manifest.list.v2+json";
constexpr std::string_view docker_manifest = "application/vnd.docker.distribution.manifest.v2+json";
constexpr std::string_view docker_schema1 = "application/vnd.docker.distribution.manifest.v1+json";
constexpr std::string_view docker_schema1_signed =
  "application/vnd.docker.distribution.manifest.v1+prettyjws";

constexpr const char* manifest_accept =
  "Accept: application/vnd.oci.image.index.v1+json, "
  "application/vnd.oci.image.manifest.v1+json, "
  "application/vnd.docker.distribution.manifest.list.v2+json, "
  "application/vnd.docker.distribution.manifest.v2+json";

/// Manifests larger than this are refused (registries commonly cap them at 4 MiB).
constexpr size_t max_manifest_bytes = 4u << 20;
constexpr size_t max_config_bytes = 16u << 20;
constexpr size_t max_token_bytes = 1u << 20;
/// On a failed import, the rest of a blob up to this size is still downloaded to tell a corrupt
/// blob (digest mismatch) from an archive Shoal cannot read.
constexpr uint64_t max_drain_after_failure = 64u << 20;

bool is_index_type(std::string_view t) { return t == oci_index || t == docker_list; }
bool is_manifest_type(std::string_view t) { return t == oci_manifest || t == docker_manifest; }

enum class layer_type { tarball, foreign, other };

layer_type classify_layer(std::string_view t) {
  if (t == "application/vnd.oci.image.layer.v1.tar"
      || t == "application/vnd.oci.image.layer.v1.tar+gzip"
      || t == "application/vnd.oci.image.layer.v1.tar+zstd"
      || t == "application/vnd.docker.image.rootfs.diff.tar.gzip"
      || t == "application/vnd.docker.image.rootfs.diff.tar"
      || t == "application/vnd.docker.image.rootfs.diff.tar.zstd")
    return layer_type::tarball;
  if (t.find("foreign") != std::string_view::npos
      || t.find("nondistributable") != std::string_view::npos)
    return layer_type::foreign;
  return layer_type::other;
}

// -- small helpers ----------------------------------------------------------------------------

class sha256_stream {
public:
  sha256_stream() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~sha256_stream() { EVP_MD_CTX_free(ctx_); }
  sha256_stream(const sha256_stream&) = delete;
  sha256_stream& operator=(const sha256_stream&) = delete;

  void update(std::string_view data) { EVP_DigestUpdate(ctx_, data.data(), data.size()); }

  /// "sha256:<64 hex>"
  std::string digest() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    static constexpr char hexd[] = "0123456789abcdef";
    std::string out = "sha256:";
    for (unsigned i = 0; i < len; ++i) {
      out += hexd[md[i] >> 4];
      out += hexd[md[i] & 15];
    }
    return out;
  }

private:
  EVP_MD_CTX* ctx_;
};

std::string sha256_digest(std::string_view data) {
  sha256_stream h;
  h.update(data);
  return h.digest();
}

bool valid_digest(std::string_view d) {
  if (d.size() != 71 || d.substr(0, 7) != "sha256:")
    return false;
  for (char c : d.substr(7))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  return true;
}

/// "sha256:abcd1234ef56" — enough to tell layers apart in progress lines.
std::string short_digest(std::string_view d) { return std::string{d.substr(0, 19)}; }

std::string megabytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

std::string url_escape(std::string_view s) {
  static constexpr char hexd[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
        || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hexd[c >> 4];
      out += hexd[c & 15];
    }
  }
  return out;
}

/// The host of "host[:port]" or "[v6][:port]" (without brackets).
std::string host_of(std::string_view registry) {
  if (!registry.empty() && registry.front() == '[') {
    size_t close = registry.find(']');
    return std::string{registry.substr(1, close == std::string_view::npos ? std::string_view::npos
                                                                          : close - 1)};
  }
  return std::string{registry.substr(0, registry.find(':'))};
}

bool is_loopback(const std::string& host) {
  if (host == "localhost" || host == "::1")
    return true;
  if (host.compare(0, 4, "127.") != 0)
    return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.')
      ++dots;
    else if (c < '0' || c > '9')
      return false;
  }
  return dots == 3;
}

/// "CODE: message; CODE: message" from a registry error body, or "".
std::string registry_errors(std::string_view body) {
  auto doc = detail::parse_json(body);
  if (!doc)
    return {};
  const json_value* errors = doc->find("errors");
  if (errors == nullptr)
    return {};
  std::string out;
  for (const auto& e : errors->items()) {
    if (!out.empty())
      out += "; ";
    out += e.string_at("code");
    std::string msg = e.string_at("message");
    if (!msg.empty())
      out += ": " + msg;
  }
  return out;
}

bool has_error_code(std::string_view body, std::string_view code) {
  auto doc = detail::parse_json(body);
  if (!doc || doc->find("errors") == nullptr)
    return false;
  for (const auto& e : doc->find("errors")->items())
    if (e.string_at("code") == code)
      return true;
  return false;
}

// -- the layer cache --------------------------------------------------------------------------

std::map<std::string, fs::chunk_id> load_layer_cache(const std::string& path) {
  std::map<std::string, fs::chunk_id> out;
  std::ifstream in{path};
  std::string line;
  while (std::getline(in, line)) {
    size_t space = line.find(' ');
    if (space == std::string::npos)
      continue;
    std::string blob = line.substr(0, space);
    auto id = fs::chunk_id::from_hex(std::string_view{line}.substr(space + 1));
    if (valid_digest(blob) && id)
      out[blob] = *id;
  }
  return out;
}

/// Appends one line in one write(2) with O_APPEND, so concurrent pulls do not interleave
/// within a line. Not synced: a lost line only costs a re-download.
caf::error append_layer_cache(const std::string& path, const std::string& blob,
                              const fs::chunk_id& layer) {
  std::string line = blob + " " + layer.hex() + "\n";
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return make_error(errc::storage_failure, "cannot open the registry layer cache " + path + ": "
                                               + std::strerror(errno));
  ssize_t n = ::write(fd, line.data(), line.size());
  int saved = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(line.size()))
    return make_error(errc::storage_failure, "cannot append to the registry layer cache " + path
                                               + ": " + std::strerror(saved));
  return {};
}

// -- a pull's conversation with one registry --------------------------------------------------

/// Holds the auth state of one pull. Not thread-safe; lives on the stack of pull().
class session {
public:
  session(const registry_client::options& opts, const image_reference& ref,
          const registry_credentials& creds)
    : opts_(opts), ref_(ref), creds_(creds) {
    std::string host = host_of(ref.registry);
    plain_http_ = opts.insecure_loopback && is_loopback(host);
    for (const auto& r : opts.insecure_registries)
      plain_http_ = plain_http_ || r == ref.registry || r == host;
    base_ = (plain_http_ ? "http://" : "https://") + ref.registry + "/v2/" + ref.repository + "/";
    label_ = "the registry " + ref.registry;
  }

  const std::string& base() const { return base_; }
  const std::string& label() const { return label_; }

  caf::expected<http_response> get(const std::string& url, std::vector<std::string> headers,
                                   size_t max_bytes) {
    return with_auth(url, std::move(headers),
                     [max_bytes](const http_request& r) { return detail::http_get(r, max_bytes); });
  }

  caf::expected<std::unique_ptr<http_stream>> stream(const std::string& url) {
    return with_auth(url, {}, [](const http_request& r) { return http_stream::open(r); });
  }

  /// The error for a final 401 (after authenticating, or when authentication is impossible).
  caf::error unauthorized() const {
    if (creds_.username.empty())
      return make_error(errc::permission_denied,
                        label_ + " requires a login to pull " + ref_.repository
                          + " (HTTP 401; or the repository does not exist); pass "
                            "secret=shoal.Secret.from_dict({'REGISTRY_USERNAME': …, "
                            "'REGISTRY_PASSWORD': …})");
    return make_error(errc::permission_denied,
                      label_ + " rejected the credentials for user '" + creds_.username
                        + "' (HTTP 401), or they do not allow pulling " + ref_.repository
                        + "; check REGISTRY_USERNAME and REGISTRY_PASSWORD in the secret");
  }

  /// Maps a non-2xx answer to GET `url` onto an error; `what` names the object ("manifest").
  caf::error http_failure(long status, const std::string& url, const std::string& body,
                          const std::string& what) const {
    std::string detail = registry_errors(body);
    if (status == 401)
      return unauthorized();
    if (status == 403)
      return make_error(errc::permission_denied,
                        label_ + " denied "
                          + (creds_.username.empty() ? std::string{"anonymous access"}
                                                     : "user '" + creds_.username + "'")
                          + " to " + what + " (HTTP 403" + (detail.empty() ? "" : ": " + detail)
                          + "); check that the account may pull " + ref_.repository);
    if (status == 429)
      return make_error(errc::unavailable, label_ + " is rate limiting pulls (HTTP 429) of "
                                             + what + "; retry later");
    return make_error(errc::unavailable,
                      label_ + " answered HTTP " + std::to_string(status) + " to GET " + url
                        + " (" + what + ")" + (detail.empty() ? "" : ": " + detail));
  }

private:
  http_request make_request(const std::string& url, const std::vector<std::string>& headers) const {
    http_request r;
    r.url = url;
    r.headers = headers;
    r.server_label = label_;
    r.timeout_s = opts_.timeout_s;
    if (kind_ == auth_kind::basic) {
      r.username = creds_.username;
      r.password = creds_.password;
    } else if (kind_ == auth_kind::bearer) {
      r.headers.push_back("Authorization: Bearer " + token_);
    }
    return r;
  }

  static const http_response& head_of(const http_response& r) { return r; }
  static const http_response& head_of(const std::unique_ptr<http_stream>& s) { return s->head(); }

  /// Performs the request; on a 401 authenticates once as the challenge asks and retries.
  /// (Basic: once per pull; bearer: a fresh token per request that needs one, since tokens
  /// expire during long pulls.)
  template <class Perform>
  auto with_auth(const std::string& url, const std::vector<std::string>& headers, Perform perform)
    -> decltype(perform(std::declval<const http_request&>())) {
    auto r = perform(make_request(url, headers));
    if (!r || head_of(*r).status != 401 || kind_ == auth_kind::basic)
      return r;
    if (auto err = authenticate(head_of(*r)))
      return err;
    return perform(make_request(url, headers));
  }

  caf::error authenticate(const http_response& answer) {
    std::vector<detail::auth_challenge> challenges;
    for (const auto& h : answer.headers_named("www-authenticate"))
      for (auto& c : detail::parse_www_authenticate(h))
        challenges.push_back(std::move(c));
    const detail::auth_challenge* bearer = nullptr;
    const detail::auth_challenge* basic = nullptr;
    for (const auto& c : challenges) {
      if (c.scheme == "bearer" && bearer == nullptr)
        bearer = &c;
      if (c.scheme == "basic" && basic == nullptr)
        basic = &c;
    }
    if (bearer != nullptr)
      return fetch_token(*bearer);
    if (basic != nullptr) {
      if (creds_.username.empty())
        return unauthorized();
      kind_ = auth_kind::basic;
      return {};
    }
    return make_error(errc::permission_denied,
                      label_ + " answered HTTP 401 without a Bearer or Basic challenge "
                               "(WWW-Authenticate: '"
                        + answer.header("www-authenticate").value_or("")
                        + "'); Shoal cannot log in to it");
  }

  caf::error fetch_token(const detail::auth_challenge& c) {
    auto param = [&c](const char* name) {
      auto i = c.params.find(name);
      return i == c.params.end() ? std::string{} : i->second;
    };
    std::string realm = param("realm");
    bool realm_https = realm.compare(0, 8, "https://") == 0;
    bool realm_http = realm.compare(0, 7, "http://") == 0;
    if (!realm_https && !realm_http)
      return make_error(errc::permission_denied,
                        label_ + " asks for a bearer token from realm '" + realm
                          + "', which is not an http(s) URL; Shoal cannot log in to it");
    if (realm_http && !plain_http_ && !creds_.username.empty())
      return make_error(errc::permission_denied,
                        label_ + " (https) asks for the credentials to be sent to " + realm
                          + " over plain http; refusing to send them");
    std::string scope = param("scope");
    if (scope.empty())
      scope = "repository:" + ref_.repository + ":pull";
    std::string url = realm + (realm.find('?') == std::string::npos ? "?" : "&");
    std::string service = param("service");
    if (!service.empty())
      url += "service=" + url_escape(service) + "&";
    url += "scope=" + url_escape(scope);

    http_request r;
    r.url = url;
    r.server_label = "the token service of " + ref_.registry;
    r.timeout_s = opts_.timeout_s;
    r.username = creds_.username;
    r.password = creds_.password;
    auto answer = detail::http_get(r, max_token_bytes);
    if (!answer)
      return answer.error();
    if (answer->status == 401 || answer->status == 403)
      return unauthorized();
    if (answer->status != 200)
      return make_error(errc::unavailable,
                        r.server_label + " (" + realm + ") answered HTTP "
                          + std::to_string(answer->status) + " to a token request for "
                          + ref_.repository);
    auto doc = detail::parse_json(answer->body, "the token answer of " + ref_.registry);
    if (!doc)
      return doc.error();
    std::string token = doc->string_at("token");
    if (token.empty())
      token = doc->string_at("access_token");
    if (token.empty())
      return make_error(errc::unavailable, r.server_label + " (" + realm
                                             + ") answered without a token or access_token");
    token_ = std::move(token);
    kind_ = auth_kind::bearer;
    return {};
  }

  enum class auth_kind { none, basic, bearer };

  const registry_client::options& opts_;
  const image_reference& ref_;
  const registry_credentials& creds_;
  bool plain_http_ = false;
  std::string base_;
  std::string label_;
  auth_kind kind_ = auth_kind::none;
  std::string token_;
};

struct fetched_manifest {
  std::string media_type;
  std::string digest;
  json_value doc;
};

struct descriptor {
  std::string media_type;
  std::string digest;
  uint64_t size = 0;
};

caf::expected<descriptor> parse_descriptor(const json_value* v, const std::string& what) {
  if (v == nullptr || !v->is_object())
    return make_error(errc::invalid_argument, what + " is missing or not an object");
  descriptor d;
  d.media_type = v->string_at("mediaType");
  d.digest = v->string_at("digest");
  if (!valid_digest(d.digest))
    return make_error(errc::invalid_argument,
                      what + " has digest '" + d.digest
                        + "'; Shoal pulls sha256 digests only ('sha256:' + 64 hex digits)");
  if (const json_value* size = v->find("size"); size != nullptr) {
    auto n = size->as_uint64();
    if (!n)
      return make_error(errc::invalid_argument, what + " has an invalid size");
    d.size = *n;
  }
  return d;
}

std::string normalize_arch(std::string arch) {
  if (arch == "x86_64" || arch == "x86-64")
    return "amd64";
  if (arch == "aarch64")
    return "arm64";
  return arch;
}

} // namespace

// -- image config -----------------------------------------------------------------------------

caf::expected<image_config> parse_image_config(std::string_view json, std::string_view what) {
  auto doc = detail::parse_json(json, what);
  if (!doc)
    return doc.error();
  if (!doc->is_object())
    return make_error(errc::invalid_argument, std::string{what} + " is not a JSON object");
  image_config out;
  const json_value* config = doc->find("config");
  if (config == nullptr || config->is_null())
    return out;
  if (!config->is_object())
    return make_error(errc::invalid_argument,
                      std::string{what} + ": 'config' is not an object");
  auto strings = [&](const char* key, std::vector<std::string>& dst) -> caf::error {
    const json_value* v = config->find(key);
    if (v == nullptr || v->is_null())
      return {};
    if (v->is_string()) { // tolerated: some tools write a single string
      dst.push_back(v->as_string());
      return {};
    }
    if (!v->is_array())
      return make_error(errc::invalid_argument,
                        std::string{what} + ": config." + key + " is not a list of strings");
    for (const auto& item : v->items()) {
      if (!item.is_string())
        return make_error(errc::invalid_argument,
                          std::string{what} + ": config." + key + " holds a non-string");
      dst.push_back(item.as_string());
    }
    return {};
  };
  std::vector<std::string> env;
  for (auto [key, dst] : {std::pair<const char*, std::vector<std::string>*>{"Env", &env},
                          {"Entrypoint", &out.entrypoint},
                          {"Cmd", &out.cmd}})
    if (auto err = strings(key, *dst))
      return err;
  for (const auto& kv : env) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos)
      out.env.emplace_back(kv, "");
    else
      out.env.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
  }
  out.workdir = config->string_at("WorkingDir");
  out.user = config->string_at("User");
  return out;
}

// -- registry_client --------------------------------------------------------------------------

std::string layer_cache_path(const fs::chunk_store& store) {
  return store.dir() + "/registry-layers";
}

registry_client::registry_client() : registry_client(options{}) {}

registry_client::registry_client(options opts) : options_(std::move(opts)) {
  detail::init_curl();
}

caf::expected<pulled_image>
registry_client::pull(const image_reference& ref, const registry_credentials& credentials,
                      fs::chunk_store& store,
                      const std::function<void(std::string_view line)>& progress) const {
  auto say = [&progress](const std::string& line) {
    if (progress)
      progress(line);
  };
  if (ref.registry.empty() || ref.repository.empty() || ref.manifest_ref().empty())
    return make_error(errc::invalid_argument,
                      "image reference '" + ref.str()
                        + "' is incomplete; build it with parse_reference()");
  const std::string name = ref.str();
  session s{options_, ref, credentials};

  // Fetches a manifest by tag or digest; `expected_digest` (when set) is verified.
  auto fetch_manifest = [&](const std::string& what_ref,
                            const std::string& expected_digest) -> caf::expected<fetched_manifest> {
    std::string url = s.base() + "manifests/" + what_ref;
    auto answer = s.get(url, {manifest_accept}, max_manifest_bytes);
    if (!answer)
      return answer.error();
    if (answer->status == 404) {
      bool no_repo = has_error_code(answer->body, "NAME_UNKNOWN");
      std::string shown = what_ref == ref.manifest_ref() ? name : name + " (" + what_ref + ")";
      return make_error(errc::not_found,
                        "no image '" + shown + "' in the registry ("
                          + (no_repo ? "repository unknown" : "manifest unknown")
                          + "); check the name and tag with `skopeo list-tags docker://"
                          + ref.registry + "/" + ref.repository + "`");
    }
    if (answer->status != 200)
      return s.http_failure(answer->status, url, answer->body, "the manifest of " + name);
    fetched_manifest m;
    m.digest = sha256_digest(answer->body);
    if (!expected_digest.empty() && m.digest != expected_digest)
      return make_error(errc::storage_failure,
                        "the manifest " + expected_digest + " of " + name + " from "
                          + ref.registry + " hashes to " + m.digest
                          + "; the registry's copy is corrupt or the download was altered");
    auto doc = detail::parse_json(answer->body, "the manifest of " + name);
    if (!doc)
      return doc.error();
    if (!doc->is_object())
      return make_error(errc::invalid_argument,
                        "the manifest of " + name + " is not a JSON object");
    m.media_type = doc->string_at("mediaType");
    if (m.media_type.empty()) {
      std::string ct = answer->header("content-type").value_or("");
      m.media_type = ct.substr(0, ct.find(';'));
      while (!m.media_type.empty() && m.media_type.back() == ' ')
        m.media_type.pop_back();
    }
    if (!is_index_type(m.media_type) && !is_manifest_type(m.media_type)) {
      // Neither field says it clearly (plain application/json): look at the shape.
      if (doc->find("manifests") != nullptr)
        m.media_type = std::string{oci_index};
      else if (doc->find("layers") != nullptr && doc->find("config") != nullptr)
        m.media_type = std::string{oci_manifest};
    }
    m.doc = std::move(*doc);
    return m;
  };

  auto top = fetch_manifest(ref.manifest_ref(), ref.digest);
  if (!top)
    return top.error();
  pulled_image out;
  out.index_digest = top->digest;
  fetched_manifest manifest = std::move(*top);

  if (is_index_type(manifest.media_type)) {
    const json_value* list = manifest.doc.find("manifests");
    std::string want = options_.platform_os + "/" + options_.platform_arch
                       + (options_.platform_variant.empty() ? "" : "/" + options_.platform_variant);
    std::string chosen;
    std::string available;
    for (const auto& entry : list != nullptr ? list->items() : std::vector<json_value>{}) {
      const json_value* platform = entry.find("platform");
      if (platform == nullptr)
        continue;
      std::string os = platform->string_at("os");
      std::string arch = normalize_arch(platform->string_at("architecture"));
      std::string variant = platform->string_at("variant");
      if (os == "unknown") // attestation manifests
        continue;
      std::string have = os + "/" + arch + (variant.empty() ? "" : "/" + variant);
      available += (available.empty() ? "" : ", ") + have;
      if (!chosen.empty() || os != options_.platform_os
          || arch != normalize_arch(options_.platform_arch)
          || (!options_.platform_variant.empty() && variant != options_.platform_variant))
        continue;
      auto d = parse_descriptor(&entry, "an entry of the manifest list of " + name);
      if (!d)
        return d.error();
      chosen = d->digest;
    }
    if (chosen.empty())
      return make_error(errc::not_found,
                        "the image " + name + " has no " + want + " variant (it has: "
                          + (available.empty() ? std::string{"none"} : available)
                          + "); pick another tag or platform");
    auto inner = fetch_manifest(chosen, chosen);
    if (!inner)
      return inner.error();
    if (!is_manifest_type(inner->media_type))
      return make_error(errc::invalid_argument,
                        "the " + want + " entry " + chosen + " of " + name
                          + " is not an image manifest (media type '" + inner->media_type + "')");
    manifest = std::move(*inner);
    say("resolved " + name + " to the " + want + " manifest " + short_digest(manifest.digest));
  } else if (manifest.media_type == docker_schema1 || manifest.media_type == docker_schema1_signed
             || (manifest.doc.find("schemaVersion") != nullptr
                 && manifest.doc.find("schemaVersion")->as_uint64() == 1u)) {
    return make_error(errc::invalid_argument,
                      name + " is a Docker schema 1 manifest, which Shoal does not pull; re-push "
                             "the image with a current client (e.g. `skopeo copy`)");
  } else if (!is_manifest_type(manifest.media_type)) {
    return make_error(errc::invalid_argument,
                      name + " is not a container image (manifest media type '"
                        + manifest.media_type + "')");
  }
  out.manifest_digest = manifest.digest;

  // The config.
  auto config_desc = parse_descriptor(manifest.doc.find("config"), "the config of " + name);
  if (!config_desc)
    return config_desc.error();
  if (!config_desc->media_type.empty()
      && config_desc->media_type != "application/vnd.oci.image.config.v1+json"
      && config_desc->media_type != "application/vnd.docker.container.image.v1+json")
    return make_error(errc::invalid_argument,
                      name + " is not a container image (its config has media type '"
                        + config_desc->media_type + "')");
  {
    std::string url = s.base() + "blobs/" + config_desc->digest;
    auto answer = s.get(url, {}, max_config_bytes);
    if (!answer)
      return answer.error();
    if (answer->status != 200)
      return s.http_failure(answer->status, url, answer->body,
                            "the config blob " + config_desc->digest + " of " + name);
    std::string got = sha256_digest(answer->body);
    if (got != config_desc->digest)
      return make_error(errc::storage_failure,
                        "the config blob " + config_desc->digest + " of " + name + " hashes to "
                          + got + "; the registry's copy is corrupt or the download was altered");
    auto config = parse_image_config(answer->body, "the config of " + name);
    if (!config)
      return config.error();
    out.config = std::move(*config);
  }

  // The layers.
  const json_value* layers_json = manifest.doc.find("layers");
  if (layers_json == nullptr || !layers_json->is_array())
    return make_error(errc::invalid_argument, "the manifest of " + name + " has no layer list");
  std::vector<descriptor> layers;
  for (size_t i = 0; i < layers_json->items().size(); ++i) {
    auto d = parse_descriptor(&layers_json->items()[i],
                              "layer " + std::to_string(i + 1) + " of " + name);
    if (!d)
      return d.error();
    switch (classify_layer(d->media_type)) {
      case layer_type::tarball:
        break;
      case layer_type::foreign:
        return make_error(errc::invalid_argument,
                          "layer " + d->digest + " of " + name + " is a foreign "
                            "(non-distributable) layer ('" + d->media_type
                            + "'), served from outside the registry; Shoal pulls self-contained "
                              "Linux images only");
      case layer_type::other:
        return make_error(errc::invalid_argument,
                          "layer " + d->digest + " of " + name + " has media type '"
                            + d->media_type
                            + "', not a layer tarball (plain, gzip or zstd); is this an "
                              "image for a container runtime?");
    }
    out.compressed_bytes += d->size;
    layers.push_back(std::move(*d));
  }
  say("pulling " + name + " (" + std::to_string(layers.size()) + " layers, "
      + megabytes(out.compressed_bytes) + ")");

  const std::string cache_path = layer_cache_path(store);
  auto cache = load_layer_cache(cache_path);

  for (size_t i = 0; i < layers.size(); ++i) {
    const descriptor& d = layers[i];
    const std::string counter = std::to_string(i + 1) + "/" + std::to_string(layers.size());
    const std::string what = "layer " + short_digest(d.digest) + " of " + name;

    if (auto hit = cache.find(d.digest); hit != cache.end() && store.contains(hit->second)) {
      // The layer was imported before; use it if every file chunk is still there.
      auto l = fs::load_layer(store, hit->second);
      if (l) {
        std::vector<fs::chunk_id> ids;
        for (const auto& e : l->entries)
          for (const auto& c : e.chunks)
            ids.push_back(c.id);
        if (store.missing(ids).empty()) {
          out.layers.push_back(hit->second);
          say("layer " + counter + " " + short_digest(d.digest) + " cached");
          continue;
        }
      }
    }

    std::string url = s.base() + "blobs/" + d.digest;
    auto stream = s.stream(url);
    if (!stream)
      return stream.error();
    if ((*stream)->status() != 200) {
      if ((*stream)->status() == 404)
        return make_error(errc::not_found,
                          "the registry " + ref.registry + " has no blob " + d.digest
                            + " (layer " + counter + " of " + name
                            + ", HTTP 404); the image is incomplete, re-push it");
      return s.http_failure((*stream)->status(), url, (*stream)->error_body(), what);
    }

    sha256_stream hash;
    uint64_t received = 0;
    caf::error download_error;
    bool oversize = false;
    http_stream& body = **stream;
    fs::byte_source source = [&]() -> caf::expected<std::string_view> {
      auto block = body.next();
      if (!block) {
        if (!download_error)
          download_error = block.error();
        return block.error();
      }
      hash.update(*block);
      received += block->size();
      if (d.size != 0 && received > d.size) {
        oversize = true;
        body.cancel();
        download_error = make_error(errc::storage_failure,
                                    "blob " + d.digest + " (" + what + ") is larger than the "
                                      + std::to_string(d.size)
                                      + " bytes its manifest states; the registry's copy is "
                                        "corrupt");
        return download_error;
      }
      return *block;
    };
    auto drain = [&]() -> caf::error {
      for (;;) {
        auto block = source();
        if (!block)
          return block.error();
        if (block->empty())
          return {};
      }
    };
    auto mismatch = [&](const std::string& got) {
      return make_error(errc::storage_failure,
                        "blob " + d.digest + " (" + what + ") does not match its digest: the "
                          + std::to_string(received) + " bytes downloaded hash to " + got
                          + "; the registry's copy is corrupt or something altered the "
                            "download — retry, and re-push the image if it persists");
    };

    auto imported = fs::import_tar(source, store, what);
    if (!imported) {
      if (download_error)
        return download_error;
      // Tell a corrupt blob from an archive the importer cannot read, when that is cheap.
      if (d.size != 0 && d.size - std::min(d.size, received) <= max_drain_after_failure
          && !drain()) {
        std::string got = hash.digest();
        if (got != d.digest)
          return mismatch(got);
      }
      return imported.error();
    }
    if (auto err = drain())
      return err;
    if (oversize)
      return download_error;
    std::string got = hash.digest();
    if (got != d.digest)
      return mismatch(got);
    if (d.size != 0 && received != d.size)
      return make_error(errc::storage_failure,
                        "blob " + d.digest + " (" + what + ") has " + std::to_string(received)
                          + " bytes, its manifest states " + std::to_string(d.size));

    auto layer_digest = fs::store_layer(store, *imported);
    if (!layer_digest)
      return layer_digest.error();
    if (auto err = append_layer_cache(cache_path, d.digest, *layer_digest))
      return err;
    cache[d.digest] = *layer_digest;
    out.layers.push_back(*layer_digest);
    ++out.layers_downloaded;
    say("layer " + counter + " " + short_digest(d.digest) + " " + megabytes(received) + " done");
  }
  say("pulled " + name + " (" + short_digest(out.manifest_digest) + ")");
  return out;
}

} // namespace shoal::registry
