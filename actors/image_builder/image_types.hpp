#pragma once
/// The vocabulary of images (docs/images.md): what a client asks to build, what a build reports,
/// and the durable record of an image. Plain data; CAF messages and RocksDB values.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/meta/type_name.hpp>

namespace shoal::images {

using key_values = std::vector<std::pair<std::string, std::string>>;

/// One step of an image spec (schema/images.capnp ImageStep).
struct image_step {
  std::string kind;
  std::vector<std::string> args;
  std::string blob;            ///< sha256 hex of an uploaded blob, or empty
  key_values env;              ///< this step's extra environment (secrets); never hashed or logged
  bool force_build = false;
  std::string registry_user;   ///< "registry" steps: credentials; never hashed or logged
  std::string registry_password;
  std::string label;           ///< how the CLI names the step
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, image_step& x) {
  return f(caf::meta::type_name("image_step"), x.kind, x.args, x.blob, x.env, x.force_build,
           x.registry_user, x.registry_password, x.label);
}

struct image_spec {
  std::vector<image_step> steps; ///< the base step first
  bool ignore_cache = false;
  /// The environment whose named secrets the steps may read (the session's; not on the wire).
  std::string environment;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, image_spec& x) {
  return f(caf::meta::type_name("image_spec"), x.steps, x.ignore_cache, x.environment);
}

enum class step_status : uint8_t { cached = 0, building = 1, built = 2, failed = 3 };

struct step_result {
  uint32_t index = 0;
  std::string image_id;
  step_status status = step_status::cached;
  std::string reason;          ///< why it was (re)built; empty when cached
  uint64_t duration_ms = 0;
  uint64_t layer_bytes = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_result& x) {
  return f(caf::meta::type_name("step_result"), x.index, x.image_id, x.status, x.reason,
           x.duration_ms, x.layer_bytes);
}

struct build_result {
  std::string image_id;        ///< the last step's image
  std::vector<step_result> steps;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, build_result& x) {
  return f(caf::meta::type_name("build_result"), x.image_id, x.steps);
}

/// What `image_service::collect_garbage` freed.
struct gc_result {
  uint64_t images = 0;               ///< recorded images (all kept)
  uint64_t trees_removed = 0;        ///< materialised trees of removed images
  std::vector<std::string> trees_in_use; ///< trees of removed images still mounted: kept
  uint64_t chunks_removed = 0;       ///< chunks no image references any more
  uint64_t chunk_bytes_removed = 0;
  uint64_t packs_rewritten = 0;      ///< packs whose live chunks were moved out
  uint64_t packs_removed = 0;
  uint64_t chunks_moved = 0;
  uint64_t bytes_moved = 0;
  uint64_t disk_bytes_freed = 0;     ///< pack bytes deleted minus bytes moved
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, gc_result& x) {
  return f(caf::meta::type_name("gc_result"), x.images, x.trees_removed, x.trees_in_use,
           x.chunks_removed, x.chunk_bytes_removed, x.packs_rewritten, x.packs_removed,
           x.chunks_moved, x.bytes_moved, x.disk_bytes_freed);
}

/// What an image carries besides its files; inherited from the parent, changed by metadata steps.
struct image_config {
  key_values env;              ///< in order; a later entry of the same key wins
  std::string workdir;
  std::string user;
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, image_config& x) {
  return f(caf::meta::type_name("image_config"), x.env, x.workdir, x.user, x.entrypoint, x.cmd);
}

/// The durable record of one image (table::images, key = image id, record version 1).
struct image_record {
  std::string id;              ///< "im-" + 32 hex
  std::string parent;          ///< empty for a base
  std::string kind;            ///< the step kind that made it
  std::string canonical;       ///< the canonical step text (no secrets)
  std::string label;
  std::vector<std::string> layers; ///< layer digests (hex), base first
  image_config config;
  std::string python;          ///< interpreter path inside the image; empty: none found
  int64_t created_at_ms = 0;
  uint64_t content_bytes = 0;  ///< file content of all layers
  uint64_t layer_bytes = 0;    ///< file content of this step's own layer
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, image_record& x) {
  return f(caf::meta::type_name("image_record"), x.id, x.parent, x.kind, x.canonical, x.label,
           x.layers, x.config, x.python, x.created_at_ms, x.content_bytes, x.layer_bytes);
}

inline constexpr uint8_t image_record_version = 1;

/// Receives a build's progress; called from the building thread. Implementations forward to
/// the client (the bridge posts to the kj thread) and must not block for long.
class build_progress {
public:
  virtual ~build_progress() = default;
  virtual void step(const step_result& result) = 0;
  virtual void line(uint32_t index, std::string text) = 0;
};

/// shared_ptr: the bridge that made it and the build that reports to it both hold it, and
/// either may finish first.
using build_progress_ptr = std::shared_ptr<build_progress>;

} // namespace shoal::images

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::images::build_progress_ptr)
