@0xf6e0aee897a6707f;
# The client's entry point. A fresh connection can do one thing: authenticate. Everything else
# comes from the Session capability that authentication returns, scoped to one environment.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("shoal::wire");

using Common = import "common.capnp";
using Functions = import "functions.capnp".Functions;
using Queues = import "queues.capnp".Queues;
using Images = import "images.capnp".Images;
using BlockServer = import "blocks.capnp".BlockServer;

interface Gateway {
  # Bootstrap capability of every shoald. Fails with [unauthenticated] for an empty, malformed,
  # unknown or revoked token.
  authenticate @0 (token :Text, clientVersion :Text, environment :Text)
      -> (session :Session, info :ClusterInfo);
  # `environment` selects the session's environment: empty means the token's own (for an admin
  # token, "main"). A scoped token asking for another environment fails with [permission_denied];
  # an environment that does not exist fails with [not_found].
}

struct ClusterInfo {
  version @0 :Text;              # shoald's version, "0.1.0"
  nodeId @1 :Text;               # stable id of this node, kept in the state dir
  roles @2 :List(Text);          # the roles this process hosts: "control", "worker"
  listenAddress @3 :Text;        # host:port the RPC server listens on
  stateDir @4 :Text;
  pid @5 :UInt32;
  startedAtMs @6 :Int64;         # Unix epoch, milliseconds
  environment @7 :Text;          # the environment this session is scoped to
  schemaVersion @8 :UInt32;      # state dir schema version
  actorCount @9 :UInt32;
}

struct ActorSnapshot {
  # What every actor reports when inspected (see runtime/inspect.hpp).
  name @0 :Text;                 # unique within the process: "gateway", "storage_writer"
  kind @1 :Text;                 # the service it implements: "gateway", "node_agent"
  state @2 :Text;                # its lifecycle state, as in its state diagram: "running"
  mailboxDepth @3 :UInt64;       # messages waiting when the snapshot was taken
  counters @4 :List(Common.Counter);
  details @5 :List(Common.KeyValue);
}

struct TokenInfo {
  tokenId @0 :Text;              # public part of the token, "tok-<hex>"
  environment @1 :Text;
  label @2 :Text;
  createdAtMs @3 :Int64;
  admin @4 :Bool;                # may open a session in any environment (the bootstrap token)
}

struct EnvironmentInfo {
  name @0 :Text;
  createdAtMs @1 :Int64;         # Unix epoch, milliseconds
}

interface Session {
  info @0 () -> (info :ClusterInfo);

  listActors @1 (page :Common.PageRequest) -> (actors :List(ActorSnapshot), page :Common.PageInfo);

  inspectActor @2 (name :Text) -> (actor :ActorSnapshot);
  # [not_found] when no actor has that name.

  createToken @3 (environment :Text, label :Text) -> (token :Text, info :TokenInfo);
  # The secret `token` is returned exactly once; the server keeps only its hash.
  # An empty environment means the session's own.

  listTokens @4 (page :Common.PageRequest) -> (tokens :List(TokenInfo), page :Common.PageInfo);

  revokeToken @5 (tokenId :Text) -> ();
  # [not_found] for an unknown id. Sessions opened with the token stop working.

  functions @6 () -> (functions :Functions);
  # Apps, functions and calls in this session's environment (schema/functions.capnp).

  queues @7 () -> (queues :Queues);
  # Queues and dicts in this session's environment (schema/queues.capnp).

  secrets @8 () -> (secrets :Secrets);
  # Named secrets in this session's environment (create, list names and keys, delete).

  createEnvironment @9 (name :Text) -> (environment :EnvironmentInfo);
  # Admin sessions only ([permission_denied] otherwise). [already_exists], [invalid_argument].
  listEnvironments @10 () -> (environments :List(EnvironmentInfo));
  # Every environment for an admin session; a scoped session sees only its own.
  deleteEnvironment @11 (name :Text) -> ();
  # Admin sessions only. [invalid_argument] for "main" and for an environment that still holds
  # running or deployed apps, queues, dicts, secrets or tokens (the message names them);
  # [not_found] for an unknown name. Sessions already open in it stay valid until they reconnect.

  images @12 () -> (images :Images);
  # Building, listing and removing images (docs/images.md). Images are shared by environments.

  blocks @13 () -> (blocks :BlockServer);
  # This node's chunk store, for peers and clients moving image and volume data.
}

struct SecretInfo {
  # What the server tells about a secret: never its values.
  name @0 :Text;
  environment @1 :Text;
  keys @2 :List(Text);           # the variable names it sets, sorted
  createdAtMs @3 :Int64;         # Unix epoch, milliseconds
}

interface Secrets {
  # Named secrets of the session's environment (docs/sdk.md "Secrets"). Values go in, never out:
  # containers read them server-side at start (the `@secret` entries of FunctionSpec.env).
  create @0 (name :Text, entries :List(Common.KeyValue), force :Bool) -> (secret :SecretInfo);
  # [already_exists] unless `force` (which replaces every key); [invalid_argument] for a bad name
  # or variable name. Answered once durable.
  list @1 () -> (secrets :List(SecretInfo));
  delete @2 (name :Text) -> ();
  # [not_found] for an unknown name. Answered once durable.
}
