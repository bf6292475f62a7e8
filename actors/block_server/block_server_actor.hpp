#pragma once
/// The typed interface of the `block_server` (docs/images.md): serves this node's chunks to
/// peers and makes chunks local by fetching the missing ones from a configured peer.
///
/// Every chunk id is the SHA-256 of the bytes; whatever is stored is verified first.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/block_server/chunk_loan.hpp"
#include "fs/chunk_store.hpp"
#include "runtime/inspect.hpp"

namespace shoal::block_server {

/// Chunk ids in a message. In-process only (never serialised), hence the unsafe-type marker at
/// the end of this file.
using chunk_ids = std::vector<fs::chunk_id>;

/// Chunks in request order: `chunks[i]` is the bytes of `ids[i]`.
struct chunk_batch {
  chunk_ids ids;
  std::vector<std::string> chunks;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, chunk_batch& x) {
  return f(caf::meta::type_name("chunk_batch"), x.ids, x.chunks);
}

/// Chunks read for a peer, in request order: `data->chunks()[i]` is the bytes of `ids[i]`.
/// shared_ptr: the reply travels in a CAF message (copyable) to the bridge's kj thread, which
/// copies the bytes into the capnp message and drops it; the actor then reuses the buffer for a
/// later read (block_server.cpp), so a transfer does not fault in fresh pages for every batch.
/// In-process only (never serialised): see the unsafe-type marker at the end of this file.
struct served_chunks {
  chunk_ids ids;
  std::shared_ptr<const fs::chunk_buffer> data;
};

/// What a fetch moved over the network (0, 0 when everything was local already).
struct fetch_result {
  uint64_t chunks = 0;
  uint64_t bytes = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, fetch_result& x) {
  return f(caf::meta::type_name("fetch_result"), x.chunks, x.bytes);
}

/// shared_ptr: see chunk_loan.hpp (the last copy ends the loan).
using loan_ptr = std::shared_ptr<chunk_loan>;

using missing_atom = caf::atom_constant<caf::atom("bs_missing")>;
using sizes_atom = caf::atom_constant<caf::atom("bs_sizes")>;
using read_atom = caf::atom_constant<caf::atom("bs_read")>;
using write_atom = caf::atom_constant<caf::atom("bs_write")>;
using fetch_atom = caf::atom_constant<caf::atom("bs_fetch")>;
using fetched_atom = caf::atom_constant<caf::atom("bs_fetched")>;

using block_server_actor = caf::typed_actor<
  /// ids -> the ones not stored here, in order, without duplicates.
  caf::replies_to<missing_atom, chunk_ids>::with<chunk_ids>,
  /// ids -> their stored sizes; [not_found] naming the first absent one. The bridge plans its
  /// ≤ 4 MiB batches with it before streaming anything.
  caf::replies_to<sizes_atom, chunk_ids>::with<std::vector<uint32_t>>,
  /// ids -> the same ids with their bytes (counted as served), for the bridge's `read`, whose
  /// receiver verifies every chunk (schema/blocks.capnp); verified here as well only when
  /// `block_server_config::verify_served_reads` is set. [not_found] naming the chunk;
  /// [storage_failure] for a failed read (or a corrupt chunk when verifying).
  caf::replies_to<read_atom, chunk_ids>::with<served_chunks>,
  /// Stores owned chunks after verifying each against its id; [storage_failure] naming the first
  /// mismatch, and then nothing of the batch is stored.
  caf::replies_to<write_atom, chunk_batch>::with<void>,
  /// The same for lent bytes (the capnp bridge's `write`); answered through the loan.
  caf::reacts_to<write_atom, loan_ptr>,
  /// ids -> what had to be fetched from the peer so that all of them are local now.
  /// Without a peer, missing chunks are [not_found]; a peer's bad chunk is [storage_failure].
  caf::replies_to<fetch_atom, chunk_ids>::with<fetch_result>,
  /// Internal: a fetch started by `fetch_atom` ended (fetch id, result, error).
  caf::reacts_to<fetched_atom, uint64_t, fetch_result, caf::error>,
  /// Counters: chunks/bytes served, fetched, written; the peer's address in the details.
  inspect_handler>;

} // namespace shoal::block_server

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::block_server::chunk_ids)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::block_server::loan_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(shoal::block_server::served_chunks)
