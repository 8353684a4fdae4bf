#include "ferry/source.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "ferry/error.h"
#include "ferry/os.h"
#include "source_internal.h"
#include "util.h"

namespace ferry {

namespace detail {

namespace {

std::string non_regular_kind(unsigned mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

void check_regular(const std::string& path, int fd, uint64_t& size) {
  struct stat st;
  if (::fstat(fd, &st) != 0) throw io_error("cannot stat", path, errno);
  if (!S_ISREG(st.st_mode))
    throw IoError("cannot open '" + path + "': it is " + non_regular_kind(st.st_mode) +
                      ", not a regular ferry file",
                  EINVAL);
  size = static_cast<uint64_t>(st.st_size);
}

Fd open_readonly(const std::string& path, int extra_flags, uint64_t& size) {
  // O_NONBLOCK: opening a FIFO (or some devices) would otherwise block until a writer appears;
  // the fstat check below refuses them, and the flag is cleared for the regular file.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | extra_flags));
  if (!fd) throw io_error("cannot open", path, errno);
  check_regular(path, fd.get(), size);
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0)
    throw io_error("cannot clear O_NONBLOCK on", path, errno);
  return fd;
}

void check_range(const std::string& path, uint64_t offset, uint64_t length, uint64_t size) {
  if (!fits(offset, length, size))
    throw FormatError("ferry file '" + path + "': read of " + std::to_string(length) +
                      " bytes at offset " + std::to_string(offset) + " past the end of the file (" +
                      std::to_string(size) + " bytes)");
}

void check_requests(const std::string& path, std::span<const ReadRequest> requests, uint64_t size) {
  for (const auto& r : requests) check_range(path, r.offset, r.length, size);
}

void throw_read_error(const std::string& path, uint64_t offset, uint64_t length, int err) {
  if (err == 0)
    throw IoError("'" + path + "': unexpected end of file reading " + std::to_string(length) +
                      " bytes at offset " + std::to_string(offset) + " (file shrank?)",
                  EIO);
  throw io_error("read of " + std::to_string(length) + " bytes at offset " +
                     std::to_string(offset) + " failed on",
                 path, err);
}

void check_queue_depth(uint32_t queue_depth) {
  if (queue_depth == 0 || queue_depth > 4096)
    throw InvalidArgument("queue_depth " + std::to_string(queue_depth) +
                          " is out of range (use 1 to 4096; 64 is "
                          "a good start)");
}

std::vector<uint64_t> dense_regions(std::span<const ReadRequest> ranges, uint64_t file_size) {
  // (region, bytes) per in-file range, by its first byte's region.
  std::vector<std::pair<uint64_t, uint64_t>> hits;
  hits.reserve(ranges.size());
  for (const auto& r : ranges)
    if (r.length != 0 && fits(r.offset, r.length, file_size))
      hits.emplace_back(r.offset / kHintRegion, r.length);
  std::sort(hits.begin(), hits.end());
  std::vector<uint64_t> dense;
  for (size_t i = 0; i < hits.size();) {
    size_t j = i;
    uint64_t bytes = 0;
    for (; j < hits.size() && hits[j].first == hits[i].first; ++j) bytes += hits[j].second;
    // Many ranges, or few already-merged ones covering a good part of the region.
    if (j - i >= kDenseRequests || bytes >= kDenseBytes) dense.push_back(hits[i].first);
    i = j;
  }
  return dense;
}

std::vector<std::pair<uint64_t, uint64_t>> plan_hints(std::span<const ReadRequest> ranges,
                                                      uint64_t file_size, Widen widen,
                                                      RecentRegions* recent) {
  // Closer than this, two hinted ranges are read as one: the gap costs less than another request.
  constexpr uint64_t kMergeGap = 64 * 1024;
  std::vector<uint64_t> dense =
      widen == Widen::none ? std::vector<uint64_t>{} : dense_regions(ranges, file_size);
  // A dense region hinted lately is in the page cache or on its way: its ranges need no hint.
  std::vector<bool> fresh(dense.size(), true);
  if (recent != nullptr)
    for (size_t i = 0; i < dense.size(); ++i) fresh[i] = !recent->check_and_mark(dense[i]);
  std::vector<std::pair<uint64_t, uint64_t>> out;
  out.reserve(ranges.size());
  for (size_t i = 0; i < dense.size(); ++i)
    if (fresh[i])
      out.emplace_back(dense[i] * kHintRegion, std::min((dense[i] + 1) * kHintRegion, file_size));
  if (widen != Widen::dense_only) {
    for (const auto& r : ranges) {
      if (r.length == 0 || !fits(r.offset, r.length, file_size)) continue;
      if (!std::binary_search(dense.begin(), dense.end(), r.offset / kHintRegion))
        out.emplace_back(r.offset, r.offset + r.length);
    }
  }
  std::sort(out.begin(), out.end());
  size_t n = 0;
  for (const auto& [b, e] : out) {
    if (n > 0 && b <= out[n - 1].second + kMergeGap)
      out[n - 1].second = std::max(out[n - 1].second, e);
    else
      out[n++] = {b, e};
  }
  out.resize(n);
  return out;
}

}  // namespace detail

namespace {

using detail::check_range;
using detail::open_readonly;

constexpr std::string_view kBackendNames[] = {"auto", "mmap", "pread", "io_uring", "direct"};

// posix_fadvise over each in-file range (a hint: failure changes nothing).
void fadvise_ranges(int fd, uint64_t size, std::span<const ReadRequest> ranges, int advice) {
  for (const auto& r : ranges)
    if (r.length != 0 && detail::fits(r.offset, r.length, size))
      ::posix_fadvise(fd, static_cast<off_t>(r.offset), static_cast<off_t>(r.length), advice);
}

int fadvice_for(AccessPattern pattern) {
  return pattern == AccessPattern::sequential ? POSIX_FADV_SEQUENTIAL
         : pattern == AccessPattern::random   ? POSIX_FADV_RANDOM
                                              : POSIX_FADV_NORMAL;
}

class PreadSource final : public Source {
 public:
  explicit PreadSource(const std::string& path) : path_(path), fd_(open_readonly(path, 0, size_)) {}

