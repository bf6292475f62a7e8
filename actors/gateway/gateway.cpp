#include "actors/gateway/gateway_actor.hpp"

#include <chrono>

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "runtime/errc.hpp"
#include "runtime/log.hpp"

namespace shoal::gateway {

namespace {

constexpr auto write_deadline = std::chrono::seconds(30);

struct gateway_state {
  const storage::store* db = nullptr;
  storage::writer_actor writer;
  uint64_t authentications = 0;
  uint64_t rejections = 0;
  uint64_t tokens_minted = 0;
  uint64_t tokens_revoked = 0;
  uint64_t secrets_created = 0;
  uint64_t secrets_deleted = 0;
  static inline const char* name = "gateway";
};

using self_ptr = gateway_actor::stateful_pointer<gateway_state>;

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

gateway_actor::behavior_type gateway_impl(self_ptr self, const storage::store* db,
                                          storage::writer_actor writer) {
  self->state.db = db;
  self->state.writer = std::move(writer);
  return {
    [self](authenticate_atom, const std::string& token,
           const std::string& requested) -> caf::result<token_info> {
      token_registry tokens{*self->state.db};
      auto reject = [&](caf::error err) {
        ++self->state.rejections;
        log::warn("auth_rejected")
          .kv("token_id", token_registry::id_of(token))
          .kv("reason", message_of(err));
        return err;
      };
      auto info = tokens.verify(token);
      if (!info)
        return reject(info.error());
      std::string environment = requested;
      if (environment.empty())
        environment = info->admin ? std::string{main_environment} : info->environment;
      if (!info->admin && environment != info->environment)
        return reject(make_error(errc::permission_denied,
                                 "token " + info->token_id + " is scoped to environment '"
                                   + info->environment + "'; it cannot open '" + environment
                                   + "'"));
      auto found = environment_registry{*self->state.db}.exists(environment);
      if (!found)
        return reject(found.error());
      if (!*found)
        return reject(make_error(errc::not_found, environment_registry::missing(environment)));
      info->environment = environment;
      ++self->state.authentications;
      log::info("auth_accepted").kv("token_id", info->token_id).kv("environment", info->environment);
      return std::move(*info);
    },
    [self](mint_atom, const std::string& environment,
           const std::string& label) -> caf::result<minted_token> {
      token_registry tokens{*self->state.db};
      if (token_registry::valid_environment(environment)) {
        auto found = environment_registry{*self->state.db}.exists(environment);
        if (!found)
          return found.error();
        if (!*found)
          return make_error(errc::not_found, environment_registry::missing(environment));
      }
      storage::write_batch batch;
      auto minted = tokens.mint(environment, label, now_ms(), batch);
      if (!minted)
        return minted.error();
      auto rp = self->make_response_promise<minted_token>();
      self->request(self->state.writer, write_deadline, storage::write_atom::value, std::move(batch))
        .then(
          [self, rp, token = std::move(*minted)]() mutable {
            ++self->state.tokens_minted;
            log::info("token_minted")
              .kv("token_id", token.info.token_id)
              .kv("environment", token.info.environment);
            rp.deliver(std::move(token));
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [self](list_atom) -> caf::result<std::vector<token_info>> {
      token_registry tokens{*self->state.db};
      auto all = tokens.list();
      if (!all)
        return all.error();
      return std::move(*all);
    },
    [self](revoke_atom, const std::string& token_id) -> caf::result<std::string> {
      token_registry tokens{*self->state.db};
      storage::write_batch batch;
      if (auto err = tokens.revoke(token_id, batch))
        return err;
      auto rp = self->make_response_promise<std::string>();
      self->request(self->state.writer, write_deadline, storage::write_atom::value, std::move(batch))
        .then(
          [self, rp, token_id]() mutable {
            ++self->state.tokens_revoked;
            log::info("token_revoked").kv("token_id", token_id);
            rp.deliver(token_id);
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [self](secret_create_atom, const std::string& environment, const std::string& name,
           const secret_entries& entries, bool force) -> caf::result<secret_info> {
      secret_store secrets{*self->state.db};
      storage::write_batch batch;
      auto info = secrets.create(environment, name, entries, force, now_ms(), batch);
      if (!info)
        return info.error();
      auto rp = self->make_response_promise<secret_info>();
      self->request(self->state.writer, write_deadline, storage::write_atom::value, std::move(batch))
        .then(
          [self, rp, info = std::move(*info)]() mutable {
            ++self->state.secrets_created;
            log::info("secret_created")
              .kv("name", info.name)
              .kv("environment", info.environment)
              .kv("keys", static_cast<int64_t>(info.keys.size()));
            rp.deliver(std::move(info));
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [self](secret_list_atom,
           const std::string& environment) -> caf::result<std::vector<secret_info>> {
      auto all = secret_store{*self->state.db}.list(environment);
      if (!all)
        return all.error();
      return std::move(*all);
    },
    [self](secret_delete_atom, const std::string& environment,
           const std::string& name) -> caf::result<std::string> {
      storage::write_batch batch;
      if (auto err = secret_store{*self->state.db}.remove(environment, name, batch))
        return err;
      auto rp = self->make_response_promise<std::string>();
      self->request(self->state.writer, write_deadline, storage::write_atom::value, std::move(batch))
        .then(
          [self, rp, name, environment]() mutable {
            ++self->state.secrets_deleted;
            log::info("secret_deleted").kv("name", name).kv("environment", environment);
            rp.deliver(name);
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [self](env_create_atom, const std::string& name) -> caf::result<environment_info> {
      storage::write_batch batch;
      auto info = environment_registry{*self->state.db}.create(name, now_ms(), batch);
      if (!info)
        return info.error();
      auto rp = self->make_response_promise<environment_info>();
      self->request(self->state.writer, write_deadline, storage::write_atom::value, std::move(batch))
        .then(
          [rp, info = std::move(*info)]() mutable {
            log::info("environment_created").kv("name", info.name);
            rp.deliver(std::move(info));
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [self](env_list_atom) -> caf::result<std::vector<environment_info>> {
      auto all = environment_registry{*self->state.db}.list();
      if (!all)
        return all.error();
      return std::move(*all);
    },
    [self](env_delete_atom, const std::string& name) -> caf::result<std::string> {
      storage::write_batch batch;
      if (auto err = environment_registry{*self->state.db}.remove(name, batch))
        return err;
      auto rp = self->make_response_promise<std::string>();
      self->request(self->state.writer, write_deadline, storage::write_atom::value, std::move(batch))
        .then(
          [rp, name]() mutable {
            log::info("environment_deleted").kv("name", name);
            rp.deliver(name);
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [self](inspect_atom) -> actor_snapshot {
      auto s = snapshot_of(self, "gateway", "gateway", "running");
      s.counter("authentications", static_cast<int64_t>(self->state.authentications))
        .counter("rejections", static_cast<int64_t>(self->state.rejections))
        .counter("tokens_minted", static_cast<int64_t>(self->state.tokens_minted))
        .counter("tokens_revoked", static_cast<int64_t>(self->state.tokens_revoked))
        .counter("secrets_created", static_cast<int64_t>(self->state.secrets_created))
        .counter("secrets_deleted", static_cast<int64_t>(self->state.secrets_deleted));
      return s;
    },
  };
}

} // namespace

gateway_actor spawn_gateway(caf::actor_system& sys, const storage::store& db,
                            storage::writer_actor writer) {
  return sys.spawn(gateway_impl, &db, std::move(writer));
}

} // namespace shoal::gateway
