// Runs the built `ferry` binary the way a user would and checks exit status, stdout and stderr.
// The binary's path comes from tools/CMakeLists.txt (FERRY_CLI); the environment variable
// FERRY_CLI overrides it, and without either the test looks for ../tools/ferry beside itself.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ferry/reader.h"
#include "test_util.h"

namespace ferry {
namespace {

std::string cli_path() {
  if (const char* env = std::getenv("FERRY_CLI"); env && *env) return env;
#ifdef FERRY_CLI
  return FERRY_CLI;
#else
  // build/<preset>/tests/cli_test -> build/<preset>/tools/ferry
  const auto self = std::filesystem::canonical("/proc/self/exe");
  return (self.parent_path().parent_path() / "tools" / "ferry").string();
#endif
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

struct CliResult {
  int status;  // exit status, or -1 if the process did not exit normally (a crash)
  std::string out, err;
};

/// Runs `ferry args...` with stdout and stderr captured in files (so neither is a terminal,
/// as in a pipeline: no progress bars expected).
CliResult ferry_cli(const testing::TempDir& dir, const std::vector<std::string>& args) {
  const auto quote = [](const std::string& s) {
    std::string q = "'";
    for (const char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  std::string cmd = quote(cli_path());
  for (const auto& a : args) cmd += " " + quote(a);
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  cmd += " >" + quote(out) + " 2>" + quote(err) + " </dev/null";
  const int rc = std::system(cmd.c_str());
  CliResult r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// A minimal JSON reader: enough to prove the output parses and to look fields up.
struct Json {
  enum class Type { null, boolean, number, string, array, object } type = Type::null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  // An object's members as parallel lists (a vector of an incomplete type is fine; a pair of one
  // is not).
  std::vector<std::string> keys;
  std::vector<Json> values;

  const Json& operator[](const std::string& key) const {
    for (size_t i = 0; i < keys.size(); ++i)
      if (keys[i] == key) return values[i];
    throw std::runtime_error("no key '" + key + "'");
  }
  bool has(const std::string& key) const {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : s_(text) {}
  Json parse() {
    Json v = value();
    skip_ws();
    if (pos_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error("JSON: " + what + " at offset " + std::to_string(pos_));
  }
  void skip_ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool eat(char c) {
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  bool literal(const std::string& word) {
    if (s_.compare(pos_, word.size(), word) != 0) return false;
    pos_ += word.size();
    return true;
  }
  std::string str() {
    expect('"');
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      char c = s_[pos_++];
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c == '\\') {
        if (pos_ >= s_.size()) fail("bad escape");
        c = s_[pos_++];
        if (c == 'u') {
          if (pos_ + 4 > s_.size()) fail("bad \\u escape");
          pos_ += 4;  // the tests never look inside escaped code points
          c = '?';
        } else if (c == 'n') {
          c = '\n';
        } else if (c == 't') {
          c = '\t';
        } else if (c == 'r') {
          c = '\r';
        } else if (c != '"' && c != '\\' && c != '/') {
          fail("bad escape");
        }
      }
      out += c;
    }
    expect('"');
    return out;
  }
  Json value() {
    skip_ws();
    Json v;
    if (pos_ >= s_.size()) fail("unexpected end");
    const char c = s_[pos_];
    if (c == '{') {
      v.type = Json::Type::object;
      ++pos_;
      if (eat('}')) return v;
      do {
        skip_ws();
        v.keys.push_back(str());
        expect(':');
        v.values.push_back(value());
      } while (eat(','));
      expect('}');
    } else if (c == '[') {
      v.type = Json::Type::array;
      ++pos_;
      if (eat(']')) return v;
      do v.array.push_back(value());
      while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.type = Json::Type::string;
      v.string = str();
    } else if (literal("true")) {
      v.type = Json::Type::boolean;
      v.boolean = true;
    } else if (literal("false")) {
      v.type = Json::Type::boolean;
    } else if (literal("null")) {
      v.type = Json::Type::null;
    } else {
      size_t used = 0;
      try {
        v.number = std::stod(s_.substr(pos_), &used);
      } catch (const std::exception&) {
        fail("bad value");
      }
      v.type = Json::Type::number;
      pos_ += used;
    }
    return v;
  }

  const std::string& s_;
  size_t pos_ = 0;
};

Json parse_json(const std::string& text) { return JsonParser(text).parse(); }

void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x5A));
}

size_t count_lines(const std::string& s) {
  size_t n = 0;
  for (const char c : s) n += c == '\n';
  return n;
}

TEST(CliBinary, Exists) {
  ASSERT_TRUE(std::filesystem::exists(cli_path())) << "ferry CLI not found at " << cli_path();
}

TEST(CliWrite, SyntheticThenInspectRoundTrip) {
  testing::TempDir dir;
  const std::string path = dir.file("syn.ferry");
  const CliResult w =
      ferry_cli(dir, {"write", "synthetic", path, "--samples", "500", "--shape", "3x8", "--dtype",
                      "f32", "--seed", "9", "--page-size", "16KiB", "--no-fsync"});
  ASSERT_EQ(w.status, 0) << w.err;
  EXPECT_NE(w.out.find("500 samples"), std::string::npos) << w.out;
  EXPECT_EQ(w.err.find('\r'), std::string::npos) << "progress bar drawn on a pipe";

  // The bytes on disk are exactly the synthetic contents.
  const auto reader = Reader::open(path);
  ASSERT_EQ(reader->num_samples(), 500u);
  EXPECT_EQ(reader->layout().page_size(), 16384u);
  std::vector<uint8_t> scratch, expected(3 * 8 * 4);
  for (uint64_t s = 0; s < 500; s += 37) {
    const auto fields = reader->sample(s, scratch);
    synthetic_fill(9, s, expected.data(), expected.size());
    ASSERT_EQ(fields[0].size, expected.size());
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), fields[0].data)) << "sample " << s;
  }

