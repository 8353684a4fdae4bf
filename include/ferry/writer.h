#pragma once
/// \file writer.h
/// \brief Streaming, atomic writer of .ferry files.
///
/// Memory stays O(page size + index): one page is buffered, the index grows by
/// 8 + 16 × fields bytes per sample. The file is written under a temporary name in the same
/// folder and renamed over `path` only by a successful close(); destroying an unclosed Writer
/// (an exception, an early return) removes the temporary file, so `path` never holds a partial
/// file. A Writer is used from one thread.
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ferry/codec.h"
#include "ferry/format.h"

namespace ferry {

struct WriterOptions {
  uint64_t page_size = kDefaultPageSize;   ///< power of two in [4 KiB, 1 GiB]
  uint32_t alignment = kDefaultAlignment;  ///< power of two >= every dtype size, <= 4096
  bool fsync = true;                       ///< fsync file and folder on close (durability)
  /// Codec by field name; fields not named are stored as is. Every name must be a schema
  /// field (else InvalidArgument). With any field compressed the file is format version 2
  /// (docs/format.md), otherwise version 1. Each sample's value of a field is compressed on
  /// its own at append; compressed fields are not aligned (only plain ones are viewed in place).
  std::map<std::string, CodecChoice> codecs = {};
  /// Free-form user metadata (JSON text by convention, e.g. an importer's class list), read
  /// back as Layout::metadata(). Up to kMaxMetadataBytes; "" writes no metadata block.
  std::string metadata = {};
};

/// Parses "FIELD=CODEC[:LEVEL]" specs (the CLI's --compress) into WriterOptions::codecs.
/// Throws InvalidArgument naming the bad spec.
std::map<std::string, CodecChoice> parse_compress_specs(std::span<const std::string> specs);

/// The bytes of one field of one sample.
struct FieldData {
  const void* data;
  uint64_t size;
};

/// A column of `n` samples for append_batch: ndarray fields are contiguous [n, ...] arrays;
/// bytes fields give `offsets` with n+1 entries into `data`.
struct Column {
  const void* data;
  const uint64_t* offsets = nullptr;  ///< bytes fields only
};

class Writer {
 public:
  /// Creates the temporary file. Throws InvalidArgument (bad schema/options) or IoError.
  Writer(const std::string& path, Schema schema, const WriterOptions& options = {});
  ~Writer();
  Writer(Writer&&) noexcept;
  Writer& operator=(Writer&&) noexcept;
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  /// Appends one sample: one FieldData per schema field, in schema order. ndarray fields must
  /// have exactly the schema's byte size. Throws InvalidArgument naming the field otherwise.
  void append(std::span<const FieldData> fields);
  /// Appends `n` samples from one Column per field.
  void append_batch(std::span<const Column> columns, uint64_t n);

  /// Writes page table, index, footer and header, fsyncs and renames into place.
  void close();
  /// Removes the temporary file without publishing anything (also what the destructor does).
  void abort() noexcept;

  uint64_t num_samples() const;
  const Schema& schema() const;
  const std::string& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Writes a whole file in one call (the same atomicity).
void write_file(const std::string& path, const Schema& schema, std::span<const Column> columns,
                uint64_t n, const WriterOptions& options = {});

}  // namespace ferry
