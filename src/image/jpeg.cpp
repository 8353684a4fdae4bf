// JPEG through libjpeg-turbo's libjpeg API (Debian's TurboJPEG 2.1 API has no partial decode):
// DCT-scaled output (scale_num/8), jpeg_crop_scanline for the iMCU columns a crop needs and
// jpeg_skip_scanlines for the rows above it.
//
// Errors: libjpeg's error_exit must not return, so it longjmps back into the small functions
// below that hold no C++ objects with destructors (a longjmp over one is undefined); the
// decompressor itself is owned by an RAII guard one frame up, which destroys it either way.
#include <csetjmp>
#include <cstdio>
#include <cstring>

// clang-format off
#include <jpeglib.h>
#include <jerror.h>
// clang-format on

#include "ferry/error.h"
#include "image.h"
#include "image_codecs.h"

namespace ferry::image {
namespace {

constexpr int kMaxScans = 1000;  // progressive files with more scans than this are refused

struct ErrorManager {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX + 64];
};

extern "C" void on_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings: a premature end of data becomes an error (PIL refuses truncated files too); the
// others (extraneous bytes, ...) are ignored as libjpeg and PIL do.
extern "C" void on_message(j_common_ptr cinfo, int level) {
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    std::snprintf(err->message, sizeof err->message, "truncated JPEG data");
    std::longjmp(err->jump, 1);
  }
}

extern "C" void on_progress(j_common_ptr cinfo) {
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->is_decompressor && d->input_scan_number > kMaxScans) {
    auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    std::snprintf(err->message, sizeof err->message,
                  "progressive JPEG with more than %d scans (refused: decode cost unbounded)",
                  kMaxScans);
    std::longjmp(err->jump, 1);
  }
}

struct Decompressor {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  jpeg_progress_mgr progress;
  bool created = false;
  Decompressor() {
    std::memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = on_error_exit;
    err.mgr.emit_message = on_message;
    err.message[0] = 0;
    progress.progress_monitor = on_progress;
  }
  ~Decompressor() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
  Decompressor(const Decompressor&) = delete;
  Decompressor& operator=(const Decompressor&) = delete;
  [[noreturn]] void fail() const { throw Error(std::string("JPEG: ") + err.message); }
};

// Phase 1: header. No C++ objects with destructors in this frame (longjmp target).
bool read_header(Decompressor& d, const uint8_t* data, size_t size) {
  if (setjmp(d.err.jump)) return false;
  jpeg_create_decompress(&d.cinfo);
  d.created = true;
  d.cinfo.progress = &d.progress;
  jpeg_mem_src(&d.cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&d.cinfo, TRUE);
  return true;
}

struct Job {
  J_COLOR_SPACE out_space;
  uint32_t scale_num;
  bool whole;
  uint32_t y0, y1, x0, x1;
  // filled by start():
  uint32_t out_w, out_h, components, col0;
  // set by the caller between start() and read():
  uint8_t* pixels;
  uint64_t stride;
};

// Phase 2: start and crop. Fills the output geometry.
bool start(Decompressor& d, Job& job) {
  if (setjmp(d.err.jump)) return false;
  jpeg_decompress_struct& c = d.cinfo;
  c.out_color_space = job.out_space;
  c.scale_num = job.scale_num;
  c.scale_denom = 8;
  c.dct_method = JDCT_ISLOW;  // what PIL uses: the outputs match torchvision's decode
  jpeg_start_decompress(&c);
  job.col0 = 0;
  if (!job.whole) {
    JDIMENSION xoff = job.x0, width = job.x1 - job.x0;
    if (xoff > 0 || width < c.output_width) jpeg_crop_scanline(&c, &xoff, &width);
    job.col0 = xoff;
  } else {
    job.y0 = 0;
    job.y1 = c.output_height;
  }
  job.out_w = c.output_width;
  job.out_h = c.output_height;
  job.components = static_cast<uint32_t>(c.output_components);
  return true;
}

// Phase 3: skip rows above the window, read the window's rows.
bool read_rows(Decompressor& d, Job& job) {
  if (setjmp(d.err.jump)) return false;
  jpeg_decompress_struct& c = d.cinfo;
  if (job.y0 > 0) {
    JDIMENSION skipped = jpeg_skip_scanlines(&c, job.y0);
    if (skipped != job.y0) ERREXIT(&c, JERR_BAD_LENGTH);
  }
  while (c.output_scanline < job.y1) {
    JSAMPROW row = job.pixels + uint64_t{c.output_scanline - job.y0} * job.stride;
    if (jpeg_read_scanlines(&c, &row, 1) != 1) ERREXIT(&c, JERR_BAD_LENGTH);
  }
  jpeg_abort_decompress(&c);
  return true;
}