  const CliResult text = ferry_cli(dir, {"inspect", path});
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("500"), std::string::npos);
  EXPECT_NE(text.out.find("f32"), std::string::npos);
  EXPECT_NE(text.out.find("page table"), std::string::npos);

  const CliResult js = ferry_cli(dir, {"inspect", path, "--json", "--verify"});
  ASSERT_EQ(js.status, 0) << js.err;
  Json j;
  ASSERT_NO_THROW(j = parse_json(js.out)) << js.out;
  EXPECT_EQ(j["num_samples"].number, 500);
  EXPECT_EQ(j["page_size"].number, 16384);
  EXPECT_EQ(j["file_size"].number, static_cast<double>(std::filesystem::file_size(path)));
  ASSERT_EQ(j["schema"].array.size(), 2u);
  EXPECT_EQ(j["schema"].array[0]["name"].string, "data");
  EXPECT_EQ(j["schema"].array[0]["dtype"].string, "f32");
  ASSERT_EQ(j["schema"].array[0]["shape"].array.size(), 2u);
  EXPECT_EQ(j["schema"].array[0]["shape"].array[1].number, 8);
  EXPECT_TRUE(j["verify"]["ok"].boolean);
  EXPECT_EQ(j["verify"]["pages_checked"].number, static_cast<double>(reader->layout().num_pages()));
  // The sections cover the file, apart from alignment padding.
  double covered = j["padding_bytes"].number;
  for (const Json& sec : j["sections"].values) covered += sec["size"].number;
  EXPECT_EQ(covered, j["file_size"].number);
}

TEST(CliWrite, VariableSyntheticAndSizeSuffixes) {
  testing::TempDir dir;
  for (const auto& [text, bytes] : std::vector<std::pair<std::string, uint64_t>>{
           {"4096", 4096}, {"8K", 8192}, {"64KiB", 65536}, {"1M", 1 << 20}, {"2MiB", 2 << 20}}) {
    const std::string path = dir.file("v" + text + ".ferry");
    const CliResult w = ferry_cli(dir, {"write", "synthetic", path, "-n", "50", "--variable",
                                        "--page-size", text, "--no-fsync"});
    ASSERT_EQ(w.status, 0) << text << ": " << w.err;
    const auto reader = Reader::open(path);
    EXPECT_EQ(reader->layout().page_size(), bytes) << text;
    EXPECT_EQ(reader->schema().fields[0].kind, FieldKind::bytes);
  }
}

