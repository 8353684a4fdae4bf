#pragma once
/// \file reader.h
/// \brief Random access to a validated .ferry file through any Source.
///
/// Open validates the header, schema, page table and index (checksums included) before anything
/// is returned, so every offset a Reader uses afterwards has been checked against the file.
/// A Reader is immutable after open: any number of threads may call it concurrently.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ferry/format.h"
#include "ferry/source.h"

namespace ferry {

/// Bytes of one field of one sample.
struct FieldView {
  const uint8_t* data;
  uint64_t size;
};

/// Result of Reader::verify().
struct VerifyReport {
  uint64_t pages_checked = 0;
  std::vector<std::string> errors;  ///< one line per bad page, naming file and page
  bool ok() const { return errors.empty(); }
};

class Reader {
 public:
  /// Opens and validates `path`. Throws IoError (cannot open) or FormatError (invalid file).
  static std::shared_ptr<Reader> open(const std::string& path, const SourceOptions& options = {});
  /// Same over an already-open source (test doubles, custom backends).
  static std::shared_ptr<Reader> open(std::shared_ptr<Source> source);

  /// The same validated layout read through another source of the SAME file (no re-parse).
  std::shared_ptr<Reader> with_source(std::shared_ptr<Source> source) const {
    return std::shared_ptr<Reader>(new Reader(std::move(source), layout_));
  }

  const Layout& layout() const { return layout_; }
  const Schema& schema() const { return layout_.schema(); }
  uint64_t num_samples() const { return layout_.num_samples(); }
  const std::string& path() const { return source_->path(); }
  Source& source() const { return *source_; }
  const std::shared_ptr<Source>& shared_source() const { return source_; }

  /// The fields of sample `id`, decoded (a compressed field is decoded into `scratch`).
  /// Uncompressed fields are zero-copy when the source can view() the bytes; otherwise the
  /// sample's extent is read into `scratch` and the views point there (valid until scratch
  /// changes). Throws InvalidArgument if id >= num_samples(), FormatError (naming the file,
  /// sample, field and codec) if a compressed field does not decode.
  std::vector<FieldView> sample(uint64_t id, std::vector<uint8_t>& scratch) const;
  /// The fields of sample `id` as stored in the file (compressed fields still compressed).
  std::vector<FieldView> sample_stored(uint64_t id, std::vector<uint8_t>& scratch) const;

  /// Reads the used bytes of page `p` into `out` (resized).
  void read_page(uint64_t p, std::vector<uint8_t>& out) const;

  /// Checks every page's checksum (header, page table and index were checked at open).
  /// `progress(pages_done, pages_total)` is called after each page when given.
  VerifyReport verify(const std::function<void(uint64_t, uint64_t)>& progress = {}) const;

 private:
  Reader(std::shared_ptr<Source> source, Layout layout)
      : source_(std::move(source)), layout_(std::move(layout)) {}
  std::shared_ptr<Source> source_;
  Layout layout_;
};

}  // namespace ferry
