#pragma once
/// `block_peer`: the client side of a remote `BlockServer`, used to make chunks local.
///
/// `fetch(ids)` asks the local store which of `ids` are missing, then calls `read` on the remote
/// with a local `ChunkSink`. Each batch the remote streams in is checked against the requested
/// order and lent (chunk_loan.hpp, no copy) to a store worker thread, which verifies every chunk
/// against its id and stores it with `put_verified`: a mismatch fails the fetch with
/// [storage_failure] naming the chunk, and nothing of that batch is stored.
///
/// Threads: the object lives on the kj thread that owns `remote` (constructor, `fetch`,
/// destructor). The kj loop never touches the store: lookups and writes run on the worker
/// thread(s). Back-pressure: capnp delivers `-> stream` calls to a sink one at a time, so each
/// read stream has one batch being stored while the kj thread receives the next ones (bounded
/// by the sender's flow-control window); `streams` read calls run side by side.
///
/// Other threads reach it through `link(mailbox)`, a `chunk_source` for the block server actor.

#include <cstddef>
#include <memory>
#include <string>

#include <kj/async.h>

#include "actors/block_server/block_server.hpp"
#include "runtime/kj_mailbox.hpp"
#include "schema/blocks.capnp.h"

namespace shoal::block_server {

struct block_peer_options {
  /// Read calls a fetch is split into (contiguous slices of the missing ids), run at once.
  size_t streams = 1;
  /// Threads verifying and storing received batches.
  size_t store_threads = 1;
};

class block_peer : public std::enable_shared_from_this<block_peer> {
public:
  /// kj thread. `store` is the local store (shared with the node's block server and others).
  block_peer(wire::BlockServer::Client remote, std::shared_ptr<fs::chunk_store> store,
             std::string address, block_peer_options options = {});
  /// kj thread. Cancels fetches in flight (their callers get [unavailable]); the store workers
  /// stop once no sink uses them any more, after the batch they are on.
  ~block_peer();
  block_peer(const block_peer&) = delete;
  block_peer& operator=(const block_peer&) = delete;

  /// Makes `ids` local; resolves with what was transferred. kj thread only; the promise must not
  /// outlive this object (fetches through `link` are owned here and cancelled with it).
  kj::Promise<fetch_result> fetch(chunk_ids ids);

  /// A thread-safe `chunk_source` that runs fetches on this peer through `mailbox` (which must
  /// run on this peer's kj thread). After the peer is gone, its fetches fail with [unavailable].
  /// The peer must be owned by a shared_ptr (the link holds a weak_ptr).
  std::shared_ptr<chunk_source> link(std::shared_ptr<kj_mailbox> mailbox);

  const std::string& address() const noexcept { return address_; }

  struct worker_pool;

private:
  kj::Promise<fetch_result> fetch_missing(chunk_ids missing);
  kj::Promise<fetch_result> fetch_stream(chunk_ids ids);

  wire::BlockServer::Client remote_;
  std::shared_ptr<fs::chunk_store> store_;
  std::string address_;
  block_peer_options options_;
  /// shared_ptr: the sinks handed to the remote share it and may outlive this object (the remote
  /// drops them when it likes); the last owner joins the threads, on the kj thread.
  std::shared_ptr<worker_pool> workers_;
  kj::Own<kj::TaskSet> tasks_; ///< fetches started through a link
  kj::Own<kj::TaskSet::ErrorHandler> task_errors_;

  friend class peer_link;
};

} // namespace shoal::block_server
