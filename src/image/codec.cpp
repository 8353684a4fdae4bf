// Format sniffing and dispatch (image.h).
#include <cstring>

#include "ferry/error.h"
#include "image_codecs.h"

namespace ferry::image {

Codec sniff(std::span<const uint8_t> b) {
  static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return Codec::jpeg;
  if (b.size() >= 8 && std::memcmp(b.data(), png_magic, 8) == 0) return Codec::png;
  return Codec::unknown;
}

namespace {
[[noreturn]] void not_an_image(std::span<const uint8_t> b) {
  throw Error("not a JPEG or PNG image (" + std::to_string(b.size()) +
              " bytes, no known signature)");
}
}  // namespace

ImageInfo read_info(std::span<const uint8_t> bytes, Codec codec, uint64_t max_pixels) {
  if (codec == Codec::jpeg) return jpeg_info(bytes, max_pixels);
  if (codec == Codec::png) return png_info(bytes, max_pixels);
  not_an_image(bytes);
}

Decoded decode(std::span<const uint8_t> bytes, Codec codec, const DecodeRequest& req,
               Arena& arena) {
  if (codec == Codec::jpeg) return jpeg_decode(bytes, req, arena);
  if (codec == Codec::png) return png_decode(bytes, req, arena);
  not_an_image(bytes);
}

}  // namespace ferry::image
