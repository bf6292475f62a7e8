#include "storage/writer.hpp"

#include <algorithm>
#include <utility>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "runtime/errc.hpp"
#include "runtime/log.hpp"

namespace shoal::storage {

namespace {

/// Private to the writer: it sends this to itself when a group starts. The message queues behind
/// every request already in the mailbox, so handling it means "the mailbox is drained".
using commit_atom = caf::atom_constant<caf::atom("wr_commit")>;
/// Private: a deferred group may commit now (see `defer_commit`).
using recheck_atom = caf::atom_constant<caf::atom("wr_rechk")>;

/// The writer's own interface: the public one plus the private commit message. Only
/// `writer_actor` handles leave this file.
using writer_impl_actor = writer_actor::extend<caf::reacts_to<commit_atom>, caf::reacts_to<recheck_atom>>;

/// The replies are empty (`with<void>`); a typed_response_promise<void> cannot deliver an empty
/// message in 0.17.6, the untyped promise can (`deliver(caf::unit)`).
using done_promise = caf::response_promise;

class writer_impl : public writer_impl_actor::base {
public:
  using super = writer_impl_actor::base;

  writer_impl(caf::actor_config& cfg, commit_function commit, const char* name = "storage_writer",
              std::shared_ptr<pinned_unit> unit = nullptr)
    : super(cfg), commit_(std::move(commit)), name_(name), unit_(std::move(unit)) {
    // nop
  }

  const char* name() const override {
    return name_;
  }

  behavior_type make_behavior() override {
    return {
      [this](write_atom, write_batch& batch) -> caf::result<void> {
        auto& ops = pending_.ops;
        ops.insert(ops.end(), std::make_move_iterator(batch.ops.begin()),
                   std::make_move_iterator(batch.ops.end()));
        ++group_writes_;
        return join_group();
      },
      [this](write_atom, write_batch& batch, durable_hook& hook) -> caf::result<void> {
        auto& ops = pending_.ops;
        ops.insert(ops.end(), std::make_move_iterator(batch.ops.begin()),
                   std::make_move_iterator(batch.ops.end()));
        ++group_writes_;
        if (hook)
          hooks_.push_back(std::move(hook));
        return join_group();
      },
      [this](flush_atom) -> caf::result<void> {
        // Acknowledged writes are durable already; a flush only waits for the group that is
        // being collected, i.e. for the writes that were sent before it.
        if (waiters_.empty())
          return caf::unit;
        return join_group();
      },
      [this](commit_atom) {
        if (!defer_commit())
          commit();
      },
      [this](recheck_atom) {
        // Queued behind every write that reached the mailbox meanwhile: they join the group.
        send(caf::actor_cast<writer_impl_actor>(this), commit_atom::value);
      },
      [this](inspect_atom) { return snapshot(); },
    };
  }

  /// Runs however the writer stops (exit message, kill, system shutdown): what was accepted
  /// but not yet committed is committed now, so no accepted request is left without a reply.
  /// Requests still in the mailbox get CAF's request_receiver_down error, never a success.
  void on_exit() override {
    if (!waiters_.empty())
      commit();
    super::on_exit();
  }

private:
  done_promise join_group() {
    auto rp = make_response_promise();
    waiters_.push_back(rp);
    if (!commit_scheduled_) {
      commit_scheduled_ = true;
      send(caf::actor_cast<writer_impl_actor>(this), commit_atom::value);
    }
    return rp;
  }

  /// A pinned writer whose group is as large as what one poll of its loop brings in (kj takes at
  /// most `kj_poll_batch` ready sockets per poll) may have more requests waiting in sockets: it
  /// lets the loop poll again and commits once those joined (`recheck_atom`), up to
  /// `max_deferrals` times per group. One fsync then covers every client that was ready, as
  /// Redis's does. A group smaller than that commits at once (a lone client never waits).
  bool defer_commit() {
    static constexpr int64_t kj_poll_batch = 16;
    static constexpr int max_deferrals = 3;
    if (!unit_ || deferrals_ >= max_deferrals || group_writes_ < kj_poll_batch * (deferrals_ + 1))
      return false;
    auto self = caf::actor_cast<caf::actor>(this);
    if (!unit_->after_io([self] { caf::anon_send(self, recheck_atom::value); }))
      return false;
    ++deferrals_;
    ++groups_deferred_;
    return true;
  }

  /// Writes the collected group with one synced batch, then answers every request in it.
  void commit() {
    commit_scheduled_ = false;
    deferrals_ = 0;
    if (waiters_.empty())
      return;
    auto batch = std::exchange(pending_, write_batch{});
    auto waiters = std::exchange(waiters_, {});
    auto writes = std::exchange(group_writes_, 0);
    auto hooks = std::exchange(hooks_, {});
    if (auto err = commit_(batch)) {
      ++sync_errors_;
      log::error("storage_group_commit_failed")
        .kv("requests", waiters.size())
        .kv("ops", batch.ops.size())
        .kv("error", message_of(err));
      for (auto& rp : waiters)
        rp.deliver(err);
      return;
    }
    ++batches_committed_;
    writes_committed_ += writes;
    largest_group_ = std::max(largest_group_, writes);
    for (auto& rp : waiters)
      rp.deliver(caf::unit);
    // After the replies: a requester handles its reply before whatever a hook triggers.
    for (auto& hook : hooks)
      hook();
  }

  actor_snapshot snapshot() {
    auto s = snapshot_of(this, name_, "storage_writer",
                         waiters_.empty() ? "idle" : "collecting");
    s.counter("batches_committed", batches_committed_)
      .counter("writes_committed", writes_committed_)
      .counter("largest_group", largest_group_)
      .counter("sync_errors", sync_errors_)
      .counter("groups_deferred", groups_deferred_)
      .counter("pending_ops", static_cast<int64_t>(pending_.ops.size()));
    return s;
  }

  commit_function commit_;
  const char* name_; ///< in inspection: "storage_writer", or "queue_writer" for the broker's own

  // The group being collected: every write's ops, and the promise of every request (writes and
  // flushes) that is answered when the group is durable.
  write_batch pending_;
  std::vector<done_promise> waiters_;
  std::vector<durable_hook> hooks_; ///< run after the group's replies, on success only
  int64_t group_writes_ = 0;
  bool commit_scheduled_ = false;
  std::shared_ptr<pinned_unit> unit_; ///< a pinned writer's unit (for `defer_commit`)
  int deferrals_ = 0;
  int64_t groups_deferred_ = 0;

  int64_t batches_committed_ = 0;
  int64_t writes_committed_ = 0;
  int64_t largest_group_ = 0;
  int64_t sync_errors_ = 0;
};

} // namespace

/// Groups go to `db` with one synced write.
static commit_function synced_commit(store& db) {
  return [&db](const write_batch& batch) { return db.write(batch, /*sync=*/true); };
}

writer_actor spawn_writer(caf::actor_system& sys, store& db) {
  return spawn_writer(sys, synced_commit(db));
}

writer_actor spawn_writer(caf::actor_system& sys, commit_function commit) {
  return sys.spawn<writer_impl, caf::detached>(std::move(commit));
}

writer_actor spawn_pinned_writer(caf::actor_system& sys, store& db,
                                 std::shared_ptr<pinned_unit> unit, const char* name) {
  return spawn_pinned_writer(sys, synced_commit(db), std::move(unit), name);
}

writer_actor spawn_pinned_writer(caf::actor_system& sys, commit_function commit,
                                 std::shared_ptr<pinned_unit> unit, const char* name) {
  return sys.spawn<pinned<writer_impl>>(unit, std::move(commit), name, unit);
}

} // namespace shoal::storage
