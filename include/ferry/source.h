#pragma once
/// \file source.h
/// \brief Where bytes come from: one interface, several backends (mmap, pread, io_uring, O_DIRECT),
/// plus test doubles (fault-injecting, slow). docs/io.md says when to use which.
///
/// Thread-safety: every method may be called concurrently from any number of threads.
/// Errors: a failed read throws IoError naming the file and the cause; a read past the end of
/// the file throws FormatError. Sources never return partial data. Hints (advise, will_need,
/// dont_need) never throw: they are advice the kernel may ignore, and so may a backend.
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ferry/remote.h"

namespace ferry {

/// One read of a batched request: `length` bytes at file `offset` into `dst`.
struct ReadRequest {
  uint64_t offset;
  uint64_t length;
  void* dst;
};

/// How the caller will walk the file; backends turn it into OS hints (madvise, fadvise) and
/// decide whether to read around a batch. Give quasi_random orders `normal`: they are random
/// within a window of a few pages that are worth reading whole (io_uring's read-around, hint
/// widening); `random` says nothing near a read is wanted and turns that off.
enum class AccessPattern { normal, sequential, random };

/// What a source is, so callers decide by property, never by backend name.
struct SourceTraits {
  bool local_file = true;       ///< a file on this machine (os.h residency/eviction apply)
  bool page_cache = true;       ///< reads go through the OS page cache (O_DIRECT: false)
  bool zero_copy_view = false;  ///< view() returns pointers valid for the source's lifetime
  /// will_need() for upcoming reads pays off even when the data is "warm" (a remote source
  /// fetches ahead; a local one only when the file is cold).
  bool prefetch_always = false;
};

class Source {
 public:
  virtual ~Source() = default;

  virtual SourceTraits traits() const { return {}; }

  virtual const std::string& path() const = 0;
  virtual uint64_t size() const = 0;
  /// "mmap", "pread", ...
  virtual std::string_view backend_name() const = 0;

  /// Reads exactly `length` bytes at `offset` into `dst`.
  virtual void read(uint64_t offset, uint64_t length, void* dst) = 0;

  /// Reads every request; backends with asynchronous I/O submit them together. The default
  /// issues them one by one. On error, throws for the first failing request (by position).
  virtual void read_many(std::span<const ReadRequest> requests);

  /// A pointer to the bytes [offset, offset+length) if the backend holds them in memory for the
  /// source's lifetime (mmap), else nullptr. Callers must fall back to read() on nullptr.
  virtual const uint8_t* view(uint64_t /*offset*/, uint64_t /*length*/) { return nullptr; }

