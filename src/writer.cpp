#include "ferry/writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "ferry/error.h"
#include "util.h"

namespace ferry {

using detail::align_up;

namespace {

void write_all(int fd, const void* data, uint64_t n, uint64_t offset, const std::string& path) {
  auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw io_error("write failed on", path, errno);
    }
    p += w;
    n -= static_cast<uint64_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

void check_options(const Schema& schema, const WriterOptions& o) {
  schema.validate();
  if (!detail::is_pow2(o.page_size) || o.page_size < kMinPageSize || o.page_size > kMaxPageSize)
    throw InvalidArgument("page_size " + std::to_string(o.page_size) +
                          ": must be a power of two between 4096 and 1 GiB");
  if (!detail::is_pow2(o.alignment) || o.alignment > kHeaderAlign)
    throw InvalidArgument("alignment " + std::to_string(o.alignment) +
                          ": must be a power of two <= 4096");
  for (const auto& f : schema.fields)
    if (f.kind == FieldKind::ndarray && dtype_size(f.dtype) > o.alignment)
      throw InvalidArgument("alignment " + std::to_string(o.alignment) +
                            " is smaller than field '" + f.name + "''s dtype size");
  std::vector<uint8_t> probe;
  for (const auto& [name, choice] : o.codecs) {
    try {
      (void)schema.index_of(name);
      codec_by_id(choice.id).encode({}, choice.level, probe);  // checks the level
    } catch (const Error& e) {
      throw InvalidArgument("compression of field '" + name + "': " + e.what());
    }
  }
}

}  // namespace

struct Writer::Impl {
  std::string path, tmp_path;
  Schema schema;
  WriterOptions opt;
  detail::Fd fd;
  uint64_t header_size = 0;
  std::vector<uint8_t> schema_block;
  std::vector<uint8_t> page;    // the page being filled (page_size bytes)
  uint64_t cursor = 0;          // bytes used in `page`
  bool page_open = false;       // `page` holds at least one sample
  std::vector<PageInfo> pages;  // one entry per flushed page
  std::vector<uint8_t> index;   // encoded index entries
  uint64_t num_samples = 0;
  std::vector<uint64_t> offsets;  // scratch: field offsets of the sample being appended
  bool closed = false;
  uint32_t version = kFormatVersion1;
  std::vector<const Codec*> codecs;           // per field; nullptr: stored as is
  std::vector<int> levels;                    // per field
  std::vector<std::vector<uint8_t>> encoded;  // scratch: compressed value per field
  std::vector<FieldData> stored;              // scratch: the bytes actually written per field
  std::vector<uint64_t> decoded;              // scratch: decoded length per field

  uint64_t page_file_offset(uint64_t p) const { return header_size + p * opt.page_size; }

  void flush_page(const uint8_t* data, uint64_t used) {
    const uint64_t p = pages.size();
    // Pages are written at full size so page p always sits at header_size + p * page_size;
    // the zero tail compresses away on filesystems that care and keeps offsets trivial.
    write_all(fd.get(), data, opt.page_size, page_file_offset(p), tmp_path);
    pages.push_back({used, XXH64(data, used, 0)});
  }

  void close_page() {
    if (!page_open) return;
    std::memset(page.data() + cursor, 0, opt.page_size - cursor);
    flush_page(page.data(), cursor);
    cursor = 0;
    page_open = false;
  }

  // Lays the fields out from `start` (each aligned); returns the end offset.
  uint64_t layout_from(uint64_t start, std::span<const FieldData> fields) {
    uint64_t pos = start;
    for (size_t i = 0; i < fields.size(); ++i) {
      if (!codecs[i]) pos = align_up(pos, opt.alignment);  // compressed fields are unaligned
      offsets[i] = pos;
      pos += fields[i].size;
    }
    return pos;
  }

  void record_index(uint64_t page_no, std::span<const FieldData> fields) {
    const size_t old = index.size();
    index.resize(old + index_entry_size(fields.size(), version));
    uint8_t* e = index.data() + old;
    std::memcpy(e, &page_no, 8);
    const uint64_t stride = version >= 2 ? 24 : 16;
    for (size_t i = 0; i < fields.size(); ++i) {
      const FieldLoc loc{offsets[i], fields[i].size};
      std::memcpy(e + 8 + stride * i, &loc, 16);
      if (version >= 2) std::memcpy(e + 8 + stride * i + 16, &decoded[i], 8);
    }
    ++num_samples;
  }

