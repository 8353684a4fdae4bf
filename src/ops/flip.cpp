// flip: reverses the value along one axis with probability p (drawn from the sample's rng, so
// the same samples flip for any thread count and after a resume).
#include <cstring>

#include "ops.h"

namespace ferry::ops {
namespace {

class Flip final : public Op {
 public:
  explicit Flip(const OpArgs& args) : axis_(args.integer("axis", -1)), p_(args.number("p", 0.5)) {
    args.allow_only({"axis", "p"});
    if (!(p_ >= 0 && p_ <= 1)) args.fail("p", "must be a probability in [0, 1]");
  }
  std::string_view name() const override { return "flip"; }

  ValueSpec setup(const ValueSpec& in) override {
    require_array(in, "flip");
    if (in.shape.empty()) throw InvalidArgument("cannot flip a scalar");
    const size_t axis = resolve_axis(axis_, in.shape.size(), "axis");
    outer_ = 1;
    for (size_t d = 0; d < axis; ++d) outer_ *= in.shape[d];
    extent_ = in.shape[axis];
    inner_bytes_ = dtype_size(in.dtype);
    for (size_t d = axis + 1; d < in.shape.size(); ++d) inner_bytes_ *= in.shape[d];
    return in;
  }

  uint64_t run(std::span<const uint8_t> in, std::span<uint8_t> out,
               SampleContext& ctx) const override {
    // Draw first, always: every sample consumes the same numbers whatever p is.
    if (!ctx.rng.bernoulli(p_)) {
      std::memcpy(out.data(), in.data(), in.size());
      return in.size();
    }
    const uint64_t row = extent_ * inner_bytes_;
    for (uint64_t o = 0; o < outer_; ++o) {
      const uint8_t* src = in.data() + o * row;
      uint8_t* dst = out.data() + o * row;
      for (uint64_t k = 0; k < extent_; ++k)
        std::memcpy(dst + k * inner_bytes_, src + (extent_ - 1 - k) * inner_bytes_, inner_bytes_);
    }
    return in.size();
  }

  std::string args_json() const override {
    return R"({"axis":)" + std::to_string(axis_) + R"(,"p":)" + json_number(p_) + "}";
  }

 private:
  int64_t axis_;
  double p_;
  uint64_t outer_ = 1, extent_ = 1, inner_bytes_ = 1;
};

}  // namespace

std::unique_ptr<Op> make_flip(const OpArgs& args) { return std::make_unique<Flip>(args); }

}  // namespace ferry::ops
