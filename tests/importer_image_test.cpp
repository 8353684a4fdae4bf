// Image importers: ImageFolder trees (odd names, nesting, empty classes, unreadable files) and
// WebDataset tar shards (pairs, missing pairs), atomicity of a failing import.
#include <gtest/gtest.h>
#include <turbojpeg.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ferry/error.h"
#include "ferry/importers.h"
#include "ferry/reader.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ferry::ImageImportOptions;

namespace {

/// A small real JPEG: a smooth w×h gradient compressed by libjpeg-turbo.
std::vector<uint8_t> make_jpeg(int w, int h, int seed) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        rgb[(static_cast<size_t>(y) * w + x) * 3 + c] = static_cast<uint8_t>(x * 3 + y * c + seed);
  tjhandle tj = tjInitCompress();
  unsigned char* out = nullptr;
  unsigned long size = 0;
  EXPECT_EQ(tjCompress2(tj, rgb.data(), w, 0, h, TJPF_RGB, &out, &size, TJSAMP_420, 85, 0), 0);
  std::vector<uint8_t> bytes(out, out + size);
  tjFree(out);
  tjDestroy(tj);
  return bytes;
}

/// PNG signature + IHDR (what import validates; pixels are decoded by the loader, not here).
std::vector<uint8_t> make_png_header(uint32_t w, uint32_t h) {
  std::vector<uint8_t> b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n',
                            0,    0,   0,   13,  'I',  'H',  'D',  'R'};
  for (uint32_t v : {w, h})
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
  b.insert(b.end(), {8, 2, 0, 0, 0, 0, 0, 0, 0});  // depth, color, methods, (crc not checked)
  return b;
}

void put(const fs::path& p, const std::vector<uint8_t>& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

struct Sample {
  std::vector<uint8_t> image;
  int64_t label;
};

std::vector<Sample> read_all(const std::string& path) {
  auto r = ferry::Reader::open(path);
  std::vector<Sample> out;
  std::vector<uint8_t> scratch;
  for (uint64_t i = 0; i < r->num_samples(); ++i) {
    const auto v = r->sample(i, scratch);
    Sample s;
    s.image.assign(v[0].data, v[0].data + v[0].size);
    std::memcpy(&s.label, v[1].data, 8);
    out.push_back(std::move(s));
  }
  return out;
}

bool has_temp_files(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) return true;
  return false;
}

/// One ustar member (name < 100 bytes) and its data, padded to 512.
void tar_member(std::string& tar, const std::string& name, const std::vector<uint8_t>& data) {
  char h[512] = {};
  std::memcpy(h, name.data(), name.size());
  std::snprintf(h + 100, 8, "%07o", 0644);
  std::snprintf(h + 124, 12, "%011lo", static_cast<unsigned long>(data.size()));
  std::snprintf(h + 136, 12, "%011o", 0);
  h[156] = '0';
  std::memcpy(h + 257,
              "ustar\0"
              "00",
              8);
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(h + 148, 8, "%06o", sum);
  tar.append(h, 512);
  tar.append(data.begin(), data.end());
  tar.append((512 - data.size() % 512) % 512, '\0');
}

}  // namespace

TEST(ImageImporter, OddNamesNestedFoldersAndTorchvisionOrder) {
  ferry::testing::TempDir dir;
  const fs::path root = dir.path() / "tree";
  const auto j0 = make_jpeg(40, 30, 1), j1 = make_jpeg(20, 50, 2), j2 = make_jpeg(33, 33, 3);
  put(root / "b class" / "z.jpg", j0);
  put(root / "b class" / "deep" / "a.JPEG", j1);  // folder "b class/deep" sorts after "b class"
  put(root / "\xc3\xa4pfel" / "x y.png", make_png_header(5, 7));  // "äpfel": sorts after ASCII
  put(root / "a" / "0.jpg", j2);
  put(root / "a" / "notes.txt", {'h', 'i'});  // no image extension: not a sample
  const std::string out = (dir.path() / "o.ferry").string();
  const auto r = ferry::import_imagefolder(root.string(), out, ImageImportOptions{});
  EXPECT_EQ(r.written, 4u);
  EXPECT_TRUE(r.skipped.empty());
  EXPECT_EQ(r.classes, (std::vector<std::string>{"a", "b class", "\xc3\xa4pfel"}));
  const auto s = read_all(out);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].image, j2);
  EXPECT_EQ(s[0].label, 0);
  EXPECT_EQ(s[1].image, j0);
  EXPECT_EQ(s[2].image, j1);
  EXPECT_EQ(s[2].label, 1);
  EXPECT_EQ(s[3].label, 2);
  const auto meta = nlohmann::json::parse(ferry::Reader::open(out)->layout().metadata());
  EXPECT_EQ(meta["classes"][1], "b class");
}

