// The GPU stage against the file: every byte that reaches the device, every epoch, every thread
// count; the stream rule under a slow consumer; epochs, errors, state, capacity, shutdown.
// Every test skips where no CUDA device is visible (a CUDA build on a machine without a GPU).
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <atomic>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <numeric>
#include <optional>
#include <thread>
#include <vector>

#include "ferry/cuda.h"
#include "ferry/reader.h"
#include "kernels.h"
#include "test_util.h"

namespace ferry {
namespace {

using Clock = std::chrono::steady_clock;
using gpu_test::host_checksum;
using gpu_test::launch_checksums;
using gpu_test::launch_spin;

#define CUDA_ASSERT(call)                                                    \
  do {                                                                       \
    const cudaError_t rc_ = (call);                                          \
    ASSERT_EQ(rc_, cudaSuccess) << #call << ": " << cudaGetErrorString(rc_); \
  } while (0)

/// An owned cudaStream_t (non-blocking), or the legacy default stream.
class TestStream {
 public:
  explicit TestStream(bool legacy_default = false) {
    if (!legacy_default) cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking);
  }
  ~TestStream() {
    if (s_) cudaStreamDestroy(s_);
  }
  TestStream(const TestStream&) = delete;
  TestStream& operator=(const TestStream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) { cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)); }
  ~DeviceArray() { cudaFree(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return p_; }
  std::vector<T> to_host() const {
    std::vector<T> out(n_);
    cudaMemcpy(out.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return out;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

/// expected[f][id]: the host checksum of field f of sample id, read through a Reader.
std::vector<std::vector<uint64_t>> file_checksums(const std::string& path) {
  auto reader = Reader::open(path);
  const size_t nf = reader->schema().fields.size();
  std::vector<std::vector<uint64_t>> out(nf, std::vector<uint64_t>(reader->num_samples()));
  std::vector<uint8_t> scratch;
  for (uint64_t id = 0; id < reader->num_samples(); ++id) {
    const auto views = reader->sample(id, scratch);
    for (size_t f = 0; f < nf; ++f) out[f][id] = host_checksum(views[f].data, views[f].size);
  }
  return out;
}

class GpuStageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<testing::TempDir>();
    // 3000 fixed samples of 3000 bytes; 2000 variable ones (bytes field, 1..3000 bytes).
    fixed_ = testing::synthetic_file(*dir_, "fixed.ferry", 3000, 3000, 64 * 1024, false, 11);
    variable_ = testing::synthetic_file(*dir_, "variable.ferry", 2000, 1500, 64 * 1024, true, 12);
    fixed_sums_ = file_checksums(fixed_);
    variable_sums_ = file_checksums(variable_);
  }
  static void TearDownTestSuite() { dir_.reset(); }

  void SetUp() override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
      cudaGetLastError();
      GTEST_SKIP() << "no CUDA device visible";
    }
  }

  static LoaderOptions options(uint64_t batch_size, uint32_t threads, uint64_t seed = 0) {
    LoaderOptions o;
    o.batch_size = batch_size;
    o.num_threads = threads;
    o.seed = seed;
    o.device = "cuda:0";
    return o;
  }

  struct RunOptions {
    int epochs = 1;
    uint64_t spin_ns = 0;  // a slow "training step" before the checksums
    bool hold_until_end =
        false;  // keep each batch until the next one arrives (else release at once)
  };

  /// Consumes `run.epochs` epochs on `stream`: each batch's fields are checksummed ON THE DEVICE,
  /// in work enqueued after next() and before release(), and compared with the file's bytes at
  /// the end of each epoch. Also checks each sample arrives exactly once per epoch, in order.
  static void consume_and_check(DeviceLoader& dl, cudaStream_t stream,
                                const std::vector<std::vector<uint64_t>>& sums, RunOptions run) {
    const uint64_t per_epoch = dl.samples_per_epoch();
    const size_t nf = dl.fields().size();
    DeviceArray<uint64_t> got(per_epoch * nf);
    for (int e = 0; e < run.epochs; ++e) {
      const uint64_t epoch = dl.epoch();
      const std::vector<uint64_t> order = dl.epoch_order();
      std::vector<uint64_t> ids;
      uint64_t index = 0;
      DeviceBatch held;
      while (DeviceBatch b = dl.next(stream)) {
        ASSERT_EQ(b.epoch(), epoch);
        ASSERT_EQ(b.index(), index++);
        if (run.spin_ns) CUDA_ASSERT(launch_spin(run.spin_ns, stream));
        for (size_t f = 0; f < nf; ++f) {
          const DeviceField& field = b.field(f);
          CUDA_ASSERT(launch_checksums(field.data, field.spec->fixed_bytes(), field.offsets,
                                       b.size(), got.get() + f * per_epoch + ids.size(), stream));
        }
        ids.insert(ids.end(), b.sample_ids().begin(), b.sample_ids().end());
        if (run.hold_until_end) {
          held = std::move(b);  // the previous one is released here, the new one held
        }
        // else: b is released at the end of this iteration, right after enqueueing its last use
      }
      held.release();
      ASSERT_EQ(index, dl.batches_per_epoch());
      CUDA_ASSERT(cudaStreamSynchronize(stream));
      const auto values = got.to_host();
      ASSERT_EQ(ids, order) << "epoch " << epoch << ": samples out of order";
      uint64_t bad = 0;
      for (size_t i = 0; i < ids.size(); ++i)
        for (size_t f = 0; f < nf; ++f)
          if (values[f * per_epoch + i] != sums[f][ids[i]]) ++bad;
      ASSERT_EQ(bad, 0u) << "epoch " << epoch << ": " << bad
                         << " sample fields differ from the file";
      std::vector<uint64_t> sorted = ids;
      std::sort(sorted.begin(), sorted.end());
      std::vector<uint64_t> all(sums[0].size());
      std::iota(all.begin(), all.end(), 0);
      ASSERT_EQ(sorted, all) << "epoch " << epoch << ": not every sample exactly once";
    }
  }

  static std::unique_ptr<testing::TempDir> dir_;
  static std::string fixed_, variable_;
  static std::vector<std::vector<uint64_t>> fixed_sums_, variable_sums_;
};

