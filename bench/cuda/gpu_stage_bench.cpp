// The GPU stage, side by side with its baselines in one run (docs/gpu.md, docs/BENCHMARKS.md):
//  (1) transfer: large batches through DeviceLoader vs raw pinned cudaMemcpyAsync, same run;
//  (2) overlap: a synthetic step of P ms (spin kernel) fed by a loader taking L ms per batch:
//      GPU idle share of wall time, and wall time against the ideal N × max(L, P).
// Usage: gpu_stage_bench [--dir DIR] [--quick]. Prints the device first and a summary table last.
#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "ferry/cuda.h"
#include "ferry/importers.h"
#include "kernels.h"

namespace {

using Clock = std::chrono::steady_clock;
using ferry::DeviceBatch;
using ferry::DeviceLoader;
using ferry::LoaderOptions;

void check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(rc));
    std::exit(2);
  }
}

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Row {
  std::string text;
  bool ok;
};
std::vector<Row> summary;

void add_row(bool ok, const char* format, auto... args) {
  char buf[512];
  std::snprintf(buf, sizeof buf, format, args...);
  summary.push_back({buf, ok});
}

/// Bytes/s of back-to-back pinned → device copies of `bytes` (the bus ceiling for this size).
double raw_copy_rate(uint64_t bytes, int copies) {
  void* host = nullptr;
  void* dev = nullptr;
  check(cudaHostAlloc(&host, bytes, cudaHostAllocPortable), "cudaHostAlloc");
  check(cudaMalloc(&dev, bytes), "cudaMalloc");
  std::memset(host, 0x5a, bytes);
  cudaStream_t s;
  cudaEvent_t a, b;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  for (int i = 0; i < 2; ++i)
    check(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, s), "warm-up copy");
  check(cudaEventRecord(a, s), "record");
  for (int i = 0; i < copies; ++i)
    check(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, s), "copy");
  check(cudaEventRecord(b, s), "record");
  check(cudaEventSynchronize(b), "sync");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, a, b), "elapsed");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaStreamDestroy(s);
  cudaFree(dev);
  cudaFreeHost(host);
  return static_cast<double>(bytes) * copies / (ms / 1e3);
}

std::string write_file(const std::string& dir, const std::string& name, uint64_t samples,
                       uint64_t sample_bytes) {
  const std::string path = dir + "/" + name;
  ferry::SyntheticSpec spec;
  spec.num_samples = samples;
  spec.shape = {sample_bytes};
  spec.seed = 1;
  ferry::WriterOptions w;
  w.fsync = false;
  // Pages of 16 samples or more, so that large samples do not leave most of a page empty.
  w.page_size = std::max<uint64_t>(2u << 20, std::bit_ceil(16 * sample_bytes));
  ferry::write_synthetic(path, spec, w);
  return path;
}

// ---- (1) transfer ----

void transfer(const std::string& dir, uint64_t batch_mib, bool quick) {
  const uint64_t sample_bytes = 4u << 20;
  const uint64_t batch_size = (batch_mib << 20) / sample_bytes;
  const uint64_t batches = quick ? 4 : 16;
  const std::string path = write_file(dir, "transfer.ferry", batch_size * batches, sample_bytes);
  // The host side must memcpy from the page cache as fast as the bus drains: most cores, and a
  // window deep enough that no worker waits for a buffer.
  const uint32_t threads = std::clamp<uint32_t>(std::thread::hardware_concurrency() - 2, 2, 15);
  const double raw = raw_copy_rate(batch_mib << 20, quick ? 4 : 16);

  LoaderOptions o;
  o.batch_size = batch_size;
  o.order = ferry::OrderKind::random;
  o.num_threads = threads;
  o.prefetch = batch_mib >= 128 ? threads : 2 * threads;
  o.device = "cuda";
  DeviceLoader dl(path, o, {3});
  cudaStream_t s;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  uint64_t* sink;
  check(cudaMalloc(&sink, 8), "sink");
  auto run_epoch = [&](uint64_t& bytes) {
    while (DeviceBatch b = dl.next(s)) {
      check(ferry::gpu_test::launch_touch(b.field(0).data, b.field(0).bytes, sink, s), "touch");
      bytes += b.field(0).bytes + b.field(1).bytes;
    }
  };
  uint64_t warm = 0, bytes = 0;
  run_epoch(warm);  // page cache, pinned pool, first-touch costs
  check(cudaStreamSynchronize(s), "sync");
  dl.reset_metrics();
  const auto t0 = Clock::now();
  const int epochs = quick ? 1 : 6;
  for (int e = 0; e < epochs; ++e) run_epoch(bytes);
  check(cudaStreamSynchronize(s), "sync");
  const double wall = seconds(t0, Clock::now());
  const ferry::DeviceMetrics m = dl.metrics();
  const double delivered = static_cast<double>(bytes) / wall;
  std::printf("\n[transfer] %llu MiB batches, %u host threads, %d epochs of %llu batches\n",
              static_cast<unsigned long long>(batch_mib), threads, epochs,
              static_cast<unsigned long long>(batches));
  std::printf("%s", m.to_table().c_str());
  std::printf(
      "raw pinned cudaMemcpyAsync: %.1f GB/s; ferry delivered %.1f GB/s end to end (%.0f%%), "
      "its copies ran at %.1f GB/s on the copy stream (%.0f%%)\n",
      raw / 1e9, delivered / 1e9, 100 * delivered / raw, m.copy_gbps,
      100 * m.copy_gbps * 1e9 / raw);
  add_row(m.copy_gbps * 1e9 >= 0.9 * raw,
          "transfer %4llu MiB   raw %5.1f GB/s   ferry copies %5.1f GB/s (%3.0f%%)   delivered "
          "end-to-end %5.1f GB/s "
          "(%3.0f%%)   target: copies >= 90%% of raw",
          static_cast<unsigned long long>(batch_mib), raw / 1e9, m.copy_gbps,
          100 * m.copy_gbps * 1e9 / raw, delivered / 1e9, 100 * delivered / raw);
  cudaFree(sink);
  cudaStreamDestroy(s);
  std::filesystem::remove(path);
}

