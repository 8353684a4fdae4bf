// resize, center_crop, random_resized_crop: torchvision's size arithmetic and crop sampling,
// resampled with PIL's antialiased bilinear filter (src/image/resample.cpp).
#include <cmath>
#include <cstring>

#include "image_ops.h"

namespace ferry::ops {
namespace {

// size: an int or [h, w].
std::pair<uint32_t, uint32_t> parse_size(const OpArgs& args, bool& single) {
  const auto v = args.numbers("size");
  if (v.size() > 2) args.fail("size", "must be an int or [h, w]");
  for (double d : v)
    if (!(d >= 1 && d <= 65535 && d == std::floor(d)))
      args.fail("size", "must hold integers in [1, 65535]");
  single = v.size() == 1;
  return {static_cast<uint32_t>(v[0]), static_cast<uint32_t>(v.size() == 2 ? v[1] : v[0])};
}

std::string size_json(std::pair<uint32_t, uint32_t> s, bool single) {
  return single ? std::to_string(s.first)
                : "[" + std::to_string(s.first) + "," + std::to_string(s.second) + "]";
}

image::AxisPlan resize_axis(uint32_t in, uint32_t out) {
  return {0.0, static_cast<double>(in) / out, out};
}

class Resize final : public GeometryOp {
 public:
  explicit Resize(const OpArgs& args)
      : size_(parse_size(args, single_)), antialias_(args.boolean("antialias", true)) {
    args.allow_only({"size", "antialias"});
  }
  std::string_view name() const override { return "resize"; }
  std::pair<uint32_t, uint32_t> fixed_size() const override {
    return single_ ? std::pair<uint32_t, uint32_t>{0, 0} : size_;
  }
  image::Plan plan(uint32_t h, uint32_t w, SampleRng&) const override {
    uint32_t oh = size_.first, ow = size_.second;
    if (single_) {  // torchvision: the shorter side becomes size, the longer int(size*l/s)
      const uint32_t s = size_.first;
      if (w <= h) {
        ow = s;
        oh = static_cast<uint32_t>(static_cast<uint64_t>(s) * h / w);
      } else {
        oh = s;
        ow = static_cast<uint32_t>(static_cast<uint64_t>(s) * w / h);
      }
      oh = std::max<uint32_t>(oh, 1), ow = std::max<uint32_t>(ow, 1);
    }
    return {resize_axis(h, oh), resize_axis(w, ow), antialias_};
  }
  std::string args_json() const override {
    return R"({"size":)" + size_json(size_, single_) + R"(,"antialias":)" +
           (antialias_ ? "true" : "false") + "}";
  }

 private:
  bool single_ = false;
  std::pair<uint32_t, uint32_t> size_;
  bool antialias_;
};

class CenterCrop final : public GeometryOp {
 public:
  explicit CenterCrop(const OpArgs& args) : size_(parse_size(args, single_)) {
    args.allow_only({"size"});
  }
  std::string_view name() const override { return "center_crop"; }
  std::pair<uint32_t, uint32_t> fixed_size() const override { return size_; }
  bool is_crop() const override { return true; }
  image::Plan plan(uint32_t h, uint32_t w, SampleRng&) const override {
    // torchvision: top = int(round((h - ch) / 2.0)) (Python rounds half to even).
    const double top = std::nearbyint((static_cast<double>(h) - size_.first) / 2.0);
    const double left = std::nearbyint((static_cast<double>(w) - size_.second) / 2.0);
    return {{top, 1.0, size_.first}, {left, 1.0, size_.second}, true};
  }
  std::string args_json() const override { return R"({"size":)" + size_json(size_, single_) + "}"; }

 private:
  bool single_ = false;
  std::pair<uint32_t, uint32_t> size_;
};

class RandomResizedCrop final : public GeometryOp {
 public:
  explicit RandomResizedCrop(const OpArgs& args)
      : size_(parse_size(args, single_)),
        scale_(args.numbers("scale", {0.08, 1.0})),
        ratio_(args.numbers("ratio", {3.0 / 4.0, 4.0 / 3.0})),
        antialias_(args.boolean("antialias", true)) {
    args.allow_only({"size", "scale", "ratio", "antialias"});
    if (scale_.size() != 2 || !(scale_[0] > 0 && scale_[0] <= scale_[1] && scale_[1] <= 1))
      args.fail("scale", "must be [lo, hi] with 0 < lo <= hi <= 1");
    if (ratio_.size() != 2 || !(ratio_[0] > 0 && ratio_[0] <= ratio_[1]))
      args.fail("ratio", "must be [lo, hi] with 0 < lo <= hi");
  }
  std::string_view name() const override { return "random_resized_crop"; }
  std::pair<uint32_t, uint32_t> fixed_size() const override { return size_; }

