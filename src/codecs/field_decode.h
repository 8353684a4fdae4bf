#pragma once
// Internal: decoding a compressed field of a sample, for the Reader and the loader's workers.
//
// What a loader worker does for a field f (file field index) whose
// layout.field_codec(f) != CodecId::none:
//   * size the batch slot from layout.top_k_decoded_bytes(f, batch_size) and a bytes field's
//     offsets from layout.decoded_length(sample, f) (never from the stored length);
//   * read the stored bytes (layout.field_offset(sample, f), sample_fields(sample)[f].length)
//     into a per-worker DecodeStaging, not into the slot;
//   * decode_value(layout, f, stored, dst) into the slot (dst: decoded_length bytes); a thrown
//     FormatError is that sample's error (on_error raise/skip), never the batch's.
// Uncompressed fields keep the direct path (read or memcpy straight into the slot).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ferry/format.h"

namespace ferry::detail {

/// Decodes field `f`'s stored bytes into exactly `dst.size()` bytes (the decoded length).
/// Throws FormatError "field 'F': codec C: <cause>" (the caller names file and sample).
void decode_value(const Layout& layout, size_t f, std::span<const uint8_t> stored,
                  std::span<uint8_t> dst);

/// decode_value, with the error naming the file and sample too:
/// "ferry file 'P': sample S field 'F': codec C: <cause>".
void decode_field(const Layout& layout, uint64_t sample, size_t f, std::span<const uint8_t> stored,
                  std::span<uint8_t> dst);

/// True if any of `file_fields` (file field indices) is compressed.
bool any_compressed(const Layout& layout, std::span<const size_t> file_fields);

/// Stored bytes of the compressed fields among `file_fields` over `samples`: what a
/// DecodeStaging must hold to stage them all at once.
uint64_t compressed_stored_bytes(const Layout& layout, std::span<const uint64_t> samples,
                                 std::span<const size_t> file_fields);

/// A worker's staging buffer for stored (compressed) bytes: reset() once per batch with the
/// total, then take() hands out consecutive ranges that stay valid until the next reset().
class DecodeStaging {
 public:
  void reset(uint64_t bytes) {
    if (buf_.size() < bytes) buf_.resize(bytes);
    used_ = 0;
  }
  uint8_t* take(uint64_t len) {
    uint8_t* p = buf_.data() + used_;
    used_ += len;
    return p;
  }

 private:
  std::vector<uint8_t> buf_;
  uint64_t used_ = 0;
};

}  // namespace ferry::detail
