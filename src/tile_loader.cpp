#include "ferry/tile_loader.h"

#include <unistd.h>

#if defined(__GLIBCXX__)
#include <cxxabi.h>
#endif

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <list>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "util.h"

namespace ferry {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::nanoseconds kLongestWait = std::chrono::hours(24 * 365 * 100);

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string quoted(const std::string& key) { return "'" + key + "'"; }

std::string human_bytes(uint64_t b) { return detail::human_bytes(static_cast<double>(b)); }

/// A one-line bar on stderr: "\r[#####-----] 42/100  3.1/s". Only drawn on a terminal.
class ProgressBar {
 public:
  ProgressBar() : enabled_(::isatty(STDERR_FILENO) == 1), start_(Clock::now()) {}
  void update(std::size_t done, std::size_t total) {
    if (!enabled_ || total == 0) return;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * done / total);
    const double elapsed = seconds_since(start_);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.append(static_cast<std::size_t>(kWidth - filled), '-');
    std::fprintf(stderr, "\r[%s] %zu/%zu  %.1f/s", bar.c_str(), done, total,
                 elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0);
    if (done == total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  bool enabled_;
  Clock::time_point start_;
};

/// Called in a catch block: the exception being handled, as a fresh copy for ferry's and the
/// standard library's exception classes (exact types only, so nothing is sliced), else itself.
/// Why copy: an exception object rethrown in several threads is destroyed by whichever thread
/// lets go of it last, through libstdc++'s reference count; that is correct, but the count lives
/// in uninstrumented code, so ThreadSanitizer reports each such destruction as a race. With a
/// copy per get(), the stored object is only read here (while the caller holds the future's
/// shared state) and dies with that state.
std::exception_ptr copy_of_current_exception() {
  try {
    throw;
  } catch (const std::exception& x) {
    const std::type_info& t = typeid(x);
    const std::string what = x.what();
    if (t == typeid(IoError))
      return std::make_exception_ptr(IoError(what, static_cast<const IoError&>(x).errno_value()));
    if (t == typeid(SampleError))
      return std::make_exception_ptr(
          SampleError(what, static_cast<const SampleError&>(x).sample()));
    if (t == typeid(FormatError)) return std::make_exception_ptr(FormatError(what));
    if (t == typeid(InvalidArgument)) return std::make_exception_ptr(InvalidArgument(what));
    if (t == typeid(TimeoutError)) return std::make_exception_ptr(TimeoutError(what));
    if (t == typeid(ShutdownError)) return std::make_exception_ptr(ShutdownError(what));
    if (t == typeid(CapacityError)) return std::make_exception_ptr(CapacityError(what));
    if (t == typeid(Error)) return std::make_exception_ptr(Error(what));
    if (t == typeid(std::runtime_error)) return std::make_exception_ptr(std::runtime_error(what));
    if (t == typeid(std::range_error)) return std::make_exception_ptr(std::range_error(what));
    if (t == typeid(std::overflow_error)) return std::make_exception_ptr(std::overflow_error(what));
    if (t == typeid(std::logic_error)) return std::make_exception_ptr(std::logic_error(what));
    if (t == typeid(std::invalid_argument))
      return std::make_exception_ptr(std::invalid_argument(what));
    if (t == typeid(std::out_of_range)) return std::make_exception_ptr(std::out_of_range(what));
    if (t == typeid(std::domain_error)) return std::make_exception_ptr(std::domain_error(what));
    if (t == typeid(std::length_error)) return std::make_exception_ptr(std::length_error(what));
    return std::current_exception();
  } catch (...) {
    return std::current_exception();
  }
}

}  // namespace

void TileValue::check_type(const std::type_info& wanted) const {
  if (type != nullptr && *type != wanted)
    throw InvalidArgument(std::string("TileValue holds a ") + type->name() + ", not a " +
                          wanted.name());
}

TileLoadFn file_loader(std::string root, SourceOptions source) {
  if (source.pattern == AccessPattern::normal) source.pattern = AccessPattern::sequential;
  return [root = std::move(root), source](const std::string& key) {
    std::string path = root.empty() ? key : root + "/" + key;
    auto src = open_source(path, source);
    auto file = std::make_shared<FileBytes>();
    file->size = src->size();
    // Not make_unique: value-initialising a tile-sized buffer would touch every page twice.
    file->data.reset(new uint8_t[file->size ? file->size : 1]);
    if (file->size) src->read(0, file->size, file->data.get());
    file->path = std::move(path);
    const uint64_t bytes = file->size;
    return TileValue::make(std::move(file), bytes);
  };
}

// ---------------------------------------------------------------------------------------------
// Implementation
//
// One mutex (mu_) guards every member below it. Two condition variables wait on it:
//   work_cv_ : workers wait for a queued load, a neighbour candidate with room, or stop_.
//   stop_cv_ : retry backoff and shutdown's wait for running loads; notified on stop_ and
//              whenever a load finishes.
// stop_ is only read and written under mu_ and is part of every wait predicate, so no wakeup is
// lost. Promises are settled under mu_ (Entry::settled guards against a second set), but entries
// and values are never *destroyed* under it (see Graveyard): a value's deleter may be arbitrary
// user code, such as the Python binding's, which takes the GIL.

struct TileLoader::Impl {
  enum class State { queued, loading, cached };

