#include "ferry/reader.h"

#include <xxhash.h>

#include "codecs/field_decode.h"
#include "ferry/error.h"

namespace ferry {

std::shared_ptr<Reader> Reader::open(const std::string& path, const SourceOptions& options) {
  return open(std::shared_ptr<Source>(open_source(path, options)));
}

std::shared_ptr<Reader> Reader::open(std::shared_ptr<Source> source) {
  Source& src = *source;
  Layout layout =
      Layout::parse(src.path(), src.size(),
                    [&src](uint64_t off, uint64_t len, void* dst) { src.read(off, len, dst); });
  return std::shared_ptr<Reader>(new Reader(std::move(source), std::move(layout)));
}

namespace {

// Reads (or views) the stored bytes of sample `id`; `extra` more bytes of `scratch` are reserved
// after them (at scratch[*tail]) for decoded values.
std::vector<FieldView> stored_fields(const Layout& layout, Source& source, uint64_t id,
                                     std::vector<uint8_t>& scratch, uint64_t extra,
                                     uint64_t* tail) {
  if (id >= layout.num_samples())
    throw InvalidArgument("sample " + std::to_string(id) + " out of range: '" + layout.path() +
                          "' has " + std::to_string(layout.num_samples()) + " samples");
  const auto [begin, end] = layout.sample_extent(id);
  const uint8_t* base = source.view(begin, end - begin);
  const uint64_t own = base ? 0 : end - begin;
  if (own + extra) scratch.resize(own + extra);
  if (!base) {
    source.read(begin, end - begin, scratch.data());
    base = scratch.data();
  }
  if (tail) *tail = own;
  std::vector<FieldView> out;
  const auto locs = layout.sample_fields(id);
  out.reserve(locs.size());
  const uint64_t page_base = layout.page_offset(layout.sample_page(id));
  for (const FieldLoc& loc : locs)
    out.push_back({base + (page_base + loc.offset - begin), loc.length});
  return out;
}

}  // namespace

std::vector<FieldView> Reader::sample_stored(uint64_t id, std::vector<uint8_t>& scratch) const {
  return stored_fields(layout_, *source_, id, scratch, 0, nullptr);
}

std::vector<FieldView> Reader::sample(uint64_t id, std::vector<uint8_t>& scratch) const {
  if (!layout_.any_compressed() || id >= layout_.num_samples())
    return stored_fields(layout_, *source_, id, scratch, 0, nullptr);
  const size_t nf = layout_.schema().fields.size();
  uint64_t extra = 0;
  for (size_t f = 0; f < nf; ++f)
    if (layout_.field_codec(f) != CodecId::none) extra += layout_.decoded_length(id, f);
  uint64_t pos = 0;
  auto out = stored_fields(layout_, *source_, id, scratch, extra, &pos);
  for (size_t f = 0; f < nf; ++f) {
    if (layout_.field_codec(f) == CodecId::none) continue;
    const std::span<uint8_t> dst(scratch.data() + pos, layout_.decoded_length(id, f));
    detail::decode_field(layout_, id, f, {out[f].data, out[f].size}, dst);
    out[f] = {dst.data(), dst.size()};
    pos += dst.size();
  }
  return out;
}

void Reader::read_page(uint64_t p, std::vector<uint8_t>& out) const {
  if (p >= layout_.num_pages())
    throw InvalidArgument("page " + std::to_string(p) + " out of range: '" + path() + "' has " +
                          std::to_string(layout_.num_pages()) + " pages");
  out.resize(layout_.pages()[p].used);
  source_->read(layout_.page_offset(p), out.size(), out.data());
}

VerifyReport Reader::verify(const std::function<void(uint64_t, uint64_t)>& progress) const {
  VerifyReport report;
  std::vector<uint8_t> page;
  const uint64_t n = layout_.num_pages();
  for (uint64_t p = 0; p < n; ++p) {
    read_page(p, page);
    if (XXH64(page.data(), page.size(), 0) != layout_.pages()[p].xxh64)
      report.errors.push_back("ferry file '" + path() + "': page " + std::to_string(p) +
                              ": checksum mismatch (data corrupted)");
    ++report.pages_checked;
    if (progress) progress(p + 1, n);
  }
  return report;
}

}  // namespace ferry
