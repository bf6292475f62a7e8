#pragma once
/// File trees <-> layers: scanning a directory into a layer (storing its file data), merging
/// layers bottom to top, and materialising a merged layer into a directory.

#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "fs/chunk_store.hpp"
#include "fs/layer.hpp"

namespace shoal::fs {

struct scan_options {
  /// The directory is an overlayfs upper dir: a character device 0:0 is a whiteout and a
  /// directory with xattr trusted.overlay.opaque="y" is an opaque directory.
  bool overlay_upper = false;
  /// Store file data in the chunk store (false: only hash, for dry runs and tests).
  bool store_data = true;
};

/// Walks `root` (not following symlinks) and returns its entries; file data goes to `store`.
/// Hard links within the tree become hardlink entries. Device nodes, sockets and fifos other
/// than overlay whiteouts are skipped (named in `skipped` when given).
caf::expected<layer> scan_tree(const std::string& root, chunk_store& store, scan_options options = {},
                               std::vector<std::string>* skipped = nullptr);

/// Applies `layers` bottom (index 0) to top: a whiteout removes the path and everything below,
/// an opaque directory hides what lower layers had below it, a later entry replaces an earlier
/// one. The result has no whiteouts and no opaque markers.
layer merge(const std::vector<layer>& layers);

struct materialise_options {
  /// A directory materialised earlier from `link_base` (a merged layer): entries equal to
  /// the base's (same kind, chunks, mode, uid, gid, mtime, target) are hard-linked from it
  /// instead of written. Empty: write everything.
  std::string link_from;
  const layer* link_base = nullptr;
  /// Set uid/gid (false when not root, for tests).
  bool set_owner = true;
};

/// Writes the merged layer `l` into the empty or absent directory `target` (created), file data
/// from `store` (verified). Never follows a symlink: every entry's parents must be directories
/// of the tree (errc::invalid_argument naming the path otherwise). Sets modes, owners and
/// mtimes; directory mtimes last.
caf::error materialise(const layer& l, const chunk_store& store, const std::string& target,
                       const materialise_options& options = {});

} // namespace shoal::fs
