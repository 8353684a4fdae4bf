// TileLoader: accounting, dedup, timeouts, retries, the LRU budget, pinning, concurrency,
// shutdown and neighbour prefetch. Every suite name starts with "TileLoader" (the TSan run
// selects on "Tile"). Blocking loads are steered with Gates rather than sleeps so the tests are
// deterministic on a loaded 2-core machine; the only time bounds are generous (seconds).
#include "ferry/tile_loader.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "test_util.h"

namespace ferry {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// Loads block in pass() until open(); counts how many are blocked.
class Gate {
 public:
  void pass() {
    std::unique_lock lk(mu_);
    ++waiting_;
    cv_.notify_all();
    cv_.wait(lk, [&] { return open_; });
    --waiting_;
  }
  void open() {
    std::lock_guard lk(mu_);
    open_ = true;
    cv_.notify_all();
  }
  /// Waits (up to 10 s) until `n` loads are blocked in pass().
  bool wait_for_waiters(int n) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, 10s, [&] { return waiting_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int waiting_ = 0;
};

/// Loader calls per key.
class Calls {
 public:
  int add(const std::string& key) {
    std::lock_guard lk(mu_);
    return ++count_[key];
  }
  int of(const std::string& key) const {
    std::lock_guard lk(mu_);
    auto it = count_.find(key);
    return it == count_.end() ? 0 : it->second;
  }
  std::set<std::string> keys() const {
    std::lock_guard lk(mu_);
    std::set<std::string> k;
    for (const auto& [key, n] : count_) k.insert(key);
    return k;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, int> count_;
};

TileValue string_value(const std::string& s, uint64_t bytes) {
  return TileValue::make(std::make_shared<std::string>(s), bytes);
}

/// Polls `pred` (for figures with no event to wait on, e.g. a stats counter) for up to 10 s.
template <class Pred>
bool eventually(Pred pred) {
  const auto deadline = Clock::now() + 10s;
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return pred();
}

TileLoaderOptions small_options(uint32_t workers = 2) {
  TileLoaderOptions o;
  o.num_workers = workers;
  o.backoff = 1ms;
  o.max_backoff = 5ms;
  return o;
}

// ---------------------------------------------------------------------------------------------

TEST(TileLoaderOptions, InvalidOptionsThrow) {
  EXPECT_THROW(TileLoader(TileLoadFn{}), InvalidArgument);
  TileLoaderOptions o;
  o.num_workers = 0;
  EXPECT_THROW(TileLoader([](const std::string& k) { return string_value(k, 1); }, o),
               InvalidArgument);
  o = {};
  o.backoff_multiplier = 0.5;
  EXPECT_THROW(TileLoader([](const std::string& k) { return string_value(k, 1); }, o),
               InvalidArgument);
}

TEST(TileLoaderValue, TypeIsChecked) {
  const TileValue v = string_value("abc", 3);
  EXPECT_EQ(v.as<std::string>(), "abc");
  EXPECT_EQ(*v.get<std::string>(), "abc");
  EXPECT_THROW(v.as<int>(), InvalidArgument);
  EXPECT_TRUE(static_cast<bool>(v));
  EXPECT_FALSE(static_cast<bool>(TileValue{}));
}

TEST(TileLoaderBasic, MissThenHitAndAccounting) {
  Calls calls;
  TileLoader loader(
      [&](const std::string& k) {
        calls.add(k);
        return string_value("value of " + k, 10);
      },
      small_options());
  EXPECT_EQ(loader.get("a").as<std::string>(), "value of a");
  EXPECT_EQ(loader.get("a").as<std::string>(), "value of a");
  loader.preload("b").wait();
  EXPECT_EQ(loader.get("b").as<std::string>(), "value of b");
  EXPECT_TRUE(loader.contains("a"));
  EXPECT_FALSE(loader.contains("zzz"));

  const auto s = loader.stats();
  EXPECT_EQ(s.gets, 3u);
  EXPECT_EQ(s.misses, 1u);  // only the first get("a") had to start its load
  EXPECT_EQ(s.hits, 2u);
  EXPECT_EQ(s.loads, 2u);
  EXPECT_EQ(s.preloads, 1u);
  EXPECT_EQ(s.errors, 0u);
  EXPECT_EQ(s.bytes_cached, 20u);
  EXPECT_EQ(s.entries_cached, 2u);
  EXPECT_EQ(s.bytes_loaded, 20u);
  EXPECT_DOUBLE_EQ(s.hit_rate, 2.0 / 3.0);
  EXPECT_EQ(calls.of("a"), 1);
  EXPECT_EQ(calls.of("b"), 1);

  loader.reset_stats();
  EXPECT_EQ(loader.stats().gets, 0u);
  EXPECT_EQ(loader.stats().bytes_cached, 20u);  // the cache figures are "now", not counters
}

TEST(TileLoaderBasic, PreloadInFlightThenGetIsAHit) {
  auto gate = std::make_shared<Gate>();
  TileLoader loader(
      [gate](const std::string& k) {
        gate->pass();
        return string_value(k, 1);
      },
      small_options());
  auto f = loader.preload("a");
  ASSERT_TRUE(gate->wait_for_waiters(1));
  EXPECT_NE(f.wait_for(0s), std::future_status::ready);
  std::thread opener([&] { gate->open(); });
  EXPECT_EQ(loader.get("a").as<std::string>(), "a");
  opener.join();
  const auto s = loader.stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 0u);
  EXPECT_EQ(f.get().as<std::string>(), "a");
}

TEST(TileLoaderDedup, SecondPreloadReturnsTheSameFutureAndLoadsOnce) {
  auto gate = std::make_shared<Gate>();
  Calls calls;
  TileLoader loader(
      [gate, &calls](const std::string& k) {
        calls.add(k);
        gate->pass();
        return string_value(k, 1);
      },
      small_options(4));
  auto f1 = loader.preload("a");
  auto f2 = loader.preload("a");
  // Concurrent get()s of the same in-flight key join the same load too.
  std::vector<std::thread> getters;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i)
    getters.emplace_back([&] {
      if (loader.get("a").as<std::string>() == "a") ok.fetch_add(1, std::memory_order_relaxed);
    });
  ASSERT_TRUE(eventually([&] { return loader.stats().gets == 4; }));
  gate->open();
  for (auto& t : getters) t.join();
  EXPECT_EQ(ok.load(std::memory_order_relaxed), 4);
  // One shared state: both futures refer to the very same stored value.
  EXPECT_EQ(&f1.get(), &f2.get());
  auto f3 = loader.preload("a");  // cached now: still the entry's future
  EXPECT_EQ(&f3.get(), &f1.get());
  EXPECT_EQ(calls.of("a"), 1);
  EXPECT_EQ(loader.stats().loads, 1u);
  EXPECT_EQ(loader.stats().misses, 0u);
}

TEST(TileLoaderTimeout, GetTimesOutWithoutCancellingTheLoad) {
  auto gate = std::make_shared<Gate>();
  Calls calls;
  TileLoader loader(
      [gate, &calls](const std::string& k) {
        calls.add(k);
        gate->pass();
        return string_value(k, 1);
      },
      small_options());
  EXPECT_THROW(loader.get("a", 20ms), TimeoutError);
  EXPECT_EQ(loader.stats().timeouts, 1u);
  EXPECT_EQ(loader.stats().misses, 1u);
  gate->open();
  EXPECT_EQ(loader.get("a", 10s).as<std::string>(), "a");  // the same load, finished
  EXPECT_EQ(calls.of("a"), 1);
  EXPECT_EQ(loader.stats().misses, 1u);
  EXPECT_EQ(loader.stats().hits, 1u);
}

TEST(TileLoaderRetry, FailingAttemptsAreRetriedThenSucceed) {
  Calls calls;
  auto o = small_options();
  o.max_retries = 2;
  TileLoader loader(
      [&](const std::string& k) {
        if (calls.add(k) <= 2) throw IoError("flaky read of " + k, EIO);
        return string_value(k, 1);
      },
      o);
  EXPECT_EQ(loader.get("a").as<std::string>(), "a");
  const auto s = loader.stats();
  EXPECT_EQ(s.attempts, 3u);
  EXPECT_EQ(s.retries, 2u);
  EXPECT_EQ(s.errors, 0u);
  EXPECT_EQ(s.loads, 1u);
}

TEST(TileLoaderRetry, ExhaustedRetriesFailEveryGetAndAreNotCached) {
  auto gate = std::make_shared<Gate>();
  Calls calls;
  auto o = small_options(3);
  o.max_retries = 1;
  TileLoader loader(
      [gate, &calls](const std::string& k) {
        const int n = calls.add(k);
        if (k == "good") return string_value(k, 1);
        if (n == 1) gate->pass();  // hold the first attempt so that every getter joins it
        if (k == "bad" || n <= 2) throw IoError("cannot read " + k, EIO);
        return string_value(k, 1);  // "flaky": fails its first two attempts only
      },
      o);
  constexpr int kGetters = 3;
  std::atomic<int> io_errors{0};
  std::vector<std::thread> getters;
  for (int i = 0; i < kGetters; ++i)
    getters.emplace_back([&] {
      try {
        loader.get("bad");
      } catch (const IoError& e) {
        if (std::string(e.what()) == "cannot read bad")
          io_errors.fetch_add(1, std::memory_order_relaxed);
      }
    });
  ASSERT_TRUE(gate->wait_for_waiters(1));
  ASSERT_TRUE(eventually([&] { return loader.stats().gets == kGetters; }));
  EXPECT_EQ(loader.get("good").as<std::string>(), "good");  // other keys go on meanwhile
  gate->open();
  for (auto& t : getters) t.join();
  EXPECT_EQ(io_errors.load(std::memory_order_relaxed), kGetters);
  EXPECT_EQ(calls.of("bad"), 2);  // 1 + max_retries attempts, shared by every getter
  EXPECT_FALSE(loader.contains("bad"));
  auto s = loader.stats();
  EXPECT_EQ(s.errors, 1u);
  EXPECT_EQ(s.retries, 1u);

  // Not cached as a failure: the next get tries again from scratch.
  EXPECT_THROW(loader.get("bad"), IoError);
  EXPECT_EQ(calls.of("bad"), 4);
  EXPECT_EQ(loader.stats().errors, 2u);

  // A key whose failure is transient succeeds on a later get.
  EXPECT_THROW(loader.get("flaky"), IoError);
  EXPECT_EQ(loader.get("flaky").as<std::string>(), "flaky");
  EXPECT_EQ(calls.of("flaky"), 3);
}

TEST(TileLoaderRetry, PreloadFutureCarriesTheError) {
  auto o = small_options();
  o.max_retries = 0;
  TileLoader loader([](const std::string& k) -> TileValue { throw FormatError("bad tile " + k); },
                    o);
  auto f = loader.preload("x");
  EXPECT_THROW(f.get(), FormatError);
  EXPECT_EQ(loader.stats().errors, 1u);
  EXPECT_EQ(loader.stats().attempts, 1u);
}

TEST(TileLoaderCache, EvictsLeastRecentlyUsedWithinTheBudget) {
  auto o = small_options(1);
  o.cache_bytes = 250;
  TileLoader loader([](const std::string& k) { return string_value(k, 100); }, o);
  loader.get("a");
  loader.get("b");
  loader.get("a");  // a is now the most recently used
  loader.get("c");  // over budget: b, the least recently used, goes
  EXPECT_TRUE(loader.contains("a"));
  EXPECT_FALSE(loader.contains("b"));
  EXPECT_TRUE(loader.contains("c"));
  auto s = loader.stats();
  EXPECT_EQ(s.evictions, 1u);
  EXPECT_EQ(s.bytes_cached, 200u);
  EXPECT_LE(s.bytes_cached, o.cache_bytes);
  loader.get("d");  // then a (c was used after it)
  EXPECT_FALSE(loader.contains("a"));
  EXPECT_TRUE(loader.contains("c"));
  EXPECT_TRUE(loader.contains("d"));
  EXPECT_EQ(loader.stats().evictions, 2u);
  EXPECT_EQ(loader.clear_cache(), 200u);
  EXPECT_EQ(loader.stats().bytes_cached, 0u);
}

TEST(TileLoaderCache, ValuesInUseAreNeverEvicted) {
  auto o = small_options(1);
  o.cache_bytes = 150;
  TileLoader loader([](const std::string& k) { return string_value(k, 100); }, o);
  TileValue a = loader.get("a");
  TileValue b = loader.get("b");  // over budget, but a is held and b awaited: both kept
  EXPECT_TRUE(loader.contains("a"));
  EXPECT_TRUE(loader.contains("b"));
  EXPECT_EQ(loader.stats().bytes_cached, 200u);  // exceeds the budget by what callers hold
  EXPECT_EQ(loader.clear_cache(), 0u);           // everything cached is in use
  {
    TileValue c = loader.get("c");  // pinned by its waiting get() from its arrival on
    EXPECT_EQ(c.as<std::string>(), "c");
    EXPECT_TRUE(loader.contains("c"));
  }
  EXPECT_EQ(loader.stats().evictions, 0u);
  a = TileValue{};  // let go of a: the next call may evict it
  loader.get("d");  // evicts a and c (free, least recently used), keeps b (held) and d (awaited)
  EXPECT_FALSE(loader.contains("a"));
  EXPECT_TRUE(loader.contains("b"));
  EXPECT_FALSE(loader.contains("c"));
  EXPECT_TRUE(loader.contains("d"));
  EXPECT_EQ(loader.stats().evictions, 2u);
  EXPECT_EQ(loader.stats().bytes_cached, 200u);
  EXPECT_EQ(b.as<std::string>(), "b");
  // A value stays valid after its entry is evicted, for as long as a copy lives.
  TileValue d = loader.get("d");
  b = TileValue{};
  EXPECT_EQ(loader.clear_cache(), 100u);  // b only: d is held
  EXPECT_TRUE(loader.contains("d"));
  d = TileValue{};
  loader.get("b");  // over budget when b arrives: d, free now, goes
  EXPECT_FALSE(loader.contains("d"));
  EXPECT_TRUE(loader.contains("b"));
}

TEST(TileLoaderCache, ZeroBudgetKeepsOnlyValuesInUse) {
  auto o = small_options(1);
  o.cache_bytes = 0;
  Calls calls;
  TileLoader loader(
      [&](const std::string& k) {
        calls.add(k);
        return string_value(k, 5);
      },
      o);
  EXPECT_EQ(loader.get("a").as<std::string>(), "a");
  EXPECT_EQ(loader.get("b").as<std::string>(), "b");  // a is let go of: evicted
  EXPECT_FALSE(loader.contains("a"));
  EXPECT_EQ(loader.get("a").as<std::string>(), "a");
  EXPECT_EQ(calls.of("a"), 2);
  EXPECT_EQ(loader.stats().misses, 3u);
}

TEST(TileLoaderConcurrency, EightThreadsPreloadAndGet) {
  constexpr int kThreads = 8, kIters = 300, kKeys = 40;
  auto o = small_options(4);
  o.cache_bytes = 16 * 64;  // room for 16 of the 40 keys: evictions under contention
  Calls calls;
  TileLoader loader(
      [&](const std::string& k) {
        calls.add(k);
        if (k == "k13") throw IoError("k13 always fails", EIO);
        return string_value(k, 64);
      },
      o);
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(t + 1);
      for (int i = 0; i < kIters; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const std::string key = "k" + std::to_string(x % kKeys);
        const std::string next = "k" + std::to_string((x >> 20) % kKeys);
        try {
          loader.preload(next);
          const TileValue v = i % 3 ? loader.get(key) : loader.get(key, 10s);
          if (v.as<std::string>() != key) wrong.fetch_add(1, std::memory_order_relaxed);
        } catch (const IoError&) {
          failed.fetch_add(1, std::memory_order_relaxed);
          if (key != "k13") wrong.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(std::memory_order_relaxed), 0);
  loader.get("k0");  // a call with nothing held brings the cache back within its budget
  const auto s = loader.stats();
  EXPECT_EQ(s.gets, static_cast<uint64_t>(kThreads * kIters + 1));
  EXPECT_EQ(s.hits + s.misses, s.gets);
  EXPECT_EQ(s.timeouts, 0u);
  EXPECT_GE(s.loads, static_cast<uint64_t>(kKeys - 1));
  EXPECT_EQ(s.attempts, s.loads + s.retries + s.errors);
  EXPECT_LE(s.bytes_cached, o.cache_bytes);  // nothing is held once every thread is done
  EXPECT_EQ(s.bytes_cached, s.entries_cached * 64);
}

TEST(TileLoaderShutdown, QueuedLoadsAreCancelledRunningOnesFinish) {
  auto gate = std::make_shared<Gate>();
  auto o = small_options(2);
  o.shutdown_timeout = 60s;  // the running loads finish by themselves; we must not need this
  auto loader = std::make_unique<TileLoader>(
      [gate](const std::string& k) {
        gate->pass();
        return string_value(k, 1);
      },
      o);
  std::vector<std::shared_future<TileValue>> futures;
  for (int i = 0; i < 10; ++i) futures.push_back(loader->preload("k" + std::to_string(i)));
  ASSERT_TRUE(gate->wait_for_waiters(2));  // k0 and k1 running, k2..k9 queued
  std::atomic<bool> getter_saw_shutdown{false};
  std::thread getter([&] {
    try {
      loader->get("k9");
    } catch (const ShutdownError&) {
      getter_saw_shutdown.store(true, std::memory_order_relaxed);
    }
  });
  ASSERT_TRUE(eventually([&] { return loader->stats().gets == 1; }));
  std::thread opener([&] {
    eventually([&] { return loader->is_shut_down(); });
    gate->open();
  });
  const auto t0 = Clock::now();
  loader->shutdown();
  EXPECT_LT(Clock::now() - t0, 5s);
  opener.join();
  getter.join();
  EXPECT_TRUE(getter_saw_shutdown.load(std::memory_order_relaxed));
  EXPECT_EQ(futures[0].get().as<std::string>(), "k0");
  EXPECT_EQ(futures[1].get().as<std::string>(), "k1");
  for (int i = 2; i < 10; ++i)
    EXPECT_THROW(futures[static_cast<std::size_t>(i)].get(), ShutdownError);
  EXPECT_EQ(loader->stats().cancelled, 8u);
  EXPECT_EQ(loader->stats().bytes_cached, 0u);
  EXPECT_THROW(loader->get("k0"), ShutdownError);
  EXPECT_THROW(loader->preload("k0"), ShutdownError);
  EXPECT_THROW(loader->process_each(std::vector<std::string>{"k0"},
                                    [](std::size_t, const std::string&, const TileValue&) {}),
               ShutdownError);
  loader->shutdown();  // idempotent
  loader.reset();      // and the destructor after it
}

TEST(TileLoaderShutdown, StuckLoadsAreAbandonedAfterTheTimeout) {
  auto gate = std::make_shared<Gate>();
  auto alive = std::make_shared<int>(0);  // lives as long as the loader's internal state
  std::weak_ptr<int> watch = alive;
  auto o = small_options(2);
  o.shutdown_timeout = 50ms;
  auto loader = std::make_unique<TileLoader>(
      [gate, alive](const std::string& k) {
        if (k == "stuck") gate->pass();
        return string_value(k, 1);
      },
      o);
  alive.reset();
  loader->get("fine");
  auto f = loader->preload("stuck");
  ASSERT_TRUE(gate->wait_for_waiters(1));
  const auto t0 = Clock::now();
  loader.reset();  // the destructor shuts down: gives up on "stuck" after 50 ms
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_THROW(f.get(), ShutdownError);
  EXPECT_FALSE(watch.expired());  // the abandoned worker still holds the state
  gate->open();
  // It lets go once the loader function returns: nothing leaks.
  EXPECT_TRUE(eventually([&] { return watch.expired(); }));
}

TEST(TileLoaderShutdown, ShutdownDuringRetryBackoffIsPrompt) {
  auto o = small_options(1);
  o.max_retries = 5;
  o.backoff = 60s;  // would hang the test if shutdown did not cut it short
  o.max_backoff = 60s;
  std::atomic<int> attempts{0};
  TileLoader loader(
      [&](const std::string&) -> TileValue {
        attempts.fetch_add(1, std::memory_order_relaxed);
        throw IoError("down", EIO);
      },
      o);
  auto f = loader.preload("a");
  ASSERT_TRUE(eventually([&] { return loader.stats().retries == 1; }));
  const auto t0 = Clock::now();
  loader.shutdown();
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_THROW(f.get(), IoError);  // the last error, not a hang
  EXPECT_EQ(attempts.load(std::memory_order_relaxed), 1);
}

TEST(TileLoaderShutdown, ConcurrentShutdownAndGets) {
  for (int round = 0; round < 5; ++round) {
    auto o = small_options(2);
    TileLoader loader([](const std::string& k) { return string_value(k, 1); }, o);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0;; ++i) {
          try {
            const std::string key = std::to_string((t * 7 + i) % 20);
            loader.preload(std::to_string((t * 7 + i + 1) % 20));
            loader.get(key);
          } catch (const ShutdownError&) {
            return;  // the only error allowed, and it ends the loop
          }
        }
      });
    ASSERT_TRUE(eventually([&] { return loader.stats().gets >= 50; }));
    std::thread second([&] { loader.shutdown(); });
    loader.shutdown();
    second.join();
    for (auto& t : threads) t.join();
  }
}

