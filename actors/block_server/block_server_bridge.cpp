#include "actors/block_server/block_server_bridge.hpp"

#include <deque>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>

#include "runtime/errc.hpp"
#include "runtime/kj_bridge.hpp"

namespace shoal::block_server {

fs::chunk_id chunk_id_from_wire(capnp::Data::Reader raw, size_t position) {
  fs::chunk_id id;
  if (raw.size() != id.bytes.size())
    kj::throwFatalException(bridge::to_kj_exception(
      errc::invalid_argument, "chunk id #" + std::to_string(position) + " has "
                                + std::to_string(raw.size())
                                + " bytes; a chunk id is the 32 raw bytes of its SHA-256"));
  std::memcpy(id.bytes.data(), raw.begin(), id.bytes.size());
  return id;
}

namespace {

chunk_ids ids_from_wire(capnp::List<capnp::Data>::Reader list) {
  chunk_ids ids;
  ids.reserve(list.size());
  for (unsigned i = 0; i < list.size(); ++i)
    ids.push_back(chunk_id_from_wire(list[i], i));
  return ids;
}

/// One `read` call in progress: the batches planned, reads asked ahead, sink writes unconfirmed.
struct read_job {
  wire::ChunkSink::Client sink;
  chunk_ids ids;
  std::vector<std::pair<size_t, size_t>> batches; ///< [first, last) into ids
  std::deque<kj::Promise<served_chunks>> reads;     ///< asked of the actor, in batch order
  size_t requested = 0;                           ///< batches asked for so far
  std::deque<kj::Promise<void>> sends;            ///< stream promises not yet awaited
  uint64_t chunks = 0;
  uint64_t bytes = 0;

  explicit read_job(wire::ChunkSink::Client s) : sink(kj::mv(s)) {}
};

class block_server_impl final : public wire::BlockServer::Server {
public:
  block_server_impl(rpc_context& ctx, caf::actor_system& sys, block_server_actor server,
                    bridge_options options)
    : ctx_(ctx), sys_(sys), server_(std::move(server)), options_(options) {}

  kj::Promise<void> missing(MissingContext ctx) override {
    auto pass = ctx_.gate.enter();
    auto ids = ids_from_wire(ctx.getParams().getIds());
    return bridge::ask<chunk_ids>(sys_, server_, bridge::default_timeout, missing_atom::value,
                                  std::move(ids))
      .then([ctx](chunk_ids absent) mutable {
        auto out = ctx.getResults().initIds(static_cast<unsigned>(absent.size()));
        for (unsigned i = 0; i < absent.size(); ++i)
          out.set(i, chunk_id_to_wire(absent[i]));
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> read(ReadContext ctx) override {
    auto pass = ctx_.gate.enter();
    auto params = ctx.getParams();
    auto job = kj::heap<read_job>(params.getSink());
    job->ids = ids_from_wire(params.getIds());
    ctx.releaseParams();
    auto& j = *job;
    return bridge::ask<std::vector<uint32_t>>(sys_, server_, bridge::default_timeout,
                                              sizes_atom::value, j.ids)
      .then([this, &j](std::vector<uint32_t> sizes) {
        plan(j, sizes);
        return pump(j, 0);
      })
      .then([ctx, &j]() mutable {
        auto results = ctx.getResults();
        results.setChunks(j.chunks);
        results.setBytes(j.bytes);
      })
      .attach(kj::mv(job), kj::mv(pass));
  }

  kj::Promise<void> write(WriteContext ctx) override {
    auto pass = ctx_.gate.enter();
    auto params = ctx.getParams();
    auto ids = params.getIds();
    auto chunks = params.getChunks();
    if (ids.size() != chunks.size())
      return bridge::to_kj_exception(errc::invalid_argument,
                                     "write got " + std::to_string(ids.size()) + " ids and "
                                       + std::to_string(chunks.size()) + " chunks");
    lent_chunks lent;
    lent.reserve(ids.size());
    for (unsigned i = 0; i < ids.size(); ++i)
      lent.emplace_back(chunk_id_from_wire(ids[i], i),
                        std::string_view{reinterpret_cast<const char*>(chunks[i].begin()),
                                         chunks[i].size()});
    // The params (which own the bytes) live until this call's promise is gone; the loan's
    // promise resolves only once the actor is done with them.
    auto batch = lend(std::move(lent));
    caf::anon_send(server_, write_atom::value, std::move(batch.loan));
    return kj::mv(batch.done).attach(kj::mv(pass));
  }

private:
  void plan(read_job& j, const std::vector<uint32_t>& sizes) {
    size_t first = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (i > first && bytes + sizes[i] > options_.batch_bytes) {
        j.batches.emplace_back(first, i);
        first = i;
        bytes = 0;
      }
      bytes += sizes[i];
    }
    if (first < sizes.size())
      j.batches.emplace_back(first, sizes.size());
  }

  /// Sends batch `next` and everything after it.
  kj::Promise<void> pump(read_job& j, size_t next) {
    while (j.requested < j.batches.size() && j.requested <= next + options_.read_ahead) {
      auto [first, last] = j.batches[j.requested++];
      chunk_ids slice(j.ids.begin() + first, j.ids.begin() + last);
      j.reads.push_back(bridge::ask<served_chunks>(sys_, server_, bridge::default_timeout,
                                                 read_atom::value, std::move(slice)));
    }
    if (next == j.batches.size())
      return finish(j);
    auto batch = kj::mv(j.reads.front());
    j.reads.pop_front();
    return batch.then([this, &j, next](served_chunks b) -> kj::Promise<void> {
      j.sends.push_back(send(j, b));
      if (j.sends.size() < options_.send_window)
        return pump(j, next + 1);
      auto oldest = kj::mv(j.sends.front());
      j.sends.pop_front();
      return oldest.then([this, &j, next] { return pump(j, next + 1); });
    });
  }

  /// Copies the batch into one capnp message (the one copy on the sending side) and sends it;
  /// `b`'s buffer goes back to the actor when the caller drops `b`.
  kj::Promise<void> send(read_job& j, const served_chunks& b) {
    const auto& bytes = b.data->chunks();
    uint64_t words = 16 + b.ids.size() * (2 + 4 + 1);
    for (auto& c : bytes)
      words += (c.size() + 7) / 8 + 1;
    auto req = j.sink.writeRequest(capnp::MessageSize{words, 0});
    auto n = static_cast<unsigned>(b.ids.size());
    auto ids = req.initIds(n);
    auto chunks = req.initChunks(n);
    for (unsigned i = 0; i < n; ++i) {
      ids.set(i, chunk_id_to_wire(b.ids[i]));
      auto c = bytes[i];
      chunks.set(i, capnp::Data::Reader(reinterpret_cast<const kj::byte*>(c.data()), c.size()));
      j.bytes += c.size();
    }
    j.chunks += n;
    return req.send();
  }

  kj::Promise<void> finish(read_job& j) {
    auto all = kj::heapArrayBuilder<kj::Promise<void>>(j.sends.size());
    for (auto& p : j.sends)
      all.add(kj::mv(p));
    j.sends.clear();
    return kj::joinPromises(all.finish());
  }

  rpc_context& ctx_;
  caf::actor_system& sys_;
  block_server_actor server_;
  bridge_options options_;
};

} // namespace

wire::BlockServer::Client make_block_server_bridge(rpc_context& ctx, caf::actor_system& sys,
                                                   block_server_actor server,
                                                   bridge_options options) {
  return kj::heap<block_server_impl>(ctx, sys, std::move(server), options);
}

} // namespace shoal::block_server
