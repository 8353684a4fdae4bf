// Image ops: decode of every JPEG/PNG variant, the variable-shape intermediate, crop sampling,
// crop-aware (fused) decode against full decode + crop, argument validation and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "ferry/error.h"
#include "ferry/pipeline.h"

namespace ferry {
namespace {

std::vector<uint8_t> fixture(const std::string& name) {
  std::ifstream f(std::string(FERRY_SOURCE_DIR) + "/fuzz/image_corpus/" + name, std::ios::binary);
  EXPECT_TRUE(f.good()) << name;
  return {std::istreambuf_iterator<char>(f), {}};
}

FieldPipeline chain(const std::string& ops_json, uint64_t max_size = 1 << 20) {
  auto spec = parse_pipeline(R"({"field":"image","ops":)" + ops_json + "}");
  return FieldPipeline(spec[0], ValueSpec::bytes(max_size));
}

std::vector<uint8_t> run(const FieldPipeline& p, const std::vector<uint8_t>& in,
                         uint64_t sample = 0) {
  SampleRng rng(7, 0, sample);
  Arena arena;
  SampleContext ctx{sample, 0, rng, arena};
  std::vector<uint8_t> out(p.output().max_bytes());
  out.resize(p.run(in, out, ctx));
  return out;
}

double psnr(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  double se = 0;
  for (size_t i = 0; i < a.size(); ++i) se += (a[i] - b[i]) * double(a[i] - b[i]);
  return se == 0 ? 99.0 : 10 * std::log10(255.0 * 255.0 / (se / a.size()));
}

TEST(ImageDecode, EveryVariantDecodesToTheAskedChannels) {
  for (const char* name : {"rgb420.jpg", "rgb444.jpg", "progressive.jpg", "gray.jpg", "cmyk.jpg",
                           "rgb.png", "gray.png", "palette.png", "rgba.png", "gray16.png"}) {
    for (auto [mode, c] : {std::pair{"rgb", 3}, {"gray", 1}}) {
      const auto p = chain(std::string(R"([{"op":"decode","mode":")") + mode +
                           R"("},{"op":"resize","size":[61,97]}])");
      EXPECT_EQ(p.output(), ValueSpec::array(DType::u8, {61, 97, uint64_t(c)})) << name;
      const auto out = run(p, fixture(name));
      EXPECT_EQ(out.size(), 61u * 97 * c) << name;
    }
  }
}

TEST(ImageDecode, AllVariantsAgreeWithTheRgbPng) {
  // Same picture in every container: the decodes agree with the lossless PNG within JPEG loss.
  const auto p = chain(R"([{"op":"decode"},{"op":"resize","size":[61,97]}])");
  const auto ref = run(p, fixture("rgb.png"));
  EXPECT_EQ(run(p, fixture("palette.png")).size(), ref.size());
  EXPECT_GT(psnr(run(p, fixture("rgba.png")), ref), 60);
  for (const char* name : {"rgb420.jpg", "rgb444.jpg", "progressive.jpg", "cmyk.jpg"})
    EXPECT_GT(psnr(run(p, fixture(name)), ref), 24) << name;
  const auto g = chain(R"([{"op":"decode","mode":"gray"},{"op":"resize","size":[61,97]}])");
  EXPECT_GT(psnr(run(g, fixture("gray16.png")), run(g, fixture("gray.png"))), 40);
}

