// The op registry: name -> factory. Adding an op is one file in src/ops/ plus one line here.
// (An explicit table rather than static self-registration: a static library drops object files
// nobody references, and their registrars with them.)
#include <algorithm>
#include <map>
#include <string>

#include "element.h"
#include "ops.h"

namespace ferry {

namespace {

using Factory = std::unique_ptr<Op> (*)(const OpArgs&);

const std::map<std::string, Factory, std::less<>>& table() {
  static const std::map<std::string, Factory, std::less<>> ops = {
      {"cast", ops::make_cast},
      {"normalize", ops::make_normalize},
      {"reshape", ops::make_reshape},
      {"unsqueeze", ops::make_unsqueeze},
      {"flip", ops::make_flip},
      {"decode", ops::make_decode},
      {"resize", ops::make_resize},
      {"center_crop", ops::make_center_crop},
      {"random_resized_crop", ops::make_random_resized_crop},
      {"random_horizontal_flip", ops::make_random_horizontal_flip},
      {"color_jitter", ops::make_color_jitter},
      {"to_chw", ops::make_to_chw},
  };
  return ops;
}

}  // namespace

std::unique_ptr<Op> make_op(std::string_view name, const OpArgs& args) {
  const auto it = table().find(name);
  if (it == table().end()) {
    std::string known;
    for (const auto& n : registered_ops()) known += (known.empty() ? "" : ", ") + n;
    throw InvalidArgument("unknown op '" + std::string(name) + "' (known: " + known + ")");
  }
  return it->second(args);
}

std::vector<std::string> registered_ops() {
  std::vector<std::string> names;
  for (const auto& [n, f] : table()) names.push_back(n);
  return names;
}

namespace ops {

DType parse_dtype_name(std::string_view name) {
  static const std::map<std::string, DType, std::less<>> aliases = {
      {"uint8", DType::u8},   {"int8", DType::i8},       {"uint16", DType::u16},
      {"int16", DType::i16},  {"uint32", DType::u32},    {"int32", DType::i32},
      {"uint64", DType::u64}, {"int64", DType::i64},     {"float16", DType::f16},
      {"half", DType::f16},   {"bfloat16", DType::bf16}, {"float32", DType::f32},
      {"float", DType::f32},  {"float64", DType::f64},   {"double", DType::f64},
      {"long", DType::i64}};
  const auto it = aliases.find(name);
  return it != aliases.end() ? it->second : parse_dtype(name);
}

}  // namespace ops
}  // namespace ferry
