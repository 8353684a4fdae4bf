// Per-field codecs (format version 2): the codec table, the writer's compression, the reader's
// and the loader's decoding on every backend, corrupt compressed payloads, and version-1 files.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "codecs/field_decode.h"
#include "ferry/codec.h"
#include "ferry/error.h"
#include "ferry/loader.h"
#include "ferry/reader.h"
#include "ferry/writer.h"
#include "test_util.h"
#include "util.h"

namespace ferry {
namespace {

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Compressible but not trivial: a slow ramp with some noise, like image rows.
std::vector<uint8_t> compressible(uint64_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  detail::SplitMix64 rng(seed);
  for (uint64_t i = 0; i < n; ++i)
    out[i] = static_cast<uint8_t>((i / 16 + seed) % 251 + (rng.below(8) == 0 ? 1 : 0));
  return out;
}

std::vector<uint8_t> noise(uint64_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  detail::SplitMix64 rng(seed);
  for (auto& b : out) b = static_cast<uint8_t>(rng.next());
  return out;
}

// ---- the codec table ----

TEST(Codec, EveryCodecRoundTripsAndChecksTheLength) {
  for (CodecId id : {CodecId::none, CodecId::lz4, CodecId::zstd}) {
    const Codec& c = codec_by_id(id);
    EXPECT_EQ(c.id(), id);
    EXPECT_EQ(&codec_by_name(c.name()), &c);
    for (const auto& in : {std::vector<uint8_t>{}, compressible(100000, 1), noise(5000, 2),
                           std::vector<uint8_t>(1, 42)}) {
      std::vector<uint8_t> enc = {0xAB};  // encode appends
      c.encode(in, 0, enc);
      ASSERT_EQ(enc[0], 0xAB);
      const std::span<const uint8_t> stored(enc.data() + 1, enc.size() - 1);
      std::vector<uint8_t> out(in.size());
      c.decode(stored, out);
      EXPECT_EQ(out, in) << c.name();
      if (id != CodecId::none && in.size() == 100000) {
        EXPECT_LT(stored.size(), in.size() / 2);
      }
      std::vector<uint8_t> longer(in.size() + 1), shorter(in.empty() ? 0 : in.size() - 1);
      EXPECT_THROW(c.decode(stored, longer), FormatError) << c.name();
      if (!in.empty()) {
        EXPECT_THROW(c.decode(stored, shorter), FormatError) << c.name();
      }
    }
  }
  EXPECT_THROW(codec_by_id(static_cast<CodecId>(3)), FormatError);
  EXPECT_THROW(codec_by_name("gzip"), InvalidArgument);
}

TEST(Codec, LevelsAreCheckedAndUsed) {
  const auto in = compressible(200000, 3);
  std::vector<uint8_t> fast, hc, z1, z19;
  codec_by_id(CodecId::lz4).encode(in, 0, fast);
  codec_by_id(CodecId::lz4).encode(in, 9, hc);
  codec_by_id(CodecId::zstd).encode(in, 1, z1);
  codec_by_id(CodecId::zstd).encode(in, 19, z19);
  EXPECT_LE(hc.size(), fast.size());
  EXPECT_LE(z19.size(), z1.size());
  std::vector<uint8_t> out(in.size());
  codec_by_id(CodecId::lz4).decode(hc, out);
  EXPECT_EQ(out, in);
  std::vector<uint8_t> sink;
  EXPECT_THROW(codec_by_id(CodecId::lz4).encode(in, 13, sink), InvalidArgument);
  EXPECT_THROW(codec_by_id(CodecId::lz4).encode(in, -1, sink), InvalidArgument);
  EXPECT_THROW(codec_by_id(CodecId::zstd).encode(in, 23, sink), InvalidArgument);
  EXPECT_THROW(codec_by_id(CodecId::none).encode(in, 1, sink), InvalidArgument);
}

TEST(Codec, CorruptDataIsAFormatErrorNeverACrash) {
  const auto in = compressible(50000, 4);
  for (CodecId id : {CodecId::lz4, CodecId::zstd}) {
    const Codec& c = codec_by_id(id);
    std::vector<uint8_t> enc;
    c.encode(in, 0, enc);
    std::vector<uint8_t> out(in.size());
    // All-0xFF, truncated, and garbage: each must throw (lz4 has no checksum, so a random flip
    // may decode to other bytes of the right length; page checksums catch those in verify()).
    std::vector<uint8_t> ff(enc.size(), 0xFF);
    EXPECT_THROW(c.decode(ff, out), FormatError) << c.name();
    EXPECT_THROW(c.decode(std::span(enc).first(enc.size() / 2), out), FormatError) << c.name();
    EXPECT_THROW(c.decode({}, out), FormatError) << c.name();
    detail::SplitMix64 rng(5);
    for (int trial = 0; trial < 2000; ++trial) {
      auto bad = enc;
      for (int k = 0; k < 3; ++k) bad[rng.below(bad.size())] ^= static_cast<uint8_t>(rng.next());
      try {
        c.decode(bad, out);
      } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find(std::string(c.name())), std::string::npos);
      }
    }
  }
}

