#include "ferry/format.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <queue>
#include <set>

#include "ferry/error.h"
#include "util.h"

namespace ferry {

using detail::fits;
using detail::is_pow2;

namespace {

struct DTypeInfo {
  std::string_view name;
  size_t size;
};
constexpr DTypeInfo kDTypes[kNumDTypes] = {
    {"u8", 1},  {"i8", 1},  {"u16", 2}, {"i16", 2},  {"u32", 4}, {"i32", 4},
    {"u64", 8}, {"i64", 8}, {"f16", 2}, {"bf16", 2}, {"f32", 4}, {"f64", 8},
};

[[noreturn]] void bad(const std::string& path, std::string_view section, const std::string& what) {
  throw FormatError("ferry file '" + path + "': " + std::string(section) + ": " + what);
}

}  // namespace

size_t dtype_size(DType t) { return kDTypes[static_cast<int>(t)].size; }
std::string_view dtype_name(DType t) { return kDTypes[static_cast<int>(t)].name; }

DType parse_dtype(std::string_view name) {
  for (int i = 0; i < kNumDTypes; ++i)
    if (kDTypes[i].name == name) return static_cast<DType>(i);
  std::string known;
  for (const auto& d : kDTypes)
    known += std::string(known.empty() ? "" : ", ") + std::string(d.name);
  throw InvalidArgument("unknown dtype '" + std::string(name) + "' (known: " + known + ")");
}

FieldSpec FieldSpec::array(std::string name, DType dtype, std::vector<uint64_t> shape) {
  return FieldSpec{std::move(name), FieldKind::ndarray, dtype, std::move(shape)};
}
FieldSpec FieldSpec::bytes(std::string name) {
  return FieldSpec{std::move(name), FieldKind::bytes, DType::u8, {}};
}

uint64_t FieldSpec::num_elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

uint64_t FieldSpec::fixed_bytes() const {
  return kind == FieldKind::ndarray ? num_elements() * dtype_size(dtype) : 0;
}

size_t Schema::index_of(std::string_view name) const {
  for (size_t i = 0; i < fields.size(); ++i)
    if (fields[i].name == name) return i;
  std::string known;
  for (const auto& f : fields) known += (known.empty() ? "" : ", ") + f.name;
  throw InvalidArgument("no field named '" + std::string(name) + "' (fields: " + known + ")");
}

void Schema::validate() const {
  if (fields.empty()) throw InvalidArgument("schema: needs at least one field");
  if (fields.size() > kMaxFields)
    throw InvalidArgument("schema: " + std::to_string(fields.size()) + " fields, at most " +
                          std::to_string(kMaxFields) + " allowed");
  std::set<std::string> seen;
  for (const auto& f : fields) {
    if (f.name.empty() || f.name.size() > kMaxFieldName)
      throw InvalidArgument("schema: field names must have 1 to 255 bytes, got '" + f.name + "'");
    if (!seen.insert(f.name).second)
      throw InvalidArgument("schema: duplicate field '" + f.name + "'");
    if (f.kind != FieldKind::ndarray && f.kind != FieldKind::bytes)
      throw InvalidArgument("schema: field '" + f.name + "' has an unknown kind");
    if (static_cast<int>(f.dtype) >= kNumDTypes)
      throw InvalidArgument("schema: field '" + f.name + "' has an unknown dtype");
    if (f.kind == FieldKind::bytes && !f.shape.empty())
      throw InvalidArgument("schema: bytes field '" + f.name + "' cannot have a shape");
    if (f.shape.size() > kMaxNdim)
      throw InvalidArgument("schema: field '" + f.name + "' has more than 8 dimensions");
    uint64_t elems = 1;
    for (uint64_t d : f.shape) {
      if (d == 0 || elems > (1ull << 40) / d)
        throw InvalidArgument("schema: field '" + f.name + "' has a zero or too large dimension");
      elems *= d;
    }
  }
}

std::pair<uint64_t, uint64_t> Layout::sample_extent(uint64_t sample) const {
  uint64_t lo = UINT64_MAX, hi = 0;
  for (const FieldLoc& loc : sample_fields(sample)) {
    lo = std::min(lo, loc.offset);
    hi = std::max(hi, loc.offset + loc.length);
  }
  const uint64_t base = page_offset(sample_pages_[sample]);
  return {base + lo, base + hi};
}

uint64_t Layout::max_field_length(size_t f) const { return max_lengths_.at(f); }
uint64_t Layout::max_decoded_length(size_t f) const { return max_decoded_.at(f); }

uint64_t Layout::top_k_field_bytes(size_t f, uint64_t k) const { return top_k(f, k, false); }
uint64_t Layout::top_k_decoded_bytes(size_t f, uint64_t k) const { return top_k(f, k, true); }

uint64_t Layout::total_stored_bytes(size_t f) const {
  uint64_t sum = 0;
  for (uint64_t s = 0; s < num_samples_; ++s) sum += sample_fields(s)[f].length;
  return sum;
}

uint64_t Layout::total_decoded_bytes(size_t f) const {
  uint64_t sum = 0;
  for (uint64_t s = 0; s < num_samples_; ++s) sum += decoded_length(s, f);
  return sum;
}

uint64_t Layout::top_k(size_t f, uint64_t k, bool decoded) const {
  const FieldSpec& spec = schema_.fields.at(f);
  // An uncompressed ndarray's stored length is its fixed size; a compressed one decodes to it.
  if (spec.kind == FieldKind::ndarray && (decoded || field_codec(f) == CodecId::none))
    return spec.fixed_bytes() * std::min(k, num_samples_);
  // Min-heap of the k largest lengths.
  std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<>> heap;
  uint64_t sum = 0;
  const size_t nf = schema_.fields.size();
  for (uint64_t s = 0; s < num_samples_; ++s) {
    const uint64_t len = decoded ? decoded_length(s, f) : field_locs_[s * nf + f].length;
    if (heap.size() < k) {
      heap.push(len);
      sum += len;
    } else if (k > 0 && len > heap.top()) {
      sum += len - heap.top();
      heap.pop();
      heap.push(len);
    }
  }
  return sum;
}

std::vector<uint8_t> encode_schema(const Schema& schema, std::span<const CodecId> codecs) {
  std::vector<uint8_t> out;
  for (const auto& f : schema.fields) {
    out.push_back(static_cast<uint8_t>(f.kind));
    out.push_back(static_cast<uint8_t>(f.dtype));
    out.push_back(static_cast<uint8_t>(f.shape.size()));
    out.push_back(static_cast<uint8_t>(f.name.size()));
    out.insert(out.end(), f.name.begin(), f.name.end());
    for (uint64_t d : f.shape) {
      uint8_t b[8];
      std::memcpy(b, &d, 8);
      out.insert(out.end(), b, b + 8);
    }
  }
  for (CodecId c : codecs) out.push_back(static_cast<uint8_t>(c));
  return out;
}

/// Turns the raw sections into a Layout, checking every count, offset and checksum first.
class LayoutParser {
 public:
  LayoutParser(const std::string& path, uint64_t file_size, const Layout::ReadFn& read_at)
      : path_(path), size_(file_size), read_(read_at) {}

