// DeviceRing's CUDA side: freeing the device buffers after the GPU is done with them, and a
// released batch's event recorded on the consumer's stream.
#include "cuda/ring.h"

namespace ferry {

using cuda_detail::DeviceGuard;

DeviceRing::~DeviceRing() {
  // Memory may be freed only after the consumer's stream and the copy stream are done with it.
  DeviceGuard g(device_, std::nothrow);
  for (auto& s : slots) {
    if (s->release_recorded) cudaEventSynchronize(s->released.get());
    cudaEventSynchronize(s->copy_done.get());
  }
  slots.clear();
}

void DeviceRing::release(DeviceSlot* slot) noexcept {
  bool recorded;
  {
    DeviceGuard g(device_, std::nothrow);
    recorded = cudaEventRecord(slot->released.get(), slot->consumer) == cudaSuccess;
    if (!recorded) {
      // The stream is gone or broken: nothing tells us when its work ends, so wait for the whole
      // device before the buffer may be overwritten. Never taken on a healthy run.
      cudaGetLastError();
      cudaDeviceSynchronize();
    }
  }
  {
    std::lock_guard lk(mu);
    slot->release_recorded = recorded;
    --held;
    free.push_back(slot);
  }
  copier_cv.notify_all();
}

}  // namespace ferry
