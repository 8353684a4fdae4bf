#pragma once
/// \file importers.h
/// \brief Turning other data into .ferry files: IDX (the MNIST family) and synthetic data.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ferry/format.h"
#include "ferry/writer.h"

namespace ferry {

/// progress(done, total) after every chunk of samples; may be empty.
using Progress = std::function<void(uint64_t, uint64_t)>;

/// An IDX file's header: element type and dimensions (dims[0] is the sample count).
struct IdxInfo {
  DType dtype;
  std::vector<uint64_t> dims;
};

/// Reads the header of an IDX file (gzip-compressed or raw). Throws FormatError naming the file.
IdxInfo read_idx_info(const std::string& path);

/// Converts IDX images (+ optional labels, "" for none) into a file with fields "image"
/// (dtype and shape from the IDX file, one sample per dims[0]) and "label" (a scalar).
/// Multi-byte IDX values (big-endian) are stored little-endian. Returns the sample count.
uint64_t import_idx(const std::string& images, const std::string& labels, const std::string& out,
                    const WriterOptions& options = {}, const Progress& progress = {});

/// Parameters of a synthetic data set.
struct SyntheticSpec {
  uint64_t num_samples = 1000;
  std::vector<uint64_t> shape = {64};  ///< of the "data" field
  DType dtype = DType::u8;
  bool variable = false;  ///< "data" is a bytes field whose length varies in [1, 2 × shape bytes]
  uint64_t seed = 0;
};

/// Writes `spec.num_samples` samples with fields "data" and "label" (i64, = the sample index,
/// which lets tests check exactly-once delivery). Contents are a pure function of (seed, index):
/// synthetic_byte(seed, index, j) is byte j of sample index's data.
void write_synthetic(const std::string& out, const SyntheticSpec& spec,
                     const WriterOptions& options = {}, const Progress& progress = {});

/// Options of the image importers (import_imagefolder, import_tar).
struct ImageImportOptions {
  /// > 0: JPEGs whose longer side exceeds it are decoded, shrunk (area filter) so the longer side
  /// is max_side, and re-encoded at `quality` (as FFCV's max_resolution). 0: bytes as they are.
  uint32_t max_side = 0;
  int quality = 90;  ///< JPEG quality of re-encoded images, 1..100
  /// false: the first unreadable file fails the import, naming it (after all are checked, so the
  /// message counts the others). true: unreadable files are left out and listed in the result.
  bool skip_errors = false;
  unsigned num_threads = 0;  ///< reading/validating threads; 0 = every core
};

/// What an image import did.
struct ImageImportResult {
  uint64_t written = 0;              ///< samples in the output file
  std::vector<std::string> skipped;  ///< "path: cause" of every file left out
  std::vector<std::string> classes;  ///< imagefolder: label i is classes[i]
};

/// The extensions torchvision's ImageFolder accepts (lower case, with the dot). Files with one
/// of them are samples; only JPEG and PNG contents pass validation, the rest are reported.
const std::vector<std::string>& image_extensions();

/// Imports an ImageFolder tree (DIR/CLASS/**/FILE) into fields "image" (bytes, the encoded file)
/// and "label" (i64). Classes and sample order follow torchvision.datasets.ImageFolder exactly
/// (every subfolder is a class, sorted by name; files sorted by folder, then name). The class
/// list is stored in the file's metadata as {"classes": [...], "source": "imagefolder"}.
/// Files are read and validated (JPEG/PNG header) on a thread pool; the writer stays sequential
/// and ordered, so the output is deterministic. The file is written atomically. Throws
/// InvalidArgument/IoError/FormatError naming the folder or file.
ImageImportResult import_imagefolder(const std::string& dir, const std::string& out,
                                     const ImageImportOptions& options = {},
                                     const WriterOptions& writer_options = {},
                                     const Progress& progress = {});

/// Imports WebDataset tar shards: members KEY.jpg|jpeg|png (the image) and KEY.cls (a decimal
/// label), grouped by KEY (the member path up to the first dot of its file name). Samples are in
/// shard order, then first appearance. A key without an image or without a label is an error
/// under the same rules as an unreadable file. Metadata: {"source": "tar", "shards": [...]}.
ImageImportResult import_tar(const std::vector<std::string>& shards, const std::string& out,
                             const ImageImportOptions& options = {},
                             const WriterOptions& writer_options = {},
                             const Progress& progress = {});

/// Byte `j` of synthetic sample `index`'s "data" field.
uint8_t synthetic_byte(uint64_t seed, uint64_t index, uint64_t j);
/// Fills `dst` with the first `length` bytes of synthetic sample `index`'s data.
void synthetic_fill(uint64_t seed, uint64_t index, uint8_t* dst, uint64_t length);
/// Length in bytes of synthetic sample `index`'s "data" field.
uint64_t synthetic_length(const SyntheticSpec& spec, uint64_t index);

}  // namespace ferry
