// Image importers: ImageFolder trees and WebDataset tar shards (see importers.h).
#include <turbojpeg.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <thread>

#include "ferry/error.h"
#include "ferry/importers.h"

namespace ferry {

namespace fs = std::filesystem;

namespace {

/// A problem with one input file: becomes a skip entry or the import's error.
struct BadInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// One sample to be: where its bytes come from (a file, or bytes already read from a tar).
struct Item {
  std::string name;  // path shown in messages
  int64_t label = 0;
  std::vector<uint8_t> bytes;  // filled by the loader (or already, for tar members)
  std::string error;           // non-empty: this item is bad, and why
};

std::vector<uint8_t> read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw BadInput(std::string("cannot open: ") + std::strerror(errno ? errno : ENOENT));
  in.seekg(0, std::ios::end);
  const auto size = in.tellg();
  if (size < 0) throw BadInput("cannot read (not a regular file?)");
  in.seekg(0);
  std::vector<uint8_t> buf(static_cast<size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(buf.data()), size))
    throw BadInput(std::string("read failed: ") + std::strerror(errno ? errno : EIO));
  return buf;
}

struct TjHandle {
  tjhandle h;
  explicit TjHandle(bool compress) : h(compress ? tjInitCompress() : tjInitDecompress()) {
    if (!h) throw std::runtime_error("libturbojpeg: cannot create a handle");
  }
  ~TjHandle() { tjDestroy(h); }
  TjHandle(const TjHandle&) = delete;
  TjHandle& operator=(const TjHandle&) = delete;
};

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

enum class ImageKind { jpeg, png };

struct ImageHeader {
  ImageKind kind;
  int width, height;
};

/// Cheap validation: the JPEG header through libturbojpeg, the PNG signature + IHDR by hand.
/// Catches non-images, empty and truncated-at-the-header files at import time.
ImageHeader check_image(const std::vector<uint8_t>& b) {
  static constexpr uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b.empty()) throw BadInput("empty file");
  if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
    TjHandle tj(false);
    int w = 0, h = 0, sub = 0, cs = 0;
    if (tjDecompressHeader3(tj.h, b.data(), static_cast<unsigned long>(b.size()), &w, &h, &sub,
                            &cs) != 0)
      throw BadInput(std::string("corrupt JPEG header: ") + tjGetErrorStr2(tj.h));
    if (w <= 0 || h <= 0) throw BadInput("JPEG with zero size");
    return {ImageKind::jpeg, w, h};
  }
  if (b.size() >= 8 && std::memcmp(b.data(), kPng, 8) == 0) {
    if (b.size() < 33 || be32(b.data() + 8) != 13 || std::memcmp(b.data() + 12, "IHDR", 4) != 0)
      throw BadInput("corrupt PNG: no IHDR chunk");
    const uint32_t w = be32(b.data() + 16), h = be32(b.data() + 20);
    if (w == 0 || h == 0 || w > 0x7FFFFFFF || h > 0x7FFFFFFF)
      throw BadInput("PNG with an invalid size");
    return {ImageKind::png, static_cast<int>(w), static_cast<int>(h)};
  }
  throw BadInput("not a JPEG or PNG image");
}

/// Box (area) filter from (w, h, 3) to (ow, oh, 3): each output pixel is the mean of the input
/// pixels its footprint covers, weighted by coverage. Antialiased for any downscale factor.
std::vector<uint8_t> area_resize(const std::vector<uint8_t>& src, int w, int h, int ow, int oh) {
  std::vector<float> tmp(static_cast<size_t>(ow) * h * 3);  // horizontal pass
  const double sx = static_cast<double>(w) / ow, sy = static_cast<double>(h) / oh;
  for (int x = 0; x < ow; ++x) {
    const double x0 = x * sx, x1 = x0 + sx;
    for (int y = 0; y < h; ++y) {
      double acc[3] = {0, 0, 0};
      for (int i = static_cast<int>(x0); i < w && i < x1; ++i) {
        const double wt = std::min<double>(i + 1, x1) - std::max<double>(i, x0);
        const uint8_t* p = &src[(static_cast<size_t>(y) * w + i) * 3];
        for (int c = 0; c < 3; ++c) acc[c] += wt * p[c];
      }
      for (int c = 0; c < 3; ++c)
        tmp[(static_cast<size_t>(y) * ow + x) * 3 + c] = static_cast<float>(acc[c] / sx);
    }
  }
  std::vector<uint8_t> out(static_cast<size_t>(ow) * oh * 3);
  for (int y = 0; y < oh; ++y) {
    const double y0 = y * sy, y1 = y0 + sy;
    for (int x = 0; x < ow * 3; ++x) {
      double acc = 0;
      for (int j = static_cast<int>(y0); j < h && j < y1; ++j)
        acc += (std::min<double>(j + 1, y1) - std::max<double>(j, y0)) *
               tmp[static_cast<size_t>(j) * ow * 3 + x];
      out[static_cast<size_t>(y) * ow * 3 + x] =
          static_cast<uint8_t>(std::clamp(acc / sy + 0.5, 0.0, 255.0));
    }
  }
  return out;
}

