#pragma once
// Internal: the on-disk cache tier of the remote source (remote.h RemoteOptions::cache_dir).
#include <atomic>
#include <cstdint>
#include <span>
#include <string>

namespace ferry::detail {

/// Blocks of one remote object, one file each under <dir>/<key>/, where key hashes the URL, the
/// ETag/Last-Modified, the size and the block size: a changed object gets a fresh key, so two
/// versions never mix, and a restart finds its blocks again.
///
/// Entries: a 16-byte header (magic, length, xxh64 of the payload) and the payload, written to a
/// unique temp file, fsync'ed and renamed into place: a reader sees a whole entry or none, and a
/// process killed mid-write leaves only a temp file (removed by the next eviction scan). Every
/// hit is verified against its checksum; a bad entry is deleted and counts as a miss.
///
/// Policy: LRU by file mtime, touched on every hit. The eviction scan (all keys of the
/// directory, under flock on <dir>/.lock so ranks of a node do not evict concurrently) deletes
/// the oldest entries until the total is below 90% of the budget. Processes sharing a directory
/// may fetch the same block twice; both writes are whole and identical, so the rename race is
/// harmless.
class DiskCache {
 public:
  DiskCache(std::string dir, uint64_t budget_bytes, const std::string& identity);

  /// Fills `dst` (exactly its size) from the cache; false on a miss or a bad entry.
  bool get(uint64_t block, std::span<uint8_t> dst);
  /// Stores the block (best effort: a full or read-only disk only loses the caching).
  void put(uint64_t block, std::span<const uint8_t> data);

 private:
  std::string entry_path(uint64_t block) const;
  void evict();

  std::string root_, dir_;
  uint64_t budget_;
  std::atomic<uint64_t> written_since_scan_{0};
  std::atomic<uint64_t> last_total_{0};
  std::atomic<bool> evicting_{false};
};

}  // namespace ferry::detail
