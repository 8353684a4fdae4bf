#pragma once
/// \file cuda.h
/// \brief The GPU stage: batches arrive in device memory, copied while the previous batch trains.
///
/// Data flow (every buffer comes from a fixed pool, so memory is bounded by construction):
///
///   host Loader workers ──collate──▶ pinned host batches (PinnedAllocator, the Loader's pool)
///   copier thread ──cudaMemcpyAsync on a non-blocking copy stream──▶ a ring of `ring_depth`
///   device buffers: free ──copy──▶ ready ──next()──▶ held by the consumer ──release──▶ free
///
/// The stream rule (the one thing a caller must get right):
///  * next(stream) makes `stream` wait (cudaStreamWaitEvent, on the device: the host never
///    blocks) for the batch's copy. Work you enqueue on `stream` after next() returns sees the
///    batch's bytes. Work on any other stream must first wait on `stream` (an event), or the
///    caller must synchronise it otherwise.
///  * Releasing a DeviceBatch (release() or its destructor) records an event on that same
///    `stream`. The buffer is overwritten only by a copy that the copy stream orders after that
///    event, i.e. after everything you had enqueued on `stream` before the release has finished.
///    So release a batch right after enqueueing its last use, without synchronising: the host
///    never waits for the GPU for this. Never use a batch's pointers in work enqueued after its
///    release.
///  * `stream` must belong to the loader's device and outlive the batches taken with it.
///
/// Threads: one consumer thread calls next(), set_epoch() and state() (as for Loader);
/// metrics(), report() and the other getters may be called from any thread. A DeviceBatch may be
/// released or destroyed on any thread (e.g. by a tensor's deleter). The copier thread releases
/// each pinned host batch once its copy has completed, off the consumer's path.
///
/// Lifetime: a DeviceBatch keeps its device buffer (and the ring it belongs to) alive, so it may
/// outlive its DeviceLoader. Destroying the DeviceLoader stops and joins the copier and the host
/// workers promptly, also while the consumer holds batches or the copier waits for a buffer.
///
/// Errors: next() rethrows what the host Loader threw (SampleError, CapacityError) in batch
/// order, TimeoutError for its timed overload (the loader stays usable), CapacityError when the
/// consumer holds every device buffer, CudaError for a failed CUDA call.
///
/// Builds without CUDA keep this header and the symbols: every constructor here then throws
/// InvalidArgument "ferry was built without CUDA", and cuda_available() is false.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/batch.h"
#include "ferry/error.h"
#include "ferry/loader.h"
#include "ferry/metrics.h"

// cudaStream_t is `CUstream_st*`; naming the struct keeps cuda_runtime.h out of this header.
struct CUstream_st;

namespace ferry {

/// A CUDA stream handle (the same type as cudaStream_t). nullptr is the legacy default stream.
using CudaStream = CUstream_st*;

/// True when ferry was built with the CUDA stage (says nothing about GPUs being present).
bool cuda_available() noexcept;

/// Parses "cuda" (the calling thread's current device) or "cuda:N". Throws InvalidArgument for
/// anything else, and "ferry was built without CUDA" in builds without it.
int parse_cuda_device(std::string_view device);

/// A CUDA runtime call failed; code() is the cudaError_t.
class CudaError : public Error {
 public:
  CudaError(const std::string& what, int code) : Error(what), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

/// Page-locked host memory (cudaHostAlloc, portable across devices): what makes the copier's
/// cudaMemcpyAsync truly asynchronous and run at full bus speed. Thread-safe; allocations are
/// slow (milliseconds), which is why the Loader's pool allocates its slots once, up front.
class PinnedAllocator final : public HostAllocator {
 public:
  /// `device`: the device whose context owns the allocations (made current only for the call).
  explicit PinnedAllocator(int device = 0);
  void* allocate(uint64_t bytes) override;
  void deallocate(void* p, uint64_t bytes) noexcept override;
  std::string_view name() const override { return "pinned"; }
  int device() const { return device_; }

 private:
  int device_;
};

struct DeviceOptions {
  /// Device buffers in the ring (2..8). One is typically held by the consumer, the others are
  /// being copied or wait copied: 3 lets the copy of batch k+1 and k+2 overlap step k.
  uint32_t ring_depth = 3;
};

/// One field of a DeviceBatch. Device pointers stay valid until the batch is released.
struct DeviceField {
  const FieldSpec* spec = nullptr;
  void* data = nullptr;  ///< device memory: ndarray [size, ...shape]; bytes: concatenated
  uint64_t bytes = 0;    ///< valid bytes at data
  const uint64_t* offsets = nullptr;  ///< bytes fields: size+1 offsets in device memory; else null
  std::span<const uint64_t> host_offsets;  ///< the same offsets in host memory (bytes fields)
};

/// Internal (src/cuda/ring.h): a ring slot and the state shared with the batches.
struct DeviceSlot;
class DeviceRing;

/// A batch in device memory. Move-only; releasing it (release() or the destructor, on any
/// thread) records an event on the stream passed to next() and hands the buffer back to the ring
/// (see the stream rule above). The empty DeviceBatch marks the end of an epoch.
class DeviceBatch {
 public:
  DeviceBatch() = default;
  DeviceBatch(DeviceBatch&&) noexcept;
  DeviceBatch& operator=(DeviceBatch&&) noexcept;
  DeviceBatch(const DeviceBatch&) = delete;
  DeviceBatch& operator=(const DeviceBatch&) = delete;
  ~DeviceBatch();