  /// Hint: these byte ranges will be read soon, in this order. Default: ignored.
  virtual void will_need(std::span<const ReadRequest> /*ranges*/) {}
  /// Hint: the whole file will be walked like this. Default: ignored.
  virtual void advise(AccessPattern /*pattern*/) {}
  /// Hint: these byte ranges will not be read again soon; their memory may be reclaimed
  /// (mmap: MADV_DONTNEED drops this mapping's pages, which refault from the page cache or the
  /// file if read again, so view() pointers stay valid; pread/io_uring/direct:
  /// POSIX_FADV_DONTNEED). Ranges outside the file are ignored. Default: ignored.
  virtual void dont_need(std::span<const ReadRequest> /*ranges*/) {}
};

enum class Backend { auto_select, mmap, pread, io_uring, direct };

/// "auto", "mmap", "pread", "io_uring", "direct".
std::string_view backend_name(Backend b);
/// Parses backend_name()'s spellings; throws InvalidArgument naming the choices.
Backend parse_backend(std::string_view name);

struct SourceOptions {
  Backend backend = Backend::auto_select;
  AccessPattern pattern = AccessPattern::normal;
  /// io_uring and direct: most reads in flight per calling thread, in [1, 4096].
  uint32_t queue_depth = 64;
  /// http:// and https:// paths (remote.h); ignored for local files.
  RemoteOptions remote{};
};

/// Opens `path` with the chosen backend (auto: see choose_auto_backend and docs/io.md).
/// Throws IoError if the file cannot be opened; InvalidArgument if the backend cannot be used
/// here (no io_uring in this build or kernel, a filesystem that refuses O_DIRECT) or an option
/// is out of range — the message says which backend to use instead.
std::unique_ptr<Source> open_source(const std::string& path, const SourceOptions& options = {});

/// The file mapped once, read-only (MADV_HUGEPAGE where supported); view() points into the
/// mapping.
std::unique_ptr<Source> open_mmap_source(const std::string& path);
/// pread(2) into the caller's buffer; no mapping.
std::unique_ptr<Source> open_pread_source(const std::string& path);
/// Buffered reads through io_uring: read_many submits the whole batch at once with up to
/// `queue_depth` reads in flight per calling thread (each concurrent caller gets its own ring
/// from a small pool); the file is registered with each ring; short reads are resubmitted.
/// Throws InvalidArgument when io_uring is unusable (built without liburing, or the kernel
/// refuses it: ENOSYS, EPERM from io_uring_disabled or seccomp).
std::unique_ptr<Source> open_uring_source(const std::string& path, uint32_t queue_depth = 64);
/// O_DIRECT: bypasses the page cache. Reads are rounded out to the device's alignment (statx
/// STATX_DIOALIGN, else 4096), land in aligned bounce buffers (registered with io_uring) and are
/// trimmed into the caller's buffer; requests already aligned go straight into it. read_many
/// merges neighbouring requests and submits them through io_uring when usable, else pread.
/// Throws InvalidArgument when the filesystem refuses O_DIRECT (tmpfs before Linux 6.6,
/// procfs, some FUSE filesystems).
std::unique_ptr<Source> open_direct_source(const std::string& path, uint32_t queue_depth = 64);

/// Why backend `b` cannot read `path` on this machine, or "" when it can. mmap, pread and auto
/// always can; io_uring needs liburing and a kernel that allows it; direct needs a filesystem
/// that accepts O_DIRECT (probed by opening `path`, so the file must exist; an empty path only
/// checks what does not depend on the file). Throws IoError if `path` cannot be opened at all.
std::string backend_unavailable_reason(Backend b, const std::string& path = "");

/// What the auto rule looks at (gathered by open_source; a struct so the rule is testable).
struct AutoSelectInputs {
  uint64_t file_size = 0;
  double resident_fraction = 0;   ///< of the file, in the page cache (os.h resident_fraction)
  uint64_t available_memory = 0;  ///< bytes (os.h available_memory_bytes)
  bool io_uring_usable = false;
};
/// The auto rule: mmap when the file is mostly (>= 90%) in the page cache or fits comfortably
/// (<= half) in available memory — the page cache then serves every read after the first;
/// otherwise io_uring when usable (deep queues hide the disk's latency); pread as a last resort.
/// Never returns auto_select.
Backend choose_auto_backend(const AutoSelectInputs& in);

/// An in-memory "file" (tests, fuzzing, data already in RAM). view() points into `bytes`.
std::unique_ptr<Source> open_memory_source(std::string name, std::vector<uint8_t> bytes);

/// Test double: wraps a source and fails or delays chosen reads (the latency-hiding and
/// error-path tests run every backend through it). view() returns nullptr so every byte goes
/// through read()/read_many().
struct FaultSpec {
  /// Reads overlapping any [begin, end) here throw IoError(EIO).
  std::vector<std::pair<uint64_t, uint64_t>> fail_ranges;
  /// Every read (each request of read_many) sleeps this long first.
  std::chrono::microseconds delay{0};
  /// Only reads at or after this offset are delayed/failed (so opening the file is not).
  uint64_t from_offset = 0;
};
std::unique_ptr<Source> wrap_faulty_source(std::shared_ptr<Source> inner, FaultSpec spec);

}  // namespace ferry