  Layout parse() {
    Layout out;
    out.path_ = path_;
    out.file_size_ = size_;
    HeaderPrefix h = parse_header(out);
    Footer footer = parse_footer(h);
    parse_page_table(h, footer, out);
    parse_index(h, footer, out);
    return out;
  }

 private:
  std::vector<uint8_t> read(uint64_t offset, uint64_t length, std::string_view section) {
    if (!fits(offset, length, size_))
      bad(path_, section,
          "range [" + std::to_string(offset) + ", +" + std::to_string(length) +
              ") lies past the end of the file (" + std::to_string(size_) +
              " bytes): truncated or corrupt");
    std::vector<uint8_t> buf(length);
    if (length) read_(offset, length, buf.data());
    return buf;
  }

  HeaderPrefix parse_header(Layout& out) {
    if (size_ < sizeof(HeaderPrefix) + sizeof(Footer))
      bad(path_, "header",
          "file has " + std::to_string(size_) + " bytes, too small to be a ferry file");
    HeaderPrefix h;
    auto raw = read(0, sizeof h, "header");
    std::memcpy(&h, raw.data(), sizeof h);
    if (std::memcmp(h.magic, kMagic, 8) != 0) bad(path_, "header", "bad magic: not a ferry file");
    if (h.version != kFormatVersion1 && h.version != kFormatVersion)
      bad(path_, "header",
          "format version " + std::to_string(h.version) + ", this ferry reads versions 1 to " +
              std::to_string(kFormatVersion));
    out.version_ = h.version;
    if (h.flags != 0) bad(path_, "header", "unknown flags " + std::to_string(h.flags));
    if (h.header_size % kHeaderAlign != 0 || h.header_size != h.data_offset ||
        h.header_size < sizeof(HeaderPrefix) ||
        h.schema_size > h.header_size - sizeof(HeaderPrefix) || h.header_size > size_)
      bad(path_, "header", "inconsistent header size " + std::to_string(h.header_size));
    auto block = read(0, sizeof(HeaderPrefix) + h.schema_size, "header");
    std::memset(block.data() + offsetof(HeaderPrefix, header_xxh64), 0, 8);
    if (XXH64(block.data(), block.size(), 0) != h.header_xxh64)
      bad(path_, "header", "checksum mismatch (header corrupted)");
    out.header_xxh64_ = h.header_xxh64;
    if (!is_pow2(h.page_size) || h.page_size < kMinPageSize || h.page_size > kMaxPageSize)
      bad(path_, "header",
          "page size " + std::to_string(h.page_size) + " is not a power of two in [4 KiB, 1 GiB]");
    if (!is_pow2(h.alignment) || h.alignment > kHeaderAlign)
      bad(path_, "header",
          "alignment " + std::to_string(h.alignment) + " is not a power of two <= 4096");
    out.page_size_ = h.page_size;
    out.alignment_ = h.alignment;
    out.data_offset_ = h.data_offset;
    out.schema_ = decode_schema(block.data() + sizeof(HeaderPrefix), h.schema_size, h.num_fields,
                                h.version, out);
    parse_metadata(h, out);
    return h;
  }