  struct Entry {
    std::string key;
    std::promise<TileValue> promise;
    std::shared_future<TileValue> future;  // its shared state holds the one cache-owned copy
    State state = State::queued;
    bool settled = false;    // promise set (value, error or shutdown)
    bool neighbour = false;  // started by neighbour prefetch
    uint32_t waiters = 0;    // get() calls waiting for this load: they will use the value
    uint64_t bytes = 0;
    std::list<Entry*>::iterator lru;  // valid while cached; front = most recently used

    explicit Entry(std::string k) : key(std::move(k)), future(promise.get_future().share()) {}

    /// A get() waits for the value, or a copy lives outside the cache's own (the future's shared
    /// state): a caller holds it. use_count() is a relaxed read; a stale answer errs towards
    /// "in use" (the count can only drop concurrently: a new copy is made either from one that
    /// exists or under mu_).
    bool in_use() const { return waiters > 0 || future.get().data.use_count() > 1; }
  };
  using EntryPtr = std::shared_ptr<Entry>;
  /// Entries (and so values) released while mu_ is held are parked here and destroyed after it
  /// is released.
  using Graveyard = std::vector<EntryPtr>;

  Impl(TileLoadFn fn, TileLoaderOptions opt) : load_fn_(std::move(fn)), options_(std::move(opt)) {}

  const TileLoadFn load_fn_;
  const TileLoaderOptions options_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::unordered_map<std::string, EntryPtr> entries_;
  std::deque<EntryPtr> queue_;          // requested loads, not started
  std::deque<std::string> neighbours_;  // neighbour candidates, not started
  std::list<Entry*> lru_;
  uint64_t bytes_cached_ = 0;
  uint32_t running_ = 0;              // workers inside a load (loader call or backoff)
  uint32_t neighbour_running_ = 0;    // of which neighbour loads
  std::vector<bool> busy_;            // per worker: inside a load
  std::vector<std::thread> threads_;  // written by the constructor and shutdown() only
  TileLoaderStats stats_;             // counters; the "now" figures are filled by snapshot()

  std::mutex shutdown_mu_;  // serialises shutdown() callers; taken before mu_, never after
  bool shut_down_ = false;  // guarded by shutdown_mu_

  // --- helpers, called with mu_ held -------------------------------------------------------

  void throw_if_stopped(const char* what, const std::string& key) const {
    if (stop_)
      throw ShutdownError(std::string("TileLoader::") + what + "(" + quoted(key) +
                          "): the loader was shut down");
  }

