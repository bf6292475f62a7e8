#include "actors/block_server/block_peer.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "actors/block_server/block_server_bridge.hpp"
#include "runtime/errc.hpp"
#include "runtime/kj_bridge.hpp"
#include "runtime/log.hpp"

namespace shoal::block_server {

/// Threads that run store calls for the peer, so that the kj loop never blocks on disk.
struct block_peer::worker_pool {
  using job = std::function<void()>;

  explicit worker_pool(size_t n) {
    for (size_t i = 0; i < std::max<size_t>(n, 1); ++i)
      threads.emplace_back([this] { run(); });
  }

  /// Jobs still queued are dropped (a dropped loan finishes with [unavailable]); running ones
  /// complete first.
  ~worker_pool() {
    std::deque<job> dropped;
    {
      std::lock_guard<std::mutex> lock{mutex};
      stopping = true;
      dropped.swap(queue);
    }
    changed.notify_all();
    for (auto& t : threads)
      t.join();
  }

  void post(job j) {
    {
      std::lock_guard<std::mutex> lock{mutex};
      queue.push_back(std::move(j));
    }
    changed.notify_one();
  }

  void run() {
    for (;;) {
      job j;
      {
        std::unique_lock<std::mutex> lock{mutex};
        changed.wait(lock, [this] { return stopping || !queue.empty(); });
        if (stopping)
          return;
        j = std::move(queue.front());
        queue.pop_front();
      }
      auto t0 = std::chrono::steady_clock::now();
      j();
      busy_ns += static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                         std::chrono::steady_clock::now() - t0)
                                         .count());
    }
  }

  std::mutex mutex;
  std::condition_variable changed;
  std::deque<job> queue;
  bool stopping = false;
  std::vector<std::thread> threads;
  std::atomic<uint64_t> busy_ns{0}; ///< time spent in jobs, all threads
};

namespace {

/// The caf::error a kj exception from a bridge (ours or the remote's) stands for: the
/// "[name] message" convention of kj_bridge.hpp, also behind capnp's "remote exception: ".
caf::error error_from_kj(const kj::Exception& ex) {
  std::string_view text = ex.getDescription().cStr();
  constexpr std::string_view remote_prefix = "remote exception: ";
  if (text.substr(0, remote_prefix.size()) == remote_prefix)
    text.remove_prefix(remote_prefix.size());
  if (!text.empty() && text.front() == '[') {
    auto close = text.find("] ");
    if (close != std::string_view::npos)
      if (auto code = errc_from_string(text.substr(1, close - 1)))
        return make_error(*code, std::string{text.substr(close + 2)});
  }
  auto code = ex.getType() == kj::Exception::Type::FAILED ? errc::internal : errc::unavailable;
  return make_error(code, "block peer: " + std::string{text});
}

/// One read stream of a fetch; shared (kj thread only) by the fetch's continuation and the sink,
/// which the remote holds and may drop at any time.
struct stream_state {
  chunk_ids ids;               ///< what was asked for, in order
  size_t received = 0;         ///< ids[received] is the next the remote must send
  uint64_t stored = 0;         ///< chunks verified and stored
  uint64_t bytes = 0;
  kj::Maybe<kj::Exception> error; ///< the first failure of a write
  kj::Own<kj::PromiseFulfiller<void>> all_stored;

  void check() {
    if (all_stored && stored == ids.size())
      all_stored->fulfill();
  }
  void fail(const kj::Exception& ex) {
    if (error == nullptr)
      error = ex;
    if (all_stored)
      all_stored->reject(kj::cp(ex));
  }
};

class chunk_sink_impl final : public wire::ChunkSink::Server {
public:
  chunk_sink_impl(std::shared_ptr<stream_state> st, std::shared_ptr<block_peer::worker_pool> workers,
                  std::shared_ptr<fs::chunk_store> store)
    : st_(std::move(st)), workers_(std::move(workers)), store_(std::move(store)) {}

  ~chunk_sink_impl() {
    if (st_->stored < st_->ids.size() && st_->error == nullptr)
      st_->fail(bridge::to_kj_exception(
        errc::unavailable, "the peer stopped streaming after " + std::to_string(st_->received)
                             + " of " + std::to_string(st_->ids.size()) + " chunks"));
  }

