#pragma once
// Internal: the pool of batch slots. It owns slots and nothing else: which slot is free is
// guarded by the owner's lock (the Scheduler's), and a Batch released on any thread hands its
// slot back through the release hook the owner installs (set_release_hook). A Batch keeps the
// pool alive (shared_ptr), so a batch may outlive its Loader: after the hook is cleared, a
// released slot simply waits in the free list until the pool dies.
#include <chrono>
#include <exception>
#include <functional>
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

  /// Recomputes `bytes` from the fields and `size`.
  void count_bytes() {
    bytes = 0;
    for (const auto& f : fields) bytes += f.bytes(size);
  }
};

/// Capacity: `max_slots` slots of slot_bytes() each, allocated on demand (reserve() up front),
/// laid out from one capacity per field (BatchLayout).
class BatchPool : public std::enable_shared_from_this<BatchPool> {
 public:
  BatchPool(std::vector<FieldSpec> fields, uint64_t batch_size,
            std::vector<uint64_t> field_capacity, uint64_t max_slots,
            std::shared_ptr<HostAllocator> allocator);
  ~BatchPool();

  /// Bytes of one slot for these fields and capacities (what a budget is divided by).
  static uint64_t slot_bytes_for(const std::vector<FieldSpec>& fields, uint64_t batch_size,
                                 const std::vector<uint64_t>& field_capacity);
  uint64_t slot_bytes() const { return slot_bytes_; }
  uint64_t max_slots() const { return max_slots_; }
  const std::vector<FieldSpec>& fields() const { return fields_; }

  // All below but release() and set_release_hook(): under the owner's lock.
  /// A free slot, allocating a new one if none is free and the budget allows; nullptr otherwise.
  BatchSlot* take();
  bool can_take() const { return !free_.empty() || slots_.size() < max_slots_; }
  bool exhausted() const { return free_.empty() && slots_.size() >= max_slots_; }
  void put(BatchSlot* slot);
  uint64_t total_slots() const { return slots_.size(); }
  void reserve(uint64_t n);  // allocate up to n slots now

  /// Wraps a slot in a Batch that returns it here on destruction.
  Batch wrap(BatchSlot* slot) { return Batch(shared_from_this(), slot); }

  /// The owner's way back: `hook(slot)` takes the owner's lock and put()s the slot. Empty hook:
  /// the owner is gone. Calls of the hook and its replacement are serialised.
  void set_release_hook(std::function<void(BatchSlot*)> hook);
  /// Called by Batch, on any thread.
  void release(BatchSlot* slot) noexcept;

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
  std::mutex hook_mu_;
  std::function<void(BatchSlot*)> hook_;
};

}  // namespace ferry
