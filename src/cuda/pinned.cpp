// Pinned host memory for the host pool, and "cuda[:N]" parsing.
#include <algorithm>

#include "cuda/handles.h"
#include "ferry/cuda.h"

namespace ferry {

using cuda_detail::check;
using cuda_detail::DeviceGuard;

PinnedAllocator::PinnedAllocator(int device) : device_(device) {}

void* PinnedAllocator::allocate(uint64_t bytes) {
  DeviceGuard g(device_);
  void* p = nullptr;
  // Portable: the memory is pinned for every device's context, so any copy stream may read it.
  check(cudaHostAlloc(&p, std::max<uint64_t>(bytes, 1), cudaHostAllocPortable),
        "cudaHostAlloc (pinned batch buffer)");
  return p;
}

void PinnedAllocator::deallocate(void* p, uint64_t) noexcept {
  if (p) cudaFreeHost(p);
}

int parse_cuda_device(std::string_view device) {
  const std::string d(device);
  if (device.rfind("cuda", 0) != 0)
    throw InvalidArgument("device '" + d + "': use 'cuda' or 'cuda:N'");
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess || count == 0) {
    cudaGetLastError();
    throw InvalidArgument("device '" + d + "': no CUDA device is visible (" + cudaGetErrorName(rc) +
                          ")");
  }
  if (device == "cuda") {
    int current = 0;
    check(cudaGetDevice(&current), "cudaGetDevice");
    return current;
  }
  const std::string_view n = device.substr(4);
  if (n.size() < 2 || n[0] != ':' || n.size() > 4 ||
      !std::all_of(n.begin() + 1, n.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw InvalidArgument("device '" + d + "': use 'cuda' or 'cuda:N'");
  const int index = std::stoi(std::string(n.substr(1)));
  if (index >= count)
    throw InvalidArgument("device '" + d + "': only " + std::to_string(count) +
                          " CUDA device(s) are visible");
  return index;
}

// ---- DeviceLoader ----

}  // namespace ferry