  kj::Promise<void> write(WriteContext ctx) override {
    KJ_IF_MAYBE (ex, st_->error)
      return kj::cp(*ex);
    auto params = ctx.getParams();
    auto ids = params.getIds();
    auto chunks = params.getChunks();
    if (ids.size() != chunks.size())
      return reject(bridge::to_kj_exception(
        errc::invalid_argument, "the peer sent " + std::to_string(ids.size()) + " ids and "
                                  + std::to_string(chunks.size()) + " chunks in one batch"));
    lent_chunks lent;
    lent.reserve(ids.size());
    for (unsigned i = 0; i < ids.size(); ++i) {
      auto id = chunk_id_from_wire(ids[i], st_->received);
      if (st_->received >= st_->ids.size() || id != st_->ids[st_->received])
        return reject(bridge::to_kj_exception(
          errc::invalid_argument,
          "the peer sent chunk " + id.hex() + " at position " + std::to_string(st_->received)
            + ", which is not the chunk asked for there"));
      ++st_->received;
      lent.emplace_back(id, std::string_view{reinterpret_cast<const char*>(chunks[i].begin()),
                                             chunks[i].size()});
    }
    auto count = lent.size();
    auto batch = lend(std::move(lent));
    auto bytes = batch.loan->bytes();
    // The worker verifies and stores straight from this call's params (alive until `done`).
    workers_->post([store = store_, loan = std::move(batch.loan)] {
      loan->finish(store->put_verified(loan->chunks()));
    });
    auto st = st_;
    return kj::mv(batch.done).then(
      [st, count, bytes] {
        st->stored += count;
        st->bytes += bytes;
        st->check();
      },
      [st](kj::Exception&& ex) {
        st->fail(ex);
        kj::throwFatalException(kj::mv(ex));
      });
  }

private:
  kj::Promise<void> reject(kj::Exception ex) {
    st_->fail(ex);
    return kj::mv(ex);
  }

  std::shared_ptr<stream_state> st_;
  std::shared_ptr<block_peer::worker_pool> workers_;
  std::shared_ptr<fs::chunk_store> store_;
};

/// Answers a `chunk_source` caller exactly once: if the last copy goes unanswered (the peer or
/// the mailbox went away), with [unavailable].
class once_reply {
public:
  explicit once_reply(chunk_source::done_fn f) : done_(std::move(f)) {}
  ~once_reply() {
    if (done_)
      done_(make_error(errc::unavailable, "the block peer stopped before the fetch finished"));
  }
  void answer(caf::expected<fetch_result> r) {
    auto f = std::exchange(done_, nullptr);
    if (f)
      f(std::move(r));
  }

private:
  chunk_source::done_fn done_;
};

struct log_errors final : kj::TaskSet::ErrorHandler {
  void taskFailed(kj::Exception&& ex) override {
    log::error("block_peer_task_failed").kv("error", ex.getDescription().cStr());
  }
};

} // namespace

class peer_link final : public chunk_source {
public:
  peer_link(std::weak_ptr<block_peer> peer, std::shared_ptr<kj_mailbox> mailbox,
            std::string address)
    : peer_(std::move(peer)), mailbox_(std::move(mailbox)), address_(std::move(address)) {}

  void fetch(chunk_ids ids, done_fn done) override {
    // shared_ptr: copied into the posted task and its continuations; the last copy answers.
    auto once = std::make_shared<once_reply>(std::move(done));
    mailbox_->post([peer = peer_, ids = std::move(ids), once]() mutable {
      auto p = peer.lock();
      if (!p)
        return; // `once` answers [unavailable]
      p->tasks_->add(p->fetch(std::move(ids))
                       .then([once](fetch_result r) { once->answer(r); },
                             [once](kj::Exception&& ex) { once->answer(error_from_kj(ex)); }));
    });
  }

  std::string address() const override { return address_; }

private:
  std::weak_ptr<block_peer> peer_;
  std::shared_ptr<kj_mailbox> mailbox_;
  std::string address_;
};

block_peer::block_peer(wire::BlockServer::Client remote, std::shared_ptr<fs::chunk_store> store,
                       std::string address, block_peer_options options)
  : remote_(kj::mv(remote)), store_(std::move(store)), address_(std::move(address)),
    options_(options), workers_(std::make_shared<worker_pool>(options.store_threads)),
    task_errors_(kj::heap<log_errors>()) {
  tasks_ = kj::heap<kj::TaskSet>(*task_errors_);
}