TEST(CliWrite, IdxImport) {
  testing::TempDir dir;
  // 5 images of 2×3 u8 and 5 u8 labels, raw (uncompressed) IDX, big-endian header.
  const std::string images = dir.file("img.idx"), labels = dir.file("lab.idx");
  {
    std::ofstream f(images, std::ios::binary);
    const unsigned char head[] = {0, 0, 0x08, 3, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 3};
    f.write(reinterpret_cast<const char*>(head), sizeof head);
    for (int i = 0; i < 30; ++i) f.put(static_cast<char>(i));
    std::ofstream l(labels, std::ios::binary);
    const unsigned char lhead[] = {0, 0, 0x08, 1, 0, 0, 0, 5};
    l.write(reinterpret_cast<const char*>(lhead), sizeof lhead);
    for (int i = 0; i < 5; ++i) l.put(static_cast<char>(9 - i));
  }
  const std::string out = dir.file("idx.ferry");
  const CliResult w = ferry_cli(
      dir, {"write", "idx", out, "--images", images, "--labels", labels, "--page-size", "4K"});
  ASSERT_EQ(w.status, 0) << w.err;
  const CliResult js = ferry_cli(dir, {"inspect", out, "--json"});
  ASSERT_EQ(js.status, 0) << js.err;
  const Json j = parse_json(js.out);
  EXPECT_EQ(j["num_samples"].number, 5);
  EXPECT_EQ(j["schema"].array[0]["name"].string, "image");
  EXPECT_EQ(j["schema"].array[0]["shape"].array.size(), 2u);
  EXPECT_EQ(j["schema"].array[1]["name"].string, "label");
  EXPECT_TRUE(j["verify"].type == Json::Type::null);

  const auto reader = Reader::open(out);
  std::vector<uint8_t> scratch;
  const auto s3 = reader->sample(3, scratch);
  EXPECT_EQ(s3[0].data[0], 18);
  EXPECT_EQ(s3[1].data[0], 6);
}

TEST(CliInspect, VerifyFailsOnCorruptPageAndNamesFile) {
  testing::TempDir dir;
  const std::string path = testing::synthetic_file(dir, "bad.ferry", 200, 64, 4096);
  const uint64_t data_offset = Reader::open(path)->layout().data_offset();
  flip_byte(path, data_offset + 10);  // inside page 0's data: only the page checksum sees it

  const CliResult plain = ferry_cli(dir, {"inspect", path});
  EXPECT_EQ(plain.status, 0) << "without --verify the pages are not read: " << plain.err;

  const CliResult v = ferry_cli(dir, {"inspect", path, "--verify"});
  EXPECT_NE(v.status, 0);
  EXPECT_NE(v.err.find(path), std::string::npos) << v.err;
  EXPECT_NE(v.err.find("page 0"), std::string::npos) << v.err;
  EXPECT_NE(v.out.find("FAILED"), std::string::npos) << v.out;

  const CliResult js = ferry_cli(dir, {"inspect", path, "--verify", "--json"});
  EXPECT_NE(js.status, 0);
  const Json j = parse_json(js.out);
  EXPECT_FALSE(j["verify"]["ok"].boolean);
  ASSERT_EQ(j["verify"]["errors"].array.size(), 1u);
}