  // The optional metadata block after the schema (absent: zero padding, no magic).
  void parse_metadata(const HeaderPrefix& h, Layout& out) {
    const uint64_t start = sizeof(HeaderPrefix) + h.schema_size;
    if (h.header_size - start < 24) return;
    auto head = read(start, 24, "metadata");
    if (std::memcmp(head.data(), kMetadataMagic, 8) != 0) return;
    uint64_t len = 0, sum = 0;
    std::memcpy(&len, head.data() + 8, 8);
    std::memcpy(&sum, head.data() + 16, 8);
    if (len > kMaxMetadataBytes || len > h.header_size - start - 24)
      bad(path_, "metadata", "length " + std::to_string(len) + " overruns the header");
    auto bytes = read(start + 24, len, "metadata");
    if (XXH64(bytes.data(), bytes.size(), 0) != sum)
      bad(path_, "metadata", "checksum mismatch (metadata corrupted)");
    out.metadata_.assign(bytes.begin(), bytes.end());
  }

  Schema decode_schema(const uint8_t* p, uint64_t n, uint32_t num_fields, uint32_t version,
                       Layout& out) {
    Schema s;
    uint64_t pos = 0;
    auto need = [&](uint64_t k) {
      if (k > n - pos) bad(path_, "schema", "truncated field description");
    };
    if (num_fields == 0 || num_fields > kMaxFields)
      bad(path_, "schema", "field count " + std::to_string(num_fields) + " out of range");
    for (uint32_t i = 0; i < num_fields; ++i) {
      need(4);
      FieldSpec f;
      f.kind = static_cast<FieldKind>(p[pos]);
      f.dtype = static_cast<DType>(p[pos + 1]);
      const uint8_t ndim = p[pos + 2], name_len = p[pos + 3];
      pos += 4;
      if (static_cast<int>(f.kind) > 1 || static_cast<int>(f.dtype) >= kNumDTypes ||
          ndim > kMaxNdim)
        bad(path_, "schema", "field " + std::to_string(i) + " has an unknown kind, dtype or rank");
      need(name_len);
      f.name.assign(reinterpret_cast<const char*>(p + pos), name_len);
      pos += name_len;
      need(8ull * ndim);
      f.shape.resize(ndim);
      if (ndim)
        std::memcpy(f.shape.data(), p + pos, 8ull * ndim);  // a scalar's shape has no data()
      pos += 8ull * ndim;
      s.fields.push_back(std::move(f));
    }
    if (version >= 2) {  // one codec id per field after the descriptions
      if (num_fields > n - pos) bad(path_, "schema", "truncated codec ids");
      for (uint32_t i = 0; i < num_fields; ++i) {
        const uint8_t c = p[pos + i];
        try {
          (void)codec_by_id(static_cast<CodecId>(c));
        } catch (const FormatError& e) {
          bad(path_, "schema", "field " + std::to_string(i) + ": " + e.what());
        }
        out.codecs_.push_back(static_cast<CodecId>(c));
        out.any_compressed_ |= c != 0;
      }
      pos += num_fields;
      if (!out.any_compressed_)
        bad(path_, "schema", "version 2 file without a compressed field (writers use version 1)");
    }
    if (pos != n) bad(path_, "schema", "trailing bytes after the last field");
    try {
      s.validate();
    } catch (const InvalidArgument& e) {
      bad(path_, "schema", e.what());
    }
    return s;
  }

