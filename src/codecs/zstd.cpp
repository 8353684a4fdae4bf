#include <zstd.h>

#include "codec_table.h"
#include "ferry/error.h"

namespace ferry::detail {

namespace {

// One zstd frame per (sample, field). Level 0 is zstd's default (3); negative levels are its
// fast modes. Decode checks the frame's recorded size before decompressing, then the result.
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
    const size_t w = ZSTD_compress(out.data() + old, bound, in.data(), in.size(), level);
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
    const size_t r = ZSTD_decompress(out.data(), out.size(), in.data(), in.size());
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
