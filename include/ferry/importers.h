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

/// Byte `j` of synthetic sample `index`'s "data" field.
uint8_t synthetic_byte(uint64_t seed, uint64_t index, uint64_t j);
/// Fills `dst` with the first `length` bytes of synthetic sample `index`'s data.
void synthetic_fill(uint64_t seed, uint64_t index, uint8_t* dst, uint64_t length);
/// Length in bytes of synthetic sample `index`'s "data" field.
uint64_t synthetic_length(const SyntheticSpec& spec, uint64_t index);

}  // namespace ferry