  void append(std::span<const FieldData> fields) {
    if (closed) throw InvalidArgument("append on closed writer for '" + path + "'");
    check_fields(fields);
    place(encode(fields));
  }

  // Compresses the fields that have a codec; returns the bytes to store, field by field.
  std::span<const FieldData> encode(std::span<const FieldData> fields) {
    if (version < 2) return fields;
    for (size_t i = 0; i < fields.size(); ++i) {
      decoded[i] = fields[i].size;
      if (!codecs[i]) {
        stored[i] = fields[i];
        continue;
      }
      if (fields[i].size > kMaxDecodedLength)
        throw InvalidArgument(
            "append to '" + path + "': field '" + schema.fields[i].name + "' has " +
            std::to_string(fields[i].size) + " bytes; a compressed value holds at most " +
            std::to_string(kMaxDecodedLength) + " (sample " + std::to_string(num_samples) + ")");
      encoded[i].clear();
      codecs[i]->encode({static_cast<const uint8_t*>(fields[i].data), fields[i].size}, levels[i],
                        encoded[i]);
      stored[i] = {encoded[i].data(), encoded[i].size()};
    }
    return stored;
  }

  void place(std::span<const FieldData> fields) {
    uint64_t end = layout_from(align_up(cursor, opt.alignment), fields);
    if (end <= opt.page_size) {
      copy_fields(page.data(), fields);
      record_index(pages.size(), fields);
      cursor = end;
      page_open = true;
      return;
    }
    close_page();
    end = layout_from(0, fields);
    if (end <= opt.page_size) return place(fields);
    append_large(fields, end);
  }

  // A sample larger than a page starts on a fresh page and owns every page it touches.
  void append_large(std::span<const FieldData> fields, uint64_t end) {
    const uint64_t npages = (end + opt.page_size - 1) / opt.page_size;
    std::vector<uint8_t> buf(npages * opt.page_size, 0);
    copy_fields(buf.data(), fields);
    record_index(pages.size(), fields);
    for (uint64_t i = 0; i < npages; ++i) {
      const uint64_t used = std::min(opt.page_size, end - i * opt.page_size);
      flush_page(buf.data() + i * opt.page_size, used);
    }
  }

  void copy_fields(uint8_t* base, std::span<const FieldData> fields) {
    for (size_t i = 0; i < fields.size(); ++i)
      if (fields[i].size) std::memcpy(base + offsets[i], fields[i].data, fields[i].size);
  }

  void check_fields(std::span<const FieldData> fields) {
    if (fields.size() != schema.fields.size())
      throw InvalidArgument("append to '" + path + "': got " + std::to_string(fields.size()) +
                            " fields, schema has " + std::to_string(schema.fields.size()));
    for (size_t i = 0; i < fields.size(); ++i) {
      const FieldSpec& f = schema.fields[i];
      if (f.kind == FieldKind::ndarray && fields[i].size != f.fixed_bytes())
        throw InvalidArgument(
            "append to '" + path + "': field '" + f.name + "' needs " +
            std::to_string(f.fixed_bytes()) + " bytes (" + std::string(dtype_name(f.dtype)) +
            " × " + std::to_string(f.num_elements()) + "), got " + std::to_string(fields[i].size) +
            " (sample " + std::to_string(num_samples) + ")");
      if (fields[i].size && !fields[i].data)
        throw InvalidArgument("append to '" + path + "': field '" + f.name + "' has no data");
    }
  }

