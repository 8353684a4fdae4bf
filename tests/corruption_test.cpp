// 10,000 mutations of a small valid file: each must raise a clean ferry::Error at open/read, or be
// caught by verify(), or be harmless (it hit padding no reader looks at). Run under asan too.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "ferry/error.h"
#include "ferry/reader.h"
#include "test_util.h"
#include "util.h"

namespace ferry {
namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Every sample's fields, concatenated, from a reader (the "meaning" of a file).
std::vector<std::vector<uint8_t>> contents(const Reader& r) {
  std::vector<std::vector<uint8_t>> out;
  std::vector<uint8_t> scratch;
  for (uint64_t s = 0; s < r.num_samples(); ++s) {
    std::vector<uint8_t> all;
    for (const auto& f : r.sample(s, scratch)) all.insert(all.end(), f.data, f.data + f.size);
    out.push_back(std::move(all));
  }
  return out;
}

enum class Outcome { error, verify_failed, harmless };

Outcome try_mutant(std::vector<uint8_t> bytes, const std::vector<std::vector<uint8_t>>& original) {
  try {
    auto r =
        Reader::open(std::shared_ptr<Source>(open_memory_source("mutant.ferry", std::move(bytes))));
    const auto got = contents(*r);
    if (!r->verify().ok()) return Outcome::verify_failed;
    EXPECT_EQ(got, original) << "mutation changed the data but open and verify accepted it";
    return Outcome::harmless;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mutant.ferry"), std::string::npos) << e.what();
    return Outcome::error;
  }
}

TEST(Corruption, TenThousandMutationsNeverCrash) {
  testing::TempDir dir;
  const std::string path =
      testing::synthetic_file(dir, "c.ferry", 40, 100, 4096, /*variable=*/true);
  const std::vector<uint8_t> good = read_file(path);
  auto r = Reader::open(path);
  const auto original = contents(*r);
  const Layout& L = r->layout();
  std::vector<uint64_t> boundaries = {0,
                                      8,
                                      12,
                                      16,
                                      sizeof(HeaderPrefix),
                                      L.data_offset(),
                                      good.size() - 32,
                                      good.size() - 8,
                                      good.size() - 1};
  for (uint64_t p = 0; p < L.num_pages(); ++p) boundaries.push_back(L.page_offset(p));

  // Metadata regions: the header's fields + schema, and page table + index + footer at the end.
  const uint64_t header_len = sizeof(HeaderPrefix) + 64;
  const uint64_t tail_len =
      L.num_pages() * sizeof(PageInfo) + L.num_samples() * index_entry_size(2) + 32 + 64;
  detail::SplitMix64 rng(1234);
  int counts[3] = {};
  for (int i = 0; i < 10000; ++i) {
    std::vector<uint8_t> m = good;
    switch (i % 4) {
      case 0:
      case 1: {  // flip 1-3 random bytes; half of the time inside the header/index/footer
        const int flips = 1 + static_cast<int>(rng.below(3));
        for (int k = 0; k < flips; ++k) {
          uint64_t pos = rng.below(m.size());
          if (i % 2 == 0 && rng.below(2))
            pos = rng.below(2) ? rng.below(header_len) : m.size() - 1 - rng.below(tail_len);
          m[pos] ^= static_cast<uint8_t>(1 + rng.below(255));
        }
        break;
      }
      case 2: {  // truncate at a section boundary (+/- a little) or anywhere
        uint64_t cut =
            rng.below(2) ? boundaries[rng.below(boundaries.size())] : rng.below(m.size());
        if (rng.below(2) && cut > 0) cut -= 1;
        m.resize(std::min<uint64_t>(cut, m.size() - 1));
        break;
      }
      case 3: {  // extended lengths: grow the file, or write a huge value into a length/count slot
        if (rng.below(2)) {
          m.resize(m.size() + 1 + rng.below(8192), static_cast<uint8_t>(rng.below(256)));
        } else {
          const uint64_t big = rng.below(2) ? ~uint64_t{0} - rng.below(100) : rng.below(1ull << 40);
          const uint64_t slot =
              rng.below(2) ? 16 + 8 * rng.below(12) : m.size() - 32 - 8 * rng.below(8);
          std::memcpy(m.data() + std::min<uint64_t>(slot, m.size() - 8), &big, 8);
        }
        break;
      }
    }
    counts[static_cast<int>(try_mutant(std::move(m), original))]++;
    if (HasFailure()) break;
  }
  std::printf("mutations: %d errors, %d caught by verify, %d harmless\n", counts[0], counts[1],
              counts[2]);
  EXPECT_GT(counts[0], 5000);
  EXPECT_GT(counts[1], 100);
}

}  // namespace
}  // namespace ferry
