#pragma once
/// \file tile_loader.h
/// \brief TileLoader: a keyed, asynchronous loader for large objects (tiles, shards, scenes),
/// with a byte-budgeted LRU cache, retries, neighbour prefetch and a prefetching pipeline.
///
/// The consumer asks for values by key; a pool of worker threads loads them ahead of time
/// (preload(), process(), next_keys) so that the consumer's wait for I/O is hidden behind its own
/// processing. See docs/tile_loader.md for the user guide.
///
/// Threads: every public method may be called from any number of threads at once, except that
/// the destructor must not race with other calls (as for any object). The loader function and
/// next_keys run on worker threads, never under the loader's lock; they must not call get(),
/// process() or shutdown() on the same loader (a worker waiting for another load can exhaust the
/// pool).
///
/// Lifetime: values are reference-counted (TileValue::data); a value stays valid for as long as
/// any copy of it lives, whether or not the cache still holds it. The cache never evicts an
/// entry whose value has a copy outside the cache (see TileLoaderOptions::cache_bytes).
///
/// Errors (include/ferry/error.h): InvalidArgument for bad options, TimeoutError when get()'s
/// timeout expires (the load goes on), ShutdownError for any call after shutdown(), and the
/// loader function's own exception, rethrown to every get() of a key whose load failed after
/// all its retries. Failures are never cached: the next get() or preload() loads anew.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "ferry/error.h"
#include "ferry/source.h"

namespace ferry {

/// A loaded value: type-erased, shared, immutable. `bytes` is the size the loader reports; the
/// cache budget counts it (it need not equal sizeof anything: a Python object reports nbytes).
struct TileValue {
  std::shared_ptr<const void> data;
  uint64_t bytes = 0;
  /// The stored type when built with make(); as()/get() check it. nullptr: unchecked.
  const std::type_info* type = nullptr;

  /// Wraps an existing object; a custom deleter on `object` runs when the last copy dies.
  template <class T>
  static TileValue make(std::shared_ptr<T> object, uint64_t bytes) {
    TileValue v;
    v.data = std::const_pointer_cast<const std::remove_cv_t<T>>(std::move(object));
    v.bytes = bytes;
    v.type = &typeid(std::remove_cv_t<T>);
    return v;
  }

  /// A shared pointer to the value as T, sharing ownership. Throws InvalidArgument if the value
  /// was made from another type.
  template <class T>
  std::shared_ptr<const T> get() const {
    check_type(typeid(T));
    return std::static_pointer_cast<const T>(data);
  }
  /// The value as T (valid while this TileValue lives). Same check as get().
  template <class T>
  const T& as() const {
    check_type(typeid(T));
    return *static_cast<const T*>(data.get());
  }

  explicit operator bool() const noexcept { return data != nullptr; }

 private:
  void check_type(const std::type_info& wanted) const;
};

/// The value of the built-in file loader: a file's bytes, read whole.
struct FileBytes {
  std::string path;
  std::unique_ptr<uint8_t[]> data;
  uint64_t size = 0;