TEST(TileLoaderNeighbours, NextKeysArePrefetchedWithoutChaining) {
  Calls calls;
  auto o = small_options(2);
  o.next_keys = [](const std::string& k) { return std::vector<std::string>{k + "+1", k + "+2"}; };
  TileLoader loader(
      [&](const std::string& k) {
        calls.add(k);
        return string_value(k, 10);
      },
      o);
  loader.get("a");
  ASSERT_TRUE(eventually([&] {
    const auto s = loader.stats();
    return s.neighbour_loads == 2 && s.in_flight == 0;
  }));
  EXPECT_EQ(loader.get("a+1").as<std::string>(), "a+1");  // already there
  EXPECT_EQ(loader.stats().misses, 1u);
  EXPECT_EQ(loader.stats().hits, 1u);
  // Neighbour loads do not ask for their own neighbours, so only these three were loaded.
  EXPECT_EQ(calls.keys(), (std::set<std::string>{"a", "a+1", "a+2"}));
}

TEST(TileLoaderNeighbours, WaitForBudgetRoom) {
  Calls calls;
  auto o = small_options(2);
  o.cache_bytes = 100;  // holds exactly one value: no room for a neighbour while "a" is cached
  o.next_keys = [](const std::string& k) { return std::vector<std::string>{k + "+1"}; };
  TileLoader loader(
      [&](const std::string& k) {
        calls.add(k);
        return string_value(k, 100);
      },
      o);
  loader.get("a");
  std::this_thread::sleep_for(20ms);  // a chance to misbehave (cannot make the test flaky)
  EXPECT_EQ(calls.of("a+1"), 0);
  EXPECT_EQ(loader.clear_cache(), 100u);  // room now
  ASSERT_TRUE(eventually([&] { return loader.stats().neighbour_loads == 1; }));
  EXPECT_EQ(calls.of("a+1"), 1);
}

