// Per-field op chains: the JSON spec and the compiled chain (include/ferry/pipeline.h).
#include "ferry/pipeline.h"

#include <nlohmann/json.hpp>

#include "ferry/error.h"

namespace ferry {

namespace {

using nlohmann::json;

FieldPipelineSpec parse_field(const json& j, size_t index) {
  const std::string where = "pipeline entry " + std::to_string(index);
  if (!j.is_object())
    throw InvalidArgument(where + ": must be an object {\"field\": ..., \"ops\": [...]}");
  for (const auto& [k, v] : j.items())
    if (k != "field" && k != "ops")
      throw InvalidArgument(where + ": unknown key '" + k + "' (known: field, ops)");
  if (!j.contains("field") || !j["field"].is_string())
    throw InvalidArgument(where + ": needs \"field\": the name of the field");
  FieldPipelineSpec spec;
  spec.field = j["field"].get<std::string>();
  if (!j.contains("ops")) return spec;
  if (!j["ops"].is_array())
    throw InvalidArgument("field '" + spec.field + "': \"ops\" must be a list");
  size_t n = 0;
  for (const auto& op : j["ops"]) {
    const std::string at = "field '" + spec.field + "': op " + std::to_string(n++);
    if (!op.is_object() || !op.contains("op") || !op["op"].is_string())
      throw InvalidArgument(at + ": must be an object with \"op\": NAME, got " + op.dump());
    json args = op;
    args.erase("op");
    spec.ops.push_back({op["op"].get<std::string>(), args.dump()});
  }
  return spec;
}

}  // namespace

PipelineSpec parse_pipeline(std::string_view text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw InvalidArgument(std::string("pipeline is not valid JSON: ") + e.what());
  }
  PipelineSpec spec;
  if (j.is_object()) {
    spec.push_back(parse_field(j, 0));
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) spec.push_back(parse_field(j[i], i));
  } else {
    throw InvalidArgument("pipeline must be a list of {\"field\": ..., \"ops\": [...]} objects");
  }
  for (size_t i = 0; i < spec.size(); ++i)
    for (size_t k = 0; k < i; ++k)
      if (spec[i].field == spec[k].field)
        throw InvalidArgument("pipeline: field '" + spec[i].field +
                              "' has two chains; put all its ops in one list");
  return spec;
}

std::string pipeline_to_json(const PipelineSpec& spec) {
  json out = json::array();
  for (const auto& f : spec) {
    json ops = json::array();
    for (const auto& op : f.ops) {
      json o = json::parse(op.args_json.empty() ? "{}" : op.args_json);
      o["op"] = op.name;
      ops.push_back(std::move(o));
    }
    out.push_back({{"field", f.field}, {"ops", std::move(ops)}});
  }
  return out.dump();
}

FieldPipeline::FieldPipeline(const FieldPipelineSpec& spec, const ValueSpec& input)
    : field_(spec.field) {
  auto where = [&](size_t i, std::string_view name) {
    return "field '" + field_ + "': op " + std::to_string(i) + " '" + std::string(name) + "': ";
  };
  for (size_t i = 0; i < spec.ops.size(); ++i) {
    try {
      ops_.push_back(make_op(spec.ops[i].name, OpArgs(spec.ops[i].name, spec.ops[i].args_json)));
    } catch (const InvalidArgument& e) {
      throw InvalidArgument("field '" + field_ + "': op " + std::to_string(i) + ": " + e.what());
    }
  }
  // Fusion: an op may take over the one after it (a decode that decodes only the crop window).
  for (size_t i = 0; i + 1 < ops_.size();) {
    if (ops_[i]->fuse_next(*ops_[i + 1])) {
      ops_.erase(ops_.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    } else {
      ++i;
    }
  }
  specs_.push_back(input);
  for (size_t i = 0; i < ops_.size(); ++i) {
    try {
      specs_.push_back(ops_[i]->setup(specs_.back()));
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(where(i, ops_[i]->name()) + e.what() + " (input " +
                            specs_.back().to_string() + ")");
    }
  }
  const ValueSpec& out = specs_.back();
  if (out.variable)
    throw InvalidArgument(where(ops_.size() - 1, ops_.back()->name()) + "its output " +
                          out.to_string() +
                          " never reaches a fixed shape; follow it with resize to [h,w], "
                          "center_crop or random_resized_crop");
  if (!out.is_array() && out.max_size == 0 && !ops_.empty())
    throw InvalidArgument("field '" + field_ + "': the chain's output " + out.to_string() +
                          " has no size bound; end it with an op of fixed output shape");
}

FieldPipeline::~FieldPipeline() = default;
FieldPipeline::FieldPipeline(FieldPipeline&&) noexcept = default;
FieldPipeline& FieldPipeline::operator=(FieldPipeline&&) noexcept = default;

std::string FieldPipeline::canonical() const {
  std::string s = field_ + ":";
  for (const auto& op : ops_) s += std::string(op->name()) + op->args_json() + ";";
  return s;
}

uint64_t FieldPipeline::run(std::span<const uint8_t> in, std::span<uint8_t> out,
                            SampleContext& ctx) const {
  std::span<const uint8_t> value = in;
  uint64_t written = in.size();
  for (size_t i = 0; i < ops_.size(); ++i) {
    const bool last = i + 1 == ops_.size();
    std::span<uint8_t> dst =
        last ? out.first(specs_[i + 1].max_bytes()) : ctx.arena.span(specs_[i + 1].max_bytes());
    written = ops_[i]->run(value, dst, ctx);
    if (written > dst.size())
      throw Error("op '" + std::string(ops_[i]->name()) +
                  "' wrote past its output (internal error)");
    value = dst.first(written);
  }
  return written;
}

}  // namespace ferry
