// Every Source backend (mmap, pread, io_uring, direct — and direct without io_uring, its pread
// engine) against the same bytes: unaligned reads, the file's last partial page, big batches,
// concurrent callers, the fault-injecting wrapper, hints; then O_DIRECT refusal, the auto rule,
// page-cache residency and eviction, and the NUMA helpers. A backend or kernel feature this
// machine lacks is skipped with the reason, never failed.
#include <gtest/gtest.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "ferry/error.h"
#include "ferry/os.h"
#include "ferry/source.h"
#include "source_internal.h"
#include "test_util.h"
#include "util.h"

namespace ferry {
namespace {

using testing::TempDir;

constexpr uint64_t kPage = 4096;
// Three MiB and change: bigger than the direct backend's 1 MiB bounce reads, not a multiple of
// any page size, so the last page is partial.
constexpr uint64_t kFileSize = (3u << 20) + 1234;

std::vector<uint8_t> random_bytes(uint64_t n, uint64_t seed) {
  detail::SplitMix64 g(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(g.next());
  return v;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// Sets FERRY_DISABLE_IO_URING for its lifetime (sources read it when they open).
class NoUring {
 public:
  NoUring() { ::setenv("FERRY_DISABLE_IO_URING", "1", 1); }
  ~NoUring() { ::unsetenv("FERRY_DISABLE_IO_URING"); }
};

struct Case {
  Backend backend;
  bool no_uring;  // direct without io_uring: its pread engine
  const char* name;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

const Case kCases[] = {{Backend::mmap, false, "mmap"},
                       {Backend::pread, false, "pread"},
                       {Backend::io_uring, false, "io_uring"},
                       {Backend::direct, false, "direct"},
                       {Backend::direct, true, "direct_no_uring"}};

class BackendRead : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    bytes_ = random_bytes(kFileSize, 42);
    path_ = dir_.file("data.bin");
    write_file(path_, bytes_);
    if (GetParam().no_uring) no_uring_.emplace();
    if (const std::string why = backend_unavailable_reason(GetParam().backend, path_); !why.empty())
      GTEST_SKIP() << why;
    src_ = open(path_);
  }

  std::unique_ptr<Source> open(const std::string& path, uint32_t queue_depth = 64) const {
    SourceOptions opt;
    opt.backend = GetParam().backend;
    opt.queue_depth = queue_depth;
    return open_source(path, opt);
  }

  // Reads [offset, offset+length) through read() and compares with the file's bytes.
  void expect_read(uint64_t offset, uint64_t length) {
    std::vector<uint8_t> out(length + 1, 0xEE);  // +1: reads must not spill past length
    src_->read(offset, length, out.data());
    ASSERT_EQ(0, std::memcmp(out.data(), bytes_.data() + offset, length))
        << "offset " << offset << " length " << length;
    ASSERT_EQ(out[length], 0xEE) << "read spilled past the buffer at offset " << offset;
  }

  TempDir dir_;
  std::string path_;
  std::vector<uint8_t> bytes_;
  std::optional<NoUring> no_uring_;
  std::unique_ptr<Source> src_;
};

TEST_P(BackendRead, NameAndSize) {
  EXPECT_EQ(src_->backend_name(), backend_name(GetParam().backend));
  EXPECT_EQ(src_->size(), kFileSize);
  EXPECT_EQ(src_->path(), path_);
}

TEST_P(BackendRead, UnalignedOffsetsAndSizes) {
  const uint64_t offsets[] = {
      0, 1, 63, 511, 512, 4095, 4096, 4097, 12345, 65535, kFileSize / 2 + 3};
  const uint64_t lengths[] = {0, 1, 7, 511, 4095, 4096, 4097, 8191, 65539};
  for (uint64_t o : offsets)
    for (uint64_t l : lengths) expect_read(o, l);
  detail::SplitMix64 g(1);
  for (int i = 0; i < 300; ++i) {
    const uint64_t o = g.below(kFileSize);
    expect_read(o, g.below(std::min<uint64_t>(kFileSize - o, 20000) + 1));
  }
}

TEST_P(BackendRead, SamplesLargerThanAPage) {
  expect_read(100, 3 * kPage + 17);
  expect_read(kPage - 1, 5 * kPage + 2);
  expect_read(3, (1u << 20) + 5);              // more than one bounce read of the direct backend
  expect_read(kPage * 7, (2u << 20) + kPage);  // aligned start, unaligned length
  expect_read(0, kFileSize);                   // the whole file in one read
}

TEST_P(BackendRead, LastPartialPage) {
  const uint64_t last_page = kFileSize / kPage * kPage;
  ASSERT_NE(last_page, kFileSize);
  expect_read(last_page, kFileSize - last_page);
  expect_read(kFileSize - 1, 1);
  expect_read(kFileSize - 100, 100);
  expect_read(last_page - 10, kFileSize - last_page + 10);
  expect_read(kFileSize, 0);
}

TEST_P(BackendRead, PastTheEndIsFormatErrorAndWritesNothing) {
  uint8_t b[2] = {0xEE, 0xEE};
  EXPECT_THROW(src_->read(kFileSize - 1, 2, b), FormatError);
  EXPECT_THROW(src_->read(kFileSize + 1, 0, b), FormatError);
  std::vector<uint8_t> good(100, 0xEE);
  const ReadRequest reqs[] = {{0, 100, good.data()}, {kFileSize - 1, 2, b}};
  EXPECT_THROW(src_->read_many(reqs), FormatError);
  // A batch with a bad request is rejected before anything is read: no partial data.
  EXPECT_EQ(good[0], 0xEE);
  EXPECT_EQ(good[99], 0xEE);
}

// Requests: random offsets and lengths (some zero, some several pages, duplicates and
// overlaps), each landing at an odd address inside one buffer; returns what read_many wrote.
void check_read_many(Source& src, const std::vector<uint8_t>& bytes, uint64_t n, uint64_t max_len,
                     uint64_t seed) {
  detail::SplitMix64 g(seed);
  std::vector<ReadRequest> reqs;
  std::vector<uint64_t> at;
  uint64_t total = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t o = (i % 50 == 7 && !reqs.empty()) ? reqs[i - 1].offset : g.below(bytes.size());
    const uint64_t l = g.below(std::min(bytes.size() - o, max_len) + 1);
    reqs.push_back({o, l, nullptr});
    at.push_back(total + g.below(8));  // odd destinations: no alignment to lean on
    total = at.back() + l + 8;
  }
  std::vector<uint8_t> out(total, 0xEE);
  for (uint64_t i = 0; i < n; ++i) reqs[i].dst = out.data() + at[i];
  src.read_many(reqs);
  for (uint64_t i = 0; i < n; ++i)
    ASSERT_EQ(0, std::memcmp(out.data() + at[i], bytes.data() + reqs[i].offset, reqs[i].length))
        << "request " << i << " offset " << reqs[i].offset << " length " << reqs[i].length;
}

TEST_P(BackendRead, ReadManyWithManyRequests) {
  check_read_many(*src_, bytes_, 2000, 5000, 3);  // far more than the queue depth
  check_read_many(*src_, bytes_, 300, 70000, 4);  // ~10 MiB: several bounce-buffer waves
  check_read_many(*src_, bytes_, 1, kFileSize, 5);
  src_->read_many({});
}

TEST_P(BackendRead, ReadManySequentialNeighbours) {
  // What a sequential batch looks like: adjacent samples (merged into one read by direct).
  std::vector<uint8_t> out(kFileSize);
  std::vector<ReadRequest> reqs;
  for (uint64_t o = 0; o < kFileSize; o += 4160)
    reqs.push_back({o, std::min<uint64_t>(4100, kFileSize - o), out.data() + o});
  src_->read_many(reqs);
  for (const auto& r : reqs)
    ASSERT_EQ(0, std::memcmp(r.dst, bytes_.data() + r.offset, r.length)) << r.offset;
}

TEST_P(BackendRead, ReadManyAlignedIntoAlignedBuffers) {
  // The direct backend's zero-copy path: offset, length and buffer all aligned.
  void* mem = nullptr;
  ASSERT_EQ(0, ::posix_memalign(&mem, kPage, 64 * kPage));
  std::unique_ptr<uint8_t, decltype(&std::free)> buf(static_cast<uint8_t*>(mem), &std::free);
  std::vector<ReadRequest> reqs;
  for (uint64_t i = 0; i < 16; ++i)
    reqs.push_back({(i * 37 % 700) * kPage, 4 * kPage, buf.get() + i * 4 * kPage});
  src_->read_many(reqs);
  for (const auto& r : reqs)
    ASSERT_EQ(0, std::memcmp(r.dst, bytes_.data() + r.offset, r.length)) << r.offset;
}

TEST_P(BackendRead, QueueDepthOne) {
  auto src = open(path_, 1);
  check_read_many(*src, bytes_, 200, 9000, 6);
}

TEST_P(BackendRead, ConcurrentReadersShareOneSource) {
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      detail::SplitMix64 g(100 + t);
      std::vector<uint8_t> buf;
      for (int it = 0; it < 60; ++it) {
        std::vector<ReadRequest> reqs;
        std::vector<std::vector<uint8_t>> outs(24);
        for (auto& o : outs) {
          const uint64_t off = g.below(kFileSize);
          o.resize(g.below(std::min<uint64_t>(kFileSize - off, 70000) + 1));
          reqs.push_back({off, o.size(), o.data()});
        }
        try {
          src_->read_many(reqs);
          for (size_t i = 0; i < reqs.size(); ++i)
            if (std::memcmp(outs[i].data(), bytes_.data() + reqs[i].offset, outs[i].size()) != 0)
              ++failures;
          const uint64_t off = g.below(kFileSize - 1);
          buf.assign(std::min<uint64_t>(kFileSize - off, 5000), 0);
          src_->read(off, buf.size(), buf.data());
          if (std::memcmp(buf.data(), bytes_.data() + off, buf.size()) != 0) ++failures;
        } catch (const std::exception&) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_P(BackendRead, FaultySourceWrapsEveryBackend) {
  std::shared_ptr<Source> inner = open(path_);
  FaultSpec spec;
  spec.fail_ranges = {{1000000, 1000100}};
  auto faulty = wrap_faulty_source(inner, spec);
  EXPECT_EQ(faulty->backend_name(), inner->backend_name());
  EXPECT_EQ(faulty->view(0, 10), nullptr);         // every byte goes through read()
  check_read_many(*faulty, bytes_, 100, 3000, 7);  // (seeded to miss the failing range)
  std::vector<uint8_t> out(200);
  try {
    faulty->read(999950, 100, out.data());
    FAIL() << "the injected failure did not fire";
  } catch (const IoError& e) {
    EXPECT_EQ(e.errno_value(), EIO);
    EXPECT_NE(std::string(e.what()).find(path_), std::string::npos);
  }
  const ReadRequest reqs[] = {{0, 100, out.data()}, {1000050, 10, out.data() + 100}};
  EXPECT_THROW(faulty->read_many(reqs), IoError);

  spec.fail_ranges.clear();
  spec.delay = std::chrono::milliseconds(3);
  auto slow = wrap_faulty_source(inner, spec);
  const auto t0 = detail::Clock::now();
  check_read_many(*slow, bytes_, 5, 3000, 8);
  EXPECT_GE(detail::seconds_since(t0), 0.015);  // each request of the batch was delayed
}

TEST_P(BackendRead, HintsKeepDataIntact) {
  for (AccessPattern p : {AccessPattern::sequential, AccessPattern::random, AccessPattern::normal})
    src_->advise(p);
  const ReadRequest hints[] = {{0, 10, nullptr},
                               {kPage + 3, 3 * kPage, nullptr},
                               {kFileSize - 5, 5, nullptr},
                               {kFileSize + 10, 10, nullptr},  // outside the file: ignored
                               {0, kFileSize, nullptr}};
  src_->will_need(hints);
  expect_read(kPage, 5000);
  src_->dont_need(hints);
  check_read_many(*src_, bytes_, 200, 9000, 9);
  const uint8_t* v = src_->view(100, 50);
  if (GetParam().backend == Backend::mmap) {
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(0, std::memcmp(v, bytes_.data() + 100, 50));
    src_->dont_need(hints);  // views stay valid: the pages refault from the page cache
    EXPECT_EQ(0, std::memcmp(v, bytes_.data() + 100, 50));
  } else {
    EXPECT_EQ(v, nullptr);
  }
}

TEST_P(BackendRead, EmptyAndTinyFiles) {
  write_file(dir_.file("empty.bin"), {});
  auto empty = open(dir_.file("empty.bin"));
  EXPECT_EQ(empty->size(), 0u);
  uint8_t b = 0;
  empty->read(0, 0, &b);
  EXPECT_THROW(empty->read(0, 1, &b), FormatError);
  const auto tiny_bytes = random_bytes(10, 3);
  write_file(dir_.file("tiny.bin"), tiny_bytes);
  auto tiny = open(dir_.file("tiny.bin"));
  std::vector<uint8_t> out(10);
  tiny->read(0, 10, out.data());
  EXPECT_EQ(out, tiny_bytes);
  tiny->read(9, 1, out.data());
  EXPECT_EQ(out[0], tiny_bytes[9]);
}

TEST_P(BackendRead, FileShrinkingUnderTheReaderIsIoError) {
  if (GetParam().backend == Backend::mmap)
    GTEST_SKIP() << "mmap: reading a truncated mapping is SIGBUS, not an error";
  ASSERT_EQ(0, ::truncate(path_.c_str(), static_cast<off_t>(kFileSize / 2)));
  std::vector<uint8_t> out(5000);
  expect_read(100, 5000);  // still there
  try {
    src_->read(kFileSize - 5000, 5000, out.data());
    FAIL() << "no error reading past the new end of the file";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("unexpected end of file"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendRead, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------------------------------------

TEST(BackendDirect, RefusingFilesystemGivesClearError) {
  // procfs refuses O_DIRECT on every kernel; tmpfs did until Linux 6.6.
  const std::string path = "/proc/version";
  SourceOptions opt;
  opt.backend = Backend::direct;
  try {
    open_source(path, opt);
    GTEST_SKIP() << path << " accepted O_DIRECT on this kernel";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'/proc/version': the filesystem refuses O_DIRECT"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find("use backend='pread' or 'mmap'"), std::string::npos) << msg;
  }
  EXPECT_FALSE(backend_unavailable_reason(Backend::direct, path).empty());
}

TEST(BackendDirect, TmpfsFile) {
  if (!std::filesystem::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm here";
  const std::string path = "/dev/shm/ferry-backend-test-" + std::to_string(::getpid());
  const auto bytes = random_bytes(10000, 5);
  write_file(path, bytes);
  struct Remove {
    std::string p;
    ~Remove() { std::filesystem::remove(p); }
  } remove{path};
  SourceOptions opt;
  opt.backend = Backend::direct;
  std::unique_ptr<Source> src;
  try {
    src = open_source(path, opt);
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(
        msg.find("'" + path +
                 "': the filesystem refuses O_DIRECT (tmpfs?); use backend='pread' or 'mmap'"),
        std::string::npos)
        << msg;
    return;
  }
  // Linux >= 6.6 lets tmpfs accept O_DIRECT (it has no device to align to): then it must work.
  std::vector<uint8_t> out(bytes.size());
  src->read(3, 9000, out.data());
  EXPECT_EQ(0, std::memcmp(out.data(), bytes.data() + 3, 9000));
  GTEST_SKIP()
      << "tmpfs accepts O_DIRECT on this kernel (Linux >= 6.6) and reads were correct; the refusal "
         "message is checked by RefusingFilesystemGivesClearError";
}

TEST(BackendUring, UnusableIoUringIsAClearErrorAndAutoAvoidsIt) {
  TempDir dir;
  const std::string path = dir.file("f.bin");
  write_file(path, random_bytes(5000, 1));
  NoUring no_uring;
  const std::string why = backend_unavailable_reason(Backend::io_uring);
  EXPECT_NE(why.find("FERRY_DISABLE_IO_URING"), std::string::npos) << why;
  SourceOptions opt;
  opt.backend = Backend::io_uring;
  try {
    open_source(path, opt);
    FAIL() << "io_uring opened although disabled";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("backend 'io_uring' cannot be used"), std::string::npos) << msg;
    EXPECT_NE(msg.find("FERRY_DISABLE_IO_URING"), std::string::npos) << msg;
  }
  opt.backend = Backend::auto_select;
  EXPECT_NE(open_source(path, opt)->backend_name(), "io_uring");
}

TEST(BackendUring, KernelSupport) {
  const std::string why = backend_unavailable_reason(Backend::io_uring);
  if (!why.empty()) {
    // The machine's own refusal must say so, and open must repeat it.
    TempDir dir;
    write_file(dir.file("f.bin"), random_bytes(10, 1));
    EXPECT_THROW(open_uring_source(dir.file("f.bin")), InvalidArgument);
    GTEST_SKIP() << "io_uring unusable here: " << why;
  }
  SUCCEED() << "io_uring is usable here";
}

TEST(BackendAuto, Rule) {
  const uint64_t gib = uint64_t{1} << 30;
  // Fits comfortably in memory, or already cached: mmap.
  EXPECT_EQ(choose_auto_backend({gib, 0.0, 8 * gib, true}), Backend::mmap);
  EXPECT_EQ(choose_auto_backend({100 * gib, 0.95, 8 * gib, true}), Backend::mmap);
  EXPECT_EQ(choose_auto_backend({0, 0.0, 0, false}), Backend::mmap);
  // Big and cold: io_uring when usable, else pread.
  EXPECT_EQ(choose_auto_backend({100 * gib, 0.1, 8 * gib, true}), Backend::io_uring);
  EXPECT_EQ(choose_auto_backend({5 * gib, 0.0, 8 * gib, true}), Backend::io_uring);
  EXPECT_EQ(choose_auto_backend({100 * gib, 0.1, 8 * gib, false}), Backend::pread);
}

TEST(BackendAuto, SmallFileOpensMmapAndOptionsAreChecked) {
  TempDir dir;
  const std::string path = dir.file("f.bin");
  write_file(path, random_bytes(5000, 1));
  EXPECT_EQ(open_source(path)->backend_name(), "mmap");
  SourceOptions opt;
  opt.queue_depth = 0;
  EXPECT_THROW(open_source(path, opt), InvalidArgument);
  opt.queue_depth = 5000;
  EXPECT_THROW(open_source(path, opt), InvalidArgument);
  EXPECT_THROW(open_source(dir.file("missing.bin")), IoError);
  for (int b = 0; b < 5; ++b)
    EXPECT_EQ(parse_backend(backend_name(static_cast<Backend>(b))), static_cast<Backend>(b));
  EXPECT_THROW(parse_backend("uring"), InvalidArgument);
}

// ---------------------------------------------------------------------------------------------

TEST(BackendHints, PlanHintsCoalescesAndWidensDenseRegions) {
  using detail::kHintRegion;
  using detail::Widen;
  const uint64_t size = 10 * kHintRegion + 5000;
  using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;
  // Sparse ranges: kept, sorted, merged only when close; out-of-file and empty ones dropped.
  const std::vector<ReadRequest> sparse = {{5 * kHintRegion, 100, nullptr},
                                           {kHintRegion, 100, nullptr},
                                           {kHintRegion + 1000, 100, nullptr},
                                           {size, 1, nullptr},
                                           {3 * kHintRegion, 0, nullptr}};
  EXPECT_EQ(detail::plan_hints(sparse, size, Widen::none, nullptr),
            (Ranges{{kHintRegion, kHintRegion + 1100}, {5 * kHintRegion, 5 * kHintRegion + 100}}));
  EXPECT_EQ(detail::plan_hints(sparse, size, Widen::dense_only, nullptr), Ranges{});
  // Four samples in region 2 (a quasi_random batch): the whole region; region 7's one stays.
  std::vector<ReadRequest> batch;
  for (uint64_t i = 0; i < 4; ++i) batch.push_back({2 * kHintRegion + i * 300000, 4096, nullptr});
  batch.push_back({7 * kHintRegion + 10, 50, nullptr});
  batch.push_back({10 * kHintRegion, 5000, nullptr});  // the last, partial region
  EXPECT_EQ(detail::dense_regions(batch, size), std::vector<uint64_t>{2});
  EXPECT_EQ(detail::plan_hints(batch, size, Widen::dense_regions, nullptr),
            (Ranges{{2 * kHintRegion, 3 * kHintRegion},
                    {7 * kHintRegion + 10, 7 * kHintRegion + 60},
                    {10 * kHintRegion, size}}));
  EXPECT_EQ(detail::plan_hints(batch, size, Widen::none, nullptr).size(), 6u);
  // A few pre-merged ranges covering much of a region count as dense too.
  const std::vector<ReadRequest> merged = {{4 * kHintRegion, kHintRegion / 4, nullptr}};
  EXPECT_EQ(detail::dense_regions(merged, size), std::vector<uint64_t>{4});
  // A region hinted lately is not hinted again (nor are its samples).
  detail::RecentRegions recent;
  EXPECT_EQ(detail::plan_hints(batch, size, Widen::dense_only, &recent),
            (Ranges{{2 * kHintRegion, 3 * kHintRegion}}));
  EXPECT_EQ(detail::plan_hints(batch, size, Widen::dense_only, &recent), Ranges{});
  EXPECT_EQ(detail::plan_hints(batch, size, Widen::dense_regions, &recent).size(), 2u);
}

// Why eviction cannot be observed on the filesystem holding `dir`, or "".
std::string eviction_unobservable(const std::string& dir) {
  struct statfs fs;
  if (::statfs(dir.c_str(), &fs) != 0) return "cannot statfs " + dir;
  if (fs.f_type == 0x01021994)
    return dir + " is on tmpfs: its page cache is the only copy and is never dropped";
  if (fs.f_type == 0x794c7630)
    return dir + " is on overlayfs: POSIX_FADV_DONTNEED does not reach the lower files";
  return "";
}

class BackendResidency : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = eviction_unobservable(dir_.path().string()); !why.empty())
      GTEST_SKIP() << why;
    bytes_ = random_bytes(8u << 20, 11);
    path_ = dir_.file("cold.bin");
    write_file(path_, bytes_);
    evict_from_page_cache(path_);
    const double r = resident_fraction(path_);
    if (r > 0.05)
      GTEST_SKIP() << "the filesystem kept " << r * 100
                   << "% of the file cached after fsync + POSIX_FADV_DONTNEED";
  }
  TempDir dir_;
  std::string path_;
  std::vector<uint8_t> bytes_;
};

TEST_F(BackendResidency, EvictThenReadThenEvict) {
  EXPECT_LT(resident_fraction(path_), 0.01);
  auto src = open_pread_source(path_);
  std::vector<uint8_t> out(bytes_.size());
  src->read(0, out.size(), out.data());
  EXPECT_EQ(out, bytes_);
  EXPECT_GT(resident_fraction(path_), 0.99);
  evict_from_page_cache(path_);
  EXPECT_LT(resident_fraction(path_), 0.01);
}

TEST_F(BackendResidency, DontNeedDropsCachedPages) {
  for (Backend b : {Backend::pread, Backend::io_uring}) {
    if (!backend_unavailable_reason(b, path_).empty()) continue;
    auto src = open_source(path_, {b});
    std::vector<uint8_t> out(bytes_.size());
    src->read(0, out.size(), out.data());
    EXPECT_GT(resident_fraction(path_), 0.99) << backend_name(b);
    const ReadRequest all{0, bytes_.size(), nullptr};
    src->dont_need({&all, 1});
    EXPECT_LT(resident_fraction(path_), 0.01) << backend_name(b);
  }
}

TEST_F(BackendResidency, DirectReadsBypassThePageCache) {
  if (const std::string why = backend_unavailable_reason(Backend::direct, path_); !why.empty())
    GTEST_SKIP() << why;
  auto src = open_direct_source(path_);
  check_read_many(*src, bytes_, 500, 20000, 12);
  std::vector<uint8_t> out(bytes_.size());
  src->read(0, out.size(), out.data());
  EXPECT_EQ(out, bytes_);
  EXPECT_LT(resident_fraction(path_), 0.01);
}

TEST_F(BackendResidency, MmapFaultsPagesIn) {
  auto src = open_mmap_source(path_);
  const uint8_t* v = src->view(0, bytes_.size());
  uint64_t sum = 0;
  for (uint64_t i = 0; i < bytes_.size(); i += kPage) sum += v[i];
  EXPECT_GT(sum, 0u);
  EXPECT_GT(resident_fraction(path_), 0.99);
}

TEST(BackendOs, ResidencyEdgeCases) {
  TempDir dir;
  write_file(dir.file("empty.bin"), {});
  EXPECT_EQ(resident_fraction(dir.file("empty.bin")), 1.0);
  EXPECT_THROW(resident_fraction(dir.file("missing.bin")), IoError);
  EXPECT_THROW(evict_from_page_cache(dir.file("missing.bin")), IoError);
  EXPECT_GT(available_memory_bytes(), 0u);
}

TEST(BackendOs, NumaThroughTheApi) {
  const int nodes = numa_node_count();
  ASSERT_GE(nodes, 1);
  pin_current_thread_to_node(-1);  // "no preference": nothing
  pin_current_thread_to_node(0);
  EXPECT_THROW(pin_current_thread_to_node(nodes), InvalidArgument);
  EXPECT_EQ(allocate_on_node(0, 0), nullptr);
  for (int node : {-1, 0, nodes - 1}) {
    const size_t bytes = (1u << 20) + 123;
    auto* p = static_cast<uint8_t*>(allocate_on_node(bytes, node));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kPage, 0u);
    std::memset(p, 0x5A, bytes);
    EXPECT_EQ(p[bytes - 1], 0x5A);
    free_on_node(p, bytes);
  }
  EXPECT_THROW(allocate_on_node(100, nodes), InvalidArgument);
}

TEST(BackendOs, PciDeviceNode) {
  for (const char* bad :
       {"", "../../etc/passwd", "zz:00.0", "0000:3b:00", "0000:3b:00.8", "1:2:3:4.0"})
    EXPECT_THROW(node_of_pci_device(bad), InvalidArgument) << bad;
  EXPECT_EQ(node_of_pci_device("0000:ff:1f.7"), -1);  // no such device
  const int nodes = numa_node_count();
  // Every spelling CUDA and lspci use is accepted.
  for (const char* ok : {"3b:00.0", "0000:3B:00.0", "00000000:3b:00.0"}) {
    const int n = node_of_pci_device(ok);
    EXPECT_GE(n, -1);
    EXPECT_LT(n, nodes);
  }
  std::error_code ec;
  for (const auto& dev : std::filesystem::directory_iterator("/sys/bus/pci/devices", ec)) {
    const int n = node_of_pci_device(dev.path().filename().string());
    EXPECT_GE(n, -1);
    EXPECT_LT(n, nodes);
    if (nodes == 1) {
      EXPECT_EQ(n, -1) << "single-node machines report -1";
    }
  }
}

}  // namespace
}  // namespace ferry