/// Re-encodes a JPEG whose longer side exceeds max_side (PNGs are kept as they are).
void maybe_shrink(Item& item, const ImageHeader& hdr, const ImageImportOptions& o) {
  if (o.max_side == 0 || hdr.kind != ImageKind::jpeg) return;
  const int longer = std::max(hdr.width, hdr.height);
  if (longer <= static_cast<int>(o.max_side)) return;
  const double f = static_cast<double>(o.max_side) / longer;
  const int ow = std::max(1, static_cast<int>(hdr.width * f + 0.5));
  const int oh = std::max(1, static_cast<int>(hdr.height * f + 0.5));
  std::vector<uint8_t> rgb(static_cast<size_t>(hdr.width) * hdr.height * 3);
  {
    TjHandle tj(false);
    if (tjDecompress2(tj.h, item.bytes.data(), static_cast<unsigned long>(item.bytes.size()),
                      rgb.data(), hdr.width, 0, hdr.height, TJPF_RGB, TJFLAG_ACCURATEDCT) != 0 &&
        tjGetErrorCode(tj.h) == TJERR_FATAL)
      throw BadInput(std::string("corrupt JPEG: ") + tjGetErrorStr2(tj.h));
  }
  const auto small = area_resize(rgb, hdr.width, hdr.height, ow, oh);
  TjHandle tj(true);
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  if (tjCompress2(tj.h, small.data(), ow, 0, oh, TJPF_RGB, &jpeg, &size, TJSAMP_420, o.quality,
                  TJFLAG_ACCURATEDCT) != 0) {
    tjFree(jpeg);
    throw BadInput(std::string("re-encoding failed: ") + tjGetErrorStr2(tj.h));
  }
  item.bytes.assign(jpeg, jpeg + size);
  tjFree(jpeg);
}

/// Loads (when `load`), validates and shrinks items[begin, end) on `threads` threads.
void prepare(std::vector<Item>& items, size_t begin, size_t end, bool load,
             const ImageImportOptions& o, unsigned threads) {
  std::atomic<size_t> next{begin};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < end;) {
      Item& it = items[i];
      if (!it.error.empty()) continue;
      try {
        if (load) it.bytes = read_whole_file(it.name);
        maybe_shrink(it, check_image(it.bytes), o);
      } catch (const std::exception& e) {  // BadInput, or bad_alloc of a huge image
        it.error = e.what();
        it.bytes.clear();
      }
    }
  };
  std::vector<std::jthread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
}

