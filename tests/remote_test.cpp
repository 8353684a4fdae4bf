// The remote source against a real server: Debian's nginx on 127.0.0.1, behind the seeded
// fault-injecting proxy of tests/remote/fixture.py. Every read goes through the proxy.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <filesystem>
#include <fstream>

#include "ferry/error.h"
#include "ferry/loader.h"
#include "ferry/reader.h"
#include "ferry/remote.h"
#include "ferry/source.h"
#include "remote/fixture.h"
#include "sources/disk_cache.h"
#include "test_util.h"

namespace ferry {
namespace {

using testing::RemoteFixture;
using testing::TempDir;

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

// Every batch's bytes, field by field, for one epoch.
std::vector<std::vector<uint8_t>> epoch_bytes(Loader& loader) {
  std::vector<std::vector<uint8_t>> out;
  while (Batch b = loader.next()) {
    std::vector<uint8_t> bytes;
    for (size_t f = 0; f < b.num_fields(); ++f) {
      const FieldBuffer& fb = b.field(f);
      bytes.insert(bytes.end(), fb.data, fb.data + fb.bytes(b.size()));
    }
    out.push_back(std::move(bytes));
  }
  return out;
}

RemoteOptions small_blocks() {
  RemoteOptions o;
  o.block_bytes = 64 * 1024;  // many blocks for a small test file
  o.max_range_bytes = 256 * 1024;
  o.backoff = std::chrono::milliseconds(1);
  return o;
}

class RemoteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    local_ = testing::synthetic_file(root_, "data.ferry", 3000, 700, 64 * 1024, true);
  }
  TempDir root_;
  std::string local_;
};

TEST_F(RemoteTest, SourceReadsTheSameBytesAsTheFile) {
  RemoteFixture fx(root_.path().string());
  auto src = open_http_source(fx.url("data.ferry"), small_blocks());
  const auto want = file_bytes(local_);
  ASSERT_EQ(src->size(), want.size());
  EXPECT_EQ(src->backend_name(), "http");
  EXPECT_FALSE(src->traits().local_file);
  EXPECT_TRUE(src->traits().prefetch_always);
  std::vector<uint8_t> got(want.size());
  src->read(0, got.size(), got.data());
  EXPECT_EQ(got, want);
  // Odd ranges across block edges.
  for (uint64_t off : {uint64_t{1}, uint64_t{65535}, uint64_t{65536 * 3 - 7}}) {
    std::vector<uint8_t> part(100000);
    if (off + part.size() > want.size()) continue;
    src->read(off, part.size(), part.data());
    EXPECT_TRUE(std::equal(part.begin(), part.end(), want.begin() + static_cast<long>(off)));
  }
  EXPECT_THROW(src->read(want.size() - 1, 2, got.data()), FormatError);
}

TEST_F(RemoteTest, LoaderMatchesTheLocalFileForEveryOrderAndBackend) {
  RemoteFixture fx(root_.path().string());
  for (OrderKind order : {OrderKind::sequential, OrderKind::random, OrderKind::quasi_random}) {
    for (Backend backend : {Backend::mmap, Backend::pread}) {
      LoaderOptions opt;
      opt.batch_size = 64;
      opt.order = order;
      opt.seed = 3;
      opt.num_threads = 2;
      opt.backend = backend;
      Loader local(local_, opt);
      opt.remote = small_blocks();
      Loader remote(fx.url("data.ferry"), opt);
      EXPECT_EQ(epoch_bytes(remote), epoch_bytes(local)) << order_name(order);
      const Metrics m = remote.metrics();
      EXPECT_GT(m.remote.requests, 0u);
      EXPECT_GT(m.remote.bytes, 0u);
    }
  }
}