TEST(Codec, ParseChoicesAndSpecs) {
  EXPECT_EQ(CodecChoice::parse("zstd").id, CodecId::zstd);
  EXPECT_EQ(CodecChoice::parse("zstd:3").level, 3);
  EXPECT_EQ(CodecChoice::parse("zstd:-2").level, -2);
  EXPECT_EQ(CodecChoice::parse("lz4:9").id, CodecId::lz4);
  EXPECT_EQ(CodecChoice::parse("none").id, CodecId::none);
  EXPECT_EQ(CodecChoice::parse("zstd:3").to_string(), "zstd:3");
  EXPECT_EQ(CodecChoice::parse("lz4").to_string(), "lz4");
  for (const char* bad :
       {"", "zsd", "zstd:", "zstd:x", "zstd:3x", "zstd:99", "lz4:13", "none:1", "ZSTD", ":3"})
    EXPECT_THROW(CodecChoice::parse(bad), InvalidArgument) << bad;
  try {
    CodecChoice::parse("brotli");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("known: none, lz4, zstd"), std::string::npos) << e.what();
  }

  const std::vector<std::string> specs = {"image=zstd:3", "label=lz4"};
  const auto m = parse_compress_specs(specs);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m.at("image").level, 3);
  EXPECT_EQ(m.at("label").id, CodecId::lz4);
  for (const std::vector<std::string>& bad : {std::vector<std::string>{"image"},
                                              {"=zstd"},
                                              {"image=zstd:99"},
                                              {"image=foo"},
                                              {"image=lz4", "image=zstd"}}) {
    try {
      parse_compress_specs(bad);
      FAIL() << bad[0];
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("compression spec '"), std::string::npos) << e.what();
    }
  }
}

// ---- files ----

struct Expected {
  Schema schema;
  std::vector<std::vector<std::vector<uint8_t>>> values;  // [sample][field]
};

// One ndarray field per dtype (shape [3, 5]), a scalar, a bytes field (lengths 0..~3000, some
// compressible and some noise) and an incompressible ndarray.
Expected make_data(uint64_t n) {
  Expected e;
  for (int t = 0; t < kNumDTypes; ++t)
    e.schema.fields.push_back(
        FieldSpec::array(std::string("a_") + std::string(dtype_name(static_cast<DType>(t))),
                         static_cast<DType>(t), {3, 5}));
  e.schema.fields.push_back(FieldSpec::scalar("label", DType::i64));
  e.schema.fields.push_back(FieldSpec::bytes("blob"));
  e.schema.fields.push_back(FieldSpec::array("noise", DType::u8, {300}));
  detail::SplitMix64 rng(11);
  for (uint64_t s = 0; s < n; ++s) {
    std::vector<std::vector<uint8_t>> row;
    for (const FieldSpec& f : e.schema.fields) {
      if (f.name == "label") {
        std::vector<uint8_t> v(8);
        const int64_t l = static_cast<int64_t>(s);
        std::memcpy(v.data(), &l, 8);
        row.push_back(v);
      } else if (f.name == "blob") {
        const uint64_t len = s % 17 == 0 ? 0 : rng.below(3000);
        row.push_back(s % 3 == 0 ? noise(len, s) : compressible(len, s));
      } else if (f.name == "noise") {
        row.push_back(noise(300, s + 1000));
      } else {
        row.push_back(compressible(f.fixed_bytes(), s));
      }
    }
    e.values.push_back(std::move(row));
  }
  return e;
}

