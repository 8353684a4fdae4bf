// BatchPlan's resume fingerprint: every setting that changes a batch's samples, and the data's
// identity, are checked; the message names what differs.
#include <gtest/gtest.h>

#include "ferry/error.h"
#include "ferry/loader.h"
#include "ferry/writer.h"
#include "test_util.h"

namespace ferry {
namespace {

using testing::TempDir;

std::string resume_error(const std::string& path, LoaderOptions o, const LoaderState& s) {
  o.resume = s;
  try {
    Loader l(path, o);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

class PlanTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string a_ = testing::synthetic_file(dir_, "a.ferry", 300, 16, 4096, false, 1);
  // Same schema, sample count and page layout; other contents.
  std::string b_ = testing::synthetic_file(dir_, "b.ferry", 300, 16, 4096, false, 2);
  LoaderOptions o_ = [] {
    LoaderOptions o;
    o.batch_size = 7;
    o.num_threads = 1;
    o.world_size = 2;
    o.rank = 1;
    return o;
  }();
};

TEST_F(PlanTest, RemainderChangeIsRejectedNamingIt) {  // regression: pad resumed under drop
  const LoaderState s = Loader(a_, o_).state();
  LoaderOptions drop = o_;
  drop.remainder = ShardRemainder::drop;
  const std::string e = resume_error(a_, drop, s);
  EXPECT_NE(e.find("remainder differs (saved 'pad', this loader 'drop')"), std::string::npos) << e;
}

TEST_F(PlanTest, StateFromAnotherFileWithTheSameLayoutIsRejected) {
  const LoaderState s = Loader(a_, o_).state();
  const std::string e = resume_error(b_, o_, s);
  EXPECT_NE(e.find("data"), std::string::npos) << e;
}

TEST_F(PlanTest, EveryFingerprintedOptionIsNamed) {
  const LoaderState s = Loader(a_, o_).state();
  LoaderOptions skip = o_;
  skip.on_error = OnError::skip;
  EXPECT_NE(resume_error(a_, skip, s).find("on_error"), std::string::npos);
  LoaderOptions fields = o_;
  fields.fields = {"label"};
  EXPECT_NE(resume_error(a_, fields, s).find("fields"), std::string::npos);
  LoaderOptions seed = o_;
  seed.seed = 3;
  EXPECT_NE(resume_error(a_, seed, s).find("seed"), std::string::npos);
}

TEST_F(PlanTest, PositionsOutsideTheDataAreRejected) {
  LoaderState s = Loader(a_, o_).state();
  s.next_batch = 1000;
  EXPECT_NE(resume_error(a_, o_, s).find("next_batch"), std::string::npos);
  s.next_batch = 0;
  s.borrowed[999] = 1;
  EXPECT_NE(resume_error(a_, o_, s).find("borrowed"), std::string::npos);
}

TEST_F(PlanTest, VersionOneStatesStillLoad) {
  const std::string v1 =
      R"({"epoch":0,"next_batch":3,"seed":0,"order":"quasi_random","window_pages":4,"batch_size":7,)"
      R"("rank":1,"world_size":2,"drop_last":false,"num_samples":300,"file_xxh64":)" +
      std::to_string(Loader(a_, o_).state().file_xxh64) + R"(,"borrowed":""})";
  const LoaderState s = LoaderState::from_json(v1);
  EXPECT_EQ(s.version, 1u);
  LoaderOptions o = o_;
  o.resume = s;
  Loader l(a_, o);
  EXPECT_EQ(l.next().index(), 3u);
  EXPECT_EQ(LoaderState::from_json(l.state().to_json()), l.state());
  EXPECT_THROW(LoaderState::from_json(R"({"version":99})"), InvalidArgument);
}

TEST(LoaderTryNext, TimesOutWithNulloptAndCloseWakesWaiters) {
  TempDir dir;
  const std::string path = dir.file("slow.ferry");
  testing::synthetic_file(dir, "slow.ferry", 100, 16, 4096);
  auto plain = Reader::open(path);
  FaultSpec spec;
  spec.delay = std::chrono::milliseconds(2);
  spec.from_offset = plain->layout().data_offset();
  auto reader =
      Reader::open(std::shared_ptr<Source>(wrap_faulty_source(plain->shared_source(), spec)));
  LoaderOptions o;
  o.batch_size = 50;
  o.num_threads = 1;
  Loader l(reader, o);
  EXPECT_FALSE(l.try_next(std::chrono::milliseconds(1)).has_value());
  std::optional<Batch> b;
  while (!(b = l.try_next(std::chrono::milliseconds(50)))) {
  }
  EXPECT_TRUE(*b);
  std::thread closer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    l.close();
  });
  try {
    while (l.next()) {
    }
    l.next();
    FAIL() << "next() after close() returned";
  } catch (const ShutdownError& e) {
    EXPECT_NE(std::string(e.what()).find("loader closed"), std::string::npos);
  }
  closer.join();
  l.close();  // idempotent
}

}  // namespace
}  // namespace ferry
