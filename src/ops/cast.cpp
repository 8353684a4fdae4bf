// cast: converts every element to another dtype (shape unchanged).
#include "element.h"
#include "ops.h"

namespace ferry::ops {
namespace {

class Cast final : public Op {
 public:
  explicit Cast(const OpArgs& args) : to_(parse_dtype_name(args.string("dtype"))) {
    args.allow_only({"dtype"});
  }
  std::string_view name() const override { return fused_ ? fused_->name() : "cast"; }

  // cast(float32) then normalize: normalize reads any dtype and converts each element to float
  // exactly as this cast does, so the pair is one normalize pass over the original values (the
  // same bytes, one pass fewer).
  bool fuse_next(const Op& next) override {
    if (fused_ || to_ != DType::f32 || next.name() != "normalize") return false;
    fused_ = make_normalize(OpArgs("normalize", next.args_json()));
    return true;
  }

  ValueSpec setup(const ValueSpec& in) override {
    if (fused_) return fused_->setup(in);
    require_array(in, "cast");
    from_ = in.dtype;
    return ValueSpec::array(to_, in.shape);
  }

  uint64_t run(std::span<const uint8_t> in, std::span<uint8_t> out,
               SampleContext& ctx) const override {
    if (fused_) return fused_->run(in, out, ctx);
    const uint64_t n = in.size() / dtype_size(from_);
    visit_dtype(from_, [&](auto from) {
      visit_dtype(to_, [&](auto to) {
        convert_all<decltype(from), decltype(to)>(in.data(), out.data(), n);
      });
    });
    return n * dtype_size(to_);
  }

  std::string args_json() const override {
    return R"({"dtype":")" + std::string(dtype_name(to_)) + "\"}";
  }

 private:
  template <class From, class To>
  static void convert_all(const uint8_t* src, uint8_t* dst, uint64_t n) {
    const auto* s = reinterpret_cast<const From*>(src);
    auto* d = reinterpret_cast<To*>(dst);
    for (uint64_t i = 0; i < n; ++i) d[i] = convert<To>(load(s[i]));
  }
  DType to_;
  DType from_ = DType::u8;
  std::unique_ptr<Op> fused_;  // the normalize this cast took over, if any
};

}  // namespace

std::unique_ptr<Op> make_cast(const OpArgs& args) { return std::make_unique<Cast>(args); }

}  // namespace ferry::ops