std::unique_ptr<testing::TempDir> GpuStageTest::dir_;
std::string GpuStageTest::fixed_, GpuStageTest::variable_;
std::vector<std::vector<uint64_t>> GpuStageTest::fixed_sums_, GpuStageTest::variable_sums_;

TEST_F(GpuStageTest, DeviceBytesEqualFileBytesForEveryEpochAndThreadCount) {
  for (uint32_t threads = 1; threads <= 4; ++threads) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    TestStream stream;
    {
      DeviceLoader dl(fixed_, options(64, threads, threads), {2 + threads % 2});
      consume_and_check(dl, stream.get(), fixed_sums_, {.epochs = 3});
    }
    {
      DeviceLoader dl(variable_, options(50, threads, threads), {3});
      consume_and_check(dl, stream.get(), variable_sums_, {.epochs = 3});
    }
  }
}

TEST_F(GpuStageTest, EveryByteRoundTripsExactly) {
  // Beyond checksums: copy every batch back and compare byte for byte with the Reader's view.
  for (const auto* path : {&fixed_, &variable_}) {
    auto reader = Reader::open(*path);
    DeviceLoader dl(*path, options(77, 3), {3});
    TestStream stream;
    std::vector<uint8_t> host, scratch;
    std::vector<uint64_t> offsets;
    uint64_t samples = 0;
    while (DeviceBatch b = dl.next(stream.get())) {
      const DeviceField& f = b.field(0);  // "data"
      host.resize(f.bytes);
      CUDA_ASSERT(
          cudaMemcpyAsync(host.data(), f.data, f.bytes, cudaMemcpyDeviceToHost, stream.get()));
      if (f.offsets) {
        offsets.resize(b.size() + 1);
        CUDA_ASSERT(cudaMemcpyAsync(offsets.data(), f.offsets, offsets.size() * 8,
                                    cudaMemcpyDeviceToHost, stream.get()));
      }
      CUDA_ASSERT(cudaStreamSynchronize(stream.get()));
      if (f.offsets) {
        ASSERT_TRUE(std::equal(offsets.begin(), offsets.end(), f.host_offsets.begin()));
      }
      uint64_t at = 0;
      for (size_t i = 0; i < b.size(); ++i) {
        const FieldView v = reader->sample(b.sample_ids()[i], scratch)[0];
        ASSERT_LE(at + v.size, host.size());
        ASSERT_EQ(0, std::memcmp(host.data() + at, v.data, v.size))
            << "sample " << b.sample_ids()[i];
        at += v.size;
      }
      ASSERT_EQ(at, f.bytes);
      samples += b.size();
    }
    EXPECT_EQ(samples, reader->num_samples());
  }
}

