// The loader engine's contract: exactly-once ordered delivery, determinism, resume, error
// semantics, timeouts, prompt shutdown, held batches, budgets. Suites named Loader* also run
// under TSan (scripts/run-tests).
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <thread>

#include "ferry/error.h"
#include "ferry/loader.h"
#include "ferry/os.h"
#include "test_util.h"
#include "util.h"

namespace ferry {
namespace {

using testing::TempDir;
using namespace std::chrono_literals;

int64_t label_at(const Batch& b, uint64_t i) {
  int64_t v;
  std::memcpy(&v, b.field("label").data + 8 * i, 8);
  return v;
}

std::vector<int64_t> labels_of(const Batch& b) {
  std::vector<int64_t> labels;
  for (uint64_t i = 0; i < b.size(); ++i) labels.push_back(label_at(b, i));
  return labels;
}

// Every batch of the current epoch (until the empty end-of-epoch batch), as label lists.
// `consecutive`: batch indices must run 0, 1, 2... (not so when skip empties a batch).
std::vector<std::vector<int64_t>> drain_epoch(Loader& loader, bool consecutive = true) {
  std::vector<std::vector<int64_t>> out;
  while (Batch b = loader.next()) {
    if (consecutive) {
      EXPECT_EQ(b.index(), out.size());
    }
    out.push_back(labels_of(b));
  }
  return out;
}

std::vector<std::vector<int64_t>> drain_epoch_any(Loader& loader) {
  return drain_epoch(loader, false);
}

std::vector<int64_t> flatten(const std::vector<std::vector<int64_t>>& batches) {
  std::vector<int64_t> all;
  for (const auto& b : batches) all.insert(all.end(), b.begin(), b.end());
  return all;
}

class LoaderTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string fixed_ = testing::synthetic_file(dir_, "fixed.ferry", 1000, 48, 4096);
};

TEST_F(LoaderTest, ExactlyOnceInEpochOrderForAnyThreadCount) {
  for (uint32_t threads : {1u, 2u, 3u, 8u})
    for (uint64_t bs : {1ull, 7ull, 64ull, 1000ull, 5000ull})
      for (bool drop_last : {false, true}) {
        LoaderOptions o;
        o.batch_size = bs;
        o.num_threads = threads;
        o.drop_last = drop_last;
        o.order = OrderKind::random;
        o.seed = 5;
        Loader loader(fixed_, o);
        const auto order = loader.epoch_order();
        const auto batches = drain_epoch(loader);
        const uint64_t expect_batches = drop_last ? 1000 / bs : (1000 + bs - 1) / bs;
        ASSERT_EQ(batches.size(), expect_batches) << "threads " << threads << " bs " << bs;
        EXPECT_EQ(loader.batches_per_epoch(), expect_batches);
        const auto all = flatten(batches);
        ASSERT_EQ(all.size(), drop_last ? expect_batches * bs : 1000u);
        for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(static_cast<uint64_t>(all[i]), order[i]);
        for (size_t i = 0; i + 1 < batches.size(); ++i) EXPECT_EQ(batches[i].size(), bs);
      }
}

TEST_F(LoaderTest, ShardedRanksCoverTheEpochExactlyOnce) {
  for (uint32_t world : {1u, 2u, 3u, 8u}) {
    std::multiset<int64_t> seen;
    uint64_t batches_per_rank = UINT64_MAX;
    for (uint32_t rank = 0; rank < world; ++rank) {
      LoaderOptions o;
      o.batch_size = 16;
      o.rank = rank;
      o.world_size = world;
      o.remainder = ShardRemainder::drop;
      o.num_threads = 2;
      Loader loader(fixed_, o);
      const auto batches = drain_epoch(loader);
      if (batches_per_rank == UINT64_MAX) batches_per_rank = batches.size();
      EXPECT_EQ(batches.size(), batches_per_rank) << "every rank gets the same number of batches";
      for (int64_t l : flatten(batches)) seen.insert(l);
    }
    EXPECT_EQ(seen.size(), 1000 / world * world);
    EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), seen.size())
        << "a sample was seen twice";
  }
}