TEST_F(RemoteTest, FaultsAreRetriedAndCounted) {
  RemoteFixture fx(root_.path().string(), 0, 0, 11);
  LoaderOptions opt;
  opt.batch_size = 100;
  opt.order = OrderKind::random;
  opt.remote = small_blocks();
  opt.remote.retries = 30;
  Loader local(local_, opt);
  const auto want = epoch_bytes(local);
  auto reader = Reader::open(fx.url("data.ferry"), SourceOptions{.remote = opt.remote});
  fx.control("__faults?reset=0.1&error=0.1&truncate=0.1&seed=5");
  Loader remote(reader, opt);
  EXPECT_EQ(epoch_bytes(remote), want);
  EXPECT_GT(remote.metrics().remote.retries, 0u);
  EXPECT_NE(remote.report().find("retries"), std::string::npos);
}

TEST_F(RemoteTest, PersistentFaultsBecomeTheSamplesError) {
  RemoteFixture fx(root_.path().string());
  RemoteOptions ro = small_blocks();
  ro.retries = 2;
  auto reader = Reader::open(fx.url("data.ferry"), SourceOptions{.remote = ro});
  fx.control("__faults?error=1");
  LoaderOptions opt;
  opt.batch_size = 100;
  Loader loader(reader, opt);
  try {
    loader.next();
    FAIL() << "expected the 503s to surface";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP 503"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("data.ferry"), std::string::npos) << e.what();
  }
}

TEST_F(RemoteTest, NotFoundAndForbiddenFailAtOpenWithUrlAndStatus) {
  RemoteFixture fx(root_.path().string());
  for (const auto& [name, status] :
       {std::pair{"missing.ferry", "404"}, std::pair{"forbidden/data.ferry", "403"}}) {
    try {
      Reader::open(fx.url(name));
      FAIL() << name;
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find(fx.url(name)), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(status), std::string::npos) << e.what();
    }
  }
}

TEST_F(RemoteTest, HeaderValuesFromTheEnvironmentNeverAppearInErrors) {
  RemoteFixture fx(root_.path().string());
  RemoteOptions ro;
  ro.headers = {{"Authorization", "env:FERRY_TEST_TOKEN_UNSET"}};
  try {
    open_http_source(fx.url("data.ferry"), ro);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("FERRY_TEST_TOKEN_UNSET"), std::string::npos);
  }
  ::setenv("FERRY_TEST_TOKEN", "Bearer s3cr3t", 1);
  ro.headers = {{"Authorization", "env:FERRY_TEST_TOKEN"}};
  auto src = open_http_source(fx.url("data.ferry"), ro);  // the header is sent; nginx ignores it
  EXPECT_EQ(src->size(), std::filesystem::file_size(local_));
  try {
    open_http_source(fx.url("missing.ferry"), ro);
    FAIL();
  } catch (const IoError& e) {
    EXPECT_EQ(std::string(e.what()).find("s3cr3t"), std::string::npos) << e.what();
  }
}

TEST_F(RemoteTest, AnObjectChangedDuringTheRunFails) {
  RemoteFixture fx(root_.path().string());
  RemoteOptions ro = small_blocks();
  ro.memory_bytes = 64 * 1024;  // nothing kept: every read goes to the server
  auto src = open_http_source(fx.url("data.ferry"), ro);
  std::vector<uint8_t> buf(1000);
  src->read(0, buf.size(), buf.data());
  // Replace the object (new content and size: a new ETag).
  testing::synthetic_file(root_, "data.ferry", 3001, 700, 64 * 1024, true, 99);
  try {
    src->read(200000, buf.size(), buf.data());
    FAIL() << "read a changed object";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("object changed during the run"), std::string::npos)
        << e.what();
  }
}

