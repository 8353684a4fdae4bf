// Loader: the facade that wires the stages (include/ferry/loader.h). It checks options, picks
// the source, builds the BatchPlan and BatchLayout, sizes the pool, and runs one Worker on N
// threads against one Scheduler. Everything it does per batch lives in those classes.
#include "ferry/loader.h"

#include <algorithm>
#include <thread>

#include "batch_layout.h"
#include "batch_pool.h"
#include "ferry/error.h"
#include "ferry/os.h"
#include "loader_metrics.h"
#include "plan.h"
#include "scheduler.h"
#include "worker.h"

namespace ferry {

namespace {

// Without a budget the pool may still grow (for batches the consumer holds) up to this much.
constexpr uint64_t kDefaultGrowthBytes = 1ull << 30;
constexpr uint64_t kDefaultPoolBytes = 128ull << 20;
constexpr uint64_t kLargeSampleBytes = 64 * 1024;  // auto: from here on, pread rather than mmap

// Mean span of a sample in the file, from the validated index.
uint64_t mean_sample_bytes(const Layout& layout) {
  if (layout.num_samples() == 0) return 0;
  const uint64_t used = layout.page_offset(layout.num_pages() - 1) + layout.pages().back().used -
                        layout.data_offset();
  return used / layout.num_samples();
}

// Hints only pay when pages must come from the disk; residency is sampled once, at open.
bool is_cold(const std::string& path) {
  try {
    return resident_fraction(path) < 0.9;
  } catch (const std::exception&) {
    return false;  // not a plain file (a test double, a memory source): nothing to hint
  }
}

void check_options(const LoaderOptions& opt) {
  if (opt.batch_size == 0) throw InvalidArgument("batch_size must be at least 1");
  if (opt.world_size == 0) throw InvalidArgument("world_size must be at least 1");
  if (opt.rank >= opt.world_size)
    throw InvalidArgument("rank " + std::to_string(opt.rank) + " must be below world_size " +
                          std::to_string(opt.world_size));
  if (opt.num_threads > 1024)
    throw InvalidArgument("num_threads " + std::to_string(opt.num_threads) +
                          " is absurd; use at most 1024");
  if (opt.device != "cpu" && opt.device.rfind("cuda", 0) == 0)
#if FERRY_HAVE_CUDA
    throw InvalidArgument("device '" + opt.device +
                          "': Loader makes host batches; CUDA devices take a "
                          "ferry::DeviceLoader (include/ferry/cuda.h)");
#else
    throw InvalidArgument("device '" + opt.device + "': ferry was built without CUDA");
#endif
  if (opt.device != "cpu")
    throw InvalidArgument("device '" + opt.device + "': use 'cpu', 'cuda' or 'cuda:N'");
  if (opt.numa_node >= numa_node_count())
    throw InvalidArgument("numa_node " + std::to_string(opt.numa_node) + ": this machine has " +
                          std::to_string(numa_node_count()) +
                          " NUMA node(s); use -1 for no pinning");
}

// How deep the window is and how many slots the pool may hold.
struct PoolSize {
  uint32_t prefetch;
  uint64_t max_slots;
};

PoolSize size_pool(const LoaderOptions& opt, uint64_t slot_bytes, uint32_t threads) {
  if (opt.memory_budget) {
    const uint64_t max_slots = opt.memory_budget / slot_bytes;
    const uint64_t need = opt.prefetch ? uint64_t{opt.prefetch} + 1 : 2;
    if (max_slots < need)
      throw InvalidArgument("memory_budget " + std::to_string(opt.memory_budget) + " bytes holds " +
                            std::to_string(max_slots) + " batches of " +
                            std::to_string(slot_bytes) + " bytes; it needs at least " +
                            std::to_string(need) + " (" + std::to_string(need * slot_bytes) +
                            " bytes): raise memory_budget, or lower " + "batch_size" +
                            (opt.prefetch ? " or prefetch" : ""));
    uint32_t prefetch =
        opt.prefetch ? opt.prefetch : static_cast<uint32_t>(std::min<uint64_t>(max_slots - 1, 64));
    if (!opt.prefetch && max_slots > 2)
      prefetch = static_cast<uint32_t>(std::min<uint64_t>(max_slots - 2, 64));
    return {prefetch, max_slots};
  }
  // Default depth: 2 batches per thread (at least 4), but no deeper than what keeps the pool
  // near kDefaultPoolBytes: a few batches of 40 MB already hide any step time.
  const uint64_t by_memory =
      kDefaultPoolBytes / slot_bytes > 2 ? kDefaultPoolBytes / slot_bytes - 2 : 0;
  const uint32_t prefetch =
      opt.prefetch
          ? opt.prefetch
          : static_cast<uint32_t>(std::clamp<uint64_t>(by_memory, 2, std::max(4u, 2 * threads)));
  return {prefetch, std::max<uint64_t>(uint64_t{prefetch} + 2, kDefaultGrowthBytes / slot_bytes)};
}

// The OS hint for an order. quasi_random reads pages in a shuffled order but each page whole:
// `normal` keeps the kernel's read-around, which is what makes it fast on a cold file.
AccessPattern access_pattern(OrderKind order) {
  switch (order) {
    case OrderKind::sequential:
      return AccessPattern::sequential;
    case OrderKind::random:
      return AccessPattern::random;
    case OrderKind::quasi_random:
      break;
  }
  return AccessPattern::normal;
}

// `auto` for a loader: open_source's rule, refined by what only the index tells. Large samples
// (>= 64 KiB) are read with pread instead of mmap: both copy each byte once, but pread keeps the
// process's RSS to the batch pool rather than every file page it ever touched (docs/io.md).
std::shared_ptr<Reader> open_for_loading(const std::string& path, const LoaderOptions& options) {
  SourceOptions so{options.backend, access_pattern(options.order)};
  so.remote = options.remote;
  auto reader = Reader::open(path, so);
  const SourceTraits traits = reader->source().traits();
  if (options.backend == Backend::auto_select && traits.zero_copy_view && traits.local_file &&
      mean_sample_bytes(reader->layout()) >= kLargeSampleBytes) {
    auto pread = std::shared_ptr<Source>(open_pread_source(path));
    pread->advise(so.pattern);
    return reader->with_source(std::move(pread));
  }
  return reader;
}

}  // namespace

struct Loader::Impl {
  std::shared_ptr<Reader> reader;
  LoaderOptions opt;
  uint32_t threads = 1;
  LoaderMetrics metrics;
  BatchLayout layout;
  std::unique_ptr<BatchPlan> plan;
  std::shared_ptr<BatchPool> pool;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<Worker> worker;
  std::vector<std::thread> threads_running;
  std::mutex join_mu;  // close() and the destructor may race to join

