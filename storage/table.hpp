#pragma once
/// The tables of a Shoal state dir. Each is one RocksDB column family named by `to_string`.
/// Append new tables at the end; never rename one (the name is on disk).

#include <array>
#include <cstdint>
#include <string_view>

namespace shoal::storage {

enum class table : uint8_t {
  meta,          ///< schema version, node id, bootstrap facts
  tokens,        ///< token id -> hashed secret, environment, label
  environments,
  apps,
  functions,
  calls,
  inputs,
  outputs,
  images,
  layers,
  chunks,
  volumes,
  queues,
  dicts,
  secrets,
  nodes,
  blobs,         ///< sha256 -> content (shipped code; images move to fs/ chunk packs)
  code,          ///< code id -> manifest of an app's shipped files
};

inline constexpr std::array<table, 18> all_tables = {
  table::meta,   table::tokens, table::environments, table::apps,   table::functions,
  table::calls,  table::inputs, table::outputs,      table::images, table::layers,
  table::chunks, table::volumes, table::queues,      table::dicts,  table::secrets,
  table::nodes,  table::blobs,  table::code,
};

constexpr std::string_view to_string(table t) noexcept {
  constexpr std::string_view names[] = {
    "meta",  "tokens", "environments", "apps",    "functions", "calls",   "inputs", "outputs",
    "images", "layers", "chunks",      "volumes", "queues",    "dicts",   "secrets", "nodes",
    "blobs", "code",
  };
  return names[static_cast<size_t>(t)];
}

} // namespace shoal::storage