/// Validates all items (in chunks, bounding memory), then writes the good ones in order.
ImageImportResult write_items(std::vector<Item>& items, bool load, const std::string& out,
                              const ImageImportOptions& o, WriterOptions wo,
                              const nlohmann::json& metadata, const Progress& progress) {
  if (o.quality < 1 || o.quality > 100)
    throw InvalidArgument("quality " + std::to_string(o.quality) + ": must be in 1..100");
  unsigned threads = o.num_threads ? o.num_threads : std::thread::hardware_concurrency();
  threads = std::max(1u, threads);
  ImageImportResult result;
  wo.metadata = metadata.dump();
  Writer writer(out, Schema{{FieldSpec::bytes("image"), FieldSpec::scalar("label", DType::i64)}},
                wo);
  const size_t chunk = 256;
  for (size_t b = 0; b < items.size(); b += chunk) {
    const size_t e = std::min(items.size(), b + chunk);
    prepare(items, b, e, load, o, threads);
    for (size_t i = b; i < e; ++i) {
      Item& it = items[i];
      if (!it.error.empty()) {
        result.skipped.push_back(it.name + ": " + it.error);
        continue;
      }
      if (result.skipped.empty() || o.skip_errors) {
        const FieldData fields[2] = {{it.bytes.data(), it.bytes.size()},
                                     {&it.label, sizeof it.label}};
        writer.append(fields);
        ++result.written;
      }
      std::vector<uint8_t>().swap(it.bytes);
    }
    if (progress) progress(e, items.size());
  }
  if (!o.skip_errors && !result.skipped.empty())  // the Writer's destructor removes the temp file
    throw FormatError(std::to_string(result.skipped.size()) + " unreadable input file" +
                      (result.skipped.size() == 1 ? "" : "s") +
                      " (on_error=raise), first: " + result.skipped.front());
  if (result.written == 0) throw InvalidArgument("no readable image found: nothing to write");
  writer.close();
  return result;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool has_image_extension(const std::string& name) {
  const std::string l = lower(name);
  return std::any_of(image_extensions().begin(), image_extensions().end(),
                     [&](const std::string& ext) { return l.ends_with(ext); });
}

/// Files of one class folder in torchvision's order: sorted(os.walk(d)) then sorted(fnames).
std::vector<std::string> class_files(const fs::path& class_dir) {
  std::vector<std::pair<std::string, std::string>> found;  // (folder, file name)
  std::error_code ec;
  fs::recursive_directory_iterator it(class_dir, fs::directory_options::follow_directory_symlink,
                                      ec);
  if (ec) throw IoError("cannot list '" + class_dir.string() + "': " + ec.message(), ec.value());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw IoError("cannot list '" + class_dir.string() + "': " + ec.message(), ec.value());
    std::error_code ec2;
    if (it->is_directory(ec2)) continue;
    const std::string name = it->path().filename().string();
    if (has_image_extension(name)) found.emplace_back(it->path().parent_path().string(), name);
  }
  std::sort(found.begin(), found.end());  // bytewise UTF-8 order == Python's str order
  std::vector<std::string> paths;
  paths.reserve(found.size());
  for (auto& [folder, name] : found) paths.push_back((fs::path(folder) / name).string());
  return paths;
}

// --- tar (POSIX ustar / GNU) -------------------------------------------------------------------

uint64_t tar_octal(const char* p, size_t n) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\0')) ++i;
  for (; i < n && p[i] >= '0' && p[i] <= '7'; ++i) v = v * 8 + static_cast<uint64_t>(p[i] - '0');
  return v;
}

struct TarMember {
  std::string name;
  std::vector<uint8_t> data;
};

/// Reads every regular file of a tar archive (GNU long names supported; pax headers skipped).
std::vector<TarMember> read_tar(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot open tar shard '" + path + "': " + std::strerror(errno), errno);
  std::vector<TarMember> members;
  std::string long_name;
  char h[512];
  while (in.read(h, 512)) {
    if (std::all_of(h, h + 512, [](char c) { return c == 0; })) break;  // end-of-archive block
    uint64_t sum = 0;
    for (int i = 0; i < 512; ++i) sum += (i >= 148 && i < 156) ? ' ' : static_cast<uint8_t>(h[i]);
    if (sum != tar_octal(h + 148, 8))
      throw FormatError("tar shard '" + path + "': bad header checksum (not a tar file?)");
    const uint64_t size = tar_octal(h + 124, 12);
    const char type = h[156];
    std::vector<uint8_t> data(size);
    if (size && !in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(size)))
      throw FormatError("tar shard '" + path + "': truncated member");
    in.ignore(static_cast<std::streamsize>((512 - size % 512) % 512));
    if (type == 'L') {  // GNU long name for the next member
      long_name.assign(data.begin(), std::find(data.begin(), data.end(), 0));
      continue;
    }
    if (type != '0' && type != '\0') continue;  // folders, links, pax headers
    std::string name = long_name;
    if (name.empty()) {
      name.assign(h, strnlen(h, 100));
      if (std::memcmp(h + 257, "ustar", 5) == 0 && h[345] != '\0')
        name = std::string(h + 345, strnlen(h + 345, 155)) + "/" + name;
    }
    long_name.clear();
    members.push_back({std::move(name), std::move(data)});
  }
  return members;
}

}  // namespace

