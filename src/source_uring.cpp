// The io_uring ring (shared with the direct backend) and the buffered io_uring source.
// Without liburing every entry point reports "built without liburing" (InvalidArgument).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "ferry/error.h"
#include "source_internal.h"
#include "util.h"

#ifdef FERRY_HAVE_URING
#include <liburing.h>
#include <sys/uio.h>
#endif

namespace ferry {

namespace detail {

#ifdef FERRY_HAVE_URING

namespace {

bool disabled_by_environment() {
  const char* v = std::getenv("FERRY_DISABLE_IO_URING");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

// One SQE reads at most this much (the SQE length is 32 bits); longer reads continue from where
// the previous piece stopped, like a short read.
constexpr uint64_t kMaxPiece = uint64_t{1} << 30;
constexpr unsigned kReapBatch = 64;
// Completions that make no progress (the kernel repeating a short read) before we give up.
constexpr uint8_t kMaxStalls = 8;

// The kernel's answer, probed once: "" or why io_uring cannot be used.
std::string probe_kernel() {
  io_uring ring;
  const int r = io_uring_queue_init(4, &ring, 0);
  if (r < 0) {
    const int err = -r;
    if (err == ENOSYS)
      return "the kernel has no io_uring (io_uring_queue_init: ENOSYS; Linux >= 5.6 needed)";
    if (err == EPERM)
      return "the kernel refuses io_uring (io_uring_queue_init: EPERM; see "
             "/proc/sys/kernel/io_uring_disabled or "
             "the container's seccomp policy)";
    return std::string("io_uring_queue_init failed: ") + std::strerror(err);
  }
  std::string reason;
  io_uring_probe* probe = io_uring_get_probe_ring(&ring);
  if (probe == nullptr || !io_uring_opcode_supported(probe, IORING_OP_READ))
    reason = "the kernel's io_uring lacks IORING_OP_READ (Linux >= 5.6 needed)";
  if (probe != nullptr) io_uring_free_probe(probe);
  io_uring_queue_exit(&ring);
  return reason;
}

class UringRing final : public Ring {
 public:
  UringRing(int fd, uint32_t queue_depth, const std::string& path)
      : queue_depth_(queue_depth), path_(path) {
    io_uring_params params{};
    // Completion work runs when we enter the kernel to wait anyway, not by interrupting us.
    params.flags = IORING_SETUP_COOP_TASKRUN;
    int r = io_uring_queue_init_params(queue_depth, &ring_, &params);
    if (r == -EINVAL) {  // kernels before 5.19 do not know the flag
      params = io_uring_params{};
      r = io_uring_queue_init_params(queue_depth, &ring_, &params);
    }
    if (r < 0)
      throw io_error(
          "cannot create an io_uring (queue depth " + std::to_string(queue_depth) + ") for", path,
          -r);
    // A registered file skips the per-request fd lookup and reference counting.
    if (io_uring_register_files(&ring_, &fd, 1) == 0) {
      fd_ = 0;
      fixed_file_ = true;
    } else {
      fd_ = fd;
    }
  }
  ~UringRing() override { io_uring_queue_exit(&ring_); }
  UringRing(const UringRing&) = delete;
  UringRing& operator=(const UringRing&) = delete;

  bool register_buffer(void* p, uint64_t bytes) override {
    iovec v{p, bytes};
    fixed_buffer_ = io_uring_register_buffers(&ring_, &v, 1) == 0;
    return fixed_buffer_;
  }

  bool reusable() const override { return !broken_; }

  void run(std::span<IoOp> ops, uint32_t align, std::vector<IoFailure>& failures) override {
    const size_t n = ops.size();
    done_.assign(n, 0);
    start_.assign(n, 0);
    stalls_.assign(n, 0);
    queue_.clear();
    for (size_t i = 0; i < n; ++i)
      if (ops[i].need > 0) queue_.push_back(i);
    size_t head = 0;       // queue_[head..] wait to be prepared; resubmissions are appended
    uint32_t in_ring = 0;  // prepared and not yet completed (submitted or still in the SQ)
    while (head < queue_.size() || in_ring > 0) {
      while (head < queue_.size() && in_ring < queue_depth_) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) break;
        prepare(sqe, ops, queue_[head++], align);
        ++in_ring;
      }
      const int r = io_uring_submit_and_wait(&ring_, 1);
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
        // The ring is in an unknown state: never hand it out again.
        broken_ = true;
        throw io_error("io_uring submission failed on", path_, -r);
      }
      io_uring_cqe* cqes[kReapBatch];
      unsigned got;
      while ((got = io_uring_peek_batch_cqe(&ring_, cqes, kReapBatch)) > 0) {
        for (unsigned k = 0; k < got; ++k) complete(ops, *cqes[k], failures);
        io_uring_cq_advance(&ring_, got);
        in_ring -= got;
      }
    }
  }