TEST_F(GpuStageTest, SlowConsumerNeverSeesAReusedBuffer) {
  // The consumer's step (a 1.5 ms spin) runs BEFORE its checksums, and every batch is released
  // right after its work is enqueued, with no host synchronisation: the copier immediately
  // wants the buffer back for a batch the host loader prepared long ago. Any overwrite while the
  // spin or the checksum runs changes a checksum.
  for (uint32_t ring : {2u, 3u}) {
    for (bool legacy : {false, true}) {
      SCOPED_TRACE("ring " + std::to_string(ring) +
                   (legacy ? ", legacy default stream" : ", own stream"));
      LoaderOptions o = options(64, 4, 5);
      o.prefetch = 8;
      DeviceLoader dl(fixed_, o, {ring});
      TestStream stream(legacy);
      consume_and_check(dl, stream.get(), fixed_sums_, {.epochs = 2, .spin_ns = 1'500'000});
      // The loader ran ahead: copies were queued into buffers the slow step was still reading,
      // ordered after it only on the device.
      const DeviceMetrics m = dl.metrics();
      EXPECT_GT(m.copies_behind_consumer, 10u) << m.to_table();
    }
  }
  // Holding each batch across the next next() (the usual training-loop shape) as well.
  DeviceLoader dl(variable_, options(40, 2, 6), {2});
  TestStream stream;
  consume_and_check(dl, stream.get(), variable_sums_,
                    {.epochs = 1, .spin_ns = 1'000'000, .hold_until_end = true});
}

TEST_F(GpuStageTest, ReleaseOnAnotherThreadAndShutdownWhileHeld) {
  TestStream stream;
  auto dl = std::make_unique<DeviceLoader>(fixed_, options(64, 2), DeviceOptions{2});
  // A batch released on another thread (as a tensor deleter may do) returns to the ring.
  DeviceBatch a = dl->next(stream.get());
  std::thread([b = std::move(a)]() mutable { b.release(); }).join();
  DeviceBatch b = dl->next(stream.get());
  DeviceBatch c = dl->next(stream.get());
  // Both buffers are held, the copier waits for one, the workers wait on the pool: shutdown is
  // still prompt, and the held batches stay valid after the loader is gone.
  const auto t0 = Clock::now();
  dl.reset();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 1.0);
  std::vector<uint64_t> ids(b.sample_ids().begin(), b.sample_ids().end());
  ids.insert(ids.end(), c.sample_ids().begin(), c.sample_ids().end());
  DeviceArray<uint64_t> got(ids.size());
  CUDA_ASSERT(launch_checksums(b.field(0).data, b.field(0).spec->fixed_bytes(), nullptr, b.size(),
                               got.get(), stream.get()));
  CUDA_ASSERT(launch_checksums(c.field(0).data, c.field(0).spec->fixed_bytes(), nullptr, c.size(),
                               got.get() + b.size(), stream.get()));
  b.release();
  c.release();
  CUDA_ASSERT(cudaStreamSynchronize(stream.get()));
  const auto values = got.to_host();
  for (size_t i = 0; i < ids.size(); ++i)
    EXPECT_EQ(values[i], fixed_sums_[0][ids[i]]) << "sample " << ids[i];
}

TEST_F(GpuStageTest, EpochEndsStateResumesAndSetEpochRestarts) {
  TestStream stream;
  LoaderOptions o = options(100, 3, 9);
  DeviceLoader a(fixed_, o);
  ASSERT_EQ(a.batches_per_epoch(), 30u);
  uint64_t n = 0;
  while (DeviceBatch b = a.next(stream.get())) ++n;
  EXPECT_EQ(n, 30u);
  EXPECT_EQ(a.epoch(), 1u);
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(a.next(stream.get()));
  // The copier has copied ahead; the state is the consumer's position all the same.
  const LoaderState s = a.state();
  EXPECT_EQ(s.epoch, 1u);
  EXPECT_EQ(s.next_batch, 7u);
  LoaderOptions r = o;
  r.resume = s;
  DeviceLoader b(fixed_, r);
  for (int i = 0; i < 5; ++i) {
    DeviceBatch x = a.next(stream.get()), y = b.next(stream.get());
    ASSERT_TRUE(x && y);
    EXPECT_EQ(x.index(), y.index());
    EXPECT_TRUE(std::equal(x.sample_ids().begin(), x.sample_ids().end(), y.sample_ids().begin(),
                           y.sample_ids().end()));
  }
  a.set_epoch(5);
  EXPECT_EQ(a.epoch(), 5u);
  const auto order = a.epoch_order();
  DeviceBatch first = a.next(stream.get());
  ASSERT_TRUE(first);
  EXPECT_EQ(first.epoch(), 5u);
  EXPECT_EQ(first.index(), 0u);
  EXPECT_TRUE(std::equal(first.sample_ids().begin(), first.sample_ids().end(), order.begin()));
  first.release();
  EXPECT_EQ(a.state().next_batch, 1u);
}

