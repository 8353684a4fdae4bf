#include "ferry/reader.h"

#include <xxhash.h>

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

std::vector<FieldView> Reader::sample(uint64_t id, std::vector<uint8_t>& scratch) const {
  if (id >= layout_.num_samples())
    throw InvalidArgument("sample " + std::to_string(id) + " out of range: '" + path() + "' has " +
                          std::to_string(layout_.num_samples()) + " samples");
  const auto [begin, end] = layout_.sample_extent(id);
  const uint8_t* base = source_->view(begin, end - begin);
  if (!base) {
    scratch.resize(end - begin);
    source_->read(begin, end - begin, scratch.data());
    base = scratch.data();
  }
  std::vector<FieldView> out;
  const auto locs = layout_.sample_fields(id);
  out.reserve(locs.size());
  const uint64_t page_base = layout_.page_offset(layout_.sample_page(id));
  for (const FieldLoc& loc : locs)
    out.push_back({base + (page_base + loc.offset - begin), loc.length});
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
