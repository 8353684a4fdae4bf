// Ops and pipelines: setup errors name the field and op, ops change shape and dtype (the pool is
// sized from the output), random ops are deterministic for any thread count and across resume,
// the arena stays bounded. Suites named Pipeline* also run under TSan (scripts/run-tests).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "ferry/error.h"
#include "ferry/loader.h"
#include "ferry/op.h"
#include "ferry/pipeline.h"
#include "ops/element.h"
#include "test_util.h"

namespace ferry {
namespace {

using testing::TempDir;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

ValueSpec u8_image() { return ValueSpec::array(DType::u8, {4, 6, 3}); }

uint64_t run_op(const Op& op, std::span<const uint8_t> in, std::vector<uint8_t>& out,
                uint64_t id = 0) {
  SampleRng rng(1, 0, id);
  Arena arena;
  SampleContext ctx{id, 0, rng, arena};
  return op.run(in, out, ctx);
}

TEST(OpSetup, UnknownOpsAndBadArgumentsNameTheFieldAndOp) {
  const ValueSpec in = u8_image();
  auto make = [&](std::string json) { FieldPipeline(parse_pipeline(json)[0], in); };
  EXPECT_NE(error_of([&] {
              make(R"({"field":"image","ops":[{"op":"blur"}]})");
            }).find("unknown op 'blur'"),
            std::string::npos);
  const std::string bad_p =
      error_of([&] { make(R"({"field":"image","ops":[{"op":"flip","p":2}]})"); });
  EXPECT_NE(bad_p.find("field 'image'"), std::string::npos) << bad_p;
  EXPECT_NE(bad_p.find("'p'"), std::string::npos) << bad_p;
  const std::string typo =
      error_of([&] { make(R"({"field":"image","ops":[{"op":"flip","porb":0.5}]})"); });
  EXPECT_NE(typo.find("unknown argument 'porb'"), std::string::npos) << typo;
  const std::string chan = error_of(
      [&] { make(R"({"field":"image","ops":[{"op":"normalize","mean":[1,2],"std":[1,1]}]})"); });
  EXPECT_NE(chan.find("op 0 'normalize'"), std::string::npos) << chan;
  EXPECT_NE(chan.find("axis"), std::string::npos) << chan;
  EXPECT_NE(error_of([&] {
              make(R"({"field":"image","ops":[{"op":"cast","dtype":"complex"}]})");
            }).find("dtype"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              make(R"({"field":"image","ops":[{"op":"reshape","shape":[5,5]}]})");
            }).find("reshape"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_pipeline("[{\"ops\": []}]"); }).find("field"), std::string::npos);
  EXPECT_NE(error_of([] { parse_pipeline("not json"); }).find("JSON"), std::string::npos);
  EXPECT_NE(error_of([] { parse_pipeline(R"([{"field":"a"},{"field":"a"}])"); }).find("two chains"),
            std::string::npos);
  // An array op on a bytes field says to decode first.
  EXPECT_NE(error_of([] {
              FieldPipeline(
                  parse_pipeline(R"({"field":"b","ops":[{"op":"cast","dtype":"f32"}]})")[0],
                  ValueSpec::bytes(100));
            }).find("decode"),
            std::string::npos);
}

TEST(OpRun, CastConvertsEveryDtypeWithDefinedRounding) {
  const std::vector<float> values = {0.f, 1.5f, -2.75f, 255.9f, 1e9f, -1e9f, NAN};
  std::vector<uint8_t> in(values.size() * 4);
  std::memcpy(in.data(), values.data(), in.size());
  auto cast = make_op("cast", OpArgs("cast", R"({"dtype":"uint8"})"));
  ASSERT_EQ(cast->setup(ValueSpec::array(DType::f32, {values.size()})),
            ValueSpec::array(DType::u8, {values.size()}));
  std::vector<uint8_t> out(values.size());
  EXPECT_EQ(run_op(*cast, in, out), values.size());
  EXPECT_EQ(out, (std::vector<uint8_t>{0, 1, 0, 255, 255, 0, 0}));  // truncate, saturate, NaN -> 0
  for (const char* t : {"f16", "bf16", "f64", "i8", "i16", "i32", "i64", "u16", "u32", "u64"}) {
    auto to = make_op("cast", OpArgs("cast", std::string(R"({"dtype":")") + t + "\"}"));
    const ValueSpec spec = to->setup(ValueSpec::array(DType::f32, {values.size()}));
    std::vector<uint8_t> o(spec.max_bytes());
    EXPECT_EQ(run_op(*to, in, o), spec.max_bytes()) << t;
    auto back = make_op("cast", OpArgs("cast", R"({"dtype":"float32"})"));
    back->setup(spec);
    std::vector<uint8_t> f(values.size() * 4);
    run_op(*back, o, f);
    float v1;
    std::memcpy(&v1, f.data() + 4, 4);
    if (std::string(t).starts_with("f") || std::string(t).starts_with("b")) {
      EXPECT_FLOAT_EQ(v1, 1.5f) << t;
    }
  }
  EXPECT_EQ(ops::to_float(ops::half_from_float(65504.f)), 65504.f);
  EXPECT_TRUE(std::isinf(ops::to_float(ops::half_from_float(1e6f))));
  EXPECT_EQ(ops::to_float(ops::bfloat16_from_float(3.0f)), 3.0f);
}

