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
  /// or a position outside the data.
  void check_resume(const LoaderState& saved) const;

  uint64_t batch_size() const { return fingerprint_.batch_size; }

 private:
  const Layout& layout_;
  LoaderOptions options_;
  LoaderState fingerprint_;
};

/// xxh64 identity of a file's contents: every page checksum, under the header checksum.
uint64_t data_identity(const Layout& layout);

}  // namespace ferry
