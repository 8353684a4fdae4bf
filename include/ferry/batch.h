#pragma once
/// \file batch.h
/// \brief Batches and the buffer pool they come from.
///
/// A Batch holds one contiguous buffer per field: ndarray fields as a [size, ...shape] array,
/// bytes fields as concatenated bytes plus size+1 offsets. Its memory belongs to the loader's
/// pool; it returns to the pool when the Batch is destroyed or release()d — never earlier, so a
/// held batch is never overwritten. Batch is move-only and may be destroyed on any thread.
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "ferry/format.h"

namespace ferry {

/// Allocates the pool's host memory. The default uses aligned_alloc (2 MiB aligned for large
/// buffers, + MADV_HUGEPAGE when asked for); the CUDA build supplies a pinned allocator.
class HostAllocator {
 public:
  virtual ~HostAllocator() = default;
  virtual void* allocate(uint64_t bytes) = 0;
  virtual void deallocate(void* p, uint64_t bytes) noexcept = 0;
  virtual std::string_view name() const = 0;
};
/// `huge_pages`: advise MADV_HUGEPAGE on buffers of 2 MiB or more. Off by default: with the
/// common THP setting defrag=madvise, the first touch of each advised 2 MiB page may stall in
/// direct compaction (measured: a 38 MB first batch took 12–136 ms with it, 25 ms without),
/// while batch buffers are written and read sequentially, where 4 KiB pages cost little.
std::shared_ptr<HostAllocator> default_host_allocator(bool huge_pages = false);

/// One field's buffer inside a batch.
struct FieldBuffer {
  const FieldSpec* spec = nullptr;
  uint8_t* data = nullptr;      ///< ndarray: size × fixed_bytes; bytes: offsets[size] bytes
  uint64_t capacity = 0;        ///< bytes available at data
  uint64_t* offsets = nullptr;  ///< bytes fields: size+1 entries (offsets[0] == 0); else nullptr
  void* device_data = nullptr;  ///< set by the CUDA stage when the batch lives on a GPU
  uint64_t bytes(uint64_t size) const {
    return offsets ? offsets[size] : size * spec->fixed_bytes();
  }
};

/// Internal: a pool slot (buffers + metadata). Defined in src/.
struct BatchSlot;
class BatchPool;

class Batch {
 public:
  Batch() = default;
  Batch(Batch&&) noexcept;
  Batch& operator=(Batch&&) noexcept;
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;
  ~Batch();

  /// False for the empty Batch that marks the end of an epoch.
  explicit operator bool() const { return slot_ != nullptr; }
  uint64_t size() const;  ///< samples in the batch
  uint64_t epoch() const;
  uint64_t index() const;  ///< position of the batch in its epoch (this rank's batches)
  std::span<const uint64_t> sample_ids() const;
  size_t num_fields() const;
  const FieldBuffer& field(size_t i) const;
  const FieldBuffer& field(std::string_view name) const;
  /// [size, ...shape] for ndarray fields, [bytes] for bytes fields.
  std::vector<uint64_t> shape(size_t i) const;
  /// Returns the buffers to the pool now (the Batch becomes empty).
  void release() noexcept;

 private:
  friend class BatchPool;
  Batch(std::shared_ptr<BatchPool> pool, BatchSlot* slot) : pool_(std::move(pool)), slot_(slot) {}
  std::shared_ptr<BatchPool> pool_;
  BatchSlot* slot_ = nullptr;
};

}  // namespace ferry