  Impl(std::shared_ptr<Reader> r, LoaderOptions o) : reader(std::move(r)), opt(std::move(o)) {
    check_options(opt);
    if (opt.fields.empty())
      for (const auto& f : reader->schema().fields) opt.fields.push_back(f.name);
    for (size_t i = 0; i < opt.fields.size(); ++i)
      for (size_t k = 0; k < i; ++k)
        if (opt.fields[i] == opt.fields[k])
          throw InvalidArgument("fields: '" + opt.fields[i] + "' is listed twice");
    layout = BatchLayout::make(reader->layout(), opt.fields, opt.batch_size, opt.pipeline);
    plan = std::make_unique<BatchPlan>(reader->layout(), opt, layout.pipeline_canonical);
    // Default: one worker per core but one, which is left to the consumer (the training loop
    // needs a core; measured on 2 cores, Python consumer: 1 worker 9.2 M/s, 2 workers 8.2 M/s).
    const uint32_t cores = std::max(1u, std::thread::hardware_concurrency());
    threads = opt.num_threads ? opt.num_threads : std::max(1u, cores - 1);
    const uint64_t slot_bytes =
        BatchPool::slot_bytes_for(layout.fields, opt.batch_size, layout.capacity);
    const PoolSize size = size_pool(opt, slot_bytes, threads);
    auto alloc = opt.allocator ? opt.allocator : default_host_allocator(opt.huge_pages);
    pool = std::make_shared<BatchPool>(layout.fields, opt.batch_size, layout.capacity,
                                       size.max_slots, alloc);
    pool->reserve(std::min<uint64_t>(size.max_slots, uint64_t{size.prefetch} + 2));
    scheduler = std::make_unique<Scheduler>(*plan, pool, size.prefetch, opt.ordered, opt.drop_last,
                                            metrics);
    if (!opt.resume_ranks.empty()) {
      if (opt.resume) throw InvalidArgument("give resume or resume_ranks, not both");
      scheduler->start_epoch(plan->resume_elastic(opt.resume_ranks), 0);
    } else if (opt.resume) {
      plan->check_resume(*opt.resume);
      scheduler->start_epoch(opt.resume->epoch, opt.resume->next_batch, opt.resume->borrowed);
    } else {
      scheduler->start_epoch(0, 0);
    }
    worker = std::make_unique<Worker>(*reader, layout, opt, metrics, *scheduler, hint_ahead());
    metrics.reset();
  }

