#pragma once
// Internal: the codec table behind codec_by_id / codec_by_name (registry.cpp). Adding a codec is
// one .cpp file defining its `const Codec& xxx_codec()` and one line in registry.cpp.
#include "ferry/codec.h"

namespace ferry::detail {

const Codec& none_codec();
const Codec& lz4_codec();
const Codec& zstd_codec();

}  // namespace ferry::detail