  EntryPtr enqueue(const std::string& key, bool front) {
    auto e = std::make_shared<Entry>(key);
    entries_.emplace(key, e);
    if (front)
      queue_.push_front(e);
    else
      queue_.push_back(e);
    work_cv_.notify_one();
    return e;
  }

  void promote(const EntryPtr& e) {
    auto it = std::find(queue_.begin(), queue_.end(), e);
    if (it == queue_.end() || it == queue_.begin()) return;
    queue_.erase(it);
    queue_.push_front(e);
  }

  void touch(Entry& e) { lru_.splice(lru_.begin(), lru_, e.lru); }

  void erase_cached(Entry& e, Graveyard& graveyard) {
    bytes_cached_ -= e.bytes;
    lru_.erase(e.lru);
    auto it = entries_.find(e.key);
    graveyard.push_back(std::move(it->second));
    entries_.erase(it);
  }

  void evict(Graveyard& graveyard) {
    auto it = lru_.end();
    while (bytes_cached_ > options_.cache_bytes && it != lru_.begin()) {
      Entry* e = *--it;
      if (e->in_use()) continue;
      ++it;  // erase_cached() invalidates e->lru, which `it` pointed before
      erase_cached(*e, graveyard);
      ++stats_.evictions;
    }
  }

  bool neighbour_room() const {
    if (neighbours_.empty()) return false;
    const uint32_t workers = options_.num_workers;
    if (neighbour_running_ >= (workers > 1 ? workers - 1 : 1)) return false;
    const uint64_t mean = stats_.loads ? stats_.bytes_loaded / stats_.loads : 0;
    return bytes_cached_ + mean <= options_.cache_bytes;
  }

  // --- the workers ---------------------------------------------------------------------------

  // By value on purpose: the thread owns a reference, so Impl outlives every worker.
  static void worker_main(
      std::shared_ptr<Impl> self,  // NOLINT(performance-unnecessary-value-param)
      std::size_t id) {
    self->worker_loop(id);
  }

  void worker_loop(std::size_t id) {
    for (;;) {
      EntryPtr e;
      {
        std::unique_lock lk(mu_);
        work_cv_.wait(lk, [&] { return stop_ || !queue_.empty() || neighbour_room(); });
        if (stop_) return;
        if (!queue_.empty()) {
          e = std::move(queue_.front());
          queue_.pop_front();
        } else {
          std::string key = std::move(neighbours_.front());
          neighbours_.pop_front();
          if (entries_.count(key)) continue;  // requested (or prefetched) meanwhile
          e = std::make_shared<Entry>(key);
          e->neighbour = true;
          entries_.emplace(std::move(key), e);
          ++neighbour_running_;
        }
        e->state = State::loading;
        ++running_;
        busy_[id] = true;
      }
      // next_keys is user code too: it runs while this worker still counts as running, so
      // shutdown() waits for it (bounded) like for a load.
      if (run_load(e) && !e->neighbour && options_.next_keys) queue_neighbours(*e);
      {
        std::lock_guard lk(mu_);
        busy_[id] = false;
        --running_;
        if (e->neighbour) --neighbour_running_;
      }
      stop_cv_.notify_all();  // shutdown() waits for running_ == 0
      work_cv_.notify_one();  // a neighbour slot may have opened
    }
  }

