#pragma once
// Internal: BatchPlan — the one owner of order → shard → batch → sample ids, and of the resume
// fingerprint (data identity + every option that changes which samples a batch holds + the
// op pipeline's hash). Immutable after construction; any thread may call it.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ferry/format.h"
#include "ferry/loader.h"
#include "ferry/order.h"

namespace ferry {

/// One epoch of one rank: its sample order and how it splits into batches.
struct EpochPlan {
  uint64_t epoch = 0;
  uint64_t batch_size = 1;
  uint64_t num_batches = 0;
  std::vector<uint64_t> order;  ///< this rank's samples, in delivery order

  /// Sample ids of batch k (the last one may be short).
  std::span<const uint64_t> batch(uint64_t k) const;
  /// Samples batch k holds before any skip (batch_size but for the last).
  uint64_t nominal_size(uint64_t k) const;
};

class BatchPlan {
 public:
  /// `pipeline_canonical`: the compiled pipeline's canonical text (hashed into the fingerprint).
  BatchPlan(const Layout& layout, const LoaderOptions& options,
            const std::string& pipeline_canonical);

  std::shared_ptr<const EpochPlan> epoch(uint64_t e) const;
  /// The state at (epoch, next_batch) with this plan's fingerprint.
  LoaderState state(uint64_t epoch, uint64_t next_batch) const;
  /// Throws InvalidArgument naming each setting or data property that differs from `saved`,
  /// or a position outside the data. Adopts `saved`'s elastic history for its epoch.
  void check_resume(const LoaderState& saved);
  /// Elastic resume from every rank's state of an earlier run (any world size): checks each
  /// fingerprint (world_size and rank aside), records which samples they consumed, and returns
  /// the epoch to start at batch 0; that epoch's plan holds only the samples left.
  uint64_t resume_elastic(const std::vector<LoaderState>& ranks);

  uint64_t batch_size() const { return fingerprint_.batch_size; }

 private:
  const Layout& layout_;
  LoaderOptions options_;
  LoaderState fingerprint_;
  // The partially consumed epoch's earlier runs (set before the loader starts; then immutable).
  uint64_t elastic_epoch_ = 0;
  std::vector<ElasticStep> elastic_;

  std::vector<std::string> fingerprint_diffs(const LoaderState& s, bool same_world) const;
  /// Epoch `e`'s sample list before this run's sharding: the global order, less what `history`'s
  /// runs consumed.
  std::vector<uint64_t> epoch_list(uint64_t e, const std::vector<ElasticStep>& history) const;
};

/// The samples of `list` that `step`'s ranks had not consumed (each rank: a prefix of its
/// shard_order slice), in `list`'s order; samples the remainder rule left out of the epoch are
/// left out here too. Throws InvalidArgument for a step that does not fit `list`.
std::vector<uint64_t> remaining_after(std::span<const uint64_t> list, const ElasticStep& step,
                                      ShardRemainder remainder);

/// xxh64 identity of a file's contents: every page checksum, under the header checksum.
uint64_t data_identity(const Layout& layout);

}  // namespace ferry
