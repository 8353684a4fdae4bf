#include "ferry/importers.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "ferry/error.h"
#include "util.h"

namespace ferry {

namespace {

/// gzread handles both gzip and raw files transparently.
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path), f_(gzopen(path.c_str(), "rb")) {
    if (!f_) throw io_error("cannot open", path, errno ? errno : ENOENT);
    gzbuffer(f_, 1 << 20);
  }
  ~GzFile() { gzclose(f_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  void read_exact(void* dst, uint64_t n, std::string_view what) {
    auto* p = static_cast<uint8_t*>(dst);
    while (n > 0) {
      const unsigned chunk = static_cast<unsigned>(std::min<uint64_t>(n, 1u << 30));
      const int got = gzread(f_, p, chunk);
      if (got <= 0) {
        int zerr = 0;
        const char* msg = gzerror(f_, &zerr);
        throw FormatError("IDX file '" + path_ + "': " + std::string(what) + ": " +
                          (got == 0 ? "unexpected end of file" : msg));
      }
      p += got;
      n -= static_cast<uint64_t>(got);
    }
  }

 private:
  std::string path_;
  gzFile f_;
};

DType idx_dtype(const std::string& path, uint8_t code) {
  switch (code) {
    case 0x08:
      return DType::u8;
    case 0x09:
      return DType::i8;
    case 0x0B:
      return DType::i16;
    case 0x0C:
      return DType::i32;
    case 0x0D:
      return DType::f32;
    case 0x0E:
      return DType::f64;
  }
  throw FormatError("IDX file '" + path + "': unknown element type code " + std::to_string(code));
}

IdxInfo read_header(GzFile& f, const std::string& path) {
  uint8_t magic[4];
  f.read_exact(magic, 4, "header");
  if (magic[0] != 0 || magic[1] != 0 || magic[3] == 0 || magic[3] > kMaxNdim + 1)
    throw FormatError("IDX file '" + path + "': bad magic (not an IDX file)");
  IdxInfo info{idx_dtype(path, magic[2]), {}};
  for (int i = 0; i < magic[3]; ++i) {
    uint8_t be[4];
    f.read_exact(be, 4, "dimensions");
    info.dims.push_back((uint64_t{be[0]} << 24) | (uint64_t{be[1]} << 16) | (uint64_t{be[2]} << 8) |
                        be[3]);
  }
  for (size_t i = 1; i < info.dims.size(); ++i)
    if (info.dims[i] == 0) throw FormatError("IDX file '" + path + "': zero dimension");
  return info;
}

void big_to_little(uint8_t* p, uint64_t bytes, size_t elem) {
  if (elem == 1) return;
  for (uint64_t i = 0; i < bytes; i += elem) std::reverse(p + i, p + i + elem);
}

}  // namespace

IdxInfo read_idx_info(const std::string& path) {
  GzFile f(path);
  return read_header(f, path);
}

uint64_t import_idx(const std::string& images, const std::string& labels, const std::string& out,
                    const WriterOptions& options, const Progress& progress) {
  GzFile img(images);
  const IdxInfo ii = read_header(img, images);
  std::unique_ptr<GzFile> lab;
  IdxInfo li{};
  if (!labels.empty()) {
    lab = std::make_unique<GzFile>(labels);
    li = read_header(*lab, labels);
    if (li.dims.size() != 1 || li.dims[0] != ii.dims[0])
      throw FormatError("IDX labels '" + labels + "' have " + std::to_string(li.dims[0]) +
                        " entries for " + std::to_string(ii.dims[0]) + " images in '" + images +
                        "'");
  }
  Schema schema;
  schema.fields.push_back(FieldSpec::array(
      "image", ii.dtype, std::vector<uint64_t>(ii.dims.begin() + 1, ii.dims.end())));
  if (lab) schema.fields.push_back(FieldSpec::scalar("label", li.dtype));
  Writer w(out, schema, options);
  const uint64_t n = ii.dims[0];
  const size_t ie = dtype_size(ii.dtype), le = lab ? dtype_size(li.dtype) : 0;
  std::vector<uint8_t> ibuf(schema.fields[0].fixed_bytes()), lbuf(8);
  for (uint64_t s = 0; s < n; ++s) {
    img.read_exact(ibuf.data(), ibuf.size(), "sample " + std::to_string(s));
    big_to_little(ibuf.data(), ibuf.size(), ie);
    FieldData row[2] = {{ibuf.data(), ibuf.size()}, {lbuf.data(), le}};
    if (lab) {
      lab->read_exact(lbuf.data(), le, "label " + std::to_string(s));
      big_to_little(lbuf.data(), le, le);
    }
    w.append(std::span(row, lab ? 2 : 1));
    if (progress && (s % 4096 == 4095 || s + 1 == n)) progress(s + 1, n);
  }
  w.close();
  return n;
}

namespace {
uint64_t synthetic_word(uint64_t sample_key, uint64_t w) {
  uint64_t x = sample_key + w * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 32);
}
}  // namespace

uint8_t synthetic_byte(uint64_t seed, uint64_t index, uint64_t j) {
  return static_cast<uint8_t>(synthetic_word(detail::mix_seed(seed, index), j / 8) >>
                              (8 * (j % 8)));
}

void synthetic_fill(uint64_t seed, uint64_t index, uint8_t* dst, uint64_t length) {
  const uint64_t key = detail::mix_seed(seed, index);
  for (uint64_t j = 0; j < length; j += 8) {
    const uint64_t word = synthetic_word(key, j / 8);
    std::memcpy(dst + j, &word, std::min<uint64_t>(8, length - j));  // little-endian byte order
  }
}

uint64_t synthetic_length(const SyntheticSpec& spec, uint64_t index) {
  uint64_t bytes = dtype_size(spec.dtype);
  for (uint64_t d : spec.shape) bytes *= d;
  if (!spec.variable) return bytes;
  return 1 + detail::mix_seed(spec.seed ^ 0x5A5A, index) % (2 * bytes);
}

void write_synthetic(const std::string& out, const SyntheticSpec& spec,
                     const WriterOptions& options, const Progress& progress) {
  Schema schema;
  schema.fields.push_back(spec.variable ? FieldSpec::bytes("data")
                                        : FieldSpec::array("data", spec.dtype, spec.shape));
  schema.fields.push_back(FieldSpec::scalar("label", DType::i64));
  Writer w(out, schema, options);
  std::vector<uint8_t> buf;
  for (uint64_t s = 0; s < spec.num_samples; ++s) {
    buf.resize(synthetic_length(spec, s));
    synthetic_fill(spec.seed, s, buf.data(), buf.size());
    const int64_t label = static_cast<int64_t>(s);
    const FieldData row[2] = {{buf.data(), buf.size()}, {&label, 8}};
    w.append(row);
    if (progress && (s % 4096 == 4095 || s + 1 == spec.num_samples))
      progress(s + 1, spec.num_samples);
  }
  w.close();
}

}  // namespace ferry