 private:
  void prepare(io_uring_sqe* sqe, std::span<IoOp> ops, size_t i, uint32_t align) {
    const IoOp& op = ops[i];
    // Resume where the data stopped; O_DIRECT needs the resume offset aligned, so re-read the
    // few bytes before it rather than start unaligned.
    const uint64_t pos = done_[i] / align * align;
    start_[i] = pos;
    const auto len = static_cast<unsigned>(std::min(op.length - pos, kMaxPiece));
    if (op.fixed_buffer && fixed_buffer_)
      io_uring_prep_read_fixed(sqe, fd_, op.dst + pos, len, op.offset + pos, 0);
    else
      io_uring_prep_read(sqe, fd_, op.dst + pos, len, op.offset + pos);
    if (fixed_file_) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, i);
  }

  void complete(std::span<IoOp> ops, const io_uring_cqe& cqe, std::vector<IoFailure>& failures) {
    const size_t i = static_cast<size_t>(cqe.user_data);
    const int res = cqe.res;
    if (res == -EAGAIN || res == -EINTR) {
      if (++stalls_[i] > kMaxStalls)
        failures.push_back({i, -res});
      else
        queue_.push_back(i);
      return;
    }
    if (res < 0) {
      failures.push_back({i, -res});
      return;
    }
    if (res == 0) {  // end of file before the op's `need` bytes: the file shrank
      failures.push_back({i, 0});
      return;
    }
    const uint64_t end = start_[i] + static_cast<uint64_t>(res);
    if (end > done_[i]) {
      done_[i] = end;
      stalls_[i] = 0;
    } else if (++stalls_[i] > kMaxStalls) {
      failures.push_back({i, EIO});
      return;
    }
    if (done_[i] < ops[i].need) queue_.push_back(i);  // short read: the rest goes round again
  }

  io_uring ring_;
  uint32_t queue_depth_;
  std::string path_;
  int fd_ = -1;  // index 0 when the file is registered
  bool fixed_file_ = false;
  bool fixed_buffer_ = false;
  bool broken_ = false;
  // Per-run state, kept to reuse the allocations (a ring is used by one thread at a time).
  std::vector<uint64_t> done_, start_;
  std::vector<uint8_t> stalls_;
  std::vector<size_t> queue_;
};

// Buffered reads through io_uring; the page cache still serves (and readahead still fills) them.
class UringSource final : public Source {
 public:
  UringSource(const std::string& path, uint32_t queue_depth)
      : path_(path),
        fd_(open_readonly(path, 0, size_)),
        rings_([this, queue_depth] { return make_ring(fd_.get(), queue_depth, path_); }) {
    rings_
        .acquire();  // the first ring now: a ring that cannot be created fails the open, not a read
  }

  const std::string& path() const override { return path_; }
  uint64_t size() const override { return size_; }
  std::string_view backend_name() const override { return "io_uring"; }

  void read(uint64_t offset, uint64_t length, void* dst) override {
    const ReadRequest r{offset, length, dst};
    read_many({&r, 1});
  }

  void read_many(std::span<const ReadRequest> requests) override {
    check_requests(path_, requests, size_);
    if (pattern_.load(std::memory_order_relaxed) == AccessPattern::normal) read_around(requests);
    // The caller's buffers change with every batch: registering them (pinning pages) would cost
    // more than it saves, so plain IORING_OP_READ into them.
    std::vector<IoOp> ops;
    ops.reserve(requests.size());
    for (const auto& r : requests)
      ops.push_back({r.offset, r.length, r.length, static_cast<uint8_t*>(r.dst)});
    std::vector<IoFailure> failures;
    {
      auto ring = rings_.acquire();
      ring->run(ops, 1, failures);
    }
    if (failures.empty()) return;
    const auto first =
        std::min_element(failures.begin(), failures.end(),
                         [](const IoFailure& a, const IoFailure& b) { return a.index < b.index; });
    const ReadRequest& r = requests[first->index];
    throw_read_error(path_, r.offset, r.length, first->err);
  }

