#include "actors/block_server/block_server.hpp"

#include <atomic>
#include <chrono>
#include <map>
#include <utility>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "runtime/errc.hpp"

namespace shoal::block_server {

namespace {

struct block_server_state {
  block_server_config cfg;
  /// Fetches waiting for the peer, by fetch id.
  std::map<uint64_t, caf::typed_response_promise<fetch_result>> fetches;
  uint64_t next_fetch = 1;
  // Counters (inspect).
  uint64_t chunks_served = 0;
  uint64_t bytes_served = 0;
  uint64_t chunks_fetched = 0;
  uint64_t bytes_fetched = 0;
  uint64_t fetches_done = 0;
  uint64_t fetches_failed = 0;
  uint64_t chunks_written = 0; ///< pushed through `write` (the peer's fetches count as fetched)
  uint64_t bytes_written = 0;
  uint64_t write_rejections = 0;
  uint64_t read_busy_ns = 0; ///< time spent in store reads for `read`
  /// Read buffers, reused once the bridge dropped its reference (use_count 1).
  std::vector<std::shared_ptr<fs::chunk_buffer>> buffers;

  /// A buffer nobody else holds: a pooled one, or a new one (pooled while there is room).
  std::shared_ptr<fs::chunk_buffer> free_buffer() {
    for (auto& b : buffers)
      if (b.use_count() == 1) {
        // Pairs with the release in the other thread's shared_ptr decrement: its reads of the
        // bytes happen before our next write into them.
        std::atomic_thread_fence(std::memory_order_acquire);
        return b;
      }
    auto b = std::make_shared<fs::chunk_buffer>();
    if (buffers.size() < max_pooled_buffers)
      buffers.push_back(b);
    return b;
  }
  /// The bridge holds read_ahead + 1 batches at a time (bridge_options).
  static constexpr size_t max_pooled_buffers = 4;
};

using self_ptr = block_server_actor::stateful_pointer<block_server_state>;

caf::error not_here(const fs::chunk_id& id, size_t missing_count) {
  std::string msg = "chunk " + id.hex() + " is not stored on this node";
  if (missing_count > 1)
    msg += " (" + std::to_string(missing_count - 1) + " more chunks missing)";
  return make_error(errc::not_found, std::move(msg));
}

/// put_verified over (id, view) pairs; counts. The views stay valid for the call.
caf::error store_verified(block_server_state& st, const lent_chunks& chunks) {
  if (auto err = st.cfg.store->put_verified(chunks)) {
    ++st.write_rejections;
    return err;
  }
  st.chunks_written += chunks.size();
  for (auto& c : chunks)
    st.bytes_written += c.second.size();
  return {};
}

block_server_actor::behavior_type block_server_impl(self_ptr self, block_server_config cfg) {
  self->state.cfg = std::move(cfg);
  return {
    [self](missing_atom, const chunk_ids& ids) -> chunk_ids {
      return self->state.cfg.store->missing(ids);
    },
    [self](sizes_atom, const chunk_ids& ids) -> caf::result<std::vector<uint32_t>> {
      auto& store = *self->state.cfg.store;
      std::vector<uint32_t> sizes;
      sizes.reserve(ids.size());
      for (auto& id : ids) {
        auto size = store.size_of(id);
        if (!size)
          return not_here(id, store.missing(ids).size());
        sizes.push_back(*size);
      }
      return sizes;
    },
    [self](read_atom, chunk_ids& ids) -> caf::result<served_chunks> {
      auto& st = self->state;
      auto t0 = std::chrono::steady_clock::now();
      auto buf = st.free_buffer();
      fs::chunk_store::read_options ro;
      ro.verify = st.cfg.verify_served_reads;
      auto err = st.cfg.store->read(ids, *buf, ro);
      st.read_busy_ns += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count());
      if (err)
        return err;
      st.chunks_served += buf->size();
      st.bytes_served += buf->bytes();
      return served_chunks{std::move(ids), std::move(buf)};
    },
    [self](write_atom, const chunk_batch& batch) -> caf::result<void> {
      if (batch.ids.size() != batch.chunks.size())
        return make_error(errc::invalid_argument,
                          "a chunk batch has " + std::to_string(batch.ids.size()) + " ids and "
                            + std::to_string(batch.chunks.size()) + " chunks");
      lent_chunks chunks;
      chunks.reserve(batch.ids.size());
      for (size_t i = 0; i < batch.ids.size(); ++i)
        chunks.emplace_back(batch.ids[i], batch.chunks[i]);
      if (auto err = store_verified(self->state, chunks))
        return err;
      return caf::unit;
    },
    [self](write_atom, const loan_ptr& loan) {
      loan->finish(store_verified(self->state, loan->chunks()));
    },
    [self](fetch_atom, const chunk_ids& ids) -> caf::result<fetch_result> {
      auto& st = self->state;
      auto missing = st.cfg.store->missing(ids);
      if (missing.empty())
        return fetch_result{};
      if (!st.cfg.peer)
        return make_error(errc::not_found,
                          std::to_string(missing.size()) + " of " + std::to_string(ids.size())
                            + " chunks are not on this node and no peer is configured; the first "
                              "is "
                            + missing.front().hex());
      auto id = st.next_fetch++;
      auto rp = self->make_response_promise<fetch_result>();
      st.fetches.emplace(id, rp);
      auto handle = caf::actor_cast<block_server_actor>(self);
      st.cfg.peer->fetch(std::move(missing), [handle, id](caf::expected<fetch_result> r) {
        if (r)
          caf::anon_send(handle, fetched_atom::value, id, *r, caf::error{});
        else
          caf::anon_send(handle, fetched_atom::value, id, fetch_result{}, r.error());
      });
      return rp;
    },
    [self](fetched_atom, uint64_t id, fetch_result r, caf::error& err) {
      auto& st = self->state;
      auto i = st.fetches.find(id);
      if (i == st.fetches.end())
        return;
      auto rp = std::move(i->second);
      st.fetches.erase(i);
      if (err) {
        ++st.fetches_failed;
        rp.deliver(std::move(err));
        return;
      }
      ++st.fetches_done;
      st.chunks_fetched += r.chunks;
      st.bytes_fetched += r.bytes;
      rp.deliver(r);
    },
    [self](inspect_atom) -> actor_snapshot {
      auto& st = self->state;
      auto s = snapshot_of(self, st.cfg.name, "block_server",
                           st.fetches.empty() ? "running" : "fetching");
      auto i64 = [](uint64_t v) { return static_cast<int64_t>(v); };
      s.counter("chunks_served", i64(st.chunks_served))
        .counter("bytes_served", i64(st.bytes_served))
        .counter("chunks_fetched", i64(st.chunks_fetched))
        .counter("bytes_fetched", i64(st.bytes_fetched))
        .counter("fetches_done", i64(st.fetches_done))
        .counter("fetches_failed", i64(st.fetches_failed))
        .counter("fetches_in_flight", i64(st.fetches.size()))
        .counter("chunks_written", i64(st.chunks_written))
        .counter("bytes_written", i64(st.bytes_written))
        .counter("write_rejections", i64(st.write_rejections))
        .counter("read_busy_ms", i64(st.read_busy_ns / 1000000));
      s.detail("peer", st.cfg.peer ? st.cfg.peer->address() : std::string{"none"});
      s.detail("store", st.cfg.store->dir());
      return s;
    },
  };
}

} // namespace

block_server_actor spawn_block_server(caf::actor_system& sys, block_server_config cfg) {
  return sys.spawn<caf::detached>(block_server_impl, std::move(cfg));
}

} // namespace shoal::block_server
