#include "codecs/field_decode.h"

#include "ferry/error.h"

namespace ferry::detail {

void decode_value(const Layout& layout, size_t f, std::span<const uint8_t> stored,
                  std::span<uint8_t> dst) {
  const Codec& codec = codec_by_id(layout.field_codec(f));
  try {
    codec.decode(stored, dst);
  } catch (const FormatError& e) {
    throw FormatError("field '" + layout.schema().fields[f].name + "': " + e.what());
  }
}

void decode_field(const Layout& layout, uint64_t sample, size_t f, std::span<const uint8_t> stored,
                  std::span<uint8_t> dst) {
  try {
    decode_value(layout, f, stored, dst);
  } catch (const FormatError& e) {
    throw FormatError("ferry file '" + layout.path() + "': sample " + std::to_string(sample) + " " +
                      e.what());
  }
}

bool any_compressed(const Layout& layout, std::span<const size_t> file_fields) {
  for (size_t f : file_fields)
    if (layout.field_codec(f) != CodecId::none) return true;
  return false;
}

uint64_t compressed_stored_bytes(const Layout& layout, std::span<const uint64_t> samples,
                                 std::span<const size_t> file_fields) {
  uint64_t sum = 0;
  for (size_t f : file_fields) {
    if (layout.field_codec(f) == CodecId::none) continue;
    for (uint64_t s : samples) sum += layout.sample_fields(s)[f].length;
  }
  return sum;
}

}  // namespace ferry::detail