TEST(TileLoaderNeighbours, ThrowingNextKeysIsCountedAndHarmless) {
  auto o = small_options(2);
  o.next_keys = [](const std::string&) -> std::vector<std::string> {
    throw std::runtime_error("no neighbours");
  };
  TileLoader loader([](const std::string& k) { return string_value(k, 1); }, o);
  EXPECT_EQ(loader.get("a").as<std::string>(), "a");
  ASSERT_TRUE(eventually([&] { return loader.stats().next_keys_errors == 1; }));
  EXPECT_EQ(loader.get("b").as<std::string>(), "b");
}

TEST(TileLoaderProcess, ResultsInOrderWithPrefetchAhead) {
  auto o = small_options(2);
  o.prefetch_ahead = 3;
  TileLoader loader([](const std::string& k) { return string_value(k, 1); }, o);
  std::vector<std::string> keys;
  for (int i = 0; i < 20; ++i) keys.push_back("t" + std::to_string(i));
  std::vector<std::size_t> progress;
  ProcessOptions po;
  po.on_progress = [&](std::size_t done, std::size_t total) {
    EXPECT_EQ(total, keys.size());
    progress.push_back(done);
  };
  po.progress_bar = true;  // drawn only if stderr is a terminal
  std::size_t step = 0;
  const auto results = loader.process(
      keys,
      [&](const std::string&, const TileValue& v) {
        // When key i is processed, keys up to i + prefetch_ahead have been requested.
        EXPECT_EQ(loader.stats().preloads, std::min<std::size_t>(keys.size(), step + 4));
        ++step;
        return v.as<std::string>() + "!";
      },
      po);
  ASSERT_EQ(results.size(), keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(results[i], keys[i] + "!");
  ASSERT_EQ(progress.size(), keys.size());
  for (std::size_t i = 0; i < progress.size(); ++i) EXPECT_EQ(progress[i], i + 1);
  const auto s = loader.stats();
  EXPECT_EQ(s.misses, 0u);
  EXPECT_EQ(s.hits, keys.size());
  EXPECT_EQ(s.loads, keys.size());
}

TEST(TileLoaderProcess, ErrorsPropagate) {
  auto o = small_options(2);
  o.max_retries = 0;
  TileLoader loader(
      [](const std::string& k) {
        if (k == "t3") throw IoError("t3 is corrupt", EIO);
        return string_value(k, 1);
      },
      o);
  const std::vector<std::string> keys = {"t0", "t1", "t2", "t3", "t4"};
  std::vector<std::string> seen;
  EXPECT_THROW(loader.process_each(keys, [&](std::size_t, const std::string& k,
                                             const TileValue&) { seen.push_back(k); }),
               IoError);
  EXPECT_EQ(seen, (std::vector<std::string>{"t0", "t1", "t2"}));
  EXPECT_THROW(loader.process(keys,
                              [](const std::string& k, const TileValue&) -> int {
                                if (k == "t1") throw std::logic_error("processing failed");
                                return 0;
                              }),
               std::logic_error);
}

TEST(TileLoaderFile, ReadsWholeFilesThroughSources) {
  testing::TempDir dir;
  std::string content(100000, '\0');
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 31 % 251);
  {
    std::ofstream(dir.file("tile_0.bin"), std::ios::binary) << content;
    std::ofstream(dir.file("empty.bin"), std::ios::binary);
  }
  auto o = small_options(2);
  o.max_retries = 0;
  for (Backend backend : {Backend::auto_select, Backend::pread}) {
    SourceOptions so;
    so.backend = backend;
    TileLoader loader(file_loader(dir.path().string(), so), o);
    const TileValue v = loader.get("tile_0.bin");
    EXPECT_EQ(v.bytes, content.size());
    const auto& file = v.as<FileBytes>();
    EXPECT_EQ(file.path, dir.file("tile_0.bin"));
    ASSERT_EQ(file.size, content.size());
    EXPECT_EQ(0, std::memcmp(file.bytes().data(), content.data(), content.size()));
    EXPECT_EQ(loader.get("empty.bin").as<FileBytes>().size, 0u);
    EXPECT_THROW(loader.get("missing.bin"), IoError);
    EXPECT_EQ(loader.stats().bytes_cached, content.size());
  }
}

TEST(TileLoaderStats, JsonAndReport) {
  TileLoader loader([](const std::string& k) { return string_value(k, 1000); }, small_options());
  loader.get("a");
  loader.get("a");
  const auto s = loader.stats();
  const std::string json = s.to_json();
  EXPECT_EQ(json.front(), '{');
  EXPECT_EQ(json.back(), '}');
  for (const char* key : {"\"gets\":2", "\"hits\":1", "\"misses\":1", "\"loads\":1",
                          "\"bytes_cached\":1000", "\"evictions\":0", "\"hit_rate\":0.5",
                          "\"consumer_wait_seconds\":", "\"mean_load_seconds\":"})
    EXPECT_NE(json.find(key), std::string::npos) << key << " in " << json;
  const std::string report = loader.report();
  EXPECT_NE(report.find("hits 1 (50.0%)"), std::string::npos) << report;
  EXPECT_LT(std::count(report.begin(), report.end(), '\n'), 20);
}

}  // namespace
}  // namespace ferry
