#pragma once
// The GPU stage's ring of device buffers (slots) and the lock the DeviceLoader's scheduling shares
// with every DeviceBatch. The slot's metadata exists in every build (DeviceBatch reads it); its
// CUDA handles only with CUDA.
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "ferry/cuda.h"

#ifndef FERRY_HAVE_CUDA
#define FERRY_HAVE_CUDA 0
#endif
#if FERRY_HAVE_CUDA
#include "cuda/handles.h"
#endif

namespace ferry {

#if FERRY_HAVE_CUDA
using cuda_detail::DeviceMemory;
using cuda_detail::Event;
#endif

/// One device buffer of the ring and the batch it currently holds. Owned by DeviceRing; a slot
/// belongs to exactly one party at a time — the free list, the copier (while it copies), the
/// ready queue, or the consumer (a DeviceBatch) — so its fields need no lock of their own.
struct DeviceSlot {
  uint64_t size = 0, epoch = 0, index = 0, bytes = 0;
  std::vector<uint64_t> sample_ids;
  std::vector<DeviceField> fields;
  std::vector<std::vector<uint64_t>> host_offsets;  // per field (bytes fields only)
  CudaStream consumer = nullptr;                    // the stream next() handed the batch out on
#if FERRY_HAVE_CUDA
  explicit DeviceSlot(uint64_t memory_bytes)
      : memory(memory_bytes),
        copy_start(cudaEventDefault),
        // Blocking sync: the copier sleeps in cudaEventSynchronize instead of spinning a core.
        copy_done(cudaEventBlockingSync),
        released(cudaEventDisableTiming) {}
  DeviceMemory memory;
  Event copy_start, copy_done;    // bracket the copy on the copy stream (timed)
  Event released;                 // recorded on `consumer` when the batch is released
  bool release_recorded = false;  // the next copy into this slot must wait for `released`
  std::vector<uint64_t> data_offset, offsets_offset, capacity;  // per field, in `memory`
#endif
};

/// The ring of device buffers and the lock and condition variables the DeviceLoader's scheduling
/// shares with every DeviceBatch (as BatchPool does for the host loader). Kept alive by the
/// loader and by each DeviceBatch, so a batch may outlive its loader.
class DeviceRing : public std::enable_shared_from_this<DeviceRing> {
 public:
  explicit DeviceRing(int device) : device_(device) {}
  ~DeviceRing();
  DeviceRing(const DeviceRing&) = delete;
  DeviceRing& operator=(const DeviceRing&) = delete;

  int device() const { return device_; }
  DeviceBatch wrap(DeviceSlot* slot) { return DeviceBatch(shared_from_this(), slot); }
  /// A DeviceBatch gives its slot back (any thread; takes `mu`).
  void release(DeviceSlot* slot) noexcept;

  std::vector<FieldSpec> fields;  // what DeviceField::spec points at: outlives the host loader
  std::mutex mu;
  std::condition_variable copier_cv;  // copier: a slot was freed, ready made room, set_epoch, stop
  std::condition_variable
      consumer_cv;  // consumer: an item is ready, the copier waits or failed, stop
  // Guarded by mu:
  std::vector<std::unique_ptr<DeviceSlot>> slots;
  std::vector<DeviceSlot*> free;
  uint64_t held = 0;  // slots the consumer holds

 private:
  int device_;
};

}  // namespace ferry