  /// Runs the loader function with retries and settles the entry. True if a value was loaded.
  bool run_load(const EntryPtr& e) {
    for (uint32_t attempt = 0;; ++attempt) {
      const auto t0 = Clock::now();
      std::optional<TileValue> value;
      std::exception_ptr error;
      try {
        value = load_fn_(e->key);
#if defined(__GLIBCXX__)
      } catch (abi::__forced_unwind&) {
        // The thread is being cancelled (pthread_exit: e.g. Python ending a thread that runs
        // Python code at interpreter exit). Swallowing it would abort the process.
        throw;
#endif
      } catch (...) {
        error = std::current_exception();
      }
      const double took = seconds_since(t0);
      Graveyard graveyard;
      std::unique_lock lk(mu_);
      ++stats_.attempts;
      stats_.total_load_seconds += took;
      if (value) {
        ++stats_.loads;
        if (e->neighbour) ++stats_.neighbour_loads;
        stats_.bytes_loaded += value->bytes;
        e->bytes = value->bytes;
        if (!e->settled) {
          e->settled = true;
          e->promise.set_value(std::move(*value));  // moved: the shared state holds the only copy
        }
        auto it = entries_.find(e->key);
        if (!stop_ && it != entries_.end() && it->second == e) {
          e->state = State::cached;
          lru_.push_front(e.get());
          e->lru = lru_.begin();
          bytes_cached_ += e->bytes;
          evict(graveyard);
        }
        lk.unlock();
        return true;  // graveyard and value die here, outside mu_
      }
      if (attempt < options_.max_retries && !stop_) {
        ++stats_.retries;
        double delay_ms = static_cast<double>(options_.backoff.count()) *
                          std::pow(options_.backoff_multiplier, static_cast<double>(attempt));
        delay_ms = std::min(delay_ms, static_cast<double>(options_.max_backoff.count()));
        const auto delay = std::chrono::duration<double, std::milli>(std::max(delay_ms, 0.0));
        if (!stop_cv_.wait_for(lk, delay, [&] { return stop_; })) continue;
        // Shutdown interrupted the backoff: fail with the error we have (below).
      }
      ++stats_.errors;
      auto it = entries_.find(e->key);
      if (it != entries_.end() && it->second == e) {
        graveyard.push_back(std::move(it->second));
        entries_.erase(it);
      }
      if (!e->settled) {
        e->settled = true;
        e->promise.set_exception(error);
      }
      lk.unlock();
      return false;
    }
  }

  void queue_neighbours(const Entry& from) {
    std::vector<std::string> keys;
    {
      std::lock_guard lk(mu_);
      if (stop_) return;
    }
    try {
      keys = options_.next_keys(from.key);
#if defined(__GLIBCXX__)
    } catch (abi::__forced_unwind&) {
      throw;  // thread cancellation, see run_load()
#endif
    } catch (...) {
      std::lock_guard lk(mu_);
      ++stats_.next_keys_errors;
      return;
    }
    if (keys.empty()) return;
    {
      std::lock_guard lk(mu_);
      if (stop_) return;
      for (auto& k : keys) {
        if (entries_.count(k)) continue;
        neighbours_.push_back(std::move(k));
      }
      while (neighbours_.size() > options_.max_pending_neighbours) neighbours_.pop_front();
    }
    work_cv_.notify_all();
  }

  // --- the consumer side ---------------------------------------------------------------------

  TileValue get(const std::string& key, std::optional<std::chrono::nanoseconds> timeout) {
    const auto t0 = Clock::now();
    // Declared before the locks so that they are released after them (see Graveyard).
    Graveyard graveyard;
    EntryPtr e;
    {
      std::lock_guard lk(mu_);
      throw_if_stopped("get", key);
      ++stats_.gets;
      auto it = entries_.find(key);
      if (it == entries_.end()) {
        ++stats_.misses;
        e = enqueue(key, /*front=*/true);  // the consumer is blocked on it: first in line
      } else {
        ++stats_.hits;
        e = it->second;
        if (e->state == State::cached) {
          touch(*e);
          TileValue value = e->future.get();  // a copy: the caller's reference pins the entry
          evict(graveyard);  // values callers let go of since the last insert (not this one)
          return value;
        }
        if (e->state == State::queued) promote(e);
      }
      ++e->waiters;  // pins the value from its arrival until we hold our copy
      evict(graveyard);
    }
    bool ready = true;
    if (timeout)  // clamped: now() + a huge duration would overflow inside wait_for
      ready = e->future.wait_for(std::min(*timeout, kLongestWait)) == std::future_status::ready;
    else
      e->future.wait();
    TileValue value;
    std::exception_ptr error;
    {
      std::lock_guard lk(mu_);
      --e->waiters;
      ++stats_.waits;
      stats_.consumer_wait_seconds += seconds_since(t0);
      if (!ready) {
        ++stats_.timeouts;
      } else {
        try {
          value = e->future.get();  // copied under mu_: no eviction between unpin and copy
        } catch (...) {
          error = copy_of_current_exception();
        }
      }
    }
    if (error) std::rethrow_exception(error);
    if (!ready)
      throw TimeoutError("TileLoader::get(" + quoted(key) + "): not loaded within " +
                         std::to_string(std::chrono::duration<double>(*timeout).count()) +
                         " s (the load goes on)");
    return value;
  }

