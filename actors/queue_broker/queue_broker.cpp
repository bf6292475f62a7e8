#include "actors/queue_broker/queue_broker_actor.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>

#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "runtime/errc.hpp"
#include "runtime/ids.hpp"
#include "runtime/log.hpp"

namespace shoal::queue_broker {

namespace {

using namespace std::chrono;
using storage::table;

// Private messages: the TTL sweep and the wake-up for get/peek deadlines (steady ns).
using sweep_atom = caf::atom_constant<caf::atom("qb_sweep")>;
using wake_atom = caf::atom_constant<caf::atom("qb_wake")>;

using impl_actor
  = queue_broker_actor::extend<caf::reacts_to<sweep_atom>, caf::reacts_to<wake_atom, int64_t>>;

using object_id = std::pair<std::string, std::string>; ///< (environment, name)
using get_promise = caf::typed_response_promise<std::vector<std::string>>;
using page_promise = caf::typed_response_promise<queue_page>;
using info_promise = caf::typed_response_promise<object_info>;

/// Answers a put, whether it came as a CAF request or with a direct reply (the bridge).
class put_responder {
public:
  explicit put_responder(caf::response_promise p) : promise_(std::move(p)) {}
  explicit put_responder(put_reply d) : direct_(std::move(d)) {}
  void deliver(caf::unit_t) {
    if (direct_)
      direct_->answer(caf::unit);
    else
      promise_.deliver(caf::unit);
  }
  void deliver(const caf::error& err) {
    if (direct_)
      direct_->answer(err);
    else
      promise_.deliver(err);
  }
  /// For a direct reply: the writer answers the success itself, right after the fsync (a later
  /// `deliver(caf::unit)` then does nothing). Empty otherwise.
  storage::durable_hook durable_hook() const {
    if (!direct_)
      return {};
    return [d = direct_] { d->answer(caf::unit); };
  }

private:
  caf::response_promise promise_;
  put_reply direct_;
};

/// Answers a get, whether it came as a CAF request or with a direct reply (the bridge).
class get_responder {
public:
  get_responder() = default;
  explicit get_responder(get_promise p) : promise_(std::move(p)) {}
  explicit get_responder(get_reply d) : direct_(std::move(d)) {}
  void deliver(std::vector<std::string> items) {
    if (direct_)
      direct_->answer(std::move(items));
    else
      promise_.deliver(std::move(items));
  }
  void deliver(const caf::error& err) {
    if (direct_)
      direct_->answer(err);
    else
      promise_.deliver(err);
  }
  /// True if the answer is a direct reply, which `durable_hook` can give from the writer thread.
  bool direct() const noexcept {
    return direct_ != nullptr;
  }
  /// For a direct reply: answers `items` once the erasure is durable, on the writer's thread.
  storage::durable_hook durable_hook(std::vector<std::string> items) const {
    auto shared = std::make_shared<std::vector<std::string>>(std::move(items));
    return [d = direct_, shared] { d->answer(std::move(*shared)); };
  }

private:
  get_promise promise_;
  get_reply direct_;
};

/// How far the partition record's expiry may run ahead of the exact one (a tenth of the TTL, at
/// most a minute): after a restart a partition lives at most this much longer than its TTL.
int64_t record_slack_ms(uint64_t ttl_ms) {
  return static_cast<int64_t>(std::min<uint64_t>(ttl_ms / 10, 60000));
}

int64_t wall_ms() {
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

int64_t steady_ns() {
  return duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
}

std::string quoted(const std::string& s) {
  return "'" + s + "'";
}

caf::error no_such(object_kind kind, const std::string& name) {
  auto what = std::string{to_string(kind)};
  auto type = kind == object_kind::queue ? "Queue" : "Dict";
  return make_error(errc::not_found,
                    "no " + what + " named " + quoted(name) + " in this environment; create it with "
                      + "shoal." + type + ".from_name(" + quoted(name)
                      + ", create_if_missing=True) or `shoal " + what + " create " + name + "`");
}

// -- queues ----------------------------------------------------------------------------------------

struct item_ref {
  uint64_t seq = 0;
  uint32_t bytes = 0;
};

struct waiter {
  uint64_t id = 0;
  uint32_t max_items = 1; ///< get: items wanted; peek: page size
  uint64_t cursor = 0;    ///< peek only
  int64_t deadline_ns = 0;
  get_responder get;      ///< set for a get
  page_promise page;      ///< set for a peek
};

struct partition_state {
  std::deque<item_ref> ready;          ///< durable, not consumed; ascending seq
  uint64_t ready_bytes = 0;
  uint64_t reserved = 0;               ///< items of puts in flight (they count towards the limit)
  std::map<uint64_t, uint32_t> inflight_puts; ///< first seq -> item count, puts in flight
  uint64_t consuming = 0;              ///< items of gets whose erasure is in flight
  uint64_t next_seq = 1;
  int64_t expires_at_ms = 0;           ///< 0: no partition record on disk
  /// The expiry the partition record on disk holds (0: none or unknown). It runs ahead of
  /// `expires_at_ms` by at most `record_slack_ms(ttl)`, so a stream of puts rewrites the record
  /// about once per slack instead of on every put.
  int64_t stored_expires_at_ms = 0;
  std::deque<waiter> getters;          ///< parked gets, first come first served
  std::vector<waiter> peekers;         ///< parked peeks

  bool idle() const noexcept {
    return ready.empty() && reserved == 0 && consuming == 0 && getters.empty() && peekers.empty()
           && expires_at_ms == 0;
  }
  bool live() const noexcept { return !ready.empty() || reserved > 0 || expires_at_ms != 0; }
};

struct queue_state {
  uint64_t incarnation = 0;
  object_record rec;
  bool durable = true; ///< false while its create is in flight
  std::map<std::string, partition_state> partitions;
};

// -- dicts -----------------------------------------------------------------------------------------

/// A dict request that may have to wait for writes on its keys (see the state diagram).
struct dict_op {
  std::vector<std::string> keys;
  bool exclusive = false; ///< clear / delete: waits for every write, blocks everything behind
  std::function<void()> run;
};

struct dict_state {
  uint64_t incarnation = 0;
  object_record rec;
  bool durable = true;
  bool deleting = false;
  uint64_t count = 0;
  uint64_t bytes = 0;
  std::set<std::string> busy;    ///< keys with a write in flight
  uint32_t writes_inflight = 0;
  bool exclusive_running = false;
  std::deque<dict_op> waiting;
};

struct owned_object {
  object_kind kind;
  object_id id;
};

struct waiter_location {
  object_id queue;
  uint64_t incarnation = 0;
  std::string partition;
  bool peek = false;
};

struct broker_state {
  const storage::store* db = nullptr;
  storage::writer_actor writer;
  queue_broker_config cfg;
  queue_store store;

  std::map<object_id, queue_state> queues;
  std::map<object_id, dict_state> dicts;
  uint64_t next_incarnation = 1;
  uint64_t next_waiter = 1;
  std::unordered_map<uint64_t, waiter_location> waiters;
  std::multimap<int64_t, uint64_t> deadlines; ///< steady ns -> waiter id
  std::set<int64_t> wakeups;                  ///< wake messages in flight (steady ns)
  std::map<caf::actor_addr, std::vector<owned_object>> owners;
  caf::error load_error;

  // Counters for inspection.
  int64_t puts = 0;
  int64_t items_put = 0;
  int64_t gets = 0;
  int64_t items_got = 0;
  int64_t gets_parked_total = 0;
  int64_t gets_timed_out = 0;
  int64_t peeks = 0;
  int64_t puts_rejected_full = 0;
  int64_t partitions_expired = 0;
  int64_t dict_reads = 0;
  int64_t dict_writes = 0;
  int64_t objects_created = 0;
  int64_t objects_deleted = 0;
  int64_t write_failures = 0;

  static inline const char* name = "queue_broker";
};

using self_ptr = impl_actor::stateful_pointer<broker_state>;

class broker {
public:
  explicit broker(self_ptr self) : self_(self), st_(self->state) {}

  // -- start-up ------------------------------------------------------------------------------------

  void load() {
    auto& db = *st_.db;
    storage::write_batch cleanup; // ephemeral leftovers and orphans
    std::set<object_id> dropped_queues;
    std::set<object_id> dropped_dicts;
    size_t items = 0;
    size_t entries = 0;

    auto load_objects = [&](table t, auto on_object) {
      return db.scan(t, queue_store::object_prefix(), [&](std::string_view k, std::string_view v) {
        object_id id;
        object_record rec;
        if (!queue_store::parse_object_key(k, id.first, id.second)) {
          log::warn("queue_broker_skipped_key").kv("table", to_string(t));
          return true;
        }
        if (auto err = queue_store::decode_object(v, rec)) {
          log::warn("queue_broker_skipped_record").kv("error", message_of(err));
          return true;
        }
        on_object(std::string{k}, std::move(id), rec);
        return true;
      });
    };

    auto err = load_objects(table::queues, [&](std::string k, object_id id, object_record rec) {
      if (rec.ephemeral) {
        cleanup.erase(table::queues, std::move(k));
        dropped_queues.insert(std::move(id));
        return;
      }
      auto& q = st_.queues[id];
      q.incarnation = st_.next_incarnation++;
      q.rec = rec;
    });
    err = err ? err : db.scan(table::queues, queue_store::all_partitions_prefix(),
                              [&](std::string_view k, std::string_view v) {
      object_id id;
      std::string partition;
      int64_t expires = 0;
      if (!queue_store::parse_partition_key(k, id.first, id.second, partition)
          || queue_store::decode_partition(v, expires))
        return true;
      auto q = st_.queues.find(id);
      if (q == st_.queues.end()) {
        cleanup.erase(table::queues, std::string{k});
        return true;
      }
      auto& p = q->second.partitions[partition];
      p.expires_at_ms = expires;
      p.stored_expires_at_ms = expires;
      return true;
    });
    err = err ? err : db.scan(table::queues, queue_store::all_items_prefix(),
                              [&](std::string_view k, std::string_view v) {
      object_id id;
      std::string partition;
      uint64_t seq = 0;
      if (!queue_store::parse_item_key(k, id.first, id.second, partition, seq))
        return true;
      auto q = st_.queues.find(id);
      if (q == st_.queues.end()) {
        cleanup.erase(table::queues, std::string{k});
        return true;
      }
      auto& p = q->second.partitions[partition];
      auto size = static_cast<uint32_t>(queue_store::payload_size(v));
      p.ready.push_back(item_ref{seq, size});
      p.ready_bytes += size;
      p.next_seq = seq + 1;
      ++items;
      return true;
    });
    // Items without a partition record (cannot be written that way, but be lenient): give them
    // the default TTL from now.
    for (auto& [id, q] : st_.queues)
      for (auto& [name, p] : q.partitions)
        if (p.expires_at_ms == 0 && !p.ready.empty())
          p.expires_at_ms = wall_ms() + static_cast<int64_t>(st_.store.limits().default_partition_ttl_ms);

    err = err ? err : load_objects(table::dicts, [&](std::string k, object_id id, object_record rec) {
      if (rec.ephemeral) {
        cleanup.erase(table::dicts, std::move(k));
        dropped_dicts.insert(std::move(id));
        return;
      }
      auto& d = st_.dicts[id];
      d.incarnation = st_.next_incarnation++;
      d.rec = rec;
    });
    err = err ? err : db.scan(table::dicts, queue_store::all_entries_prefix(),
                              [&](std::string_view k, std::string_view v) {
      object_id id;
      std::string key;
      if (!queue_store::parse_entry_key(k, id.first, id.second, key))
        return true;
      auto d = st_.dicts.find(id);
      if (d == st_.dicts.end()) {
        cleanup.erase(table::dicts, std::string{k});
        return true;
      }
      ++d->second.count;
      d->second.bytes += queue_store::payload_size(v);
      ++entries;
      return true;
    });
    if (err) {
      st_.load_error = make_error(errc::storage_failure,
                                  "queues and dicts could not be loaded: " + message_of(err));
      log::error("queue_broker_load_failed").kv("error", message_of(err));
      return;
    }
    if (!cleanup.empty()) {
      log::info("queue_broker_cleanup")
        .kv("ephemeral_queues", dropped_queues.size())
        .kv("ephemeral_dicts", dropped_dicts.size())
        .kv("keys", cleanup.ops.size());
      persist(std::move(cleanup));
    }
    log::info("queue_broker_loaded")
      .kv("queues", st_.queues.size())
      .kv("items", items)
      .kv("dicts", st_.dicts.size())
      .kv("entries", entries);
  }

  caf::error unavailable() const {
    return st_.load_error;
  }

  // -- objects ---------------------------------------------------------------------------------

  void lookup(object_kind kind, const std::string& env, const std::string& name,
              bool create_if_missing, info_promise rp) {
    if (auto err = st_.store.check_name(kind, name))
      return deliver_error(rp, err);
    object_id id{env, name};
    if (kind == object_kind::queue) {
      auto q = st_.queues.find(id);
      if (q != st_.queues.end())
        return deliver_info(rp, kind, id, q->second.durable);
    } else {
      auto d = st_.dicts.find(id);
      if (d != st_.dicts.end()) {
        if (d->second.deleting) // ask again once the delete is through
          return defer_dict(id, {}, false, [this, kind, env, name, create_if_missing, rp]() mutable {
            lookup(kind, env, name, create_if_missing, rp);
          });
        return deliver_info(rp, kind, id, d->second.durable);
      }
    }
    if (!create_if_missing)
      return deliver_error(rp, no_such(kind, name));
    create_object(kind, id, false, {}, rp);
  }

  void create(object_kind kind, const std::string& env, const std::string& name, info_promise rp) {
    if (auto err = st_.store.check_name(kind, name))
      return deliver_error(rp, err);
    object_id id{env, name};
    bool exists = kind == object_kind::queue ? st_.queues.count(id) != 0 : false;
    if (kind == object_kind::dict) {
      auto d = st_.dicts.find(id);
      if (d != st_.dicts.end() && d->second.deleting)
        return defer_dict(id, {}, false,
                          [this, kind, env, name, rp]() mutable { create(kind, env, name, rp); });
      exists = d != st_.dicts.end();
    }
    if (exists)
      return deliver_error(rp, make_error(errc::already_exists,
                                          std::string{to_string(kind)} + " " + quoted(name)
                                            + " exists already in environment " + quoted(env)));
    create_object(kind, id, false, {}, rp);
  }

  void create_ephemeral(object_kind kind, const std::string& env, const caf::actor& owner,
                        info_promise rp) {
    object_id id{env, make_id(kind == object_kind::queue ? "eq" : "ed")};
    create_object(kind, id, true, owner, rp);
  }

  void remove(object_kind kind, const std::string& env, const std::string& name,
              caf::response_promise rp) {
    object_id id{env, name};
    if (kind == object_kind::queue)
      return remove_queue(id, rp);
    auto d = st_.dicts.find(id);
    if (d == st_.dicts.end() || d->second.deleting) {
      rp.deliver(no_such(kind, name));
      return;
    }
    d->second.deleting = true;
    defer_dict(id, {}, true, [this, id, rp]() mutable { remove_dict(id, rp); });
  }

  std::vector<object_info> list(object_kind kind, const std::string& env) {
    std::vector<object_info> out;
    auto collect = [&](auto& objects, auto hidden) {
      for (auto i = objects.lower_bound(object_id{env, ""});
           i != objects.end() && i->first.first == env; ++i)
        if (!i->second.rec.ephemeral && i->second.durable && !hidden(i->second))
          out.push_back(info_of(kind, i->first));
    };
    if (kind == object_kind::queue)
      collect(st_.queues, [](const queue_state&) { return false; });
    else
      collect(st_.dicts, [](const dict_state& d) { return d.deleting; });
    return out;
  }

  void forget_owner(const caf::actor_addr& owner) {
    auto i = st_.owners.find(owner);
    if (i == st_.owners.end())
      return;
    auto objects = std::move(i->second);
    st_.owners.erase(i);
    for (auto& o : objects) {
      caf::response_promise rp; // nobody waits: delivering to an empty promise does nothing
      if (o.kind == object_kind::queue) {
        if (st_.queues.count(o.id) != 0)
          remove_queue(o.id, rp);
      } else if (auto d = st_.dicts.find(o.id); d != st_.dicts.end() && !d->second.deleting) {
        d->second.deleting = true;
        defer_dict(o.id, {}, true, [this, id = o.id, rp]() mutable { remove_dict(id, rp); });
      }
    }
  }

  // -- queues ----------------------------------------------------------------------------------

  void put(queue_put_request& req, put_responder rp) {
    auto* q = find_queue(req.environment, req.name);
    if (q == nullptr)
      return rp.deliver(no_such(object_kind::queue, req.name));
    if (auto err = st_.store.check_partition(req.partition))
      return rp.deliver(err);
    if (auto err = st_.store.check_items(req.items))
      return rp.deliver(err);
    uint64_t ttl_ms = 0;
    if (auto err = st_.store.resolve_ttl(req.partition_ttl_ms, ttl_ms))
      return rp.deliver(err);
    auto& p = q->partitions[req.partition];
    auto n = static_cast<uint32_t>(req.items.size());
    if (auto err = st_.store.check_capacity(req.name, req.partition, p.ready.size() + p.reserved, n)) {
      ++st_.puts_rejected_full;
      return rp.deliver(err);
    }
    uint64_t first = p.next_seq;
    p.next_seq += n;
    p.reserved += n;
    p.inflight_puts.emplace(first, n);
    p.expires_at_ms = wall_ms() + static_cast<int64_t>(ttl_ms); // the TTL is refreshed on put
    storage::write_batch batch;
    batch.ops.reserve(n + 1);
    // The record on disk must say at least the new expiry and at most the slack more.
    auto slack = record_slack_ms(ttl_ms);
    if (p.stored_expires_at_ms < p.expires_at_ms || p.stored_expires_at_ms > p.expires_at_ms + slack) {
      p.stored_expires_at_ms = p.expires_at_ms + slack;
      batch.put(table::queues, queue_store::partition_key(req.environment, req.name, req.partition),
                queue_store::encode_partition(p.stored_expires_at_ms));
    }
    std::vector<uint32_t> sizes;
    sizes.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
      sizes.push_back(static_cast<uint32_t>(req.items[i].size()));
      batch.put(table::queues,
                queue_store::item_key(req.environment, req.name, req.partition, first + i),
                queue_store::encode_payload(req.items[i]));
    }
    ++st_.puts;
    object_id id{req.environment, req.name};
    auto incarnation = q->incarnation;
    auto partition = std::move(req.partition);
    auto hook = rp.durable_hook();
    commit(std::move(batch), std::move(hook),
           [this, rp, id, incarnation, partition, first, sizes = std::move(sizes)]() mutable {
             if (auto* p = find_partition(id, incarnation, partition)) {
               p->reserved -= sizes.size();
               p->inflight_puts.erase(first);
               // Puts reach the writer in seq order and the writer answers in order, so the new
               // items go after every ready one (a failed get may have put older ones back first).
               for (size_t i = 0; i < sizes.size(); ++i) {
                 p->ready.push_back(item_ref{first + i, sizes[i]});
                 p->ready_bytes += sizes[i];
               }
               st_.items_put += static_cast<int64_t>(sizes.size());
               serve(id, incarnation, partition);
             }
             rp.deliver(caf::unit);
           },
           [this, rp, id, incarnation, partition, first, n](const caf::error& err) mutable {
             if (auto* p = find_partition(id, incarnation, partition)) {
               p->reserved -= n;
               p->inflight_puts.erase(first);
               p->stored_expires_at_ms = 0; // the record may not be on disk: the next put writes it
             }
             rp.deliver(err);
           });
  }

  void get(queue_get_request& req, get_responder rp) {
    auto* q = find_queue(req.environment, req.name);
    if (q == nullptr)
      return rp.deliver(no_such(object_kind::queue, req.name));
    if (auto err = st_.store.check_partition(req.partition))
      return rp.deliver(err);
    ++st_.gets;
    auto& p = q->partitions[req.partition];
    auto n = st_.store.clamp_get(req.max_items);
    object_id id{req.environment, req.name};
    auto block_ms = st_.store.clamp_block(req.block_timeout_ms);
    if (p.ready.empty() && block_ms == 0) {
      drop_if_idle(*q, req.partition);
      return rp.deliver(std::vector<std::string>{});
    }
    if (!p.ready.empty())
      return consume(id, *q, req.partition, p, n, rp);
    waiter w;
    w.id = st_.next_waiter++;
    w.max_items = n;
    w.deadline_ns = steady_ns() + static_cast<int64_t>(block_ms) * 1000000;
    w.get = rp;
    park(id, q->incarnation, req.partition, p, std::move(w), false);
    ++st_.gets_parked_total;
  }

  caf::result<queue_page> peek(queue_peek_request& req) {
    auto* q = find_queue(req.environment, req.name);
    if (q == nullptr)
      return no_such(object_kind::queue, req.name);
    if (auto err = st_.store.check_partition(req.partition))
      return err;
    ++st_.peeks;
    auto& p = q->partitions[req.partition];
    auto limit = std::clamp<uint32_t>(req.limit, 1, st_.store.limits().max_get_items);
    object_id id{req.environment, req.name};
    if (has_from(p, req.cursor)) {
      auto page = read_page(id, req.partition, p, req.cursor, limit);
      if (!page)
        return page.error();
      return std::move(*page);
    }
    auto block_ms = st_.store.clamp_block(req.block_timeout_ms);
    if (block_ms == 0) {
      drop_if_idle(*q, req.partition);
      return queue_page{{}, req.cursor};
    }
    auto rp = self_->make_response_promise<queue_page>();
    waiter w;
    w.id = st_.next_waiter++;
    w.max_items = limit;
    w.cursor = req.cursor;
    w.deadline_ns = steady_ns() + static_cast<int64_t>(block_ms) * 1000000;
    w.page = rp;
    park(id, q->incarnation, req.partition, p, std::move(w), true);
    return rp;
  }

  caf::result<uint64_t> len(const std::string& env, const std::string& name,
                            const std::string& partition, bool total) {
    auto* q = find_queue(env, name);
    if (q == nullptr)
      return no_such(object_kind::queue, name);
    if (total) {
      uint64_t n = 0;
      for (auto& [_, p] : q->partitions)
        n += p.ready.size();
      return n;
    }
    auto p = q->partitions.find(partition);
    return p == q->partitions.end() ? uint64_t{0} : uint64_t{p->second.ready.size()};
  }

  caf::result<void> clear(const std::string& env, const std::string& name,
                          const std::string& partition, bool all) {
    auto* q = find_queue(env, name);
    if (q == nullptr)
      return no_such(object_kind::queue, name);
    storage::write_batch batch;
    auto clear_one = [&](const std::string& pname, partition_state& p) {
      for (const auto& item : p.ready)
        batch.erase(table::queues, queue_store::item_key(env, name, pname, item.seq));
      p.ready.clear();
      p.ready_bytes = 0;
    };
    if (all) {
      for (auto& [pname, p] : q->partitions)
        clear_one(pname, p);
    } else if (auto p = q->partitions.find(partition); p != q->partitions.end()) {
      clear_one(partition, p->second);
    }
    auto rp = self_->make_response_promise();
    if (batch.empty()) {
      rp.deliver(caf::unit);
      return rp;
    }
    commit(std::move(batch), [rp]() mutable { rp.deliver(caf::unit); },
           [rp](const caf::error& err) mutable { rp.deliver(err); });
    return rp;
  }

  // -- dicts -----------------------------------------------------------------------------------

  caf::result<dict_value> dict_get(const std::string& env, const std::string& name,
                                   const std::string& key, bool pop) {
    auto rp = self_->make_response_promise<dict_value>();
    object_id id{env, name};
    if (auto err = st_.store.check_dict_key(key)) {
      rp.deliver(err);
      return rp;
    }
    defer_dict(id, {key}, false, [this, id, key, pop, rp]() mutable {
      auto* d = find_dict(id);
      if (d == nullptr) {
        rp.deliver(no_such(object_kind::dict, id.second));
        return;
      }
      auto ek = queue_store::entry_key(id.first, id.second, key);
      auto old = st_.db->get(table::dicts, ek);
      if (!old) {
        rp.deliver(old.error());
        return;
      }
      ++st_.dict_reads;
      if (!*old) {
        rp.deliver(dict_value{false, {}});
        return;
      }
      dict_value found{true, {}};
      if (auto err = queue_store::decode_payload(**old, found.value)) {
        rp.deliver(err);
        return;
      }
      if (!pop) {
        rp.deliver(std::move(found));
        return;
      }
      storage::write_batch batch;
      batch.erase(table::dicts, ek);
      auto size = found.value.size();
      begin_write(*d, {key});
      commit_dict(id, d->incarnation, {key}, std::move(batch),
                  [this, id, size, found = std::move(found), rp](dict_state& ds) mutable {
                    --ds.count;
                    ds.bytes -= std::min<uint64_t>(ds.bytes, size);
                    rp.deliver(std::move(found));
                  },
                  [rp](const caf::error& err) mutable { rp.deliver(err); });
    });
    return rp;
  }

  caf::result<bool> dict_contains(const std::string& env, const std::string& name,
                                  const std::string& key) {
    auto rp = self_->make_response_promise<bool>();
    object_id id{env, name};
    defer_dict(id, {key}, false, [this, id, key, rp]() mutable {
      if (find_dict(id) == nullptr) {
        rp.deliver(no_such(object_kind::dict, id.second));
        return;
      }
      auto old = st_.db->get(table::dicts, queue_store::entry_key(id.first, id.second, key));
      if (!old) {
        rp.deliver(old.error());
        return;
      }
      ++st_.dict_reads;
      rp.deliver(old->has_value());
    });
    return rp;
  }

  caf::result<bool> dict_put(dict_put_request& req) {
    auto rp = self_->make_response_promise<bool>();
    if (auto err = st_.store.check_dict_key(req.key); err || (err = st_.store.check_dict_value(req.value))) {
      rp.deliver(err);
      return rp;
    }
    object_id id{req.environment, req.name};
    auto key = req.key;
    defer_dict(id, {key}, false, [this, id, req = std::move(req), rp]() mutable {
      auto* d = find_dict(id);
      if (d == nullptr) {
        rp.deliver(no_such(object_kind::dict, id.second));
        return;
      }
      auto ek = queue_store::entry_key(id.first, id.second, req.key);
      auto old = st_.db->get(table::dicts, ek);
      if (!old) {
        rp.deliver(old.error());
        return;
      }
      if (*old && req.skip_if_exists) {
        rp.deliver(false);
        return;
      }
      bool existed = old->has_value();
      uint64_t old_size = existed ? queue_store::payload_size(**old) : 0;
      uint64_t new_size = req.value.size();
      storage::write_batch batch;
      batch.put(table::dicts, std::move(ek), queue_store::encode_payload(req.value));
      begin_write(*d, {req.key});
      commit_dict(id, d->incarnation, {req.key}, std::move(batch),
                  [existed, old_size, new_size, rp](dict_state& ds) mutable {
                    if (!existed)
                      ++ds.count;
                    ds.bytes = ds.bytes - std::min(ds.bytes, old_size) + new_size;
                    rp.deliver(true);
                  },
                  [rp](const caf::error& err) mutable { rp.deliver(err); });
    });
    return rp;
  }

  caf::result<void> dict_update(const std::string& env, const std::string& name,
                                entry_list& entries) {
    auto rp = self_->make_response_promise();
    if (auto err = st_.store.check_entries(entries)) {
      rp.deliver(err);
      return rp;
    }
    // The last value of a key wins, as in dict.update.
    std::map<std::string, std::string> latest;
    for (auto& [k, v] : entries)
      latest[k] = std::move(v);
    std::vector<std::string> keys;
    for (const auto& [k, _] : latest)
      keys.push_back(k);
    object_id id{env, name};
    defer_dict(id, keys, false, [this, id, keys, latest = std::move(latest), rp]() mutable {
      auto* d = find_dict(id);
      if (d == nullptr) {
        rp.deliver(no_such(object_kind::dict, id.second));
        return;
      }
      if (latest.empty()) {
        rp.deliver(caf::unit);
        return;
      }
      storage::write_batch batch;
      int64_t added = 0;
      uint64_t removed_bytes = 0;
      uint64_t added_bytes = 0;
      for (auto& [k, v] : latest) {
        auto ek = queue_store::entry_key(id.first, id.second, k);
        auto old = st_.db->get(table::dicts, ek);
        if (!old) {
          rp.deliver(old.error());
          return;
        }
        if (*old)
          removed_bytes += queue_store::payload_size(**old);
        else
          ++added;
        added_bytes += v.size();
        batch.put(table::dicts, std::move(ek), queue_store::encode_payload(v));
      }
      begin_write(*d, keys);
      commit_dict(id, d->incarnation, keys, std::move(batch),
                  [added, removed_bytes, added_bytes, rp](dict_state& ds) mutable {
                    ds.count += added;
                    ds.bytes = ds.bytes - std::min(ds.bytes, removed_bytes) + added_bytes;
                    rp.deliver(caf::unit);
                  },
                  [rp](const caf::error& err) mutable { rp.deliver(err); });
    });
    return rp;
  }

  caf::result<uint64_t> dict_len(const std::string& env, const std::string& name) {
    auto* d = find_dict(object_id{env, name});
    if (d == nullptr || d->deleting)
      return no_such(object_kind::dict, name);
    return d->count;
  }

  caf::result<dict_page> dict_scan(dict_scan_request& req) {
    auto rp = self_->make_response_promise<dict_page>();
    object_id id{req.environment, req.name};
    defer_dict(id, {}, false, [this, id, req = std::move(req), rp]() mutable {
      if (find_dict(id) == nullptr) {
        rp.deliver(no_such(object_kind::dict, id.second));
        return;
      }
      auto limit = std::clamp<uint32_t>(req.limit, 1, st_.store.limits().max_scan_entries);
      auto prefix = queue_store::entry_prefix(id.first, id.second);
      dict_page page;
      page.done = true;
      size_t bytes = 0;
      caf::error bad;
      auto visit = [&](std::string_view k, std::string_view v) {
        if (page.entries.size() >= limit || bytes >= st_.store.limits().max_reply_bytes) {
          page.done = false;
          return false;
        }
        std::string key;
        if (!queue_store::entry_key_suffix(k, prefix, key))
          return true;
        std::string value;
        if (req.with_values)
          if (auto err = queue_store::decode_payload(v, value)) {
            bad = err;
            return false;
          }
        bytes += key.size() + value.size();
        page.entries.emplace_back(std::move(key), std::move(value));
        return true;
      };
      auto err = req.from_start
                   ? st_.db->scan(table::dicts, prefix, visit)
                   : st_.db->scan_after(table::dicts, prefix,
                                        queue_store::entry_key(id.first, id.second, req.cursor),
                                        visit);
      if (err || bad) {
        rp.deliver(err ? err : bad);
        return;
      }
      ++st_.dict_reads;
      if (!page.entries.empty())
        page.next_cursor = page.entries.back().first;
      else
        page.next_cursor = req.cursor;
      rp.deliver(std::move(page));
    });
    return rp;
  }

  caf::result<void> dict_clear(const std::string& env, const std::string& name) {
    auto rp = self_->make_response_promise();
    object_id id{env, name};
    defer_dict(id, {}, true, [this, id, rp]() mutable {
      auto* d = find_dict(id);
      if (d == nullptr) {
        rp.deliver(no_such(object_kind::dict, id.second));
        return;
      }
      storage::write_batch batch;
      auto err = erase_entries(id, batch);
      if (err) {
        rp.deliver(err);
        return;
      }
      if (batch.empty()) {
        rp.deliver(caf::unit);
        return;
      }
      d->exclusive_running = true;
      begin_write(*d, {});
      commit_dict(id, d->incarnation, {}, std::move(batch),
                  [rp](dict_state& ds) mutable {
                    ds.count = 0;
                    ds.bytes = 0;
                    rp.deliver(caf::unit);
                  },
                  [rp](const caf::error& err) mutable { rp.deliver(err); });
    });
    return rp;
  }

  // -- timers ----------------------------------------------------------------------------------

  void wake(int64_t at_ns) {
    st_.wakeups.erase(at_ns);
    auto now = steady_ns();
    while (!st_.deadlines.empty() && st_.deadlines.begin()->first <= now) {
      auto waiter_id = st_.deadlines.begin()->second;
      st_.deadlines.erase(st_.deadlines.begin());
      expire_waiter(waiter_id);
    }
    schedule_wakeup();
  }

  void sweep() {
    auto now = wall_ms();
    for (auto& [id, q] : st_.queues) {
      for (auto i = q.partitions.begin(); i != q.partitions.end();) {
        auto& p = i->second;
        if (p.expires_at_ms != 0 && p.expires_at_ms <= now && p.reserved == 0) {
          storage::write_batch batch;
          for (const auto& item : p.ready)
            batch.erase(table::queues, queue_store::item_key(id.first, id.second, i->first, item.seq));
          batch.erase(table::queues, queue_store::partition_key(id.first, id.second, i->first));
          log::info("queue_partition_expired")
            .kv("environment", id.first)
            .kv("queue", id.second)
            .kv("partition", i->first)
            .kv("items", p.ready.size());
          p.ready.clear();
          p.ready_bytes = 0;
          p.expires_at_ms = 0;
          p.stored_expires_at_ms = 0;
          ++st_.partitions_expired;
          persist(std::move(batch));
        }
        if (p.idle())
          i = q.partitions.erase(i);
        else
          ++i;
      }
    }
    self_->delayed_send(self_, st_.cfg.sweep_interval, sweep_atom::value);
  }

  actor_snapshot snapshot() {
    auto s = snapshot_of(self_, "queue_broker", "queue_broker", st_.load_error ? "failed" : "running");
    int64_t items = 0;
    int64_t bytes = 0;
    int64_t parked = 0;
    int64_t partitions = 0;
    for (auto& [_, q] : st_.queues)
      for (auto& [__, p] : q.partitions) {
        items += static_cast<int64_t>(p.ready.size());
        bytes += static_cast<int64_t>(p.ready_bytes);
        parked += static_cast<int64_t>(p.getters.size());
        partitions += p.live() ? 1 : 0;
      }
    int64_t entries = 0;
    int64_t dict_bytes = 0;
    for (auto& [_, d] : st_.dicts) {
      entries += static_cast<int64_t>(d.count);
      dict_bytes += static_cast<int64_t>(d.bytes);
    }
    s.counter("puts", st_.puts)
      .counter("gets", st_.gets)
      .counter("parked_gets", parked)
      .counter("items", items)
      .counter("bytes", bytes)
      .counter("queues", static_cast<int64_t>(st_.queues.size()))
      .counter("partitions", partitions)
      .counter("items_put", st_.items_put)
      .counter("items_got", st_.items_got)
      .counter("gets_parked_total", st_.gets_parked_total)
      .counter("gets_timed_out", st_.gets_timed_out)
      .counter("peeks", st_.peeks)
      .counter("puts_rejected_full", st_.puts_rejected_full)
      .counter("partitions_expired", st_.partitions_expired)
      .counter("dicts", static_cast<int64_t>(st_.dicts.size()))
      .counter("dict_entries", entries)
      .counter("dict_bytes", dict_bytes)
      .counter("dict_reads", st_.dict_reads)
      .counter("dict_writes", st_.dict_writes)
      .counter("objects_created", st_.objects_created)
      .counter("objects_deleted", st_.objects_deleted)
      .counter("write_failures", st_.write_failures);
    if (st_.load_error)
      s.detail("error", message_of(st_.load_error));
    return s;
  }

private:
  // -- helpers: storage ----------------------------------------------------------------------------

  /// Sends `batch` to the writer; `ok` runs once it is durable, `fail` with the writer's error.
  /// No request timeout: the writer answers every request it accepted (storage/writer.hpp), and
  /// a timer per mutation would cost more than the mutation at high rates.
  template <class Ok, class Fail>
  void commit(storage::write_batch batch, Ok ok, Fail fail) {
    commit(std::move(batch), storage::durable_hook{}, std::move(ok), std::move(fail));
  }

  /// The same; `hook` (if set) runs on the writer's thread once the batch is durable, after the
  /// writer's reply to this actor was sent (so `ok` always runs before anything the hook's answer
  /// lets a client do next reaches this actor).
  template <class Ok, class Fail>
  void commit(storage::write_batch batch, storage::durable_hook hook, Ok ok, Fail fail) {
    auto sent = hook ? self_->request(st_.writer, caf::infinite, storage::write_atom::value,
                                      std::move(batch), std::move(hook))
                     : self_->request(st_.writer, caf::infinite, storage::write_atom::value,
                                      std::move(batch));
    std::move(sent).then([ok]() mutable { ok(); },
            [this, fail](caf::error& err) mutable {
              ++st_.write_failures;
              log::error("queue_broker_write_failed").kv("error", message_of(err));
              fail(err);
            });
  }

  /// A write nobody waits for (clean-up, TTL expiry).
  void persist(storage::write_batch batch) {
    commit(std::move(batch), [] {}, [](const caf::error&) {});
  }

  template <class T>
  static void deliver_error(caf::typed_response_promise<T>& rp, const caf::error& err) {
    rp.deliver(err);
  }

  // -- helpers: objects --------------------------------------------------------------------------

  object_info info_of(object_kind kind, const object_id& id) {
    object_info info;
    info.name = id.second;
    info.environment = id.first;
    info.kind = kind;
    if (kind == object_kind::queue) {
      auto& q = st_.queues.at(id);
      info.ephemeral = q.rec.ephemeral;
      info.created_at_ms = q.rec.created_at_ms;
      for (auto& [_, p] : q.partitions) {
        info.item_count += p.ready.size();
        info.byte_count += p.ready_bytes;
        info.partition_count += p.live() ? 1 : 0;
      }
    } else {
      auto& d = st_.dicts.at(id);
      info.ephemeral = d.rec.ephemeral;
      info.created_at_ms = d.rec.created_at_ms;
      info.item_count = d.count;
      info.byte_count = d.bytes;
    }
    return info;
  }

  /// Answers with the object's info once its record is durable (a lookup racing its create).
  void deliver_info(info_promise& rp, object_kind kind, const object_id& id, bool durable) {
    if (durable) {
      rp.deliver(info_of(kind, id));
      return;
    }
    self_->request(st_.writer, caf::infinite, storage::flush_atom::value)
      .then(
        [this, rp, kind, id]() mutable {
          bool exists = kind == object_kind::queue ? st_.queues.count(id) != 0
                                                   : st_.dicts.count(id) != 0;
          if (exists)
            rp.deliver(info_of(kind, id));
          else
            rp.deliver(no_such(kind, id.second));
        },
        [rp](caf::error& err) mutable { rp.deliver(err); });
  }

  void create_object(object_kind kind, const object_id& id, bool ephemeral,
                     const caf::actor& owner, info_promise rp) {
    object_record rec{wall_ms(), ephemeral};
    auto incarnation = st_.next_incarnation++;
    auto t = kind == object_kind::queue ? table::queues : table::dicts;
    if (kind == object_kind::queue) {
      auto& q = st_.queues[id];
      q.incarnation = incarnation;
      q.rec = rec;
      q.durable = false;
    } else {
      auto& d = st_.dicts[id];
      d.incarnation = incarnation;
      d.rec = rec;
      d.durable = false;
    }
    if (ephemeral && owner) {
      self_->monitor(owner);
      st_.owners[owner.address()].push_back(owned_object{kind, id});
    }
    storage::write_batch batch;
    batch.put(t, queue_store::object_key(id.first, id.second), queue_store::encode_object(rec));
    commit(std::move(batch),
           [this, kind, id, incarnation, rp]() mutable {
             ++st_.objects_created;
             log::info("queue_object_created")
               .kv("kind", to_string(kind))
               .kv("environment", id.first)
               .kv("name", id.second);
             if (kind == object_kind::queue) {
               auto q = st_.queues.find(id);
               if (q != st_.queues.end() && q->second.incarnation == incarnation)
                 q->second.durable = true;
             } else {
               auto d = st_.dicts.find(id);
               if (d != st_.dicts.end() && d->second.incarnation == incarnation)
                 d->second.durable = true;
             }
             bool exists = kind == object_kind::queue ? st_.queues.count(id) != 0
                                                      : st_.dicts.count(id) != 0;
             if (exists)
               rp.deliver(info_of(kind, id));
             else
               rp.deliver(no_such(kind, id.second));
           },
           [this, kind, id, incarnation, rp](const caf::error& err) mutable {
             if (kind == object_kind::queue) {
               auto q = st_.queues.find(id);
               if (q != st_.queues.end() && q->second.incarnation == incarnation) {
                 fail_waiters(q->second, err);
                 st_.queues.erase(q);
               }
             } else {
               auto d = st_.dicts.find(id);
               if (d != st_.dicts.end() && d->second.incarnation == incarnation) {
                 auto waiting = std::move(d->second.waiting);
                 st_.dicts.erase(d);
                 for (auto& op : waiting)
                   op.run();
               }
             }
             rp.deliver(err);
           });
  }

  // -- helpers: queues ---------------------------------------------------------------------------

  queue_state* find_queue(const std::string& env, const std::string& name) {
    auto q = st_.queues.find(object_id{env, name});
    return q == st_.queues.end() ? nullptr : &q->second;
  }

  partition_state* find_partition(const object_id& id, uint64_t incarnation,
                                  const std::string& partition) {
    auto q = st_.queues.find(id);
    if (q == st_.queues.end() || q->second.incarnation != incarnation)
      return nullptr;
    return &q->second.partitions[partition];
  }

  void drop_if_idle(queue_state& q, const std::string& partition) {
    auto p = q.partitions.find(partition);
    if (p != q.partitions.end() && p->second.idle())
      q.partitions.erase(p);
  }

  /// Takes up to `n` items from the head, reads them and erases them durably; answers `rp`
  /// with them once the erasure is durable. `p` must have ready items.
  void consume(const object_id& id, queue_state& q, const std::string& partition,
               partition_state& p, uint32_t n, get_responder rp) {
    std::vector<item_ref> taken;
    std::vector<std::string> payloads;
    storage::write_batch batch;
    size_t bytes = 0;
    const auto max_bytes = st_.store.limits().max_reply_bytes;
    while (!p.ready.empty() && taken.size() < n
           && (taken.empty() || bytes + p.ready.front().bytes <= max_bytes)) {
      auto item = p.ready.front();
      auto k = queue_store::item_key(id.first, id.second, partition, item.seq);
      auto value = st_.db->get(table::queues, k);
      std::string payload;
      if (!value || !*value || queue_store::decode_payload(**value, payload)) {
        // Cannot happen while the broker is the only writer of the table; report it loudly.
        log::error("queue_item_unreadable")
          .kv("queue", id.second)
          .kv("partition", partition)
          .kv("seq", item.seq)
          .kv("error", value ? std::string{"missing or corrupt"} : message_of(value.error()));
        break;
      }
      p.ready.pop_front();
      p.ready_bytes -= item.bytes;
      bytes += item.bytes;
      batch.erase(table::queues, std::move(k));
      payloads.push_back(std::move(payload));
      taken.push_back(item);
    }
    if (taken.empty()) {
      rp.deliver(make_error(errc::internal, "queue " + quoted(id.second)
                                              + " has an unreadable item; see shoald's log"));
      return;
    }
    p.consuming += taken.size();
    auto incarnation = q.incarnation;
    // A direct reply is answered by the writer thread right after the fsync (the hook owns the
    // payloads then); `ok` only updates the state.
    const bool hooked = rp.direct();
    storage::durable_hook hook;
    if (hooked)
      hook = rp.durable_hook(std::move(payloads));
    commit(std::move(batch), std::move(hook),
           [this, id, incarnation, partition, count = taken.size(), payloads = std::move(payloads),
            rp, hooked]() mutable {
             if (auto* p = find_partition(id, incarnation, partition)) {
               p->consuming -= count;
               drop_if_idle(st_.queues.at(id), partition);
             }
             st_.items_got += static_cast<int64_t>(count);
             if (!hooked)
               rp.deliver(std::move(payloads));
           },
           [this, id, incarnation, partition, taken, rp](const caf::error& err) mutable {
             if (auto* p = find_partition(id, incarnation, partition)) {
               p->consuming -= taken.size();
               // Back at the head, in order: the items were not consumed.
               for (auto i = taken.rbegin(); i != taken.rend(); ++i) {
                 p->ready.push_front(*i);
                 p->ready_bytes += i->bytes;
               }
               serve(id, incarnation, partition);
             }
             rp.deliver(err);
           });
  }

  static bool has_from(const partition_state& p, uint64_t cursor) {
    return !p.ready.empty() && p.ready.back().seq >= cursor;
  }

  caf::expected<queue_page> read_page(const object_id& id, const std::string& partition,
                                      const partition_state& p, uint64_t cursor, uint32_t limit) {
    queue_page page;
    page.next_cursor = cursor;
    auto first = std::lower_bound(p.ready.begin(), p.ready.end(), cursor,
                                  [](const item_ref& i, uint64_t c) { return i.seq < c; });
    size_t bytes = 0;
    const auto max_bytes = st_.store.limits().max_reply_bytes;
    for (auto i = first; i != p.ready.end() && page.items.size() < limit; ++i) {
      if (!page.items.empty() && bytes + i->bytes > max_bytes)
        break;
      auto value = st_.db->get(table::queues,
                               queue_store::item_key(id.first, id.second, partition, i->seq));
      if (!value)
        return value.error();
      std::string payload;
      if (!*value || queue_store::decode_payload(**value, payload))
        continue; // consumed meanwhile? cannot be: ready items are on disk
      bytes += payload.size();
      page.items.emplace_back(i->seq, std::move(payload));
      page.next_cursor = i->seq + 1;
    }
    return page;
  }

  void park(const object_id& id, uint64_t incarnation, const std::string& partition,
            partition_state& p, waiter w, bool is_peek) {
    st_.waiters[w.id] = waiter_location{id, incarnation, partition, is_peek};
    st_.deadlines.emplace(w.deadline_ns, w.id);
    if (is_peek)
      p.peekers.push_back(std::move(w));
    else
      p.getters.push_back(std::move(w));
    schedule_wakeup();
  }

  /// One wake message for the earliest deadline; none when an earlier one is already on its way.
  void schedule_wakeup() {
    if (st_.deadlines.empty())
      return;
    auto earliest = st_.deadlines.begin()->first;
    if (!st_.wakeups.empty() && *st_.wakeups.begin() <= earliest)
      return;
    st_.wakeups.insert(earliest);
    auto delay = std::max<int64_t>(earliest - steady_ns(), 0);
    self_->delayed_send(self_, nanoseconds(delay) + microseconds(100), wake_atom::value, earliest);
  }

  void expire_waiter(uint64_t waiter_id) {
    auto loc = st_.waiters.find(waiter_id);
    if (loc == st_.waiters.end())
      return;
    auto where = std::move(loc->second);
    st_.waiters.erase(loc);
    auto* p = find_partition(where.queue, where.incarnation, where.partition);
    if (p == nullptr)
      return;
    if (where.peek) {
      auto i = std::find_if(p->peekers.begin(), p->peekers.end(),
                            [&](const waiter& w) { return w.id == waiter_id; });
      if (i != p->peekers.end()) {
        i->page.deliver(queue_page{{}, i->cursor});
        p->peekers.erase(i);
      }
    } else {
      auto i = std::find_if(p->getters.begin(), p->getters.end(),
                            [&](const waiter& w) { return w.id == waiter_id; });
      if (i != p->getters.end()) {
        ++st_.gets_timed_out;
        i->get.deliver(std::vector<std::string>{});
        p->getters.erase(i);
      }
    }
    drop_if_idle(st_.queues.at(where.queue), where.partition);
  }

  void forget_deadline(const waiter& w) {
    st_.waiters.erase(w.id);
    auto [first, last] = st_.deadlines.equal_range(w.deadline_ns);
    for (auto i = first; i != last; ++i)
      if (i->second == w.id) {
        st_.deadlines.erase(i);
        break;
      }
  }

  /// New ready items: answer parked peeks, then parked gets in arrival order.
  void serve(const object_id& id, uint64_t incarnation, const std::string& partition) {
    auto q = st_.queues.find(id);
    if (q == st_.queues.end() || q->second.incarnation != incarnation)
      return;
    auto& p = q->second.partitions[partition];
    if (!p.peekers.empty()) {
      std::vector<waiter> still;
      for (auto& w : p.peekers) {
        if (!has_from(p, w.cursor)) {
          still.push_back(std::move(w));
          continue;
        }
        forget_deadline(w);
        auto page = read_page(id, partition, p, w.cursor, w.max_items);
        if (page)
          w.page.deliver(std::move(*page));
        else
          w.page.deliver(page.error());
      }
      p.peekers = std::move(still);
    }
    while (!p.getters.empty() && !p.ready.empty()) {
      auto w = std::move(p.getters.front());
      p.getters.pop_front();
      forget_deadline(w);
      consume(id, q->second, partition, p, w.max_items, w.get);
    }
  }

  void fail_waiters(queue_state& q, const caf::error& err) {
    for (auto& [_, p] : q.partitions) {
      for (auto& w : p.getters) {
        forget_deadline(w);
        w.get.deliver(err);
      }
      for (auto& w : p.peekers) {
        forget_deadline(w);
        w.page.deliver(err);
      }
      p.getters.clear();
      p.peekers.clear();
    }
  }

  void remove_queue(const object_id& id, caf::response_promise rp) {
    auto q = st_.queues.find(id);
    if (q == st_.queues.end()) {
      rp.deliver(no_such(object_kind::queue, id.second));
      return;
    }
    storage::write_batch batch;
    batch.erase(table::queues, queue_store::object_key(id.first, id.second));
    for (auto& [pname, p] : q->second.partitions) {
      batch.erase(table::queues, queue_store::partition_key(id.first, id.second, pname));
      for (const auto& item : p.ready)
        batch.erase(table::queues, queue_store::item_key(id.first, id.second, pname, item.seq));
      // Puts in flight reach the writer before this batch: erase their items too.
      for (const auto& [first, count] : p.inflight_puts)
        for (uint64_t seq = first; seq < first + count; ++seq)
          batch.erase(table::queues, queue_store::item_key(id.first, id.second, pname, seq));
    }
    fail_waiters(q->second, make_error(errc::not_found, "queue " + quoted(id.second)
                                                          + " was deleted while this call waited"));
    st_.queues.erase(q);
    ++st_.objects_deleted;
    log::info("queue_object_deleted").kv("kind", "queue").kv("environment", id.first).kv("name", id.second);
    commit(std::move(batch), [rp]() mutable { rp.deliver(caf::unit); },
           [rp](const caf::error& err) mutable { rp.deliver(err); });
  }

  // -- helpers: dicts ----------------------------------------------------------------------------

  dict_state* find_dict(const object_id& id) {
    auto d = st_.dicts.find(id);
    return d == st_.dicts.end() ? nullptr : &d->second;
  }

  static bool can_start(const dict_state& d, const dict_op& op) {
    if (d.exclusive_running)
      return false;
    if (op.exclusive)
      return d.writes_inflight == 0;
    for (const auto& k : op.keys)
      if (d.busy.count(k) != 0)
        return false;
    return true;
  }

  /// Runs `run` now when nothing it depends on is in flight (and nothing waits before it), else
  /// queues it in the dict's FIFO. For an unknown dict it runs at once (and reports not_found).
  void defer_dict(const object_id& id, std::vector<std::string> keys, bool exclusive,
                  std::function<void()> run) {
    dict_op op{std::move(keys), exclusive, std::move(run)};
    auto* d = find_dict(id);
    if (d == nullptr || (d->waiting.empty() && can_start(*d, op) && !(d->deleting && !exclusive)))
      return op.run();
    d->waiting.push_back(std::move(op));
  }

  void begin_write(dict_state& d, const std::vector<std::string>& keys) {
    ++d.writes_inflight;
    for (const auto& k : keys)
      d.busy.insert(k);
  }

  template <class Ok, class Fail>
  void commit_dict(const object_id& id, uint64_t incarnation, std::vector<std::string> keys,
                   storage::write_batch batch, Ok ok, Fail fail) {
    ++st_.dict_writes;
    auto finish = [this, id, incarnation, keys](auto&& then) {
      auto* d = find_dict(id);
      if (d == nullptr || d->incarnation != incarnation)
        return then(nullptr);
      --d->writes_inflight;
      for (const auto& k : keys)
        d->busy.erase(k);
      d->exclusive_running = false;
      then(d);
      drain_dict(id);
    };
    commit(std::move(batch),
           [finish, ok]() mutable {
             finish([&](dict_state* d) {
               if (d != nullptr)
                 ok(*d);
               else {
                 dict_state gone;
                 ok(gone);
               }
             });
           },
           [finish, fail](const caf::error& err) mutable {
             finish([&](dict_state*) { fail(err); });
           });
  }

  void drain_dict(const object_id& id) {
    for (;;) {
      auto* d = find_dict(id);
      if (d == nullptr || d->waiting.empty() || !can_start(*d, d->waiting.front()))
        return;
      auto op = std::move(d->waiting.front());
      d->waiting.pop_front();
      op.run();
    }
  }

  caf::error erase_entries(const object_id& id, storage::write_batch& batch) {
    return st_.db->scan(table::dicts, queue_store::entry_prefix(id.first, id.second),
                        [&](std::string_view k, std::string_view) {
                          batch.erase(table::dicts, std::string{k});
                          return true;
                        });
  }

  void remove_dict(const object_id& id, caf::response_promise rp) {
    auto* d = find_dict(id);
    if (d == nullptr) {
      rp.deliver(no_such(object_kind::dict, id.second));
      return;
    }
    storage::write_batch batch;
    if (auto err = erase_entries(id, batch)) {
      d->deleting = false;
      drain_dict(id);
      rp.deliver(err);
      return;
    }
    batch.erase(table::dicts, queue_store::object_key(id.first, id.second));
    d->exclusive_running = true;
    auto incarnation = d->incarnation;
    commit(std::move(batch),
           [this, id, incarnation, rp]() mutable {
             auto d = st_.dicts.find(id);
             if (d != st_.dicts.end() && d->second.incarnation == incarnation) {
               auto waiting = std::move(d->second.waiting);
               st_.dicts.erase(d);
               ++st_.objects_deleted;
               log::info("queue_object_deleted")
                 .kv("kind", "dict")
                 .kv("environment", id.first)
                 .kv("name", id.second);
               // Everything that waited behind the delete now finds no dict (or a new one).
               for (auto& op : waiting)
                 op.run();
             }
             rp.deliver(caf::unit);
           },
           [this, id, incarnation, rp](const caf::error& err) mutable {
             auto* d = find_dict(id);
             if (d != nullptr && d->incarnation == incarnation) {
               d->exclusive_running = false;
               d->deleting = false;
               drain_dict(id);
             }
             rp.deliver(err);
           });
  }

  self_ptr self_;
  broker_state& st_;
};

impl_actor::behavior_type broker_impl(self_ptr self, const storage::store* db,
                                      storage::writer_actor writer, queue_broker_config cfg) {
  self->state.db = db;
  self->state.writer = std::move(writer);
  self->state.cfg = cfg;
  self->state.store = queue_store{cfg.limits};
  // shared_ptr: continuations of writer requests capture the broker's `this`, so it must live as
  // long as the behavior (which owns these copies); both go when the actor terminates.
  auto logic = std::make_shared<broker>(self);
  logic->load();
  self->set_down_handler([logic](caf::down_msg& msg) { logic->forget_owner(msg.source); });
  self->delayed_send(self, cfg.sweep_interval, sweep_atom::value);
  auto b = [logic]() -> broker& { return *logic; };
  return {
    [self, b](lookup_atom, object_kind kind, const std::string& env, const std::string& name,
              bool create_if_missing) -> caf::result<object_info> {
      if (auto err = b().unavailable())
        return err;
      auto rp = self->make_response_promise<object_info>();
      b().lookup(kind, env, name, create_if_missing, rp);
      return rp;
    },
    [self, b](create_atom, object_kind kind, const std::string& env,
              const std::string& name) -> caf::result<object_info> {
      if (auto err = b().unavailable())
        return err;
      auto rp = self->make_response_promise<object_info>();
      b().create(kind, env, name, rp);
      return rp;
    },
    [self, b](ephemeral_atom, object_kind kind, const std::string& env,
              const caf::actor& owner) -> caf::result<object_info> {
      if (auto err = b().unavailable())
        return err;
      auto rp = self->make_response_promise<object_info>();
      b().create_ephemeral(kind, env, owner, rp);
      return rp;
    },
    [self, b](delete_atom, object_kind kind, const std::string& env,
              const std::string& name) -> caf::result<void> {
      if (auto err = b().unavailable())
        return err;
      auto rp = self->make_response_promise();
      b().remove(kind, env, name, rp);
      return rp;
    },
    [b](list_atom, object_kind kind,
        const std::string& env) -> caf::result<std::vector<object_info>> {
      if (auto err = b().unavailable())
        return err;
      return b().list(kind, env);
    },
    [self, b](queue_put_atom, queue_put_request& req) -> caf::result<void> {
      if (auto err = b().unavailable())
        return err;
      auto rp = self->make_response_promise();
      b().put(req, put_responder{rp});
      return rp;
    },
    [b](queue_put_atom, queue_put_request& req, put_reply& reply) {
      if (auto err = b().unavailable())
        return reply->answer(err);
      b().put(req, put_responder{reply});
    },
    [self, b](queue_get_atom,
              queue_get_request& req) -> caf::result<std::vector<std::string>> {
      if (auto err = b().unavailable())
        return err;
      auto rp = self->make_response_promise<std::vector<std::string>>();
      b().get(req, get_responder{rp});
      return rp;
    },
    [b](queue_get_atom, queue_get_request& req, get_reply& reply) {
      if (auto err = b().unavailable())
        return reply->answer(err);
      b().get(req, get_responder{reply});
    },
    [b](queue_len_atom, const std::string& env, const std::string& name,
        const std::string& partition, bool total) -> caf::result<uint64_t> {
      if (auto err = b().unavailable())
        return err;
      return b().len(env, name, partition, total);
    },
    [b](queue_clear_atom, const std::string& env, const std::string& name,
        const std::string& partition, bool all) -> caf::result<void> {
      if (auto err = b().unavailable())
        return err;
      return b().clear(env, name, partition, all);
    },
    [b](queue_peek_atom, queue_peek_request& req) -> caf::result<queue_page> {
      if (auto err = b().unavailable())
        return err;
      return b().peek(req);
    },
    [b](dict_get_atom, const std::string& env, const std::string& name,
        const std::string& key) -> caf::result<dict_value> {
      if (auto err = b().unavailable())
        return err;
      return b().dict_get(env, name, key, false);
    },
    [b](dict_put_atom, dict_put_request& req) -> caf::result<bool> {
      if (auto err = b().unavailable())
        return err;
      return b().dict_put(req);
    },
    [b](dict_update_atom, const std::string& env, const std::string& name,
        entry_list& entries) -> caf::result<void> {
      if (auto err = b().unavailable())
        return err;
      return b().dict_update(env, name, entries);
    },
    [b](dict_pop_atom, const std::string& env, const std::string& name,
        const std::string& key) -> caf::result<dict_value> {
      if (auto err = b().unavailable())
        return err;
      return b().dict_get(env, name, key, true);
    },
    [b](dict_has_atom, const std::string& env, const std::string& name,
        const std::string& key) -> caf::result<bool> {
      if (auto err = b().unavailable())
        return err;
      return b().dict_contains(env, name, key);
    },
    [b](dict_len_atom, const std::string& env, const std::string& name) -> caf::result<uint64_t> {
      if (auto err = b().unavailable())
        return err;
      return b().dict_len(env, name);
    },
    [b](dict_scan_atom, dict_scan_request& req) -> caf::result<dict_page> {
      if (auto err = b().unavailable())
        return err;
      return b().dict_scan(req);
    },
    [b](dict_clear_atom, const std::string& env, const std::string& name) -> caf::result<void> {
      if (auto err = b().unavailable())
        return err;
      return b().dict_clear(env, name);
    },
    [b](sweep_atom) { b().sweep(); },
    [b](wake_atom, int64_t at_ns) { b().wake(at_ns); },
    [b](inspect_atom) { return b().snapshot(); },
  };
}

/// The broker as a class, so that it can be pinned to a thread (pinned_actor.hpp).
class broker_actor final : public pinned<caf::stateful_actor<broker_state, impl_actor::base>> {
public:
  broker_actor(caf::actor_config& cfg, std::shared_ptr<pinned_unit> unit, const storage::store* db,
               storage::writer_actor writer, queue_broker_config config)
    : pinned(cfg, std::move(unit)), db_(db), writer_(std::move(writer)), config_(config) {}

  behavior_type make_behavior() override { return broker_impl(this, db_, writer_, config_); }

private:
  const storage::store* db_;
  storage::writer_actor writer_;
  queue_broker_config config_;
};

} // namespace

queue_broker_actor spawn_queue_broker(caf::actor_system& sys, const storage::store& db,
                                      storage::writer_actor writer, queue_broker_config cfg,
                                      std::shared_ptr<pinned_unit> unit) {
  auto impl = sys.spawn<broker_actor>(std::move(unit), &db, std::move(writer), cfg);
  return caf::actor_cast<queue_broker_actor>(impl);
}

} // namespace shoal::queue_broker