const std::vector<std::string>& image_extensions() {
  static const std::vector<std::string> exts = {".jpg", ".jpeg", ".png",  ".ppm", ".bmp",
                                                ".pgm", ".tif",  ".tiff", ".webp"};
  return exts;
}

ImageImportResult import_imagefolder(const std::string& dir, const std::string& out,
                                     const ImageImportOptions& options,
                                     const WriterOptions& writer_options,
                                     const Progress& progress) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw InvalidArgument("imagefolder: '" + dir + "' is not a folder");
  std::vector<std::string> classes;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory()) classes.push_back(it->path().filename().string());
  if (ec) throw IoError("cannot list '" + dir + "': " + ec.message(), ec.value());
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) throw InvalidArgument("imagefolder: '" + dir + "' has no class subfolder");
  std::vector<Item> items;
  std::vector<std::string> empty;
  for (size_t c = 0; c < classes.size(); ++c) {
    const auto files = class_files(fs::path(dir) / classes[c]);
    if (files.empty()) empty.push_back(classes[c]);
    for (const auto& f : files) items.push_back({f, static_cast<int64_t>(c), {}, {}});
  }
  // torchvision raises on a class without a valid file; skip keeps its index (labels still
  // match torchvision's class_to_idx) and reports it.
  std::vector<std::string> empty_reports;
  for (const auto& c : empty) {
    if (!options.skip_errors)
      throw InvalidArgument("imagefolder: class folder '" + c + "' has no file with a valid " +
                            "extension (.jpg, .jpeg, .png, ...)");
    empty_reports.push_back((fs::path(dir) / c).string() + ": empty class (no image file)");
  }
  nlohmann::json meta = {{"source", "imagefolder"}, {"classes", classes}};
  auto result = write_items(items, true, out, options, writer_options, meta, progress);
  result.classes = classes;
  result.skipped.insert(result.skipped.begin(), empty_reports.begin(), empty_reports.end());
  return result;
}

ImageImportResult import_tar(const std::vector<std::string>& shards, const std::string& out,
                             const ImageImportOptions& options, const WriterOptions& writer_options,
                             const Progress& progress) {
  if (shards.empty()) throw InvalidArgument("write tar: no shard given");
  std::vector<Item> items;
  for (const auto& shard : shards) {
    std::map<std::string, size_t> by_key;  // key -> index in items
    std::vector<bool> has_image, has_label;
    const size_t first = items.size();
    for (auto& m : read_tar(shard)) {
      const auto slash = m.name.rfind('/');
      const auto dot = m.name.find('.', slash == std::string::npos ? 0 : slash + 1);
      if (dot == std::string::npos) continue;
      const std::string key = m.name.substr(0, dot), ext = lower(m.name.substr(dot + 1));
      const bool image = ext == "jpg" || ext == "jpeg" || ext == "png";
      if (!image && ext != "cls") continue;  // other WebDataset fields (json, txt) are ignored
      auto [pos, fresh] = by_key.try_emplace(key, items.size());
      if (fresh) {
        items.push_back({shard + ":" + key, 0, {}, {}});
        has_image.push_back(false);
        has_label.push_back(false);
      }
      Item& it = items[pos->second];
      const size_t k = pos->second - first;
      if (image) {
        it.bytes = std::move(m.data);
        has_image[k] = true;
        continue;
      }
      const std::string text(m.data.begin(), m.data.end());
      try {
        size_t used = 0;
        it.label = std::stoll(text, &used);
        if (text.find_first_not_of(" \t\r\n", used) != std::string::npos)
          throw std::invalid_argument(text);
        has_label[k] = true;
      } catch (const std::exception&) {
        it.error = "label '" + text.substr(0, 40) + "' in " + key + ".cls is not an integer";
      }
    }
    for (size_t k = 0; k < has_image.size(); ++k) {
      Item& it = items[first + k];
      if (!it.error.empty()) continue;
      if (!has_image[k]) it.error = "missing pair: no .jpg/.jpeg/.png for this key";
      if (!has_label[k]) it.error = "missing pair: no .cls for this key";
    }
  }
  nlohmann::json meta = {{"source", "tar"}, {"shards", shards}};
  return write_items(items, false, out, options, writer_options, meta, progress);
}

}  // namespace ferry
