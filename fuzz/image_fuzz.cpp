// libFuzzer target: decode + crop + resize (fused and unfused chains) on arbitrary bytes. Every
// input must end in a decode or a ferry::Error, never a crash, leak or unbounded allocation.
#include <cstdint>
#include <vector>

#include "ferry/error.h"
#include "ferry/pipeline.h"

namespace {

std::vector<ferry::FieldPipeline> make_chains() {
  std::vector<ferry::FieldPipeline> chains;
  for (
      const char* ops :
      {R"([{"op":"decode","max_pixels":4000000},{"op":"random_resized_crop","size":32}])",
       R"([{"op":"decode","max_pixels":4000000,"scaled":false},{"op":"resize","size":24},{"op":"center_crop","size":20}])",
       R"([{"op":"decode","mode":"gray","max_pixels":4000000},{"op":"resize","size":[9,13]}])"}) {
    auto spec = ferry::parse_pipeline(std::string(R"({"field":"image","ops":)") + ops + "}");
    chains.emplace_back(spec[0], ferry::ValueSpec::bytes(1 << 20));
  }
  return chains;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<ferry::FieldPipeline> chains = make_chains();
  static ferry::Arena arena(64ull << 20);
  std::vector<uint8_t> out(32 * 32 * 3);
  for (size_t i = 0; i < chains.size(); ++i) {
    arena.reset();
    ferry::SampleRng rng(1, 0, i);
    ferry::SampleContext ctx{i, 0, rng, arena};
    try {
      chains[i].run({data, size}, out, ctx);
    } catch (const ferry::Error&) {
    }
  }
  return 0;
}