// ---- (2) overlap ----

void overlap(const std::string& path, const char* name, double L_ms, double P_ms, uint64_t N) {
  constexpr uint64_t kBatch = 8;
  const auto per_sample = std::chrono::nanoseconds(static_cast<int64_t>(L_ms * 1e6 / kBatch));
  LoaderOptions o;
  o.batch_size = kBatch;
  o.num_threads = 1;  // one worker: L is the loader's time per batch, not divided among threads
  o.prefetch = 4;
  o.device = "cuda";
  // The loading work: a busy CPU for L / batch per sample (exact, unlike sleeping).
  o.transform = [per_sample](ferry::SampleSlot&) {
    const auto until = Clock::now() + per_sample;
    while (Clock::now() < until) {
    }
  };
  cudaStream_t s;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  std::vector<cudaEvent_t> start(N), end(N);
  for (uint64_t k = 0; k < N; ++k) {
    check(cudaEventCreate(&start[k]), "event");
    check(cudaEventCreate(&end[k]), "event");
  }
  uint64_t* sink;
  check(cudaMalloc(&sink, 8), "sink");
  const auto spin_ns = static_cast<uint64_t>(P_ms * 1e6);
  // Warm the spin kernel (module load) outside the timed region.
  check(ferry::gpu_test::launch_spin(1000, s), "spin");
  check(cudaStreamSynchronize(s), "sync");

  const auto t0 = Clock::now();  // the loader starts from nothing: pipeline fill is counted
  {
    DeviceLoader dl(path, o, {3});
    for (uint64_t k = 0; k < N; ++k) {
      DeviceBatch b = dl.next(s);
      if (!b) b = dl.next(s);  // epoch boundary
      check(cudaEventRecord(start[k], s), "record");
      check(ferry::gpu_test::launch_spin(spin_ns, s), "spin");
      check(ferry::gpu_test::launch_touch(b.field(0).data, b.field(0).bytes / 16 * 16, sink, s),
            "touch");
      check(cudaEventRecord(end[k], s), "record");
    }
    check(cudaStreamSynchronize(s), "sync");
  }
  const double wall = seconds(t0, Clock::now());
  double busy = 0;
  for (uint64_t k = 0; k < N; ++k) {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start[k], end[k]), "elapsed");
    busy += ms / 1e3;
  }
  float span_ms = 0;
  check(cudaEventElapsedTime(&span_ms, start[0], end[N - 1]), "elapsed");
  const double ideal = static_cast<double>(N) * std::max(L_ms, P_ms) / 1e3;
  const double idle = 1 - busy / wall;
  const double steady_idle = 1 - busy / (span_ms / 1e3);
  std::printf(
      "\n[overlap] %s: L %.0f ms, P %.0f ms, N %llu: wall %.3f s, GPU busy %.3f s, idle %.2f%% "
      "(%.2f%% after the first batch), wall / (N x max(L,P)) = %.4f\n",
      name, L_ms, P_ms, static_cast<unsigned long long>(N), wall, busy, 100 * idle,
      100 * steady_idle, wall / ideal);
  const bool ok = wall <= 1.03 * ideal && (L_ms >= P_ms || idle <= 0.02);
  add_row(ok,
          "overlap %-10s L %4.0f ms  P %4.0f ms  N %4llu   wall %6.3f s = %.3f x N*max(L,P)   GPU "
          "idle %5.2f%% "
          "(steady %5.2f%%)   target: <= 1.03x%s",
          name, L_ms, P_ms, static_cast<unsigned long long>(N), wall, wall / ideal, 100 * idle,
          100 * steady_idle, L_ms < P_ms ? ", idle <= 2%" : "");
  for (uint64_t k = 0; k < N; ++k) {
    cudaEventDestroy(start[k]);
    cudaEventDestroy(end[k]);
  }
  cudaFree(sink);
  cudaStreamDestroy(s);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = std::filesystem::temp_directory_path().string();
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick")
      quick = true;
    else if (a == "--dir" && i + 1 < argc)
      dir = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--dir DIR] [--quick]\n", argv[0]);
      return 2;
    }
  }
  int device = 0, runtime = 0, driver = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  std::printf(
      "device: %s (sm_%d%d, %d SMs, %.0f GiB), CUDA runtime %d.%d, driver API %d.%d, %u host "
      "cores\n",
      prop.name, prop.major, prop.minor, prop.multiProcessorCount,
      static_cast<double>(prop.totalGlobalMem) / (1u << 30), runtime / 1000, runtime % 1000 / 10,
      driver / 1000, driver % 1000 / 10, std::thread::hardware_concurrency());

  transfer(dir, 64, quick);
  if (!quick) transfer(dir, 128, quick);

  const std::string small = write_file(dir, "overlap.ferry", 4096, 64 << 10);
  overlap(small, "gpu-bound", 5, 10, quick ? 40 : 300);
  overlap(small, "load-bound", 10, 5, quick ? 40 : 300);
  overlap(small, "seed-tile", 120, 428, quick ? 4 : 20);
  std::filesystem::remove(small);

  std::printf("\n== GPU stage benchmark summary (%s) ==\n", prop.name);
  bool all = true;
  for (const auto& r : summary) {
    std::printf("%s  %s\n", r.ok ? "MET   " : "MISSED", r.text.c_str());
    all = all && r.ok;
  }
  return all ? 0 : 1;
}
