#pragma once
// The device stage: what the copier thread does with each host batch to fill a ring slot on the
// copy stream. Today a memcpy per field (MemcpyStage); a GPU decode stage (nvJPEG) is another
// implementation of the same interface, so the copier, ring and consumer stay as they are.
#include <memory>
#include <vector>

#include "cuda/ring.h"
#include "ferry/batch.h"

namespace ferry {

class DeviceStage {
 public:
  virtual ~DeviceStage() = default;
  /// Copier thread only; `slot` is the copier's until it is queued. Enqueues on `stream`, after
  /// the slot's release event (the consumer's last use), the work that turns `host` into the
  /// slot's contents, bracketed by the slot's copy_start/copy_done events, and fills the slot's
  /// metadata (fields, size, sample ids). Never waits for the GPU. Returns true when the slot's
  /// previous batch was still in use on the device (the work queued behind it). Throws CudaError.
  virtual bool issue(DeviceSlot& slot, const Batch& host, cudaStream_t stream) = 0;
};

/// Copies each field (and the offsets of bytes fields) as it is. `fields` outlives the stage
/// (the ring's copy, which DeviceField::spec points at).
std::unique_ptr<DeviceStage> make_memcpy_stage(const std::vector<FieldSpec>& fields);

}  // namespace ferry
