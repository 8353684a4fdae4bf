// Writer contract: atomic publication, clear errors for wrong shapes, importers.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>

#include "ferry/error.h"
#include "ferry/importers.h"
#include "ferry/reader.h"
#include "ferry/writer.h"
#include "test_util.h"

namespace ferry {
namespace {

using testing::TempDir;
namespace fs = std::filesystem;

Schema image_schema() {
  Schema s;
  s.fields.push_back(FieldSpec::array("image", DType::f32, {2, 3}));
  s.fields.push_back(FieldSpec::scalar("label", DType::i64));
  return s;
}

size_t files_in(const fs::path& dir) {
  return std::distance(fs::directory_iterator(dir), fs::directory_iterator());
}

TEST(Writer, ExceptionMidWriteLeavesNoFile) {
  TempDir dir;
  const std::string path = dir.file("out.ferry");
  try {
    Writer w(path, image_schema(), {.page_size = 4096, .fsync = false});
    float img[6] = {};
    int64_t label = 1;
    for (int i = 0; i < 1000; ++i) w.append(std::vector<FieldData>{{img, sizeof img}, {&label, 8}});
    throw std::runtime_error("user code failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(files_in(dir.path()), 0u) << "temporary file left behind";
}

TEST(Writer, ExistingFileSurvivesFailedRewrite) {
  TempDir dir;
  const std::string path = testing::synthetic_file(dir, "keep.ferry", 10, 16);
  {
    Writer w(path, image_schema(), {});
    float img[6] = {};
    int64_t label = 0;
    w.append(std::vector<FieldData>{{img, sizeof img}, {&label, 8}});
  }  // destroyed without close()
  EXPECT_EQ(Reader::open(path)->num_samples(), 10u);
  EXPECT_EQ(files_in(dir.path()), 1u);
}

TEST(Writer, WrongShapeNamesField) {
  TempDir dir;
  Writer w(dir.file("x.ferry"), image_schema(), {});
  float img[5] = {};
  int64_t label = 0;
  try {
    w.append(std::vector<FieldData>{{img, sizeof img}, {&label, 8}});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'image'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("24 bytes"), std::string::npos) << e.what();
  }
  EXPECT_THROW(w.append(std::vector<FieldData>{{img, 24}}), InvalidArgument);
}

TEST(Writer, BadOptions) {
  TempDir dir;
  EXPECT_THROW(Writer(dir.file("a"), image_schema(), {.page_size = 5000}), InvalidArgument);
  EXPECT_THROW(Writer(dir.file("a"), image_schema(), {.page_size = 2048}), InvalidArgument);
  EXPECT_THROW(Writer(dir.file("a"), image_schema(), {.alignment = 4}),
               InvalidArgument);  // < sizeof(i64)
  EXPECT_THROW(Writer(dir.file("a"), Schema{}, {}), InvalidArgument);
  Schema dup;
  dup.fields = {FieldSpec::bytes("x"), FieldSpec::bytes("x")};
  EXPECT_THROW(Writer(dir.file("a"), dup, {}), InvalidArgument);
  EXPECT_THROW(Writer("/nonexistent-dir/x.ferry", image_schema(), {}), IoError);
  EXPECT_EQ(files_in(dir.path()), 0u);
}

TEST(Writer, AppendBatchColumns) {
  TempDir dir;
  Schema s;
  s.fields = {FieldSpec::array("v", DType::u16, {4}), FieldSpec::bytes("b")};
  std::vector<uint16_t> v(40);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint16_t>(i * 3);
  const std::string text = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::vector<uint64_t> off = {0, 1, 3, 6, 10, 15, 21, 28, 30, 30, 36};
  const Column cols[2] = {{v.data()}, {text.data(), off.data()}};
  write_file(dir.file("b.ferry"), s, cols, 10, {.fsync = false});
  auto r = Reader::open(dir.file("b.ferry"));
  std::vector<uint8_t> scratch;
  for (uint64_t i = 0; i < 10; ++i) {
    auto f = r->sample(i, scratch);
    EXPECT_EQ(0, std::memcmp(f[0].data, v.data() + 4 * i, 8));
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(f[1].data), f[1].size),
              text.substr(off[i], off[i + 1] - off[i]));
  }
}

void write_idx_gz(const std::string& path, uint8_t type, std::vector<uint32_t> dims,
                  const std::vector<uint8_t>& data) {
  gzFile f = gzopen(path.c_str(), "wb");
  uint8_t magic[4] = {0, 0, type, static_cast<uint8_t>(dims.size())};
  gzwrite(f, magic, 4);
  for (uint32_t d : dims) {
    uint8_t be[4] = {uint8_t(d >> 24), uint8_t(d >> 16), uint8_t(d >> 8), uint8_t(d)};
    gzwrite(f, be, 4);
  }
  gzwrite(f, data.data(), static_cast<unsigned>(data.size()));
  gzclose(f);
}

TEST(Importers, IdxImagesAndLabels) {
  TempDir dir;
  std::vector<uint8_t> images(5 * 3 * 2), labels = {4, 3, 2, 1, 0};
  for (size_t i = 0; i < images.size(); ++i) images[i] = static_cast<uint8_t>(i);
  write_idx_gz(dir.file("img.gz"), 0x08, {5, 3, 2}, images);
  write_idx_gz(dir.file("lab.gz"), 0x08, {5}, labels);
  EXPECT_EQ(
      import_idx(dir.file("img.gz"), dir.file("lab.gz"), dir.file("m.ferry"), {.fsync = false}),
      5u);
  auto r = Reader::open(dir.file("m.ferry"));
  EXPECT_EQ(r->schema().fields[0].shape, (std::vector<uint64_t>{3, 2}));
  std::vector<uint8_t> scratch;
  for (uint64_t i = 0; i < 5; ++i) {
    auto f = r->sample(i, scratch);
    EXPECT_EQ(0, std::memcmp(f[0].data, images.data() + 6 * i, 6));
    EXPECT_EQ(f[1].data[0], labels[i]);
  }
}

TEST(Importers, IdxBigEndianAndErrors) {
  TempDir dir;
  // Two i32 samples of shape [2]: big-endian in the file, little-endian in ferry.
  write_idx_gz(dir.file("i.gz"), 0x0C, {2, 2},
               {0, 0, 1, 2, 0, 0, 0, 3, 255, 255, 255, 255, 0, 0, 0, 0});
  import_idx(dir.file("i.gz"), "", dir.file("i.ferry"), {.fsync = false});
  auto r = Reader::open(dir.file("i.ferry"));
  std::vector<uint8_t> scratch;
  int32_t v[2];
  std::memcpy(v, r->sample(0, scratch)[0].data, 8);
  EXPECT_EQ(v[0], 258);
  EXPECT_EQ(v[1], 3);
  std::memcpy(v, r->sample(1, scratch)[0].data, 8);
  EXPECT_EQ(v[0], -1);

  write_idx_gz(dir.file("short.gz"), 0x08, {10, 4}, std::vector<uint8_t>(12));
  EXPECT_THROW(import_idx(dir.file("short.gz"), "", dir.file("s.ferry"), {}), FormatError);
  EXPECT_FALSE(fs::exists(dir.file("s.ferry")));
  write_idx_gz(dir.file("lab.gz"), 0x08, {3}, {1, 2, 3});
  EXPECT_THROW(import_idx(dir.file("i.gz"), dir.file("lab.gz"), dir.file("x.ferry"), {}),
               FormatError);
}

TEST(Importers, SyntheticIsDeterministic) {
  TempDir dir;
  testing::synthetic_file(dir, "a.ferry", 50, 100, 4096, true, 3);
  auto r = Reader::open(dir.file("a.ferry"));
  SyntheticSpec spec;
  spec.shape = {100};
  spec.variable = true;
  spec.seed = 3;
  std::vector<uint8_t> scratch;
  for (uint64_t i = 0; i < 50; ++i) {
    auto f = r->sample(i, scratch);
    ASSERT_EQ(f[0].size, synthetic_length(spec, i));
    for (uint64_t j = 0; j < f[0].size; ++j) ASSERT_EQ(f[0].data[j], synthetic_byte(3, i, j));
    int64_t label;
    std::memcpy(&label, f[1].data, 8);
    EXPECT_EQ(label, static_cast<int64_t>(i));
  }
}

}  // namespace
}  // namespace ferry
