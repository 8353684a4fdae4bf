// The O_DIRECT source: reads bypass the page cache, so they must be aligned (offset, length and
// buffer address); ferry's samples are not, so reads are rounded out into aligned bounce buffers
// and trimmed into the caller's. read_many sorts and merges neighbouring requests first: one
// aligned read serves every sample it covers.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "ferry/error.h"
#include "source_internal.h"
#include "util.h"

namespace ferry {

namespace detail {

namespace {

// Bounce memory per concurrent caller: room for a full queue of 128 KiB reads (a loader batch
// of 64 samples of 64 KiB needs 4.2 MiB: a smaller buffer would send its last read alone in a
// second wave, one more device round trip per batch), within these bounds. A batch needing more
// runs in several waves.
constexpr uint64_t kArenaBytesPerQueueEntry = 128 * 1024;
constexpr uint64_t kMinArenaBytes = uint64_t{4} << 20;
constexpr uint64_t kMaxArenaBytes = uint64_t{64} << 20;
// Largest single bounce read, merged or not: bigger requests are read in pieces of this size.
constexpr uint64_t kMaxBounceRead = uint64_t{1} << 20;
// Requests whose aligned ranges are at most this far apart are read as one: below this the
// extra bytes cost less than another request to the device.
constexpr uint64_t kMergeGap = 0;
// Alignment when the filesystem does not say (statx STATX_DIOALIGN needs Linux 6.1).
constexpr uint32_t kDefaultAlign = 4096;
// pread reads at most this much per call (Linux caps a read at 2 GiB - 4 KiB anyway).
constexpr uint64_t kMaxPreadPiece = uint64_t{1} << 30;

uint64_t align_down(uint64_t v, uint64_t a) { return v / a * a; }

std::string refusal_message(const std::string& path) {
  return "'" + path + "': the filesystem refuses O_DIRECT (tmpfs?); use backend='pread' or 'mmap'";
}

struct AlignedFree {
  void operator()(uint8_t* p) const noexcept { std::free(p); }
};
using AlignedBytes = std::unique_ptr<uint8_t, AlignedFree>;

AlignedBytes aligned_bytes(uint64_t bytes, uint64_t alignment) {
  void* p = nullptr;
  if (::posix_memalign(&p, alignment, align_up(bytes, alignment)) != 0) throw std::bad_alloc();
  return AlignedBytes(static_cast<uint8_t*>(p));
}

// The engine when io_uring is unusable: each op with pread, in order. Same contract as
// Ring::run (short reads continue from an aligned resume point; failures are appended).
void pread_ops(int fd, std::span<IoOp> ops, uint32_t align, std::vector<IoFailure>& failures) {
  for (size_t i = 0; i < ops.size(); ++i) {
    const IoOp& op = ops[i];
    uint64_t done = 0;
    int stalls = 0;
    while (done < op.need) {
      const uint64_t pos = align_down(done, align);
      const ssize_t n = ::pread(fd, op.dst + pos, std::min(op.length - pos, kMaxPreadPiece),
                                static_cast<off_t>(op.offset + pos));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        failures.push_back({i, n < 0 ? errno : 0});
        break;
      }
      if (pos + static_cast<uint64_t>(n) <= done && ++stalls > 8) {
        failures.push_back({i, EIO});
        break;
      }
      done = std::max(done, pos + static_cast<uint64_t>(n));
    }
  }
}

// One concurrent caller's bounce buffer and (when io_uring is usable) ring, with the buffer
// registered so the kernel need not pin its pages on every read.
struct DirectWorker {
  AlignedBytes arena;
  uint64_t arena_size = 0;
  std::unique_ptr<Ring> ring;
  bool reusable() const { return !ring || ring->reusable(); }
};

// A part of one request that one bounce read covers: file bytes [begin, end) of request `req`.
struct Piece {
  uint64_t begin, end;
  size_t req;
};

// One bounce read: aligned file range [abegin, aend) covering pieces [first, last) (sorted by
// begin), landing at arena offset `at`.
struct Group {
  uint64_t abegin, aend, data_end;
  size_t first, last;
  uint64_t at = 0;
};

class DirectSource final : public Source {
 public:
  DirectSource(const std::string& path, uint32_t queue_depth)
      : path_(path), queue_depth_(queue_depth) {
    {  // refuse a FIFO/directory/device first (an O_DIRECT open of a FIFO would block)
      uint64_t size = 0;
      detail::open_readonly(path, 0, size);
    }
    fd_ = Fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT));
    if (!fd_) {
      const int err = errno;
      // EINVAL from open with O_DIRECT is the filesystem refusing it if a plain open works.
      if (err == EINVAL && Fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)))
        throw InvalidArgument(refusal_message(path));
      throw io_error("cannot open", path, err);
    }
    detail::check_regular(path, fd_.get(), size_);
    find_alignment();
    max_bounce_read_ = align_up(kMaxBounceRead, offset_align_);
    arena_size_ = std::max(std::clamp(uint64_t{queue_depth} * kArenaBytesPerQueueEntry,
                                      kMinArenaBytes, kMaxArenaBytes),
                           max_bounce_read_ + memory_align_);
    use_ring_ = uring_unavailable_reason().empty();
    probe_read();
  }

  const std::string& path() const override { return path_; }
  uint64_t size() const override { return size_; }
  std::string_view backend_name() const override { return "direct"; }
  SourceTraits traits() const override { return {.page_cache = false}; }

  void read(uint64_t offset, uint64_t length, void* dst) override {
    const ReadRequest r{offset, length, dst};
    read_many({&r, 1});
  }

  void read_many(std::span<const ReadRequest> requests) override {
    check_requests(path_, requests, size_);
    std::vector<IoOp> ops;         // what the engine runs this wave
    std::vector<size_t> op_req;    // direct ops: their request; bounce ops: SIZE_MAX
    std::vector<size_t> op_group;  // bounce ops: their group
    std::vector<Piece> pieces;
    for (size_t i = 0; i < requests.size(); ++i) {
      const ReadRequest& r = requests[i];
      if (r.length == 0) continue;
      if (r.offset % offset_align_ == 0 && r.length % offset_align_ == 0 &&
          reinterpret_cast<uintptr_t>(r.dst) % memory_align_ == 0) {
        // Already aligned: straight into the caller's buffer, no copy.
        ops.push_back({r.offset, r.length, r.length, static_cast<uint8_t*>(r.dst)});
        op_req.push_back(i);
        op_group.push_back(SIZE_MAX);
        continue;
      }
      for (uint64_t pos = r.offset, end = r.offset + r.length; pos < end;) {
        const uint64_t piece_end = std::min(end, align_down(pos, offset_align_) + max_bounce_read_);
        pieces.push_back({pos, piece_end, i});
        pos = piece_end;
      }
    }
    std::sort(pieces.begin(), pieces.end(),
              [](const Piece& a, const Piece& b) { return a.begin < b.begin; });
    std::vector<Group> groups;
    for (size_t p = 0; p < pieces.size(); ++p) {
      const uint64_t ab = align_down(pieces[p].begin, offset_align_);
      const uint64_t ae = align_up(pieces[p].end, offset_align_);
      if (!groups.empty()) {
        Group& g = groups.back();
        if (ab <= g.aend + kMergeGap && std::max(g.aend, ae) - g.abegin <= max_bounce_read_) {
          g.aend = std::max(g.aend, ae);
          g.data_end = std::max(g.data_end, pieces[p].end);
          g.last = p + 1;
          continue;
        }
      }
      groups.push_back({ab, ae, pieces[p].end, p, p + 1});
    }

    std::vector<IoFailure> failures;
    std::vector<std::pair<size_t, int>> failed_requests;  // (request, errno)
    auto worker = workers_.acquire();
    const auto run_wave = [&](size_t group_begin, size_t group_end) {
      for (size_t g = group_begin; g < group_end; ++g) {
        const Group& gr = groups[g];
        // need: up to the last byte a caller wants; the kernel stops short at the end of file.
        ops.push_back({gr.abegin, gr.aend - gr.abegin, gr.data_end - gr.abegin,
                       worker->arena.get() + gr.at, true});
        op_req.push_back(SIZE_MAX);
        op_group.push_back(g);
      }
      failures.clear();
      if (worker->ring)
        worker->ring->run(ops, offset_align_, failures);
      else
        pread_ops(fd_.get(), ops, offset_align_, failures);
      std::vector<bool> op_failed(ops.size(), false);
      for (const IoFailure& f : failures) {
        op_failed[f.index] = true;
        if (op_req[f.index] != SIZE_MAX) {
          failed_requests.emplace_back(op_req[f.index], f.err);
        } else {
          const Group& gr = groups[op_group[f.index]];
          for (size_t p = gr.first; p < gr.last; ++p)
            failed_requests.emplace_back(pieces[p].req, f.err);
        }
      }
      for (size_t o = 0; o < ops.size(); ++o) {
        if (op_failed[o] || op_group[o] == SIZE_MAX) continue;
        const Group& gr = groups[op_group[o]];
        for (size_t p = gr.first; p < gr.last; ++p) {
          const Piece& pc = pieces[p];
          const ReadRequest& r = requests[pc.req];
          std::memcpy(static_cast<uint8_t*>(r.dst) + (pc.begin - r.offset),
                      ops[o].dst + (pc.begin - gr.abegin), pc.end - pc.begin);
        }
      }
      ops.clear();
      op_req.clear();
      op_group.clear();
    };
    // Waves: as many groups as the bounce buffer holds (the direct ops ride with the first).
    size_t wave_begin = 0;
    uint64_t used = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      const uint64_t at = align_up(used, memory_align_);
      const uint64_t len = groups[g].aend - groups[g].abegin;
      if (at + len > worker->arena_size) {
        run_wave(wave_begin, g);
        wave_begin = g;
        groups[g].at = 0;
        used = len;
      } else {
        groups[g].at = at;
        used = at + len;
      }
    }
    if (!ops.empty() || wave_begin < groups.size()) run_wave(wave_begin, groups.size());

    if (failed_requests.empty()) return;
    const auto [first, err] = *std::min_element(failed_requests.begin(), failed_requests.end());
    throw_read_error(path_, requests[first].offset, requests[first].length, err);
  }

  // The page cache is bypassed: readahead hints have nothing to act on. dont_need still drops
  // pages other (buffered) readers of the file left behind.
  void dont_need(std::span<const ReadRequest> ranges) override {
    for (const auto& r : ranges)
      if (r.length != 0 && fits(r.offset, r.length, size_))
        ::posix_fadvise(fd_.get(), static_cast<off_t>(r.offset), static_cast<off_t>(r.length),
                        POSIX_FADV_DONTNEED);
  }

 private:
  void find_alignment() {
    offset_align_ = kDefaultAlign;
    memory_align_ = kDefaultAlign;
#ifdef STATX_DIOALIGN
    struct statx sx;
    if (::statx(fd_.get(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
        (sx.stx_mask & STATX_DIOALIGN)) {
      // 0 is the filesystem saying it has no direct I/O for this file.
      if (sx.stx_dio_offset_align == 0) throw InvalidArgument(refusal_message(path_));
      offset_align_ = sx.stx_dio_offset_align;
      // Page-aligned bounce buffers satisfy every device; only a stricter one raises it.
      memory_align_ = std::max<uint32_t>(sx.stx_dio_mem_align, kDefaultAlign);
    }
#endif
    if (!is_pow2(offset_align_) || !is_pow2(memory_align_))
      throw IoError(
          "'" + path_ +
              "': the filesystem reports a direct I/O alignment that is not a power of two",
          EINVAL);
  }

  // Some filesystems accept O_DIRECT at open and refuse it at the first read (FUSE): find out
  // now, with one aligned block, so the error names the cause instead of a failing batch.
  void probe_read() {
    if (size_ == 0) return;
    AlignedBytes block = aligned_bytes(offset_align_, memory_align_);
    ssize_t n;
    do {
      n = ::pread(fd_.get(), block.get(), offset_align_, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EINVAL) throw InvalidArgument(refusal_message(path_));
    if (n < 0) throw io_error("cannot read", path_, errno);
  }

  std::unique_ptr<DirectWorker> make_worker() {
    auto w = std::make_unique<DirectWorker>();
    w->arena = aligned_bytes(arena_size_, memory_align_);
    w->arena_size = arena_size_;
    if (use_ring_) {
      w->ring = make_ring(fd_.get(), queue_depth_, path_);
      w->ring->register_buffer(w->arena.get(), arena_size_);  // refused: plain reads, still correct
    }
    return w;
  }

  std::string path_;
  uint32_t queue_depth_;
  uint64_t size_ = 0;
  Fd fd_;
  uint32_t offset_align_ = kDefaultAlign;  // file offsets and lengths
  uint32_t memory_align_ = kDefaultAlign;  // buffer addresses
  uint64_t max_bounce_read_ = kMaxBounceRead;
  uint64_t arena_size_ = kMinArenaBytes;
  bool use_ring_ = false;
  ObjectPool<DirectWorker> workers_{[this] { return make_worker(); }};
};

}  // namespace

}  // namespace detail

std::unique_ptr<Source> open_direct_source(const std::string& path, uint32_t queue_depth) {
  detail::check_queue_depth(queue_depth);
  return std::make_unique<detail::DirectSource>(path, queue_depth);
}

}  // namespace ferry
