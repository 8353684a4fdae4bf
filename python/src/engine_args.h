#pragma once
// The keyword arguments ferry.Loader (python/ferry/loader.py) hands to either engine,
// _ferry.Loader or _ferry.DeviceLoader, turned into LoaderOptions in one place.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <initializer_list>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ferry/error.h"
#include "ferry/loader.h"

namespace ferry::python {
namespace py = pybind11;

struct EngineArgs {
  LoaderOptions options;
  // Test seam: reads of these samples fail (EIO), every read waits this long.
  std::vector<uint64_t> fault_samples;
  uint64_t fault_delay_us = 0;
  bool faulty() const { return !fault_samples.empty() || fault_delay_us != 0; }
};

/// The remote source's keyword arguments (all optional) into `r`.
inline void read_remote_args(const py::kwargs& kw, RemoteOptions& r) {
  if (kw.contains("headers"))
    r.headers = kw["headers"].cast<std::vector<std::pair<std::string, std::string>>>();
  if (kw.contains("cache_dir")) r.cache_dir = kw["cache_dir"].cast<std::string>();
  if (kw.contains("cache_bytes")) r.cache_bytes = kw["cache_bytes"].cast<uint64_t>();
  if (kw.contains("remote_timeout"))
    r.request_timeout =
        std::chrono::milliseconds(static_cast<int64_t>(1000 * kw["remote_timeout"].cast<double>()));
  if (kw.contains("retries")) r.retries = kw["retries"].cast<uint32_t>();
  if (kw.contains("max_in_flight")) r.max_in_flight = kw["max_in_flight"].cast<uint32_t>();
  if (kw.contains("verify_tls")) r.verify_tls = kw["verify_tls"].cast<bool>();
  if (kw.contains("ca_file")) r.ca_file = kw["ca_file"].cast<std::string>();
}

/// Reads the keyword arguments (needs the GIL). `extra` names further keys the caller reads
/// itself; any other key is a TypeError naming it.
inline EngineArgs engine_args(const py::kwargs& kw, std::initializer_list<const char*> extra = {}) {
  static const std::set<std::string> known = {
      "batch_size", "order", "seed", "drop_last", "num_threads", "prefetch", "memory_budget",
      "on_error", "rank", "world_size", "remainder", "backend", "fields", "window_pages", "ordered",
      "resume_json", "device", "fault_samples", "fault_delay_us", "pipeline",
      // the remote source (remote.h); each optional
      "headers", "cache_dir", "cache_bytes", "remote_timeout", "retries", "max_in_flight",
      "verify_tls", "ca_file"};
  std::set<std::string> allowed = known;
  allowed.insert(extra.begin(), extra.end());
  for (const auto& item : kw) {
    const auto key = item.first.cast<std::string>();
    if (!allowed.count(key)) throw py::type_error("unexpected keyword argument '" + key + "'");
  }
  auto get = [&](const char* key) -> py::handle {
    if (!kw.contains(key))
      throw py::type_error(std::string("missing keyword argument '") + key + "'");
    return kw[key];
  };
  EngineArgs a;
  LoaderOptions& o = a.options;
  o.batch_size = get("batch_size").cast<uint64_t>();
  o.order = parse_order(get("order").cast<std::string>());
  o.seed = get("seed").cast<uint64_t>();
  o.drop_last = get("drop_last").cast<bool>();
  o.num_threads = get("num_threads").cast<uint32_t>();
  o.prefetch = get("prefetch").cast<uint32_t>();
  o.memory_budget = get("memory_budget").cast<uint64_t>();
  const auto on_error = get("on_error").cast<std::string>();
  if (on_error != "raise" && on_error != "skip")
    throw InvalidArgument("on_error must be 'raise' or 'skip', got '" + on_error + "'");
  o.on_error = on_error == "raise" ? OnError::raise : OnError::skip;
  o.rank = get("rank").cast<uint32_t>();
  o.world_size = get("world_size").cast<uint32_t>();
  const auto remainder = get("remainder").cast<std::string>();
  if (remainder != "pad" && remainder != "drop")
    throw InvalidArgument("remainder must be 'pad' or 'drop', got '" + remainder + "'");
  o.remainder = remainder == "pad" ? ShardRemainder::pad : ShardRemainder::drop;
  o.backend = parse_backend(get("backend").cast<std::string>());
  o.fields = get("fields").cast<std::vector<std::string>>();
  o.window_pages = get("window_pages").cast<uint32_t>();
  o.ordered = get("ordered").cast<bool>();
  o.device = get("device").cast<std::string>();
  if (kw.contains("pipeline")) {  // the per-field op chains, as JSON text (pipeline.h)
    const auto pipeline = kw["pipeline"].cast<std::string>();
    if (!pipeline.empty()) o.pipeline = parse_pipeline(pipeline);
  }
  const auto resume = get("resume_json").cast<std::string>();
  if (!resume.empty() && resume.front() == '[') {  // every rank's state: an elastic resume
    o.resume_ranks = LoaderState::list_from_json(resume);
  } else if (!resume.empty()) {
    o.resume = LoaderState::from_json(resume);
  }
  read_remote_args(kw, o.remote);
  if (kw.contains("fault_samples"))
    a.fault_samples = kw["fault_samples"].cast<std::vector<uint64_t>>();
  if (kw.contains("fault_delay_us")) a.fault_delay_us = kw["fault_delay_us"].cast<uint64_t>();
  return a;
}

/// The test seam's reader: the same fault-injecting source the C++ tests use, under the
/// validated layout. Call without the GIL.
inline std::shared_ptr<Reader> faulty_reader(const std::string& path, const EngineArgs& a) {
  auto plain = Reader::open(path, SourceOptions{a.options.backend});
  FaultSpec spec;
  spec.delay = std::chrono::microseconds(a.fault_delay_us);
  spec.from_offset = plain->layout().data_offset();
  for (uint64_t id : a.fault_samples) {
    if (id >= plain->num_samples()) throw InvalidArgument("fault sample out of range");
    spec.fail_ranges.push_back(plain->layout().sample_extent(id));
  }
  return Reader::open(std::shared_ptr<Source>(wrap_faulty_source(plain->shared_source(), spec)));
}

/// Owns an engine (Loader or DeviceLoader) through a shared_ptr: a thread blocked in next()
/// holds its own reference, so close() (or del) from another thread cannot free the engine
/// under it. close() stops the engine with the GIL released (Loader::close wakes waiters, which
/// raise ShutdownError "loader closed"); use after close() is ShutdownError.
template <class Engine>
class EngineOwner {
 public:
  explicit EngineOwner(std::unique_ptr<Engine> e) : engine_(std::move(e)) {}
  ~EngineOwner() { close(); }
  EngineOwner(const EngineOwner&) = delete;
  EngineOwner& operator=(const EngineOwner&) = delete;