  // Ahead-of-use hints: always for sources that fetch ahead (remote), else only when the file
  // is cold and goes through the page cache, and the order is not sequential (the kernel's
  // read-ahead covers that).
  bool hint_ahead() const {
    const SourceTraits t = reader->source().traits();
    if (!opt.os_hints || !t.page_cache) return t.prefetch_always && opt.os_hints;
    if (t.prefetch_always) return true;
    return opt.order != OrderKind::sequential && t.local_file && is_cold(reader->path());
  }

  void start() {
    try {
      for (uint32_t i = 0; i < threads; ++i)
        threads_running.emplace_back([this] { worker->run(); });
    } catch (...) {
      shutdown();
      throw;
    }
  }

  void shutdown() {
    scheduler->stop();
    std::lock_guard join_lock(join_mu);
    for (auto& t : threads_running)
      if (t.joinable()) t.join();
  }
};

Loader::Loader(const std::string& path, LoaderOptions options)
    // A copy, not a move: the argument order is unspecified, and open_for_loading reads options.
    : Loader(open_for_loading(path, options), options) {}

Loader::Loader(std::shared_ptr<Reader> reader, LoaderOptions options)
    : impl_(std::make_unique<Impl>(std::move(reader), std::move(options))) {
  impl_->start();
}

Loader::~Loader() { impl_->shutdown(); }

void Loader::close() { impl_->shutdown(); }

Batch Loader::next() { return std::move(*impl_->scheduler->next(std::nullopt)); }

Batch Loader::next(std::chrono::milliseconds timeout) {
  auto b = impl_->scheduler->next(Scheduler::Clock::now() + timeout);
  if (!b)
    throw TimeoutError("no batch within the timeout (epoch " + std::to_string(epoch()) +
                       ", batch " + std::to_string(impl_->scheduler->delivered()) +
                       "); the loader is still running");
  return std::move(*b);
}

std::optional<Batch> Loader::try_next(std::chrono::milliseconds timeout) {
  return impl_->scheduler->next(Scheduler::Clock::now() + timeout);
}

void Loader::set_epoch(uint64_t epoch) { impl_->scheduler->start_epoch(epoch, 0); }
uint64_t Loader::epoch() const { return impl_->scheduler->epoch(); }
uint64_t Loader::batches_per_epoch() const { return impl_->scheduler->current_plan()->num_batches; }
uint64_t Loader::samples_per_epoch() const {
  return impl_->scheduler->current_plan()->order.size();
}

LoaderState Loader::state() const {
  const Scheduler& s = *impl_->scheduler;
  LoaderState st = impl_->plan->state(s.epoch(), s.delivered());
  st.borrowed = s.borrowed();
  return st;
}

Metrics Loader::metrics() const {
  const Impl& m = *impl_;
  Metrics out = m.metrics.snapshot(m.threads, m.scheduler->prefetch());
  out.pool_slots = m.scheduler->total_slots();
  out.pool_max_slots = m.pool->max_slots();
  out.slot_bytes = m.pool->slot_bytes();
  out.remote = remote_stats(m.reader->source());
  out.bottleneck = diagnose_bottleneck(out);
  return out;
}

std::string Loader::report() const { return metrics().to_table(); }
void Loader::reset_metrics() { impl_->metrics.reset(); }
const Reader& Loader::reader() const { return *impl_->reader; }
const std::vector<FieldSpec>& Loader::fields() const { return impl_->layout.fields; }
const std::vector<uint64_t>& Loader::field_capacities() const { return impl_->layout.capacity; }
const LoaderOptions& Loader::options() const { return impl_->opt; }
std::vector<uint64_t> Loader::epoch_order() const {
  return impl_->scheduler->current_plan()->order;
}

}  // namespace ferry