  const std::string& path() const override { return path_; }
  uint64_t size() const override { return size_; }
  std::string_view backend_name() const override { return "pread"; }

  void read(uint64_t offset, uint64_t length, void* dst) override {
    check_range(path_, offset, length, size_);
    auto* out = static_cast<uint8_t*>(dst);
    while (length > 0) {
      const ssize_t n = ::pread(fd_.get(), out, length, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw io_error("read failed on", path_, errno);
      }
      if (n == 0) throw IoError("'" + path_ + "': unexpected end of file (file shrank?)", EIO);
      out += n;
      offset += static_cast<uint64_t>(n);
      length -= static_cast<uint64_t>(n);
    }
  }

  void advise(AccessPattern pattern) override {
    ::posix_fadvise(fd_.get(), 0, 0, fadvice_for(pattern));
    pattern_.store(pattern, std::memory_order_relaxed);
  }

  // Sequential: ignored, the kernel's readahead (doubled by POSIX_FADV_SEQUENTIAL) reads further
  // ahead than any hint, and hinted reads would cut in front of it in small pieces.
  void will_need(std::span<const ReadRequest> ranges) override {
    const AccessPattern pattern = pattern_.load(std::memory_order_relaxed);
    if (pattern == AccessPattern::sequential) return;
    const auto widen =
        pattern == AccessPattern::normal ? detail::Widen::dense_regions : detail::Widen::none;
    for (const auto& [b, e] : detail::plan_hints(ranges, size_, widen, &recent_))
      ::posix_fadvise(fd_.get(), static_cast<off_t>(b), static_cast<off_t>(e - b),
                      POSIX_FADV_WILLNEED);
  }
  void dont_need(std::span<const ReadRequest> ranges) override {
    fadvise_ranges(fd_.get(), size_, ranges, POSIX_FADV_DONTNEED);
  }

 private:
  std::string path_;
  uint64_t size_ = 0;
  detail::Fd fd_;
  std::atomic<AccessPattern> pattern_{AccessPattern::normal};
  detail::RecentRegions recent_;
};

class MmapSource final : public Source {
 public:
  explicit MmapSource(const std::string& path) : path_(path) {
    detail::Fd fd = open_readonly(path, 0, size_);
    if (size_ == 0) return;  // mmap of length 0 is invalid; reads of nothing need no mapping
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) throw io_error("cannot mmap", path, errno);
    base_ = static_cast<uint8_t*>(p);
    // Fewer TLB misses over a big mapping, and faults read in PMD-sized (2 MiB) chunks where the
    // filesystem supports large folios. Refused on kernels without THP for files: harmless.
    ::madvise(base_, size_, MADV_HUGEPAGE);
  }
  ~MmapSource() override {
    if (base_) ::munmap(base_, size_);
  }

  const std::string& path() const override { return path_; }
  uint64_t size() const override { return size_; }
  std::string_view backend_name() const override { return "mmap"; }
  SourceTraits traits() const override { return {.zero_copy_view = true}; }

  void read(uint64_t offset, uint64_t length, void* dst) override {
    check_range(path_, offset, length, size_);
    if (length) std::memcpy(dst, base_ + offset, length);
  }

  const uint8_t* view(uint64_t offset, uint64_t length) override {
    check_range(path_, offset, length, size_);
    return base_ + offset;
  }

