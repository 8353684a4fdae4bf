#pragma once
// Internal: the loader's counters. Hot counters are relaxed atomics (they are statistics, read
// for reports, and order nothing); the rest sits behind a mutex touched once per batch.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <vector>

#include "ferry/metrics.h"

namespace ferry {

class LoaderMetrics {
 public:
  // produced: samples the workers finished (stage throughput); the rest count what the
  // consumer received.
  std::atomic<uint64_t> read_ns{0}, transform_ns{0}, produced{0}, samples{0}, bytes{0},
      errors_skipped{0}, batches{0};

  void reset();
  void record_queue(uint64_t ready, uint32_t prefetch);
  void add_wait(uint64_t ns);
  void add_latency(double ms);
  Metrics snapshot(uint32_t threads, uint32_t prefetch) const;

 private:
  mutable std::mutex mu_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  uint64_t wait_ns_ = 0;
  std::vector<uint64_t> queue_hist_;
  std::vector<double> latencies_;  // ring of the most recent kLatencyWindow batches
  size_t latency_next_ = 0;
  static constexpr size_t kLatencyWindow = 4096;
};

}  // namespace ferry