void write_expected(const std::string& path, const Expected& e, WriterOptions o) {
  o.fsync = false;
  Writer w(path, e.schema, o);
  std::vector<FieldData> row(e.schema.fields.size());
  for (const auto& sample : e.values) {
    for (size_t f = 0; f < sample.size(); ++f) row[f] = {sample[f].data(), sample[f].size()};
    w.append(row);
  }
  w.close();
}

std::map<std::string, CodecChoice> all_fields(const Schema& s, const std::string& codec) {
  std::map<std::string, CodecChoice> out;
  for (const auto& f : s.fields) out[f.name] = CodecChoice::parse(codec);
  return out;
}

void check_reader(const std::string& path, const Expected& e) {
  auto r = Reader::open(path);
  ASSERT_EQ(r->num_samples(), e.values.size());
  std::vector<uint8_t> scratch;
  for (uint64_t s = 0; s < r->num_samples(); ++s) {
    const auto views = r->sample(s, scratch);
    for (size_t f = 0; f < views.size(); ++f) {
      ASSERT_EQ(views[f].size, e.values[s][f].size()) << "sample " << s << " field " << f;
      ASSERT_EQ(r->layout().decoded_length(s, f), e.values[s][f].size());
      ASSERT_TRUE(std::equal(views[f].data, views[f].data + views[f].size, e.values[s][f].begin()))
          << "sample " << s << " field " << e.schema.fields[f].name;
    }
  }
  EXPECT_TRUE(r->verify().ok());
}

// Loads every field through the Loader on every usable backend and compares with `e`.
void check_loader(const std::string& path, const Expected& e, uint64_t batch_size = 16) {
  for (Backend b : {Backend::mmap, Backend::pread, Backend::io_uring, Backend::direct}) {
    if (const std::string why = backend_unavailable_reason(b, path); !why.empty()) {
      std::cerr << "  (skipping backend " << backend_name(b) << ": " << why << ")\n";
      continue;
    }
    SCOPED_TRACE(std::string(backend_name(b)));
    LoaderOptions o;
    o.batch_size = batch_size;
    o.num_threads = 2;
    o.backend = b;
    o.order = OrderKind::random;
    o.seed = 3;
    Loader loader(path, o);
    std::set<uint64_t> seen;
    while (Batch batch = loader.next()) {
      for (uint64_t i = 0; i < batch.size(); ++i) {
        const uint64_t id = batch.sample_ids()[i];
        seen.insert(id);
        for (size_t f = 0; f < e.schema.fields.size(); ++f) {
          const FieldBuffer& fb = batch.field(f);
          const auto& want = e.values[id][f];
          const uint8_t* got =
              fb.offsets ? fb.data + fb.offsets[i] : fb.data + i * e.schema.fields[f].fixed_bytes();
          const uint64_t len = fb.offsets ? fb.offsets[i + 1] - fb.offsets[i] : want.size();
          ASSERT_EQ(len, want.size()) << "sample " << id << " field " << f;
          ASSERT_TRUE(std::equal(got, got + len, want.begin()))
              << "sample " << id << " field " << e.schema.fields[f].name;
        }
      }
    }
    EXPECT_EQ(seen.size(), e.values.size());
  }
}

