#pragma once
/// `zero_filled_wal_fs`: a RocksDB file system whose write-ahead-log files are written with zeros
/// before RocksDB appends to them, so a synced write overwrites blocks the file already has.
///
/// Why: every durable write in Shoal ends in the WAL's `fdatasync`. When the write makes the file
/// longer, `fdatasync` must also make the new size (and any new block) durable: the inode is
/// written too (through the journal on a journaling file system), so the sync costs more device
/// writes than the data alone. On this VM's ext4 an append + `fdatasync` of 120 bytes took
/// ~150-175 µs and an overwrite + `fdatasync` ~90 µs. PostgreSQL zero-fills its WAL segments for
/// the same reason (`wal_init_zero`).
///
/// How: a new `*.log` file is created and `zero_fill_bytes` of zeros are written and synced; RocksDB
/// then writes it from offset 0 (the file is opened the way RocksDB reopens a recycled log, without
/// truncating). When RocksDB's writes come within a quarter of the zeroed end, the next
/// `zero_fill_bytes` are zeroed and synced (one journal commit per chunk, not per write). On close
/// the file is cut to what RocksDB wrote.
///
/// Recovery is unchanged: RocksDB's log reader skips zero blocks (record type 0 is reserved for
/// preallocated files), and a torn record fails its checksum as it would at the end of a shorter
/// file. tests/storage/wal_file_system_test.cpp opens a crash image of such logs with plain RocksDB,
/// and the storage crash test SIGKILLs writers on top of them.
///
/// Other files pass through untouched.

#include <cstddef>
#include <memory>

#include <rocksdb/file_system.h>

namespace shoal::storage {

std::shared_ptr<rocksdb::FileSystem>
zero_filled_wal_fs(std::shared_ptr<rocksdb::FileSystem> base, size_t zero_fill_bytes = 4 << 20);

/// True for the names RocksDB gives write-ahead logs ("000123.log"), with or without a directory.
bool is_wal_file_name(const std::string& path);

} // namespace shoal::storage
