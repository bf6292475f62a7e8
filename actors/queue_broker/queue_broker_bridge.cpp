#include "actors/queue_broker/queue_broker_bridge.hpp"

#include <type_traits>

#include <map>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include <capnp/schema.h>

#include "runtime/channel_vat.hpp"
#include "runtime/kj_bridge.hpp"
#include "schema/queues.capnp.h"

namespace shoal::queue_broker {

namespace {

constexpr uint32_t default_page_limit = 100;

std::string to_std(capnp::Data::Reader data) {
  return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
}

kj::ArrayPtr<const kj::byte> bytes_of(const std::string& s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

object_kind from_wire(wire::ObjectKind k) {
  return k == wire::ObjectKind::DICT ? object_kind::dict : object_kind::queue;
}

wire::ObjectKind to_wire(object_kind k) {
  return k == object_kind::dict ? wire::ObjectKind::DICT : wire::ObjectKind::QUEUE;
}

void fill(wire::DataObjectInfo::Builder out, const object_info& info) {
  out.setName(info.name);
  out.setKind(to_wire(info.kind));
  out.setEphemeral(info.ephemeral);
  out.setCreatedAtMs(info.created_at_ms);
  out.setItemCount(info.item_count);
  out.setByteCount(info.byte_count);
  out.setPartitionCount(info.partition_count);
  out.setEnvironment(info.environment);
}

/// `bridge::ask` without a request timeout. Every bridged request with a deadline arms CAF's
/// clock thread twice (set and cancel: two extra thread wake-ups per call, a large share of a
/// queue operation's cost), and the broker answers every request by itself: mutations once the
/// writer replied (it answers everything it accepted), blocking gets and peeks at their own
/// deadline. If the broker dies, requests still in its mailbox fail with request_receiver_down.
template <class R, class Handle, class... Ts>
kj::Promise<R> ask_untimed(caf::actor_system& sys, const Handle& dest, Ts... xs) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<R>();
  // shared_ptr: the helper's two continuations both reference the fulfiller; exactly one runs.
  auto fulfiller = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<R>>>(
    kj::mv(paf.fulfiller));
  auto on_error = [fulfiller](caf::error& err) {
    (*fulfiller)->reject(bridge::to_kj_exception(err));
  };
  sys.spawn([=](caf::event_based_actor* self) {
    if constexpr (std::is_void_v<R>) {
      self->request(dest, caf::infinite, xs...).then([fulfiller]() { (*fulfiller)->fulfill(); },
                                                     on_error);
    } else {
      self->request(dest, caf::infinite, xs...).then(
        [fulfiller](R& result) { (*fulfiller)->fulfill(std::move(result)); }, on_error);
    }
  });
  return kj::mv(paf.promise);
}

/// What a Queues capability and its ephemeral handles share; kj thread only.
struct queues_env {
  rpc_context& ctx;
  caf::actor_system& sys;
  queue_broker_actor broker;
  std::string environment;
  /// Puts and gets waiting for their direct reply (the hot path), by reply id.
  uint64_t next_reply = 1;
  std::map<uint64_t, kj::Own<kj::PromiseFulfiller<void>>> put_waits;
  std::map<uint64_t, kj::Own<kj::PromiseFulfiller<std::vector<std::string>>>> get_waits;

  /// The fulfillers waiting for results of type T (caf::unit_t: puts).
  template <class T>
  auto& waits() {
    if constexpr (std::is_same_v<T, caf::unit_t>)
      return put_waits;
    else
      return get_waits;
  }

  /// A reply the broker answers on its thread. The answer is posted to the kj mailbox (which
  /// rings the kj thread once per burst of posts) and fulfils the returned promise there.
  template <class T>
  auto expect(const std::shared_ptr<queues_env>& self) {
    using R = std::conditional_t<std::is_same_v<T, caf::unit_t>, void, T>;
    auto paf = kj::newPromiseAndFulfiller<R>();
    auto id = next_reply++;
    waits<T>().emplace(id, kj::mv(paf.fulfiller));
    std::weak_ptr<queues_env> weak = self;
    auto mailbox = ctx.mailbox;
    auto reply = std::make_shared<direct_reply<T>>([weak, mailbox, id](caf::expected<T> result) {
      mailbox->post([weak, id, result = std::move(result)]() mutable {
        if (auto env = weak.lock())
          env->finish<T>(id, std::move(result));
      });
    });
    return std::make_pair(std::move(reply), kj::mv(paf.promise));
  }