// CMYK (Adobe files store it inverted) to RGB like PIL's cmyk2rgb; YCCK arrives as CMYK.
void cmyk_to_rgb(uint8_t* row, uint32_t width, bool inverted) {
  for (uint32_t x = 0; x < width; ++x) {
    uint32_t c = row[x * 4], m = row[x * 4 + 1], y = row[x * 4 + 2], k = row[x * 4 + 3];
    if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
    row[x * 3] = static_cast<uint8_t>((c * k + 127) / 255);
    row[x * 3 + 1] = static_cast<uint8_t>((m * k + 127) / 255);
    row[x * 3 + 2] = static_cast<uint8_t>((y * k + 127) / 255);
  }
}

void gray_from_rgb(uint8_t* row, uint32_t width) {
  for (uint32_t x = 0; x < width; ++x) {
    const uint32_t r = row[x * 3], g = row[x * 3 + 1], b = row[x * 3 + 2];
    row[x] = static_cast<uint8_t>((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
  }
}

void check_pixels(uint64_t h, uint64_t w, uint64_t max_pixels, const char* what) {
  if (h == 0 || w == 0) throw Error(std::string(what) + ": zero-sized image");
  if (h * w > max_pixels)
    throw Error(std::string(what) + ": " + std::to_string(w) + "x" + std::to_string(h) +
                " pixels exceed max_pixels " + std::to_string(max_pixels) +
                " (a decompression bomb?)");
}

}  // namespace

ImageInfo jpeg_info(std::span<const uint8_t> bytes, uint64_t max_pixels) {
  Decompressor d;
  if (!read_header(d, bytes.data(), bytes.size())) d.fail();
  check_pixels(d.cinfo.image_height, d.cinfo.image_width, max_pixels, "JPEG");
  return {d.cinfo.image_height, d.cinfo.image_width};
}

Decoded jpeg_decode(std::span<const uint8_t> bytes, const DecodeRequest& req, Arena& arena) {
  Decompressor d;
  if (!read_header(d, bytes.data(), bytes.size())) d.fail();
  check_pixels(d.cinfo.image_height, d.cinfo.image_width, req.max_pixels, "JPEG");
  const J_COLOR_SPACE in_space = d.cinfo.jpeg_color_space;
  const bool cmyk = in_space == JCS_CMYK || in_space == JCS_YCCK;
  const bool gray_in = in_space == JCS_GRAYSCALE;
  Job job{};
  uint32_t channels = 3;
  if (cmyk) {
    job.out_space = JCS_CMYK;
    channels = req.mode == ColorMode::gray ? 1 : (req.mode == ColorMode::unchanged ? 4 : 3);
  } else if (req.mode == ColorMode::gray || (req.mode == ColorMode::unchanged && gray_in)) {
    job.out_space = JCS_GRAYSCALE;
    channels = 1;
  } else {
    job.out_space = JCS_RGB;
  }
  if (cmyk && req.mode == ColorMode::unchanged) channels = 4;
  job.scale_num = req.scale_num;
  job.whole = req.whole;
  job.y0 = req.y0, job.y1 = req.y1, job.x0 = req.x0, job.x1 = req.x1;
  if (!start(d, job)) d.fail();
  if (!job.whole) {
    job.y0 = std::min(job.y0, job.out_h);
    job.y1 = std::min(std::max(job.y1, job.y0), job.out_h);
  }
  const uint64_t rows = job.y1 - job.y0;
  if (rows == 0) throw Error("JPEG: empty decode window (internal error)");
  job.stride = uint64_t{job.out_w} * job.components;
  job.pixels = arena.allocate(rows * job.stride);
  if (!read_rows(d, job)) d.fail();
  // Convert in place to the asked channels (rows shrink, the stride stays).
  if (cmyk && channels != 4) {
    const bool inverted = d.cinfo.saw_Adobe_marker;
    for (uint64_t r = 0; r < rows; ++r) {
      uint8_t* row = job.pixels + r * job.stride;
      cmyk_to_rgb(row, job.out_w, inverted);
      if (channels == 1) gray_from_rgb(row, job.out_w);
    }
  }
  Decoded out;
  out.view = {job.pixels, static_cast<uint32_t>(rows), job.out_w, channels, job.stride};
  out.row0 = job.y0;
  out.col0 = job.col0;
  out.scaled_height = job.out_h;
  // After jpeg_crop_scanline output_width is the cropped width; the full scaled width is:
  out.scaled_width = static_cast<uint32_t>((uint64_t{d.cinfo.image_width} * job.scale_num + 7) / 8);
  return out;
}

}  // namespace ferry::image
