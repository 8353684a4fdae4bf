// Metrics: collection (LoaderMetrics), the bottleneck diagnosis, and the JSON/table renderings.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "ferry/error.h"
#include "ferry/loader.h"
#include "loader_metrics.h"
#include "util.h"

namespace ferry {

namespace {

using detail::human_bytes;
std::string fmt(const char* f, double v) { return detail::printf_double(f, v); }

std::string human_rate(double v) {
  if (v >= 1e6) return fmt("%.2fM", v / 1e6);
  if (v >= 1e3) return fmt("%.1fk", v / 1e3);
  return fmt("%.0f", v);
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

StageTimer& LoaderMetrics::add_stage(std::string name, std::string advice) {
  StageTimer& t = stages_.emplace_back();
  t.name = std::move(name);
  t.advice = std::move(advice);
  return t;
}

void LoaderMetrics::reset() {
  std::lock_guard lk(mu_);
  for (auto* a : {&samples, &bytes, &errors_skipped, &batches})
    a->store(0, std::memory_order_relaxed);
  for (auto& s : stages_) {
    s.ns.store(0, std::memory_order_relaxed);
    s.items.store(0, std::memory_order_relaxed);
  }
  start_ = std::chrono::steady_clock::now();
  wait_ns_ = 0;
  queue_hist_.clear();
  latencies_.clear();
  latency_next_ = 0;
}

void LoaderMetrics::record_queue(uint64_t ready, uint32_t prefetch) {
  std::lock_guard lk(mu_);
  if (queue_hist_.size() < prefetch + 1u) queue_hist_.resize(prefetch + 1u, 0);
  ++queue_hist_[std::min<uint64_t>(ready, prefetch)];
}

void LoaderMetrics::add_wait(uint64_t ns) {
  std::lock_guard lk(mu_);
  wait_ns_ += ns;
}

void LoaderMetrics::add_latency(double ms) {
  std::lock_guard lk(mu_);
  if (latencies_.size() < kLatencyWindow) {
    latencies_.push_back(ms);
  } else {
    latencies_[latency_next_] = ms;
    latency_next_ = (latency_next_ + 1) % kLatencyWindow;
  }
}

Metrics LoaderMetrics::snapshot(uint32_t threads, uint32_t prefetch) const {
  Metrics m;
  std::lock_guard lk(mu_);
  m.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  m.threads = threads;
  m.prefetch = prefetch;
  m.batches = batches.load(std::memory_order_relaxed);
  m.samples = samples.load(std::memory_order_relaxed);
  m.bytes_read = bytes.load(std::memory_order_relaxed);
  m.errors_skipped = errors_skipped.load(std::memory_order_relaxed);
  const double capacity = std::max(1e-9, m.wall_seconds * threads);
  for (const auto& t : stages_) {
    StageMetrics s;
    s.name = t.name;
    s.advice = t.advice;
    s.busy_seconds = static_cast<double>(t.ns.load(std::memory_order_relaxed)) / 1e9;
    s.items = t.items.load(std::memory_order_relaxed);
    s.utilization = s.busy_seconds / capacity;
    s.items_per_second = s.busy_seconds > 0 ? static_cast<double>(s.items) / s.busy_seconds : 0;
    m.stages.push_back(s);
  }
  m.consumer_wait_seconds = static_cast<double>(wait_ns_) / 1e9;
  m.consumer_wait_fraction = m.wall_seconds > 0 ? m.consumer_wait_seconds / m.wall_seconds : 0;
  m.queue_histogram = queue_hist_;
  uint64_t calls = 0, sum = 0;
  for (size_t i = 0; i < queue_hist_.size(); ++i)
    calls += queue_hist_[i], sum += i * queue_hist_[i];
  m.queue_mean = calls ? static_cast<double>(sum) / static_cast<double>(calls) : 0;
  m.latency_p50_ms = percentile(latencies_, 0.50);
  m.latency_p95_ms = percentile(latencies_, 0.95);
  m.latency_p99_ms = percentile(latencies_, 0.99);
  m.samples_per_second = m.wall_seconds > 0 ? static_cast<double>(m.samples) / m.wall_seconds : 0;
  return m;
}

std::string diagnose_bottleneck(const Metrics& m) {
  if (m.batches == 0) return "no batches delivered yet";
  const StageMetrics* busiest = nullptr;
  for (const auto& s : m.stages)
    if (!busiest || s.utilization > busiest->utilization) busiest = &s;
  const std::string idle = fmt("%.1f%%", 100 * m.consumer_wait_fraction);
  if (m.consumer_wait_fraction < 0.05)
    return "consumer (your step): the loader keeps up, the consumer waited " + idle +
           " of the time";
  const std::string busy = fmt("%.0f%%", 100 * busiest->utilization);
  // Reads of a remote source that spend most of their time waiting on fetches: the network.
  if (m.remote.requests > 0 && busiest->name == "read" && busiest->utilization >= 0.5 &&
      m.remote.wait_seconds >= 0.5 * busiest->busy_seconds)
    return "network: reads waited " + fmt("%.2f", m.remote.wait_seconds) +
           " s on remote fetches, consumer waited " + idle +
           " — use order=quasi_random (whole blocks per fetch), raise max_in_flight, or set "
           "cache_dir/cache_bytes so later epochs read from local disk";
  if (busiest->utilization >= 0.75) {
    const std::string& advice = busiest->advice;
    return busiest->name + ": busy " + busy + " of " + std::to_string(m.threads) +
           " threads, consumer waited " + idle + " — " + advice;
  }
  return "prefetch: workers busy only " + busy + " while the consumer waited " + idle +
         " — raise prefetch or memory_budget (or this is start-up: run longer)";
}

std::string Metrics::to_json() const {
  std::ostringstream o;
  o << "{\"wall_seconds\":" << wall_seconds << ",\"threads\":" << threads
    << ",\"prefetch\":" << prefetch << ",\"pool_slots\":" << pool_slots
    << ",\"pool_max_slots\":" << pool_max_slots << ",\"slot_bytes\":" << slot_bytes
    << ",\"batches\":" << batches << ",\"samples\":" << samples << ",\"bytes_read\":" << bytes_read
    << ",\"errors_skipped\":" << errors_skipped << ",\"remote\":{\"bytes\":" << remote.bytes
    << ",\"requests\":" << remote.requests << ",\"retries\":" << remote.retries
    << ",\"cache_hits\":" << remote.cache_hits << ",\"cache_misses\":" << remote.cache_misses
    << ",\"wait_seconds\":" << remote.wait_seconds << "}"
    << ",\"samples_per_second\":" << samples_per_second
    << ",\"consumer_wait_seconds\":" << consumer_wait_seconds
    << ",\"consumer_wait_fraction\":" << consumer_wait_fraction << ",\"queue_mean\":" << queue_mean
    << ",\"queue_histogram\":[";
  for (size_t i = 0; i < queue_histogram.size(); ++i) o << (i ? "," : "") << queue_histogram[i];
  o << "],\"latency_ms\":{\"p50\":" << latency_p50_ms << ",\"p95\":" << latency_p95_ms
    << ",\"p99\":" << latency_p99_ms << "},\"stages\":[";
  for (size_t i = 0; i < stages.size(); ++i)
    o << (i ? "," : "") << "{\"name\":\"" << stages[i].name
      << "\",\"busy_seconds\":" << stages[i].busy_seconds << ",\"items\":" << stages[i].items
      << ",\"utilization\":" << stages[i].utilization
      << ",\"items_per_second\":" << stages[i].items_per_second << "}";
  std::string b;
  for (char c : bottleneck) b += c == '"' ? std::string("\\\"") : std::string(1, c);
  o << "],\"bottleneck\":\"" << b << "\"}";
  return o.str();
}

std::string Metrics::to_table() const {
  std::ostringstream o;
  o << "ferry loader: " << fmt("%.2f s", wall_seconds) << ", " << threads << " threads, prefetch "
    << prefetch << ", pool " << pool_slots << "/" << pool_max_slots << " × "
    << human_bytes(static_cast<double>(slot_bytes)) << "\n";
  o << "  stage           busy s   util   samples per busy thread-second\n";
  for (const auto& s : stages)
    o << "  " << s.name << std::string(16 - std::min<size_t>(15, s.name.size()), ' ')
      << fmt("%6.2f", s.busy_seconds) << fmt("%7.1f%%", 100 * s.utilization) << "   "
      << human_rate(s.items_per_second) << "\n";
  o << "  consumer wait   " << fmt("%6.2f", consumer_wait_seconds)
    << fmt("%7.1f%%", 100 * consumer_wait_fraction)
    << "   (of wall time: the accelerator-idle figure)\n";
  o << "  queue at next(): mean " << fmt("%.2f", queue_mean) << " ready; histogram";
  for (size_t i = 0; i < queue_histogram.size(); ++i) o << " " << i << ":" << queue_histogram[i];
  o << "\n  batch latency ms: p50 " << fmt("%.2f", latency_p50_ms) << "  p95 "
    << fmt("%.2f", latency_p95_ms) << "  p99 " << fmt("%.2f", latency_p99_ms) << "\n";
  o << "  delivered " << batches << " batches, " << samples << " samples ("
    << human_rate(samples_per_second) << "/s), " << human_bytes(static_cast<double>(bytes_read))
    << ", errors skipped " << errors_skipped << "\n";
  if (remote.requests > 0)
    o << "  remote: " << human_bytes(static_cast<double>(remote.bytes)) << " in " << remote.requests
      << " requests, " << remote.retries << " retries, waited "
      << fmt("%.2f s", remote.wait_seconds) << "; disk cache " << remote.cache_hits << " hits / "
      << remote.cache_misses << " misses\n";
  o << "  bottleneck: " << bottleneck << "\n";
  return o.str();
}

}  // namespace ferry
