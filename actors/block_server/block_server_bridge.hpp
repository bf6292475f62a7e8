#pragma once
/// The Cap'n Proto face of the block server: `BlockServer` (schema/blocks.capnp), handed out by
/// `Session.blocks()`. Method bodies forward to the actor; kj thread only.
///
/// `read` plans ≤ 4 MiB batches from the chunks' sizes, then streams them to the caller's
/// `ChunkSink` in request order: the next batch is read by the actor while the previous one is
/// on the wire, and at most `send_window` sink writes are unconfirmed at a time (`-> stream`
/// flow control: each write's promise is awaited before the window slides).
///
/// `write` lends the call's chunk bytes to the actor (actors/block_server/chunk_loan.hpp): they
/// are verified and stored straight from the capnp message, without a copy.

#include <cstddef>
#include <cstdint>

#include <caf/fwd.hpp>

#include "actors/block_server/block_server_actor.hpp"
#include "runtime/rpc_server.hpp"
#include "schema/blocks.capnp.h"

namespace shoal::block_server {

struct bridge_options {
  /// A batch holds chunks up to this many bytes (a larger chunk travels alone).
  size_t batch_bytes = 4u << 20;
  /// Batches read from the actor ahead of the one being sent.
  size_t read_ahead = 2;
  /// Sink writes sent whose stream promise has not resolved yet.
  size_t send_window = 2;
};

/// A `BlockServer` capability over `server`; `ctx` must outlive it (rpc_server guarantees it).
wire::BlockServer::Client make_block_server_bridge(rpc_context& ctx, caf::actor_system& sys,
                                                   block_server_actor server,
                                                   bridge_options options = {});

/// Parses a capnp chunk id (32 raw bytes); [invalid_argument] naming its position otherwise.
/// Throws a kj::Exception (it is meant for method bodies).
fs::chunk_id chunk_id_from_wire(capnp::Data::Reader raw, size_t position);

/// The capnp form of an id (a view of `id`'s bytes).
inline capnp::Data::Reader chunk_id_to_wire(const fs::chunk_id& id) {
  return {id.bytes.data(), id.bytes.size()};
}

} // namespace shoal::block_server
