// BatchPlan's resume fingerprint: every setting that changes a batch's samples, and the data's
// identity, are checked; the message names what differs.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "engine/plan.h"
#include "ferry/error.h"
#include "ferry/loader.h"
#include "ferry/writer.h"
#include "test_util.h"
#include "util.h"

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

// ---- Elastic resume: N ranks' states resumed on M ranks (BatchPlan::resume_elastic) ----

struct ElasticCase {
  uint32_t old_world, new_world;
  OrderKind order;
  uint64_t batch_size;
  ShardRemainder remainder;
  bool drop_last;
};

// Runs one case: old ranks consume a seeded number of batches each; a new world resumes from
// their states. Checks the union over old and new ranks against the epoch's sample set.
void check_elastic_case(const Layout& layout, const ElasticCase& c, uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "N=" << c.old_world << " M=" << c.new_world << " order=" << order_name(c.order)
               << " bs=" << c.batch_size << " pad=" << (c.remainder == ShardRemainder::pad)
               << " drop_last=" << c.drop_last << " seed=" << seed);
  LoaderOptions o;
  o.order = c.order;
  o.seed = 11;
  o.window_pages = 2;
  o.batch_size = c.batch_size;
  o.remainder = c.remainder;
  o.drop_last = c.drop_last;
  const uint64_t epoch = seed % 3;
  detail::SplitMix64 rng(seed * 2654435761u + 1);
  std::vector<LoaderState> states;
  std::multiset<uint64_t> consumed;
  std::set<uint64_t> epoch_set;
  for (uint32_t r = 0; r < c.old_world; ++r) {
    o.rank = r;
    o.world_size = c.old_world;
    const BatchPlan plan(layout, o, "");
    const auto ep = plan.epoch(epoch);
    epoch_set.insert(ep->order.begin(), ep->order.end());
    const uint64_t taken = rng.below(ep->num_batches + 2);  // +1: "finished" (next epoch)
    if (taken > ep->num_batches) {
      states.push_back(plan.state(epoch + 1, 0));
      consumed.insert(ep->order.begin(), ep->order.end());  // dropped tail counts as seen
    } else {
      states.push_back(plan.state(epoch, taken));
      for (uint64_t k = 0; k < taken; ++k)
        for (uint64_t id : ep->batch(k)) consumed.insert(id);
    }
  }
  std::swap(states.front(), states.back());  // any order
  const bool all_finished = std::all_of(states.begin(), states.end(),
                                        [&](const LoaderState& s) { return s.epoch > epoch; });
  if (all_finished) {  // nothing left: a normal start of the next epoch
    o.rank = 0;
    o.world_size = c.new_world;
    EXPECT_EQ(BatchPlan(layout, o, "").resume_elastic(states), epoch + 1);
    return;
  }
  std::multiset<uint64_t> resumed;
  uint64_t shard_len = 0;
  for (uint32_t r = 0; r < c.new_world; ++r) {
    o.rank = r;
    o.world_size = c.new_world;
    BatchPlan plan(layout, o, "");
    ASSERT_EQ(plan.resume_elastic(states), epoch);
    const auto ep = plan.epoch(epoch);
    if (r == 0) shard_len = ep->order.size();
    EXPECT_EQ(ep->order.size(), shard_len) << "every new rank gets as many samples";
    resumed.insert(ep->order.begin(), ep->order.end());
    // The state saved mid-way records the history; a same-size resume reproduces the plan.
    const LoaderState mid = LoaderState::from_json(plan.state(epoch, 0).to_json());
    BatchPlan again(layout, o, "");
    again.check_resume(mid);
    EXPECT_EQ(again.epoch(epoch)->order, ep->order);
    // The next epoch is a normal one.
    EXPECT_EQ(plan.epoch(epoch + 1)->order, BatchPlan(layout, o, "").epoch(epoch + 1)->order);
  }
  const std::set<uint64_t> consumed_set(consumed.begin(), consumed.end());
  const std::set<uint64_t> resumed_set(resumed.begin(), resumed.end());
  for (uint64_t id : resumed_set)
    EXPECT_FALSE(consumed_set.count(id)) << "sample " << id << " delivered twice";
  std::vector<uint64_t> left;  // the epoch's samples neither run delivered
  for (uint64_t id : epoch_set)
    if (!consumed_set.count(id) && !resumed_set.count(id)) left.push_back(id);
  for (uint64_t id : consumed_set) EXPECT_TRUE(epoch_set.count(id));
  const uint64_t remaining = epoch_set.size() - consumed_set.size();
  if (c.remainder == ShardRemainder::pad) {
    EXPECT_TRUE(left.empty()) << left.size() << " samples lost";
    // Padding repeats just enough samples to even out the new shards.
    EXPECT_EQ(resumed.size() - resumed_set.size(),
              remaining == 0 ? 0 : shard_len * c.new_world - remaining);
  } else {
    EXPECT_EQ(resumed.size(), resumed_set.size()) << "drop never repeats";
    EXPECT_EQ(left.size(), remaining % c.new_world) << "drop loses only the uneven tail";
  }
}

class PlanElastic : public ::testing::Test {
 protected:
  TempDir dir_;
  // 97 samples on pages of ~8 samples: uneven shards, several windows.
  std::string path_ = testing::synthetic_file(dir_, "e.ferry", 97, 500, 4096);
  std::shared_ptr<Reader> reader_ = Reader::open(path_);
};

