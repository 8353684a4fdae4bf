// ferry: the command-line tool.
//
//   ferry write synthetic OUT --samples N [--shape 64] ...   make a synthetic file
//     (every write subcommand: --compress FIELD=CODEC[:LEVEL], repeatable: lz4, zstd, none)
//   ferry write idx OUT --images F [--labels F] ...          convert an IDX (MNIST-family) set
//   ferry inspect FILE [--verify] [--json]                   describe a file, check checksums
//   ferry bench FILE [...]                                   synchronous loop vs the Loader
//
// Exit status: 0 success; 1 an error (one line on stderr: the exception's text) or a corrupt
// file; 2 a usage error. Progress bars appear only on terminals, so pipes and logs stay clean.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "ferry/codec.h"
#include "ferry/error.h"
#include "ferry/format.h"
#include "ferry/importers.h"
#include "ferry/loader.h"
#include "ferry/metrics.h"
#include "ferry/order.h"
#include "ferry/reader.h"
#include "ferry/source.h"
#include "ferry/writer.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---------------------------------------------------------------------------------------------
// Parsing and formatting of numbers.

/// "4096", "64K", "2MiB", "1.5GiB": suffixes K, M, G, T (optionally followed by "iB" or "B")
/// are powers of 1024 — page sizes and budgets are always binary, so "MB" is read as MiB
/// rather than rejected.
uint64_t parse_size(std::string_view text) {
  const std::string original(text);
  double value = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  const auto [stop, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || value < 0)
    throw ferry::InvalidArgument("size '" + original + "': expected a number with an optional " +
                                 "suffix (4096, 64K, 2MiB, 1GiB)");
  std::string suffix(stop, end);
  for (char& c : suffix) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::map<std::string, double> kUnits = {
      {"", 1.0},       {"b", 1.0},     {"k", 0x1p10},   {"kb", 0x1p10},  {"kib", 0x1p10},
      {"m", 0x1p20},   {"mb", 0x1p20}, {"mib", 0x1p20}, {"g", 0x1p30},   {"gb", 0x1p30},
      {"gib", 0x1p30}, {"t", 0x1p40},  {"tb", 0x1p40},  {"tib", 0x1p40},
  };
  const auto unit = kUnits.find(suffix);
  if (unit == kUnits.end())
    throw ferry::InvalidArgument("size '" + original + "': unknown suffix '" +
                                 std::string(stop, end) + "' (use K, M, G or T, e.g. 2MiB)");
  const double bytes = value * unit->second;
  if (bytes >= 0x1p63 || bytes != std::floor(bytes))
    throw ferry::InvalidArgument("size '" + original + "' is not a whole number of bytes");
  return static_cast<uint64_t>(bytes);
}

/// "64", "3x32x32" or "3,32,32" (an empty string or "scalar" is a 0-d shape).
std::vector<uint64_t> parse_shape(std::string_view text) {
  std::vector<uint64_t> shape;
  if (text.empty() || text == "scalar") return shape;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t sep = text.find_first_of("x,", pos);
    const std::string_view part = text.substr(pos, sep == std::string_view::npos ? sep : sep - pos);
    uint64_t d = 0;
    const auto [stop, ec] = std::from_chars(part.data(), part.data() + part.size(), d);
    if (part.empty() || ec != std::errc() || stop != part.data() + part.size() || d == 0)
      throw ferry::InvalidArgument("shape '" + std::string(text) +
                                   "': expected positive dimensions like 64 or 3x32x32");
    shape.push_back(d);
    if (sep == std::string_view::npos) break;
    pos = sep + 1;
  }
  return shape;
}

/// Wraps a throwing parser as a CLI11 check, so a bad value is a usage error (exit 2) that
/// names the option, not a runtime error.
template <typename Fn>
CLI::Validator checked(Fn parse, std::string name) {
  return CLI::Validator(
      [parse](std::string& value) -> std::string {
        try {
          parse(value);
          return {};
        } catch (const std::exception& e) {
          return e.what();
        }
      },
      std::move(name));
}

/// Like checked(), but replaces the text with the parsed byte count before CLI11 converts it.
CLI::Validator size_transform() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        try {
          value = std::to_string(parse_size(value));
          return {};
        } catch (const std::exception& e) {
          return e.what();
        }
      },
      "SIZE");
}

