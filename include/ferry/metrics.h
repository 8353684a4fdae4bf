#pragma once
/// \file metrics.h
/// \brief What the loader measured, and which stage limits throughput.
#include <cstdint>
#include <string>
#include <vector>

#include "ferry/remote.h"

namespace ferry {

struct StageMetrics {
  std::string name;         ///< "read" (read + collate into the batch), "transform"
  std::string advice;       ///< what to do when this stage limits throughput
  double busy_seconds = 0;  ///< summed over threads
  uint64_t items = 0;       ///< samples handled
  double utilization = 0;   ///< busy / (wall × threads): 1.0 means every thread busy all the time
  double items_per_second = 0;  ///< items / busy_seconds: one busy thread's rate
};

struct Metrics {
  double wall_seconds = 0;  ///< since the loader started (or metrics were reset)
  uint32_t threads = 0;
  uint32_t prefetch = 0;  ///< batches that may be in flight or ready ahead of the consumer
  uint64_t pool_slots = 0, pool_max_slots = 0, slot_bytes = 0;
  uint64_t batches = 0, samples = 0, bytes_read = 0, errors_skipped = 0;
  std::vector<StageMetrics> stages;
  double consumer_wait_seconds = 0;   ///< time spent blocked in next(): the accelerator-idle figure
  double consumer_wait_fraction = 0;  ///< of wall time
  double queue_mean = 0;              ///< ready batches seen by next(), averaged
  std::vector<uint64_t> queue_histogram;  ///< [i] = calls to next() that found i batches ready
  double latency_p50_ms = 0, latency_p95_ms = 0, latency_p99_ms = 0;  ///< claim → delivery
  double samples_per_second = 0;
  RemoteStats remote;      ///< remote sources: network and cache counters since open (else zeros)
  std::string bottleneck;  ///< one line: the limiting stage and what to do about it

  std::string to_json() const;
  /// A human table, ending with the bottleneck line.
  std::string to_table() const;
};

/// Names the limiting stage from the figures (also used by `ferry bench`).
std::string diagnose_bottleneck(const Metrics& m);

}  // namespace ferry
