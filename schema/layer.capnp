@0xee225738165d021b;
# A layer manifest (fs/layer.hpp, docs/images.md): stored as one chunk, its chunk id is the layer
# digest. Entries are sorted by path (byte order).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("shoal::wire");

enum EntryKind {
  file @0;
  directory @1;
  symlink @2;
  hardlink @3;
  whiteout @4;
  opaqueDirectory @5;
}

struct ChunkRef {
  id @0 :Data;          # 32 bytes, SHA-256
  size @1 :UInt32;
}

struct Entry {
  path @0 :Text;
  kind @1 :EntryKind;
  mode @2 :UInt32;
  uid @3 :UInt32;
  gid @4 :UInt32;
  size @5 :UInt64;
  mtimeNs @6 :Int64;
  linkTarget @7 :Text;
  chunks @8 :List(ChunkRef);
}

struct Layer {
  entries @0 :List(Entry);
}
