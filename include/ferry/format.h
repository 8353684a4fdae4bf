#pragma once
/// \file format.h
/// \brief The .ferry record format: schema types, constants and the parsed, validated layout.
///
/// docs/format.md specifies the bytes. In short: header (magic, version, schema, counts, section
/// offsets, xxh64) | data region of pages | page table (used bytes + xxh64 per page) | sample index
/// (page + offset/length of each field per sample) | footer (checksums, end magic).
/// Version 2 (written only when a field is compressed) adds a codec id per field to the schema
/// block and a decoded length per field to each index entry.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/codec.h"

namespace ferry {

inline constexpr char kMagic[8] = {'F', 'E', 'R', 'R', 'Y', 'D', 'S', '1'};
inline constexpr char kEndMagic[8] = {'F', 'E', 'R', 'R', 'Y', 'E', 'N', 'D'};
/// The newest version (per-field codecs). Files without a compressed field are written as
/// version 1, byte for byte what earlier writers produced; readers accept both.
inline constexpr uint32_t kFormatVersion = 2;
inline constexpr uint32_t kFormatVersion1 = 1;
/// Largest decoded length of one compressed field of one sample (checked at write and open).
inline constexpr uint64_t kMaxDecodedLength = 1ull << 30;
inline constexpr uint64_t kDefaultPageSize = 2u << 20;  // 2 MiB
inline constexpr uint64_t kMinPageSize = 4096;
inline constexpr uint64_t kMaxPageSize = 1ull << 30;
inline constexpr uint32_t kDefaultAlignment = 64;
inline constexpr uint64_t kHeaderAlign = 4096;  // data region starts on a 4 KiB boundary
inline constexpr uint32_t kMaxFields = 256;
inline constexpr uint32_t kMaxNdim = 8;
inline constexpr uint32_t kMaxFieldName = 255;

enum class DType : uint8_t { u8, i8, u16, i16, u32, i32, u64, i64, f16, bf16, f32, f64 };
inline constexpr int kNumDTypes = 12;

/// Size in bytes of one element of `t`.
size_t dtype_size(DType t);
/// "u8", "f32", ... (numpy-like names without the byte order).
std::string_view dtype_name(DType t);
/// Parses dtype_name()'s spellings; throws InvalidArgument naming the known ones.
DType parse_dtype(std::string_view name);

enum class FieldKind : uint8_t {
  ndarray = 0,  ///< fixed shape and dtype per field (a scalar is a 0-d ndarray)
  bytes = 1,    ///< variable-length bytes (encoded images, text...)
};

/// One named field of the schema.
struct FieldSpec {
  std::string name;
  FieldKind kind = FieldKind::ndarray;
  DType dtype = DType::u8;      ///< ndarray only
  std::vector<uint64_t> shape;  ///< ndarray only; empty for a scalar

  static FieldSpec array(std::string name, DType dtype, std::vector<uint64_t> shape);
  static FieldSpec scalar(std::string name, DType dtype) {
    return array(std::move(name), dtype, {});
  }
  static FieldSpec bytes(std::string name);

  uint64_t num_elements() const;
  /// Bytes of one sample's value for an ndarray field; 0 for bytes fields.
  uint64_t fixed_bytes() const;
  bool operator==(const FieldSpec&) const = default;
};

/// The ordered list of fields every sample has.
struct Schema {
  std::vector<FieldSpec> fields;

  /// Index of the field called `name`; throws InvalidArgument listing the fields if absent.
  size_t index_of(std::string_view name) const;
  /// Checks names (unique, non-empty, <= 255 bytes), ndim, counts; throws InvalidArgument.
  void validate() const;
  bool operator==(const Schema&) const = default;
};

/// Where one field of one sample lies: offset from the start of the sample's first page.
struct FieldLoc {
  uint64_t offset;
  uint64_t length;
};

/// Per-page metadata kept in the page table.
struct PageInfo {
  uint64_t used;   ///< bytes of the page that hold data (the rest is zero padding)
  uint64_t xxh64;  ///< checksum of those bytes
};

/// Everything a reader needs besides the data itself, read once and validated at open.
/// Every offset in here has been checked against the file size and the schema.
class Layout {
 public:
  const std::string& path() const { return path_; }
  const Schema& schema() const { return schema_; }
  uint64_t num_samples() const { return num_samples_; }
  uint64_t num_pages() const { return pages_.size(); }
  uint64_t page_size() const { return page_size_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return file_size_; }
  uint64_t header_xxh64() const { return header_xxh64_; }
  const std::vector<PageInfo>& pages() const { return pages_; }
  /// 1 or 2 (see kFormatVersion).
  uint32_t version() const { return version_; }
  /// User metadata (JSON text; "" when the file has none). Stored in the header's padding
  /// after the schema block (docs/format.md "Metadata"), so older readers skip it.
  const std::string& metadata() const { return metadata_; }

