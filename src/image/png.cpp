// PNG through libspng: palette, 16-bit, gray and alpha images come out as 8-bit RGB (or gray),
// with the image size checked against max_pixels before anything is allocated.
#include <spng.h>

#include <cstring>
#include <memory>

#include "ferry/error.h"
#include "image_codecs.h"

namespace ferry::image {
namespace {

struct ContextFree {
  void operator()(spng_ctx* c) const { spng_ctx_free(c); }
};
using Context = std::unique_ptr<spng_ctx, ContextFree>;

[[noreturn]] void fail(int code) { throw Error(std::string("PNG: ") + spng_strerror(code)); }

Context open(std::span<const uint8_t> bytes, spng_ihdr& ihdr, uint64_t max_pixels) {
  Context ctx(spng_ctx_new(0));
  if (!ctx) throw std::bad_alloc();
  // Bound what ancillary chunks may make libspng hold (text, ICC...).
  spng_set_chunk_limits(ctx.get(), 16u << 20, 64u << 20);
  if (int rc = spng_set_png_buffer(ctx.get(), bytes.data(), bytes.size())) fail(rc);
  if (int rc = spng_get_ihdr(ctx.get(), &ihdr)) fail(rc);
  if (ihdr.width == 0 || ihdr.height == 0) throw Error("PNG: zero-sized image");
  if (uint64_t{ihdr.width} * ihdr.height > max_pixels)
    throw Error("PNG: " + std::to_string(ihdr.width) + "x" + std::to_string(ihdr.height) +
                " pixels exceed max_pixels " + std::to_string(max_pixels) +
                " (a decompression bomb?)");
  return ctx;
}

void rgb_to_gray(uint8_t* p, uint64_t pixels) {
  for (uint64_t i = 0; i < pixels; ++i) {
    const uint32_t r = p[i * 3], g = p[i * 3 + 1], b = p[i * 3 + 2];
    p[i] = static_cast<uint8_t>((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
  }
}

}  // namespace

ImageInfo png_info(std::span<const uint8_t> bytes, uint64_t max_pixels) {
  spng_ihdr ihdr{};
  Context ctx = open(bytes, ihdr, max_pixels);
  return {ihdr.height, ihdr.width};
}

Decoded png_decode(std::span<const uint8_t> bytes, const DecodeRequest& req, Arena& arena) {
  spng_ihdr ihdr{};
  Context ctx = open(bytes, ihdr, req.max_pixels);
  const bool gray_in = ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE ||
                       ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA;
  const bool alpha_in = ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA ||
                        ihdr.color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA;
  int fmt = SPNG_FMT_RGB8;
  uint32_t channels = 3;
  if (req.mode == ColorMode::unchanged) {
    if (gray_in && !alpha_in && ihdr.bit_depth <= 8) {
      fmt = SPNG_FMT_G8, channels = 1;
    } else if (gray_in) {
      fmt = SPNG_FMT_GA8, channels = 2;
    } else if (alpha_in || ihdr.color_type == SPNG_COLOR_TYPE_INDEXED) {
      fmt = SPNG_FMT_RGBA8, channels = 4;
    }
  } else if (req.mode == ColorMode::gray && gray_in && !alpha_in && ihdr.bit_depth <= 8) {
    fmt = SPNG_FMT_G8, channels = 1;
  }
  size_t size = 0;
  if (int rc = spng_decoded_image_size(ctx.get(), fmt, &size)) fail(rc);
  uint8_t* pixels = arena.allocate(size);
  if (int rc = spng_decode_image(ctx.get(), pixels, size, fmt, 0)) fail(rc);
  const uint64_t n = uint64_t{ihdr.width} * ihdr.height;
  if (req.mode == ColorMode::gray && channels == 3) {
    rgb_to_gray(pixels, n);
    channels = 1;
  }
  Decoded out;
  out.view = {pixels, ihdr.height, ihdr.width, channels, uint64_t{ihdr.width} * channels};
  out.scaled_height = ihdr.height;
  out.scaled_width = ihdr.width;
  return out;
}

}  // namespace ferry::image