/// 1234567 -> "1,234,567".
std::string with_commas(uint64_t v) {
  std::string digits = std::to_string(v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

/// 2097152 -> "2.0 MiB".
std::string human_bytes(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, kUnits[u]);
}

/// 1234567 -> "1.23M": short rates for the progress bar.
std::string human_count(double v) {
  if (v >= 1e9) return fmt::format("{:.2f}G", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.2f}M", v / 1e6);
  if (v >= 1e4) return fmt::format("{:.1f}k", v / 1e3);
  return fmt::format("{:.0f}", v);
}

// ---------------------------------------------------------------------------------------------
// JSON output: small enough to write by hand, and keeps the tool free of another dependency.

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        else
          out += c;
    }
  }
  return out + "\"";
}

/// JSON has no inf or nan: those become null.
std::string json_number(double v) { return std::isfinite(v) ? fmt::format("{}", v) : "null"; }

// ---------------------------------------------------------------------------------------------
// Progress bar.

/// One line redrawn in place with '\r'. Silent unless `out` is a terminal, so pipes and log
/// files never collect carriage returns; redraws at most ten times a second so a per-item call
/// costs nothing.
class ProgressBar {
 public:
  ProgressBar(std::FILE* out, std::string label, std::string unit)
      : out_(out),
        label_(std::move(label)),
        unit_(std::move(unit)),
        enabled_(::isatty(::fileno(out)) == 1),
        start_(Clock::now()) {}
  ~ProgressBar() { finish(); }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(uint64_t done, uint64_t total) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (drawn_ && done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    drawn_ = true;
    constexpr int kWidth = 30;
    const double frac =
        total ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total)) : 1.0;
    const int filled = static_cast<int>(frac * kWidth);
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    // "\x1b[K" clears what a longer previous line left behind.
    fmt::print(out_, "\r{} [{}{}] {:3.0f}% {}/{} {} {}/s\x1b[K", label_, std::string(filled, '#'),
               std::string(kWidth - filled, '-'), frac * 100, with_commas(done), with_commas(total),
               human_count(rate), unit_);
    std::fflush(out_);
  }

  /// Erases the bar so the results print on a clean line.
  void finish() {
    if (!drawn_) return;
    fmt::print(out_, "\r\x1b[K");
    std::fflush(out_);
    drawn_ = false;
  }

 private:
  std::FILE* out_;
  std::string label_, unit_;
  bool enabled_;
  bool drawn_ = false;
  Clock::time_point start_, last_;
};

// ---------------------------------------------------------------------------------------------
// ferry write

struct WriteArgs {
  std::string out;
  uint64_t page_size = ferry::kDefaultPageSize;
  uint32_t alignment = ferry::kDefaultAlignment;
  bool no_fsync = false;
  // synthetic
  uint64_t samples = 0;
  std::string shape = "64";
  std::string dtype = "u8";
  bool variable = false;
  uint64_t seed = 0;
  // idx
  std::string images, labels;
  std::vector<std::string> compress;  // FIELD=CODEC[:LEVEL]
  // imagefolder / tar
  std::string folder;
  std::vector<std::string> tar_args;  // SHARDS... OUT
  uint32_t max_side = 0;
  int quality = 90;
  std::string on_error = "raise";
  std::string error_list;
  unsigned threads = 0;

  ferry::WriterOptions writer_options() const {
    ferry::WriterOptions o;
    o.page_size = page_size;
    o.alignment = alignment;
    o.fsync = !no_fsync;
    o.codecs = ferry::parse_compress_specs(compress);
    return o;
  }
};

void add_writer_options(CLI::App* cmd, WriteArgs& a, bool with_out = true) {
  if (with_out)
    cmd->add_option("OUT", a.out, "Output .ferry file (written atomically)")->required();
  cmd->add_option("--page-size", a.page_size,
                  "Page size: a power of two in [4KiB, 1GiB]; K/M/G suffixes are powers of 1024")
      ->transform(size_transform())
      ->default_str("2MiB");
  cmd->add_option("--alignment", a.alignment, "Alignment of every field inside a page")
      ->capture_default_str();
  cmd->add_flag("--no-fsync", a.no_fsync, "Skip fsync on close (faster, not durable)");
  cmd->add_option("--compress", a.compress,
                  "Compress a field: FIELD=CODEC[:LEVEL] with CODEC lz4 (level 0 fast, 1-12 HC), "
                  "zstd (level -7..22, 0 = 3) or none; repeatable")
      ->allow_extra_args(false)
      ->check([](const std::string& spec) {
        try {
          (void)ferry::parse_compress_specs(std::span<const std::string>(&spec, 1));
          return std::string();
        } catch (const ferry::InvalidArgument& e) {
          return std::string(e.what());
        }
      });
}

