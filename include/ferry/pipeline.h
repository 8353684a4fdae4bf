#pragma once
/// \file pipeline.h
/// \brief Per-field op chains: the spec a user writes (JSON or C++) and the compiled chain the
/// engine runs.
///
/// JSON form (what Python's `Loader(pipeline=...)` and the CLI pass):
/// ```json
/// [{"field": "image", "ops": [{"op": "cast", "dtype": "float32"},
///                             {"op": "normalize", "mean": [0.5], "std": [0.25]}]},
///  {"field": "label", "ops": [{"op": "cast", "dtype": "int64"}]}]
/// ```
/// A single object (one field) is accepted too. Fields without a chain pass through unchanged.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/op.h"

namespace ferry {

struct OpSpec {
  std::string name;
  std::string args_json = "{}";  ///< the op's arguments: a JSON object (without "op")
};

struct FieldPipelineSpec {
  std::string field;
  std::vector<OpSpec> ops;
};

using PipelineSpec = std::vector<FieldPipelineSpec>;

/// Parses the JSON form; throws InvalidArgument saying what is malformed and where.
PipelineSpec parse_pipeline(std::string_view json);
/// Canonical JSON (parse_pipeline(pipeline_to_json(p)) == p's meaning).
std::string pipeline_to_json(const PipelineSpec& spec);

/// One field's compiled chain. Built once; run() may be called concurrently (ops are const).
class FieldPipeline {
 public:
  /// Makes every op, lets each fuse with the next, and runs setup in order. Throws
  /// InvalidArgument "field 'image': op 2 'normalize': ..." for any bad op or argument, and when
  /// the final output is neither fixed-shape nor bytes with a bound.
  FieldPipeline(const FieldPipelineSpec& spec, const ValueSpec& input);
  ~FieldPipeline();
  FieldPipeline(FieldPipeline&&) noexcept;
  FieldPipeline& operator=(FieldPipeline&&) noexcept;

  const std::string& field() const { return field_; }
  const ValueSpec& input() const { return specs_.front(); }
  const ValueSpec& output() const { return specs_.back(); }
  bool empty() const { return ops_.empty(); }
  size_t size() const { return ops_.size(); }
  /// After fusion: the ops that run, in order.
  const Op& op(size_t i) const { return *ops_[i]; }
  /// Canonical text of the chain (op names + args), what the resume fingerprint hashes.
  std::string canonical() const;

  /// Runs the chain on `in`, writing the final value into `out` (capacity output().max_bytes()).
  /// Intermediate values live in ctx.arena. Returns the bytes written.
  uint64_t run(std::span<const uint8_t> in, std::span<uint8_t> out, SampleContext& ctx) const;

 private:
  std::string field_;
  std::vector<std::unique_ptr<Op>> ops_;
  std::vector<ValueSpec> specs_;  // specs_[i] = input of op i; specs_.back() = output
};

}  // namespace ferry