TEST_F(RemoteTest, SecondEpochFromTheDiskCacheReadsNoRemoteByte) {
  RemoteFixture fx(root_.path().string());
  TempDir cache;
  LoaderOptions opt;
  opt.batch_size = 64;
  opt.order = OrderKind::quasi_random;
  opt.remote = small_blocks();
  opt.remote.memory_bytes = 2 * 64 * 1024;  // memory holds almost nothing: the disk serves
  opt.remote.cache_dir = cache.path().string();
  opt.remote.cache_bytes = 64 << 20;
  Loader local(local_, opt);
  const auto want = epoch_bytes(local);
  Loader remote(fx.url("data.ferry"), opt);
  EXPECT_EQ(epoch_bytes(remote), want);
  const long after_first = fx.requests();
  remote.set_epoch(0);
  EXPECT_EQ(epoch_bytes(remote), want);
  EXPECT_EQ(fx.requests(), after_first);  // not one request in the second epoch
  EXPECT_GT(remote.metrics().remote.cache_hits, 0u) << remote.report();

  // A restart (new process state, same cache dir) reuses every block: only the HEAD goes out.
  fx.control("__reset_stats");
  Loader again(fx.url("data.ferry"), opt);
  EXPECT_EQ(epoch_bytes(again), want);
  EXPECT_EQ(fx.requests(), 1);
  EXPECT_EQ(again.metrics().remote.cache_misses, 0u);
}

TEST_F(RemoteTest, TornOrCorruptCacheEntriesAreRefetched) {
  RemoteFixture fx(root_.path().string());
  TempDir cache;
  RemoteOptions ro = small_blocks();
  ro.memory_bytes = 64 * 1024;
  ro.cache_dir = cache.path().string();
  ro.cache_bytes = 64 << 20;
  const auto want = file_bytes(local_);
  {
    auto src = open_http_source(fx.url("data.ferry"), ro);
    std::vector<uint8_t> got(want.size());
    src->read(0, got.size(), got.data());
  }
  // A writer killed mid-write leaves a temp file; bit rot or a foreign write leaves a bad entry.
  int damaged = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(cache.path())) {
    if (e.path().extension() != ".blk") continue;
    if (damaged % 2 == 0)
      std::filesystem::resize_file(e.path(), 100);  // torn
    else {
      std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(20);
      f.put('\x5a');  // flipped payload byte
    }
    std::ofstream(e.path().parent_path() / ".7.12345.1.tmp") << "partial";
    if (++damaged == 6) break;
  }
  ASSERT_GT(damaged, 0);
  auto src = open_http_source(fx.url("data.ferry"), ro);
  std::vector<uint8_t> got(want.size());
  src->read(0, got.size(), got.data());
  EXPECT_EQ(got, want);
  EXPECT_GE(remote_stats(*src).cache_misses, static_cast<uint64_t>(damaged));
}

TEST_F(RemoteTest, AKilledWriterLeavesNoCorruptEntry) {
  TempDir cache;
  std::vector<uint8_t> block(1 << 20, 0xab);
  const pid_t pid = ::fork();
  if (pid == 0) {
    detail::DiskCache c(cache.path().string(), 1ull << 32, "x");
    for (uint64_t i = 0;; ++i) c.put(i % 64, block);  // killed somewhere in here
  }
  ::usleep(300000);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  detail::DiskCache c(cache.path().string(), 1ull << 32, "x");
  std::vector<uint8_t> got(block.size());
  int hits = 0;
  for (uint64_t i = 0; i < 64; ++i)
    if (c.get(i, got)) {
      ++hits;
      EXPECT_EQ(got, block);  // an entry is whole or absent
    }
  EXPECT_GT(hits, 0);
}

TEST_F(RemoteTest, TwoProcessesShareOneCacheDir) {
  RemoteFixture fx(root_.path().string());
  TempDir cache;
  RemoteOptions ro = small_blocks();
  ro.cache_dir = cache.path().string();
  ro.cache_bytes = 64 << 20;
  const auto want = file_bytes(local_);
  auto read_all = [&] {
    auto src = open_http_source(fx.url("data.ferry"), ro);
    std::vector<uint8_t> got(want.size());
    src->read(0, got.size(), got.data());
    return got == want;
  };
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(read_all() ? 0 : 1);
  const bool parent_ok = read_all();
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(parent_ok);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  fx.control("__reset_stats");
  EXPECT_TRUE(read_all());
  EXPECT_EQ(fx.requests(), 1);  // the HEAD; every block came from the shared cache
}

}  // namespace
}  // namespace ferry