TEST_F(LoaderTest, DeterministicAcrossThreadCountsAndContentsMatchFile) {
  const std::string var =
      testing::synthetic_file(dir_, "var.ferry", 300, 500, 4096, /*variable=*/true, 9);
  SyntheticSpec spec;
  spec.shape = {500};
  spec.variable = true;
  spec.seed = 9;
  for (Backend backend : {Backend::mmap, Backend::pread}) {
    std::vector<std::vector<uint8_t>> reference;
    for (uint32_t threads : {1u, 4u}) {
      LoaderOptions o;
      o.batch_size = 32;
      o.num_threads = threads;
      o.backend = backend;
      o.order = OrderKind::quasi_random;
      Loader loader(var, o);
      std::vector<std::vector<uint8_t>> got;
      while (Batch b = loader.next()) {
        const FieldBuffer& data = b.field("data");
        ASSERT_NE(data.offsets, nullptr);
        for (uint64_t i = 0; i < b.size(); ++i) {
          const uint64_t id = b.sample_ids()[i];
          ASSERT_EQ(static_cast<uint64_t>(label_at(b, i)), id);
          const uint64_t len = data.offsets[i + 1] - data.offsets[i];
          ASSERT_EQ(len, synthetic_length(spec, id));
          std::vector<uint8_t> want(len);
          synthetic_fill(9, id, want.data(), len);
          ASSERT_EQ(0, std::memcmp(data.data + data.offsets[i], want.data(), len))
              << "sample " << id;
          got.emplace_back(data.data + data.offsets[i], data.data + data.offsets[i + 1]);
        }
      }
      if (reference.empty()) reference = got;
      EXPECT_EQ(got, reference) << "threads " << threads;
    }
  }
}

TEST_F(LoaderTest, ResumeYieldsExactlyTheUninterruptedBatches) {
  LoaderOptions o;
  o.batch_size = 30;
  o.order = OrderKind::quasi_random;
  o.seed = 77;
  o.num_threads = 3;
  std::vector<std::vector<int64_t>> full;
  {
    Loader loader(fixed_, o);
    for (int e = 0; e < 2; ++e)
      for (auto& b : drain_epoch(loader)) full.push_back(b);
  }
  const uint64_t per_epoch = (1000 + 29) / 30;
  for (uint64_t stop_at : std::vector<uint64_t>{0, 5, per_epoch - 1, per_epoch + 3}) {
    LoaderState saved;
    std::vector<std::vector<int64_t>> got;
    {
      Loader loader(fixed_, o);
      for (uint64_t i = 0; i < stop_at; ++i) {
        Batch b = loader.next();
        if (!b) b = loader.next();  // crossed the epoch boundary
        got.push_back(labels_of(b));
      }
      saved = loader.state();
    }
    LoaderOptions r = o;
    r.resume = LoaderState::from_json(saved.to_json());
    r.num_threads = 1;  // thread count is not part of the state
    Loader loader(fixed_, r);
    while (got.size() < full.size()) {
      Batch b = loader.next();
      if (!b) continue;
      got.push_back(labels_of(b));
    }
    EXPECT_EQ(got, full) << "stopped at " << stop_at;
  }
  LoaderOptions other = o;
  LoaderState s = Loader(fixed_, o).state();
  s.batch_size = 31;
  other.resume = s;
  EXPECT_THROW(Loader(fixed_, other), InvalidArgument);
}

std::shared_ptr<Reader> faulty_reader(const std::string& path, std::vector<uint64_t> failing,
                                      std::chrono::microseconds delay = {}) {
  auto plain = Reader::open(path);
  FaultSpec spec;
  spec.delay = delay;
  spec.from_offset = plain->layout().data_offset();
  for (uint64_t id : failing) spec.fail_ranges.push_back(plain->layout().sample_extent(id));
  return Reader::open(std::shared_ptr<Source>(wrap_faulty_source(plain->shared_source(), spec)));
}

