// A CPU stand-in for the slice of the CUDA runtime the GPU stage and its tests use, so that the
// GPU stage's host logic (ordering, epochs, errors, capacity, shutdown, the stream rule) runs —
// under ThreadSanitizer too — on machines without a GPU, CI included.
//
// Model: every stream is a thread executing its operations in FIFO order; "device memory" is
// host memory; an event is the completion of the operations enqueued on its stream before it
// was recorded; cudaStreamWaitEvent makes a stream block until that completion. So the fake
// keeps CUDA's ordering guarantees and nothing more: a copy that is not ordered after a
// consumer's work really does race with it (the slow-consumer test then fails).
// The legacy default stream (nullptr, cudaStreamLegacy, cudaStreamPerThread) is one stream; it
// does not synchronise with other streams (the GPU stage only uses non-blocking ones).
#include <cuda_runtime_api.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "fake_cudart.h"

namespace ferry::fake_cuda {
namespace {

using Clock = std::chrono::steady_clock;

// One lock and one condition variable for the whole fake: simple, and fast enough for tests.
// Leaked, like the legacy stream's thread that waits on them, so exit never destroys them under it.
std::mutex& mu = *new std::mutex;
std::condition_variable& cv = *new std::condition_variable;

struct Completion {
  bool done = false;
  Clock::time_point when;
};

struct FakeStream {
  std::deque<std::function<void()>> ops;  // guarded by mu
  bool stop = false;
  std::thread worker;

  FakeStream() : worker([this] { run(); }) {}
  ~FakeStream() {
    {
      std::lock_guard lk(mu);
      stop = true;
    }
    cv.notify_all();
    worker.join();
  }

  void run() {
    std::unique_lock lk(mu);
    while (true) {
      cv.wait(lk, [&] { return stop || !ops.empty(); });
      if (ops.empty()) return;  // stop, and everything enqueued has run
      auto op = std::move(ops.front());
      lk.unlock();
      op();
      lk.lock();
      ops.pop_front();  // popped only after running: "empty" means "idle"
      cv.notify_all();
    }
  }
};

struct FakeEvent {
  std::shared_ptr<Completion> last;  // guarded by mu; null: never recorded (complete)
};

FakeStream& legacy_stream() {
  static FakeStream* s = new FakeStream();  // leaked: outlives every static destructor
  return *s;
}

FakeStream& stream_of(cudaStream_t s) {
  const auto v = reinterpret_cast<uintptr_t>(s);
  if (v == 0 || v == 1 || v == 2) return legacy_stream();
  return *reinterpret_cast<FakeStream*>(s);
}

std::set<const void*>& pinned() {
  static auto* p = new std::set<const void*>();
  return *p;
}

cudaError_t last_error = cudaSuccess;  // guarded by mu

}  // namespace

void enqueue(cudaStream_t s, std::function<void()> op) {
  FakeStream& st = stream_of(s);
  {
    std::lock_guard lk(mu);
    st.ops.push_back(std::move(op));
  }
  cv.notify_all();
}

}  // namespace ferry::fake_cuda

using namespace ferry::fake_cuda;  // NOLINT: this file defines the C API

extern "C" {

const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : "cudaErrorFake";
}
const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : "fake CUDA error";
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetLastError(void) {
  std::lock_guard lk(mu);
  return std::exchange(last_error, cudaSuccess);
}

cudaError_t cudaMalloc(void** p, size_t size) {
  *p = std::aligned_alloc(256, (size + 255) / 256 * 256);
  if (!*p) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xAB, size);  // poison: unwritten bytes never look like data
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t size, unsigned int) {
  *p = std::aligned_alloc(4096, (size + 4095) / 4096 * 4096);
  if (!*p) return cudaErrorMemoryAllocation;
  std::lock_guard lk(mu);
  pinned().insert(*p);
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  {
    std::lock_guard lk(mu);
    pinned().erase(p);
  }
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  std::lock_guard lk(mu);
  *a = {};
  a->type = pinned().count(p) ? cudaMemoryTypeHost : cudaMemoryTypeDevice;
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
  *s = reinterpret_cast<cudaStream_t>(new FakeStream());
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete &stream_of(s);  // runs what was enqueued, then joins (CUDA also finishes the work)
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  FakeStream& st = stream_of(s);
  std::unique_lock lk(mu);
  cv.wait(lk, [&] { return st.ops.empty(); });
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return cudaStreamSynchronize(nullptr); }

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t s) {
  enqueue(s, [=] { std::memcpy(dst, src, n); });
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  cudaMemcpyAsync(dst, src, n, kind, nullptr);
  return cudaStreamSynchronize(nullptr);
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) {
  *e = reinterpret_cast<cudaEvent_t>(new FakeEvent());
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<FakeEvent*>(e);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  auto c = std::make_shared<Completion>();
  {
    std::lock_guard lk(mu);
    reinterpret_cast<FakeEvent*>(e)->last = c;
  }
  enqueue(s, [c] {
    std::lock_guard lk(mu);
    c->done = true;
    c->when = Clock::now();
  });
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  std::lock_guard lk(mu);
  const auto& c = reinterpret_cast<FakeEvent*>(e)->last;
  return !c || c->done ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  std::unique_lock lk(mu);
  const auto c = reinterpret_cast<FakeEvent*>(e)->last;
  if (c) cv.wait(lk, [&] { return c->done; });
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  std::lock_guard lk(mu);
  const auto& a = reinterpret_cast<FakeEvent*>(start)->last;
  const auto& b = reinterpret_cast<FakeEvent*>(end)->last;
  if (!a || !b || !a->done || !b->done) return cudaErrorNotReady;
  *ms = std::chrono::duration<float, std::milli>(b->when - a->when).count();
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  std::shared_ptr<Completion> c;
  {
    std::lock_guard lk(mu);
    c = reinterpret_cast<FakeEvent*>(e)->last;  // the event as recorded NOW, as in CUDA
  }
  if (c)
    enqueue(s, [c] {
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return c->done; });
    });
  return cudaSuccess;
}

}  // extern "C"
