#pragma once
// Internal: what one worker thread does with a claimed batch, in stage order —
//   fetch   (fetch.cpp)  stored bytes: memcpy from the mapping into the slot, or read_many
//                        straight into the slot; fields with a chain go to the worker's staging
//                        (or are viewed in the mapping, zero-copy)
//   decode + ops         each processed field's chain (pipeline.h) per sample, from staging
//                        into the slot, with the sample's rng and the worker's arena
//   transform            the legacy whole-sample Transform, in place
//   collate              (implicit: every stage writes into the slot) + skip compaction
// Workers share nothing but the Scheduler (claims) and the metrics' atomics.
#include <cstdint>
#include <span>
#include <vector>

#include "batch_layout.h"
#include "ferry/loader.h"
#include "ferry/op.h"
#include "ferry/reader.h"
#include "loader_metrics.h"
#include "scheduler.h"

namespace ferry {

/// One worker's private state, reused batch after batch (no allocation in steady state).
struct WorkerContext {
  Arena arena;                                   ///< op scratch, reset per sample
  std::vector<uint8_t> staging;                  ///< processed fields' stored bytes for one batch
  std::vector<std::span<const uint8_t>> inputs;  ///< [sample][processed field] stored bytes
  std::vector<ReadRequest> requests, hints;
  std::vector<uint8_t> keep;  ///< per sample: 0 once it failed (on_error=skip)
};

class Worker {
 public:
  /// `hint_ahead`: issue will_need for the batch entering the window (cold or remote files).
  Worker(const Reader& reader, const BatchLayout& layout, const LoaderOptions& options,
         LoaderMetrics& metrics, Scheduler& scheduler, bool hint_ahead);

  /// Claims and fills batches until the scheduler stops.
  void run();
  /// Fills `slot` with `task`'s batch (errors recorded in the slot, never thrown).
  void fill(BatchSlot& slot, const Task& task, WorkerContext& ctx);

 private:
  // fetch.cpp
  void set_stored_offsets(BatchSlot& s) const;
  void fetch_from_view(BatchSlot& s, WorkerContext& ctx) const;
  void fetch_through_source(BatchSlot& s, WorkerContext& ctx);
  void retry_one_by_one(BatchSlot& s, size_t start, size_t count, WorkerContext& ctx);
  void hint_batch(const EpochPlan& plan, uint64_t index, std::vector<ReadRequest>& ranges) const;
  uint8_t* stored_dst(BatchSlot& s, size_t f, uint64_t i) const;
  void size_staging(BatchSlot& s, WorkerContext& ctx) const;
  // worker.cpp
  void run_pipelines(BatchSlot& s, WorkerContext& ctx, uint64_t epoch);
  /// One processed field of sample i: decode (compressed fields), then the chain, into `dst`.
  uint64_t process_field(const BatchSlot& s, uint64_t i, size_t f, std::span<const uint8_t> stored,
                         std::span<uint8_t> dst, WorkerContext& ctx, uint64_t epoch,
                         uint64_t& decode_ns);
  void run_transform(BatchSlot& s, WorkerContext& ctx);
  /// Records a failed sample. Returns false if the batch must stop (on_error=raise).
  bool sample_failed(BatchSlot& s, uint64_t i, std::string_view what, const std::exception& e,
                     WorkerContext& ctx);

  const Reader& reader_;
  const Layout& file_;
  const BatchLayout& layout_;
  const LoaderOptions& opt_;
  Scheduler& scheduler_;
  const bool hint_ahead_;
  const uint8_t* file_base_;       // whole-file view (mmap): the zero-syscall fast path
  std::vector<size_t> processed_;  // loader field indices with a chain
  StageTimer& read_timer_;
  StageTimer& decode_timer_;
  StageTimer& ops_timer_;
  StageTimer& transform_timer_;
};

}  // namespace ferry
