#pragma once
// Internal: BatchLayout — what a batch holds, computed once at construction: the loaded fields'
// OUTPUT specs (after each field's op chain), each field's capacity in a batch, and the chains
// themselves. The host pool and the device ring are both sized from it.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ferry/format.h"
#include "ferry/pipeline.h"

namespace ferry {

struct BatchLayout {
  std::vector<FieldSpec> fields;   ///< output specs, in loader field order
  std::vector<size_t> file_field;  ///< each field's index in the file's schema
  std::vector<uint64_t> capacity;  ///< bytes of each field's buffer in one batch
  /// Per field: its op chain, or null when the field's bytes are copied as stored.
  std::vector<std::unique_ptr<FieldPipeline>> pipelines;
  /// Per field: stored compressed (format v2): decoded as the first step of its chain.
  std::vector<bool> compressed;
  std::string pipeline_canonical;  ///< every chain's canonical text (the resume fingerprint)

  /// Throws InvalidArgument for an unknown field (in `names` or the pipeline) and for any bad
  /// op chain (pipeline.h names the field and op).
  static BatchLayout make(const Layout& layout, const std::vector<std::string>& names,
                          uint64_t batch_size, const PipelineSpec& pipeline);

  /// True when field f is written by its chain (or decoded) rather than copied as stored.
  bool processed(size_t f) const { return pipelines[f] != nullptr || compressed[f]; }
};

}  // namespace ferry
