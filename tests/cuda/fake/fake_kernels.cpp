// tests/cuda/kernels.h on the CPU, in stream order (see fake_cudart.cpp).
#include <chrono>
#include <cstring>
#include <thread>

#include "fake_cudart.h"
#include "kernels.h"

namespace ferry::gpu_test {

cudaError_t launch_checksums(const void* data, uint64_t sample_bytes, const uint64_t* offsets,
                             uint64_t n, uint64_t* out, cudaStream_t stream) {
  fake_cuda::enqueue(stream, [=] {
    const auto* p = static_cast<const uint8_t*>(data);
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t begin = offsets ? offsets[i] : i * sample_bytes;
      const uint64_t end = offsets ? offsets[i + 1] : begin + sample_bytes;
      out[i] = host_checksum(p + begin, end - begin);
    }
  });
  return cudaSuccess;
}

cudaError_t launch_spin(uint64_t ns, cudaStream_t stream) {
  fake_cuda::enqueue(stream, [ns] { std::this_thread::sleep_for(std::chrono::nanoseconds(ns)); });
  return cudaSuccess;
}

cudaError_t launch_touch(const void* data, uint64_t bytes, uint64_t* sink, cudaStream_t stream) {
  fake_cuda::enqueue(stream, [=] {
    uint64_t acc = 0;
    for (uint64_t i = 0; i + 8 <= bytes; i += 8) {
      uint64_t v;
      std::memcpy(&v, static_cast<const uint8_t*>(data) + i, 8);
      acc += v;
    }
    if (acc == 0x5eed) ++*sink;
  });
  return cudaSuccess;
}

}  // namespace ferry::gpu_test