  std::span<const uint8_t> bytes() const noexcept { return {data.get(), size}; }
};

/// Loads the value of `key`. Runs on a worker thread; throwing fails this attempt (it is
/// retried, see TileLoaderOptions::max_retries).
using TileLoadFn = std::function<TileValue(const std::string& key)>;

/// The keys worth loading after `key` was loaded (spatial neighbours, the next shard...).
using NextKeysFn = std::function<std::vector<std::string>(const std::string& key)>;

/// The built-in loader: reads the whole file `root/key` (or `key` when root is empty) through
/// ferry's sources (open_source, then one read). The value is a FileBytes; its size the file's.
/// Throws IoError when the file cannot be opened or read.
TileLoadFn file_loader(std::string root = {}, SourceOptions source = {});

struct TileLoaderOptions {
  /// Worker threads running the loader function (>= 1). I/O-bound loads want a few more than
  /// the loads in flight you need (prefetch_ahead + 1); CPU-bound ones at most the cores.
  uint32_t num_workers = 4;
  /// Byte budget of the LRU cache. Whenever the total is over it (checked when a value arrives
  /// and at every get() and preload()), the least recently used entries are evicted, skipping
  /// those in use: a copy of the value lives outside the cache, or a get() is waiting for it.
  /// Such values cannot be freed anyway, and evicting them would only make the next get() load
  /// a duplicate. So the total can exceed the budget by what callers hold; it comes back under
  /// it at the next call after they let go. With 0 nothing stays cached beyond that.
  uint64_t cache_bytes = 1ull << 30;
  /// process(): keys loading ahead of the one being processed.
  uint32_t prefetch_ahead = 2;
  /// A failed attempt is retried up to this many times, after backoff, backoff × multiplier, ...
  /// (capped at max_backoff). Every exception is retried; use 0 for loads that cannot succeed
  /// on a second try.
  uint32_t max_retries = 2;
  std::chrono::milliseconds backoff{10};
  double backoff_multiplier = 2.0;
  std::chrono::milliseconds max_backoff{1000};
  /// Optional neighbour prefetch: after a key the caller asked for (get or preload) loads,
  /// next_keys(key) is called on the worker and the keys it returns are loaded when capacity
  /// allows: a worker is idle (no requested load queued), one worker stays free for requests,
  /// and the cache has room for a value of the mean size loaded so far without evicting anything.
  /// Keys loaded this way do not trigger next_keys themselves (no crawl). An exception thrown by
  /// next_keys is ignored (counted in TileLoaderStats::next_keys_errors).
  NextKeysFn next_keys;
  /// Neighbour keys waiting for capacity; beyond this the oldest are dropped.
  uint32_t max_pending_neighbours = 64;
  /// Shutdown (and the destructor) waits this long for running loads, then gives up on them.
  std::chrono::milliseconds shutdown_timeout{5000};
};

/// A snapshot of what the loader did, from construction (or reset_stats()) on.
struct TileLoaderStats {
  uint32_t num_workers = 0;
  uint64_t cache_budget_bytes = 0;
  uint64_t gets = 0;      ///< get() calls (each process() step is one)
  uint64_t hits = 0;      ///< gets that found the key cached or already loading (preloaded)
  uint64_t misses = 0;    ///< gets that had to start the load
  uint64_t waits = 0;     ///< gets that had to block for a load to finish
  uint64_t timeouts = 0;  ///< gets that threw TimeoutError
  uint64_t preloads = 0;  ///< preload() calls (including those that found the key already there)
  uint64_t loads = 0;     ///< values the loader function produced
  uint64_t neighbour_loads = 0;  ///< of which started by neighbour prefetch
  uint64_t attempts = 0;         ///< loader function calls (loads + failed attempts)
  uint64_t retries = 0;          ///< failed attempts that were tried again
  uint64_t errors = 0;           ///< loads that failed for good (every retry failed)
  uint64_t cancelled = 0;        ///< queued or running loads that shutdown() cancelled
  uint64_t next_keys_errors = 0;
  uint64_t evictions = 0;
  uint64_t bytes_loaded = 0;         ///< summed over loads
  uint64_t bytes_cached = 0;         ///< now
  uint64_t entries_cached = 0;       ///< now
  uint64_t in_flight = 0;            ///< loads queued or running now
  double total_load_seconds = 0;     ///< time in the loader function, summed over attempts
  double mean_load_seconds = 0;      ///< total_load_seconds / attempts
  double consumer_wait_seconds = 0;  ///< time get() spent blocked (the I/O the consumer saw)
  double hit_rate = 0;               ///< hits / gets