TEST_F(LoaderTest, RaiseDeliversEarlierBatchesThenNamesFileSampleAndCause) {
  LoaderOptions o;
  o.batch_size = 10;
  o.order = OrderKind::sequential;
  o.num_threads = 4;
  Loader loader(faulty_reader(fixed_, {437}), o);
  for (int i = 0; i < 43; ++i) {
    Batch b = loader.next();
    ASSERT_TRUE(b);
    EXPECT_EQ(b.index(), static_cast<uint64_t>(i));
  }
  try {
    loader.next();
    FAIL() << "expected SampleError";
  } catch (const SampleError& e) {
    EXPECT_EQ(e.sample(), 437u);
    const std::string what = e.what();
    EXPECT_NE(what.find(fixed_), std::string::npos) << what;
    EXPECT_NE(what.find("sample 437"), std::string::npos) << what;
    EXPECT_NE(what.find("Input/output error"), std::string::npos) << what;
  }
  Batch after = loader.next();  // the loader goes on with the following batch
  ASSERT_TRUE(after);
  EXPECT_EQ(after.index(), 44u);
}

TEST_F(LoaderTest, SkipDropsFailedSamplesAndFillsBatchesFromTheNext) {
  for (uint64_t bs : {1ull, 3ull, 16ull}) {
    LoaderOptions o;
    o.batch_size = bs;
    o.on_error = OnError::skip;
    o.num_threads = 2;
    o.order = OrderKind::sequential;
    Loader loader(faulty_reader(fixed_, {3, 4, 5, 500, 999}), o);
    std::vector<std::vector<int64_t>> batches;
    while (Batch b = loader.next()) {
      batches.push_back(labels_of(b));
    }
    const auto all = flatten(batches);
    std::set<int64_t> seen(all.begin(), all.end());
    EXPECT_EQ(all.size(), 995u) << "bs " << bs;
    EXPECT_EQ(seen.size(), 995u);
    EXPECT_FALSE(seen.count(3) || seen.count(4) || seen.count(5) || seen.count(500) ||
                 seen.count(999));
    for (size_t i = 0; i + 1 < batches.size(); ++i)
      ASSERT_EQ(batches[i].size(), bs) << "batch " << i << " bs " << bs;
    EXPECT_EQ(loader.metrics().errors_skipped, 5u);
  }
}

TEST_F(LoaderTest, SkipWithDropLastKeepsEveryBatchFull) {
  LoaderOptions o;
  o.batch_size = 10;
  o.on_error = OnError::skip;
  o.drop_last = true;
  Loader loader(faulty_reader(fixed_, {1, 2, 3}), o);
  uint64_t n = 0, batches = 0;
  while (Batch b = loader.next()) {
    EXPECT_EQ(b.size(), 10u);
    n += b.size();
    ++batches;
  }
  EXPECT_EQ(batches, 99u);  // 997 samples: the short last batch is dropped
  EXPECT_EQ(n, 990u);
}

TEST_F(LoaderTest, SkipResumeReproducesBorrowing) {
  LoaderOptions o;
  o.batch_size = 7;
  o.on_error = OnError::skip;
  o.order = OrderKind::random;
  o.seed = 4;
  const std::vector<uint64_t> failing = {10, 11, 12, 13, 14, 15, 16, 17, 400};
  std::vector<std::vector<int64_t>> full;
  {
    Loader loader(faulty_reader(fixed_, failing), o);
    for (auto& b : drain_epoch_any(loader)) full.push_back(b);
  }
  for (uint64_t stop_at : {1ull, 5ull, 40ull, 100ull}) {
    std::vector<std::vector<int64_t>> got;
    LoaderState saved;
    {
      Loader loader(faulty_reader(fixed_, failing), o);
      for (uint64_t i = 0; i < stop_at; ++i) {
        Batch b = loader.next();
        got.push_back(labels_of(b));
      }
      saved = LoaderState::from_json(loader.state().to_json());
      EXPECT_EQ(saved, loader.state());
    }
    LoaderOptions r = o;
    r.resume = saved;
    Loader loader(faulty_reader(fixed_, failing), r);
    for (auto& b : drain_epoch_any(loader)) got.push_back(b);
    EXPECT_EQ(got, full) << "stopped at " << stop_at;
  }
}

TEST_F(LoaderTest, TransformRunsInPlaceAndItsFailuresFollowOnError) {
  LoaderOptions o;
  o.batch_size = 50;
  o.on_error = OnError::skip;
  o.transform = [](SampleSlot& s) {
    int64_t label;
    std::memcpy(&label, s.fields[1].data, 8);
    if (label % 100 == 42) throw std::runtime_error("bad label");
    s.fields[0].data[0] = 0xEE;
    label += 1000000;
    std::memcpy(s.fields[1].data, &label, 8);
  };
  Loader loader(fixed_, o);
  uint64_t n = 0;
  while (Batch b = loader.next())
    for (uint64_t i = 0; i < b.size(); ++i, ++n) {
      EXPECT_EQ(label_at(b, i), static_cast<int64_t>(b.sample_ids()[i]) + 1000000);
      EXPECT_EQ(b.field("data").data[i * 48], 0xEE);
    }
  EXPECT_EQ(n, 990u);
  EXPECT_EQ(loader.metrics().errors_skipped, 10u);
}