  explicit operator bool() const { return slot_ != nullptr; }
  uint64_t size() const;  ///< samples in the batch
  uint64_t epoch() const;
  uint64_t index() const;                        ///< position of the batch in its epoch
  std::span<const uint64_t> sample_ids() const;  ///< host memory
  size_t num_fields() const;
  const DeviceField& field(size_t i) const;
  const DeviceField& field(std::string_view name) const;
  /// [size, ...shape] for ndarray fields, [bytes] for bytes fields.
  std::vector<uint64_t> shape(size_t i) const;
  int device() const;
  /// The stream the batch was handed out on (where its release event is recorded).
  CudaStream stream() const;
  void release() noexcept;

 private:
  friend class DeviceRing;
  DeviceBatch(std::shared_ptr<DeviceRing> ring, DeviceSlot* slot)
      : ring_(std::move(ring)), slot_(slot) {}
  std::shared_ptr<DeviceRing> ring_;
  DeviceSlot* slot_ = nullptr;
};

/// The host loader's metrics plus the GPU stage's. In `host`, the "consumer" is the copier
/// thread: host.consumer_wait_* says how long the copier waited for host batches.
struct DeviceMetrics {
  Metrics host;
  int device = 0;
  uint32_t ring_depth = 0;
  double wall_seconds = 0;
  uint64_t batches = 0;  ///< batches handed to the consumer
  uint64_t copies = 0;   ///< host → device batch copies completed
  uint64_t bytes_copied = 0;
  double copy_seconds = 0;            ///< copy-stream time of those copies (CUDA events), summed
  double copy_gbps = 0;               ///< bytes_copied / copy_seconds / 1e9: the bus rate achieved
  double consumer_wait_seconds = 0;   ///< blocked in DeviceLoader::next()
  double consumer_wait_fraction = 0;  ///< of wall time
  double copier_slot_wait_seconds = 0;  ///< copier waited for a free device buffer (GPU-bound)
  /// Copies issued into a buffer whose release event had not completed yet: ordered after the
  /// consumer's work on the device instead of waiting on the host (the loader running ahead).
  uint64_t copies_behind_consumer = 0;

  std::string to_json() const;   ///< host.to_json() with a "device" object added
  std::string to_table() const;  ///< host.to_table() plus the GPU stage's lines
};

/// A Loader whose batches arrive in device memory. Wraps a host Loader built with a
/// PinnedAllocator (any LoaderOptions::allocator is replaced) and device "cpu"; a copier thread
/// takes its batches in order and copies them into the ring.
class DeviceLoader {
 public:
  /// options.device must be "cuda" or "cuda:N". Throws as Loader does, InvalidArgument for a bad
  /// device or ring_depth, CudaError when the device cannot be used.
  DeviceLoader(const std::string& path, LoaderOptions options, DeviceOptions device_options = {});
  DeviceLoader(std::shared_ptr<Reader> reader, LoaderOptions options,
               DeviceOptions device_options = {});
  ~DeviceLoader();
  DeviceLoader(const DeviceLoader&) = delete;
  DeviceLoader& operator=(const DeviceLoader&) = delete;

  /// The next batch, ordered on `consumer_stream` after its copy (see the stream rule), or the
  /// empty DeviceBatch at the end of the epoch (the following call starts the next one).
  DeviceBatch next(CudaStream consumer_stream);
  /// As next(), but throws TimeoutError when no batch is ready within `timeout`.
  DeviceBatch next(CudaStream consumer_stream, std::chrono::milliseconds timeout);
  /// As next(), but returns no batch when none is ready within `timeout` (the loader keeps
  /// running; call again). Any timeout is valid: huge values wait long, never overflow.
  std::optional<DeviceBatch> try_next(CudaStream consumer_stream,
                                      std::chrono::milliseconds timeout);
  /// Stops the copier and the host loader and wakes every thread blocked in next()/try_next(),
  /// which then throw ShutdownError("device loader closed"). Idempotent; any thread. Batches the
  /// consumer holds stay valid; metrics(), options() and fields() still answer; every other call
  /// throws ShutdownError.
  void close();

  /// Restarts at the first batch of `epoch`, discarding batches copied ahead.
  void set_epoch(uint64_t epoch);
  uint64_t epoch() const;  ///< the consumer's epoch (the copier may already work on the next)
  uint64_t batches_per_epoch() const;
  uint64_t samples_per_epoch() const;
  /// Where the consumer is (batches copied ahead but not delivered do not count).
  LoaderState state() const;
  /// The consumer's epoch's order (sample ids), a copy.
  std::vector<uint64_t> epoch_order() const;

  DeviceMetrics metrics() const;
  std::string report() const;
  void reset_metrics();

  int device() const;
  uint32_t ring_depth() const;
  const std::vector<FieldSpec>& fields() const;
  /// The host loader's options (allocator: the PinnedAllocator; device: "cpu").
  const LoaderOptions& options() const;
  const Reader& reader() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry
