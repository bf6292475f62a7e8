@0xa5d2ddaabb4a8003;
# Queues and dicts (docs/queues.md). Reached from `Session.queues()`; every object is named within
# the session's environment, and a session can reach only its own environment's objects.
#
# Payloads (queue items, dict keys and values) are opaque bytes to the server: the SDK
# cloudpickles them. Limits (item size, items per partition, ...) are enforced by the server;
# a call that breaks one fails with the limit in its message ([invalid_argument] for a request
# that can never succeed, [resource_exhausted] for a full partition).
#
# Durability: every mutation (put, get — which consumes —, pop, clear, delete, ...) returns only
# once it is on stable storage; concurrent mutations share one fsync (group commit).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("shoal::wire");

using Common = import "common.capnp";

enum ObjectKind {
  queue @0;
  dict @1;
}

struct DataObjectInfo {
  name @0 :Text;                 # unique per kind within the environment
  kind @1 :ObjectKind;
  ephemeral @2 :Bool;            # deleted when its creator goes away
  createdAtMs @3 :Int64;
  itemCount @4 :UInt64;          # queue: items in every partition; dict: entries
  byteCount @5 :UInt64;          # payload bytes of those items (dict: values only)
  partitionCount @6 :UInt32;     # queue: live partitions (the default one included); dict: 0
  environment @7 :Text;
}

struct QueueItem {
  seq @0 :UInt64;                # position within its partition (strictly increasing)
  data @1 :Data;
}

struct DictEntry {
  key @0 :Data;
  value @1 :Data;                # empty in key-only listings
}

interface EphemeralObject {
  # Held by the creator of an ephemeral queue or dict. Dropping it (explicitly, or because the
  # connection ends) deletes the object and everything in it.
  info @0 () -> (info :DataObjectInfo);
}

interface Queues {
  # -- objects (both kinds) --------------------------------------------------------------------
  lookup @0 (kind :ObjectKind, name :Text, createIfMissing :Bool) -> (info :DataObjectInfo);
  # [not_found] when it does not exist and createIfMissing is false.

  create @1 (kind :ObjectKind, name :Text) -> (info :DataObjectInfo);
  # [already_exists] when the name is taken.

  createEphemeral @2 (kind :ObjectKind) -> (info :DataObjectInfo, handle :EphemeralObject);
  # A fresh object with a generated name ("eq-..." / "ed-..."), deleted when `handle` is dropped.

  delete @3 (kind :ObjectKind, name :Text) -> ();
  # Deletes the object and its content. [not_found].

  list @4 (kind :ObjectKind, page :Common.PageRequest)
      -> (objects :List(DataObjectInfo), page :Common.PageInfo);
  # Named objects only (ephemeral ones are not listed), sorted by name.

  # -- queues ----------------------------------------------------------------------------------
  # `partition` "" is the default partition. A partition is cleared `partitionTtlMs` after the
  # last put into it (0: the server's default, 24 h).

  queuePut @5 (name :Text, partition :Text, items :List(Data), partitionTtlMs :UInt64) -> ();
  # All or nothing; returns once the items are durable. [resource_exhausted] when the partition
  # would hold more than its limit; [invalid_argument] for an item over the size limit.

  queueGet @6 (name :Text, partition :Text, maxItems :UInt32, blockTimeoutMs :UInt64)
      -> (items :List(Data));
  # Removes and returns up to maxItems items (at least 1) from the head, durably. When the
  # partition is empty the call waits up to blockTimeoutMs for items (0: returns at once); waiting
  # calls are served in arrival order. An empty list means the wait ended without items.

  queueLen @7 (name :Text, partition :Text, total :Bool) -> (count :UInt64);
  # Items in `partition`, or in every partition when `total`.

  queueClear @8 (name :Text, partition :Text, all :Bool) -> ();

  queuePeek @9 (name :Text, partition :Text, cursor :UInt64, limit :UInt32, blockTimeoutMs :UInt64)
      -> (items :List(QueueItem), nextCursor :UInt64);
  # Reads without consuming: items with seq >= cursor, in order. Pass `nextCursor` back to go on.
  # When there is none yet the call waits up to blockTimeoutMs for one.

  # -- dicts -----------------------------------------------------------------------------------
  dictGet @10 (name :Text, key :Data) -> (found :Bool, value :Data);
  dictPut @11 (name :Text, key :Data, value :Data, skipIfExists :Bool) -> (written :Bool);
  # written = false only when skipIfExists and the key was present.
  dictUpdate @12 (name :Text, entries :List(DictEntry)) -> ();
  # All or nothing.
  dictPop @13 (name :Text, key :Data) -> (found :Bool, value :Data);
  dictContains @14 (name :Text, key :Data) -> (found :Bool);
  dictLen @15 (name :Text) -> (count :UInt64);
  dictScan @16 (name :Text, cursor :Data, limit :UInt32, withValues :Bool)
      -> (entries :List(DictEntry), nextCursor :Data, done :Bool);
  # Entries in key-byte order after `cursor` (empty: from the start). Pass nextCursor back until
  # `done`.
  dictClear @17 (name :Text) -> ();
}
