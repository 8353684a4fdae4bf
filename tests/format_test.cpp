// Round trips of every field kind and dtype through the writer and both reader backends.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "ferry/error.h"
#include "ferry/reader.h"
#include "ferry/writer.h"
#include "test_util.h"

namespace ferry {
namespace {

using testing::TempDir;

// Every backend; one this machine cannot use (no io_uring, a filesystem refusing O_DIRECT) is
// skipped with the reason, never failed.
const Backend kBackends[] = {Backend::mmap, Backend::pread, Backend::io_uring, Backend::direct};

std::vector<uint8_t> pattern(uint64_t sample, uint64_t field, uint64_t n) {
  std::vector<uint8_t> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(sample * 31 + field * 7 + i * 13);
  return v;
}

// One field of every dtype (scalar and array), plus a bytes field of varying length.
Schema all_kinds_schema() {
  Schema s;
  for (int d = 0; d < kNumDTypes; ++d) {
    const auto t = static_cast<DType>(d);
    s.fields.push_back(FieldSpec::array("a_" + std::string(dtype_name(t)), t, {3, 2}));
    s.fields.push_back(FieldSpec::scalar("s_" + std::string(dtype_name(t)), t));
  }
  s.fields.push_back(FieldSpec::bytes("blob"));
  return s;
}

uint64_t blob_len(uint64_t sample, uint64_t page_size) {
  // Every 17th sample is larger than a page; some are empty.
  if (sample % 17 == 5) return page_size * 2 + 123;
  return (sample * 97) % 3000;
}

void write_all_kinds(const std::string& path, const Schema& s, uint64_t n, uint64_t page_size) {
  WriterOptions opt;
  opt.page_size = page_size;
  opt.fsync = false;
  Writer w(path, s, opt);
  std::vector<std::vector<uint8_t>> data(s.fields.size());
  std::vector<FieldData> row(s.fields.size());
  for (uint64_t i = 0; i < n; ++i) {
    for (size_t f = 0; f < s.fields.size(); ++f) {
      const uint64_t len =
          s.fields[f].kind == FieldKind::bytes ? blob_len(i, page_size) : s.fields[f].fixed_bytes();
      data[f] = pattern(i, f, len);
      row[f] = {data[f].data(), len};
    }
    w.append(row);
  }
  EXPECT_EQ(w.num_samples(), n);
  w.close();
}

class RoundTrip : public ::testing::TestWithParam<std::tuple<Backend, uint64_t>> {};

TEST_P(RoundTrip, EveryKindAndDType) {
  const auto [backend, page_size] = GetParam();
  TempDir dir;
  const std::string path = dir.file("all.ferry");
  const Schema s = all_kinds_schema();
  const uint64_t n = 60;
  write_all_kinds(path, s, n, page_size);
  if (const std::string why = backend_unavailable_reason(backend, path); !why.empty())
    GTEST_SKIP() << why;

  auto r = Reader::open(path, {backend});
  EXPECT_EQ(r->schema(), s);
  EXPECT_EQ(r->num_samples(), n);
  EXPECT_EQ(r->layout().page_size(), page_size);
  std::vector<uint8_t> scratch;
  for (uint64_t i = 0; i < n; ++i) {
    const auto fields = r->sample(i, scratch);
    ASSERT_EQ(fields.size(), s.fields.size());
    for (size_t f = 0; f < fields.size(); ++f) {
      const uint64_t len =
          s.fields[f].kind == FieldKind::bytes ? blob_len(i, page_size) : s.fields[f].fixed_bytes();
      ASSERT_EQ(fields[f].size, len) << "sample " << i << " field " << f;
      const auto want = pattern(i, f, len);
      if (len) {  // an empty vector's data() may be null, which memcmp must not see
        ASSERT_EQ(0, std::memcmp(fields[f].data, want.data(), len))
            << "sample " << i << " field " << f;
      }
      if (s.fields[f].kind ==
          FieldKind::ndarray) {  // zero-copy views must be aligned for the dtype
        EXPECT_EQ(reinterpret_cast<uintptr_t>(fields[f].data) % dtype_size(s.fields[f].dtype), 0u);
      }
    }
  }
  EXPECT_TRUE(r->verify().ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, RoundTrip,
                         ::testing::Combine(::testing::ValuesIn(kBackends),
                                            ::testing::Values(4096, 16384, 1 << 20)));

TEST(Format, SamplesNeverStraddlePages) {
  TempDir dir;
  const std::string path = testing::synthetic_file(dir, "s.ferry", 500, 1000, 4096);
  auto r = Reader::open(path);
  const Layout& L = r->layout();
  for (uint64_t s = 0; s < L.num_samples(); ++s) {
    const auto [b, e] = L.sample_extent(s);
    EXPECT_EQ((b - L.data_offset()) / 4096, (e - 1 - L.data_offset()) / 4096) << "sample " << s;
    EXPECT_EQ(b % 64, 0u);
  }
}

TEST(Format, ZeroSamples) {
  TempDir dir;
  Schema s;
  s.fields.push_back(FieldSpec::array("x", DType::f32, {4}));
  Writer w(dir.file("empty.ferry"), s, {});
  w.close();
  for (Backend b : kBackends) {
    if (!backend_unavailable_reason(b, dir.file("empty.ferry")).empty()) continue;
    auto r = Reader::open(dir.file("empty.ferry"), {b});
    EXPECT_EQ(r->num_samples(), 0u);
    EXPECT_EQ(r->layout().num_pages(), 0u);
    EXPECT_TRUE(r->verify().ok());
  }
}

TEST(Format, VerifyFindsCorruptPage) {
  TempDir dir;
  const std::string path = testing::synthetic_file(dir, "v.ferry", 200, 500, 4096);
  auto layout_reader = Reader::open(path);
  const uint64_t page3 = layout_reader->layout().page_offset(3);
  layout_reader.reset();
  {
    FILE* f = std::fopen(path.c_str(), "r+b");
    std::fseek(f, static_cast<long>(page3 + 10), SEEK_SET);
    std::fputc(0xAB, f);
    std::fclose(f);
  }
  auto r = Reader::open(path);  // header and index are intact: open succeeds
  const auto report = r->verify();
  ASSERT_EQ(report.errors.size(), 1u);
  EXPECT_NE(report.errors[0].find("page 3"), std::string::npos);
  EXPECT_NE(report.errors[0].find(path), std::string::npos);
}

TEST(Format, DTypeNames) {
  for (int d = 0; d < kNumDTypes; ++d)
    EXPECT_EQ(parse_dtype(dtype_name(static_cast<DType>(d))), static_cast<DType>(d));
  EXPECT_THROW(parse_dtype("float128"), InvalidArgument);
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
}

TEST(Format, TopKFieldBytesBoundsAnyBatch) {
  TempDir dir;
  const std::string path = testing::synthetic_file(dir, "var.ferry", 300, 100, 4096, true);
  auto r = Reader::open(path);
  const uint64_t k = 8;
  const uint64_t bound = r->layout().top_k_field_bytes(0, k);
  std::vector<uint64_t> lens;
  for (uint64_t s = 0; s < 300; ++s) lens.push_back(r->layout().sample_fields(s)[0].length);
  std::sort(lens.rbegin(), lens.rend());
  EXPECT_EQ(bound, std::accumulate(lens.begin(), lens.begin() + k, uint64_t{0}));
  EXPECT_EQ(r->layout().max_field_length(0), lens[0]);
}

TEST(Format, SampleOutOfRange) {
  TempDir dir;
  auto r = Reader::open(testing::synthetic_file(dir, "o.ferry", 3, 8));
  std::vector<uint8_t> scratch;
  EXPECT_THROW(r->sample(3, scratch), InvalidArgument);
  EXPECT_THROW(r->read_page(99, scratch), InvalidArgument);
}

TEST(Format, MissingFileIsIoError) {
  try {
    Reader::open("/nonexistent/x.ferry");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.ferry"), std::string::npos);
  }
}

}  // namespace
}  // namespace ferry