TEST(ImageDecode, ABareDecodeChainFailsAtConstructionNamingFieldAndOp) {
  try {
    chain(R"([{"op":"decode"}])");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("field 'image': op 0 'decode'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("fixed shape"), std::string::npos) << e.what();
  }
  EXPECT_THROW(chain(R"([{"op":"decode"},{"op":"resize","size":256}])"), InvalidArgument);
  EXPECT_THROW(chain(R"([{"op":"decode","scaled":false},{"op":"normalize","mean":[0],"std":[1]}])"),
               InvalidArgument);
  EXPECT_NO_THROW(
      chain(R"([{"op":"decode"},{"op":"resize","size":256},{"op":"center_crop","size":224}])"));
}

TEST(ImageOps, ArgumentValidation) {
  for (const char* bad : {R"({"op":"decode","mode":"cmyk"})", R"({"op":"decode","max_pixels":0})",
                          R"({"op":"decode","porb":1})", R"({"op":"resize","size":[1,2,3]})",
                          R"({"op":"resize","size":0})", R"({"op":"center_crop","size":-4})",
                          R"({"op":"random_resized_crop","size":224,"scale":[0.9,0.1]})",
                          R"({"op":"random_resized_crop","size":224,"ratio":[0,1]})",
                          R"({"op":"random_horizontal_flip","p":2})",
                          R"({"op":"color_jitter","brightness":-1})", R"({"op":"to_chw","x":1})"})
    EXPECT_THROW(chain(std::string("[") + bad + R"(,{"op":"resize","size":[8,8]}])"),
                 InvalidArgument)
        << bad;
}

TEST(ImageOps, FusedDecodeAgreesWithFullDecodeThenCrop) {
  const auto photo = fixture("photo640.jpg");
  for (const char* geo :
       {R"({"op":"random_resized_crop","size":224})", R"({"op":"random_resized_crop","size":64})",
        R"({"op":"center_crop","size":200})", R"({"op":"resize","size":[120,160]})"}) {
    // An unfusable op between decode and the crop keeps the chain unfused.
    const auto full =
        chain(std::string(R"([{"op":"decode","scaled":false},{"op":"resize","size":[480,640]},)") +
              geo + "]");
    const auto exact = chain(std::string(R"([{"op":"decode","scaled":false},)") + geo + "]");
    const auto scaled = chain(std::string(R"([{"op":"decode"},)") + geo + "]");
    EXPECT_EQ(exact.size(), 1u);  // fused into decode
    for (uint64_t s = 0; s < 6; ++s) {
      const auto a = run(full, photo, s), b = run(exact, photo, s), c = run(scaled, photo, s);
      EXPECT_GT(psnr(a, b), 45) << geo << " sample " << s;  // same pixels, iMCU-cropped decode
      EXPECT_GT(psnr(a, c), 28) << geo << " sample " << s;  // DCT-scaled decode
    }
  }
}

TEST(ImageOps, ValidationChainFusesAndMatchesUnfused) {
  const auto photo = fixture("photo640.jpg");
  const auto fused = chain(
      R"([{"op":"decode","scaled":false},{"op":"resize","size":256},{"op":"center_crop","size":224}])");
  EXPECT_EQ(fused.size(), 1u);
  EXPECT_EQ(fused.output(), ValueSpec::array(DType::u8, {224, 224, 3}));
  const auto unfused = chain(
      R"([{"op":"decode","scaled":false},{"op":"resize","size":[480,640]},{"op":"resize","size":256},{"op":"center_crop","size":224}])");
  EXPECT_GT(psnr(run(fused, photo), run(unfused, photo)), 40);
}

TEST(ImageOps, RandomResizedCropIsDeterministicPerSampleAndVaries) {
  const auto p = chain(
      R"([{"op":"decode"},{"op":"random_resized_crop","size":32},{"op":"random_horizontal_flip"}])");
  const auto photo = fixture("photo640.jpg");
  EXPECT_EQ(run(p, photo, 3), run(p, photo, 3));
  int differ = 0;
  for (uint64_t s = 0; s < 8; ++s) differ += run(p, photo, s) != run(p, photo, s + 1);
  EXPECT_GE(differ, 7);
}

TEST(ImageOps, ToChwAndNormalizeOnHwc) {
  const auto p = chain(
      R"([{"op":"decode"},{"op":"center_crop","size":[20,30]},{"op":"normalize","mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225],"scale":0.00392156862745098},{"op":"to_chw"}])");
  EXPECT_EQ(p.output(), ValueSpec::array(DType::f32, {3, 20, 30}));
  const auto raw =
      run(chain(R"([{"op":"decode"},{"op":"center_crop","size":[20,30]}])"), fixture("rgb.png"));
  const auto out = run(p, fixture("rgb.png"));
  const float* f = reinterpret_cast<const float*>(out.data());
  // channel 1 of pixel (2, 5)
  const float want = (raw[(2 * 30 + 5) * 3 + 1] / 255.f - 0.456f) / 0.224f;
  EXPECT_NEAR(f[1 * 600 + 2 * 30 + 5], want, 1e-5);
}

TEST(ImageBadInput, EveryCaseIsAClearErrorNeverACrash) {
  const auto p = chain(R"([{"op":"decode"},{"op":"random_resized_crop","size":16}])");
  const auto u = chain(R"([{"op":"decode","scaled":false},{"op":"resize","size":[16,16]}])");
  for (auto [name, cause] : {std::pair{"truncated.jpg", "truncated"},
                             {"truncated.png", "PNG"},
                             {"not_an_image.bin", "not a JPEG or PNG"},
                             {"bomb.jpg", "max_pixels"}})
    for (const auto* c : {&p, &u}) {
      try {
        run(*c, fixture(name));
        ADD_FAILURE() << name;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(cause), std::string::npos) << e.what();
      }
    }
  // Every prefix of a real JPEG and PNG: an error or a decode, never a crash.
  for (const char* name : {"rgb420.jpg", "progressive.jpg", "palette.png"}) {
    const auto data = fixture(name);
    for (size_t n = 0; n < data.size(); n += 37) {
      std::vector<uint8_t> cut(data.begin(), data.begin() + n);
      try {
        run(p, cut);
      } catch (const Error&) {
      }
    }
  }
}

}  // namespace
}  // namespace ferry
