#pragma once
/// `registry_client`: pulls an image from an OCI distribution (v2) registry into the chunk store.
///
///     GET /v2/<name>/manifests/<tag|digest>   OCI index / Docker manifest list → the manifest of
///                                             options.platform_os/arch[/variant]
///     GET /v2/<name>/blobs/<config digest>    image config (Env, WorkingDir, User, Entrypoint, Cmd)
///     GET /v2/<name>/blobs/<layer digest>     streamed: SHA-256 checked and fed to fs::import_tar
///                                             on the caller's thread while curl downloads on
///                                             another; the layer is stored only if the digest
///                                             matches
///
/// Auth: anonymous first; a 401 challenge `Bearer realm=…,service=…,scope=…` fetches a token from
/// the realm (with basic credentials when given), `Basic` retries with the credentials.
///
/// Layer cache: `<chunk store dir>/registry-layers` is a text file of lines
/// `<blob digest> <layer digest hex>` (e.g. `sha256:ab… 5f…`), appended after each imported
/// layer and read at every pull. A blob whose line exists, whose layer manifest chunk and file
/// chunks are all in the store, is neither downloaded nor imported again. Lines that do not
/// parse (a torn last line after a crash) are ignored; a stale line only costs a re-download.
///
/// Threads: pull() blocks the calling thread (plus one curl thread per blob download). A client
/// holds no state between pulls, so several threads may pull through one client at once.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

#include "fs/chunk_store.hpp"
#include "fs/registry/reference.hpp"

namespace shoal::registry {

/// Login for a registry. The password is never logged or put into an error message.
struct registry_credentials {
  std::string username;
  std::string password;

  bool empty() const noexcept { return username.empty() && password.empty(); }
};

/// The parts of an OCI image config (`config` object) a container runs with.
struct image_config {
  std::vector<std::pair<std::string, std::string>> env;  ///< `Env` "K=V", in order
  std::string workdir;                                   ///< `WorkingDir`
  std::string user;                                      ///< `User`
  std::vector<std::string> entrypoint;                   ///< `Entrypoint`
  std::vector<std::string> cmd;                          ///< `Cmd`
};

/// Parses an OCI/Docker image config JSON document. Errors: errc::invalid_argument naming `what`.
[[nodiscard]] caf::expected<image_config> parse_image_config(std::string_view json,
                                                           std::string_view what);

struct pulled_image {
  /// Digest of the image manifest whose layers these are ("sha256:…"); for a manifest list or
  /// index, the digest of the entry chosen for the platform.
  std::string manifest_digest;
  /// Digest of what the reference resolved to (the index / list when there is one, otherwise
  /// equal to manifest_digest): `registry/repository@index_digest` pins the pulled image.
  std::string index_digest;
  /// Layer digests (fs::store_layer), base first.
  std::vector<fs::chunk_id> layers;
  image_config config;
  /// Sum of the layer blob sizes in the manifest (compressed, as stored in the registry).
  uint64_t compressed_bytes = 0;
  /// Layers downloaded and imported by this pull; the others came from the layer cache.
  size_t layers_downloaded = 0;
};

class registry_client {
public:
  struct options {
    /// Plain http for 127.0.0.0/8, ::1 and localhost, like docker.
    bool insecure_loopback = true;
    /// Registries (host[:port] as written in references, or just the host) spoken to in plain
    /// http.
    std::vector<std::string> insecure_registries;
    /// Manifests, configs and tokens: the whole request. Blobs: the longest stall.
    long timeout_s = 300;
    std::string platform_os = "linux";
    std::string platform_arch = "amd64";
    /// Empty: any variant (the first entry for os/arch wins).
    std::string platform_variant;
  };

  registry_client();
  explicit registry_client(options opts);

  /// Pulls `ref` into `store` and returns its layers and config. `progress` (may be empty) gets
  /// human-readable lines on the calling thread: "pulling HOST/NAME:TAG (N layers, X MB)",
  /// "layer sha256:abcd1234ef56 X MB done", "layer sha256:… cached".
  ///
  /// Errors: errc::not_found (no such tag, repository or platform), errc::permission_denied
  /// (credentials missing or rejected; the message says which and how to pass them),
  /// errc::unavailable / errc::timeout (network, TLS, HTTP 5xx; naming the host and curl's
  /// message), errc::invalid_argument (unsupported manifest or layer media type, bad JSON),
  /// errc::storage_failure (a blob that does not match its digest, named), and the errors of
  /// fs::import_tar and the chunk store.
  [[nodiscard]] caf::expected<pulled_image>
  pull(const image_reference& ref, const registry_credentials& credentials,
       fs::chunk_store& store, const std::function<void(std::string_view line)>& progress) const;

  const options& config() const noexcept { return options_; }

private:
  options options_;
};

/// `<store dir>/registry-layers`, the layer cache file described above.
std::string layer_cache_path(const fs::chunk_store& store);

} // namespace shoal::registry
