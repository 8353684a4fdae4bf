#pragma once
// Internal: the per-format entry points behind image.h's read_info/decode.
#include <span>

#include "image.h"

namespace ferry::image {

ImageInfo jpeg_info(std::span<const uint8_t> bytes, uint64_t max_pixels);
Decoded jpeg_decode(std::span<const uint8_t> bytes, const DecodeRequest& req, Arena& arena);
ImageInfo png_info(std::span<const uint8_t> bytes, uint64_t max_pixels);
Decoded png_decode(std::span<const uint8_t> bytes, const DecodeRequest& req, Arena& arena);

}  // namespace ferry::image