  std::shared_future<TileValue> preload(const std::string& key) {
    Graveyard graveyard;
    std::lock_guard lk(mu_);
    throw_if_stopped("preload", key);
    ++stats_.preloads;
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      if (it->second->state == State::cached) touch(*it->second);  // about to be used
      return it->second->future;
    }
    auto future = enqueue(key, /*front=*/false)->future;
    evict(graveyard);  // values callers let go of since the last insert
    return future;
  }

  TileLoaderStats snapshot() const {
    std::lock_guard lk(mu_);
    TileLoaderStats s = stats_;
    s.num_workers = options_.num_workers;
    s.cache_budget_bytes = options_.cache_bytes;
    s.bytes_cached = bytes_cached_;
    s.entries_cached = lru_.size();
    s.in_flight = entries_.size() - lru_.size();
    s.mean_load_seconds = s.attempts ? s.total_load_seconds / static_cast<double>(s.attempts) : 0;
    s.hit_rate = s.gets ? static_cast<double>(s.hits) / static_cast<double>(s.gets) : 0;
    return s;
  }

  void shutdown() {
    std::lock_guard serial(shutdown_mu_);
    if (shut_down_) return;
    shut_down_ = true;
    Graveyard graveyard;
    std::vector<std::size_t> abandoned;
    {
      std::unique_lock lk(mu_);
      stop_ = true;
      const auto shutdown_error = [](const std::string& key, const char* why) {
        return std::make_exception_ptr(
            ShutdownError("TileLoader: load of " + quoted(key) + " " + why));
      };
      for (auto& e : queue_) {
        e->settled = true;
        e->promise.set_exception(shutdown_error(e->key, "cancelled by shutdown()"));
        ++stats_.cancelled;
      }
      queue_.clear();
      neighbours_.clear();
      work_cv_.notify_all();
      stop_cv_.notify_all();  // wakes retry backoffs
      stop_cv_.wait_for(lk, options_.shutdown_timeout, [&] { return running_ == 0; });
      // Whatever still runs is abandoned: its waiters must not hang on it.
      for (auto& [key, e] : entries_) {
        if (e->state != State::loading || e->settled) continue;
        e->settled = true;
        e->promise.set_exception(
            shutdown_error(key, "abandoned: still running when shutdown() timed out"));
        ++stats_.cancelled;
      }
      for (auto& [key, e] : entries_) graveyard.push_back(std::move(e));
      entries_.clear();
      lru_.clear();
      bytes_cached_ = 0;
      for (std::size_t i = 0; i < busy_.size(); ++i)
        if (busy_[i]) abandoned.push_back(i);
    }
    // Idle workers saw stop_ (or will at their next check, they run no user code before it), so
    // joining them is prompt; busy ones are stuck in the loader function and are let go.
    const auto self = std::this_thread::get_id();
    for (std::size_t i = 0; i < threads_.size(); ++i) {
      std::thread& t = threads_[i];
      if (!t.joinable()) continue;
      const bool stuck = std::find(abandoned.begin(), abandoned.end(), i) != abandoned.end();
      if (stuck || t.get_id() == self)
        t.detach();
      else
        t.join();
    }
  }
};

