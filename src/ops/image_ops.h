#pragma once
// Internal: the geometric image ops (resize, center_crop, random_resized_crop) as plans, so
// decode can fuse with them (draw the window from the header, decode only that part).
#include <string>

#include "../image/image.h"
#include "ops.h"

namespace ferry::ops {

class GeometryOp : public Op {
 public:
  /// The resampling for an input of `h` x `w`; draws from `rng` exactly as run() does.
  virtual image::Plan plan(uint32_t h, uint32_t w, SampleRng& rng) const = 0;
  /// The output's [h, w] when fixed, or {0, 0} when it depends on the input (resize(int)).
  virtual std::pair<uint32_t, uint32_t> fixed_size() const = 0;
  /// A pure crop of the previous plan's output (center_crop): composable after a resize.
  virtual bool is_crop() const { return false; }

  ValueSpec setup(const ValueSpec& in) override;
  uint64_t run(std::span<const uint8_t> in, std::span<uint8_t> out,
               SampleContext& ctx) const override;

 protected:
  ValueSpec in_;
  uint32_t channels_ = 0;
};

/// `then` (a crop) applied to `first`'s output, as one plan on the source.
image::Plan compose(const image::Plan& first, const image::Plan& then);

/// Writes `out` as the op's output: a VariableArray in `dst` (pixels in the arena) or packed.
uint64_t emit_image(const image::Plan& p, uint32_t channels, bool variable, std::span<uint8_t> dst,
                    SampleContext& ctx, uint8_t** pixels);

}  // namespace ferry::ops
