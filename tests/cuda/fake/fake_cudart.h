#pragma once
// The CPU stand-in for the CUDA runtime (fake_cudart.cpp): its one extension, used by
// fake_kernels.cpp to run "kernels" in stream order.
#include <cuda_runtime_api.h>

#include <functional>

namespace ferry::fake_cuda {

/// Runs `op` on stream `s`'s thread after everything enqueued on `s` before it.
void enqueue(cudaStream_t s, std::function<void()> op);

}  // namespace ferry::fake_cuda