TEST_F(LoaderTest, TimeoutThrowsAndLoaderStaysUsable) {
  LoaderOptions o;
  o.batch_size = 4;
  o.num_threads = 1;
  o.prefetch = 1;
  Loader loader(faulty_reader(fixed_, {}, 20ms), o);
  EXPECT_THROW(loader.next(1ms), TimeoutError);
  Batch b = loader.next(60s);
  ASSERT_TRUE(b);
  EXPECT_EQ(b.index(), 0u);
}

TEST_F(LoaderTest, HeldBatchesAreNeverOverwritten) {
  LoaderOptions o;
  o.batch_size = 8;
  o.num_threads = 4;
  o.prefetch = 4;
  o.memory_budget = 0;
  Loader loader(fixed_, o);
  std::vector<Batch> held;
  std::vector<std::vector<uint8_t>> copies;
  for (int i = 0; i < 20; ++i) {
    held.push_back(loader.next());
    const FieldBuffer& d = held.back().field("data");
    copies.emplace_back(d.data, d.data + held.back().size() * 48);
  }
  for (int i = 0; i < 60; ++i) ASSERT_TRUE(loader.next());
  for (size_t i = 0; i < held.size(); ++i) {
    const FieldBuffer& d = held[i].field("data");
    EXPECT_EQ(0, std::memcmp(d.data, copies[i].data(), copies[i].size()))
        << "held batch " << i << " changed";
  }
}

TEST_F(LoaderTest, HoldingEveryBufferIsACapacityErrorNotAHang) {
  LoaderOptions o;
  o.batch_size = 10;
  o.prefetch = 2;
  const uint64_t slot =
      10 * 48 + 64 + 10 * 8;  // approx; the budget below holds 4 slots of either size
  o.memory_budget = 4 * 1024;
  (void)slot;
  Loader loader(fixed_, o);
  const auto m = loader.metrics();
  EXPECT_LE(m.pool_max_slots * m.slot_bytes, o.memory_budget);
  std::vector<Batch> held;
  try {
    for (int i = 0; i < 100; ++i) held.push_back(loader.next(30s));
    FAIL() << "expected CapacityError";
  } catch (const CapacityError& e) {
    EXPECT_NE(std::string(e.what()).find("release batches"), std::string::npos);
  }
  EXPECT_EQ(held.size(), m.pool_max_slots);
  held.clear();
  EXPECT_TRUE(loader.next(30s));  // releasing makes room again
}

