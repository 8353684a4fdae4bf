#pragma once
// Internal: the op factories the registry table lists (src/ops/registry.cpp), and helpers
// shared by op implementations.
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "ferry/error.h"
#include "ferry/op.h"

namespace ferry::ops {

std::unique_ptr<Op> make_cast(const OpArgs& args);
std::unique_ptr<Op> make_normalize(const OpArgs& args);
std::unique_ptr<Op> make_reshape(const OpArgs& args);
std::unique_ptr<Op> make_unsqueeze(const OpArgs& args);
std::unique_ptr<Op> make_flip(const OpArgs& args);
std::unique_ptr<Op> make_decode(const OpArgs& args);
std::unique_ptr<Op> make_resize(const OpArgs& args);
std::unique_ptr<Op> make_center_crop(const OpArgs& args);
std::unique_ptr<Op> make_random_resized_crop(const OpArgs& args);
std::unique_ptr<Op> make_random_horizontal_flip(const OpArgs& args);
std::unique_ptr<Op> make_color_jitter(const OpArgs& args);
std::unique_ptr<Op> make_to_chw(const OpArgs& args);

/// A double as JSON text that parses back to the same value (%.17g; std::to_string keeps 6
/// decimals, which would change an op rebuilt from its args_json()).
inline std::string json_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

/// Throws InvalidArgument unless `in` is an ndarray (setup's check for array ops).
inline void require_array(const ValueSpec& in, std::string_view op) {
  if (!in.is_array())
    throw InvalidArgument("needs an ndarray input, got " + in.to_string() +
                          "; decode the field first ('" + std::string(op) + "' works on arrays)");
  if (in.variable)
    throw InvalidArgument("needs a fixed-shape input, got " + in.to_string() +
                          "; bring images to one size first (resize to [h,w], center_crop or "
                          "random_resized_crop)");
}

/// Resolves a possibly negative axis against `ndim`; throws InvalidArgument when out of range.
inline size_t resolve_axis(int64_t axis, size_t ndim, std::string_view what) {
  const int64_t n = static_cast<int64_t>(ndim);
  if (axis < -n || axis >= n)
    throw InvalidArgument(std::string(what) + " " + std::to_string(axis) +
                          " is out of range for a value of " + std::to_string(ndim) +
                          " dimension(s)");
  return static_cast<size_t>(axis < 0 ? axis + n : axis);
}

}  // namespace ferry::ops
