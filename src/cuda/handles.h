#pragma once
// RAII owners of the CUDA runtime's handles (device, event, stream, device memory) and the error
// check every CUDA call goes through. Internal to the GPU stage; CUDA builds only.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <new>
#include <string>

#include "ferry/cuda.h"
#include "ferry/error.h"
#include "util.h"

namespace ferry::cuda_detail {

using detail::Clock;
using detail::seconds_since;

inline void check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess)
    throw CudaError(std::string(what) + " failed: " + cudaGetErrorName(rc) + " (" +
                        cudaGetErrorString(rc) + ")",
                    static_cast<int>(rc));
}

/// Makes `device` current for a scope and restores the caller's device afterwards: the GPU stage
/// runs on threads it does not own (the consumer's, a tensor deleter's) and must leave their
/// current device as it found it.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device_) check(cudaSetDevice(device_), "cudaSetDevice");
  }
  /// The noexcept form, for destructors and release paths: failures leave the device as it is.
  DeviceGuard(int device, std::nothrow_t) noexcept : device_(device) {
    if (cudaGetDevice(&previous_) != cudaSuccess ||
        (previous_ != device_ && cudaSetDevice(device_) != cudaSuccess))
      previous_ = device_;
  }
  ~DeviceGuard() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int previous_ = 0;
};

// RAII owners of CUDA handles. Destruction never throws: a failed destroy during teardown (the
// runtime may already be unloading at process exit) leaks the handle rather than crash.

class Event {
 public:
  explicit Event(unsigned flags) {
    check(cudaEventCreateWithFlags(&e_, flags), "cudaEventCreateWithFlags");
  }
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

class Stream {
 public:
  Stream() {
    // Non-blocking: the copies must not serialise with the legacy default stream, which is the
    // consumer's stream in many programs (PyTorch's default).
    check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  }
  ~Stream() {
    if (s_) {
      cudaStreamSynchronize(s_);
      cudaStreamDestroy(s_);
    }
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class DeviceMemory {
 public:
  explicit DeviceMemory(uint64_t bytes) {
    check(cudaMalloc(&p_, bytes), "cudaMalloc (a device ring buffer)");
  }
  ~DeviceMemory() {
    if (p_) cudaFree(p_);
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  uint8_t* get() const { return static_cast<uint8_t*>(p_); }

 private:
  void* p_ = nullptr;
};

inline constexpr uint64_t kDeviceAlign =
    256;  // cudaMalloc's own alignment: every field starts on one
using detail::align_up;

}  // namespace ferry::cuda_detail
