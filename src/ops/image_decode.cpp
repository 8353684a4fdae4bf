// decode: JPEG/PNG bytes -> u8 [H, W, C] (a per-sample shape, so the next op must bring it to
// one size). Fused with a following resize / center_crop / random_resized_crop (fuse_next), it
// reads the JPEG header, draws the crop window first (same rng draws as the unfused chain),
// picks the smallest DCT scale that keeps the window at least the output size, and decodes only
// the window's rows and iMCU columns before resampling (docs/images.md).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "image_ops.h"

namespace ferry::ops {
namespace {

image::ColorMode parse_mode(const OpArgs& args) {
  const std::string m = args.string("mode", "rgb");
  if (m == "rgb") return image::ColorMode::rgb;
  if (m == "gray") return image::ColorMode::gray;
  if (m == "unchanged") return image::ColorMode::unchanged;
  args.fail("mode", "must be 'rgb', 'gray' or 'unchanged', got '" + m + "'");
}

const char* mode_name(image::ColorMode m) {
  return m == image::ColorMode::rgb ? "rgb" : (m == image::ColorMode::gray ? "gray" : "unchanged");
}

class Decode final : public Op {
 public:
  explicit Decode(const OpArgs& args)
      : mode_(parse_mode(args)),
        max_pixels_(args.integer("max_pixels", 178956970)),
        scaled_(args.boolean("scaled", true)) {
    args.allow_only({"mode", "max_pixels", "scaled"});
    if (max_pixels_ < 1) args.fail("max_pixels", "must be at least 1");
  }
  std::string_view name() const override { return "decode"; }

  bool fuse_next(const Op& next) override {
    const auto* geo = dynamic_cast<const GeometryOp*>(&next);
    if (!geo || mode_ == image::ColorMode::unchanged) return false;
    // resize(int) + center_crop compose into one plan; anything else fuses only first.
    if (!fused_.empty() && !(fused_.size() == 1 && geo->is_crop())) return false;
    const std::string name(next.name());
    auto op = make_op(name, OpArgs(name, next.args_json()));
    fused_.emplace_back(static_cast<GeometryOp*>(op.release()));
    return true;
  }

  ValueSpec setup(const ValueSpec& in) override {
    if (in.kind != FieldKind::bytes && !(in.is_array() && in.dtype == DType::u8 && !in.variable))
      throw InvalidArgument("needs a bytes field holding JPEG or PNG, got " + in.to_string());
    const uint64_t channels = mode_ == image::ColorMode::rgb    ? 3
                              : mode_ == image::ColorMode::gray ? 1
                                                                : 0;
    ValueSpec spec = ValueSpec::variable_array(DType::u8, {0, 0, channels});
    for (auto& op : fused_) spec = op->setup(spec);
    return spec;
  }

  uint64_t run(std::span<const uint8_t> in, std::span<uint8_t> out,
               SampleContext& ctx) const override {
    const image::Codec codec = image::sniff(in);
    image::DecodeRequest req;
    req.mode = mode_;
    req.max_pixels = static_cast<uint64_t>(max_pixels_);
    if (fused_.empty()) return decode_whole(in, codec, req, out, ctx);
    const image::ImageInfo info = image::read_info(in, codec, req.max_pixels);
    image::Plan p = fused_[0]->plan(info.height, info.width, ctx.rng);
    if (fused_.size() == 2) p = compose(p, fused_[1]->plan(p.y.out, p.x.out, ctx.rng));
    uint32_t full_h = info.height, full_w = info.width;
    if (codec == image::Codec::jpeg) {
      req.scale_num = scaled_ ? scale_for(p) : 8;
      const double f = req.scale_num / 8.0;
      full_h = static_cast<uint32_t>((uint64_t{info.height} * req.scale_num + 7) / 8);
      full_w = static_cast<uint32_t>((uint64_t{info.width} * req.scale_num + 7) / 8);
      p.y.start *= f, p.y.scale *= f, p.x.start *= f, p.x.scale *= f;
      const image::Range rows = image::source_range(p.y, full_h, p.antialias);
      const image::Range cols = image::source_range(p.x, full_w, p.antialias);
      req.whole = false;
      req.y0 = rows.lo, req.y1 = std::max(rows.hi, rows.lo + 1);
      req.x0 = cols.lo, req.x1 = std::max(cols.hi, cols.lo + 1);
    }
    const image::Decoded d = image::decode(in, codec, req, ctx.arena);
    uint8_t* pixels = nullptr;
    const uint32_t channels = d.view.channels;
    const uint64_t n =
        emit_image(p, channels, fused_.back()->fixed_size().first == 0, out, ctx, &pixels);
    image::resample(d.view, d.row0, d.col0, d.scaled_height, d.scaled_width, p, pixels, ctx.arena);
    (void)full_h, (void)full_w;
    return n;
  }

  std::string args_json() const override {
    std::string s = R"({"mode":")" + std::string(mode_name(mode_)) + R"(","max_pixels":)" +
                    std::to_string(max_pixels_) + R"(,"scaled":)" + (scaled_ ? "true" : "false");
    if (!fused_.empty()) {
      s += R"(,"fused":[)";
      for (size_t i = 0; i < fused_.size(); ++i)
        s += (i ? "," : "") + std::string(R"({"op":")") + std::string(fused_[i]->name()) +
             R"(","args":)" + fused_[i]->args_json() + "}";
      s += "]";
    }
    return s + "}";
  }

 private:
  // The smallest n in 1..8 with the window scaled by n/8 still at least the output size.
  static uint32_t scale_for(const image::Plan& p) {
    const double shrink = std::min(p.y.scale, p.x.scale);  // source pixels per output pixel
    if (!(shrink > 1.0)) return 8;
    const double n = std::ceil(8.0 / shrink - 1e-9);
    return static_cast<uint32_t>(std::clamp(n, 1.0, 8.0));
  }

  uint64_t decode_whole(std::span<const uint8_t> in, image::Codec codec,
                        const image::DecodeRequest& req, std::span<uint8_t> out,
                        SampleContext& ctx) const {
    image::Decoded d = image::decode(in, codec, req, ctx.arena);
    const image::ImageView& v = d.view;
    const uint64_t row = uint64_t{v.width} * v.channels;
    uint8_t* base = const_cast<uint8_t*>(v.data);  // ours: it came from the arena just now
    if (v.stride != row)                           // CMYK converted in place: pack the rows
      for (uint32_t y = 1; y < v.height; ++y)
        std::memmove(base + y * row, base + y * v.stride, row);
    VariableArray a;
    a.data = base;
    a.ndim = 3;
    a.shape[0] = v.height, a.shape[1] = v.width, a.shape[2] = v.channels;
    std::memcpy(out.data(), &a, sizeof a);
    return sizeof a;
  }

  image::ColorMode mode_;
  int64_t max_pixels_;
  bool scaled_;
  std::vector<std::unique_ptr<GeometryOp>> fused_;
};

}  // namespace

std::unique_ptr<Op> make_decode(const OpArgs& a) { return std::make_unique<Decode>(a); }

}  // namespace ferry::ops
