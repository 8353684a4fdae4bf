#include <lz4.h>
#include <lz4hc.h>

#include <climits>

#include "codec_table.h"
#include "ferry/error.h"

namespace ferry::detail {

namespace {

// Raw LZ4 blocks (no frame): the index stores the decoded length. Level 0 is LZ4's fast
// compressor (LZ4_compress_default); 1..12 select LZ4HC at that level (slower, smaller).
class Lz4Codec final : public Codec {
 public:
  CodecId id() const override { return CodecId::lz4; }
  std::string_view name() const override { return "lz4"; }

  void encode(std::span<const uint8_t> in, int level, std::vector<uint8_t>& out) const override {
    if (level < 0 || level > LZ4HC_CLEVEL_MAX)
      throw InvalidArgument("codec lz4: level " + std::to_string(level) +
                            " out of range (0 = fast, 1.." + std::to_string(LZ4HC_CLEVEL_MAX) +
                            " = high compression)");
    if (in.size() > static_cast<size_t>(LZ4_MAX_INPUT_SIZE))
      throw InvalidArgument("codec lz4: " + std::to_string(in.size()) +
                            " bytes exceed its limit of " + std::to_string(LZ4_MAX_INPUT_SIZE));
    const int n = static_cast<int>(in.size());
    const int bound = LZ4_compressBound(n);
    const size_t old = out.size();
    out.resize(old + static_cast<size_t>(bound));
    const char* src = reinterpret_cast<const char*>(in.data());
    char* dst = reinterpret_cast<char*>(out.data() + old);
    const int w = level == 0 ? LZ4_compress_default(src, dst, n, bound)
                             : LZ4_compress_HC(src, dst, n, bound, level);
    if (w <= 0) throw InvalidArgument("codec lz4: compression failed");
    out.resize(old + static_cast<size_t>(w));
  }

  void decode(std::span<const uint8_t> in, std::span<uint8_t> out) const override {
    if (in.size() > INT_MAX || out.size() > INT_MAX)
      throw FormatError("codec lz4: block of " + std::to_string(in.size()) + " -> " +
                        std::to_string(out.size()) + " bytes exceeds LZ4's 2 GiB limit");
    char empty = 0;  // LZ4 wants a real pointer even for a zero-byte output
    const int r = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data()),
                                      out.empty() ? &empty : reinterpret_cast<char*>(out.data()),
                                      static_cast<int>(in.size()), static_cast<int>(out.size()));
    if (r < 0)
      throw FormatError("codec lz4: corrupt data (" + std::to_string(in.size()) + " stored bytes)");
    if (static_cast<size_t>(r) != out.size())
      throw FormatError("codec lz4: decoded " + std::to_string(r) + " bytes, index says " +
                        std::to_string(out.size()));
  }
};

}  // namespace

const Codec& lz4_codec() {
  static const Lz4Codec codec;
  return codec;
}

}  // namespace ferry::detail
