// libFuzzer target: open arbitrary bytes as a .ferry file and read everything it claims to hold.
// Any outcome but a ferry::Error or success (a crash, an ASan report, a hang) is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ferry/error.h"
#include "ferry/reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto reader = ferry::Reader::open(std::shared_ptr<ferry::Source>(
        ferry::open_memory_source("fuzz.ferry", std::vector<uint8_t>(data, data + size))));
    std::vector<uint8_t> scratch;
    uint64_t sum = 0;
    for (uint64_t s = 0; s < reader->num_samples(); ++s)
      for (const auto& f : reader->sample(s, scratch))
        for (uint64_t i = 0; i < f.size; i += 97) sum += f.data[i];
    (void)reader->verify();
    if (sum == 0xFFFFFFFFFFFFFFFFull) return 1;  // keep the reads observable
  } catch (const ferry::Error&) {
  }
  return 0;
}