/// One summary line on stdout, read back from the finished file so it reports what is on disk.
void print_written(const std::string& path, double seconds) {
  const auto reader = ferry::Reader::open(path);
  const ferry::Layout& L = reader->layout();
  fmt::print("wrote {}: {} samples, {} page{} of {}, {} in {:.2f} s ({}/s)\n", path,
             with_commas(L.num_samples()), with_commas(L.num_pages()),
             L.num_pages() == 1 ? "" : "s", human_bytes(static_cast<double>(L.page_size())),
             human_bytes(static_cast<double>(L.file_size())), seconds,
             human_bytes(seconds > 0 ? static_cast<double>(L.file_size()) / seconds : 0));
}

int run_write_synthetic(const WriteArgs& a) {
  ferry::SyntheticSpec spec;
  spec.num_samples = a.samples;
  spec.shape = parse_shape(a.shape);
  spec.dtype = ferry::parse_dtype(a.dtype);
  spec.variable = a.variable;
  spec.seed = a.seed;
  const auto t0 = Clock::now();
  {
    ProgressBar bar(stderr, "write", "samples");
    ferry::write_synthetic(a.out, spec, a.writer_options(),
                           [&](uint64_t done, uint64_t total) { bar.update(done, total); });
  }
  print_written(a.out, seconds_since(t0));
  return 0;
}

void add_image_options(CLI::App* cmd, WriteArgs& a) {
  cmd->add_option("--max-side", a.max_side,
                  "Re-encode JPEGs whose longer side exceeds N to N (area filter), once");
  cmd->add_option("--quality", a.quality, "JPEG quality of re-encoded images")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_option("--on-error", a.on_error,
                  "Unreadable files: raise (fail naming them) or skip (leave out, list them)")
      ->check(CLI::IsMember({"raise", "skip"}))
      ->capture_default_str();
  cmd->add_option("--error-list", a.error_list,
                  "With --on-error skip: write the skipped files, one per line, here");
  cmd->add_option("--threads", a.threads, "Reading threads (0 = every core)")
      ->capture_default_str();
}

int run_write_images(WriteArgs a, bool tar) {
  ferry::ImageImportOptions o;
  o.max_side = a.max_side;
  o.quality = a.quality;
  o.skip_errors = a.on_error == "skip";
  o.num_threads = a.threads;
  const auto t0 = Clock::now();
  ferry::ImageImportResult r;
  {
    ProgressBar bar(stderr, "import", "images");
    auto progress = [&](uint64_t done, uint64_t total) { bar.update(done, total); };
    if (tar) {
      a.out = a.tar_args.back();
      a.tar_args.pop_back();
      r = ferry::import_tar(a.tar_args, a.out, o, a.writer_options(), progress);
    } else {
      r = ferry::import_imagefolder(a.folder, a.out, o, a.writer_options(), progress);
    }
  }
  print_written(a.out, seconds_since(t0));
  if (!r.classes.empty()) fmt::print("{} classes\n", r.classes.size());
  if (!r.skipped.empty()) {
    fmt::print(stderr, "skipped {} unreadable input{}{}\n", r.skipped.size(),
               r.skipped.size() == 1 ? "" : "s", a.error_list.empty() ? ":" : "");
    std::FILE* list = a.error_list.empty() ? nullptr : std::fopen(a.error_list.c_str(), "w");
    if (!a.error_list.empty() && !list)
      throw ferry::IoError("cannot write the error list '" + a.error_list + "'", errno);
    for (const auto& s : r.skipped) fmt::print(list ? list : stderr, "  {}\n", s);
    if (list) std::fclose(list);
  }
  return 0;
}