  template <class T>
  void finish(uint64_t id, caf::expected<T> result) {
    auto& w = waits<T>();
    auto i = w.find(id);
    if (i == w.end())
      return; // the call was cancelled meanwhile
    auto f = kj::mv(i->second);
    w.erase(i);
    if (!result)
      f->reject(bridge::to_kj_exception(result.error()));
    else if constexpr (std::is_same_v<T, caf::unit_t>)
      f->fulfill();
    else
      f->fulfill(std::move(*result));
  }

  template <class R, class... Ts>
  kj::Promise<R> ask(Ts... xs) {
    return ask_untimed<R>(sys, broker, std::move(xs)...);
  }

  /// For requests the broker may hold up to `block_ms` (blocking gets and peeks): it answers
  /// them by that deadline itself.
  template <class R, class... Ts>
  kj::Promise<R> ask_blocking(uint64_t, Ts... xs) {
    return ask_untimed<R>(sys, broker, std::move(xs)...);
  }
};

class ephemeral_impl final : public wire::EphemeralObject::Server {
public:
  ephemeral_impl(std::shared_ptr<queues_env> env, object_info info)
    : env_(std::move(env)), info_(std::move(info)) {}

  ~ephemeral_impl() {
    // The creator let go (or its connection ended): the object goes. A `delete` that already
    // happened makes this one fail with not_found, which nobody waits for.
    caf::anon_send(env_->broker, delete_atom::value, info_.kind, info_.environment, info_.name);
  }

  kj::Promise<void> info(InfoContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    return env_->ask<object_info>(lookup_atom::value, info_.kind, info_.environment, info_.name, false)
      .then([ctx](object_info info) mutable { fill(ctx.getResults().initInfo(), info); })
      .attach(kj::mv(pass));
  }

private:
  std::shared_ptr<queues_env> env_;
  object_info info_;
};

/// The ordinal of `method` in interface T (checked at start, not hard-coded).
template <class T>
uint16_t method_index(const char* method) {
  return capnp::Schema::from<T>().getMethodByName(method).getIndex();
}

class queues_impl final : public wire::Queues::Server, public direct_server {
public:
  explicit queues_impl(std::shared_ptr<queues_env> env) : env_(std::move(env)) {}

  // -- objects --------------------------------------------------------------------------------

