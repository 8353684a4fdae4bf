// Kernels behind tests/cuda/kernels.h.
#include "kernels.h"

#include <algorithm>

namespace ferry::gpu_test {

namespace {

constexpr int kThreads = 256;

__device__ uint64_t warp_sum(uint64_t v) {
  for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
  return v;
}

// Block-wide sum; the result is valid in thread 0. The barrier separates the warps' writes to
// `partial` from warp 0's reads (racecheck-clean).
__device__ uint64_t block_sum(uint64_t v) {
  __shared__ uint64_t partial[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = 0;
  if (warp == 0) {
    if (lane < kThreads / 32) v = partial[lane];
    v = warp_sum(v);
  }
  return v;
}

__global__ void __launch_bounds__(kThreads)
    checksum_kernel(const uint8_t* data, uint64_t sample_bytes, const uint64_t* offsets,
                    uint64_t* out) {
  const uint64_t i = blockIdx.x;
  const uint64_t begin = offsets ? offsets[i] : i * sample_bytes;
  const uint64_t end = offsets ? offsets[i + 1] : begin + sample_bytes;
  uint64_t h = 0;
  for (uint64_t j = threadIdx.x; begin + j < end; j += kThreads)
    h += (uint64_t{data[begin + j]} + 1) * checksum_weight(j);
  h = block_sum(h);
  if (threadIdx.x == 0) out[i] = h;
}

__device__ uint64_t global_timer() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void spin_kernel(uint64_t ns) {
  const uint64_t start = global_timer();
  while (global_timer() - start < ns) __nanosleep(500);
}

__global__ void __launch_bounds__(kThreads)
    touch_kernel(const uint4* data, uint64_t words, uint64_t* sink) {
  uint64_t acc = 0;
  for (uint64_t w = blockIdx.x * uint64_t{kThreads} + threadIdx.x; w < words;
       w += uint64_t{gridDim.x} * kThreads) {
    const uint4 v = data[w];
    acc += uint64_t{v.x} + v.y + v.z + v.w;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0 && acc == 0x5eed)
    atomicAdd(reinterpret_cast<unsigned long long*>(sink), 1ull);
}

}  // namespace

cudaError_t launch_checksums(const void* data, uint64_t sample_bytes, const uint64_t* offsets,
                             uint64_t n, uint64_t* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  checksum_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
      static_cast<const uint8_t*>(data), sample_bytes, offsets, out);
  return cudaGetLastError();
}

cudaError_t launch_spin(uint64_t ns, cudaStream_t stream) {
  spin_kernel<<<1, 1, 0, stream>>>(ns);
  return cudaGetLastError();
}

cudaError_t launch_touch(const void* data, uint64_t bytes, uint64_t* sink, cudaStream_t stream) {
  const uint64_t words = bytes / 16;
  if (words == 0) return cudaSuccess;
  const uint64_t blocks = std::min<uint64_t>((words + kThreads - 1) / kThreads, 132 * 8);
  touch_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const uint4*>(data), words, sink);
  return cudaGetLastError();
}

}  // namespace ferry::gpu_test
