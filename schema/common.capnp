@0xc2da1ef7aaf3f219;
# Conventions shared by every Shoal schema. The rules for evolving schemas are in
# docs/schema-conventions.md; read them before changing any .capnp file.
#
# Errors: a failed call raises a Cap'n Proto exception whose description starts with
# "[<errc name>] " followed by a sentence a user can act on, e.g. "[not_found] no actor named
# 'gatway'; `shoal actor list` shows the names". The names are those of `shoal::errc`
# (runtime/errc.hpp). The exception type follows the code: unavailable -> OVERLOADED or
# DISCONNECTED, everything else -> FAILED.
#
# Ids: object ids are Text with a kind prefix and a random suffix ("fc-7Qx3...", "tok-4f2a...");
# names chosen by users are Text, unique within an environment.
#
# Paging: list calls take a PageRequest and return a PageInfo; an empty `nextCursor` means the
# listing is complete.
#
# Streaming: bulk data flows through `-> stream` methods; results the server pushes arrive on a
# capability the client passes in (never by long polling).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("shoal::wire");

struct PageRequest {
  cursor @0 :Text;         # empty: from the beginning
  limit @1 :UInt32;        # 0: the server's default (100); the server may return fewer
}

struct PageInfo {
  nextCursor @0 :Text;     # empty when there is nothing more
}

struct KeyValue {
  key @0 :Text;
  value @1 :Text;
}

struct Counter {
  name @0 :Text;
  value @1 :Int64;
}
