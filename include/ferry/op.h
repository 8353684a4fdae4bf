#pragma once
/// \file op.h
/// \brief Ops: per-field, per-sample steps that turn a field's value into another (decode, crop,
/// cast, normalize...), with a setup step that fixes the output's spec before any sample runs.
///
/// Contract (what the engine relies on):
/// - `setup(in)` runs once, at Loader construction, in chain order: it checks the op's
///   arguments against its input spec and returns the output spec. Every pool (host and
///   device) is sized from the final output spec, so an op may change a field's dtype, shape
///   or size. Throws InvalidArgument; the pipeline adds the field and op names.
/// - `run(in, out, ctx)` runs per sample, concurrently on every worker thread, on a const op:
///   it must not mutate the op. It writes at most `out.size()` bytes (the output spec's
///   `max_bytes()`) and returns how many it wrote (for ndarray outputs exactly `max_bytes()`).
///   It is deterministic given its input and `ctx`: randomness comes only from `ctx.rng`,
///   seeded from (seed, epoch, sample id), so the same seed gives the same bytes for any
///   thread count, and a resumed run equals an uninterrupted one. Throwing marks the sample
///   failed (`on_error` then raises or skips it); it never ends the loader.
/// - Scratch memory comes from `ctx.arena` (per worker, bounded, reset per sample), not from
///   malloc per sample.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/format.h"

namespace ferry {

/// What a field holds at one point of its chain.
struct ValueSpec {
  FieldKind kind = FieldKind::bytes;
  DType dtype = DType::u8;      ///< ndarray only
  std::vector<uint64_t> shape;  ///< ndarray only; empty for a scalar
  uint64_t max_size = 0;        ///< bytes only: the most bytes one sample's value may have
  /// ndarray only: the shape varies per sample (a decoded image). `shape` holds the extents
  /// known at setup and 0 for the varying ones ([0,0,3]); the value is a VariableArray (below)
  /// pointing into the sample's arena. Only an intermediate: the op after it must accept it,
  /// and a chain whose output is variable fails at construction.
  bool variable = false;

  static ValueSpec array(DType dtype, std::vector<uint64_t> shape);
  static ValueSpec bytes(uint64_t max_size);
  /// A per-sample shape (0 = varies), see `variable`.
  static ValueSpec variable_array(DType dtype, std::vector<uint64_t> shape);
  static ValueSpec of(const FieldSpec& field, uint64_t max_bytes_length);
  bool is_array() const { return kind == FieldKind::ndarray; }
  uint64_t num_elements() const;
  /// ndarray: the value's exact size; variable: sizeof(VariableArray); bytes: max_size.
  uint64_t max_bytes() const;
  /// "f32[3,224,224]" or "bytes(<= 123456)".
  std::string to_string() const;
  bool operator==(const ValueSpec&) const = default;
};

/// The value of a `variable` spec: the sample's shape and a pointer to its elements (C order),
/// which live in the producing op's ctx.arena until the sample ends.
struct VariableArray {
  const uint8_t* data = nullptr;
  uint32_t ndim = 0;
  uint64_t shape[4] = {0, 0, 0, 0};
};

/// A deterministic generator for one sample's randomness (SplitMix64 stream): the same
/// (seed, epoch, sample id) gives the same numbers on every platform and thread.
class SampleRng {
 public:
  SampleRng(uint64_t seed, uint64_t epoch, uint64_t sample_id);
  uint64_t next();
  /// Uniform in [0, 1).
  double uniform();
  /// Uniform in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Uniform integer in [0, bound).
  uint64_t below(uint64_t bound);
  /// True with probability p.
  bool bernoulli(double p) { return uniform() < p; }

 private:
  uint64_t state_;
};

/// Per-worker scratch: a bump allocator over chunks it keeps between samples. `reset()` (the
/// engine calls it before each sample) makes every byte reusable; the chunks stay, so a steady
/// state allocates nothing. Exceeding `limit` bytes at once throws CapacityError.
/// Not thread-safe: one per worker.
class Arena {
 public:
  explicit Arena(uint64_t limit = 256ull << 20);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  /// `bytes` bytes aligned to 64, valid until reset().
  uint8_t* allocate(uint64_t bytes);
  std::span<uint8_t> span(uint64_t bytes) { return {allocate(bytes), bytes}; }
  void reset();
  uint64_t capacity() const;  ///< bytes held in chunks
  uint64_t limit() const { return limit_; }

 private:
  struct Chunk;
  std::vector<std::unique_ptr<Chunk>> chunks_;
  size_t current_ = 0;
  uint64_t used_ = 0, in_use_total_ = 0, limit_;
};

/// What a run sees besides its input.
struct SampleContext {
  uint64_t sample_id = 0;
  uint64_t epoch = 0;
  SampleRng& rng;
  Arena& arena;
};

class Op {
 public:
  virtual ~Op() = default;
  /// The registry name ("cast", "normalize", ...).
  virtual std::string_view name() const = 0;
  /// Once, before any run: checks the arguments against `in` and returns the output spec.
  virtual ValueSpec setup(const ValueSpec& in) = 0;
  /// Per sample: reads `in` (a value of the spec given to setup) and writes the output.
  virtual uint64_t run(std::span<const uint8_t> in, std::span<uint8_t> out,
                       SampleContext& ctx) const = 0;
  /// The op's arguments as canonical JSON (part of the pipeline hash, so a resume with other
  /// augmentation is refused).
  virtual std::string args_json() const = 0;
  /// Called at construction with the op that follows this one (before setup): an op that can
  /// do the next one's work better together (a decode that decodes only the crop window)
  /// takes it over and returns true; the chain then drops `next`. Default: false.
  virtual bool fuse_next(const Op& /*next*/) { return false; }
};

/// The arguments of one op, as given in a pipeline spec (a JSON object). Getters throw
/// InvalidArgument naming the op and argument when a value has the wrong type or is missing.
class OpArgs {
 public:
  OpArgs(std::string op_name,
         const std::string& json_object);  ///< throws InvalidArgument on bad JSON
  ~OpArgs();
  OpArgs(const OpArgs&);
  OpArgs& operator=(const OpArgs&) = delete;

  const std::string& op_name() const { return op_; }
  bool has(std::string_view key) const;
  double number(std::string_view key) const;
  double number(std::string_view key, double fallback) const;
  int64_t integer(std::string_view key) const;
  int64_t integer(std::string_view key, int64_t fallback) const;
  bool boolean(std::string_view key, bool fallback) const;
  std::string string(std::string_view key) const;
  std::string string(std::string_view key, std::string fallback) const;
  /// A number or a list of numbers (a single number becomes a list of one).
  std::vector<double> numbers(std::string_view key) const;
  std::vector<double> numbers(std::string_view key, std::vector<double> fallback) const;
  /// Throws InvalidArgument naming any key not in `known` (catches typos like "porb").
  void allow_only(std::initializer_list<std::string_view> known) const;
  /// An InvalidArgument "op '<name>': argument '<key>': <why>".
  [[noreturn]] void fail(std::string_view key, std::string_view why) const;

 private:
  struct Json;
  std::string op_;
  std::unique_ptr<Json> json_;
};

/// Makes an op by registry name (src/ops/registry.cpp holds the table: adding an op is one
/// file plus one line there). Throws InvalidArgument naming the op and the known ones.
std::unique_ptr<Op> make_op(std::string_view name, const OpArgs& args);
/// The registered names, sorted.
std::vector<std::string> registered_ops();

}  // namespace ferry
