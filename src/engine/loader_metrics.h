#pragma once
// Internal: the loader's counters. Hot counters are relaxed atomics (they are statistics, read
// for reports, and order nothing); the rest sits behind a mutex touched once per batch.
//
// Stages register their timers once, before any worker starts (add_stage is not thread-safe);
// the snapshot, the report table and the bottleneck advice read that list, so a new stage needs
// no edit anywhere else.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "ferry/metrics.h"

namespace ferry {

/// One stage's busy time and items, summed over worker threads.
struct StageTimer {
  std::string name;
  std::string advice;  ///< what to do when this stage is the bottleneck
  std::atomic<uint64_t> ns{0}, items{0};
  void add(uint64_t busy_ns, uint64_t n) {
    ns.fetch_add(busy_ns, std::memory_order_relaxed);
    items.fetch_add(n, std::memory_order_relaxed);
  }
};

class LoaderMetrics {
 public:
  // What the consumer received.
  std::atomic<uint64_t> samples{0}, bytes{0}, errors_skipped{0}, batches{0};

  /// Registers a stage; the reference stays valid for the metrics' lifetime.
  StageTimer& add_stage(std::string name, std::string advice);
  void reset();
  void record_queue(uint64_t ready, uint32_t prefetch);
  void add_wait(uint64_t ns);
  void add_latency(double ms);
  Metrics snapshot(uint32_t threads, uint32_t prefetch) const;

 private:
  std::deque<StageTimer> stages_;  // a deque: references survive later registrations
  mutable std::mutex mu_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  uint64_t wait_ns_ = 0;
  std::vector<uint64_t> queue_hist_;
  std::vector<double> latencies_;  // ring of the most recent kLatencyWindow batches
  size_t latency_next_ = 0;
  static constexpr size_t kLatencyWindow = 4096;
};

}  // namespace ferry