block_peer::~block_peer() {
  tasks_ = nullptr;   // cancels fetches started through links (their callers hear [unavailable])
  workers_.reset();   // sinks still held by the remote keep the workers until they go
}

std::shared_ptr<chunk_source> block_peer::link(std::shared_ptr<kj_mailbox> mailbox) {
  return std::make_shared<peer_link>(weak_from_this(), std::move(mailbox), address_);
}

kj::Promise<fetch_result> block_peer::fetch(chunk_ids ids) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<chunk_ids>();
  // shared_ptr: std::function needs a copyable job; only the worker uses it.
  auto fulfiller = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<chunk_ids>>>(
    kj::mv(paf.fulfiller));
  workers_->post([store = store_, ids = std::move(ids), fulfiller] {
    (*fulfiller)->fulfill(store->missing(ids));
  });
  return paf.promise.then([this](chunk_ids missing) { return fetch_missing(std::move(missing)); });
}

kj::Promise<fetch_result> block_peer::fetch_missing(chunk_ids missing) {
  if (missing.empty())
    return fetch_result{};
  size_t streams = std::max<size_t>(1, std::min(options_.streams, missing.size()));
  if (streams == 1)
    return fetch_stream(std::move(missing));
  auto parts = kj::heapArrayBuilder<kj::Promise<fetch_result>>(streams);
  size_t per = (missing.size() + streams - 1) / streams;
  for (size_t first = 0; first < missing.size(); first += per) {
    auto last = std::min(missing.size(), first + per);
    parts.add(fetch_stream(chunk_ids(missing.begin() + first, missing.begin() + last)));
  }
  return kj::joinPromises(parts.finish()).then([](kj::Array<fetch_result> results) {
    fetch_result total;
    for (auto& r : results) {
      total.chunks += r.chunks;
      total.bytes += r.bytes;
    }
    return total;
  });
}

kj::Promise<fetch_result> block_peer::fetch_stream(chunk_ids ids) {
  auto st = std::make_shared<stream_state>();
  st->ids = std::move(ids);
  auto started = std::chrono::steady_clock::now();
  auto busy_before = workers_->busy_ns.load();
  auto req = remote_.readRequest();
  auto list = req.initIds(static_cast<unsigned>(st->ids.size()));
  for (unsigned i = 0; i < st->ids.size(); ++i)
    list.set(i, chunk_id_to_wire(st->ids[i]));
  req.setSink(kj::heap<chunk_sink_impl>(st, workers_, store_));
  return req.send().then(
    [this, st, started, busy_before](capnp::Response<wire::BlockServer::ReadResults> r)
      -> kj::Promise<fetch_result> {
      if (r.getChunks() != st->ids.size())
        return bridge::to_kj_exception(
          errc::internal, "the peer answered read of " + std::to_string(st->ids.size())
                            + " chunks with " + std::to_string(r.getChunks()));
      KJ_IF_MAYBE (ex, st->error)
        return kj::cp(*ex);
      // The last writes may still be queued behind the one being stored.
      kj::Promise<void> stored = nullptr;
      if (st->stored == st->ids.size()) {
        stored = kj::READY_NOW;
      } else {
        auto paf = kj::newPromiseAndFulfiller<void>();
        st->all_stored = kj::mv(paf.fulfiller);
        stored = kj::mv(paf.promise);
      }
      return stored.then([this, st, started, busy_before] {
        auto wall = std::chrono::steady_clock::now() - started;
        log::info("block_fetch_done")
          .kv("peer", address_)
          .kv("chunks", static_cast<int64_t>(st->stored))
          .kv("bytes", static_cast<int64_t>(st->bytes))
          .kv("wall_ms", static_cast<int64_t>(
                           std::chrono::duration_cast<std::chrono::milliseconds>(wall).count()))
          .kv("store_busy_ms", static_cast<int64_t>((workers_->busy_ns.load() - busy_before) / 1000000));
        return fetch_result{st->stored, st->bytes};
      });
    },
    [st](kj::Exception&& ex) -> kj::Promise<fetch_result> {
      // Our own sink's error names the chunk; the remote's echo of it only wraps it.
      KJ_IF_MAYBE (own, st->error)
        return kj::cp(*own);
      return kj::mv(ex);
    });
}

} // namespace shoal::block_server