  void finish() {
    // The last page is written only up to its used bytes rounded to 4 KiB (the file ends soon
    // after), which O_DIRECT readers rely on.
    if (page_open) {
      const uint64_t p = pages.size();
      const uint64_t len = align_up(cursor, kHeaderAlign);
      std::memset(page.data() + cursor, 0, len - cursor);
      write_all(fd.get(), page.data(), len, page_file_offset(p), tmp_path);
      pages.push_back({cursor, XXH64(page.data(), cursor, 0)});
      page_open = false;
    }
    const uint64_t data_end = pages.empty() ? header_size
                                            : page_file_offset(pages.size() - 1) +
                                                  align_up(pages.back().used, kHeaderAlign);
    HeaderPrefix h{};
    std::memcpy(h.magic, kMagic, 8);
    h.version = version;
    h.header_size = header_size;
    h.page_size = opt.page_size;
    h.alignment = opt.alignment;
    h.num_fields = static_cast<uint32_t>(schema.fields.size());
    h.num_samples = num_samples;
    h.num_pages = pages.size();
    h.data_offset = header_size;
    h.page_table_offset = data_end;
    const uint64_t table_bytes = pages.size() * sizeof(PageInfo);
    h.index_offset = align_up(data_end + table_bytes, 64);
    h.index_size = index.size();
    h.footer_offset = align_up(h.index_offset + h.index_size, 64);
    h.schema_size = schema_block.size();

    write_all(fd.get(), pages.data(), table_bytes, h.page_table_offset, tmp_path);
    write_all(fd.get(), index.data(), index.size(), h.index_offset, tmp_path);
    Footer footer{};
    footer.page_table_xxh64 = XXH64(pages.data(), table_bytes, 0);
    footer.index_xxh64 = XXH64(index.data(), index.size(), 0);
    footer.file_size = h.footer_offset + sizeof(Footer);
    std::memcpy(footer.magic, kEndMagic, 8);
    // Zero the gaps left by alignment so the file's bytes are fully determined.
    static const uint8_t zeros[64] = {};
    write_all(fd.get(), zeros, h.index_offset - (data_end + table_bytes), data_end + table_bytes,
              tmp_path);
    write_all(fd.get(), zeros, h.footer_offset - (h.index_offset + h.index_size),
              h.index_offset + h.index_size, tmp_path);
    write_all(fd.get(), &footer, sizeof footer, h.footer_offset, tmp_path);
    if (::ftruncate(fd.get(), static_cast<off_t>(footer.file_size)) != 0)
      throw io_error("cannot size", tmp_path, errno);

    std::vector<uint8_t> header(header_size, 0);
    std::memcpy(header.data(), &h, sizeof h);
    std::memcpy(header.data() + sizeof h, schema_block.data(), schema_block.size());
    h.header_xxh64 = XXH64(header.data(), sizeof h + schema_block.size(), 0);
    std::memcpy(header.data(), &h, sizeof h);
    if (!opt.metadata.empty()) {  // in the padding: readers that predate it ignore it
      uint8_t* m = header.data() + sizeof h + schema_block.size();
      const uint64_t len = opt.metadata.size();
      const uint64_t sum = XXH64(opt.metadata.data(), len, 0);
      std::memcpy(m, kMetadataMagic, 8);
      std::memcpy(m + 8, &len, 8);
      std::memcpy(m + 16, &sum, 8);
      std::memcpy(m + 24, opt.metadata.data(), len);
    }
    write_all(fd.get(), header.data(), header.size(), 0, tmp_path);

    if (opt.fsync && ::fsync(fd.get()) != 0) throw io_error("fsync failed on", tmp_path, errno);
    fd.reset();
    if (::rename(tmp_path.c_str(), path.c_str()) != 0)
      throw io_error("cannot rename into", path, errno);
    closed = true;
    if (opt.fsync) sync_folder();
  }