TEST(CodecFile, RoundTripEveryDtypeAndBytesThroughReaderAndLoader) {
  testing::TempDir dir;
  const Expected e = make_data(150);
  for (const std::string codec : {"lz4", "zstd", "lz4:9", "zstd:-1", "zstd:19"}) {
    SCOPED_TRACE(codec);
    const std::string path = dir.file("c.ferry");
    WriterOptions o;
    o.page_size = 16384;  // several pages, and blobs of up to ~3 KB near page ends
    o.codecs = all_fields(e.schema, codec);
    write_expected(path, e, o);
    auto r = Reader::open(path);
    EXPECT_EQ(r->layout().version(), 2u);
    EXPECT_TRUE(r->layout().any_compressed());
    const size_t a_u8 = r->schema().index_of("a_u8");
    EXPECT_EQ(r->layout().field_codec(a_u8), CodecChoice::parse(codec).id);
    const size_t blob = r->schema().index_of("blob");
    EXPECT_LT(r->layout().total_stored_bytes(blob), r->layout().total_decoded_bytes(blob));
    uint64_t want_top = 0;
    {
      std::vector<uint64_t> lens;
      for (const auto& row : e.values) lens.push_back(row[blob].size());
      std::sort(lens.rbegin(), lens.rend());
      for (int i = 0; i < 16; ++i) want_top += lens[i];
    }
    EXPECT_EQ(r->layout().top_k_decoded_bytes(blob, 16), want_top);
    uint64_t want_max = 0;
    for (const auto& row : e.values) want_max = std::max<uint64_t>(want_max, row[blob].size());
    EXPECT_EQ(r->layout().max_decoded_length(blob), want_max);
    check_reader(path, e);
    check_loader(path, e);
  }
}

TEST(CodecFile, MixedFieldsSubsetsAndLargeSamples) {
  testing::TempDir dir;
  const Expected e = make_data(60);
  const std::string path = dir.file("mixed.ferry");
  WriterOptions o;
  o.page_size = 4096;  // blobs + 12 arrays exceed a page: multi-page samples
  o.codecs = {{"blob", CodecChoice::parse("zstd")},
              {"a_f32", CodecChoice::parse("lz4")},
              {"label", CodecChoice::parse("none")}};
  write_expected(path, e, o);
  auto r = Reader::open(path);
  EXPECT_EQ(r->layout().field_codec(r->schema().index_of("label")), CodecId::none);
  EXPECT_EQ(r->layout().field_codec(r->schema().index_of("a_u16")), CodecId::none);
  // Plain fields stay aligned (zero-copy views); compressed ones are packed.
  for (uint64_t s = 0; s < r->num_samples(); ++s)
    for (size_t f = 0; f < r->schema().fields.size(); ++f)
      if (r->layout().field_codec(f) == CodecId::none) {
        EXPECT_EQ(r->layout().field_offset(s, f) % r->layout().alignment(), 0u);
      }
  check_reader(path, e);
  check_loader(path, e, 7);
  // Only some fields loaded, in another order: the compressed one among them.
  LoaderOptions lo;
  lo.batch_size = 8;
  lo.fields = {"blob", "label"};
  lo.backend = Backend::pread;
  Loader loader(path, lo);
  uint64_t count = 0;
  while (Batch b = loader.next()) {
    for (uint64_t i = 0; i < b.size(); ++i) {
      const uint64_t id = b.sample_ids()[i];
      const FieldBuffer& blob = b.field("blob");
      ASSERT_EQ(std::vector<uint8_t>(blob.data + blob.offsets[i], blob.data + blob.offsets[i + 1]),
                e.values[id][r->schema().index_of("blob")]);
      int64_t label;
      std::memcpy(&label, b.field("label").data + 8 * i, 8);
      ASSERT_EQ(static_cast<uint64_t>(label), id);
      ++count;
    }
  }
  EXPECT_EQ(count, 60u);
}