TEST(OpRun, NormalizePerChannelAlongAnyAxis) {
  // HWC, channels last.
  std::vector<uint8_t> px = {10, 20, 30, 40, 50, 60};  // [1, 2, 3]
  auto hwc = make_op("normalize", OpArgs("normalize", R"({"mean":[10,20,30],"std":[2,4,5]})"));
  EXPECT_EQ(hwc->setup(ValueSpec::array(DType::u8, {1, 2, 3})),
            ValueSpec::array(DType::f32, {1, 2, 3}));
  std::vector<uint8_t> out(6 * 4);
  run_op(*hwc, px, out);
  std::vector<float> f(6);
  std::memcpy(f.data(), out.data(), out.size());
  EXPECT_EQ(f, (std::vector<float>{0, 0, 0, 15, 7.5, 6}));
  // CHW, axis 0, with scale (ToTensor's 1/255).
  auto chw = make_op("normalize",
                     OpArgs("normalize", R"({"mean":[0,1],"std":[1,1],"axis":0,"scale":0.5})"));
  chw->setup(ValueSpec::array(DType::u8, {2, 3}));
  std::vector<uint8_t> in2 = {2, 4, 6, 2, 4, 6};
  std::vector<uint8_t> out2(6 * 4);
  run_op(*chw, in2, out2);
  std::memcpy(f.data(), out2.data(), out2.size());
  EXPECT_EQ(f, (std::vector<float>{1, 2, 3, 0, 1, 2}));
  auto bf = make_op("normalize", OpArgs("normalize", R"({"mean":0,"std":1,"dtype":"bfloat16"})"));
  EXPECT_EQ(bf->setup(ValueSpec::array(DType::u8, {3})).dtype, DType::bf16);
}

TEST(OpFusion, CastToFloat32ThenNormalizeIsOnePassWithTheSameBytes) {
  const ValueSpec in = ValueSpec::array(DType::u8, {4, 5});
  const std::string chain = R"({"field":"x","ops":[{"op":"cast","dtype":"float32"},
      {"op":"normalize","mean":[72.93],"std":[90.0],"scale":0.00392156862745098}]})";
  FieldPipeline fused(parse_pipeline(chain)[0], in);
  EXPECT_EQ(fused.size(), 1u);
  EXPECT_EQ(fused.op(0).name(), "normalize");
  EXPECT_EQ(fused.output(), ValueSpec::array(DType::f32, {4, 5}));
  std::vector<uint8_t> x(20);
  for (int i = 0; i < 20; ++i) x[i] = static_cast<uint8_t>(i * 13);
  // Reference: the two ops run one after the other.
  auto cast = make_op("cast", OpArgs("cast", R"({"dtype":"float32"})"));
  auto norm =
      make_op("normalize",
              OpArgs("normalize", R"({"mean":[72.93],"std":[90.0],"scale":0.00392156862745098})"));
  norm->setup(cast->setup(in));
  std::vector<uint8_t> mid(80), want(80), got(80);
  run_op(*cast, x, mid);
  run_op(*norm, mid, want);
  SampleRng rng(0, 0, 0);
  Arena arena;
  SampleContext ctx{0, 0, rng, arena};
  fused.run(x, got, ctx);
  EXPECT_EQ(got, want);
  // A cast to another type is kept.
  EXPECT_EQ(FieldPipeline(parse_pipeline(R"({"field":"x","ops":[{"op":"cast","dtype":"float16"},
      {"op":"normalize","mean":0,"std":1}]})")[0],
                          in)
                .size(),
            2u);
}