// ---------------------------------------------------------------------------------------------

TileLoader::TileLoader(TileLoadFn load, TileLoaderOptions options) {
  if (!load) throw InvalidArgument("TileLoader: the loader function is empty");
  if (options.num_workers == 0) throw InvalidArgument("TileLoader: num_workers must be >= 1");
  if (options.backoff.count() < 0 || options.max_backoff.count() < 0 ||
      !(options.backoff_multiplier >= 1.0))
    throw InvalidArgument(
        "TileLoader: backoff and max_backoff must be >= 0, backoff_multiplier >= 1");
  if (options.shutdown_timeout.count() < 0)
    throw InvalidArgument("TileLoader: shutdown_timeout must be >= 0");
  impl_ = std::make_shared<Impl>(std::move(load), std::move(options));
  const uint32_t n = impl_->options_.num_workers;
  impl_->busy_.assign(n, false);
  impl_->threads_.reserve(n);
  try {
    for (uint32_t i = 0; i < n; ++i) impl_->threads_.emplace_back(&Impl::worker_main, impl_, i);
  } catch (...) {
    impl_->shutdown();  // the threads already started must not be left joinable
    throw;
  }
}

TileLoader::~TileLoader() { impl_->shutdown(); }

std::shared_future<TileValue> TileLoader::preload(const std::string& key) {
  return impl_->preload(key);
}

TileValue TileLoader::get(const std::string& key) { return impl_->get(key, std::nullopt); }

TileValue TileLoader::get(const std::string& key, std::chrono::nanoseconds timeout) {
  return impl_->get(key, timeout);
}

void TileLoader::process_each(
    std::span<const std::string> keys,
    const std::function<void(std::size_t, const std::string&, const TileValue&)>& fn,
    const ProcessOptions& options) {
  const std::size_t n = keys.size();
  const std::size_t ahead = impl_->options_.prefetch_ahead;
  std::optional<ProgressBar> bar;
  if (options.progress_bar) bar.emplace();
  // Preload futures are dropped at once: the entry keeps the load, get() finds it.
  for (std::size_t j = 0; j < std::min(n, ahead + 1); ++j) preload(keys[j]);
  for (std::size_t i = 0; i < n; ++i) {
    if (i > 0 && i + ahead < n) preload(keys[i + ahead]);
    {
      const TileValue value = get(keys[i]);  // pinned until fn returns
      fn(i, keys[i], value);
    }
    if (options.on_progress) options.on_progress(i + 1, n);
    if (bar) bar->update(i + 1, n);
  }
}

bool TileLoader::contains(const std::string& key) const {
  std::lock_guard lk(impl_->mu_);
  auto it = impl_->entries_.find(key);
  return it != impl_->entries_.end() && it->second->state == Impl::State::cached;
}

uint64_t TileLoader::clear_cache() {
  Impl::Graveyard graveyard;  // declared first: destroyed after lk is released
  std::lock_guard lk(impl_->mu_);
  const uint64_t before = impl_->bytes_cached_;
  for (auto it = impl_->lru_.begin(); it != impl_->lru_.end();) {
    Impl::Entry* e = *it++;
    if (!e->in_use()) impl_->erase_cached(*e, graveyard);
  }
  impl_->work_cv_.notify_all();  // neighbour candidates may fit now
  return before - impl_->bytes_cached_;
}

TileLoaderStats TileLoader::stats() const { return impl_->snapshot(); }

