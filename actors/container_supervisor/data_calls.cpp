#include "actors/container_supervisor/data_calls.hpp"

#include <chrono>
#include <type_traits>
#include <utility>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include "runtime/errc.hpp"
#include "runtime/guest/guest_wire.hpp"

namespace shoal::container_supervisor {

namespace {

namespace qb = queue_broker;
using namespace std::chrono;
using reply_fn = std::function<void(guest::reply)>;

constexpr auto call_deadline = seconds(60);

guest::reply ok_reply(uint64_t request_id, std::string body) {
  return guest::reply{request_id, errc::none, std::move(body), {}};
}

guest::reply error_reply(uint64_t request_id, const caf::error& err) {
  return guest::reply{request_id, code_of(err), {}, message_of(err)};
}

/// Sends `xs...` to the broker from a short-lived helper actor and replies with `encode(result)`
/// (no argument for void results).
template <class R, class Encode, class... Ts>
void ask(caf::actor_system& sys, const qb::queue_broker_actor& broker, caf::timespan timeout,
         uint64_t request_id, reply_fn reply, Encode encode, Ts... xs) {
  sys.spawn([=](caf::event_based_actor* self) {
    auto fail = [reply, request_id](caf::error& err) { reply(error_reply(request_id, err)); };
    if constexpr (std::is_void_v<R>) {
      self->request(broker, timeout, xs...).then(
        [reply, request_id, encode]() { reply(ok_reply(request_id, encode())); }, fail);
    } else {
      self->request(broker, timeout, xs...).then(
        [reply, request_id, encode](R& result) { reply(ok_reply(request_id, encode(result))); },
        fail);
    }
  });
}

std::string empty_body() {
  return {};
}

/// `count:u32` followed by that many records of at least `min_record_bytes`; 0 after an error.
uint32_t read_count(guest::wire_reader& r, size_t min_record_bytes, const char* field) {
  auto n = r.u32(field);
  if (r.failed())
    return 0;
  if (static_cast<uint64_t>(n) * min_record_bytes > r.remaining()) {
    r.fail(std::string{field} + " " + std::to_string(n) + " is more than the body holds");
    return 0;
  }
  return n;
}

} // namespace

bool is_data_method(std::string_view method) {
  return method.substr(0, 6) == "queue." || method.substr(0, 5) == "dict.";
}

void handle_data_call(caf::actor_system& sys, const qb::queue_broker_actor& broker,
                      caf::actor owner, std::string env, guest::call call, reply_fn reply) {
  auto id = call.request_id;
  const auto& m = call.method;
  if (!broker)
    return reply(error_reply(id, make_error(errc::unavailable,
                                            "this node runs without the control role, so it "
                                            "serves no queues or dicts")));
  guest::wire_reader r{call.body};
  auto finish = [&](const char* what) -> bool {
    if (auto err = r.finish(what)) {
      reply(error_reply(id, err));
      return false;
    }
    return true;
  };
  bool is_queue = m.substr(0, 6) == "queue.";
  auto kind = is_queue ? qb::object_kind::queue : qb::object_kind::dict;
  auto op = is_queue ? m.substr(6) : m.substr(5);

  // -- both kinds ---------------------------------------------------------------------------------
  if (op == "lookup") {
    auto name = r.str("name");
    bool create = r.u8("create_if_missing") != 0;
    if (!finish("lookup body"))
      return;
    return ask<qb::object_info>(sys, broker, call_deadline, id, reply,
                                [](qb::object_info&) { return std::string{}; },
                                qb::lookup_atom::value, kind, env, name, create);
  }
  if (op == "ephemeral") {
    if (!finish("ephemeral body"))
      return;
    return ask<qb::object_info>(sys, broker, call_deadline, id, reply,
                                [](qb::object_info& info) {
                                  guest::wire_writer w;
                                  w.str(info.name);
                                  return w.take();
                                },
                                qb::ephemeral_atom::value, kind, env, owner);
  }
  if (op == "delete") {
    auto name = r.str("name");
    if (!finish("delete body"))
      return;
    return ask<void>(sys, broker, call_deadline, id, reply, empty_body, qb::delete_atom::value,
                     kind, env, name);
  }

  // -- queues -------------------------------------------------------------------------------------
  if (is_queue && op == "put") {
    qb::queue_put_request req;
    req.environment = env;
    req.name = r.str("name");
    req.partition = r.str("partition");
    req.partition_ttl_ms = r.u64("partition_ttl_ms");
    auto n = read_count(r, 4, "count");
    req.items.reserve(n);
    for (uint32_t i = 0; i < n && !r.failed(); ++i)
      req.items.push_back(r.bytes("item"));
    if (!finish("queue.put body"))
      return;
    return ask<void>(sys, broker, call_deadline, id, reply, empty_body, qb::queue_put_atom::value,
                     std::move(req));
  }
  if (is_queue && op == "get") {
    qb::queue_get_request req;
    req.environment = env;
    req.name = r.str("name");
    req.partition = r.str("partition");
    req.max_items = r.u32("max_items");
    req.block_timeout_ms = r.u64("block_timeout_ms");
    if (!finish("queue.get body"))
      return;
    auto deadline = milliseconds(req.block_timeout_ms) + call_deadline;
    return ask<std::vector<std::string>>(sys, broker, deadline, id, reply,
                                         [](std::vector<std::string>& items) {
                                           guest::wire_writer w;
                                           w.u32(static_cast<uint32_t>(items.size()));
                                           for (const auto& item : items)
                                             w.bytes(item);
                                           return w.take();
                                         },
                                         qb::queue_get_atom::value, std::move(req));
  }
  if (is_queue && op == "len") {
    auto name = r.str("name");
    auto partition = r.str("partition");
    bool total = r.u8("total") != 0;
    if (!finish("queue.len body"))
      return;
    return ask<uint64_t>(sys, broker, call_deadline, id, reply,
                         [](uint64_t& n) {
                           guest::wire_writer w;
                           w.u64(n);
                           return w.take();
                         },
                         qb::queue_len_atom::value, env, name, partition, total);
  }
  if (is_queue && op == "clear") {
    auto name = r.str("name");
    auto partition = r.str("partition");
    bool all = r.u8("all") != 0;
    if (!finish("queue.clear body"))
      return;
    return ask<void>(sys, broker, call_deadline, id, reply, empty_body,
                     qb::queue_clear_atom::value, env, name, partition, all);
  }
  if (is_queue && op == "peek") {
    qb::queue_peek_request req;
    req.environment = env;
    req.name = r.str("name");
    req.partition = r.str("partition");
    req.cursor = r.u64("cursor");
    req.limit = r.u32("limit");
    req.block_timeout_ms = r.u64("block_timeout_ms");
    if (!finish("queue.peek body"))
      return;
    auto deadline = milliseconds(req.block_timeout_ms) + call_deadline;
    return ask<qb::queue_page>(sys, broker, deadline, id, reply,
                               [](qb::queue_page& page) {
                                 guest::wire_writer w;
                                 w.u32(static_cast<uint32_t>(page.items.size()));
                                 for (const auto& [seq, item] : page.items)
                                   w.u64(seq).bytes(item);
                                 w.u64(page.next_cursor);
                                 return w.take();
                               },
                               qb::queue_peek_atom::value, std::move(req));
  }

  // -- dicts --------------------------------------------------------------------------------------
  auto encode_value = [](qb::dict_value& v) {
    guest::wire_writer w;
    w.u8(v.found ? 1 : 0).bytes(v.value);
    return w.take();
  };
  auto encode_flag = [](bool& b) {
    guest::wire_writer w;
    w.u8(b ? 1 : 0);
    return w.take();
  };
  if (!is_queue && (op == "get" || op == "pop" || op == "contains")) {
    auto name = r.str("name");
    auto key = r.bytes("key");
    if (!finish("dict body"))
      return;
    if (op == "get")
      return ask<qb::dict_value>(sys, broker, call_deadline, id, reply, encode_value,
                                 qb::dict_get_atom::value, env, name, key);
    if (op == "pop")
      return ask<qb::dict_value>(sys, broker, call_deadline, id, reply, encode_value,
                                 qb::dict_pop_atom::value, env, name, key);
    return ask<bool>(sys, broker, call_deadline, id, reply, encode_flag,
                     qb::dict_has_atom::value, env, name, key);
  }
  if (!is_queue && op == "put") {
    qb::dict_put_request req;
    req.environment = env;
    req.name = r.str("name");
    req.key = r.bytes("key");
    req.value = r.bytes("value");
    req.skip_if_exists = r.u8("skip_if_exists") != 0;
    if (!finish("dict.put body"))
      return;
    return ask<bool>(sys, broker, call_deadline, id, reply, encode_flag,
                     qb::dict_put_atom::value, std::move(req));
  }
  if (!is_queue && op == "update") {
    auto name = r.str("name");
    auto n = read_count(r, 8, "count");
    qb::entry_list entries;
    entries.reserve(n);
    for (uint32_t i = 0; i < n && !r.failed(); ++i) {
      auto k = r.bytes("key");
      auto v = r.bytes("value");
      entries.emplace_back(std::move(k), std::move(v));
    }
    if (!finish("dict.update body"))
      return;
    return ask<void>(sys, broker, call_deadline, id, reply, empty_body,
                     qb::dict_update_atom::value, env, name, std::move(entries));
  }
  if (!is_queue && op == "len") {
    auto name = r.str("name");
    if (!finish("dict.len body"))
      return;
    return ask<uint64_t>(sys, broker, call_deadline, id, reply,
                         [](uint64_t& n) {
                           guest::wire_writer w;
                           w.u64(n);
                           return w.take();
                         },
                         qb::dict_len_atom::value, env, name);
  }
  if (!is_queue && op == "scan") {
    qb::dict_scan_request req;
    req.environment = env;
    req.name = r.str("name");
    req.cursor = r.bytes("cursor");
    req.from_start = req.cursor.empty();
    req.limit = r.u32("limit");
    req.with_values = r.u8("with_values") != 0;
    if (!finish("dict.scan body"))
      return;
    return ask<qb::dict_page>(sys, broker, call_deadline, id, reply,
                              [](qb::dict_page& page) {
                                guest::wire_writer w;
                                w.u32(static_cast<uint32_t>(page.entries.size()));
                                for (const auto& [k, v] : page.entries)
                                  w.bytes(k).bytes(v);
                                w.bytes(page.next_cursor).u8(page.done ? 1 : 0);
                                return w.take();
                              },
                              qb::dict_scan_atom::value, std::move(req));
  }
  if (!is_queue && op == "clear") {
    auto name = r.str("name");
    if (!finish("dict.clear body"))
      return;
    return ask<void>(sys, broker, call_deadline, id, reply, empty_body,
                     qb::dict_clear_atom::value, env, name);
  }
  reply(error_reply(id, make_error(errc::invalid_argument,
                                   "unknown nested call method '" + m
                                     + "' (this shoald is older than the SDK in the container?)")));
}

} // namespace shoal::container_supervisor
