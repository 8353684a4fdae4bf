// The loader engine's three figures, each measured side by side in one run:
//  1. overlap: load L and step P per batch; synchronous (load then step) vs ferry's async loader
//  2. raw throughput, warm page cache, no transform, 2 threads, beside single-thread memcpy
//  3. memory: anonymous RSS against the budget over 10 epochs
// Usage: loader_bench [--quick]   (from the repository root; data goes to data/)
#include <cstring>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "ferry/loader.h"

using namespace ferry;
using namespace ferry::bench;
using namespace std::chrono;

namespace {

// Loading costs L per batch: the transform of the first sample of each batch waits L (I/O-like
// latency: it occupies no core). The step costs P of busy CPU on the consumer thread.
struct Overlap {
  double speedup, ideal, wall, bound, idle;
};

Overlap overlap(const std::string& path, uint64_t batch, uint64_t n_batches, milliseconds L,
                milliseconds P) {
  const uint64_t n = batch * n_batches;
  auto reader = Reader::open(path);
  // Synchronous baseline: load (wait L + read the samples), then compute.
  const auto t0 = Clock::now();
  std::vector<uint8_t> buf(batch * 64), scratch;
  for (uint64_t b = 0; b < n_batches; ++b) {
    std::this_thread::sleep_for(L);
    for (uint64_t i = 0; i < batch; ++i) {
      const auto f = reader->sample(b * batch + i, scratch);
      std::memcpy(buf.data() + i * 64, f[0].data, 64);
    }
    spin_for(P);
  }
  const double sync_wall = elapsed(t0);

  LoaderOptions o;
  o.batch_size = batch;
  o.order = OrderKind::sequential;
  o.num_threads = 1;
  o.prefetch = 2;
  o.transform = [batch, L](SampleSlot& s) {
    if (s.sample_id % batch == 0) std::this_thread::sleep_for(L);
  };
  Loader loader(reader, o);
  const auto t1 = Clock::now();
  uint64_t got = 0;
  for (uint64_t b = 0; b < n_batches; ++b) {
    Batch x = loader.next();
    got += x.size();
    spin_for(P);
  }
  const double async_wall = elapsed(t1);
  if (got != n)
    std::fprintf(stderr, "overlap: got %llu samples\n", static_cast<unsigned long long>(got));
  const double Ls = duration<double>(L).count(), Ps = duration<double>(P).count();
  const double bound = 1.05 * static_cast<double>(n_batches) * std::max(Ls, Ps) + std::max(Ls, Ps);
  return {sync_wall / async_wall, (Ls + Ps) / std::max(Ls, Ps), async_wall, bound,
          loader.metrics().consumer_wait_fraction};
}

// Large batches (the consumer-side cost case): 4,000 × 256 KiB, batch 64 (16 MiB), random
// order, 1 thread, real reads (pread: auto's rule for samples this large). L = the read stage's
// busy time per batch, measured in the same run; the step sleeps P = ratio × L (a GPU step
// frees the core). Ideal wall = batches × max(L, P); reported: ideal / wall.
struct LargeOverlap {
  double L_ms, P_ms, fraction, idle;
};

LargeOverlap large_overlap(const std::string& path, double ratio, int epochs) {
  LoaderOptions o;
  o.batch_size = 64;
  o.order = OrderKind::random;
  o.num_threads = 1;
  double L = 0;
  {  // calibration: the read stage alone, loader-bound
    Loader probe(path, o);
    while (probe.next()) {
    }
    const Metrics m = probe.metrics();
    L = m.stages[0].busy_seconds / static_cast<double>(m.batches);
  }
  const auto P = duration<double>(ratio * L);
  Loader loader(path, o);
  uint64_t batches = 0;
  const auto t0 = Clock::now();
  for (int e = 0; e < epochs; ++e)
    while (Batch b = loader.next()) {
      ++batches;
      std::this_thread::sleep_for(P);
    }
  const double wall = elapsed(t0);
  const double ideal = static_cast<double>(batches) * std::max(L, P.count());
  return {1e3 * L, 1e3 * P.count(), ideal / wall, loader.metrics().consumer_wait_fraction};
}

double memcpy_gbps() {
  const size_t bytes = 256u << 20;
  std::vector<uint8_t> a(bytes, 1), b(bytes, 0);
  std::memcpy(b.data(), a.data(), bytes);  // fault pages in
  const auto t0 = Clock::now();
  for (int i = 0; i < 4; ++i) std::memcpy(b.data(), a.data(), bytes);
  return 4.0 * static_cast<double>(bytes) / elapsed(t0) / 1e9;
}

struct Throughput {
  double samples_per_s, gbps;
};

Throughput throughput(const std::string& path, OrderKind order, uint64_t batch, int epochs,
                      uint32_t threads) {
  LoaderOptions o;
  o.batch_size = batch;
  o.order = order;
  o.num_threads = threads;
  o.backend = Backend::mmap;
  Loader loader(path, o);
  while (loader.next()) {  // warm-up epoch: page cache and pool
  }
  loader.reset_metrics();
  const auto t0 = Clock::now();
  uint64_t samples = 0, bytes = 0;
  for (int e = 0; e < epochs; ++e)
    while (Batch b = loader.next()) {
      samples += b.size();
      bytes += b.field(0).bytes(b.size());
    }
  const double s = elapsed(t0);
  return {static_cast<double>(samples) / s, static_cast<double>(bytes) / s / 1e9};
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  std::printf("ferry loader_bench — %s\n\n", machine().c_str());

  std::printf("1. Overlap (load L per batch, step P per batch, %s batches; 1 loader thread)\n",
              quick ? "20" : "60");
  std::printf("   %-22s %8s %8s %8s %10s %10s %8s\n", "workload", "sync s", "async s", "speedup",
              "ideal", "async/bound", "idle");
  const std::string small = synthetic("bench-overlap.ferry", 64 * 60, 64);
  struct Case {
    const char* name;
    int L, P;
  } cases[] = {{"P/L = 0.5", 40, 20}, {"P/L = 1", 30, 30}, {"P/L = 3.6 (seed tile)", 12, 43}};
  for (const auto& c : cases) {
    const uint64_t nb = quick ? 20 : 60;
    const Overlap r = overlap(small, 64, nb, milliseconds(c.L), milliseconds(c.P));
    const double sync = r.speedup * r.wall;
    std::printf(
        "   %-22s %8.2f %8.2f %7.3fx %9.3fx %9.3f %7.1f%%  speedup %s 0.95×ideal, wall %s bound\n",
        c.name, sync, r.wall, r.speedup, r.ideal, r.wall / r.bound, 100 * r.idle,
        r.speedup >= 0.95 * r.ideal ? ">=" : "< (MISSED)", r.wall <= r.bound ? "<=" : "> (MISSED)");
  }

  std::printf(
      "\n1b. Large batches (4,000 × 256 KiB, batch 64 = 16 MiB, random, 1 thread, 3 epochs)\n");
  {
    const std::string big = synthetic("bench-4k-256KB.ferry", quick ? 1000 : 4000, 256 * 1024);
    for (double ratio : {1.0, 3.0}) {
      const LargeOverlap r = large_overlap(big, ratio, 3);
      std::printf(
          "   P/L = %.0f: L %.2f ms, P %.2f ms, %.1f%% of ideal max(L,P), consumer idle %.1f%%  "
          "%s\n",
          ratio, r.L_ms, r.P_ms, 100 * r.fraction, 100 * r.idle,
          r.fraction >= 0.95 ? ">= 95%: met" : "< 95%: MISSED");
    }
  }

  std::printf("\n2. Raw throughput (warm page cache, no transform, mmap, 2 threads)\n");
  const double mc = memcpy_gbps();
  std::printf("   single-thread memcpy: %.2f GB/s\n", mc);
  const std::string tiny = synthetic("bench-1M-64B.ferry", quick ? 200000 : 1000000, 64);
  const std::string large = synthetic("bench-20k-150KB.ferry", quick ? 2000 : 20000, 150 * 1024);
  std::printf("   %-14s %-13s %8s %14s %9s %s\n", "file", "order", "batch", "samples/s", "GB/s",
              "target");
  for (OrderKind order : {OrderKind::sequential, OrderKind::quasi_random, OrderKind::random}) {
    const Throughput t = throughput(tiny, order, 1024, quick ? 2 : 5, 2);
    std::printf("   %-14s %-13s %8d %14.0f %9.2f %s\n", "1M × 64 B",
                std::string(order_name(order)).c_str(), 1024, t.samples_per_s, t.gbps,
                t.samples_per_s >= 20e6 ? ">= 20M/s: met" : "< 20M/s: MISSED");
  }
  for (OrderKind order : {OrderKind::sequential, OrderKind::quasi_random, OrderKind::random}) {
    const Throughput t = throughput(large, order, 64, quick ? 1 : 2, 2);
    std::printf("   %-14s %-13s %8d %14.0f %9.2f %.0f%% of memcpy: %s\n", "20k × 150 KB",
                std::string(order_name(order)).c_str(), 64, t.samples_per_s, t.gbps,
                100 * t.gbps / mc, t.gbps >= 0.7 * mc ? "met" : "MISSED (< 70%)");
  }

  std::printf("\n3. Memory (20k × 150 KB, batch 64, budget 64 MiB, 10 epochs)\n");
  {
    LoaderOptions o;
    o.batch_size = 64;
    o.memory_budget = 64u << 20;
    o.num_threads = 2;
    const uint64_t anon0 = proc_status_bytes("RssAnon");
    Loader loader(large, o);
    std::printf("   pool: %llu slots max × %.1f MiB = %.1f MiB (budget 64 MiB)\n",
                static_cast<unsigned long long>(loader.metrics().pool_max_slots),
                static_cast<double>(loader.metrics().slot_bytes) / (1 << 20),
                static_cast<double>(loader.metrics().pool_max_slots * loader.metrics().slot_bytes) /
                    (1 << 20));
    std::printf("   anonymous RSS above start, per epoch (MiB):");
    uint64_t peak = 0;
    for (int e = 0; e < (quick ? 3 : 10); ++e) {
      while (loader.next()) {
      }
      const uint64_t anon = proc_status_bytes("RssAnon") - anon0;
      peak = std::max(peak, anon);
      std::printf(" %.1f", static_cast<double>(anon) / (1 << 20));
    }
    std::printf("\n   peak %.1f MiB: %s\n", static_cast<double>(peak) / (1 << 20),
                peak <= (64u << 20) + (16u << 20) ? "within budget + 16 MiB overhead"
                                                  : "OVER budget + 16 MiB (MISSED)");
  }
  return 0;
}
