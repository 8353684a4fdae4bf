// reshape and unsqueeze: same bytes, another shape (a copy only because ops write their output;
// the element count is checked at setup).
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops.h"

namespace ferry::ops {
namespace {

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

class ShapeOp : public Op {
 public:
  uint64_t run(std::span<const uint8_t> in, std::span<uint8_t> out, SampleContext&) const override {
    std::memcpy(out.data(), in.data(), in.size());
    return in.size();
  }
};

class Reshape final : public ShapeOp {
 public:
  explicit Reshape(const OpArgs& args) {
    args.allow_only({"shape"});
    for (double d : args.numbers("shape")) {
      if (d != static_cast<double>(static_cast<int64_t>(d)) || d < -1)
        args.fail("shape", "entries must be integers >= 0, or -1 once");
      dims_.push_back(static_cast<int64_t>(d));
    }
    if (std::count(dims_.begin(), dims_.end(), -1) > 1) args.fail("shape", "may hold -1 only once");
  }
  std::string_view name() const override { return "reshape"; }

  ValueSpec setup(const ValueSpec& in) override {
    require_array(in, "reshape");
    uint64_t known = 1;
    for (int64_t d : dims_)
      if (d >= 0) known *= static_cast<uint64_t>(d);
    std::vector<uint64_t> shape;
    for (int64_t d : dims_) {
      if (d >= 0) {
        shape.push_back(static_cast<uint64_t>(d));
      } else {
        if (known == 0 || in.num_elements() % known) throw InvalidArgument(bad(in));
        shape.push_back(in.num_elements() / known);
      }
    }
    ValueSpec out = ValueSpec::array(in.dtype, shape);
    if (out.num_elements() != in.num_elements()) throw InvalidArgument(bad(in));
    return out;
  }

  std::string args_json() const override {
    std::string s = R"({"shape":[)";
    for (size_t i = 0; i < dims_.size(); ++i) s += (i ? "," : "") + std::to_string(dims_[i]);
    return s + "]}";
  }

 private:
  std::string bad(const ValueSpec& in) const {
    std::string s = "[";
    for (size_t i = 0; i < dims_.size(); ++i) s += (i ? "," : "") + std::to_string(dims_[i]);
    return "cannot reshape " + shape_text(in.shape) + " (" + std::to_string(in.num_elements()) +
           " elements) to " + s + "]";
  }
  std::vector<int64_t> dims_;
};

class Unsqueeze final : public ShapeOp {
 public:
  explicit Unsqueeze(const OpArgs& args) : axis_(args.integer("axis")) {
    args.allow_only({"axis"});
  }
  std::string_view name() const override { return "unsqueeze"; }

  ValueSpec setup(const ValueSpec& in) override {
    require_array(in, "unsqueeze");
    const size_t at = resolve_axis(axis_, in.shape.size() + 1, "axis");
    std::vector<uint64_t> shape = in.shape;
    shape.insert(shape.begin() + static_cast<std::ptrdiff_t>(at), 1);
    if (shape.size() > kMaxNdim)
      throw InvalidArgument("more than " + std::to_string(kMaxNdim) + " dimensions");
    return ValueSpec::array(in.dtype, shape);
  }
  std::string args_json() const override { return R"({"axis":)" + std::to_string(axis_) + "}"; }

 private:
  int64_t axis_;
};

}  // namespace

std::unique_ptr<Op> make_reshape(const OpArgs& args) { return std::make_unique<Reshape>(args); }
std::unique_ptr<Op> make_unsqueeze(const OpArgs& args) { return std::make_unique<Unsqueeze>(args); }

}  // namespace ferry::ops