  void advise(AccessPattern pattern) override {
    if (!base_) return;
    const int advice = pattern == AccessPattern::sequential ? MADV_SEQUENTIAL
                       : pattern == AccessPattern::random   ? MADV_RANDOM
                                                            : MADV_NORMAL;
    ::madvise(base_, size_, advice);  // a hint: failure changes nothing
    // With huge pages a fault reads the whole 2 MiB around it, even under MADV_RANDOM. While the
    // file fits in memory that is a win (the rest is read once, at sequential speed, and stays);
    // random faults over a bigger file would read 2 MiB per sample and have it evicted unused.
    const bool huge = !(pattern == AccessPattern::random && size_ > available_memory_bytes() / 2);
    ::madvise(base_, size_, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    huge_.store(huge, std::memory_order_relaxed);
    pattern_.store(pattern, std::memory_order_relaxed);
  }

  // Ignored on a huge-page mapping: its faults already read the 2 MiB around them in large
  // folios, and a hinted read would fill those regions with small pages instead (measured: up to
  // 1.6x slower cold quasi_random). Ignored under sequential too (the kernel's readahead does
  // better). Otherwise (random over a file too big for memory) the coalesced ranges.
  void will_need(std::span<const ReadRequest> ranges) override {
    if (!base_ || huge_.load(std::memory_order_relaxed) ||
        pattern_.load(std::memory_order_relaxed) == AccessPattern::sequential)
      return;
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    for (const auto& [b, e] : detail::plan_hints(ranges, size_, detail::Widen::none, nullptr)) {
      const uint64_t begin = b / page * page;
      ::madvise(base_ + begin, e - begin, MADV_WILLNEED);
    }
  }
  // On a shared read-only file mapping MADV_DONTNEED only drops this mapping's page-table
  // entries: nothing is lost (a later access refaults from the page cache or the file), and the
  // unmapped page-cache pages become easy for the kernel to reclaim.
  void dont_need(std::span<const ReadRequest> ranges) override {
    madvise_ranges(ranges, MADV_DONTNEED);
  }

 private:
  void madvise_ranges(std::span<const ReadRequest> ranges, int advice) {
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    for (const auto& r : ranges) {
      if (!detail::fits(r.offset, r.length, size_) || r.length == 0) continue;
      const uint64_t begin = r.offset / page * page;  // madvise wants a page-aligned start
      ::madvise(base_ + begin, r.offset + r.length - begin, advice);
    }
  }

  std::string path_;
  uint64_t size_ = 0;
  uint8_t* base_ = nullptr;
  std::atomic<bool> huge_{true};  // MADV_HUGEPAGE is on (see advise)
  std::atomic<AccessPattern> pattern_{AccessPattern::normal};
};

class MemorySource final : public Source {
 public:
  MemorySource(std::string name, std::vector<uint8_t> bytes)
      : name_(std::move(name)), bytes_(std::move(bytes)) {}
  const std::string& path() const override { return name_; }
  uint64_t size() const override { return bytes_.size(); }
  std::string_view backend_name() const override { return "memory"; }
  SourceTraits traits() const override {
    return {.local_file = false, .page_cache = false, .zero_copy_view = true};
  }
  void read(uint64_t offset, uint64_t length, void* dst) override {
    check_range(name_, offset, length, bytes_.size());
    if (length) std::memcpy(dst, bytes_.data() + offset, length);
  }
  const uint8_t* view(uint64_t offset, uint64_t length) override {
    check_range(name_, offset, length, bytes_.size());
    return bytes_.data() + offset;
  }

 private:
  std::string name_;
  std::vector<uint8_t> bytes_;
};

class FaultySource final : public Source {
 public:
  FaultySource(std::shared_ptr<Source> inner, FaultSpec spec)
      : inner_(std::move(inner)), spec_(std::move(spec)) {}
  const std::string& path() const override { return inner_->path(); }
  uint64_t size() const override { return inner_->size(); }
  std::string_view backend_name() const override { return inner_->backend_name(); }
  // Every byte goes through read(): no view, whatever the inner source can do.
  SourceTraits traits() const override {
    SourceTraits t = inner_->traits();
    t.zero_copy_view = false;
    return t;
  }
  void read(uint64_t offset, uint64_t length, void* dst) override {
    inject(offset, length);
    inner_->read(offset, length, dst);
  }
  // Faults and delays apply per request, in order; the surviving batch then goes to the inner
  // source's read_many as one batch, so its batched path (io_uring, direct) is what is tested.
  void read_many(std::span<const ReadRequest> requests) override {
    for (const auto& r : requests) inject(r.offset, r.length);
    inner_->read_many(requests);
  }
  void will_need(std::span<const ReadRequest> ranges) override { inner_->will_need(ranges); }
  void dont_need(std::span<const ReadRequest> ranges) override { inner_->dont_need(ranges); }
  void advise(AccessPattern pattern) override { inner_->advise(pattern); }

