// random_horizontal_flip, to_chw and color_jitter on fixed-shape u8 [H, W, C] images.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "image_ops.h"

namespace ferry::ops {
namespace {

void require_hwc(const ValueSpec& in, std::string_view op) {
  require_array(in, op);
  if (in.shape.size() != 3)
    throw InvalidArgument("needs an [H, W, C] image, got " + in.to_string());
}

class RandomHorizontalFlip final : public Op {
 public:
  explicit RandomHorizontalFlip(const OpArgs& args) : p_(args.number("p", 0.5)) {
    args.allow_only({"p"});
    if (!(p_ >= 0 && p_ <= 1)) args.fail("p", "must be a probability in [0, 1]");
  }
  std::string_view name() const override { return "random_horizontal_flip"; }
  ValueSpec setup(const ValueSpec& in) override {
    require_hwc(in, "random_horizontal_flip");
    width_ = in.shape[1];
    pixel_ = in.shape[2] * dtype_size(in.dtype);
    return in;
  }
  uint64_t run(std::span<const uint8_t> in, std::span<uint8_t> out,
               SampleContext& ctx) const override {
    if (!ctx.rng.bernoulli(p_)) {
      std::memcpy(out.data(), in.data(), in.size());
      return in.size();
    }
    const uint64_t row = width_ * pixel_;
    for (uint64_t r = 0; r < in.size() / row; ++r) {
      const uint8_t* s = in.data() + r * row;
      uint8_t* d = out.data() + r * row;
      if (pixel_ == 3) {
        for (uint64_t x = 0; x < width_; ++x) {
          const uint8_t* p = s + (width_ - 1 - x) * 3;
          d[x * 3] = p[0], d[x * 3 + 1] = p[1], d[x * 3 + 2] = p[2];
        }
      } else {
        for (uint64_t x = 0; x < width_; ++x)
          std::memcpy(d + x * pixel_, s + (width_ - 1 - x) * pixel_, pixel_);
      }
    }
    return in.size();
  }
  std::string args_json() const override { return R"({"p":)" + json_number(p_) + "}"; }

 private:
  double p_;
  uint64_t width_ = 0, pixel_ = 0;
};

class ToChw final : public Op {
 public:
  explicit ToChw(const OpArgs& args) { args.allow_only({}); }
  std::string_view name() const override { return "to_chw"; }
  ValueSpec setup(const ValueSpec& in) override {
    require_hwc(in, "to_chw");
    h_ = in.shape[0], w_ = in.shape[1], c_ = in.shape[2], elem_ = dtype_size(in.dtype);
    return ValueSpec::array(in.dtype, {c_, h_, w_});
  }
  uint64_t run(std::span<const uint8_t> in, std::span<uint8_t> out, SampleContext&) const override {
    const uint64_t plane = h_ * w_;
    if (elem_ == 4 && c_ == 3) {
      const auto* s = reinterpret_cast<const float*>(in.data());
      auto* d = reinterpret_cast<float*>(out.data());
      for (uint64_t i = 0; i < plane; ++i)
        d[i] = s[i * 3], d[plane + i] = s[i * 3 + 1], d[2 * plane + i] = s[i * 3 + 2];
      return in.size();
    }
    for (uint64_t i = 0; i < plane; ++i)
      for (uint64_t c = 0; c < c_; ++c)
        std::memcpy(out.data() + (c * plane + i) * elem_, in.data() + (i * c_ + c) * elem_, elem_);
    return in.size();
  }
  std::string args_json() const override { return "{}"; }

 private:
  uint64_t h_ = 0, w_ = 0, c_ = 0, elem_ = 1;
};

// torchvision ColorJitter (PIL path) for brightness, contrast, saturation: each factor drawn
// uniformly from [max(0, 1 - v), 1 + v]; the three are applied in an order drawn from ctx.rng
// (torchvision draws a random permutation too). Blends like PIL's ImageEnhance.
class ColorJitter final : public Op {
 public:
  explicit ColorJitter(const OpArgs& args)
      : b_(args.number("brightness", 0)),
        c_(args.number("contrast", 0)),
        s_(args.number("saturation", 0)) {
    args.allow_only({"brightness", "contrast", "saturation"});
    for (auto [k, v] : {std::pair{"brightness", b_}, {"contrast", c_}, {"saturation", s_}})
      if (!(v >= 0 && std::isfinite(v))) args.fail(k, "must be a finite number >= 0");
  }
  std::string_view name() const override { return "color_jitter"; }
  ValueSpec setup(const ValueSpec& in) override {
    require_hwc(in, "color_jitter");
    if (in.dtype != DType::u8 || in.shape[2] != 3)
      throw InvalidArgument("needs a u8 RGB [H, W, 3] image, got " + in.to_string());
    return in;
  }
  uint64_t run(std::span<const uint8_t> in, std::span<uint8_t> out,
               SampleContext& ctx) const override {
    int order[3] = {0, 1, 2};
    for (int i = 2; i > 0; --i) std::swap(order[i], order[ctx.rng.below(i + 1)]);
    const double f[3] = {draw(b_, ctx.rng), draw(c_, ctx.rng), draw(s_, ctx.rng)};
    std::memcpy(out.data(), in.data(), in.size());
    const uint64_t n = in.size() / 3;
    uint8_t* p = out.data();
    for (int k : order) {
      if (f[k] == 1.0) continue;
      const float a = static_cast<float>(f[k]);
      if (k == 0) {
        for (uint64_t i = 0; i < n * 3; ++i) p[i] = blend(0.f, p[i], a);
      } else if (k == 1) {
        uint64_t sum = 0;
        for (uint64_t i = 0; i < n; ++i) sum += luma(p + i * 3);
        const float mean = std::floor(static_cast<float>(sum) / n + 0.5f);
        for (uint64_t i = 0; i < n * 3; ++i) p[i] = blend(mean, p[i], a);
      } else {
        for (uint64_t i = 0; i < n; ++i) {
          const float l = luma(p + i * 3);
          for (int c = 0; c < 3; ++c) p[i * 3 + c] = blend(l, p[i * 3 + c], a);
        }
      }
    }
    return in.size();
  }
  std::string args_json() const override {
    return R"({"brightness":)" + json_number(b_) + R"(,"contrast":)" + json_number(c_) +
           R"(,"saturation":)" + json_number(s_) + "}";
  }

 private:
  static double draw(double v, SampleRng& rng) {
    return v == 0 ? (rng.uniform(), 1.0) : rng.uniform(std::max(0.0, 1 - v), 1 + v);
  }
  static uint32_t luma(const uint8_t* px) {
    return (px[0] * 19595u + px[1] * 38470u + px[2] * 7471u + 0x8000u) >> 16;
  }
  // PIL's Image.blend: degenerate + a * (img - degenerate), clipped.
  static uint8_t blend(float degenerate, uint8_t v, float a) {
    const float t = degenerate + a * (static_cast<float>(v) - degenerate);
    return static_cast<uint8_t>(t <= 0 ? 0 : (t >= 255 ? 255 : t + 0.5f));
  }
  double b_, c_, s_;
};

}  // namespace

std::unique_ptr<Op> make_random_horizontal_flip(const OpArgs& a) {
  return std::make_unique<RandomHorizontalFlip>(a);
}
std::unique_ptr<Op> make_to_chw(const OpArgs& a) { return std::make_unique<ToChw>(a); }
std::unique_ptr<Op> make_color_jitter(const OpArgs& a) { return std::make_unique<ColorJitter>(a); }

}  // namespace ferry::ops
