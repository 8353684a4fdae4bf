#include <charconv>
#include <span>

#include "codec_table.h"
#include "ferry/error.h"

namespace ferry {

namespace {

// One line per codec, in CodecId order. Never renumber: the ids are stored in files.
// A function-local table, so codecs are usable during other files' static initialisation.
std::span<const Codec* const> table() {
  static const Codec* const codecs[] = {
      &detail::none_codec(),
      &detail::lz4_codec(),
      &detail::zstd_codec(),
  };
  return codecs;
}

std::string known_names() {
  std::string out;
  for (const Codec* c : table()) out += (out.empty() ? "" : ", ") + std::string(c->name());
  return out;
}

}  // namespace

const Codec& codec_by_id(CodecId id) {
  const auto i = static_cast<size_t>(id);
  if (i >= table().size())
    throw FormatError("unknown codec id " + std::to_string(i) + " (known: " + known_names() + ")");
  return *table()[i];
}

const Codec& codec_by_name(std::string_view name) {
  for (const Codec* c : table())
    if (c->name() == name) return *c;
  throw InvalidArgument("unknown codec '" + std::string(name) + "' (known: " + known_names() + ")");
}

CodecChoice CodecChoice::parse(std::string_view text) {
  const size_t colon = text.find(':');
  CodecChoice c;
  const Codec& codec = codec_by_name(text.substr(0, colon));
  c.id = codec.id();
  if (colon != std::string_view::npos) {
    const std::string_view lv = text.substr(colon + 1);
    const auto [end, ec] = std::from_chars(lv.data(), lv.data() + lv.size(), c.level);
    if (lv.empty() || ec != std::errc() || end != lv.data() + lv.size())
      throw InvalidArgument("codec '" + std::string(text) + "': level '" + std::string(lv) +
                            "' is not an integer (use name[:level], e.g. zstd:3)");
  }
  // The codec rejects a level it does not support (InvalidArgument naming the range).
  std::vector<uint8_t> probe;
  codec.encode({}, c.level, probe);
  return c;
}

std::string CodecChoice::to_string() const {
  std::string out(codec_by_id(id).name());
  if (level != 0) out += ":" + std::to_string(level);
  return out;
}

}  // namespace ferry
