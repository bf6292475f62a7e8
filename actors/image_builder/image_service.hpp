#pragma once
/// `image_service`: the blocking core of images (docs/images.md). It computes image ids, answers
/// cache hits from the `images` table, runs build steps (debootstrap, registry pulls, commands in
/// crun build containers, file layers), stores layers in the chunk store, and materialises image
/// trees for containers. The image_builder actor and the container supervisor's boot call it
/// from detached threads; nothing here runs on the shared CAF scheduler or the kj thread.
///
/// State of one image id on this node:
///
///     absent ──build(step)──► BUILDING ──ok──► RECORDED (table::images, synced)
///                               │  ▲  └─fail─► absent (the error goes to every waiter)
///                               │  └── a second build of the same id waits here
///     RECORDED ──tree()──► MATERIALISING ──► TREE (<state>/images/trees/<key>, shared by every
///                                                  image with the same layers)
///     RECORDED ──remove()──► absent (refused while another image names it as parent)
///
/// Threads: every method may be called from any thread concurrently. Builds of one id and
/// materialisations of one tree happen once; concurrent callers wait for them.

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "actors/image_builder/image_types.hpp"
#include "fs/chunk_store.hpp"
#include "fs/layer.hpp"
#include "runtime/container/apt_sources.hpp"
#include "runtime/container/default_image.hpp"
#include "storage/store.hpp"

namespace shoal::container {
class oci_runtime;
}

namespace shoal::images {

struct image_service_options {
  std::string state_dir;       ///< trees under <state_dir>/images/trees, build dirs under …/work
  std::string sdk_dir;         ///< the host directory holding the `shoal` package (run_function)
  /// debootstrap for "debian_slim" (tests inject a fake); empty: the real one.
  container::command_runner debootstrap_runner;
  /// Where debootstrap caches .deb files (absolute); empty: <state_dir>/images/debs.
  std::string debootstrap_cache;
  /// The Debian mirror; empty: read from this machine's apt configuration.
  std::string debian_mirror;
  /// Registry host for references without one (SHOAL_DEFAULT_REGISTRY); may be empty.
  std::string default_registry;
  /// Extra registries reached over plain http (loopback ones always are).
  std::vector<std::string> insecure_registries;
};

/// The canonical text of a step (what its image id hashes), or errc::invalid_argument naming
/// the step and what is wrong with it.
caf::expected<std::string> canonical_step(const image_step& step, size_t index);

/// "im-" + the first 32 hex digits of SHA-256(parent id, "\n", canonical step).
std::string image_id_of(std::string_view parent_id, std::string_view canonical);

/// The spec of the default image, Image.debian_slim(): one "debian_slim" step for Python 3.11.
image_spec default_image_spec();

class image_service {
public:
  /// `db` and `runtime` must outlive the service; `chunks` is shared with the block server.
  image_service(storage::store& db, std::shared_ptr<fs::chunk_store> chunks,
                container::oci_runtime& runtime, image_service_options options);
  ~image_service();

  /// Builds what `spec` lacks, in order, reporting to `progress` (may be null). Errors:
  /// invalid_argument (a malformed step, named; a failing step: "step N (label) failed …"
  /// after its output went to `progress`), unavailable (a registry or mirror unreachable),
  /// storage_failure.
  caf::expected<build_result> build(const image_spec& spec, const build_progress_ptr& progress);

  /// The id `Image.debian_slim()` has.
  std::string default_image_id() const;

  /// The read-only tree of `image_id` on this node, materialised on first use. An empty id
  /// means the default image, built first if needed (its output goes to `on_line`).
  caf::expected<std::string> tree(const std::string& image_id,
                                  const container::progress_callback& on_line = {});

  caf::expected<image_record> record(const std::string& image_id) const;
  caf::expected<std::vector<image_record>> list() const;
  /// Forgets an image (its chunks stay; they may be shared). invalid_argument while another
  /// image is built on it, not_found for an unknown id.
  caf::error remove(const std::string& image_id);

  /// Frees the disk that removed images held: their trees (unless a container still has one
  /// mounted) and every chunk no recorded image's layers reference (chunk_store::collect).
  /// Builds and tree materialisations wait while it runs, and it waits for those in progress
  /// (a build's chunks are referenced only once its image is recorded). Errors: storage_failure
  /// (a recorded image's layer cannot be read: nothing is collected; or chunk_store::collect's).
  caf::expected<gc_result> collect_garbage();

  /// Counters for the image builder's inspect snapshot.
  struct counters {
    uint64_t builds = 0, steps_built = 0, steps_cached = 0, trees_materialised = 0;
  };
  counters stats() const;

  const std::shared_ptr<fs::chunk_store>& chunks() const noexcept { return chunks_; }

private:
  struct once;
  caf::expected<image_record> build_step(const image_step& step, size_t index,
                                         const std::string& canonical, const std::string& id,
                                         const image_record* parent,
                                         const build_progress_ptr& progress,
                                         const std::string& environment);
  caf::expected<image_record> run_in_container(const image_step& step, size_t index,
                                               const image_record& parent, image_record rec,
                                               const build_progress_ptr& progress,
                                               const std::string& environment);
  caf::expected<std::string> tree_of(const image_record& rec);
  /// <state_dir>/images/trees: one directory (and a `.done` marker) per layer stack.
  std::string trees_root() const { return options_.state_dir + "/images/trees"; }
  caf::error put_record(const image_record& rec);
  /// Runs `work` once per `key` at a time: a concurrent caller with the same key waits for the
  /// running one and then returns its error (or none).
  caf::error once_per_key(std::map<std::string, std::shared_ptr<once>>& table,
                          const std::string& key, const std::function<caf::error()>& work);

  storage::store& db_;
  std::shared_ptr<fs::chunk_store> chunks_;
  container::oci_runtime& runtime_;
  image_service_options options_;
  mutable std::mutex mutex_;
  /// Builds and materialisations hold it shared; collect_garbage exclusively.
  std::shared_mutex gc_mutex_;
  std::map<std::string, std::shared_ptr<once>> building_;
  std::map<std::string, std::shared_ptr<once>> materialising_;
  counters counters_;
};

} // namespace shoal::images