  void advise(AccessPattern pattern) override {
    const int advice = pattern == AccessPattern::sequential ? POSIX_FADV_SEQUENTIAL
                       : pattern == AccessPattern::random   ? POSIX_FADV_RANDOM
                                                            : POSIX_FADV_NORMAL;
    ::posix_fadvise(fd_.get(), 0, 0, advice);  // a hint: failure changes nothing
    pattern_.store(pattern, std::memory_order_relaxed);
  }

  // As pread's: ignored under sequential (the kernel's readahead reads further ahead); dense
  // regions hinted whole under normal, so a loader hinting batches ahead overlaps loading the
  // next quasi_random window with reading this one; everything coalesced (plan_hints).
  void will_need(std::span<const ReadRequest> ranges) override {
    const AccessPattern pattern = pattern_.load(std::memory_order_relaxed);
    if (pattern == AccessPattern::sequential) return;
    const Widen widen = pattern == AccessPattern::normal ? Widen::dense_regions : Widen::none;
    for (const auto& [b, e] : plan_hints(ranges, size_, widen, &recent_))
      ::posix_fadvise(fd_.get(), static_cast<off_t>(b), static_cast<off_t>(e - b),
                      POSIX_FADV_WILLNEED);
  }
  void dont_need(std::span<const ReadRequest> ranges) override {
    for (const auto& r : ranges)
      if (r.length != 0 && fits(r.offset, r.length, size_))
        ::posix_fadvise(fd_.get(), static_cast<off_t>(r.offset), static_cast<off_t>(r.length),
                        POSIX_FADV_DONTNEED);
  }

 private:
  // Batch read-around. The kernel reads a small random read as is (no readahead), so a deep queue
  // of sample-sized reads is all the disk sees — even when the order (quasi_random) walks a few
  // pages at a time and will want the rest of them within a few batches. When one batch touches
  // the same region kDenseRequests times, the region is asked for whole (POSIX_FADV_WILLNEED:
  // large reads, started now, into the page cache), and the batch's reads then wait on those.
  // A uniformly random batch over a big file almost never has such a region. Only under the
  // normal pattern: random wants nothing near, and under sequential the kernel reads ahead.
  void read_around(std::span<const ReadRequest> requests) {
    for (const auto& [b, e] : plan_hints(requests, size_, Widen::dense_only, &recent_))
      ::posix_fadvise(fd_.get(), static_cast<off_t>(b), static_cast<off_t>(e - b),
                      POSIX_FADV_WILLNEED);
  }

  std::string path_;
  uint64_t size_ = 0;
  Fd fd_;
  ObjectPool<Ring> rings_;
  std::atomic<AccessPattern> pattern_{AccessPattern::normal};
  RecentRegions recent_;
};

}  // namespace

std::string uring_unavailable_reason() {
  if (disabled_by_environment()) return "io_uring is disabled by FERRY_DISABLE_IO_URING";
  static const std::string kernel = probe_kernel();
  return kernel;
}

std::unique_ptr<Ring> make_ring(int fd, uint32_t queue_depth, const std::string& path) {
  check_queue_depth(queue_depth);
  if (const std::string why = uring_unavailable_reason(); !why.empty())
    throw InvalidArgument("backend 'io_uring' cannot be used for '" + path + "': " + why +
                          "; use backend='pread' or 'mmap'");
  return std::make_unique<UringRing>(fd, queue_depth, path);
}

#else  // !FERRY_HAVE_URING

std::string uring_unavailable_reason() {
  return "ferry was built without liburing (install liburing-dev and rebuild)";
}

std::unique_ptr<Ring> make_ring(int /*fd*/, uint32_t /*queue_depth*/, const std::string& path) {
  throw InvalidArgument("backend 'io_uring' cannot be used for '" + path +
                        "': " + uring_unavailable_reason() + "; use backend='pread' or 'mmap'");
}

#endif  // FERRY_HAVE_URING

}  // namespace detail

std::unique_ptr<Source> open_uring_source(const std::string& path, uint32_t queue_depth) {
  detail::check_queue_depth(queue_depth);
  if (const std::string why = detail::uring_unavailable_reason(); !why.empty())
    throw InvalidArgument("backend 'io_uring' cannot be used for '" + path + "': " + why +
                          "; use backend='pread' or 'mmap'");
#ifdef FERRY_HAVE_URING
  return std::make_unique<detail::UringSource>(path, queue_depth);
#else
  return nullptr;  // unreachable: uring_unavailable_reason() is never empty without liburing
#endif
}

}  // namespace ferry