TEST_F(LoaderTest, InvalidOptionsSayWhatToChange) {
  auto expect_invalid = [&](LoaderOptions o, const std::string& needle) {
    try {
      Loader loader(fixed_, o);
      FAIL() << "expected InvalidArgument mentioning " << needle;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  LoaderOptions o;
  o.batch_size = 0;
  expect_invalid(o, "batch_size");
  o = {};
  o.fields = {"nope"};
  expect_invalid(o, "nope");
  o = {};
  o.memory_budget = 100;
  expect_invalid(o, "memory_budget");
  o = {};
  o.rank = 2;
  o.world_size = 2;
  expect_invalid(o, "rank");
  o = {};
  o.device = "cuda";
  expect_invalid(o, "CUDA");
}

TEST_F(LoaderTest, FieldSubsetAndUnorderedStillExactlyOnce) {
  LoaderOptions o;
  o.batch_size = 33;
  o.fields = {"label"};
  o.ordered = false;
  o.num_threads = 4;
  Loader loader(fixed_, o);
  std::set<int64_t> seen;
  uint64_t n = 0;
  while (Batch b = loader.next()) {
    ASSERT_EQ(b.num_fields(), 1u);
    for (uint64_t i = 0; i < b.size(); ++i, ++n) seen.insert(label_at(b, i));
  }
  EXPECT_EQ(n, 1000u);
  EXPECT_EQ(seen.size(), 1000u);
}

TEST_F(LoaderTest, EpochsAdvanceAndSetEpochRestarts) {
  LoaderOptions o;
  o.batch_size = 100;
  o.order = OrderKind::random;
  Loader loader(fixed_, o);
  const auto e0 = flatten(drain_epoch(loader));
  EXPECT_EQ(loader.epoch(), 1u);
  const auto e1 = flatten(drain_epoch(loader));
  EXPECT_NE(e0, e1);
  loader.next();
  loader.next();
  loader.set_epoch(0);
  EXPECT_EQ(flatten(drain_epoch(loader)), e0);
  EXPECT_EQ(loader.state().epoch, 1u);
}

TEST_F(LoaderTest, MetricsAndReport) {
  LoaderOptions o;
  o.batch_size = 64;
  Loader loader(fixed_, o);
  drain_epoch(loader);
  const Metrics m = loader.metrics();
  EXPECT_EQ(m.samples, 1000u);
  EXPECT_EQ(m.batches, 16u);
  EXPECT_EQ(m.bytes_read, 1000u * (48 + 8));
  EXPECT_GT(m.wall_seconds, 0);
  EXPECT_FALSE(m.bottleneck.empty());
  const std::string table = loader.report();
  EXPECT_NE(table.find("bottleneck:"), std::string::npos);
  EXPECT_NE(table.find("read"), std::string::npos);
  EXPECT_NE(m.to_json().find("\"consumer_wait_fraction\""), std::string::npos);
}

TEST_F(LoaderTest, NumaPinningAndColdFileHintsKeepResultsExact) {
  LoaderOptions o;
  o.batch_size = 64;
  o.order = OrderKind::random;
  o.numa_node = numa_node_count() + 1;
  EXPECT_THROW(Loader(fixed_, o), InvalidArgument);
  o.numa_node = 0;  // every machine has node 0: workers are pinned (a no-op on one node)
  Loader reference(fixed_, o);
  const auto want = flatten(drain_epoch(reference));
  for (Backend backend : {Backend::mmap, Backend::pread}) {
    evict_from_page_cache(fixed_);  // cold (where the filesystem lets go): hints are issued
    o.backend = backend;
    o.huge_pages = backend == Backend::mmap;  // MADV_HUGEPAGE on the pool changes nothing visible
    Loader loader(fixed_, o);
    EXPECT_EQ(flatten(drain_epoch(loader)), want);
  }
}

TEST_F(LoaderTest, EmptyFileYieldsNoBatches) {
  Schema s;
  s.fields.push_back(FieldSpec::scalar("x", DType::f32));
  Writer w(dir_.file("empty.ferry"), s, {.fsync = false});
  w.close();
  Loader loader(dir_.file("empty.ferry"), {});
  EXPECT_FALSE(loader.next());
  EXPECT_EQ(loader.batches_per_epoch(), 0u);
}

// 200 create / iterate / destroy cycles, stopping at random points, sometimes holding batches
// past the loader's death, sometimes with a slow source: no hang, no leak (asan), no race (tsan).
TEST_F(LoaderTest, DestroyMidEpochIsPromptAndClean) {
  detail::SplitMix64 rng(99);
  auto slow = faulty_reader(fixed_, {}, 100us);
  for (int cycle = 0; cycle < 200; ++cycle) {
    LoaderOptions o;
    o.batch_size = 1 + rng.below(40);
    o.num_threads = 1 + static_cast<uint32_t>(rng.below(4));
    o.prefetch = 1 + static_cast<uint32_t>(rng.below(6));
    std::vector<Batch> survivors;
    const auto t0 = std::chrono::steady_clock::now();
    {
      Loader loader(cycle % 5 == 0 ? slow : Reader::open(fixed_), o);
      const uint64_t take = rng.below(loader.batches_per_epoch() + 1);
      for (uint64_t i = 0; i < take; ++i) {
        Batch b = loader.next();
        if (rng.below(4) == 0 && survivors.size() < 2) survivors.push_back(std::move(b));
      }
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s) << "cycle " << cycle;
    for (auto& b : survivors) EXPECT_GT(b.size(), 0u);  // still readable after the loader is gone
  }
}

}  // namespace
}  // namespace ferry