  /// One JSON object, keys as the field names.
  std::string to_json() const;
  /// A short human summary (a dozen lines).
  std::string report() const;
};

/// process() steering: a progress callback and/or a terminal progress bar.
struct ProcessOptions {
  /// Called on the processing thread after each key: (keys done, keys total).
  std::function<void(std::size_t done, std::size_t total)> on_progress;
  /// Draws a one-line progress bar on stderr, only if stderr is a terminal.
  bool progress_bar = false;
};

/// Keyed asynchronous loader with an LRU cache; see the file comment for threads and errors.
///
/// Every entry is in one of three states: queued (waiting for a worker), loading, or cached.
/// Requested loads run in FIFO order, except that a get() of a queued key moves it to the front
/// (the consumer is blocked on it). Neighbour prefetches run only when no requested load waits.
class TileLoader {
 public:
  /// Starts `options.num_workers` threads. Throws InvalidArgument for an empty loader function
  /// or num_workers == 0.
  explicit TileLoader(TileLoadFn load, TileLoaderOptions options = {});
  /// shutdown(), then releases the cache.
  ~TileLoader();
  TileLoader(const TileLoader&) = delete;
  TileLoader& operator=(const TileLoader&) = delete;

  /// Starts loading `key` in the background unless it is cached or already loading, and returns
  /// at once. Every preload of a key that is loading or cached returns the same future (the
  /// entry's); a future stays valid after its entry is evicted, and its value with it.
  /// The future fails with the load's exception or with ShutdownError.
  std::shared_future<TileValue> preload(const std::string& key);

  /// The value of `key`: from the cache (a hit), by waiting for its load in flight (a hit), or
  /// by starting the load and waiting (a miss). Rethrows the load's exception when every retry
  /// failed (the failure is not cached: a later get loads again).
  TileValue get(const std::string& key);
  /// As get(key), but throws TimeoutError once `timeout` has passed; the load goes on and a later
  /// get() or preload() finds it.
  TileValue get(const std::string& key, std::chrono::nanoseconds timeout);

  /// The pipeline: calls fn(index, key, value) for every key in order on this thread, keeping
  /// `prefetch_ahead` keys loading ahead of the one being processed. An exception from a load
  /// or from fn stops it and propagates (the loads ahead go on and stay cached). The value passed
  /// to fn is pinned (never evicted) while fn runs.
  void process_each(
      std::span<const std::string> keys,
      const std::function<void(std::size_t, const std::string&, const TileValue&)>& fn,
      const ProcessOptions& options = {});

  /// process_each() collecting fn(key, value)'s results, in key order.
  template <class Fn>
  auto process(std::span<const std::string> keys, Fn&& fn, const ProcessOptions& options = {})
      -> std::vector<std::invoke_result_t<Fn&, const std::string&, const TileValue&>> {
    using Result = std::invoke_result_t<Fn&, const std::string&, const TileValue&>;
    static_assert(!std::is_void_v<Result>, "fn returns nothing: use process_each()");
    std::vector<Result> results;
    results.reserve(keys.size());
    process_each(
        keys,
        [&](std::size_t, const std::string& key, const TileValue& value) {
          results.push_back(fn(key, value));
        },
        options);
    return results;
  }

  /// True if `key` is cached now (no stats counted, LRU order unchanged).
  bool contains(const std::string& key) const;

  /// Drops every cached entry not in use (loads in flight go on). Returns the bytes released.
  uint64_t clear_cache();

  TileLoaderStats stats() const;
  /// stats().report() plus the options.
  std::string report() const;
  /// Zeroes the counters and times (not the cache figures).
  void reset_stats();

  /// Stops the loader: queued loads are cancelled (their futures fail with ShutdownError), the
  /// cache is released, and running loads are waited for up to options.shutdown_timeout. Loads
  /// still running then are abandoned: their futures fail with ShutdownError, their workers are
  /// detached and exit when the loader function returns (they keep the loader's internal state,
  /// not this object, alive until then). Idempotent and safe to call from several threads; every
  /// other call afterwards throws ShutdownError. Never blocks longer than about the timeout.
  void shutdown();
  bool is_shut_down() const;

  const TileLoaderOptions& options() const noexcept;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;  // shared with the workers, so an abandoned one outlives us safely
};

}  // namespace ferry