TEST(OpRun, FlipIsDeterministicPerSampleAndReversesTheAxis) {
  auto flip = make_op("flip", OpArgs("flip", R"({"axis":1,"p":1})"));
  flip->setup(ValueSpec::array(DType::u8, {2, 3}));
  std::vector<uint8_t> in = {1, 2, 3, 4, 5, 6}, out(6);
  run_op(*flip, in, out);
  EXPECT_EQ(out, (std::vector<uint8_t>{3, 2, 1, 6, 5, 4}));
  auto half = make_op("flip", OpArgs("flip", R"({"p":0.5})"));
  half->setup(ValueSpec::array(DType::u8, {6}));
  int flipped = 0;
  for (uint64_t id = 0; id < 1000; ++id) {
    std::vector<uint8_t> a(6), b(6);
    run_op(*half, in, a, id);
    run_op(*half, in, b, id);
    EXPECT_EQ(a, b);
    flipped += a[0] == 6;
  }
  EXPECT_GT(flipped, 400);
  EXPECT_LT(flipped, 600);
}

TEST(OpRun, ReshapeAndUnsqueezeKeepBytes) {
  auto r = make_op("reshape", OpArgs("reshape", R"({"shape":[-1,2]})"));
  EXPECT_EQ(r->setup(ValueSpec::array(DType::u8, {3, 4})).shape, (std::vector<uint64_t>{6, 2}));
  auto u = make_op("unsqueeze", OpArgs("unsqueeze", R"({"axis":0})"));
  EXPECT_EQ(u->setup(ValueSpec::array(DType::u8, {28, 28})).shape,
            (std::vector<uint64_t>{1, 28, 28}));
  auto last = make_op("unsqueeze", OpArgs("unsqueeze", R"({"axis":-1})"));
  EXPECT_EQ(last->setup(ValueSpec::array(DType::u8, {28, 28})).shape,
            (std::vector<uint64_t>{28, 28, 1}));
}

TEST(OpArena, SteadyStateStopsGrowingAndTheLimitIsAnError) {
  Arena arena(1 << 20);
  for (int i = 0; i < 100; ++i) {
    arena.reset();
    arena.allocate(1000);
    arena.allocate(200000);
    arena.allocate(5000);
  }
  const uint64_t cap = arena.capacity();
  for (int i = 0; i < 100; ++i) {
    arena.reset();
    arena.allocate(1000);
    arena.allocate(200000);
    arena.allocate(5000);
  }
  EXPECT_EQ(arena.capacity(), cap);
  arena.reset();
  EXPECT_THROW(arena.allocate(2 << 20), CapacityError);
}

TEST(OpRng, StreamsDependOnSeedEpochAndSampleOnly) {
  SampleRng a(5, 1, 10), b(5, 1, 10), c(5, 2, 10), d(5, 1, 11), e(6, 1, 10);
  const uint64_t va = a.next();
  EXPECT_EQ(va, b.next());
  EXPECT_NE(va, c.next());
  EXPECT_NE(va, d.next());
  EXPECT_NE(va, e.next());
  SampleRng u(1, 0, 0);
  for (int i = 0; i < 1000; ++i) {
    const double x = u.uniform();
    EXPECT_GE(x, 0.0);
    EXPECT_LT(x, 1.0);
    EXPECT_LT(u.below(7), 7u);
  }
}

class PipelineLoaderTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string file_ = testing::synthetic_file(dir_, "p.ferry", 500, 48, 4096);

  static LoaderOptions options(uint32_t threads) {
    LoaderOptions o;
    o.batch_size = 32;
    o.seed = 9;
    o.num_threads = threads;
    o.pipeline = parse_pipeline(R"([{"field":"data","ops":[
        {"op":"reshape","shape":[4,12]},{"op":"flip","axis":1,"p":0.5},
        {"op":"normalize","mean":[1,2,3,4],"std":[2,2,2,2],"axis":0,"dtype":"float16"}]}])");
    return o;
  }

  // Every batch's data bytes, epoch by epoch.
  static std::vector<std::vector<uint8_t>> drain(Loader& l, int epochs) {
    std::vector<std::vector<uint8_t>> out;
    for (int e = 0; e < epochs; ++e)
      while (Batch b = l.next()) {
        const FieldBuffer& f = b.field("data");
        out.emplace_back(f.data, f.data + f.bytes(b.size()));
      }
    return out;
  }
};