  Footer parse_footer(const HeaderPrefix& h) {
    if (h.footer_offset != size_ - sizeof(Footer))
      bad(path_, "footer",
          "expected at offset " + std::to_string(size_ - sizeof(Footer)) + ", header says " +
              std::to_string(h.footer_offset) + " (truncated or extended file)");
    Footer f;
    auto raw = read(h.footer_offset, sizeof f, "footer");
    std::memcpy(&f, raw.data(), sizeof f);
    if (std::memcmp(f.magic, kEndMagic, 8) != 0)
      bad(path_, "footer", "bad end magic (truncated file?)");
    if (f.file_size != size_)
      bad(path_, "footer",
          "records a file size of " + std::to_string(f.file_size) + " bytes, file has " +
              std::to_string(size_));
    return f;
  }

  void parse_page_table(const HeaderPrefix& h, const Footer& f, Layout& out) {
    const uint64_t data_end = h.page_table_offset;
    if (data_end < h.data_offset || data_end > h.footer_offset)
      bad(path_, "page table", "offset " + std::to_string(data_end) + " outside the file");
    const uint64_t max_pages = (data_end - h.data_offset + h.page_size - 1) / h.page_size;
    if (h.num_pages > max_pages)
      bad(path_, "page table",
          std::to_string(h.num_pages) + " pages do not fit in the data region");
    auto raw = read(h.page_table_offset, h.num_pages * sizeof(PageInfo), "page table");
    if (XXH64(raw.data(), raw.size(), 0) != f.page_table_xxh64)
      bad(path_, "page table", "checksum mismatch (page table corrupted)");
    out.pages_.resize(h.num_pages);
    if (!raw.empty()) std::memcpy(out.pages_.data(), raw.data(), raw.size());
    for (uint64_t p = 0; p < h.num_pages; ++p) {
      if (out.pages_[p].used > h.page_size ||
          !fits(out.page_offset(p), out.pages_[p].used, data_end))
        bad(path_, "page table",
            "page " + std::to_string(p) + " claims " + std::to_string(out.pages_[p].used) +
                " bytes beyond the data region");
    }
  }

