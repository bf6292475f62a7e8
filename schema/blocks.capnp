@0xdca1f87a98f3c6c1;
# Chunk transfer between nodes (docs/images.md). Reached from `Session.blocks()`. Chunk ids are
# the 32 raw bytes of SHA-256; every receiver verifies what it gets.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("shoal::wire");

interface ChunkSink {
  # Implemented by the receiver. Batches are sent in request order, each at most ~4 MiB.
  write @0 (ids :List(Data), chunks :List(Data)) -> stream;
}

interface BlockServer {
  missing @0 (ids :List(Data)) -> (ids :List(Data));
  # The ids this server does not hold, in the given order.
  read @1 (ids :List(Data), sink :ChunkSink) -> (chunks :UInt64, bytes :UInt64);
  # Streams the chunks to `sink`, then answers. [not_found] naming the first absent chunk.
  write @2 (ids :List(Data), chunks :List(Data)) -> stream;
  # Stores chunks (verified) pushed by a peer or a client.
}
