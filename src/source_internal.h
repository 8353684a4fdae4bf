#pragma once
// Internal to the sources (not installed): what source.cpp, source_uring.cpp and
// source_direct.cpp share — opening, range checks, the read engine's unit of work (IoOp), the
// io_uring ring behind an interface (so source_direct.cpp compiles without liburing), and a
// small pool that hands each concurrent caller its own ring/bounce buffer.
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ferry/source.h"
#include "util.h"

namespace ferry::detail {

/// Opens `path` read-only with `extra_flags`, checks it is a regular file, stores its size.
/// Throws IoError.
Fd open_readonly(const std::string& path, int extra_flags, uint64_t& size);
/// fstat of an open fd: refuses a FIFO, directory, device... naming the path and what it is.
void check_regular(const std::string& path, int fd, uint64_t& size);

/// Throws FormatError if [offset, offset+length) is not inside a file of `size` bytes.
void check_range(const std::string& path, uint64_t offset, uint64_t length, uint64_t size);
/// check_range for every request (before anything is submitted: sources never return partial
/// data for a batch with a bad request).
void check_requests(const std::string& path, std::span<const ReadRequest> requests, uint64_t size);

/// Throws the IoError for a failed read of [offset, offset+length): `err` is the errno, or 0 for
/// "the file ended before the range did" (it shrank under us).
[[noreturn]] void throw_read_error(const std::string& path, uint64_t offset, uint64_t length,
                                   int err);

/// One read the engines run: bytes [offset, offset+length) of the file into dst. The read is done
/// once the first `need` bytes have arrived: O_DIRECT reads are rounded up past the end of the
/// file, where the kernel stops short, so need <= length there.
struct IoOp {
  uint64_t offset;
  uint64_t length;
  uint64_t need;
  uint8_t* dst;
  bool fixed_buffer = false;  ///< dst lies in the buffer registered with the ring
};

/// A read that failed: index into the ops, errno (0: end of file before `need`).
struct IoFailure {
  size_t index;
  int err;
};

/// Read-around granularity: ferry's default page size, and the PMD size a huge-page fault reads.
inline constexpr uint64_t kHintRegion = uint64_t{2} << 20;
/// A batch touching one region at least this often, or hinting this many of its bytes, is
/// treated as wanting all of it.
inline constexpr size_t kDenseRequests = 4;
inline constexpr uint64_t kDenseBytes = kHintRegion / 8;

/// How plan_hints treats hinted ranges.
enum class Widen {
  none,           ///< the ranges as given (random access: nothing near them is wanted)
  dense_regions,  ///< ranges in a region touched kDenseRequests+ times become the whole region
  dense_only,     ///< as dense_regions, and the other ranges are dropped (a huge-page mmap fault
                  ///< reads the 2 MiB around it anyway; a small hinted read would leave small
                  ///< pages there that the fault can no longer widen)
};

/// Remembers the regions hinted last (direct-mapped, 64 slots), so the batches after the first
/// one in a quasi_random window do not ask for the same regions again (asking is a page-cache
/// lookup per page). Races only repeat a hint, so relaxed atomics suffice.
class RecentRegions {
 public:
  /// True if `region` was marked recently; marks it either way.
  bool check_and_mark(uint64_t region) {
    auto& slot = slots_[region % slots_.size()];
    if (slot.load(std::memory_order_relaxed) == region + 1) return true;
    slot.store(region + 1, std::memory_order_relaxed);
    return false;
  }

 private:
  std::array<std::atomic<uint64_t>, 64> slots_{};  // region + 1; 0: empty
};

/// Turns per-sample hint ranges into few large ones: widened as `widen` says (regions `recent`
/// has seen lately are dropped), clipped to the file, sorted, and merged where they overlap or
/// lie close. Per-sample hints as given would start one small read each, ahead of (and breaking
/// up) the kernel's own large readahead.
std::vector<std::pair<uint64_t, uint64_t>> plan_hints(std::span<const ReadRequest> ranges,
                                                      uint64_t file_size, Widen widen,
                                                      RecentRegions* recent);
/// The regions (index = offset / kHintRegion) that `ranges` touch kDenseRequests+ times or for
/// kDenseBytes+ bytes (ranges count in the region of their first byte).
std::vector<uint64_t> dense_regions(std::span<const ReadRequest> ranges, uint64_t file_size);

/// Why io_uring cannot be used here; empty when it can. The kernel is probed once per process;
/// FERRY_DISABLE_IO_URING=1 in the environment forces "unusable" (for kernels whose io_uring
/// misbehaves, and for testing the fallbacks).
std::string uring_unavailable_reason();

/// One io_uring instance with the source's file registered. Not thread-safe: a ring is used by
/// one thread at a time (RingPool/ObjectPool hands it out exclusively).
class Ring {
 public:
  virtual ~Ring() = default;
  /// Registers [p, p+bytes) as fixed buffer 0 (ops with fixed_buffer use it). False when the
  /// kernel refuses (RLIMIT_MEMLOCK...): ops then fall back to plain reads, still correct.
  virtual bool register_buffer(void* p, uint64_t bytes) = 0;
  /// Runs every op to completion: all submitted together, at most queue_depth in flight, short
  /// reads resubmitted from where they stopped (rounded down to `align`, which O_DIRECT needs).
  /// Completions are reaped by the calling thread. Appends one IoFailure per failed op. Throws
  /// IoError only if the ring itself fails (then reusable() is false).
  virtual void run(std::span<IoOp> ops, uint32_t align, std::vector<IoFailure>& failures) = 0;
  virtual bool reusable() const = 0;
};

/// A ring of `queue_depth` entries reading `fd` (registered as a fixed file where the kernel
/// allows). Throws InvalidArgument if io_uring is unusable (uring_unavailable_reason()), IoError
/// if this ring cannot be created.
std::unique_ptr<Ring> make_ring(int fd, uint32_t queue_depth, const std::string& path);

/// Rejects queue depths io_uring would refuse or that make no sense.
void check_queue_depth(uint32_t queue_depth);

/// Objects (rings, bounce buffers) handed out one per concurrent caller and reused: a caller
/// takes one (creating it if none is free), uses it alone, and the Lease gives it back. The pool
/// holds as many objects as there were concurrent callers at peak; they live until the pool does.
/// T must have `bool reusable() const`: objects that are not are dropped instead of returned.
template <class T>
class ObjectPool {
 public:
  explicit ObjectPool(std::function<std::unique_ptr<T>()> make) : make_(std::move(make)) {}

  class Lease {
   public:
    Lease(ObjectPool* pool, std::unique_ptr<T> obj) : pool_(pool), obj_(std::move(obj)) {}
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (obj_ && obj_->reusable()) pool_->give_back(std::move(obj_));
    }
    T* operator->() const { return obj_.get(); }
    T& operator*() const { return *obj_; }

   private:
    ObjectPool* pool_;
    std::unique_ptr<T> obj_;
  };

  Lease acquire() {
    {
      std::lock_guard lock(mu_);
      if (!free_.empty()) {
        // LIFO: the most recently used object has the warmest caches.
        std::unique_ptr<T> obj = std::move(free_.back());
        free_.pop_back();
        return Lease(this, std::move(obj));
      }
    }
    return Lease(this, make_());  // outside the lock: creating a ring is a syscall or three
  }

 private:
  void give_back(std::unique_ptr<T> obj) {
    std::lock_guard lock(mu_);
    free_.push_back(std::move(obj));
  }

  std::function<std::unique_ptr<T>()> make_;
  std::mutex mu_;
  std::vector<std::unique_ptr<T>> free_;  // guarded by mu_
};

}  // namespace ferry::detail
