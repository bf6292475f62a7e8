#pragma once
/// `block_server`: the actor behind `BlockServer` (schema/blocks.capnp) on every node.
///
/// It owns no data of its own: chunks live in the node's `fs::chunk_store`, which it reads
/// (serving peers) and writes (chunks pushed to it). Store calls block on disk, so the actor is
/// spawned `caf::detached` (its own thread) and never stalls the shared CAF scheduler.
///
/// State diagram of a fetch (per request):
///
///     received ──all local──► answered (0, 0)
///        │ some missing
///        ├── no peer ──► [not_found] naming the first missing chunk
///        ▼
///     FETCHING (the peer's kj thread streams them into the store, verified)
///        ├── done ──► answered (chunks, bytes) ; counters
///        └── error ──► answered with it (a bad chunk: [storage_failure] naming it; nothing
///                      unverified is ever stored)
///
/// The actor itself: running ──exit──► stopped (a fetch in flight answers its caller when the
/// peer finishes; the answer then goes nowhere).

#include <functional>
#include <memory>
#include <string>

#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include "actors/block_server/block_server_actor.hpp"
#include "fs/chunk_store.hpp"

namespace shoal::block_server {

/// Where `fetch` gets the chunks the store lacks: a remote block server (see `peer_connection`),
/// or a fake in tests. Every method may be called from any thread.
class chunk_source {
public:
  using done_fn = std::function<void(caf::expected<fetch_result>)>;
  virtual ~chunk_source() = default;
  /// Makes `ids` local (fetching only those still missing then). `done` runs exactly once, on
  /// any thread, and must only hand the result over.
  virtual void fetch(chunk_ids ids, done_fn done) = 0;
  /// "host:port" of the peer, for inspection.
  virtual std::string address() const = 0;
};

struct block_server_config {
  /// shared_ptr: the store is also used by the image builder and by the block peer's store
  /// worker on the kj side; whoever stops last closes it.
  std::shared_ptr<fs::chunk_store> store;
  /// Null: no peer, fetch only reports what is missing. shared_ptr: the composition root keeps
  /// the connection too (to stop it in order).
  std::shared_ptr<chunk_source> peer;
  /// Check each chunk's SHA-256 when serving `read`. On by default: `Session.blocks` also
  /// serves admin clients that may not verify, and the store's rule is that a corrupt chunk is
  /// an error, never silent bad data. Turning it off saves one SHA-256 pass per byte served
  /// (~1.8 GB/s a core) when every receiver is a block_peer, which verifies with put_verified
  /// and refuses a mismatch naming the chunk; measured transfers were disk-bound either way
  /// (bench/RESULTS.md, "Block transfer").
  bool verify_served_reads = true;
  /// Name in the admin directory ("block_server").
  std::string name = "block_server";
};

/// Spawns the actor detached (it blocks on disk).
block_server_actor spawn_block_server(caf::actor_system& sys, block_server_config cfg);

} // namespace shoal::block_server