 private:
  void inject(uint64_t offset, uint64_t length) {
    if (offset < spec_.from_offset) return;
    if (spec_.delay.count() > 0) std::this_thread::sleep_for(spec_.delay);
    for (const auto& [b, e] : spec_.fail_ranges)
      if (offset < e && b < offset + length)
        throw IoError("read failed on '" + path() + "' at offset " + std::to_string(offset) +
                          ": Input/output error (injected)",
                      EIO);
  }

  std::shared_ptr<Source> inner_;
  FaultSpec spec_;
};

}  // namespace

std::unique_ptr<Source> open_memory_source(std::string name, std::vector<uint8_t> bytes) {
  return std::make_unique<MemorySource>(std::move(name), std::move(bytes));
}

std::unique_ptr<Source> wrap_faulty_source(std::shared_ptr<Source> inner, FaultSpec spec) {
  return std::make_unique<FaultySource>(std::move(inner), std::move(spec));
}

void Source::read_many(std::span<const ReadRequest> requests) {
  // Every range first: a batch with a bad request reads nothing (no partial data).
  detail::check_requests(path(), requests, size());
  for (const auto& r : requests) read(r.offset, r.length, r.dst);
}

std::string_view backend_name(Backend b) { return kBackendNames[static_cast<int>(b)]; }

Backend parse_backend(std::string_view name) {
  for (int i = 0; i < 5; ++i)
    if (kBackendNames[i] == name) return static_cast<Backend>(i);
  throw InvalidArgument("unknown backend '" + std::string(name) +
                        "' (choose auto, mmap, pread, io_uring or direct)");
}

std::unique_ptr<Source> open_mmap_source(const std::string& path) {
  return std::make_unique<MmapSource>(path);
}
std::unique_ptr<Source> open_pread_source(const std::string& path) {
  return std::make_unique<PreadSource>(path);
}

std::string backend_unavailable_reason(Backend b, const std::string& path) {
  switch (b) {
    case Backend::auto_select:
    case Backend::mmap:
    case Backend::pread:
      return "";
    case Backend::io_uring:
      return detail::uring_unavailable_reason();
    case Backend::direct:
      if (path.empty()) return "";
      try {
        open_direct_source(path, 1);
      } catch (const InvalidArgument& e) {
        return e.what();
      }
      return "";
  }
  return "";
}

Backend choose_auto_backend(const AutoSelectInputs& in) {
  // Served from memory after the first touch: mmap is the fastest warm path (no copy, no syscall).
  if (in.file_size == 0 || in.resident_fraction >= 0.9 || in.file_size <= in.available_memory / 2)
    return Backend::mmap;
  // Bigger than memory and cold: throughput comes from many reads in flight, which io_uring gives
  // one thread; a page fault (mmap) or pread has one.
  return in.io_uring_usable ? Backend::io_uring : Backend::pread;
}

std::unique_ptr<Source> open_source(const std::string& path, const SourceOptions& options) {
  detail::check_queue_depth(options.queue_depth);  // even where unused: a bad option is a bug
  if (is_remote_path(path)) return open_http_source(path, options.remote);
  Backend backend = options.backend;
  if (backend == Backend::auto_select) {
    AutoSelectInputs in;
    {
      uint64_t size = 0;
      open_readonly(path, 0, size);  // the clear "cannot open" error before any measuring
      in.file_size = size;
    }
    in.available_memory = available_memory_bytes();
    // resident_fraction maps the file: only worth it when the size alone does not decide.
    if (in.file_size > in.available_memory / 2) in.resident_fraction = resident_fraction(path);
    in.io_uring_usable = detail::uring_unavailable_reason().empty();
    backend = choose_auto_backend(in);
  }
  std::unique_ptr<Source> src;
  switch (backend) {
    case Backend::auto_select:  // resolved above
    case Backend::mmap:
      src = open_mmap_source(path);
      break;
    case Backend::pread:
      src = open_pread_source(path);
      break;
    case Backend::io_uring:
      if (options.backend == Backend::auto_select) {
        // auto must open something: a ring that cannot be created (locked-memory or ring-count
        // limits) sends it to its last resort rather than failing the open.
        try {
          src = open_uring_source(path, options.queue_depth);
        } catch (const Error&) {
          src = open_pread_source(path);
        }
      } else {
        src = open_uring_source(path, options.queue_depth);
      }
      break;
    case Backend::direct:
      src = open_direct_source(path, options.queue_depth);
      break;
  }
  src->advise(options.pattern);
  return src;
}

}  // namespace ferry
