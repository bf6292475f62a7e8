#include "actors/gateway/gateway_bridge.hpp"

#include <map>

#include <caf/actor_system.hpp>

#include "actors/block_server/block_server_bridge.hpp"
#include "actors/image_builder/image_builder_bridge.hpp"
#include "actors/queue_broker/queue_broker_bridge.hpp"
#include "actors/scheduler/scheduler_bridge.hpp"
#include "runtime/kj_bridge.hpp"
#include "schema/gateway.capnp.h"

namespace shoal::gateway {

namespace {

constexpr uint32_t default_page_limit = 100;

class session_impl;

/// Live sessions by token id, so that revoking a token cuts the sessions it opened.
class session_registry {
public:
  void add(const std::string& token_id, session_impl* s) { sessions_.emplace(token_id, s); }
  void remove(const std::string& token_id, session_impl* s) {
    auto [first, last] = sessions_.equal_range(token_id);
    for (auto i = first; i != last; ++i)
      if (i->second == s) {
        sessions_.erase(i);
        return;
      }
  }
  template <class F>
  void for_each(const std::string& token_id, F f) {
    auto [first, last] = sessions_.equal_range(token_id);
    for (auto i = first; i != last; ++i)
      f(*i->second);
  }

private:
  std::multimap<std::string, session_impl*> sessions_;
};

void fill(wire::ActorSnapshot::Builder out, const actor_snapshot& s) {
  out.setName(s.name);
  out.setKind(s.kind);
  out.setState(s.state);
  out.setMailboxDepth(s.mailbox_depth);
  auto counters = out.initCounters(static_cast<unsigned>(s.counters.size()));
  for (unsigned i = 0; i < s.counters.size(); ++i) {
    counters[i].setName(s.counters[i].first);
    counters[i].setValue(s.counters[i].second);
  }
  auto details = out.initDetails(static_cast<unsigned>(s.details.size()));
  for (unsigned i = 0; i < s.details.size(); ++i) {
    details[i].setKey(s.details[i].first);
    details[i].setValue(s.details[i].second);
  }
}

void fill(wire::TokenInfo::Builder out, const token_info& t) {
  out.setTokenId(t.token_id);
  out.setEnvironment(t.environment);
  out.setLabel(t.label);
  out.setCreatedAtMs(t.created_at_ms);
  out.setAdmin(t.admin);
}

void fill(wire::EnvironmentInfo::Builder out, const environment_info& e) {
  out.setName(e.name);
  out.setCreatedAtMs(e.created_at_ms);
}

void fill(wire::ClusterInfo::Builder out, const node_facts& f, const std::string& environment,
          uint32_t actor_count) {
  out.setVersion(f.version);
  out.setNodeId(f.node_id);
  auto roles = out.initRoles(static_cast<unsigned>(f.roles.size()));
  for (unsigned i = 0; i < f.roles.size(); ++i)
    roles.set(i, f.roles[i]);
  out.setListenAddress(f.listen_address);
  out.setStateDir(f.state_dir);
  out.setPid(f.pid);
  out.setStartedAtMs(f.started_at_ms);
  out.setEnvironment(environment);
  out.setSchemaVersion(f.schema_version);
  out.setActorCount(actor_count);
}

/// A cursor is the name (or id) of the last item returned; listings are sorted by it.
template <class T, class Key>
std::pair<size_t, size_t> page_bounds(const std::vector<T>& items, Key key,
                                      wire::PageRequest::Reader page) {
  size_t limit = page.getLimit() == 0 ? default_page_limit : page.getLimit();
  std::string cursor = page.getCursor();
  size_t first = 0;
  if (!cursor.empty())
    while (first < items.size() && key(items[first]) <= cursor)
      ++first;
  size_t last = std::min(items.size(), first + limit);
  return {first, last};
}

void fill(wire::SecretInfo::Builder out, const secret_info& s) {
  out.setName(s.name);
  out.setEnvironment(s.environment);
  auto keys = out.initKeys(static_cast<unsigned>(s.keys.size()));
  for (unsigned i = 0; i < s.keys.size(); ++i)
    keys.set(i, s.keys[i]);
  out.setCreatedAtMs(s.created_at_ms);
}

/// `Secrets` of one session: every call is scoped to the session's environment.
class secrets_impl final : public wire::Secrets::Server {
public:
  secrets_impl(rpc_context& ctx, caf::actor_system& sys, gateway_actor gateway,
               std::string environment)
    : ctx_(ctx), sys_(sys), gateway_(std::move(gateway)), environment_(std::move(environment)) {}