TEST(ImageImporter, EmptyClassFailsOrIsReportedKeepingIndices) {
  ferry::testing::TempDir dir;
  const fs::path root = dir.path() / "tree";
  put(root / "a" / "0.jpg", make_jpeg(16, 16, 0));
  fs::create_directories(root / "b_empty");
  put(root / "c" / "0.jpg", make_jpeg(16, 16, 1));
  const std::string out = (dir.path() / "o.ferry").string();
  EXPECT_THROW(ferry::import_imagefolder(root.string(), out), ferry::InvalidArgument);
  EXPECT_FALSE(fs::exists(out));
  ImageImportOptions skip;
  skip.skip_errors = true;
  const auto r = ferry::import_imagefolder(root.string(), out, skip);
  ASSERT_EQ(r.skipped.size(), 1u);
  EXPECT_NE(r.skipped[0].find("b_empty"), std::string::npos);
  EXPECT_EQ(read_all(out)[1].label, 2);  // "c" keeps index 2 as in torchvision
}

TEST(ImageImporter, UnreadableFilesAreAllReportedAndNothingIsLeftBehind) {
  ferry::testing::TempDir dir;
  const fs::path root = dir.path() / "tree";
  put(root / "a" / "good.jpg", make_jpeg(16, 16, 0));
  put(root / "a" / "garbage.jpg", {0xFF, 0xD8, 0xFF, 0x00, 0x01});
  put(root / "a" / "text.png", {'n', 'o', 'p', 'e'});
  put(root / "a" / "empty.jpg", {});
  put(root / "a" / "zero.png", make_png_header(0, 5));
  const fs::path out = dir.path() / "o.ferry";
  put(out, {'o', 'l', 'd'});  // a failing import must not replace an existing file
  try {
    ferry::import_imagefolder(root.string(), out.string());
    FAIL() << "expected an error";
  } catch (const ferry::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("4 unreadable"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("empty.jpg"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fs::file_size(out), 3u);
  EXPECT_FALSE(has_temp_files(dir.path()));
  ImageImportOptions skip;
  skip.skip_errors = true;
  skip.num_threads = 3;
  const auto r = ferry::import_imagefolder(root.string(), out.string(), skip);
  EXPECT_EQ(r.written, 1u);
  EXPECT_EQ(r.skipped.size(), 4u);
}

TEST(ImageImporter, MaxSideReencodesLargerJpegs) {
  ferry::testing::TempDir dir;
  const fs::path root = dir.path() / "tree";
  put(root / "a" / "big.jpg", make_jpeg(120, 60, 0));
  put(root / "a" / "small.jpg", make_jpeg(30, 20, 1));
  ImageImportOptions o;
  o.max_side = 40;
  const std::string out = (dir.path() / "o.ferry").string();
  ferry::import_imagefolder(root.string(), out, o);
  const auto s = read_all(out);
  tjhandle tj = tjInitDecompress();
  int w = 0, h = 0, sub = 0, cs = 0;
  ASSERT_EQ(tjDecompressHeader3(tj, s[0].image.data(), s[0].image.size(), &w, &h, &sub, &cs), 0);
  EXPECT_EQ(w, 40);
  EXPECT_EQ(h, 20);
  tjDestroy(tj);
  EXPECT_EQ(s[1].image, make_jpeg(30, 20, 1));  // not larger: stored as it is
}

TEST(ImageImporter, TarShardsPairByKeyAndReportMissingPairs) {
  ferry::testing::TempDir dir;
  const auto a = make_jpeg(16, 16, 0), b = make_jpeg(16, 16, 1);
  std::string t1, t2;
  tar_member(t1, "x/k0.jpg", a);
  tar_member(t1, "x/k0.cls", {'4'});
  tar_member(t1, "x/k0.json", {'{', '}'});  // other WebDataset fields are ignored
  tar_member(t1, "x/only_label.cls", {'1'});
  tar_member(t2, "k1.cls", {'9', '\n'});
  tar_member(t2, "k1.png", make_png_header(3, 3));
  tar_member(t2, "k2.jpg", b);
  t1.append(1024, '\0');
  t2.append(1024, '\0');
  const auto p1 = dir.path() / "1.tar", p2 = dir.path() / "2.tar";
  put(p1, {t1.begin(), t1.end()});
  put(p2, {t2.begin(), t2.end()});
  const std::string out = (dir.path() / "o.ferry").string();
  EXPECT_THROW(ferry::import_tar(std::vector<std::string>{p1.string(), p2.string()}, out),
               ferry::FormatError);
  EXPECT_FALSE(fs::exists(out));
  ImageImportOptions skip;
  skip.skip_errors = true;
  const auto r = ferry::import_tar(std::vector<std::string>{p1.string(), p2.string()}, out, skip);
  ASSERT_EQ(r.skipped.size(), 2u);
  EXPECT_NE(r.skipped[0].find("only_label"), std::string::npos);
  EXPECT_NE(r.skipped[1].find("k2"), std::string::npos);
  const auto s = read_all(out);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].image, a);
  EXPECT_EQ(s[0].label, 4);
  EXPECT_EQ(s[1].label, 9);
}

TEST(ImageImporter, NotATarIsAClearError) {
  ferry::testing::TempDir dir;
  const auto p = dir.path() / "bad.tar";
  put(p, std::vector<uint8_t>(1024, 'x'));
  EXPECT_THROW(
      ferry::import_tar(std::vector<std::string>{p.string()}, (dir.path() / "o.ferry").string()),
      ferry::FormatError);
}
