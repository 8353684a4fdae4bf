#include <zstd.h>

#include "codec_table.h"
#include "ferry/error.h"

namespace ferry::detail {

namespace {

// A context per thread, reused: creating one per call (what ZSTD_decompress does) costs more
// than decoding a small field (measured: 9 µs per 784-byte Fashion-MNIST image).
struct Contexts {
  ZSTD_CCtx* c = nullptr;
  ZSTD_DCtx* d = nullptr;
  ~Contexts() {
    ZSTD_freeCCtx(c);
    ZSTD_freeDCtx(d);
  }
};

Contexts& contexts() {
  thread_local Contexts ctx;
  return ctx;
}

// One zstd frame per (sample, field). Level 0 is zstd's default (3); negative levels are its
// fast modes. Decode checks the frame's recorded size before decompressing, then the result.
// Stateless as a Codec: the only state is the calling thread's reusable context.
class ZstdCodec final : public Codec {
 public:
  CodecId id() const override { return CodecId::zstd; }
  std::string_view name() const override { return "zstd"; }

  void encode(std::span<const uint8_t> in, int level, std::vector<uint8_t>& out) const override {
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
      throw InvalidArgument("codec zstd: level " + std::to_string(level) + " out of range (" +
                            std::to_string(ZSTD_minCLevel()) + ".." +
                            std::to_string(ZSTD_maxCLevel()) + ", 0 = default)");
    const size_t bound = ZSTD_compressBound(in.size());
    const size_t old = out.size();
    out.resize(old + bound);
    Contexts& ctx = contexts();
    if (!ctx.c && !(ctx.c = ZSTD_createCCtx()))
      throw InvalidArgument("codec zstd: out of memory for a compression context");
    const size_t w = ZSTD_compressCCtx(ctx.c, out.data() + old, bound, in.data(), in.size(), level);
    if (ZSTD_isError(w))
      throw InvalidArgument(std::string("codec zstd: compression failed: ") + ZSTD_getErrorName(w));
    out.resize(old + w);
  }

  void decode(std::span<const uint8_t> in, std::span<uint8_t> out) const override {
    const unsigned long long content = ZSTD_getFrameContentSize(in.data(), in.size());
    if (content == ZSTD_CONTENTSIZE_ERROR)
      throw FormatError("codec zstd: corrupt data (not a zstd frame, " + std::to_string(in.size()) +
                        " stored bytes)");
    if (content != ZSTD_CONTENTSIZE_UNKNOWN && content != out.size())
      throw FormatError("codec zstd: frame holds " + std::to_string(content) +
                        " bytes, index says " + std::to_string(out.size()));
    Contexts& ctx = contexts();
    if (!ctx.d && !(ctx.d = ZSTD_createDCtx()))
      throw FormatError("codec zstd: out of memory for a decompression context");
    const size_t r = ZSTD_decompressDCtx(ctx.d, out.data(), out.size(), in.data(), in.size());
    if (ZSTD_isError(r))
      throw FormatError(std::string("codec zstd: corrupt data: ") + ZSTD_getErrorName(r));
    if (r != out.size())
      throw FormatError("codec zstd: decoded " + std::to_string(r) + " bytes, index says " +
                        std::to_string(out.size()));
  }
};

}  // namespace

const Codec& zstd_codec() {
  static const ZstdCodec codec;
  return codec;
}

}  // namespace ferry::detail