  kj::Promise<void> create(CreateContext ctx) override {
    auto pass = ctx_.gate.enter();
    auto params = ctx.getParams();
    secret_entries entries;
    for (auto kv : params.getEntries())
      entries.emplace_back(kv.getKey(), kv.getValue());
    return bridge::ask<secret_info>(sys_, gateway_, bridge::default_timeout,
                                    secret_create_atom::value, environment_,
                                    std::string{params.getName()}, std::move(entries),
                                    params.getForce())
      .then([ctx](secret_info info) mutable { fill(ctx.getResults().initSecret(), info); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> list(ListContext ctx) override {
    auto pass = ctx_.gate.enter();
    return bridge::ask<std::vector<secret_info>>(sys_, gateway_, bridge::default_timeout,
                                                 secret_list_atom::value, environment_)
      .then([ctx](std::vector<secret_info> all) mutable {
        auto out = ctx.getResults().initSecrets(static_cast<unsigned>(all.size()));
        for (unsigned i = 0; i < all.size(); ++i)
          fill(out[i], all[i]);
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> delete_(DeleteContext ctx) override {
    auto pass = ctx_.gate.enter();
    return bridge::ask<std::string>(sys_, gateway_, bridge::default_timeout,
                                    secret_delete_atom::value, environment_,
                                    std::string{ctx.getParams().getName()})
      .ignoreResult()
      .attach(kj::mv(pass));
  }

private:
  rpc_context& ctx_;
  caf::actor_system& sys_;
  gateway_actor gateway_;
  std::string environment_;
};

class session_impl final : public wire::Session::Server {
public:
  session_impl(rpc_context& ctx, const bridge_targets& targets, session_registry& registry,
               token_info scope)
    : ctx_(ctx), targets_(targets), registry_(registry), scope_(std::move(scope)) {
    registry_.add(scope_.token_id, this);
  }
  ~session_impl() { registry_.remove(scope_.token_id, this); }

  void revoke() { revoked_ = true; }

  kj::Promise<void> info(InfoContext ctx) override {
    auto pass = admit();
    return ask<std::vector<actor_snapshot>>(targets_.admin, admin::list_atom::value)
      .then([this, ctx](std::vector<actor_snapshot> actors) mutable {
        fill(ctx.getResults().initInfo(), targets_.facts, scope_.environment,
             static_cast<uint32_t>(actors.size()));
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> listActors(ListActorsContext ctx) override {
    auto pass = admit();
    return ask<std::vector<actor_snapshot>>(targets_.admin, admin::list_atom::value)
      .then([ctx](std::vector<actor_snapshot> actors) mutable {
        auto [first, last] = page_bounds(
          actors, [](const actor_snapshot& s) { return s.name; }, ctx.getParams().getPage());
        auto results = ctx.getResults();
        auto out = results.initActors(static_cast<unsigned>(last - first));
        for (size_t i = first; i < last; ++i)
          fill(out[static_cast<unsigned>(i - first)], actors[i]);
        results.initPage().setNextCursor(last < actors.size() ? actors[last - 1].name : "");
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> inspectActor(InspectActorContext ctx) override {
    auto pass = admit();
    std::string name = ctx.getParams().getName();
    return ask<actor_snapshot>(targets_.admin, inspect_atom::value, name)
      .then([ctx](actor_snapshot snap) mutable { fill(ctx.getResults().initActor(), snap); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> createToken(CreateTokenContext ctx) override {
    auto pass = admit();
    std::string environment = ctx.getParams().getEnvironment();
    if (environment.empty())
      environment = scope_.environment;
    if (!scope_.admin && environment != scope_.environment)
      throw_error(errc::permission_denied,
                  "this session is scoped to environment '" + scope_.environment
                    + "' and cannot create tokens for '" + environment + "'");
    std::string label = ctx.getParams().getLabel();
    return ask<minted_token>(targets_.gateway, mint_atom::value, environment, label)
      .then([ctx](minted_token token) mutable {
        auto results = ctx.getResults();
        results.setToken(token.secret);
        fill(results.initInfo(), token.info);
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> listTokens(ListTokensContext ctx) override {
    auto pass = admit();
    return ask<std::vector<token_info>>(targets_.gateway, list_atom::value)
      .then([ctx, env = scope_.environment, admin = scope_.admin](
              std::vector<token_info> all) mutable {
        std::vector<token_info> tokens;
        for (auto& t : all)
          if (admin || t.environment == env)
            tokens.push_back(std::move(t));
        auto [first, last] = page_bounds(
          tokens, [](const token_info& t) { return t.token_id; }, ctx.getParams().getPage());
        auto results = ctx.getResults();
        auto out = results.initTokens(static_cast<unsigned>(last - first));
        for (size_t i = first; i < last; ++i)
          fill(out[static_cast<unsigned>(i - first)], tokens[i]);
        results.initPage().setNextCursor(last < tokens.size() ? tokens[last - 1].token_id : "");
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> revokeToken(RevokeTokenContext ctx) override {
    auto pass = admit();
    std::string token_id = ctx.getParams().getTokenId();
    // Scope check: the token must belong to this session's environment.
    return ask<std::vector<token_info>>(targets_.gateway, list_atom::value)
      .then([this, token_id](std::vector<token_info> all) {
        for (const auto& t : all)
          if (t.token_id == token_id && !scope_.admin) {
            if (t.environment != scope_.environment)
              throw_error(errc::permission_denied,
                          "token " + token_id + " belongs to another environment");
            if (t.admin)
              throw_error(errc::permission_denied,
                          "token " + token_id + " is an admin token; only an admin session "
                                                "can revoke it");
          }
        return ask<std::string>(targets_.gateway, revoke_atom::value, token_id);
      })
      .then([this](std::string revoked) {
        registry_.for_each(revoked, [](session_impl& s) { s.revoke(); });
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> functions(FunctionsContext ctx) override {
    auto pass = admit();
    if (!targets_.scheduler)
      throw_error(errc::unavailable, "this shoald runs without the control role; connect to a "
                                     "control node for apps and functions");
    ctx.getResults().setFunctions(
      scheduler::make_functions(ctx_, *targets_.sys, targets_.scheduler, scope_.environment)
        .castAs<wire::Functions>());
    return kj::READY_NOW;
  }

  kj::Promise<void> queues(QueuesContext ctx) override {
    auto pass = admit();
    if (!targets_.queue_broker)
      throw_error(errc::unavailable, "this shoald runs without the control role; connect to a "
                                     "control node for queues and dicts");
    ctx.getResults().setQueues(
      queue_broker::make_queues(ctx_, *targets_.sys, targets_.queue_broker, scope_.environment)
        .castAs<wire::Queues>());
    return kj::READY_NOW;
  }

  kj::Promise<void> images(ImagesContext ctx) override {
    auto pass = admit();
    if (!targets_.image_builder)
      throw_error(errc::unavailable, "this shoald runs without the control role; connect to a "
                                     "control node to build images");
    ctx.getResults().setImages(
      images::make_images(ctx_, *targets_.sys, targets_.image_builder, scope_.environment,
                          scope_.admin)
        .castAs<wire::Images>());
    return kj::READY_NOW;
  }

  kj::Promise<void> blocks(BlocksContext ctx) override {
    auto pass = admit();
    // Whoever holds it can read any chunk whose hash it knows and fill this node's disk with
    // chunks that pass verification: nodes and operators only.
    require_admin("exchange chunks with this node");
    if (!targets_.block_server)
      throw_error(errc::unavailable, "this shoald serves no chunks");
    ctx.getResults().setBlocks(
      block_server::make_block_server_bridge(ctx_, *targets_.sys, targets_.block_server));
    return kj::READY_NOW;
  }

  kj::Promise<void> secrets(SecretsContext ctx) override {
    auto pass = admit();
    ctx.getResults().setSecrets(
      kj::heap<secrets_impl>(ctx_, *targets_.sys, targets_.gateway, scope_.environment));
    return kj::READY_NOW;
  }

  kj::Promise<void> createEnvironment(CreateEnvironmentContext ctx) override {
    auto pass = admit();
    require_admin("create environments");
    return ask<environment_info>(targets_.gateway, env_create_atom::value,
                                 std::string{ctx.getParams().getName()})
      .then([ctx](environment_info e) mutable { fill(ctx.getResults().initEnvironment(), e); })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> listEnvironments(ListEnvironmentsContext ctx) override {
    auto pass = admit();
    return ask<std::vector<environment_info>>(targets_.gateway, env_list_atom::value)
      .then([ctx, env = scope_.environment, admin = scope_.admin](
              std::vector<environment_info> all) mutable {
        std::vector<environment_info> shown;
        for (auto& e : all)
          if (admin || e.name == env)
            shown.push_back(std::move(e));
        auto out = ctx.getResults().initEnvironments(static_cast<unsigned>(shown.size()));
        for (unsigned i = 0; i < shown.size(); ++i)
          fill(out[i], shown[i]);
      })
      .attach(kj::mv(pass));
  }

  kj::Promise<void> deleteEnvironment(DeleteEnvironmentContext ctx) override {
    auto pass = admit();
    require_admin("delete environments");
    auto name = std::string{ctx.getParams().getName()};
    // Apps, queues and dicts live in other services; the gateway checks secrets and tokens.
    return leftovers(name)
      .then([this, name](std::vector<std::string> left) {
        if (!left.empty()) {
          std::string listed;
          for (const auto& l : left)
            listed += (listed.empty() ? "" : ", ") + l;
          throw_error(errc::invalid_argument,
                      "environment '" + name + "' still holds " + listed
                        + "; stop the apps (shoal app stop) and delete the queues and dicts "
                          "(shoal queue delete, shoal dict delete) first");
        }
        return ask<std::string>(targets_.gateway, env_delete_atom::value, name).ignoreResult();
      })
      .attach(kj::mv(pass));
  }

private:
  /// What of `environment` other services still hold: running or deployed apps, queues, dicts
  /// ("app 'web'", "queue 'jobs'"). Empty for a worker-only process.
  kj::Promise<std::vector<std::string>> leftovers(const std::string& environment) {
    // "main" is refused by the gateway whatever it holds.
    if (!targets_.scheduler || !targets_.queue_broker || environment == "main")
      return std::vector<std::string>{};
    return ask<std::vector<scheduler::app_info>>(targets_.scheduler,
                                                 scheduler::list_apps_atom::value, environment)
      .then([this, environment](std::vector<scheduler::app_info> apps) {
        std::vector<std::string> left;
        for (const auto& a : apps)
          if (a.state != "stopped")
            left.push_back("app '" + a.name + "'");
        return ask<std::vector<queue_broker::object_info>>(
                 targets_.queue_broker, queue_broker::list_atom::value,
                 queue_broker::object_kind::queue, environment)
          .then([this, environment, left](std::vector<queue_broker::object_info> queues) mutable {
            for (const auto& q : queues)
              left.push_back("queue '" + q.name + "'");
            return ask<std::vector<queue_broker::object_info>>(
                     targets_.queue_broker, queue_broker::list_atom::value,
                     queue_broker::object_kind::dict, environment)
              .then([left](std::vector<queue_broker::object_info> dicts) mutable {
                for (const auto& d : dicts)
                  left.push_back("dict '" + d.name + "'");
                return left;
              });
          });
      });
  }

  [[noreturn]] static void throw_error(errc code, const std::string& message) {
    kj::throwFatalException(bridge::to_kj_exception(code, message));
  }

  void require_admin(const std::string& what) {
    if (!scope_.admin)
      throw_error(errc::permission_denied,
                  "token " + scope_.token_id + " is scoped to environment '" + scope_.environment
                    + "' and cannot " + what + "; use an admin token (admin.token)");
  }

  /// Every method starts here: refuse when revoked or shutting down, else hold a gate pass.
  kj::Own<call_gate::pass> admit() {
    if (revoked_)
      throw_error(errc::unauthenticated,
                  "token " + scope_.token_id + " was revoked; authenticate again with a valid token");
    return ctx_.gate.enter();
  }

  template <class R, class Handle, class... Ts>
  kj::Promise<R> ask(const Handle& dest, Ts... xs) {
    return bridge::ask<R>(*targets_.sys, dest, bridge::default_timeout, std::move(xs)...);
  }

  rpc_context& ctx_;
  const bridge_targets& targets_;
  session_registry& registry_;
  token_info scope_;
  bool revoked_ = false;
};

class gateway_impl final : public wire::Gateway::Server {
public:
  gateway_impl(rpc_context& ctx, bridge_targets targets)
    : ctx_(ctx), targets_(std::move(targets)) {
    targets_.facts.listen_address = ctx_.address;
  }

  kj::Promise<void> authenticate(AuthenticateContext ctx) override {
    auto pass = ctx_.gate.enter();
    std::string token = ctx.getParams().getToken();
    std::string environment = ctx.getParams().getEnvironment();
    return bridge::ask<token_info>(*targets_.sys, targets_.gateway, bridge::default_timeout,
                                   authenticate_atom::value, token, environment)
      .then([this, ctx](token_info scope) mutable {
        auto results = ctx.getResults();
        fill(results.initInfo(), targets_.facts, scope.environment, 0);
        results.setSession(kj::heap<session_impl>(ctx_, targets_, registry_, std::move(scope)));
      })
      .attach(kj::mv(pass));
  }

private:
  rpc_context& ctx_;
  bridge_targets targets_;
  session_registry registry_;
};

} // namespace

capnp::Capability::Client make_bootstrap(rpc_context& ctx, bridge_targets targets) {
  return kj::heap<gateway_impl>(ctx, std::move(targets));
}

} // namespace shoal::gateway
