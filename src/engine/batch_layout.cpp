#include "batch_layout.h"

#include "ferry/codec.h"
#include "ferry/error.h"

namespace ferry {

namespace {

FieldSpec output_field(const std::string& name, const ValueSpec& v) {
  return v.is_array() ? FieldSpec::array(name, v.dtype, v.shape) : FieldSpec::bytes(name);
}

}  // namespace

BatchLayout BatchLayout::make(const Layout& layout, const std::vector<std::string>& names,
                              uint64_t batch_size, const PipelineSpec& pipeline) {
  const Schema& schema = layout.schema();
  BatchLayout out;
  for (const auto& chain : pipeline) {
    bool loaded = false;
    for (const auto& n : names) loaded |= n == chain.field;
    if (!loaded) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      throw InvalidArgument("pipeline: field '" + chain.field +
                            "' is not among the loaded fields (" + list + ")");
    }
  }
  for (const auto& name : names) {
    const size_t f = schema.index_of(name);
    const FieldSpec& stored = schema.fields[f];
    out.file_field.push_back(f);
    out.compressed.push_back(layout.field_codec(f) != CodecId::none);
    const FieldPipelineSpec* chain = nullptr;
    for (const auto& c : pipeline)
      if (c.field == name) chain = &c;
    if (!chain || chain->ops.empty()) {
      out.fields.push_back(stored);
      out.capacity.push_back(layout.top_k_decoded_bytes(f, batch_size));
      out.pipelines.push_back(nullptr);
      continue;
    }
    auto p = std::make_unique<FieldPipeline>(*chain,
                                             ValueSpec::of(stored, layout.max_decoded_length(f)));
    out.fields.push_back(output_field(name, p->output()));
    out.capacity.push_back(batch_size * p->output().max_bytes());
    out.pipeline_canonical += p->canonical() + "\n";
    out.pipelines.push_back(std::move(p));
  }
  return out;
}

}  // namespace ferry
