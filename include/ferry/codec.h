#pragma once
/// \file codec.h
/// \brief Per-field compression codecs of the .ferry format (version 2): how a field's bytes
/// are stored in the file. The loader decodes a field as the first step of its chain.
///
/// Threads: a Codec is stateless and may be used from any number of threads at once.
/// Errors: decode() of corrupt data throws FormatError naming the codec and the cause (the
/// loader turns it into a per-sample error under on_error); it never writes past `out`.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ferry {

/// Stored in the file: never renumber.
enum class CodecId : uint8_t { none = 0, lz4 = 1, zstd = 2 };

class Codec {
 public:
  virtual ~Codec() = default;
  virtual CodecId id() const = 0;
  virtual std::string_view name() const = 0;
  /// Compresses `in`, appending to `out`. `level`: codec-specific (0: the codec's default).
  virtual void encode(std::span<const uint8_t> in, int level, std::vector<uint8_t>& out) const = 0;
  /// Decodes `in` into exactly `out.size()` bytes (the decoded length the index stores).
  virtual void decode(std::span<const uint8_t> in, std::span<uint8_t> out) const = 0;
};

/// The codec stored as `id`; throws FormatError for an unknown id.
const Codec& codec_by_id(CodecId id);
/// "none", "lz4", "zstd"; throws InvalidArgument naming the known ones.
const Codec& codec_by_name(std::string_view name);

/// A field's codec choice at write time: "zstd", "zstd:3", "lz4".
struct CodecChoice {
  CodecId id = CodecId::none;
  int level = 0;
  /// Parses "name[:level]"; throws InvalidArgument.
  static CodecChoice parse(std::string_view text);
  std::string to_string() const;
};

}  // namespace ferry
