// The separable antialiased resampler: PIL's bilinear "resample with support scaled by the
// reduction factor" (what torchvision's PIL path and resized_crop(antialias=True) run), with
// 14-bit fixed-point int16 weights over uint8, vertical pass first so the hot loop runs over
// contiguous bytes and GCC vectorizes it (see docs/images.md for why no library).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "ferry/error.h"
#include "image.h"

namespace ferry::image {
namespace {

constexpr int kBits = 14;
constexpr int32_t kOne = 1 << kBits;

// One axis's taps: output i reads `taps[i]` inputs from `first[i]`, weights at i * max_taps.
struct Weights {
  uint32_t max_taps = 0, out = 0;
  int32_t* first = nullptr;
  uint32_t* taps = nullptr;
  int16_t* w = nullptr;
  bool identity = true;  // every output reads exactly one input at weight 1 (a crop)
};

double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

template <class T>
T* alloc(Arena& arena, uint64_t n) {
  return reinterpret_cast<T*>(arena.allocate(n * sizeof(T)));
}

// PIL's precompute_coeffs (bilinear): centre, support = filterscale, bounds truncated, weights
// normalized; then zero taps at either end are trimmed and the rest rounded to 14 bits.
void bounds(const AxisPlan& a, uint32_t in, bool antialias, uint32_t i, double& center,
            double& support, int32_t& lo, int32_t& n) {
  const double filterscale = antialias ? std::max(a.scale, 1.0) : 1.0;
  support = filterscale;
  center = a.start + (i + 0.5) * a.scale;
  lo = static_cast<int32_t>(center - support + 0.5);
  if (center - support + 0.5 < 0) lo = 0;
  int32_t hi = static_cast<int32_t>(center + support + 0.5);
  hi = std::min<int32_t>(hi, static_cast<int32_t>(in));
  lo = std::min<int32_t>(lo, static_cast<int32_t>(in) - 1);
  n = hi - lo;
  if (n <= 0) {  // entirely outside the image (a padded crop): nearest edge pixel
    lo = std::clamp<int32_t>(static_cast<int32_t>(std::floor(center)), 0,
                             static_cast<int32_t>(in) - 1);
    n = 1;
  }
}

Weights make_weights(const AxisPlan& a, uint32_t in, bool antialias, Arena& arena) {
  Weights wt;
  wt.out = a.out;
  const double filterscale = antialias ? std::max(a.scale, 1.0) : 1.0;
  wt.max_taps = static_cast<uint32_t>(std::ceil(filterscale)) * 2 + 2;
  wt.first = alloc<int32_t>(arena, a.out);
  wt.taps = alloc<uint32_t>(arena, a.out);
  wt.w = alloc<int16_t>(arena, uint64_t{a.out} * wt.max_taps);
  double k[4096];
  const uint32_t cap = std::min<uint32_t>(wt.max_taps, 4096);
  for (uint32_t i = 0; i < a.out; ++i) {
    double center = 0, support = 0;
    int32_t lo = 0, n = 0;
    bounds(a, in, antialias, i, center, support, lo, n);
    n = std::min<int32_t>(n, static_cast<int32_t>(cap));
    double sum = 0;
    for (int32_t t = 0; t < n; ++t) {
      k[t] = triangle((t + lo - center + 0.5) / filterscale);
      sum += k[t];
    }
    int32_t begin = 0, end = n;
    if (sum <= 0) {  // no tap covers the centre: take the nearest pixel
      k[0] = 1;
      sum = 1;
      end = 1;
    }
    while (begin < end && k[begin] == 0) ++begin;
    while (end > begin && k[end - 1] == 0) --end;
    wt.first[i] = lo + begin;
    wt.taps[i] = static_cast<uint32_t>(end - begin);
    int16_t* w = wt.w + uint64_t{i} * wt.max_taps;
    int32_t total = 0;
    for (int32_t t = begin; t < end; ++t) {
      w[t - begin] = static_cast<int16_t>(std::lround(k[t] / sum * kOne));
      total += w[t - begin];
    }
    // Put the rounding remainder on the largest tap so a flat area stays flat.
    if (end > begin) {
      int16_t* big = std::max_element(w, w + (end - begin));
      *big = static_cast<int16_t>(*big + (kOne - total));
    }
    if (wt.taps[i] != 1) wt.identity = false;
  }
  return wt;
}

inline uint8_t clamp_round(int32_t acc) {
  acc = (acc + (kOne >> 1)) >> kBits;
  return static_cast<uint8_t>(acc < 0 ? 0 : (acc > 255 ? 255 : acc));
}

// out[x] = sum_t rows[t][x] * w[t] over `n` contiguous bytes; `acc` is scratch. Written as a
// plain loop over x for each tap so GCC vectorizes it (pmovzx + pmaddwd/pmulld).
void vertical_row(const uint8_t* const* rows, const int16_t* w, uint32_t taps, uint64_t n,
                  int32_t* __restrict acc, uint8_t* __restrict out) {
  const int32_t w0 = w[0];
  const uint8_t* __restrict r0 = rows[0];
  for (uint64_t x = 0; x < n; ++x) acc[x] = r0[x] * w0;
  for (uint32_t t = 1; t < taps; ++t) {
    const int32_t wt = w[t];
    const uint8_t* __restrict r = rows[t];
    for (uint64_t x = 0; x < n; ++x) acc[x] += r[x] * wt;
  }
  for (uint64_t x = 0; x < n; ++x) out[x] = clamp_round(acc[x]);
}

template <uint32_t C>
void horizontal_row(const uint8_t* src, const Weights& wx, int32_t col_shift, uint8_t* out) {
  for (uint32_t i = 0; i < wx.out; ++i) {
    const uint8_t* p = src + static_cast<int64_t>(wx.first[i] - col_shift) * C;
    const int16_t* w = wx.w + uint64_t{i} * wx.max_taps;
    int32_t acc[C] = {};
    for (uint32_t t = 0; t < wx.taps[i]; ++t)
      for (uint32_t c = 0; c < C; ++c) acc[c] += p[t * C + c] * w[t];
    for (uint32_t c = 0; c < C; ++c) out[i * C + c] = clamp_round(acc[c]);
  }
}

void horizontal_any(const uint8_t* src, uint32_t C, const Weights& wx, int32_t col_shift,
                    uint8_t* out) {
  for (uint32_t i = 0; i < wx.out; ++i) {
    const uint8_t* p = src + static_cast<int64_t>(wx.first[i] - col_shift) * C;
    const int16_t* w = wx.w + uint64_t{i} * wx.max_taps;
    for (uint32_t c = 0; c < C; ++c) {
      int32_t acc = 0;
      for (uint32_t t = 0; t < wx.taps[i]; ++t) acc += p[t * C + c] * w[t];
      out[i * C + c] = clamp_round(acc);
    }
  }
}

void horizontal(const uint8_t* src, uint32_t C, const Weights& wx, int32_t col_shift,
                uint8_t* out) {
  if (wx.identity) {
    for (uint32_t i = 0; i < wx.out; ++i)
      std::memcpy(out + uint64_t{i} * C, src + static_cast<int64_t>(wx.first[i] - col_shift) * C,
                  C);
    return;
  }
  switch (C) {
    case 1:
      return horizontal_row<1>(src, wx, col_shift, out);
    case 3:
      return horizontal_row<3>(src, wx, col_shift, out);
    case 4:
      return horizontal_row<4>(src, wx, col_shift, out);
    default:
      return horizontal_any(src, C, wx, col_shift, out);
  }
}

// A crop with zero padding (PIL pads a crop that reaches past the image with black).
void copy_padded(const ImageView& src, uint32_t oy, uint32_t ox, const Plan& plan, uint8_t* out) {
  const uint32_t C = src.channels;
  const int64_t y_start = std::llround(plan.y.start), x_start = std::llround(plan.x.start);
  const uint64_t row_bytes = uint64_t{plan.x.out} * C;
  for (uint32_t i = 0; i < plan.y.out; ++i) {
    uint8_t* dst = out + i * row_bytes;
    const int64_t sy = y_start + i - oy;
    if (sy < 0 || sy >= src.height) {
      std::memset(dst, 0, row_bytes);
      continue;
    }
    const uint8_t* row = src.data + static_cast<uint64_t>(sy) * src.stride;
    const int64_t sx0 = x_start - ox;
    const int64_t lo = std::max<int64_t>(0, -sx0);
    const int64_t hi = std::min<int64_t>(plan.x.out, int64_t{src.width} - sx0);
    std::memset(dst, 0, row_bytes);
    if (hi > lo) std::memcpy(dst + lo * C, row + (sx0 + lo) * C, static_cast<size_t>(hi - lo) * C);
  }
}

}  // namespace

bool AxisPlan::is_copy() const { return scale == 1.0 && start == std::floor(start); }

Range source_range(const AxisPlan& axis, uint32_t in_size, bool antialias) {
  if (axis.is_copy()) {
    const int64_t lo = std::clamp<int64_t>(static_cast<int64_t>(axis.start), 0, in_size);
    const int64_t hi = std::clamp<int64_t>(static_cast<int64_t>(axis.start) + axis.out, 0, in_size);
    return {static_cast<uint32_t>(lo), static_cast<uint32_t>(std::max(lo, hi))};
  }
  Range r{in_size, 0};
  for (uint32_t i : {0u, axis.out - 1}) {
    double center = 0, support = 0;
    int32_t lo = 0, n = 0;
    bounds(axis, in_size, antialias, i, center, support, lo, n);
    r.lo = std::min<uint32_t>(r.lo, static_cast<uint32_t>(lo));
    r.hi = std::max<uint32_t>(r.hi, static_cast<uint32_t>(lo + n));
  }
  return r;
}

void resample(const ImageView& src, uint32_t oy, uint32_t ox, uint32_t full_h, uint32_t full_w,
              const Plan& plan, uint8_t* out, Arena& arena) {
  const uint32_t C = src.channels;
  if (plan.y.out == 0 || plan.x.out == 0) return;
  if (plan.y.is_copy() && plan.x.is_copy()) return copy_padded(src, oy, ox, plan, out);
  const Weights wy = make_weights(plan.y, full_h, plan.antialias, arena);
  const Weights wx = make_weights(plan.x, full_w, plan.antialias, arena);
  // Only the columns the horizontal pass reads go through the vertical pass.
  const Range cols = source_range(plan.x, full_w, plan.antialias);
  if (cols.lo < ox || cols.hi > ox + src.width || cols.hi <= cols.lo)
    throw Error(
        "image resample: the decoded region does not cover the columns needed "
        "(internal error)");
  const uint64_t n = uint64_t{cols.hi - cols.lo} * C;
  uint8_t* column_row = arena.allocate(n);
  int32_t* acc = alloc<int32_t>(arena, n);
  const uint8_t* rows[4096];
  const uint64_t out_row = uint64_t{plan.x.out} * C;
  for (uint32_t i = 0; i < plan.y.out; ++i) {
    const uint32_t taps = std::min<uint32_t>(wy.taps[i], 4096);
    for (uint32_t t = 0; t < taps; ++t) {
      const int64_t sy = int64_t{wy.first[i]} + t - oy;
      if (sy < 0 || sy >= src.height)
        throw Error(
            "image resample: the decoded region does not cover the rows needed "
            "(internal error)");
      rows[t] = src.data + static_cast<uint64_t>(sy) * src.stride + uint64_t{cols.lo - ox} * C;
    }
    const uint8_t* line = rows[0];
    if (!wy.identity) {
      vertical_row(rows, wy.w + uint64_t{i} * wy.max_taps, taps, n, acc, column_row);
      line = column_row;
    }
    horizontal(line, C, wx, static_cast<int32_t>(cols.lo), out + i * out_row);
  }
}

ImageView view_of(std::span<const uint8_t> in, const ValueSpec& spec) {
  if (spec.variable) {
    VariableArray v;
    std::memcpy(&v, in.data(), sizeof v);
    return {v.data, static_cast<uint32_t>(v.shape[0]), static_cast<uint32_t>(v.shape[1]),
            static_cast<uint32_t>(v.shape[2]), v.shape[1] * v.shape[2]};
  }
  return {in.data(), static_cast<uint32_t>(spec.shape[0]), static_cast<uint32_t>(spec.shape[1]),
          static_cast<uint32_t>(spec.shape[2]), spec.shape[1] * spec.shape[2]};
}

}  // namespace ferry::image