  /// File offset of page `p`.
  uint64_t page_offset(uint64_t p) const { return data_offset_ + p * page_size_; }
  /// First page of every sample (what the epoch orders group by).
  std::span<const uint64_t> sample_pages() const { return sample_pages_; }
  /// First page of `sample`.
  uint64_t sample_page(uint64_t sample) const { return sample_pages_[sample]; }
  /// Location of every field of `sample` (schema().fields.size() entries). Lengths are *stored*
  /// bytes (compressed for a compressed field); decoded_length() gives the value's size.
  std::span<const FieldLoc> sample_fields(uint64_t sample) const {
    const size_t nf = schema_.fields.size();
    return {field_locs_.data() + sample * nf, nf};
  }
  /// Absolute file offset of field `f` of `sample`.
  uint64_t field_offset(uint64_t sample, size_t f) const {
    return page_offset(sample_pages_[sample]) +
           field_locs_[sample * schema_.fields.size() + f].offset;
  }
  /// File range [begin, end) spanned by all fields of `sample`.
  std::pair<uint64_t, uint64_t> sample_extent(uint64_t sample) const;
  /// Largest length of field `f` over all samples, and the sum of the `k` largest (an exact upper
  /// bound for any batch of k samples; how batch buffers for bytes fields are sized).
  uint64_t max_field_length(size_t f) const;
  uint64_t top_k_field_bytes(size_t f, uint64_t k) const;

  /// How field `f` is stored (CodecId::none in version-1 files).
  CodecId field_codec(size_t f) const { return codecs_.empty() ? CodecId::none : codecs_.at(f); }
  /// True if any field is compressed (then the file is version 2).
  bool any_compressed() const { return any_compressed_; }
  /// Bytes of field `f` of `sample` once decoded (== the stored length when uncompressed).
  uint64_t decoded_length(uint64_t sample, size_t f) const {
    const size_t i = sample * schema_.fields.size() + f;
    return decoded_lengths_.empty() ? field_locs_[i].length : decoded_lengths_[i];
  }
  /// max_field_length / top_k_field_bytes over decoded lengths: what batch buffers need.
  uint64_t max_decoded_length(size_t f) const;
  uint64_t top_k_decoded_bytes(size_t f, uint64_t k) const;
  /// Sum over samples of field `f`'s stored and decoded bytes (for compression ratios).
  uint64_t total_stored_bytes(size_t f) const;
  uint64_t total_decoded_bytes(size_t f) const;

  /// Parses and validates the header, page table and index of `path` read through `read_at`.
  /// `read_at(offset, length, dst)` must fill dst exactly or throw. Throws FormatError naming the
  /// file, the section and the problem.
  using ReadFn = std::function<void(uint64_t offset, uint64_t length, void* dst)>;
  static Layout parse(const std::string& path, uint64_t file_size, const ReadFn& read_at);

 private:
  friend class LayoutParser;
  std::string path_;
  Schema schema_;
  uint64_t num_samples_ = 0;
  uint64_t page_size_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  uint64_t file_size_ = 0;
  uint64_t header_xxh64_ = 0;
  std::vector<PageInfo> pages_;
  std::vector<uint64_t> sample_pages_;
  std::vector<FieldLoc> field_locs_;   // num_samples * num_fields
  std::vector<uint64_t> max_lengths_;  // per field
  uint32_t version_ = kFormatVersion1;
  std::vector<CodecId> codecs_;            // per field; empty in version 1
  std::vector<uint64_t> decoded_lengths_;  // num_samples * num_fields; empty in version 1
  std::vector<uint64_t> max_decoded_;      // per field
  bool any_compressed_ = false;
  std::string metadata_;

  uint64_t top_k(size_t f, uint64_t k, bool decoded) const;
};

/// Fixed-size part of the header, as stored (little-endian). See docs/format.md.
struct HeaderPrefix {
  char magic[8];
  uint32_t version;
  uint32_t flags;
  uint64_t header_size;  ///< bytes of header incl. schema and padding == data_offset
  uint64_t page_size;
  uint32_t alignment;
  uint32_t num_fields;
  uint64_t num_samples;
  uint64_t num_pages;
  uint64_t data_offset;
  uint64_t page_table_offset;
  uint64_t index_offset;
  uint64_t index_size;
  uint64_t footer_offset;
  uint64_t schema_size;   ///< bytes of the schema block that follows this prefix
  uint64_t header_xxh64;  ///< xxh64 of prefix (this field zeroed) + schema block
};
static_assert(sizeof(HeaderPrefix) == 112);

/// Footer at the very end of the file.
struct Footer {
  uint64_t page_table_xxh64;
  uint64_t index_xxh64;
  uint64_t file_size;
  char magic[8];
};
static_assert(sizeof(Footer) == 32);

/// Magic of the optional metadata block: magic | u64 length | u64 xxh64(bytes) | bytes, placed
/// right after the schema block, inside the zero padding before the data region.
inline constexpr char kMetadataMagic[8] = {'F', 'E', 'R', 'R', 'Y', 'M', 'D', '1'};
inline constexpr uint64_t kMaxMetadataBytes = 64ull << 20;

/// Bytes of one index entry for a schema with `num_fields` fields: u64 page + 2×u64 per field
/// (offset, length) in version 1; 3×u64 per field (offset, stored length, decoded length) in 2.
inline uint64_t index_entry_size(uint64_t num_fields, uint32_t version = kFormatVersion1) {
  return 8 + (version >= 2 ? 24 : 16) * num_fields;
}

/// Serialises the schema block (what follows HeaderPrefix). Used by the writer. With `codecs`
/// (one per field: a version-2 file) the block ends with one u8 codec id per field.
std::vector<uint8_t> encode_schema(const Schema& schema, std::span<const CodecId> codecs = {});

}  // namespace ferry