  void sync_folder() {
    const auto dir = std::filesystem::path(path).parent_path();
    detail::Fd d(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d) ::fsync(d.get());  // best effort: the rename is already visible
  }
};

Writer::Writer(const std::string& path, Schema schema, const WriterOptions& options)
    : impl_(new Impl) {
  check_options(schema, options);
  Impl& w = *impl_;
  w.path = path;
  w.schema = std::move(schema);
  w.opt = options;
  w.codecs.assign(w.schema.fields.size(), nullptr);
  w.levels.assign(w.schema.fields.size(), 0);
  std::vector<CodecId> ids(w.schema.fields.size(), CodecId::none);
  for (const auto& [name, choice] : options.codecs) {
    const size_t i = w.schema.index_of(name);
    ids[i] = choice.id;
    w.levels[i] = choice.level;
    if (ids[i] != CodecId::none) {
      w.codecs[i] = &codec_by_id(ids[i]);
      w.version = kFormatVersion;
    }
  }
  w.encoded.resize(ids.size());
  w.stored.resize(ids.size());
  w.decoded.resize(ids.size());
  // Version 1 has no codec ids: an uncompressed file is byte-identical to earlier writers'.
  w.schema_block = encode_schema(
      w.schema, w.version >= 2 ? std::span<const CodecId>(ids) : std::span<const CodecId>());
  const uint64_t meta_bytes = options.metadata.empty() ? 0 : 24 + options.metadata.size();
  w.header_size = align_up(sizeof(HeaderPrefix) + w.schema_block.size() + meta_bytes, kHeaderAlign);
  w.offsets.resize(w.schema.fields.size());
  const auto target = std::filesystem::path(path);
  const auto dir = target.parent_path();
  std::string tmpl = (dir / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) throw io_error("cannot create a temporary file for", path, errno);
  w.fd.reset(fd);
  w.tmp_path = tmpl;
  ::fchmod(fd, 0644);
  w.page.assign(options.page_size, 0);
}

Writer::~Writer() { abort(); }
Writer::Writer(Writer&&) noexcept = default;
Writer& Writer::operator=(Writer&& o) noexcept {
  if (this != &o) {
    abort();
    impl_ = std::move(o.impl_);
  }
  return *this;
}

void Writer::append(std::span<const FieldData> fields) { impl_->append(fields); }

void Writer::append_batch(std::span<const Column> columns, uint64_t n) {
  const Schema& s = impl_->schema;
  if (columns.size() != s.fields.size())
    throw InvalidArgument("append_batch to '" + impl_->path + "': got " +
                          std::to_string(columns.size()) + " columns, schema has " +
                          std::to_string(s.fields.size()));
  std::vector<FieldData> row(columns.size());
  for (uint64_t i = 0; i < n; ++i) {
    for (size_t f = 0; f < columns.size(); ++f) {
      const auto* base = static_cast<const uint8_t*>(columns[f].data);
      if (s.fields[f].kind == FieldKind::ndarray) {
        const uint64_t sz = s.fields[f].fixed_bytes();
        row[f] = {base + i * sz, sz};
      } else {
        const uint64_t* off = columns[f].offsets;
        if (!off || off[i + 1] < off[i])
          throw InvalidArgument("append_batch: bytes field '" + s.fields[f].name +
                                "' needs non-decreasing offsets");
        row[f] = {base + off[i], off[i + 1] - off[i]};
      }
    }
    impl_->append(row);
  }
}

void Writer::close() {
  if (!impl_ || impl_->closed) return;
  try {
    impl_->finish();
  } catch (...) {
    abort();
    throw;
  }
}

void Writer::abort() noexcept {
  if (!impl_ || impl_->closed) return;
  impl_->fd.reset();
  if (!impl_->tmp_path.empty()) ::unlink(impl_->tmp_path.c_str());
  impl_->closed = true;
}

uint64_t Writer::num_samples() const { return impl_->num_samples; }
const Schema& Writer::schema() const { return impl_->schema; }
const std::string& Writer::path() const { return impl_->path; }

std::map<std::string, CodecChoice> parse_compress_specs(std::span<const std::string> specs) {
  std::map<std::string, CodecChoice> out;
  for (const std::string& spec : specs) {
    const size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0)
      throw InvalidArgument("compression spec '" + spec +
                            "': expected FIELD=CODEC[:LEVEL], e.g. image=zstd:3");
    const std::string field = spec.substr(0, eq);
    if (out.count(field))
      throw InvalidArgument("compression spec '" + spec + "': field '" + field +
                            "' is given more than once");
    try {
      out[field] = CodecChoice::parse(std::string_view(spec).substr(eq + 1));
    } catch (const InvalidArgument& e) {
      throw InvalidArgument("compression spec '" + spec + "': " + e.what());
    }
  }
  return out;
}

void write_file(const std::string& path, const Schema& schema, std::span<const Column> columns,
                uint64_t n, const WriterOptions& options) {
  Writer w(path, schema, options);
  w.append_batch(columns, n);
  w.close();
}

}  // namespace ferry