  kj::Promise<void> lookup(LookupContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto p = ctx.getParams();
    return env_->ask<object_info>(lookup_atom::value, from_wire(p.getKind()), env_->environment,
                                  std::string{p.getName()}, p.getCreateIfMissing())
      .then([ctx](object_info info) mutable { fill(ctx.getResults().initInfo(), info); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> create(CreateContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto p = ctx.getParams();
    return env_->ask<object_info>(create_atom::value, from_wire(p.getKind()), env_->environment,
                                  std::string{p.getName()})
      .then([ctx](object_info info) mutable { fill(ctx.getResults().initInfo(), info); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> createEphemeral(CreateEphemeralContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto kind = from_wire(ctx.getParams().getKind());
    // No owner actor: the EphemeralObject capability is the owner here.
    return env_->ask<object_info>(ephemeral_atom::value, kind, env_->environment, caf::actor{})
      .then([this, ctx](object_info info) mutable {
        auto results = ctx.getResults();
        fill(results.initInfo(), info);
        results.setHandle(kj::heap<ephemeral_impl>(env_, std::move(info)));
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> delete_(DeleteContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto p = ctx.getParams();
    return env_->ask<void>(delete_atom::value, from_wire(p.getKind()), env_->environment,
                           std::string{p.getName()})
      .attach(kj::mv(pass));
  }

  kj::Promise<void> list(ListContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto kind = from_wire(ctx.getParams().getKind());
    return env_->ask<std::vector<object_info>>(list_atom::value, kind, env_->environment)
      .then([ctx](std::vector<object_info> all) mutable {
        auto page = ctx.getParams().getPage();
        size_t limit = page.getLimit() == 0 ? default_page_limit : page.getLimit();
        std::string cursor = page.getCursor();
        size_t first = 0;
        if (!cursor.empty())
          while (first < all.size() && all[first].name <= cursor)
            ++first;
        size_t last = std::min(all.size(), first + limit);
        auto results = ctx.getResults();
        auto out = results.initObjects(static_cast<unsigned>(last - first));
        for (size_t i = first; i < last; ++i)
          fill(out[static_cast<unsigned>(i - first)], all[i]);
        results.initPage().setNextCursor(last < all.size() ? all[last - 1].name : "");
      })
      .attach(kj::mv(pass));
  }

  // -- queues ---------------------------------------------------------------------------------

  kj::Promise<void> queuePut(QueuePutContext ctx) override {
    return put(ctx.getParams());
  }

  kj::Promise<void> queueGet(QueueGetContext ctx) override {
    return get(ctx.getParams()).then([ctx](std::vector<std::string> items) mutable {
      fill_items(ctx.getResults(), items);
    });
  }

  // -- the thread channels' calls (channel_vat.hpp) -------------------------------------------

  kj::Maybe<kj::Promise<results_writer>> call_direct(uint64_t interface_id, uint16_t method_id,
                                                     capnp::AnyPointer::Reader params) override {
    if (interface_id != capnp::typeId<wire::Queues>())
      return nullptr;
    if (method_id == put_method)
      return put(params.getAs<wire::Queues::QueuePutParams>()).then([] {
        return results_writer([](capnp::AnyPointer::Builder results) {
          results.initAs<wire::Queues::QueuePutResults>();
        });
      });
    if (method_id == get_method)
      return get(params.getAs<wire::Queues::QueueGetParams>()).then([](std::vector<std::string> items) {
        return results_writer([items = std::move(items)](capnp::AnyPointer::Builder results) {
          fill_items(results.initAs<wire::Queues::QueueGetResults>(), items);
        });
      });
    return nullptr;
  }

  kj::Promise<void> queueLen(QueueLenContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto p = ctx.getParams();
    return env_->ask<uint64_t>(queue_len_atom::value, env_->environment, std::string{p.getName()},
                               std::string{p.getPartition()}, p.getTotal())
      .then([ctx](uint64_t n) mutable { ctx.getResults().setCount(n); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> queueClear(QueueClearContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto p = ctx.getParams();
    return env_->ask<void>(queue_clear_atom::value, env_->environment, std::string{p.getName()},
                           std::string{p.getPartition()}, p.getAll())
      .attach(kj::mv(pass));
  }

  kj::Promise<void> queuePeek(QueuePeekContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto p = ctx.getParams();
    queue_peek_request req;
    req.environment = env_->environment;
    req.name = p.getName();
    req.partition = p.getPartition();
    req.cursor = p.getCursor();
    req.limit = p.getLimit() == 0 ? default_page_limit : p.getLimit();
    req.block_timeout_ms = p.getBlockTimeoutMs();
    auto block_ms = req.block_timeout_ms;
    return env_->ask_blocking<queue_page>(block_ms, queue_peek_atom::value, std::move(req))
      .then([ctx](queue_page page) mutable {
        auto results = ctx.getResults();
        auto out = results.initItems(static_cast<unsigned>(page.items.size()));
        for (unsigned i = 0; i < page.items.size(); ++i) {
          out[i].setSeq(page.items[i].first);
          out[i].setData(bytes_of(page.items[i].second));
        }
        results.setNextCursor(page.next_cursor);
      })
      .attach(kj::mv(pass));
  }

  // -- dicts ----------------------------------------------------------------------------------

  kj::Promise<void> dictGet(DictGetContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto p = ctx.getParams();
    return env_->ask<dict_value>(dict_get_atom::value, env_->environment, std::string{p.getName()},
                                 to_std(p.getKey()))
      .then([ctx](dict_value v) mutable {
        auto results = ctx.getResults();
        results.setFound(v.found);
        results.setValue(bytes_of(v.value));
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> dictPut(DictPutContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto p = ctx.getParams();
    dict_put_request req;
    req.environment = env_->environment;
    req.name = p.getName();
    req.key = to_std(p.getKey());
    req.value = to_std(p.getValue());
    req.skip_if_exists = p.getSkipIfExists();
    return env_->ask<bool>(dict_put_atom::value, std::move(req))
      .then([ctx](bool written) mutable { ctx.getResults().setWritten(written); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> dictUpdate(DictUpdateContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto p = ctx.getParams();
    entry_list entries;
    entries.reserve(p.getEntries().size());
    for (auto e : p.getEntries())
      entries.emplace_back(to_std(e.getKey()), to_std(e.getValue()));
    return env_->ask<void>(dict_update_atom::value, env_->environment, std::string{p.getName()},
                           std::move(entries))
      .attach(kj::mv(pass));
  }

  kj::Promise<void> dictPop(DictPopContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto p = ctx.getParams();
    return env_->ask<dict_value>(dict_pop_atom::value, env_->environment, std::string{p.getName()},
                                 to_std(p.getKey()))
      .then([ctx](dict_value v) mutable {
        auto results = ctx.getResults();
        results.setFound(v.found);
        results.setValue(bytes_of(v.value));
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> dictContains(DictContainsContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto p = ctx.getParams();
    return env_->ask<bool>(dict_has_atom::value, env_->environment, std::string{p.getName()},
                           to_std(p.getKey()))
      .then([ctx](bool found) mutable { ctx.getResults().setFound(found); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> dictLen(DictLenContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    return env_->ask<uint64_t>(dict_len_atom::value, env_->environment,
                               std::string{ctx.getParams().getName()})
      .then([ctx](uint64_t n) mutable { ctx.getResults().setCount(n); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> dictScan(DictScanContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    auto p = ctx.getParams();
    dict_scan_request req;
    req.environment = env_->environment;
    req.name = p.getName();
    req.cursor = to_std(p.getCursor());
    req.from_start = req.cursor.empty();
    req.limit = p.getLimit() == 0 ? default_page_limit : p.getLimit();
    req.with_values = p.getWithValues();
    return env_->ask<dict_page>(dict_scan_atom::value, std::move(req))
      .then([ctx](dict_page page) mutable {
        auto results = ctx.getResults();
        auto out = results.initEntries(static_cast<unsigned>(page.entries.size()));
        for (unsigned i = 0; i < page.entries.size(); ++i) {
          out[i].setKey(bytes_of(page.entries[i].first));
          out[i].setValue(bytes_of(page.entries[i].second));
        }
        results.setNextCursor(bytes_of(page.next_cursor));
        results.setDone(page.done);
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> dictClear(DictClearContext ctx) override {
    auto pass = env_->ctx.gate.enter();
    return env_->ask<void>(dict_clear_atom::value, env_->environment,
                           std::string{ctx.getParams().getName()})
      .attach(kj::mv(pass));
  }

private:
  static inline const uint16_t put_method = method_index<wire::Queues>("queuePut");
  static inline const uint16_t get_method = method_index<wire::Queues>("queueGet");

  kj::Promise<void> put(wire::Queues::QueuePutParams::Reader p) {
    auto pass = env_->ctx.gate.enter();
    queue_put_request req;
    req.environment = env_->environment;
    req.name = p.getName();
    req.partition = p.getPartition();
    req.partition_ttl_ms = p.getPartitionTtlMs();
    auto items = p.getItems();
    req.items.reserve(items.size());
    for (auto item : items)
      req.items.push_back(to_std(item));
    auto [reply, promise] = env_->expect<caf::unit_t>(env_);
    caf::anon_send(env_->broker, queue_put_atom::value, std::move(req), std::move(reply));
    return promise.attach(kj::mv(pass));
  }

  kj::Promise<std::vector<std::string>> get(wire::Queues::QueueGetParams::Reader p) {
    auto pass = env_->ctx.gate.enter();
    queue_get_request req;
    req.environment = env_->environment;
    req.name = p.getName();
    req.partition = p.getPartition();
    req.max_items = p.getMaxItems();
    req.block_timeout_ms = p.getBlockTimeoutMs();
    auto [reply, promise] = env_->expect<std::vector<std::string>>(env_);
    caf::anon_send(env_->broker, queue_get_atom::value, std::move(req), std::move(reply));
    return promise.attach(kj::mv(pass));
  }

  static void fill_items(wire::Queues::QueueGetResults::Builder results,
                         const std::vector<std::string>& items) {
    auto out = results.initItems(static_cast<unsigned>(items.size()));
    for (unsigned i = 0; i < items.size(); ++i)
      out.set(i, bytes_of(items[i]));
  }

  std::shared_ptr<queues_env> env_;
};

} // namespace

capnp::Capability::Client make_queues(rpc_context& ctx, caf::actor_system& sys,
                                      queue_broker_actor broker, std::string environment) {
  // shared_ptr (kj thread only): the Queues capability and the ephemeral handles it gives out
  // share the environment; it lives until the last of them is dropped.
  auto env = std::make_shared<queues_env>(queues_env{ctx, sys, std::move(broker), std::move(environment)});
  // Added to the server set: thread channels serve puts and gets on it directly.
  return ctx.direct_servers.add(kj::heap<queues_impl>(std::move(env)));
}

} // namespace shoal::queue_broker