  // torchvision's RandomResizedCrop.get_params: 10 tries, then the centre fallback.
  image::Plan plan(uint32_t height, uint32_t width, SampleRng& rng) const override {
    const double area = static_cast<double>(height) * width;
    const double log_lo = std::log(ratio_[0]), log_hi = std::log(ratio_[1]);
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double target = area * rng.uniform(scale_[0], scale_[1]);
      const double aspect = std::exp(rng.uniform(log_lo, log_hi));
      const double w = std::nearbyint(std::sqrt(target * aspect));
      const double h = std::nearbyint(std::sqrt(target / aspect));
      if (w > 0 && w <= width && h > 0 && h <= height) {
        const auto i = static_cast<double>(rng.below(static_cast<uint64_t>(height - h) + 1));
        const auto j = static_cast<double>(rng.below(static_cast<uint64_t>(width - w) + 1));
        return window(i, j, h, w);
      }
    }
    const double in_ratio = static_cast<double>(width) / height;
    double w = width, h = height;
    if (in_ratio < ratio_[0]) {
      h = std::nearbyint(w / ratio_[0]);
    } else if (in_ratio > ratio_[1]) {
      w = std::nearbyint(h * ratio_[1]);
    }
    return window(std::floor((height - h) / 2), std::floor((width - w) / 2), h, w);
  }
  std::string args_json() const override {
    return R"({"size":)" + size_json(size_, single_) + R"(,"scale":[)" + json_number(scale_[0]) +
           "," + json_number(scale_[1]) + R"(],"ratio":[)" + json_number(ratio_[0]) + "," +
           json_number(ratio_[1]) + R"(],"antialias":)" + (antialias_ ? "true" : "false") + "}";
  }

 private:
  image::Plan window(double i, double j, double h, double w) const {
    return {{i, h / size_.first, size_.first}, {j, w / size_.second, size_.second}, antialias_};
  }
  bool single_ = false;
  std::pair<uint32_t, uint32_t> size_;
  std::vector<double> scale_, ratio_;
  bool antialias_;
};

}  // namespace

image::Plan compose(const image::Plan& first, const image::Plan& then) {
  image::Plan p = first;
  p.y = {first.y.start + then.y.start * first.y.scale, first.y.scale, then.y.out};
  p.x = {first.x.start + then.x.start * first.x.scale, first.x.scale, then.x.out};
  return p;
}

uint64_t emit_image(const image::Plan& p, uint32_t channels, bool variable, std::span<uint8_t> dst,
                    SampleContext& ctx, uint8_t** pixels) {
  const uint64_t bytes = uint64_t{p.y.out} * p.x.out * channels;
  if (!variable) {
    *pixels = dst.data();
    return bytes;
  }
  *pixels = ctx.arena.allocate(bytes);
  VariableArray v;
  v.data = *pixels;
  v.ndim = 3;
  v.shape[0] = p.y.out, v.shape[1] = p.x.out, v.shape[2] = channels;
  std::memcpy(dst.data(), &v, sizeof v);
  return sizeof v;
}

ValueSpec GeometryOp::setup(const ValueSpec& in) {
  if (!in.is_array() || in.dtype != DType::u8 || in.shape.size() != 3)
    throw InvalidArgument("needs a u8 [H, W, C] image (decode the field first), got " +
                          in.to_string());
  if (in.shape[2] == 0)
    throw InvalidArgument("needs a known channel count; decode with mode 'rgb' or 'gray'");
  if (!in.variable && (in.shape[0] == 0 || in.shape[1] == 0))
    throw InvalidArgument("cannot resize an empty image " + in.to_string());
  in_ = in;
  channels_ = static_cast<uint32_t>(in.shape[2]);
  const auto [h, w] = fixed_size();
  if (h == 0) return ValueSpec::variable_array(DType::u8, {0, 0, channels_});
  return ValueSpec::array(DType::u8, {h, w, channels_});
}

uint64_t GeometryOp::run(std::span<const uint8_t> in, std::span<uint8_t> out,
                         SampleContext& ctx) const {
  const image::ImageView src = image::view_of(in, in_);
  if (src.height == 0 || src.width == 0) throw Error("image: zero-sized image");
  const image::Plan p = plan(src.height, src.width, ctx.rng);
  uint8_t* pixels = nullptr;
  const uint64_t n = emit_image(p, channels_, fixed_size().first == 0, out, ctx, &pixels);
  image::resample(src, 0, 0, src.height, src.width, p, pixels, ctx.arena);
  return n;
}

std::unique_ptr<Op> make_resize(const OpArgs& a) { return std::make_unique<Resize>(a); }
std::unique_ptr<Op> make_center_crop(const OpArgs& a) { return std::make_unique<CenterCrop>(a); }
std::unique_ptr<Op> make_random_resized_crop(const OpArgs& a) {
  return std::make_unique<RandomResizedCrop>(a);
}

}  // namespace ferry::ops
