#pragma once
// Kernels for the GPU stage's tests and benchmark (kernels.cu), not part of libferry. Every
// launch is asynchronous on `stream` and returns the launch's error code.
#include <cuda_runtime.h>

#include <cstdint>

#ifdef __CUDACC__
#define FERRY_HOST_DEVICE __host__ __device__
#else
#define FERRY_HOST_DEVICE
#endif

namespace ferry::gpu_test {

/// Weight of byte position j in a checksum: odd (every byte counts) and distinct per position
/// (a moved byte changes the sum).
FERRY_HOST_DEVICE inline uint64_t checksum_weight(uint64_t j) {
  return (((j + 1) * 0x9E3779B97F4A7C15ull) ^ (j >> 17)) | 1u;
}

/// Σ (byte_j + 1) × weight(j) mod 2^64: a sum, so threads may add in any order, yet a changed,
/// moved, missing or extra byte changes it (with overwhelming probability). The host reference.
inline uint64_t host_checksum(const uint8_t* p, uint64_t n) {
  uint64_t h = 0;
  for (uint64_t j = 0; j < n; ++j) h += (uint64_t{p[j]} + 1) * checksum_weight(j);
  return h;
}

/// out[i] = host_checksum of sample i, for `n` samples of one field: fixed-size samples of
/// `sample_bytes` each (offsets == nullptr), or variable ones (offsets: n + 1 device offsets
/// into `data`). One block per sample.
cudaError_t launch_checksums(const void* data, uint64_t sample_bytes, const uint64_t* offsets,
                             uint64_t n, uint64_t* out, cudaStream_t stream);

/// A synthetic training step: one thread spins for `ns` nanoseconds of the GPU's global timer.
cudaError_t launch_spin(uint64_t ns, cudaStream_t stream);

/// Reads every 16-byte word of `data` (`bytes` a multiple of 16) and adds them into *sink: the
/// cheapest kernel that makes a consumer touch a whole batch.
cudaError_t launch_touch(const void* data, uint64_t bytes, uint64_t* sink, cudaStream_t stream);

}  // namespace ferry::gpu_test
