// libFuzzer target: open arbitrary bytes as a .ferry file and read everything it claims to hold.
// Any outcome but a ferry::Error or success (a crash, an ASan report, a hang) is a bug.
//
// Version-2 files take the codec path: Reader::sample() decodes every compressed field (lz4,
// zstd) into the scratch buffer. The v2_* seeds in fuzz/corpus/ were made with
//   ferry write synthetic fuzz/corpus/v2_fixed_lz4.ferry --samples 8 --shape 16 --page-size 4KiB \
//     --seed 1 --no-fsync --compress data=lz4 --compress label=zstd
//   ferry write synthetic fuzz/corpus/v2_variable_zstd.ferry --samples 12 --shape 40 --variable \
//     --page-size 4KiB --seed 2 --no-fsync --compress data=zstd:5
//   ferry write synthetic fuzz/corpus/v2_large_lz4hc.ferry --samples 1 --shape 5000 \
//     --page-size 4KiB --seed 3 --no-fsync --compress data=lz4:9 --compress label=lz4
// and v2_compressible.ferry (compressible arrays, real lz4/zstd matches) by fuzz/make_v2_seed.py.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ferry/error.h"
#include "ferry/reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto reader = ferry::Reader::open(std::shared_ptr<ferry::Source>(
        ferry::open_memory_source("fuzz.ferry", std::vector<uint8_t>(data, data + size))));
    const ferry::Layout& layout = reader->layout();
    std::vector<uint8_t> scratch;
    uint64_t sum = 0;
    for (size_t f = 0; f < layout.schema().fields.size(); ++f)
      sum += layout.top_k_decoded_bytes(f, 8) + layout.max_decoded_length(f);
    for (uint64_t s = 0; s < reader->num_samples(); ++s) {
      for (const auto& f : reader->sample_stored(s, scratch))
        for (uint64_t i = 0; i < f.size; i += 97) sum += f.data[i];
      try {
        for (const auto& f : reader->sample(s, scratch))  // decodes compressed fields
          for (uint64_t i = 0; i < f.size; i += 97) sum += f.data[i];
      } catch (const ferry::FormatError&) {
        // A corrupt compressed value is one sample's error: go on with the next sample.
      }
    }
    (void)reader->verify();
    if (sum == 0xFFFFFFFFFFFFFFFFull) return 1;  // keep the reads observable
  } catch (const ferry::Error&) {
  }
  return 0;
}
