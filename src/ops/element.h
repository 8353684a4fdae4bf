#pragma once
// Internal: element types for every DType (f16 and bf16 as bit wrappers) and conversions, so
// an op is written once as a template and dispatched with visit_dtype().
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "ferry/format.h"

namespace ferry::ops {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float to_float(Half h) {
  const uint32_t sign = (h.bits & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1F;
  const uint32_t man = h.bits & 0x3FF;
  if (exp == 0x1F) return bits_to_float(sign | 0x7F800000u | (man << 13));  // inf / nan
  if (exp != 0) return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
  if (man == 0) return bits_to_float(sign);
  return (sign ? -1.0f : 1.0f) * std::ldexp(static_cast<float>(man), -24);  // subnormal
}

// Round to nearest even, overflow to inf, NaN kept NaN (what numpy's astype(float16) does).
inline Half half_from_float(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u)
    return {static_cast<uint16_t>(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0))};
  if (abs >= 0x477FF000u) return {static_cast<uint16_t>(sign | 0x7C00u)};  // rounds past 65504
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    const float a = bits_to_float(abs);
    return {static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f)))};
  }
  const uint32_t rounded = abs + 0xFFFu + ((abs >> 13) & 1u);
  return {static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13))};
}

inline float to_float(BFloat16 b) { return bits_to_float(static_cast<uint32_t>(b.bits) << 16); }
inline BFloat16 bfloat16_from_float(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u)
    return {static_cast<uint16_t>((u >> 16) | 0x40u)};  // quiet NaN
  return {static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16)};
}

template <class T>
inline constexpr bool is_reduced_float = std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;

/// The value of an element as a float/double (what arithmetic ops compute in).
template <class T>
inline auto load(T v) {
  if constexpr (is_reduced_float<T>) {
    return to_float(v);
  } else {
    return v;
  }
}

/// Converts `v` to element type T. Floats to integers truncate toward zero and saturate at
/// the type's bounds (NaN becomes 0): defined behaviour where C++ (and numpy) leave it open.
template <class T, class V>
inline T convert(V v) {
  if constexpr (std::is_same_v<T, Half>) {
    return half_from_float(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    return bfloat16_from_float(static_cast<float>(v));
  } else if constexpr (std::is_integral_v<T> && std::is_floating_point_v<V>) {
    if (std::isnan(v)) return T{0};
    if (v <= static_cast<V>(std::numeric_limits<T>::min())) return std::numeric_limits<T>::min();
    if (v >= static_cast<V>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
    return static_cast<T>(v);
  } else {
    return static_cast<T>(v);
  }
}

/// Calls f(T{}) with the element type of `t`.
template <class F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::u8:
      return f(uint8_t{});
    case DType::i8:
      return f(int8_t{});
    case DType::u16:
      return f(uint16_t{});
    case DType::i16:
      return f(int16_t{});
    case DType::u32:
      return f(uint32_t{});
    case DType::i32:
      return f(int32_t{});
    case DType::u64:
      return f(uint64_t{});
    case DType::i64:
      return f(int64_t{});
    case DType::f16:
      return f(Half{});
    case DType::bf16:
      return f(BFloat16{});
    case DType::f32:
      return f(float{});
    case DType::f64:
      break;
  }
  return f(double{});
}

/// Accepts the file's spellings ("f32") and numpy/torch ones ("float32", "bfloat16", "int64").
DType parse_dtype_name(std::string_view name);

}  // namespace ferry::ops