  void parse_index(const HeaderPrefix& h, const Footer& f, Layout& out) {
    const uint64_t nf = out.schema_.fields.size();
    const uint64_t entry = index_entry_size(nf, out.version_);
    if (h.num_samples > size_ / entry || h.index_size != h.num_samples * entry)
      bad(path_, "index",
          "size " + std::to_string(h.index_size) + " does not match " +
              std::to_string(h.num_samples) + " samples");
    if (h.index_offset < h.page_table_offset + h.num_pages * sizeof(PageInfo) ||
        !fits(h.index_offset, h.index_size, h.footer_offset))
      bad(path_, "index", "offset " + std::to_string(h.index_offset) + " overlaps another section");
    auto raw = read(h.index_offset, h.index_size, "index");
    if (XXH64(raw.data(), raw.size(), 0) != f.index_xxh64)
      bad(path_, "index", "checksum mismatch (index corrupted)");
    out.num_samples_ = h.num_samples;
    out.sample_pages_.resize(h.num_samples);
    out.field_locs_.resize(h.num_samples * nf);
    out.max_lengths_.assign(nf, 0);
    out.max_decoded_.assign(nf, 0);
    const bool v2 = out.version_ >= 2;
    if (v2) out.decoded_lengths_.resize(h.num_samples * nf);
    const uint8_t* p = raw.data();
    for (uint64_t s = 0; s < h.num_samples; ++s, p += entry) {
      std::memcpy(&out.sample_pages_[s], p, 8);
      if (v2) {
        for (uint64_t i = 0; i < nf; ++i) {
          std::memcpy(&out.field_locs_[s * nf + i], p + 8 + 24 * i, 16);
          std::memcpy(&out.decoded_lengths_[s * nf + i], p + 8 + 24 * i + 16, 8);
        }
      } else {
        std::memcpy(&out.field_locs_[s * nf], p + 8, 16 * nf);
      }
      check_sample(out, s);
    }
  }

  void check_sample(Layout& out, uint64_t s) {
    const uint64_t page = out.sample_pages_[s];
    if (page >= out.pages_.size())
      bad(path_, "index",
          "sample " + std::to_string(s) + " names page " + std::to_string(page) + " of " +
              std::to_string(out.pages_.size()));
    const uint64_t span = (out.pages_.size() - page) * out.page_size_;
    for (size_t i = 0; i < out.schema_.fields.size(); ++i) {
      const FieldLoc loc = out.field_locs_[s * out.schema_.fields.size() + i];
      const FieldSpec& spec = out.schema_.fields[i];
      const auto where = [&] {
        return "sample " + std::to_string(s) + " field '" + spec.name + "'";
      };
      const bool compressed = out.field_codec(i) != CodecId::none;
      const uint64_t decoded = out.decoded_length(s, i);
      if (!compressed && decoded != loc.length)
        bad(path_, "index",
            where() + " is uncompressed but records " + std::to_string(decoded) +
                " decoded bytes for " + std::to_string(loc.length) + " stored");
      if (spec.kind == FieldKind::ndarray && decoded != spec.fixed_bytes())
        bad(path_, "index",
            where() + (compressed ? " decodes to " : " has ") + std::to_string(decoded) +
                " bytes, schema says " + std::to_string(spec.fixed_bytes()));
      if (compressed && decoded > kMaxDecodedLength)
        bad(path_, "index",
            where() + " decodes to " + std::to_string(decoded) + " bytes, more than the " +
                std::to_string(kMaxDecodedLength) + " allowed");
      // Compressed fields are never viewed in place, so only plain ones are aligned.
      if (!compressed && loc.offset % out.alignment_ != 0)
        bad(path_, "index", where() + " is misaligned");
      if (!fits(loc.offset, loc.length, span))
        bad(path_, "index", where() + " lies past the last page");
      if (loc.length > 0) {
        const uint64_t last = page + (loc.offset + loc.length - 1) / out.page_size_;
        const uint64_t end_in_last = (loc.offset + loc.length - 1) % out.page_size_ + 1;
        if (end_in_last > out.pages_[last].used)
          bad(path_, "index",
              where() + " extends past the used bytes of page " + std::to_string(last));
      }
      out.max_lengths_[i] = std::max(out.max_lengths_[i], loc.length);
      out.max_decoded_[i] = std::max(out.max_decoded_[i], decoded);
    }
  }

  const std::string& path_;
  uint64_t size_;
  const Layout::ReadFn& read_;
};

Layout Layout::parse(const std::string& path, uint64_t file_size, const ReadFn& read_at) {
  return LayoutParser(path, file_size, read_at).parse();
}

}  // namespace ferry