TEST(CodecFile, UncompressedFilesStayVersion1ByteForByte) {
  testing::TempDir dir;
  const Expected e = make_data(30);
  WriterOptions plain, nones;
  nones.codecs = all_fields(e.schema, "none");
  write_expected(dir.file("a.ferry"), e, plain);
  write_expected(dir.file("b.ferry"), e, nones);
  EXPECT_EQ(read_bytes(dir.file("a.ferry")), read_bytes(dir.file("b.ferry")));
  auto r = Reader::open(dir.file("a.ferry"));
  EXPECT_EQ(r->layout().version(), 1u);
  EXPECT_FALSE(r->layout().any_compressed());
  for (size_t f = 0; f < r->schema().fields.size(); ++f) {
    EXPECT_EQ(r->layout().field_codec(f), CodecId::none);
    EXPECT_EQ(r->layout().top_k_decoded_bytes(f, 5), r->layout().top_k_field_bytes(f, 5));
    EXPECT_EQ(r->layout().max_decoded_length(f), r->layout().max_field_length(f));
    for (uint64_t s = 0; s < r->num_samples(); ++s)
      EXPECT_EQ(r->layout().decoded_length(s, f), r->layout().sample_fields(s)[f].length);
  }
  check_reader(dir.file("a.ferry"), e);
  check_loader(dir.file("a.ferry"), e);
}

TEST(CodecFile, Version1SyntheticFilesStillLoad) {
  testing::TempDir dir;
  const std::string path = testing::synthetic_file(dir, "v1.ferry", 200, 100, 4096, true);
  auto r = Reader::open(path);
  ASSERT_EQ(r->layout().version(), 1u);
  LoaderOptions o;
  o.batch_size = 32;
  Loader loader(path, o);
  uint64_t n = 0;
  while (Batch b = loader.next()) n += b.size();
  EXPECT_EQ(n, 200u);
}

TEST(CodecFile, WriterRejectsBadChoices) {
  testing::TempDir dir;
  const Expected e = make_data(1);
  const auto expect_bad = [&](std::map<std::string, CodecChoice> codecs, const std::string& what) {
    WriterOptions o;
    o.codecs = std::move(codecs);
    try {
      Writer w(dir.file("bad.ferry"), e.schema, o);
      FAIL() << what;
    } catch (const InvalidArgument& err) {
      EXPECT_NE(std::string(err.what()).find(what), std::string::npos) << err.what();
    }
  };
  expect_bad({{"nope", CodecChoice::parse("lz4")}}, "no field named 'nope'");
  expect_bad({{"blob", CodecChoice{CodecId::zstd, 1000}}}, "level 1000");
  expect_bad({{"blob", CodecChoice{CodecId::lz4, 40}}}, "compression of field 'blob'");
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "no temporary file left behind";
}

// Locates sample `s`'s stored `field` in the file and overwrites it with 0xFF (the page
// checksum is left stale: open does not read pages, so the loader meets the bad bytes).
void smash(const std::string& path, uint64_t s, const std::string& field) {
  auto r = Reader::open(path);
  const size_t f = r->schema().index_of(field);
  const uint64_t off = r->layout().field_offset(s, f);
  const uint64_t len = r->layout().sample_fields(s)[f].length;
  auto bytes = read_bytes(path);
  std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(off),
            bytes.begin() + static_cast<std::ptrdiff_t>(off + len), 0xFF);
  write_bytes(path, bytes);
}

