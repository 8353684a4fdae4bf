// normalize: out = (x * scale - mean[c]) / std[c] along a channel axis, as float32 (or
// float16 / bfloat16). One pass from any input dtype: `cast` + `normalize` need not be chained.
#include <cmath>
#include <vector>

#include "element.h"
#include "ops.h"

namespace ferry::ops {
namespace {

class Normalize final : public Op {
 public:
  explicit Normalize(const OpArgs& args)
      : mean_(args.numbers("mean")),
        std_(args.numbers("std")),
        scale_(args.number("scale", 1.0)),
        axis_(args.integer("axis", -1)),
        to_(parse_dtype_name(args.string("dtype", "float32"))) {
    args.allow_only({"mean", "std", "scale", "axis", "dtype"});
    if (mean_.size() != std_.size())
      args.fail("std", "has " + std::to_string(std_.size()) + " values but mean has " +
                           std::to_string(mean_.size()));
    for (double s : std_)
      if (!(s != 0) || !std::isfinite(s)) args.fail("std", "must be finite and non-zero");
    if (to_ != DType::f32 && to_ != DType::f16 && to_ != DType::bf16)
      args.fail("dtype", "must be float32, float16 or bfloat16");
  }
  std::string_view name() const override { return "normalize"; }

  ValueSpec setup(const ValueSpec& in) override {
    require_array(in, "normalize");
    from_ = in.dtype;
    channels_ = mean_.size();
    if (channels_ > 1) {
      const size_t axis = resolve_axis(axis_, in.shape.size(), "axis");
      if (in.shape[axis] != channels_)
        throw InvalidArgument("mean/std have " + std::to_string(channels_) + " values but axis " +
                              std::to_string(axis_) + " has size " +
                              std::to_string(in.shape[axis]));
      inner_ = 1;
      for (size_t d = axis + 1; d < in.shape.size(); ++d) inner_ *= in.shape[d];
    }
    // Precomputed: out = x * mul[c] + add[c].
    mul_.clear();
    add_.clear();
    for (size_t c = 0; c < channels_; ++c) {
      mul_.push_back(static_cast<float>(scale_ / std_[c]));
      add_.push_back(static_cast<float>(-mean_[c] / std_[c]));
    }
    return ValueSpec::array(to_, in.shape);
  }

  uint64_t run(std::span<const uint8_t> in, std::span<uint8_t> out, SampleContext&) const override {
    const uint64_t n = in.size() / dtype_size(from_);
    visit_dtype(from_, [&](auto from) { apply<decltype(from)>(in.data(), out.data(), n); });
    return n * dtype_size(to_);
  }

  std::string args_json() const override {
    std::string s = R"({"mean":[)";
    for (size_t i = 0; i < mean_.size(); ++i) s += (i ? "," : "") + json_number(mean_[i]);
    s += R"(],"std":[)";
    for (size_t i = 0; i < std_.size(); ++i) s += (i ? "," : "") + json_number(std_[i]);
    return s + R"(],"scale":)" + json_number(scale_) + R"(,"axis":)" + std::to_string(axis_) +
           R"(,"dtype":")" + std::string(dtype_name(to_)) + "\"}";
  }

 private:
  template <class From>
  void apply(const uint8_t* src, uint8_t* dst, uint64_t n) const {
    const auto* s = reinterpret_cast<const From*>(src);
    if (to_ == DType::f32) return write<From, float>(s, reinterpret_cast<float*>(dst), n);
    if (to_ == DType::f16) return write<From, Half>(s, reinterpret_cast<Half*>(dst), n);
    write<From, BFloat16>(s, reinterpret_cast<BFloat16*>(dst), n);
  }

  // Channel c covers `inner_` consecutive elements, then the next channel starts: the layout of
  // any axis (HWC: inner 1; CHW: inner H*W).
  template <class From, class To>
  void write(const From* s, To* d, uint64_t n) const {
    if (channels_ == 1) {
      const float m = mul_[0], a = add_[0];
      for (uint64_t i = 0; i < n; ++i) d[i] = convert<To>(static_cast<float>(load(s[i])) * m + a);
      return;
    }
    const uint64_t period = inner_ * channels_;
    for (uint64_t base = 0; base < n; base += period)
      for (size_t c = 0; c < channels_; ++c) {
        const float m = mul_[c], a = add_[c];
        const uint64_t begin = base + c * inner_;
        for (uint64_t i = begin; i < begin + inner_; ++i)
          d[i] = convert<To>(static_cast<float>(load(s[i])) * m + a);
      }
  }

  std::vector<double> mean_, std_;
  double scale_;
  int64_t axis_;
  DType to_;
  DType from_ = DType::u8;
  size_t channels_ = 1;
  uint64_t inner_ = 1;
  std::vector<float> mul_, add_;
};

}  // namespace

std::unique_ptr<Op> make_normalize(const OpArgs& args) { return std::make_unique<Normalize>(args); }

}  // namespace ferry::ops
