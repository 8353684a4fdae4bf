#pragma once
// Internal: the image core the image ops share (src/ops/image_*.cpp): JPEG/PNG decoding, the
// geometry plan of a crop/resize, and the antialiased separable resampler.
#include <cstdint>
#include <span>
#include <string>

#include "ferry/op.h"

namespace ferry::image {

/// Interleaved 8-bit pixels, rows `stride` bytes apart.
struct ImageView {
  const uint8_t* data = nullptr;
  uint32_t height = 0, width = 0, channels = 0;
  uint64_t stride = 0;
};

enum class ColorMode { rgb, gray, unchanged };

enum class Codec { jpeg, png, unknown };
Codec sniff(std::span<const uint8_t> bytes);

struct ImageInfo {
  uint32_t height = 0, width = 0;
};

/// One axis of a resampling: output pixel i is centred on source coordinate
/// start + (i + 0.5) * scale, with a filter `scale` wide when shrinking (antialias). A pure crop
/// has scale 1 and an integer start (it may lie outside the image: those pixels are 0, as PIL's
/// crop pads).
struct AxisPlan {
  double start = 0, scale = 1;
  uint32_t out = 0;
  bool is_copy() const;
};

struct Plan {
  AxisPlan y, x;
  bool antialias = true;
};

/// What the decoder should produce: the whole image, or (a JPEG) a DCT-scaled part of it.
struct DecodeRequest {
  ColorMode mode = ColorMode::rgb;
  uint64_t max_pixels = 178956970;
  /// Rows [y0, y1) and columns [x0, x1) of the image scaled by scale_num/8 (libjpeg's output
  /// coordinates); the decoder may return more columns (iMCU alignment) and says where they start.
  uint32_t scale_num = 8;
  uint32_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;
  bool whole = true;
};

/// A decoded region: `view` covers scaled-image rows [row0, row0+height) and columns
/// [col0, col0+width).
struct Decoded {
  ImageView view;
  uint32_t row0 = 0, col0 = 0;
  uint32_t scaled_height = 0, scaled_width = 0;  ///< the whole scaled image's size
};

/// Reads only the header. Throws Error naming the cause (not an image, truncated, too big).
ImageInfo read_info(std::span<const uint8_t> bytes, Codec codec, uint64_t max_pixels);

/// Decodes into ctx.arena. Only JPEG honours a partial/scaled request; PNG always decodes whole.
/// Channels: rgb 3, gray 1, unchanged as stored (1..4). Throws Error naming the cause.
Decoded decode(std::span<const uint8_t> bytes, Codec codec, const DecodeRequest& req, Arena& arena);

/// The source pixel range [lo, hi) the resampling of one axis reads (for a copy, clamped).
struct Range {
  uint32_t lo = 0, hi = 0;
};
Range source_range(const AxisPlan& axis, uint32_t in_size, bool antialias);

/// Resamples `src` (whose pixel (0,0) sits at source coordinate (origin_y, origin_x) of a
/// `full_h` x `full_w` image) per `plan` into `out` (plan.y.out x plan.x.out x channels, packed).
void resample(const ImageView& src, uint32_t origin_y, uint32_t origin_x, uint32_t full_h,
              uint32_t full_w, const Plan& plan, uint8_t* out, Arena& arena);

/// Reads an image input of an image op: a VariableArray (after decode or an int resize) or a
/// fixed [H, W, C] u8 array.
ImageView view_of(std::span<const uint8_t> in, const ValueSpec& spec);

}  // namespace ferry::image