TEST(CodecFile, CorruptCompressedPayloadRaisesOrSkipsOnEveryBackend) {
  testing::TempDir dir;
  const Expected e = make_data(100);
  for (const std::string codec : {"lz4", "zstd"}) {
    SCOPED_TRACE(codec);
    const std::string path = dir.file("bad-" + codec + ".ferry");
    WriterOptions o;
    o.page_size = 8192;
    o.codecs = {{"a_u8", CodecChoice::parse(codec)}, {"blob", CodecChoice::parse(codec)}};
    write_expected(path, e, o);
    smash(path, 37, "a_u8");
    smash(path, 38, "blob");
    {
      auto r = Reader::open(path);
      std::vector<uint8_t> scratch;
      try {
        r->sample(37, scratch);
        FAIL();
      } catch (const FormatError& err) {
        const std::string m = err.what();
        EXPECT_NE(m.find(path), std::string::npos) << m;
        EXPECT_NE(m.find("sample 37"), std::string::npos) << m;
        EXPECT_NE(m.find("field 'a_u8'"), std::string::npos) << m;
        EXPECT_NE(m.find("codec " + codec), std::string::npos) << m;
      }
      EXPECT_NO_THROW(r->sample(36, scratch));
      EXPECT_FALSE(r->verify().ok());
    }
    for (Backend b : {Backend::mmap, Backend::pread, Backend::io_uring, Backend::direct}) {
      if (!backend_unavailable_reason(b, path).empty()) continue;
      SCOPED_TRACE(std::string(backend_name(b)));
      LoaderOptions lo;
      lo.batch_size = 10;
      lo.backend = b;
      lo.order = OrderKind::sequential;
      {
        Loader loader(path, lo);
        std::set<uint64_t> failed;
        for (int k = 0; k < 20; ++k) {
          try {
            Batch batch = loader.next();
            if (!batch) break;
          } catch (const SampleError& err) {
            failed.insert(err.sample());
            const std::string m = err.what();
            EXPECT_NE(m.find(path), std::string::npos) << m;
            EXPECT_NE(m.find("sample " + std::to_string(err.sample())), std::string::npos) << m;
            EXPECT_NE(m.find("decode failed"), std::string::npos) << m;
          }
        }
        EXPECT_EQ(failed, (std::set<uint64_t>{37}))
            << "the first bad sample of the batch raises; 38 shares its batch";
      }
      lo.on_error = OnError::skip;
      lo.order = OrderKind::random;
      Loader loader(path, lo);
      std::set<uint64_t> seen;
      while (Batch batch = loader.next())
        for (uint64_t id : batch.sample_ids()) seen.insert(id);
      EXPECT_EQ(seen.size(), 98u);
      EXPECT_FALSE(seen.count(37));
      EXPECT_FALSE(seen.count(38));
      EXPECT_EQ(loader.metrics().errors_skipped, 2u);
    }
  }
}

// Rewrites the index entry of sample `s`'s field `f` (a v2 entry: offset, stored, decoded) and
// fixes the index checksum in the footer, so only the new rule can reject the file.
void patch_index(const std::string& path, uint64_t s, size_t f, int which, uint64_t value) {
  auto r = Reader::open(path);
  HeaderPrefix h;
  r->source().read(0, sizeof h, &h);
  auto bytes = read_bytes(path);
  const uint64_t entry = index_entry_size(h.num_fields, h.version);
  std::memcpy(bytes.data() + h.index_offset + s * entry + 8 + 24 * f + 8 * which, &value, 8);
  const uint64_t sum = XXH64(bytes.data() + h.index_offset, h.index_size, 0);
  std::memcpy(bytes.data() + h.footer_offset + offsetof(Footer, index_xxh64), &sum, 8);
  write_bytes(path, bytes);
}