TEST(CliInspect, CorruptHeaderIsOneClearLine) {
  testing::TempDir dir;
  const std::string path = testing::synthetic_file(dir, "hdr.ferry", 20, 64, 4096);
  flip_byte(path, 40);  // inside the header prefix: its checksum fails at open
  const CliResult r = ferry_cli(dir, {"inspect", path, "--verify"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_EQ(r.err.rfind("ferry: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("header"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST(CliInspect, MissingFileIsOneClearLine) {
  testing::TempDir dir;
  const std::string path = dir.file("does-not-exist.ferry");
  const CliResult r = ferry_cli(dir, {"inspect", path});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find(path), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No such file"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("terminate"), std::string::npos) << r.err;
}

TEST(CliUsage, BadOptionsAreUsageErrors) {
  testing::TempDir dir;
  const CliResult bogus = ferry_cli(dir, {"inspect", "--bogus", "x.ferry"});
  EXPECT_EQ(bogus.status, 2);
  EXPECT_NE(bogus.err.find("--bogus"), std::string::npos) << bogus.err;

  const CliResult none = ferry_cli(dir, {});
  EXPECT_EQ(none.status, 2) << none.err;

  const CliResult backend = ferry_cli(dir, {"bench", "x.ferry", "--backend", "floppy"});
  EXPECT_EQ(backend.status, 2);
  EXPECT_NE(backend.err.find("floppy"), std::string::npos) << backend.err;

  const CliResult size =
      ferry_cli(dir, {"write", "synthetic", dir.file("s.ferry"), "-n", "5", "--page-size", "2XB"});
  EXPECT_EQ(size.status, 2);
  EXPECT_NE(size.err.find("2XB"), std::string::npos) << size.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("s.ferry")));

  const CliResult missing = ferry_cli(dir, {"write", "synthetic", dir.file("s.ferry")});
  EXPECT_EQ(missing.status, 2);
  EXPECT_NE(missing.err.find("--samples"), std::string::npos) << missing.err;

  const CliResult help = ferry_cli(dir, {"bench", "--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("--step-ms"), std::string::npos) << help.out;
}

TEST(CliWrite, BadPageSizeValueIsAnErrorNotACrash) {
  testing::TempDir dir;
  // 3000 parses as a size but is not a power of two: the writer rejects it.
  const CliResult r =
      ferry_cli(dir, {"write", "synthetic", dir.file("p.ferry"), "-n", "5", "--page-size", "3000"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("page_size"), std::string::npos) << r.err;
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
}

TEST(CliBench, JsonWithoutBaselineParses) {
  testing::TempDir dir;
  const std::string path = testing::synthetic_file(dir, "tiny.ferry", 1000, 64, 4096);
  const CliResult r =
      ferry_cli(dir, {"bench", path, "--json", "--no-baseline", "--batch-size", "64", "--threads",
                      "2", "--order", "random", "--epochs", "2"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.find('\r'), std::string::npos);
  EXPECT_EQ(count_lines(r.out), 1u) << r.out;
  Json j;
  ASSERT_NO_THROW(j = parse_json(r.out)) << r.out;
  EXPECT_TRUE(j["baseline"].type == Json::Type::null);
  EXPECT_TRUE(j["speedup"].type == Json::Type::null);
  EXPECT_EQ(j["loader"]["samples"].number, 2000);
  EXPECT_EQ(j["loader"]["batches"].number, 2 * 16);  // ceil(1000 / 64) per epoch
  EXPECT_GT(j["loader"]["samples_per_second"].number, 0);
  EXPECT_TRUE(j["loader"]["metrics"].has("consumer_wait_fraction"));
  EXPECT_EQ(j["order"].string, "random");
}

TEST(CliBench, BaselineAndLoaderHumanReport) {
  testing::TempDir dir;
  const std::string path = testing::synthetic_file(dir, "small.ferry", 2000, 128, 8192);
  const CliResult r =
      ferry_cli(dir, {"bench", path, "--batch-size", "100", "--step-ms", "0.2", "--threads", "2"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("synchronous"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("speedup"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("consumer idle"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bottleneck"), std::string::npos) << r.out;

  const CliResult js = ferry_cli(
      dir, {"bench", path, "--json", "--batch-size", "100", "--spin", "--step-ms", "0.1"});
  ASSERT_EQ(js.status, 0) << js.err;
  const Json j = parse_json(js.out);
  EXPECT_EQ(j["baseline"]["samples"].number, 2000);
  EXPECT_EQ(j["loader"]["samples"].number, 2000);
  EXPECT_GT(j["speedup"].number, 0);
  EXPECT_TRUE(j["spin"].boolean);
}

TEST(CliBench, MissingFileIsOneClearLine) {
  testing::TempDir dir;
  const CliResult r = ferry_cli(dir, {"bench", dir.file("nothing.ferry"), "--no-baseline"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("nothing.ferry"), std::string::npos) << r.err;
}

TEST(Cli, WriteCompressedAndInspectCodecs) {
  testing::TempDir dir;
  const std::string path = dir.file("z.ferry");
  const CliResult w = ferry_cli(
      dir, {"write", "synthetic", path, "--samples", "300", "--shape", "100", "--page-size", "8KiB",
            "--seed", "4", "--no-fsync", "--compress", "data=zstd:3", "--compress", "label=lz4"});
  ASSERT_EQ(w.status, 0) << w.err;
  const auto reader = Reader::open(path);
  EXPECT_EQ(reader->layout().version(), 2u);
  EXPECT_EQ(reader->layout().field_codec(0), CodecId::zstd);
  EXPECT_EQ(reader->layout().field_codec(1), CodecId::lz4);
  std::vector<uint8_t> scratch, expected(100);
  for (uint64_t s = 0; s < 300; s += 13) {
    const auto fields = reader->sample(s, scratch);
    synthetic_fill(4, s, expected.data(), expected.size());
    ASSERT_EQ(fields[0].size, expected.size());
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), fields[0].data)) << "sample " << s;
    int64_t label;
    std::memcpy(&label, fields[1].data, 8);
    EXPECT_EQ(label, static_cast<int64_t>(s));
  }

  const CliResult text = ferry_cli(dir, {"inspect", path, "--verify"});
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("ferry v2"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("codec zstd"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("codec lz4"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("30,000 decoded = ratio"), std::string::npos) << text.out;

  const CliResult js = ferry_cli(dir, {"inspect", path, "--json"});
  ASSERT_EQ(js.status, 0) << js.err;
  Json j;
  ASSERT_NO_THROW(j = parse_json(js.out)) << js.out;
  EXPECT_EQ(j["format_version"].number, 2);
  EXPECT_EQ(j["schema"].array[0]["codec"].string, "zstd");
  EXPECT_EQ(j["schema"].array[0]["decoded_bytes"].number, 30000);
  EXPECT_EQ(j["schema"].array[0]["stored_bytes"].number,
            static_cast<double>(reader->layout().total_stored_bytes(0)));
  EXPECT_GT(j["schema"].array[0]["compression_ratio"].number, 0.9);  // random data: ~1
  EXPECT_EQ(j["schema"].array[1]["codec"].string, "lz4");

  // Uncompressed writes stay version 1 and report codec none, ratio 1.
  const std::string plain = dir.file("p.ferry");
  ASSERT_EQ(ferry_cli(dir, {"write", "synthetic", plain, "--samples", "10", "--no-fsync"}).status,
            0);
  const CliResult pj = ferry_cli(dir, {"inspect", plain, "--json"});
  ASSERT_NO_THROW(j = parse_json(pj.out)) << pj.out;
  EXPECT_EQ(j["format_version"].number, 1);
  EXPECT_EQ(j["schema"].array[0]["codec"].string, "none");
  EXPECT_EQ(j["schema"].array[0]["compression_ratio"].number, 1);
}

TEST(Cli, BadCompressSpecsAreClearErrors) {
  testing::TempDir dir;
  const std::string path = dir.file("bad.ferry");
  const auto run = [&](const std::string& spec) {
    return ferry_cli(dir, {"write", "synthetic", path, "--samples", "10", "--compress", spec});
  };
  struct Case {
    std::string spec;
    int status;
    std::string message;
  };
  for (const Case& c : {Case{"data", 2, "expected FIELD=CODEC[:LEVEL]"},
                        Case{"data=gzip", 2, "unknown codec 'gzip' (known: none, lz4, zstd)"},
                        Case{"data=zstd:99", 2, "level 99 out of range"},
                        Case{"data=zstd:fast", 2, "level 'fast' is not an integer"},
                        Case{"nope=lz4", 1, "no field named 'nope' (fields: data, label)"}}) {
    const CliResult r = run(c.spec);
    EXPECT_EQ(r.status, c.status) << c.spec << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.spec << ": " << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".bad.ferry.tmp"), std::string::npos)
        << "temporary file left behind";
}

}  // namespace
}  // namespace ferry
