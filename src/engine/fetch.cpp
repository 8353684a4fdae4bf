// The fetch stage: a batch's stored bytes, from the mapping or the source, into the slot (plain
// fields) or the worker's staging (fields with a chain). Reads are checked by the source; a
// failing read is retried sample by sample to name the sample that failed.
#include <algorithm>
#include <cstring>

#include "worker.h"

namespace ferry {

namespace {
constexpr size_t kReadChunk = 32;  // samples per read_many between stop checks
}

// Plain bytes fields' offsets follow from the index before any byte is read.
void Worker::set_stored_offsets(BatchSlot& s) const {
  for (size_t f = 0; f < layout_.fields.size(); ++f) {
    uint64_t* off = s.fields[f].offsets;
    if (!off || layout_.processed(f)) continue;
    off[0] = 0;
    for (uint64_t i = 0; i < s.size; ++i)
      off[i + 1] = off[i] + file_.sample_fields(s.sample_ids[i])[layout_.file_field[f]].length;
  }
}

uint8_t* Worker::stored_dst(BatchSlot& s, size_t f, uint64_t i) const {
  const FieldBuffer& fb = s.fields[f];
  return fb.offsets ? fb.data + fb.offsets[i] : fb.data + i * fb.spec->fixed_bytes();
}

// Staging holds one batch's stored bytes of the processed fields, sample-major; inputs[i * P + p]
// views sample i's bytes of processed field p (P = processed_.size()).
void Worker::size_staging(BatchSlot& s, WorkerContext& ctx) const {
  const size_t P = processed_.size();
  ctx.inputs.assign(s.size * P, {});
  if (file_base_ || P == 0) return;
  uint64_t total = 0;
  for (uint64_t i = 0; i < s.size; ++i)
    for (size_t f : processed_)
      total += file_.sample_fields(s.sample_ids[i])[layout_.file_field[f]].length;
  if (ctx.staging.size() < total) ctx.staging.resize(total);
  uint64_t at = 0;
  for (uint64_t i = 0; i < s.size; ++i)
    for (size_t p = 0; p < P; ++p) {
      const uint64_t len =
          file_.sample_fields(s.sample_ids[i])[layout_.file_field[processed_[p]]].length;
      ctx.inputs[i * P + p] = {ctx.staging.data() + at, len};
      at += len;
    }
}

// The hot path: samples are memcpy'd from the mapping. The loop prefetches a few samples
// ahead (index entry, then data) so random orders overlap their cache misses. Processed fields
// are only pointed at: their chain reads them from the mapping.
void Worker::fetch_from_view(BatchSlot& s, WorkerContext& ctx) const {
  const Layout& L = file_;
  const size_t nf = layout_.fields.size(), P = processed_.size();
  constexpr uint64_t kAhead = 8;
  for (uint64_t i = 0; i < s.size; ++i) {
    if (i + kAhead < s.size) {
      const uint64_t ahead = s.sample_ids[i + kAhead];
      for (size_t f = 0; f < nf; ++f) {
        // Every cache line of small fields (up to 2 KiB): random samples each start a new
        // stream the hardware prefetcher has not seen yet.
        const size_t ff = layout_.file_field[f];
        const uint8_t* p = file_base_ + L.field_offset(ahead, ff);
        const uint64_t len = std::min<uint64_t>(L.sample_fields(ahead)[ff].length, 2048);
        for (uint64_t off = 0; off < len; off += 64) __builtin_prefetch(p + off);
      }
    }
    if (i + 2 * kAhead < s.size)
      __builtin_prefetch(L.sample_fields(s.sample_ids[i + 2 * kAhead]).data());
    const uint64_t id = s.sample_ids[i];
    const uint8_t* page = file_base_ + L.page_offset(L.sample_page(id));
    size_t p = 0;
    for (size_t f = 0; f < nf; ++f) {
      const FieldLoc loc = L.sample_fields(id)[layout_.file_field[f]];
      if (layout_.processed(f)) {
        ctx.inputs[i * P + p++] = {page + loc.offset, loc.length};
      } else {
        std::memcpy(stored_dst(s, f, i), page + loc.offset, loc.length);
      }
    }
  }
}

void Worker::fetch_through_source(BatchSlot& s, WorkerContext& ctx) {
  const Layout& L = file_;
  const size_t nf = layout_.fields.size(), P = processed_.size();
  ctx.requests.clear();
  for (uint64_t i = 0; i < s.size; ++i) {
    size_t p = 0;
    for (size_t f = 0; f < nf; ++f) {
      const size_t ff = layout_.file_field[f];
      const FieldLoc loc = L.sample_fields(s.sample_ids[i])[ff];
      void* dst = layout_.processed(f) ? const_cast<uint8_t*>(ctx.inputs[i * P + p++].data())
                                       : stored_dst(s, f, i);
      ctx.requests.push_back({L.field_offset(s.sample_ids[i], ff), loc.length, dst});
    }
  }
  for (size_t start = 0; start < ctx.requests.size(); start += kReadChunk * nf) {
    if (scheduler_.stopping()) return;  // shutting down: the batch is discarded
    const size_t count = std::min(kReadChunk * nf, ctx.requests.size() - start);
    try {
      reader_.source().read_many(std::span(ctx.requests).subspan(start, count));
    } catch (const std::exception&) {
      retry_one_by_one(s, start, count, ctx);  // find which samples failed
    }
    if (s.error) return;
  }
}

void Worker::retry_one_by_one(BatchSlot& s, size_t start, size_t count, WorkerContext& ctx) {
  const size_t nf = layout_.fields.size();
  for (size_t r = start; r < start + count; r += nf) {
    const uint64_t i = r / nf;
    try {
      reader_.source().read_many(std::span(ctx.requests).subspan(r, nf));
    } catch (const std::exception& e) {
      if (!sample_failed(s, i, "read failed", e, ctx)) return;
    }
  }
}

// WILLNEED for the pages batch `index` will read, merged into ranges: issued for the batch
// that just entered the window, so the kernel (or a remote source) fetches it while the
// earlier ones are processed.
void Worker::hint_batch(const EpochPlan& plan, uint64_t index,
                        std::vector<ReadRequest>& ranges) const {
  const auto ids = plan.batch(index);
  if (ids.empty()) return;
  ranges.clear();
  for (uint64_t id : ids) {
    const auto [b, e] = file_.sample_extent(id);
    ranges.push_back({b, e - b, nullptr});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const ReadRequest& a, const ReadRequest& b) { return a.offset < b.offset; });
  size_t out = 0;
  for (size_t i = 1; i < ranges.size(); ++i) {
    ReadRequest& last = ranges[out];
    if (ranges[i].offset <= last.offset + last.length + 4096) {
      last.length =
          std::max(last.offset + last.length, ranges[i].offset + ranges[i].length) - last.offset;
    } else {
      ranges[++out] = ranges[i];
    }
  }
  ranges.resize(out + 1);
  reader_.source().will_need(ranges);
}

}  // namespace ferry