std::string open_error(const std::string& path) {
  try {
    Reader::open(path);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(CodecFile, OpenRejectsBadDecodedLengthsAndCodecIds) {
  testing::TempDir dir;
  const Expected e = make_data(10);
  const std::string good = dir.file("good.ferry");
  WriterOptions o;
  o.codecs = {{"a_u8", CodecChoice::parse("zstd")}, {"blob", CodecChoice::parse("lz4")}};
  write_expected(good, e, o);
  const auto original = read_bytes(good);
  const size_t a_u8 = e.schema.index_of("a_u8"), a_i8 = e.schema.index_of("a_i8"),
               blob = e.schema.index_of("blob");
  const std::string path = dir.file("p.ferry");

  write_bytes(path, original);
  patch_index(path, 4, a_u8, 2, 16);  // an ndarray that decodes to 16 bytes, schema says 15
  EXPECT_NE(open_error(path).find("sample 4 field 'a_u8' decodes to 16 bytes, schema says 15"),
            std::string::npos)
      << open_error(path);

  write_bytes(path, original);
  patch_index(path, 2, a_i8, 2, 14);  // a plain field whose decoded length is not its stored one
  EXPECT_NE(open_error(path).find("is uncompressed but records 14 decoded bytes"),
            std::string::npos)
      << open_error(path);

  write_bytes(path, original);
  patch_index(path, 1, blob, 2, kMaxDecodedLength + 1);
  EXPECT_NE(open_error(path).find("more than the"), std::string::npos) << open_error(path);

  // An unknown codec id in the schema block (header checksum fixed).
  auto bytes = original;
  HeaderPrefix h;
  std::memcpy(&h, bytes.data(), sizeof h);
  bytes[sizeof h + h.schema_size - h.num_fields + a_u8] = 9;
  std::memset(bytes.data() + offsetof(HeaderPrefix, header_xxh64), 0, 8);
  const uint64_t sum = XXH64(bytes.data(), sizeof h + h.schema_size, 0);
  std::memcpy(bytes.data() + offsetof(HeaderPrefix, header_xxh64), &sum, 8);
  write_bytes(path, bytes);
  EXPECT_NE(open_error(path).find("unknown codec id 9"), std::string::npos) << open_error(path);

  // A future version is still refused up front.
  bytes = original;
  bytes[8] = 3;
  write_bytes(path, bytes);
  EXPECT_NE(open_error(path).find("format version 3, this ferry reads versions 1 to 2"),
            std::string::npos)
      << open_error(path);
}

TEST(CodecFile, FieldDecodeHelper) {
  testing::TempDir dir;
  const Expected e = make_data(5);
  WriterOptions o;
  o.codecs = {{"blob", CodecChoice::parse("zstd")}};
  const std::string path = dir.file("h.ferry");
  write_expected(path, e, o);
  auto r = Reader::open(path);
  const Layout& L = r->layout();
  const size_t blob = r->schema().index_of("blob");
  const std::vector<size_t> fields = {blob, 0};
  EXPECT_TRUE(detail::any_compressed(L, fields));
  const std::vector<uint64_t> samples = {1, 2};
  std::vector<uint8_t> scratch;
  EXPECT_EQ(detail::compressed_stored_bytes(L, samples, fields),
            L.sample_fields(1)[blob].length + L.sample_fields(2)[blob].length);
  const auto stored = r->sample_stored(2, scratch);
  std::vector<uint8_t> out(L.decoded_length(2, blob));
  detail::decode_value(L, blob, {stored[blob].data, stored[blob].size}, out);
  EXPECT_EQ(out, e.values[2][blob]);
  out.push_back(0);
  EXPECT_THROW(detail::decode_field(L, 2, blob, {stored[blob].data, stored[blob].size}, out),
               FormatError);
}

// The codec path under random damage (what fuzz/reader_fuzz.cpp does at scale): every mutant of
// a compressed file opens with a clean error, or reads each sample (or fails it cleanly).
TEST(CodecFile, MutationsOfACompressedFileNeverCrash) {
  testing::TempDir dir;
  const Expected e = make_data(12);
  const std::string path = dir.file("m.ferry");
  WriterOptions o;
  o.page_size = 4096;
  o.codecs = {{"blob", CodecChoice::parse("lz4")},
              {"a_u8", CodecChoice::parse("zstd")},
              {"a_f64", CodecChoice::parse("lz4:9")}};
  write_expected(path, e, o);
  const auto good = read_bytes(path);
  detail::SplitMix64 rng(99);
  uint64_t opened = 0, sample_errors = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    auto bytes = good;
    const int flips = 1 + static_cast<int>(rng.below(4));
    for (int k = 0; k < flips; ++k)
      bytes[rng.below(bytes.size())] ^= static_cast<uint8_t>(1 + rng.below(255));
    try {
      auto r = Reader::open(std::shared_ptr<Source>(open_memory_source("m.ferry", bytes)));
      ++opened;
      std::vector<uint8_t> scratch;
      for (uint64_t s = 0; s < r->num_samples(); ++s) {
        try {
          r->sample(s, scratch);
        } catch (const FormatError& err) {
          ++sample_errors;
          EXPECT_NE(std::string(err.what()).find("m.ferry': sample " + std::to_string(s)),
                    std::string::npos)
              << err.what();
        }
      }
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find("m.ferry"), std::string::npos) << err.what();
    }
  }
  EXPECT_GT(opened, 0u);
  EXPECT_GT(sample_errors, 0u) << "no mutation reached a compressed payload";
}

}  // namespace
}  // namespace ferry
