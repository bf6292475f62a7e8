#pragma once
/// `gateway`: authentication and token administration. The capnp side of the gateway (the
/// bootstrap `Gateway` and the `Session`s it hands out) lives in gateway_bridge.hpp and forwards
/// here; this actor owns the token registry and persists through the storage writer.
///
/// State diagram: running --exit--> stopped. Token lifecycle: minted (durable before the secret is
/// returned) --revoke--> gone (durable before the revoke is acknowledged).

#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/typed_actor.hpp>

#include "actors/gateway/environment_registry.hpp"
#include "actors/gateway/secret_store.hpp"
#include "actors/gateway/token_registry.hpp"
#include "runtime/inspect.hpp"
#include "storage/writer.hpp"

namespace shoal::gateway {

using authenticate_atom = caf::atom_constant<caf::atom("auth")>;
using mint_atom = caf::atom_constant<caf::atom("mint")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using revoke_atom = caf::atom_constant<caf::atom("revoke")>;
using secret_create_atom = caf::atom_constant<caf::atom("seccreate")>;
using secret_list_atom = caf::atom_constant<caf::atom("seclist")>;
using secret_delete_atom = caf::atom_constant<caf::atom("secdelete")>;
using env_create_atom = caf::atom_constant<caf::atom("envcreate")>;
using env_list_atom = caf::atom_constant<caf::atom("envlist")>;
using env_delete_atom = caf::atom_constant<caf::atom("envdelete")>;

/// - `authenticate_atom, token, environment` -> the token's info with `environment` set to the
///   session's environment ("" = the token's own, "main" for an admin token); errc::unauthenticated,
///   errc::permission_denied (a scoped token asking for another environment), errc::not_found.
/// - `mint_atom, environment, label` -> a new (non-admin) token, once durable; errc::not_found for
///   an environment that does not exist.
/// - `env_create_atom, name` / `env_list_atom` / `env_delete_atom, name` -> environments
///   (environment_registry.hpp), writes answered once durable.
/// - `list_atom` -> every token's info.
/// - `revoke_atom, token_id` -> the revoked token's id, once durable; errc::not_found.
/// - `secret_create_atom, environment, name, entries, force` -> the secret's info (no values),
///   once durable; errc::already_exists unless force (secret_store.hpp).
/// - `secret_list_atom, environment` -> the environment's secrets (names and keys only).
/// - `secret_delete_atom, environment, name` -> the name, once durable; errc::not_found.
/// Secret values are never logged, inspected or put in an error.
using gateway_actor
  = caf::typed_actor<caf::replies_to<authenticate_atom, std::string, std::string>::with<token_info>,
                     caf::replies_to<mint_atom, std::string, std::string>::with<minted_token>,
                     caf::replies_to<list_atom>::with<std::vector<token_info>>,
                     caf::replies_to<revoke_atom, std::string>::with<std::string>,
                     caf::replies_to<secret_create_atom, std::string, std::string, secret_entries,
                                     bool>::with<secret_info>,
                     caf::replies_to<secret_list_atom, std::string>::with<std::vector<secret_info>>,
                     caf::replies_to<secret_delete_atom, std::string, std::string>::with<std::string>,
                     caf::replies_to<env_create_atom, std::string>::with<environment_info>,
                     caf::replies_to<env_list_atom>::with<std::vector<environment_info>>,
                     caf::replies_to<env_delete_atom, std::string>::with<std::string>,
                     inspect_handler>;

/// `db` must outlive the actor; writes go through `writer`.
gateway_actor spawn_gateway(caf::actor_system& sys, const storage::store& db,
                            storage::writer_actor writer);

} // namespace shoal::gateway