TEST_F(GpuStageTest, SampleErrorsArriveInBatchOrderAndSkipsResumeExactly) {
  TestStream stream;
  constexpr uint64_t kBad = 450;
  LoaderOptions o = options(100, 4);
  o.order = OrderKind::sequential;
  o.transform = [](SampleSlot& s) {
    if (s.sample_id == kBad) throw std::runtime_error("bad sample");
  };
  {
    DeviceLoader dl(fixed_, o);
    for (uint64_t i = 0; i < 4; ++i) ASSERT_EQ(dl.next(stream.get()).index(), i);
    try {
      dl.next(stream.get());
      FAIL() << "expected SampleError";
    } catch (const SampleError& e) {
      EXPECT_EQ(e.sample(), kBad);
    }
    EXPECT_EQ(dl.state().next_batch, 5u);
    uint64_t rest = 0;
    while (DeviceBatch b = dl.next(stream.get())) EXPECT_EQ(b.index(), 5 + rest++);
    EXPECT_EQ(rest, 25u);
  }
  // on_error=skip: the sample is dropped, batches are filled up from the following ones, and the
  // state taken mid-epoch (borrowing included) resumes the very same batches.
  o.on_error = OnError::skip;
  DeviceLoader dl(fixed_, o);
  std::vector<std::vector<uint64_t>> batches;
  std::optional<LoaderState> mid;
  while (DeviceBatch b = dl.next(stream.get())) {
    batches.emplace_back(b.sample_ids().begin(), b.sample_ids().end());
    EXPECT_EQ(std::count(b.sample_ids().begin(), b.sample_ids().end(), kBad), 0);
    if (batches.size() == 10) mid = dl.state();
  }
  uint64_t samples = 0;
  for (const auto& ids : batches) samples += ids.size();
  EXPECT_EQ(samples, 2999u);
  EXPECT_EQ(batches[4].size(), 100u);
  EXPECT_EQ(dl.metrics().host.errors_skipped, 1u);
  ASSERT_TRUE(mid);
  LoaderOptions r = o;
  r.resume = *mid;
  DeviceLoader resumed(fixed_, r);
  for (size_t k = 10; k < batches.size(); ++k) {
    DeviceBatch b = resumed.next(stream.get());
    ASSERT_TRUE(b);
    EXPECT_EQ(std::vector<uint64_t>(b.sample_ids().begin(), b.sample_ids().end()), batches[k])
        << "batch " << k;
  }
  EXPECT_FALSE(resumed.next(stream.get()));
}

TEST_F(GpuStageTest, TimeoutLeavesTheLoaderUsable) {
  TestStream stream;
  LoaderOptions o = options(16, 1);
  o.transform = [](SampleSlot&) { std::this_thread::sleep_for(std::chrono::milliseconds(2)); };
  DeviceLoader dl(fixed_, o);
  EXPECT_THROW(dl.next(stream.get(), std::chrono::milliseconds(1)), TimeoutError);
  DeviceBatch b = dl.next(stream.get());
  ASSERT_TRUE(b);
  EXPECT_EQ(b.index(), 0u);
}

TEST_F(GpuStageTest, TryNextReturnsNoBatchOnTimeoutAndHugeTimeoutsWait) {
  TestStream stream;
  LoaderOptions o = options(16, 1);
  o.transform = [](SampleSlot&) { std::this_thread::sleep_for(std::chrono::milliseconds(2)); };
  DeviceLoader dl(fixed_, o);
  EXPECT_FALSE(dl.try_next(stream.get(), std::chrono::milliseconds(0)).has_value());
  auto b = dl.try_next(stream.get(), std::chrono::milliseconds::max());
  ASSERT_TRUE(b.has_value());
  ASSERT_TRUE(*b);
  EXPECT_EQ(b->index(), 0u);
}

