#pragma once
// Internal: the pool of batch slots and the synchronisation state the loader shares with every
// Batch it hands out. A Batch keeps the pool alive (shared_ptr), so a batch may outlive its
// Loader; releasing it after the loader is gone simply frees nothing until the pool dies.
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <vector>

#include "ferry/batch.h"

namespace ferry {

struct BatchSlot {
  void* memory = nullptr;
  uint64_t memory_bytes = 0;
  std::vector<FieldBuffer> fields;
  std::vector<uint64_t> sample_ids;
  uint64_t size = 0, epoch = 0, index = 0;
  uint64_t bytes = 0, skipped = 0;  // for metrics, counted when the batch is delivered
  uint64_t truncated = 0;           // samples already lent to the batch before (on_error=skip)
  std::exception_ptr error;         // on_error=raise: thrown by next() when this batch is reached
  std::chrono::steady_clock::time_point claimed;
};

/// Capacity: `max_slots` slots of `slot_bytes` each, `initial` allocated up front, more only
/// when the consumer holds so many batches that workers would otherwise starve.
/// Locking: `mu` guards the free list and slot counts, and — by the loader's choice — all of
/// the loader's scheduling state, so one condition-variable predicate sees everything.
class BatchPool : public std::enable_shared_from_this<BatchPool> {
 public:
  BatchPool(std::vector<FieldSpec> fields, uint64_t batch_size,
            std::vector<uint64_t> field_capacity, uint64_t max_slots,
            std::shared_ptr<HostAllocator> allocator);
  ~BatchPool();

  uint64_t slot_bytes() const { return slot_bytes_; }
  uint64_t max_slots() const { return max_slots_; }
  const std::vector<FieldSpec>& fields() const { return fields_; }

  // All below: call with `mu` held.
  /// A free slot, allocating a new one if none is free and the budget allows; nullptr otherwise.
  BatchSlot* take();
  bool can_take() const { return !free_.empty() || slots_.size() < max_slots_; }
  void put(BatchSlot* slot);
  uint64_t total_slots() const { return slots_.size(); }
  void reserve(uint64_t n);  // allocate up to n slots now

  /// Wraps a slot in a Batch that returns it here on destruction.
  Batch wrap(BatchSlot* slot) { return Batch(shared_from_this(), slot); }
  /// Called by Batch (takes `mu`).
  void release(BatchSlot* slot) noexcept;

  std::mutex mu;
  std::condition_variable work_cv;   // workers: a slot was freed, the window moved, or stop
  std::condition_variable ready_cv;  // consumer: a batch became ready, or stop

 private:
  BatchSlot* allocate_slot();
  std::vector<FieldSpec> fields_;
  uint64_t batch_size_;
  std::vector<uint64_t> field_capacity_;  // bytes per field
  std::vector<uint64_t> field_offset_;    // offset of each field's data in a slot's memory
  uint64_t slot_bytes_ = 0;
  uint64_t max_slots_;
  std::shared_ptr<HostAllocator> allocator_;
  std::vector<std::unique_ptr<BatchSlot>> slots_;
  std::vector<BatchSlot*> free_;
};

}  // namespace ferry