/// `ferry preview` is the Python module ferry.preview (PIL draws the grid): exec it with the
/// same arguments, so both spellings behave identically. FERRY_PYTHON overrides the interpreter.
int run_preview(const std::vector<std::string>& args) {
  const char* env = std::getenv("FERRY_PYTHON");
  const std::string python = env && *env ? env : "python3";
  std::vector<std::string> argv_s = {python, "-m", "ferry.preview"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv_c;
  for (auto& s : argv_s) argv_c.push_back(s.data());
  argv_c.push_back(nullptr);
  ::execvp(python.c_str(), argv_c.data());
  throw ferry::IoError("ferry preview: cannot run '" + python + " -m ferry.preview'", errno);
}

int run_write_idx(const WriteArgs& a) {
  const auto t0 = Clock::now();
  {
    ProgressBar bar(stderr, "import", "samples");
    ferry::import_idx(a.images, a.labels, a.out, a.writer_options(),
                      [&](uint64_t done, uint64_t total) { bar.update(done, total); });
  }
  print_written(a.out, seconds_since(t0));
  return 0;
}

// ---------------------------------------------------------------------------------------------
// ferry inspect

struct InspectArgs {
  std::string file;
  bool verify = false;
  bool json = false;
};

struct Section {
  std::string_view name;
  uint64_t offset, size;
};

struct FieldStats {
  uint64_t total = 0, min = UINT64_MAX, max = 0;  // decoded (logical) bytes
  uint64_t stored = 0;                            // bytes in the file
  /// stored / decoded: 1 for an uncompressed field, 0.25 for a 4× compression.
  double ratio() const {
    return total ? static_cast<double>(stored) / static_cast<double>(total) : 1.0;
  }
};

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int run_inspect(const InspectArgs& a) {
  const auto reader = ferry::Reader::open(a.file);
  const ferry::Layout& L = reader->layout();
  const ferry::Schema& schema = L.schema();
  // Open validated the header, so its raw offsets can be shown as they are.
  ferry::HeaderPrefix h;
  reader->source().read(0, sizeof h, &h);

  const uint64_t n = L.num_samples();
  std::vector<FieldStats> stats(schema.fields.size());
  for (uint64_t s = 0; s < n; ++s) {
    const auto locs = L.sample_fields(s);
    for (size_t f = 0; f < locs.size(); ++f) {
      const uint64_t len = L.decoded_length(s, f);
      stats[f].total += len;
      stats[f].stored += locs[f].length;
      stats[f].min = std::min(stats[f].min, len);
      stats[f].max = std::max(stats[f].max, len);
    }
  }
  uint64_t payload = 0, stored = 0, used = 0;
  for (const auto& st : stats) payload += st.total;
  for (const auto& st : stats) stored += st.stored;
  for (const auto& p : L.pages()) used += p.used;

  const std::vector<Section> sections = {
      {"header", 0, h.header_size},
      {"data", h.data_offset, h.page_table_offset - h.data_offset},
      {"page table", h.page_table_offset, h.num_pages * sizeof(ferry::PageInfo)},
      {"index", h.index_offset, h.index_size},
      {"footer", h.footer_offset, sizeof(ferry::Footer)},
  };
  uint64_t sections_total = 0;
  for (const auto& s : sections) sections_total += s.size;
  const uint64_t padding = L.file_size() - sections_total;  // alignment gaps between sections

  ferry::VerifyReport report;
  if (a.verify) {
    ProgressBar bar(stderr, "verify", "pages");
    report = reader->verify([&](uint64_t done, uint64_t total) { bar.update(done, total); });
  }
  const double nd = n ? static_cast<double>(n) : 1.0;
  const double fill =
      L.num_pages() ? static_cast<double>(used) / static_cast<double>(L.num_pages() * L.page_size())
                    : 0.0;

  if (a.json) {
    std::string fields;
    for (size_t f = 0; f < schema.fields.size(); ++f) {
      const auto& spec = schema.fields[f];
      const bool ndarray = spec.kind == ferry::FieldKind::ndarray;
      std::string shape = "[";
      for (size_t i = 0; i < spec.shape.size(); ++i)
        shape += (i ? "," : "") + std::to_string(spec.shape[i]);
      fields += fmt::format(
          "{}{{\"name\":{},\"kind\":\"{}\",\"dtype\":{},\"shape\":{},"
          "\"bytes_min\":{},\"bytes_max\":{},\"bytes_mean\":{},\"codec\":{},"
          "\"stored_bytes\":{},\"decoded_bytes\":{},\"compression_ratio\":{}}}",
          f ? "," : "", json_string(spec.name), ndarray ? "ndarray" : "bytes",
          ndarray ? json_string(ferry::dtype_name(spec.dtype)) : "null",
          ndarray ? shape + "]" : "null", n ? stats[f].min : 0, stats[f].max,
          json_number(static_cast<double>(stats[f].total) / nd),
          json_string(ferry::codec_by_id(L.field_codec(f)).name()), stats[f].stored, stats[f].total,
          json_number(stats[f].ratio()));
    }
    std::string secs;
    for (const auto& s : sections)
      secs += fmt::format("{}{}:{{\"offset\":{},\"size\":{}}}", secs.empty() ? "" : ",",
                          json_string(s.name), s.offset, s.size);
    std::string verify = "null";
    if (a.verify) {
      std::string errors;
      for (const auto& e : report.errors) errors += (errors.empty() ? "" : ",") + json_string(e);
      verify = fmt::format("{{\"ok\":{},\"pages_checked\":{},\"errors\":[{}]}}",
                           report.ok() ? "true" : "false", report.pages_checked, errors);
    }
    fmt::print(
        "{{\"file\":{},\"format_version\":{},\"file_size\":{},\"num_samples\":{},\"num_pages\":{},"
        "\"page_size\":{},\"alignment\":{},\"page_bytes_used\":{},\"page_fill\":{},"
        "\"header_xxh64\":\"{:016x}\","
        "\"schema\":[{}],\"sections\":{{{}}},\"padding_bytes\":{},\"payload_bytes\":{},"
        "\"bytes_per_sample\":{{\"payload\":{},\"on_disk\":{},\"index\":{}}},\"verify\":{}}}\n",
        json_string(a.file), h.version, L.file_size(), n, L.num_pages(), L.page_size(),
        L.alignment(), used, json_number(fill), L.header_xxh64(), fields, secs, padding, payload,
        // Per-sample figures of an empty file are null (json_number turns NaN into null).
        json_number(n ? static_cast<double>(payload) / nd : NAN),
        json_number(n ? static_cast<double>(L.file_size()) / nd : NAN),
        ferry::index_entry_size(schema.fields.size(), L.version()), verify);
  } else {
    fmt::print("{}\n", a.file);
    fmt::print("  format        ferry v{}, {} bytes ({}), header xxh64 {:016x}\n", h.version,
               with_commas(L.file_size()), human_bytes(static_cast<double>(L.file_size())),
               L.header_xxh64());
    fmt::print("  samples       {}\n", with_commas(n));
    fmt::print("  pages         {} × {}, {} used ({:.1f}% full), fields aligned to {} B\n",
               with_commas(L.num_pages()), human_bytes(static_cast<double>(L.page_size())),
               human_bytes(static_cast<double>(used)), fill * 100, L.alignment());
    fmt::print("  schema        {} field{}\n", schema.fields.size(),
               schema.fields.size() == 1 ? "" : "s");
    for (size_t f = 0; f < schema.fields.size(); ++f) {
      const auto& spec = schema.fields[f];
      const std::string codec(ferry::codec_by_id(L.field_codec(f)).name());
      if (spec.kind == ferry::FieldKind::ndarray)
        fmt::print("    {:<12} ndarray {:<4} {:<16} {} B per sample\n", spec.name,
                   ferry::dtype_name(spec.dtype), shape_text(spec.shape),
                   with_commas(spec.fixed_bytes()));
      else
        fmt::print(
            "    {:<12} bytes                         mean {:.1f} B per sample (min {}, max {})\n",
            spec.name, static_cast<double>(stats[f].total) / nd, with_commas(n ? stats[f].min : 0),
            with_commas(stats[f].max));
      // Every field's codec and stored/decoded ratio (1.000 when stored as is).
      fmt::print("    {:<12} codec {:<5} {} stored / {} decoded = ratio {:.3f}\n", "", codec,
                 with_commas(stats[f].stored), with_commas(stats[f].total), stats[f].ratio());
    }
    if (n > 0)
      fmt::print(
          "  bytes/sample  {:.1f} payload ({:.1f} stored), {:.1f} on disk (file size / samples), "
          "{} "
          "in the index\n",
          static_cast<double>(payload) / nd, static_cast<double>(stored) / nd,
          static_cast<double>(L.file_size()) / nd,
          ferry::index_entry_size(schema.fields.size(), L.version()));
    fmt::print("  sections      {:>16} {:>16}\n", "offset", "bytes");
    for (const auto& s : sections)
      fmt::print("    {:<12}{:>16} {:>16}  {}\n", s.name, with_commas(s.offset),
                 with_commas(s.size), human_bytes(static_cast<double>(s.size)));
    fmt::print("    {:<12}{:>16} {:>16}\n", "(padding)", "", with_commas(padding));
    if (a.verify) {
      if (report.ok())
        fmt::print("  verify        ok: header, page table, index and {} page checksum{} match\n",
                   with_commas(report.pages_checked), report.pages_checked == 1 ? "" : "s");
      else
        fmt::print("  verify        FAILED: {} of {} pages corrupt (details on stderr)\n",
                   with_commas(report.errors.size()), with_commas(report.pages_checked));
    }
  }
  if (!report.ok()) {
    for (const auto& e : report.errors) fmt::print(stderr, "ferry: error: {}\n", e);
    return kExitError;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// ferry bench

struct BenchArgs {
  std::string file;
  std::string backend = "auto";
  std::string order = "quasi_random";
  uint32_t threads = 0;
  uint64_t batch_size = 256;
  uint32_t prefetch = 0;
  uint64_t budget = 0;
  uint64_t epochs = 1;
  double step_ms = 0;
  uint64_t seed = 0;
  bool spin = false;
  bool json = false;
  bool no_baseline = false;
};

/// The simulated training step. Sleeping frees the core (like a GPU step: the host thread
/// waits); spinning keeps it busy (like CPU-side work competing with the loader's threads).
void simulate_step(double ms, bool spin) {
  if (ms <= 0) return;
  const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double, std::milli>(ms));
  if (spin) {
    while (Clock::now() < until) {
    }
  } else {
    std::this_thread::sleep_until(until);
  }
}

struct RunResult {
  uint64_t samples = 0;
  uint64_t batches = 0;
  double wall_seconds = 0;
  double idle_fraction = 0;  // of wall time, the consumer (the "accelerator") waited for data
  double samples_per_second() const {
    return wall_seconds > 0 ? static_cast<double>(samples) / wall_seconds : 0;
  }
};

/// Load a batch, then compute, never overlapping: what a training loop without a loader does.
/// One thread reads each sample through a Reader into per-field batch buffers, in the order the
/// Loader will use, so the two runs move the same bytes.
RunResult run_baseline(const BenchArgs& a, const ferry::LoaderOptions& opt,
                       std::FILE* progress_out) {
  RunResult r;
  const auto t0 = Clock::now();
  ferry::SourceOptions so;
  so.backend = opt.backend;
  const auto reader = ferry::Reader::open(a.file, so);
  const ferry::Layout& L = reader->layout();
  const uint64_t n = L.num_samples();
  const size_t nf = L.schema().fields.size();
  std::vector<uint64_t> sample_pages(n);
  for (uint64_t s = 0; s < n; ++s) sample_pages[s] = L.sample_page(s);
  std::vector<std::vector<uint8_t>> buffers(nf);
  for (size_t f = 0; f < nf; ++f) buffers[f].resize(L.top_k_decoded_bytes(f, opt.batch_size));
  std::vector<uint8_t> scratch;
  std::vector<uint64_t> fill(nf);
  ferry::OrderOptions oo;
  oo.kind = opt.order;
  oo.seed = opt.seed;
  oo.window_pages = opt.window_pages;

  ProgressBar bar(progress_out, "synchronous", "samples");
  double load_seconds = 0;
  for (uint64_t e = 0; e < a.epochs; ++e) {
    const std::vector<uint64_t> order = ferry::epoch_order(oo, e, sample_pages);
    for (uint64_t b = 0; b < n; b += opt.batch_size) {
      const auto tl = Clock::now();
      const uint64_t end = std::min(n, b + opt.batch_size);
      std::fill(fill.begin(), fill.end(), 0);
      for (uint64_t i = b; i < end; ++i) {
        const auto views = reader->sample(order[i], scratch);
        for (size_t f = 0; f < nf; ++f) {
          if (views[f].size) std::memcpy(buffers[f].data() + fill[f], views[f].data, views[f].size);
          fill[f] += views[f].size;
        }
      }
      load_seconds += seconds_since(tl);
      r.samples += end - b;
      ++r.batches;
      simulate_step(a.step_ms, a.spin);
      bar.update(r.samples, n * a.epochs);
    }
  }
  r.wall_seconds = seconds_since(t0);
  r.idle_fraction = r.wall_seconds > 0 ? load_seconds / r.wall_seconds : 0;
  return r;
}

/// The same work through the Loader: its workers read ahead while the consumer "computes".
RunResult run_loader(const BenchArgs& a, const ferry::LoaderOptions& opt, std::FILE* progress_out,
                     ferry::Metrics& metrics, std::string& report) {
  RunResult r;
  const auto t0 = Clock::now();  // includes start-up: the loader gets no head start
  ferry::Loader loader(a.file, opt);
  const uint64_t total = loader.samples_per_epoch() * a.epochs;
  ProgressBar bar(progress_out, "ferry Loader", "samples");
  for (uint64_t e = 0; e < a.epochs; ++e) {
    while (ferry::Batch batch = loader.next()) {
      r.samples += batch.size();
      ++r.batches;
      simulate_step(a.step_ms, a.spin);  // the step uses the batch, so it is held until here
      batch.release();
      bar.update(r.samples, total);
    }
  }
  r.wall_seconds = seconds_since(t0);
  metrics = loader.metrics();
  report = loader.report();
  r.idle_fraction = metrics.consumer_wait_fraction;
  return r;
}

/// `extra` is appended inside the object (",\"key\":value..." or empty).
std::string run_json(const RunResult& r, const std::string& extra = "") {
  return fmt::format(
      "{{\"samples\":{},\"batches\":{},\"wall_seconds\":{},\"samples_per_second\":{},"
      "\"consumer_idle_fraction\":{}{}}}",
      r.samples, r.batches, json_number(r.wall_seconds), json_number(r.samples_per_second()),
      json_number(r.idle_fraction), extra);
}

int run_bench(const BenchArgs& a) {
  if (a.batch_size == 0) throw ferry::InvalidArgument("--batch-size must be at least 1");
  ferry::LoaderOptions opt;
  opt.batch_size = a.batch_size;
  opt.order = ferry::parse_order(a.order);
  opt.seed = a.seed;
  opt.num_threads = a.threads;
  opt.prefetch = a.prefetch;
  opt.memory_budget = a.budget;
  opt.backend = ferry::parse_backend(a.backend);

  // The bar goes to stdout (the results' stream) only on a terminal; --json output is never
  // mixed with it because a JSON consumer reads a pipe.
  std::FILE* progress_out = a.json ? stderr : stdout;
  std::optional<RunResult> base;
  if (!a.no_baseline) base = run_baseline(a, opt, progress_out);
  ferry::Metrics m;
  std::string report;
  const RunResult async = run_loader(a, opt, progress_out, m, report);
  // 0 when there is no baseline to compare with.
  const double speedup = base && base->samples_per_second() > 0
                             ? async.samples_per_second() / base->samples_per_second()
                             : 0.0;

  if (a.json) {
    fmt::print(
        "{{\"file\":{},\"backend\":{},\"order\":{},\"batch_size\":{},\"epochs\":{},"
        "\"step_ms\":{},\"spin\":{},"
        "\"baseline\":{},\"loader\":{},\"speedup\":{}}}\n",
        json_string(a.file), json_string(a.backend), json_string(a.order), a.batch_size, a.epochs,
        json_number(a.step_ms), a.spin ? "true" : "false", base ? run_json(*base) : "null",
        run_json(async, fmt::format(",\"threads\":{},\"prefetch\":{},\"metrics\":{}", m.threads,
                                    m.prefetch, m.to_json())),
        speedup > 0 ? json_number(speedup) : "null");
    return 0;
  }
  fmt::print("ferry bench {}\n", a.file);
  const std::string step = a.step_ms > 0 ? fmt::format("compute {:g} ms per batch ({})", a.step_ms,
                                                       a.spin ? "busy-spin" : "sleep")
                                         : std::string("no compute step");
  fmt::print("  {} samples × {} epoch{}, batch {}, order {}, backend {}, {}\n\n",
             with_commas(async.samples / std::max<uint64_t>(a.epochs, 1)), a.epochs,
             a.epochs == 1 ? "" : "s", a.batch_size, a.order, a.backend, step);
  fmt::print("  {:<26}{:>14}{:>10}{:>16}\n", "", "samples/s", "wall s", "consumer idle");
  const auto row = [](const std::string& name, const RunResult& r) {
    fmt::print("  {:<26}{:>14}{:>10.3f}{:>15.1f}%\n", name,
               with_commas(static_cast<uint64_t>(r.samples_per_second())), r.wall_seconds,
               r.idle_fraction * 100);
  };
  if (base) row("synchronous (1 thread)", *base);
  row(fmt::format("ferry Loader ({} thread{})", m.threads, m.threads == 1 ? "" : "s"), async);
  if (speedup > 0) fmt::print("  {:<26}{:>13.2f}×\n", "speedup", speedup);
  fmt::print("\nLoader report\n{}", report);
  if (!report.empty() && report.back() != '\n') fmt::print("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ferry: write, inspect and benchmark .ferry record files", "ferry"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show the help of every subcommand");
  app.footer(
      "Exit status: 0 success, 1 error or corrupt file (one line on stderr), 2 usage error.");

  WriteArgs w;
  CLI::App* write = app.add_subcommand("write", "Convert data into a .ferry file");
  write->require_subcommand(1);
  CLI::App* synthetic =
      write->add_subcommand("synthetic", "Synthetic samples: fields 'data' and 'label'");
  add_writer_options(synthetic, w);
  synthetic->add_option("--samples,-n", w.samples, "Number of samples")->required();
  synthetic->add_option("--shape", w.shape, "Shape of 'data', e.g. 64 or 3x32x32")
      ->check(checked(parse_shape, "SHAPE"))
      ->capture_default_str();
  synthetic->add_option("--dtype", w.dtype, "Element type of 'data' (u8, f32, ...)")
      ->check(checked(ferry::parse_dtype, "DTYPE"))
      ->capture_default_str();
  synthetic->add_flag("--variable", w.variable,
                      "'data' is a bytes field of 1 to 2 × shape bytes per sample");
  synthetic->add_option("--seed", w.seed, "Seed of the contents")->capture_default_str();
  CLI::App* idx = write->add_subcommand("idx", "IDX files (MNIST, Fashion-MNIST; .gz or raw)");
  add_writer_options(idx, w);
  idx->add_option("--images", w.images, "IDX images file")->required();
  idx->add_option("--labels", w.labels, "IDX labels file (optional)");
  CLI::App* imagefolder = write->add_subcommand(
      "imagefolder", "An ImageFolder tree DIR/CLASS/*.jpg|png: fields 'image' (bytes), 'label'");
  imagefolder->add_option("DIR", w.folder, "Folder with one subfolder per class")->required();
  add_writer_options(imagefolder, w);
  add_image_options(imagefolder, w);
  CLI::App* tar = write->add_subcommand(
      "tar", "WebDataset tar shards (KEY.jpg|png + KEY.cls): fields 'image' (bytes), 'label'");
  tar->add_option("SHARDS... OUT", w.tar_args, "Tar shards, then the output .ferry file")
      ->required()
      ->expected(2, -1);
  add_writer_options(tar, w, false);
  add_image_options(tar, w);

  std::vector<std::string> preview_args;
  CLI::App* preview = app.add_subcommand(
      "preview",
      "Contact sheet of augmented samples: FILE --transforms spec.json --out grid.png "
      "[-n 16 --seed S --field image] (runs python3 -m ferry.preview)");
  preview->prefix_command();
  preview->allow_extras();

  InspectArgs ia;
  CLI::App* inspect =
      app.add_subcommand("inspect", "Describe a .ferry file; --verify checks every checksum");
  inspect->add_option("FILE", ia.file, "The .ferry file")->required();
  inspect->add_flag("--verify", ia.verify, "Check every page's checksum (exit 1 if any fails)");
  inspect->add_flag("--json", ia.json, "Print one JSON object");

  BenchArgs ba;
  CLI::App* bench = app.add_subcommand(
      "bench", "Synchronous load-then-compute loop vs the asynchronous Loader, on the same file");
  bench->add_option("FILE", ba.file, "The .ferry file")->required();
  bench->add_option("--backend", ba.backend, "I/O backend")
      ->check(CLI::IsMember({"auto", "mmap", "pread", "io_uring", "direct"}))
      ->capture_default_str();
  bench->add_option("--order", ba.order, "Epoch order")
      ->check(CLI::IsMember({"sequential", "random", "quasi_random"}))
      ->capture_default_str();
  bench->add_option("--threads", ba.threads, "Loader threads (0: one per core)")
      ->capture_default_str();
  bench->add_option("--batch-size", ba.batch_size, "Samples per batch")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench->add_option("--prefetch", ba.prefetch, "Batches the Loader may run ahead (0: derived)")
      ->capture_default_str();
  bench
      ->add_option("--budget", ba.budget,
                   "Batch memory budget of the Loader (0: none), e.g. 256MiB")
      ->transform(size_transform())
      ->default_str("0");
  bench->add_option("--epochs", ba.epochs, "Epochs to run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench->add_option("--step-ms", ba.step_ms, "Simulated compute per batch, in milliseconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  bench->add_option("--seed", ba.seed, "Order seed")->capture_default_str();
  bench->add_flag("--spin", ba.spin, "Busy-spin for the compute step instead of sleeping");
  bench->add_flag("--json", ba.json, "Print one JSON object");
  bench->add_flag("--no-baseline", ba.no_baseline, "Skip the synchronous baseline");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help exits 0; every other parse failure is a usage error, printed by CLI11 with a hint.
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }

  try {
    if (synthetic->parsed()) return run_write_synthetic(w);
    if (idx->parsed()) return run_write_idx(w);
    if (imagefolder->parsed()) return run_write_images(w, false);
    if (preview->parsed()) return run_preview(preview->remaining());
    if (tar->parsed()) return run_write_images(w, true);
    if (inspect->parsed()) return run_inspect(ia);
    if (bench->parsed()) return run_bench(ba);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "ferry: error: {}\n", e.what());
    return kExitError;
  }
  return kExitUsage;
}