TEST_F(GpuStageTest, CloseWakesABlockedNextAndHeldBatchesStayValid) {
  TestStream stream;
  LoaderOptions o = options(16, 1);
  std::atomic<bool> gate{false};
  o.transform = [&](SampleSlot&) {
    while (!gate) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  DeviceLoader dl(fixed_, o);
  std::exception_ptr waiter_error;
  std::thread waiter([&] {
    try {
      dl.next(stream.get());
    } catch (...) {
      waiter_error = std::current_exception();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  gate = true;  // the workers may finish; close() must still win or hand out a batch first
  dl.close();
  waiter.join();
  if (waiter_error) {
    EXPECT_THROW(std::rethrow_exception(waiter_error), ShutdownError);
  }
  EXPECT_THROW(dl.next(stream.get()), ShutdownError);
  EXPECT_THROW(dl.set_epoch(1), ShutdownError);
  dl.close();  // idempotent
  EXPECT_GE(dl.metrics().batches, 0u);
}

TEST_F(GpuStageTest, CapacityErrorWhenTheConsumerHoldsEveryBuffer) {
  TestStream stream;
  DeviceLoader dl(fixed_, options(64, 2), {2});
  DeviceBatch a = dl.next(stream.get());
  DeviceBatch b = dl.next(stream.get());
  EXPECT_THROW(dl.next(stream.get(), std::chrono::seconds(10)), CapacityError);
  a.release();
  DeviceBatch c = dl.next(stream.get(), std::chrono::seconds(10));
  EXPECT_EQ(c.index(), 2u);
}

TEST_F(GpuStageTest, MetricsCountCopiesAndTheHostBuffersArePinned) {
  TestStream stream;
  DeviceLoader dl(fixed_, options(64, 2));
  EXPECT_EQ(dl.options().allocator->name(), "pinned");
  EXPECT_EQ(dl.options().device, "cpu");
  EXPECT_EQ(dl.ring_depth(), 3u);
  uint64_t bytes = 0, batches = 0;
  while (DeviceBatch b = dl.next(stream.get())) {
    bytes += b.field(0).bytes + b.field(1).bytes;
    ++batches;
  }
  CUDA_ASSERT(cudaStreamSynchronize(stream.get()));
  const DeviceMetrics m = dl.metrics();
  EXPECT_EQ(m.batches, batches);
  EXPECT_GE(m.copies, batches - 1);  // the newest copy may still be waiting to be counted
  EXPECT_GE(m.bytes_copied + 64 * 3008, bytes);
  EXPECT_GT(m.copy_seconds, 0.0);
  EXPECT_GT(m.copy_gbps, 0.0);
  EXPECT_NE(m.to_table().find("GPU stage"), std::string::npos);
  EXPECT_NE(m.to_json().find("\"device\":{"), std::string::npos);

  PinnedAllocator pinned(0);
  void* p = pinned.allocate(1 << 20);
  cudaPointerAttributes attr{};
  CUDA_ASSERT(cudaPointerGetAttributes(&attr, p));
  EXPECT_EQ(attr.type, cudaMemoryTypeHost);
  pinned.deallocate(p, 1 << 20);
}

TEST_F(GpuStageTest, BadDeviceOrRingDepthIsAnInvalidArgument) {
  auto expect_invalid = [&](LoaderOptions o, DeviceOptions d, const std::string& needle) {
    try {
      DeviceLoader dl(fixed_, o, d);
      FAIL() << "expected InvalidArgument mentioning " << needle;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  LoaderOptions o = options(8, 1);
  o.device = "cuda:99";
  expect_invalid(o, {}, "visible");
  o.device = "cuda:x";
  expect_invalid(o, {}, "cuda:N");
  o.device = "cpu";
  expect_invalid(o, {}, "cuda:N");
  o.device = "cuda";
  expect_invalid(o, {1}, "ring_depth");
#if !FERRY_FAKE_CUDA  // the fake build's libferry is the non-CUDA one: its Loader says "built
                      // without CUDA"
  LoaderOptions host = options(8, 1);
  try {
    Loader l(fixed_, host);
    FAIL() << "a host Loader must refuse a CUDA device";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("DeviceLoader"), std::string::npos) << e.what();
  }
#endif
}

}  // namespace
}  // namespace ferry