TEST_F(PipelineLoaderTest, OutputSpecSizesTheBatch) {
  Loader l(file_, options(2));
  const FieldSpec& data = l.fields()[0];
  EXPECT_EQ(data.name, "data");
  EXPECT_EQ(data.dtype, DType::f16);
  EXPECT_EQ(data.shape, (std::vector<uint64_t>{4, 12}));
  EXPECT_EQ(l.field_capacities()[0], 32u * 4 * 12 * 2);
  Batch b = l.next();
  EXPECT_EQ(b.shape(0), (std::vector<uint64_t>{32, 4, 12}));
  // The values are normalize(flip?(stored)): check one sample against the file.
  auto reader = Reader::open(file_);
  std::vector<uint8_t> scratch;
  const auto stored = reader->sample(b.sample_ids()[0], scratch)[0];
  std::vector<float> got(48);
  for (int i = 0; i < 48; ++i) {
    uint16_t h;
    std::memcpy(&h, b.field("data").data + 2 * i, 2);
    got[i] = ops::to_float(ops::Half{h});
  }
  auto expect = [&](bool flipped, int c, int x) {
    const int src = flipped ? 11 - x : x;
    return static_cast<float>((stored.data[c * 12 + src] - (c + 1)) / 2.0);
  };
  bool matches_plain = true, matches_flipped = true;
  for (int c = 0; c < 4; ++c)
    for (int x = 0; x < 12; ++x) {
      matches_plain &= std::fabs(got[c * 12 + x] - expect(false, c, x)) < 0.1;
      matches_flipped &= std::fabs(got[c * 12 + x] - expect(true, c, x)) < 0.1;
    }
  EXPECT_TRUE(matches_plain || matches_flipped);
}

TEST_F(PipelineLoaderTest, RandomOpsAreDeterministicAcrossThreadCountsAndResume) {
  std::vector<std::vector<uint8_t>> reference;
  {
    Loader l(file_, options(1));
    reference = drain(l, 2);
  }
  for (uint32_t t : {2u, 4u, 8u}) {
    Loader l(file_, options(t));
    EXPECT_EQ(drain(l, 2), reference) << t << " threads";
  }
  // Resume mid-epoch 1.
  LoaderState saved;
  std::vector<std::vector<uint8_t>> got;
  {
    Loader l(file_, options(3));
    got = drain(l, 1);
    for (int i = 0; i < 5; ++i) {
      Batch b = l.next();
      got.emplace_back(b.field("data").data,
                       b.field("data").data + b.field("data").bytes(b.size()));
    }
    saved = l.state();
  }
  LoaderOptions r = options(2);
  r.resume = LoaderState::from_json(saved.to_json());
  Loader l(file_, r);
  while (Batch b = l.next())
    got.emplace_back(b.field("data").data, b.field("data").data + b.field("data").bytes(b.size()));
  EXPECT_EQ(got, reference);
  // Other augmentation: refused, naming the pipeline.
  LoaderOptions other = options(1);
  other.pipeline[0].ops[1].args_json = R"({"axis":1,"p":0.25})";
  other.resume = saved;
  try {
    Loader bad(file_, other);
    FAIL() << "resume with another pipeline was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("pipeline"), std::string::npos) << e.what();
  }
}

TEST_F(PipelineLoaderTest, ChainOnAnUnloadedFieldIsRejected) {
  LoaderOptions o = options(1);
  o.fields = {"label"};
  EXPECT_THROW(Loader(file_, o), InvalidArgument);
  LoaderOptions twice;
  twice.fields = {"data", "data"};
  EXPECT_THROW(Loader(file_, twice), InvalidArgument);
}

TEST_F(PipelineLoaderTest, ArrayOpOnABytesFieldIsRejectedAtConstruction) {
  const std::string var =
      testing::synthetic_file(dir_, "v.ferry", 200, 40, 4096, /*variable=*/true);
  LoaderOptions o;
  o.batch_size = 16;
  o.num_threads = 2;
  o.fields = {"data", "label"};
  o.pipeline = parse_pipeline(R"({"field":"data","ops":[{"op":"reshape","shape":[40]}]})");
  EXPECT_THROW(Loader(var, o), InvalidArgument);  // reshape needs an array: said at construction
}

}  // namespace
}  // namespace ferry
