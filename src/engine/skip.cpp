#include "skip.h"

#include <algorithm>
#include <cstring>

namespace ferry::skip {

void move_sample(const BatchSlot& from, uint64_t i, BatchSlot& to, uint64_t at) {
  for (size_t f = 0; f < from.fields.size(); ++f) {
    const FieldBuffer& src = from.fields[f];
    FieldBuffer& dst = to.fields[f];
    if (src.offsets) {
      const uint64_t len = src.offsets[i + 1] - src.offsets[i];
      std::memmove(dst.data + dst.offsets[at], src.data + src.offsets[i], len);
      dst.offsets[at + 1] = dst.offsets[at] + len;
    } else {
      const uint64_t sz = src.spec->fixed_bytes();
      std::memmove(dst.data + at * sz, src.data + i * sz, sz);
    }
  }
  if (to.sample_ids.size() <= at) to.sample_ids.resize(at + 1);
  to.sample_ids[at] = from.sample_ids[i];
}

void compact(BatchSlot& s, const std::vector<uint8_t>& keep) {
  if (std::all_of(keep.begin(), keep.begin() + static_cast<std::ptrdiff_t>(s.size),
                  [](uint8_t k) { return k; }))
    return;
  uint64_t out = 0;
  for (uint64_t i = 0; i < s.size; ++i)
    if (keep[i]) move_sample(s, i, s, out++);
  s.size = out;
  s.sample_ids.resize(out);
}

void append_sample(BatchSlot& to, const BatchSlot& from, uint64_t i) {
  move_sample(from, i, to, to.size);
  to.size += 1;
  to.count_bytes();
}

void apply_lent(BatchSlot& s, uint64_t lent) {
  if (lent <= s.truncated) return;
  const uint64_t cut = std::min(lent - s.truncated, s.size);
  s.size -= cut;
  s.sample_ids.resize(s.size);
  s.truncated = lent;
  s.count_bytes();
}

}  // namespace ferry::skip