  Engine& get() {
    if (!engine_) throw ShutdownError("loader closed");
    return *engine_;
  }
  /// A reference that keeps the engine alive across a GIL-released wait.
  std::shared_ptr<Engine> share() {
    if (!engine_) throw ShutdownError("loader closed");
    return engine_;
  }
  bool closed() const { return !engine_; }

  void close() {
    if (!engine_) return;
    std::shared_ptr<Engine> engine = std::move(engine_);
    py::gil_scoped_release nogil;
    if constexpr (requires { engine->close(); }) engine->close();
    engine.reset();  // joins here unless a waiter still holds it (it then drops it)
  }

 private:
  std::shared_ptr<Engine> engine_;
};

/// Seconds -> a deadline: < 0 or inf waits forever (nullopt); huge values are clamped so the
/// chrono conversion cannot overflow. NaN was refused by the caller.
inline std::optional<std::chrono::steady_clock::time_point> deadline_after(double seconds) {
  using Clock = std::chrono::steady_clock;
  constexpr double kForever = 100.0 * 365 * 24 * 3600;  // a century: no wait is longer
  if (seconds < 0 || !(seconds < kForever)) return std::nullopt;
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

/// The engine's next(timeout) called in slices of 100 ms with the GIL released, checking for
/// Ctrl-C between slices (KeyboardInterrupt within a slice). `next_for(slice)` returns the
/// engine's batch type; an empty batch (end of epoch) becomes None, a batch `wrap(batch)`.
/// timeout_seconds < 0 waits as long as needed; else TimeoutError after it.
/// `closed()` is checked between slices: an engine without a waking close() (DeviceLoader)
/// still answers a close() from another thread within one slice.
template <class NextFor, class Wrap, class Closed>
py::object next_interruptibly(double timeout_seconds, NextFor&& next_for, Wrap&& wrap,
                              Closed&& closed) {
  using Clock = std::chrono::steady_clock;
  using std::chrono::milliseconds;
  constexpr milliseconds kSignalCheck(100);
  if (std::isnan(timeout_seconds)) throw InvalidArgument("timeout must not be NaN");
  const std::optional<Clock::time_point> deadline = deadline_after(timeout_seconds);
  while (true) {
    if (closed()) throw ShutdownError("loader closed");
    std::optional<decltype(next_for(kSignalCheck))> got;
    {
      py::gil_scoped_release nogil;
      milliseconds slice = kSignalCheck;
      if (deadline)
        slice = std::max(
            milliseconds(0),
            std::min(slice, std::chrono::duration_cast<milliseconds>(*deadline - Clock::now())));
      try {
        got.emplace(next_for(slice));
      } catch (const TimeoutError&) {
      }
    }
    if (got) return *got ? wrap(std::move(*got)) : py::none();
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();  // KeyboardInterrupt
    if (deadline && Clock::now() >= *deadline)
      throw TimeoutError("no batch within " + std::to_string(timeout_seconds) +
                         " s; the loader is still running (raise timeout, or check report())");
  }
}

}  // namespace ferry::python
