#include <cstring>

#include "codec_table.h"
#include "ferry/error.h"

namespace ferry::detail {

namespace {

class NoneCodec final : public Codec {
 public:
  CodecId id() const override { return CodecId::none; }
  std::string_view name() const override { return "none"; }
  void encode(std::span<const uint8_t> in, int level, std::vector<uint8_t>& out) const override {
    if (level != 0)
      throw InvalidArgument("codec none takes no level, got " + std::to_string(level));
    out.insert(out.end(), in.begin(), in.end());
  }
  void decode(std::span<const uint8_t> in, std::span<uint8_t> out) const override {
    if (in.size() != out.size())
      throw FormatError("codec none: stored " + std::to_string(in.size()) + " bytes, expected " +
                        std::to_string(out.size()));
    if (!in.empty()) std::memcpy(out.data(), in.data(), in.size());
  }
};

}  // namespace

const Codec& none_codec() {
  static const NoneCodec codec;
  return codec;
}

}  // namespace ferry::detail