TEST_F(PlanElastic, PropertyEveryRemainingSampleExactlyOnceAcrossNewRanks) {
  uint64_t seed = 1;
  for (uint32_t n : {1u, 2u, 3u, 4u, 5u})
    for (uint32_t m : {1u, 2u, 3u, 4u, 7u})
      for (OrderKind order : {OrderKind::sequential, OrderKind::random, OrderKind::quasi_random})
        for (uint64_t bs : {1u, 4u, 7u})
          for (ShardRemainder rem : {ShardRemainder::pad, ShardRemainder::drop})
            for (bool drop_last : {false, true})
              check_elastic_case(reader_->layout(), {n, m, order, bs, rem, drop_last}, seed++);
}

TEST_F(PlanElastic, ChainedResizesStayExactlyOnce) {  // 4 -> 3 -> 2 within one epoch
  LoaderOptions o;
  o.batch_size = 3;
  o.order = OrderKind::quasi_random;
  o.window_pages = 2;
  std::set<uint64_t> seen;
  std::vector<LoaderState> states;
  auto run = [&](uint32_t world, uint64_t batches) {
    std::vector<LoaderState> next;
    for (uint32_t r = 0; r < world; ++r) {
      o.rank = r;
      o.world_size = world;
      BatchPlan plan(reader_->layout(), o, "");
      if (!states.empty()) plan.resume_elastic(states);
      const auto ep = plan.epoch(0);
      const uint64_t take = std::min(batches, ep->num_batches);
      for (uint64_t k = 0; k < take; ++k)
        for (uint64_t id : ep->batch(k)) EXPECT_TRUE(seen.insert(id).second) << id;
      next.push_back(plan.state(0, take));
    }
    states = next;
  };
  run(4, 2);
  run(3, 3);
  EXPECT_EQ(states[0].elastic.size(), 1u);
  run(2, 1000);
  EXPECT_EQ(states[0].elastic.size(), 2u);
  EXPECT_EQ(seen.size(), 97u);
}

TEST_F(PlanElastic, BadStateSetsAreRefusedNamingWhy) {
  LoaderOptions o;
  o.batch_size = 4;
  o.world_size = 2;
  std::vector<LoaderState> states;
  for (uint32_t r = 0; r < 2; ++r) {
    o.rank = r;
    states.push_back(BatchPlan(reader_->layout(), o, "").state(0, 1));
  }
  o.world_size = 3;
  o.rank = 0;
  auto error = [&](std::vector<LoaderState> s, LoaderOptions opt) -> std::string {
    try {
      BatchPlan(reader_->layout(), opt, "").resume_elastic(s);
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error(states, o), "");
  EXPECT_NE(error({states[0]}, o).find("pass every rank's state"), std::string::npos);
  EXPECT_NE(error({states[0], states[0]}, o).find("once each"), std::string::npos);
  LoaderOptions seed = o;
  seed.seed = 5;
  EXPECT_NE(error(states, seed).find("seed differs"), std::string::npos);
  auto far = states;
  far[1].epoch = 2;
  EXPECT_NE(error(far, o).find("epoch boundary"), std::string::npos);
  auto past = states;
  past[0].next_batch = 99;
  EXPECT_NE(error(past, o).find("next_batch"), std::string::npos);
  o.resume_ranks = states;
  o.resume = states[0];
  EXPECT_THROW(Loader(path_, o), InvalidArgument);
}

TEST_F(PlanElastic, LoaderResumesFromEveryRankStateAndVersionTwoStillLoads) {
  LoaderOptions o;
  o.batch_size = 5;
  o.num_threads = 1;
  o.world_size = 2;
  std::vector<LoaderState> states;
  std::set<uint64_t> seen;
  for (uint32_t r = 0; r < 2; ++r) {
    o.rank = r;
    Loader l(path_, o);
    for (int k = 0; k < 3; ++k) {
      // Hold the batch: its sample ids live in a pool slot that returns to the workers
      // when the Batch is destroyed (a range-for over a temporary would read freed data).
      const Batch batch = l.next();
      for (uint64_t id : batch.sample_ids()) seen.insert(id);
    }
    states.push_back(LoaderState::from_json(l.state().to_json()));
  }
  const auto parsed =
      LoaderState::list_from_json("[" + states[0].to_json() + "," + states[1].to_json() + "]");
  EXPECT_EQ(parsed, states);
  o.world_size = 3;
  uint64_t delivered = 0;
  for (uint32_t r = 0; r < 3; ++r) {
    o.rank = r;
    o.resume_ranks = parsed;
    Loader l(path_, o);
    EXPECT_EQ(l.epoch(), 0u);
    while (Batch b = l.next())
      for (uint64_t id : b.sample_ids()) {
        seen.insert(id);
        ++delivered;
      }
    EXPECT_EQ(l.epoch(), 1u);
    EXPECT_EQ(l.samples_per_epoch(), 33u);  // a normal 3-rank epoch (97 padded to 99)
  }
  EXPECT_EQ(seen.size(), 97u);  // every sample: 30 before, the other 67 after
  EXPECT_EQ(delivered, 69u);    // 67 padded to 3 x 23: two samples repeated

  // A version-2 state (no "elastic" key) still loads.
  std::string v2 = states[0].to_json();
  v2.replace(v2.find("\"version\":3"), 11, "\"version\":2");
  v2 = v2.substr(0, v2.find(",\"elastic\"")) + "}";
  EXPECT_EQ(LoaderState::from_json(v2).version, 2u);
  EXPECT_TRUE(LoaderState::from_json(v2).elastic.empty());
}

}  // namespace
}  // namespace ferry