std::string TileLoader::report() const {
  const auto& o = impl_->options_;
  std::ostringstream out;
  out << "TileLoader: " << o.num_workers << " workers, cache budget " << human_bytes(o.cache_bytes)
      << ", prefetch_ahead " << o.prefetch_ahead << ", max_retries " << o.max_retries
      << (o.next_keys ? ", neighbour prefetch on" : "") << "\n"
      << stats().report();
  return out.str();
}

void TileLoader::reset_stats() {
  std::lock_guard lk(impl_->mu_);
  impl_->stats_ = TileLoaderStats{};
}

void TileLoader::shutdown() { impl_->shutdown(); }

bool TileLoader::is_shut_down() const {
  std::lock_guard lk(impl_->mu_);
  return impl_->stop_;
}

const TileLoaderOptions& TileLoader::options() const noexcept { return impl_->options_; }

// ---------------------------------------------------------------------------------------------

std::string TileLoaderStats::to_json() const {
  std::ostringstream o;
  o.precision(9);
  o << "{\"num_workers\":" << num_workers << ",\"cache_budget_bytes\":" << cache_budget_bytes
    << ",\"gets\":" << gets << ",\"hits\":" << hits << ",\"misses\":" << misses
    << ",\"waits\":" << waits << ",\"timeouts\":" << timeouts << ",\"preloads\":" << preloads
    << ",\"loads\":" << loads << ",\"neighbour_loads\":" << neighbour_loads
    << ",\"attempts\":" << attempts << ",\"retries\":" << retries << ",\"errors\":" << errors
    << ",\"cancelled\":" << cancelled << ",\"next_keys_errors\":" << next_keys_errors
    << ",\"evictions\":" << evictions << ",\"bytes_loaded\":" << bytes_loaded
    << ",\"bytes_cached\":" << bytes_cached << ",\"entries_cached\":" << entries_cached
    << ",\"in_flight\":" << in_flight << ",\"total_load_seconds\":" << total_load_seconds
    << ",\"mean_load_seconds\":" << mean_load_seconds
    << ",\"consumer_wait_seconds\":" << consumer_wait_seconds << ",\"hit_rate\":" << hit_rate
    << "}";
  return o.str();
}

std::string TileLoaderStats::report() const {
  char buf[1024];
  const double hidden =
      total_load_seconds > 0 ? 100.0 * (1.0 - consumer_wait_seconds / total_load_seconds) : 0.0;
  std::snprintf(
      buf, sizeof buf,
      "  gets      %10llu   hits %llu (%.1f%%), misses %llu, waited %llu, timeouts %llu\n"
      "  loads     %10llu   neighbour %llu, preloads %llu, in flight %llu\n"
      "  attempts  %10llu   retries %llu, errors %llu, cancelled %llu\n"
      "  cache     %10s   of %s in %llu entries, evictions %llu\n"
      "  loaded    %10s\n"
      "  load time %9.3fs   mean %.2f ms per attempt\n"
      "  waited    %9.3fs   consumer blocked in get(); I/O hidden %.1f%%\n",
      static_cast<unsigned long long>(gets), static_cast<unsigned long long>(hits),
      100.0 * hit_rate, static_cast<unsigned long long>(misses),
      static_cast<unsigned long long>(waits), static_cast<unsigned long long>(timeouts),
      static_cast<unsigned long long>(loads), static_cast<unsigned long long>(neighbour_loads),
      static_cast<unsigned long long>(preloads), static_cast<unsigned long long>(in_flight),
      static_cast<unsigned long long>(attempts), static_cast<unsigned long long>(retries),
      static_cast<unsigned long long>(errors), static_cast<unsigned long long>(cancelled),
      human_bytes(bytes_cached).c_str(), human_bytes(cache_budget_bytes).c_str(),
      static_cast<unsigned long long>(entries_cached), static_cast<unsigned long long>(evictions),
      human_bytes(bytes_loaded).c_str(), total_load_seconds, 1000.0 * mean_load_seconds,
      consumer_wait_seconds, hidden);
  return buf;
}

}  // namespace ferry
