#include "ferry/loader.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <thread>

#include "batch_pool.h"
#include "codecs/field_decode.h"
#include "ferry/error.h"
#include "ferry/os.h"
#include "loader_metrics.h"
#include "util.h"

namespace ferry {

using detail::Clock;

namespace {

// Without a budget the pool may still grow (for batches the consumer holds) up to this much.
constexpr uint64_t kDefaultGrowthBytes = 1ull << 30;
constexpr uint64_t kDefaultPoolBytes = 128ull << 20;
constexpr size_t kReadChunk = 32;                      // requests per read_many between stop checks
constexpr uint64_t kLargeSampleBytes = 64 * 1024;      // auto: from here on, pread rather than mmap
constexpr auto kSpin = std::chrono::microseconds(50);  // consumer polls this long before sleeping

uint64_t ns_since(Clock::time_point t0) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
}

}  // namespace

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

// Mean span of a sample in the file, from the validated index.
uint64_t mean_sample_bytes(const Layout& layout) {
  if (layout.num_samples() == 0) return 0;
  const uint64_t used = layout.page_offset(layout.num_pages() - 1) + layout.pages().back().used -
                        layout.data_offset();
  return used / layout.num_samples();
}

// `auto` for a loader: open_source's rule, refined by what only the index tells. Large samples
// (>= 64 KiB) are read with pread instead of mmap: both copy each byte once, but pread keeps the
// process's RSS to the batch pool rather than every file page it ever touched (docs/io.md).
std::shared_ptr<Reader> open_for_loading(const std::string& path, const LoaderOptions& options) {
  const SourceOptions so{options.backend, access_pattern(options.order)};
  auto reader = Reader::open(path, so);
  if (options.backend == Backend::auto_select && reader->source().backend_name() == "mmap" &&
      mean_sample_bytes(reader->layout()) >= kLargeSampleBytes) {
    auto pread = std::shared_ptr<Source>(open_pread_source(path));
    pread->advise(so.pattern);
    return reader->with_source(std::move(pread));
  }
  return reader;
}

/// One unit of work: batch `index` of `epoch`, made for scheduling generation `generation`.
struct Task {
  uint64_t index, epoch, generation;
  std::shared_ptr<const std::vector<uint64_t>> order;
};

struct Loader::Impl {
  std::shared_ptr<Reader> reader;
  LoaderOptions opt;
  std::vector<size_t> field_index;  // loader field -> file field
  std::vector<FieldSpec> fields;
  std::shared_ptr<BatchPool> pool;
  const uint8_t* file_base = nullptr;  // whole-file view (mmap): the zero-syscall fast path
  bool hint_ahead = false;             // file not resident: issue WILLNEED for upcoming batches
  uint32_t threads = 1, prefetch = 1;
  bool compressed = false;  // a loaded field is compressed: decode it (codecs/field_decode.h)
  LoaderMetrics metrics;

  // Scheduling state, guarded by pool->mu.
  uint64_t epoch = 0;
  std::shared_ptr<const std::vector<uint64_t>> order;
  uint64_t num_batches = 0;
  uint64_t next_claim = 0;  // next batch index a worker will take
  uint64_t delivered = 0;   // batches handed to the consumer this epoch
  uint64_t in_flight = 0;   // claimed, not yet ready (any generation)
  uint64_t generation = 0;  // bumped by set_epoch: work of older generations is discarded
  std::map<uint64_t, BatchSlot*> ready;
  std::map<uint64_t, uint64_t>
      borrowed;                  // on_error=skip: samples lent by batch j to the one before
  uint64_t lend_window_end = 0;  // while borrowing: workers may claim below this too
  bool stop = false;
  std::atomic<bool> stop_flag{false};  // read lock-free by workers between chunks of a batch
  std::atomic<uint64_t> ready_events{
      0};  // bumped when a batch becomes ready: the consumer spins on it

  std::vector<std::thread> workers;
  std::mutex join_mu;

  Impl(std::shared_ptr<Reader> r, LoaderOptions o) : reader(std::move(r)), opt(std::move(o)) {}

  // ---- set-up ----

  void configure() {
    const Schema& schema = reader->schema();
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
    if (opt.fields.empty())
      for (const auto& f : schema.fields) opt.fields.push_back(f.name);
    for (const auto& name : opt.fields) {
      field_index.push_back(schema.index_of(name));
      fields.push_back(schema.fields[field_index.back()]);
    }
    // Default: one worker per core but one, which is left to the consumer (the training loop
    // needs a core; measured on 2 cores, Python consumer: 1 worker 9.2 M/s, 2 workers 8.2 M/s).
    const uint32_t cores = std::max(1u, std::thread::hardware_concurrency());
    threads = opt.num_threads ? opt.num_threads : std::max(1u, cores - 1);
    if (opt.numa_node >= numa_node_count())
      throw InvalidArgument("numa_node " + std::to_string(opt.numa_node) + ": this machine has " +
                            std::to_string(numa_node_count()) +
                            " NUMA node(s); use -1 for no pinning");
    compressed = detail::any_compressed(reader->layout(), field_index);
    make_pool();
    file_base = reader->source().view(0, reader->source().size());
    hint_ahead = opt.os_hints && opt.order != OrderKind::sequential &&
                 reader->source().backend_name() != "direct" && is_cold(reader->path());
  }

  // Hints only pay when pages must come from the disk; residency is sampled once, at open.
  static bool is_cold(const std::string& path) {
    try {
      return resident_fraction(path) < 0.9;
    } catch (const std::exception&) {
      return false;  // not a plain file (a test double, a memory source): nothing to hint
    }
  }

  // WILLNEED for the pages batch `index` will read, merged into ranges: issued for the batch
  // that just entered the window, so the kernel reads it while the earlier ones are processed.
  void hint_batch(const std::vector<uint64_t>& order, uint64_t index,
                  std::vector<ReadRequest>& ranges) const {
    const uint64_t begin = index * opt.batch_size;
    if (begin >= order.size()) return;
    const uint64_t end = std::min<uint64_t>(begin + opt.batch_size, order.size());
    ranges.clear();
    for (uint64_t i = begin; i < end; ++i) {
      const auto [b, e] = reader->layout().sample_extent(order[i]);
      ranges.push_back({b, e - b, nullptr});
    }
    std::sort(ranges.begin(), ranges.end(),
              [](const ReadRequest& a, const ReadRequest& b) { return a.offset < b.offset; });
    size_t out = 0;
    for (size_t i = 1; i < ranges.size(); ++i) {
      ReadRequest& last = ranges[out];
      if (ranges[i].offset <= last.offset + last.length + 4096) {
        last.length =
            std::max(last.offset + last.length, ranges[i].offset + ranges[i].length) - last.offset;
      } else {
        ranges[++out] = ranges[i];
      }
    }
    if (!ranges.empty()) ranges.resize(out + 1);
    reader->source().will_need(ranges);
  }

  void make_pool() {
    std::vector<uint64_t> capacity;
    for (size_t i = 0; i < fields.size(); ++i)
      capacity.push_back(reader->layout().top_k_decoded_bytes(field_index[i], opt.batch_size));
    auto alloc = opt.allocator ? opt.allocator : default_host_allocator(opt.huge_pages);
    // Slot size is needed to turn the budget into a slot count: build a probe pool first.
    auto probe = std::make_shared<BatchPool>(fields, opt.batch_size, capacity, 0, alloc);
    const uint64_t slot_bytes = probe->slot_bytes();
    uint64_t max_slots;
    if (opt.memory_budget) {
      max_slots = opt.memory_budget / slot_bytes;
      const uint64_t need = opt.prefetch ? opt.prefetch + 1 : 2;
      if (max_slots < need)
        throw InvalidArgument("memory_budget " + std::to_string(opt.memory_budget) +
                              " bytes holds " + std::to_string(max_slots) + " batches of " +
                              std::to_string(slot_bytes) + " bytes; it needs at least " +
                              std::to_string(need) + " (" + std::to_string(need * slot_bytes) +
                              " bytes): raise memory_budget, or lower " + "batch_size" +
                              (opt.prefetch ? " or prefetch" : ""));
      prefetch = opt.prefetch ? opt.prefetch
                              : static_cast<uint32_t>(std::min<uint64_t>(max_slots - 1, 64));
      if (!opt.prefetch && max_slots > 2)
        prefetch = static_cast<uint32_t>(std::min<uint64_t>(max_slots - 2, 64));
    } else {
      // Default depth: 2 batches per thread (at least 4), but no deeper than what keeps the
      // pool near kDefaultPoolBytes: a few batches of 40 MB already hide any step time.
      const uint64_t by_memory =
          kDefaultPoolBytes / slot_bytes > 2 ? kDefaultPoolBytes / slot_bytes - 2 : 0;
      prefetch = opt.prefetch ? opt.prefetch
                              : static_cast<uint32_t>(
                                    std::clamp<uint64_t>(by_memory, 2, std::max(4u, 2 * threads)));
      max_slots = std::max<uint64_t>(prefetch + 2, kDefaultGrowthBytes / slot_bytes);
    }
    pool = std::make_shared<BatchPool>(fields, opt.batch_size, capacity, max_slots, alloc);
    pool->reserve(std::min<uint64_t>(max_slots, prefetch + 2));
  }

  LoaderState fingerprint() const {
    LoaderState s;
    s.seed = opt.seed;
    s.order = opt.order;
    s.window_pages = opt.window_pages;
    s.batch_size = opt.batch_size;
    s.rank = opt.rank;
    s.world_size = opt.world_size;
    s.drop_last = opt.drop_last;
    s.num_samples = reader->num_samples();
    s.file_xxh64 = reader->layout().header_xxh64();
    return s;
  }

  void check_resume(const LoaderState& r) const {
    LoaderState mine = fingerprint();
    mine.epoch = r.epoch;
    mine.next_batch = r.next_batch;
    mine.borrowed = r.borrowed;
    if (!(mine == r))
      throw InvalidArgument(
          "cannot resume: the state was saved with other settings or data (saved " + r.to_json() +
          ", this loader " + mine.to_json() + ")");
  }

  // ---- scheduling (pool->mu held) ----

  void start_epoch(uint64_t e, uint64_t first_batch) {
    ++generation;
    epoch = e;
    const OrderOptions oo{opt.order, opt.seed, opt.window_pages};
    const auto full = ferry::epoch_order(oo, e, reader->layout().sample_pages());
    order = std::make_shared<const std::vector<uint64_t>>(
        shard_order(full, opt.rank, opt.world_size, opt.remainder));
    const uint64_t n = order->size();
    num_batches = opt.drop_last ? n / opt.batch_size : (n + opt.batch_size - 1) / opt.batch_size;
    next_claim = delivered = std::min(first_batch, num_batches);
    for (auto& [k, slot] : ready) pool->put(slot);
    ready.clear();
    borrowed.clear();
    pool->work_cv.notify_all();
  }

  bool can_claim() const {
    const bool in_window = next_claim - delivered < prefetch || next_claim < lend_window_end;
    return next_claim < num_batches && in_window && pool->can_take();
  }

  // ---- workers ----

  void worker_loop() {
    try {
      pin_current_thread_to_node(opt.numa_node);
    } catch (const std::exception&) {
      // Placement is an optimisation: a kernel that refuses it leaves the worker unpinned.
    }
    std::vector<ReadRequest> requests, hints;
    std::vector<uint8_t> keep;
    detail::DecodeStaging staging;  // stored bytes of compressed fields
    std::unique_lock lk(pool->mu);
    while (true) {
      pool->work_cv.wait(lk, [&] { return stop || can_claim(); });
      if (stop) return;
      BatchSlot* slot = pool->take();
      Task task{next_claim++, epoch, generation, order};
      ++in_flight;
      slot->claimed = Clock::now();
      lk.unlock();
      if (hint_ahead) hint_batch(*task.order, task.index + prefetch, hints);
      fill(*slot, task, requests, keep, staging);
      lk.lock();
      --in_flight;
      if (task.generation != generation || stop) {
        pool->put(slot);
        pool->work_cv.notify_one();
        pool->ready_cv.notify_all();  // in_flight changed: a consumer may need to re-check capacity
        continue;
      }
      ready.emplace(task.index, slot);
      ready_events.fetch_add(1, std::memory_order_release);
      pool->ready_cv.notify_all();
    }
  }

  void fill(BatchSlot& s, const Task& t, std::vector<ReadRequest>& requests,
            std::vector<uint8_t>& keep, detail::DecodeStaging& staging) {
    const auto& order = *t.order;
    const uint64_t begin = t.index * opt.batch_size;
    const uint64_t end = std::min<uint64_t>(begin + opt.batch_size, order.size());
    s.epoch = t.epoch;
    s.index = t.index;
    s.error = nullptr;
    s.sample_ids.assign(order.begin() + static_cast<std::ptrdiff_t>(begin),
                        order.begin() + static_cast<std::ptrdiff_t>(end));
    s.size = s.sample_ids.size();
    s.skipped = 0;
    s.truncated = 0;
    keep.assign(s.size, 1);

    const auto t0 = Clock::now();
    set_offsets(s);
    if (file_base && compressed) {
      decode_from_view(s, keep);
    } else if (file_base) {
      copy_from_view(s);
    } else {
      read_through_source(s, requests, keep, staging);
    }
    metrics.read_ns.fetch_add(ns_since(t0), std::memory_order_relaxed);
    if (opt.transform && !s.error) run_transform(s, keep);
    if (!s.error) compact(s, keep);
    metrics.produced.fetch_add(s.size, std::memory_order_relaxed);
    s.bytes = 0;
    for (const auto& f : s.fields) s.bytes += f.bytes(s.size);
  }

  // Bytes fields' offsets follow from the index before any byte is read.
  void set_offsets(BatchSlot& s) const {
    const Layout& L = reader->layout();
    for (size_t f = 0; f < fields.size(); ++f) {
      uint64_t* off = s.fields[f].offsets;
      if (!off) continue;
      off[0] = 0;
      for (uint64_t i = 0; i < s.size; ++i)
        off[i + 1] = off[i] + L.decoded_length(s.sample_ids[i], field_index[f]);
    }
  }

  uint8_t* field_dst(BatchSlot& s, size_t f, uint64_t i) const {
    const FieldBuffer& fb = s.fields[f];
    return fb.offsets ? fb.data + fb.offsets[i] : fb.data + i * fields[f].fixed_bytes();
  }

  // The hot path: samples are memcpy'd from the mapping. The loop prefetches a few samples
  // ahead (index entry, then data) so random orders overlap their cache misses.
  void copy_from_view(BatchSlot& s) const {
    const Layout& L = reader->layout();
    const uint64_t nf = fields.size();
    constexpr uint64_t kAhead = 8;
    for (uint64_t i = 0; i < s.size; ++i) {
      if (i + kAhead < s.size) {
        const uint64_t ahead = s.sample_ids[i + kAhead];
        for (size_t f = 0; f < nf; ++f) {
          // Every cache line of small fields (up to 2 KiB): random samples each start a new
          // stream the hardware prefetcher has not seen yet.
          const uint8_t* p = file_base + L.field_offset(ahead, field_index[f]);
          const uint64_t len =
              std::min<uint64_t>(L.sample_fields(ahead)[field_index[f]].length, 2048);
          for (uint64_t off = 0; off < len; off += 64) __builtin_prefetch(p + off);
        }
      }
      if (i + 2 * kAhead < s.size)
        __builtin_prefetch(L.sample_fields(s.sample_ids[i + 2 * kAhead]).data());
      const uint64_t id = s.sample_ids[i];
      for (size_t f = 0; f < nf; ++f) {
        const FieldLoc loc = L.sample_fields(id)[field_index[f]];
        std::memcpy(field_dst(s, f, i), file_base + L.page_offset(L.sample_page(id)) + loc.offset,
                    loc.length);
      }
    }
  }

  // Compressed files through the mapping: plain fields are copied, compressed ones decoded
  // from the mapped bytes straight into the slot.
  void decode_from_view(BatchSlot& s, std::vector<uint8_t>& keep) {
    const Layout& L = reader->layout();
    for (uint64_t i = 0; i < s.size; ++i) {
      const uint64_t id = s.sample_ids[i];
      for (size_t f = 0; f < fields.size(); ++f) {
        const size_t ff = field_index[f];
        const FieldLoc loc = L.sample_fields(id)[ff];
        const uint8_t* src = file_base + L.page_offset(L.sample_page(id)) + loc.offset;
        if (L.field_codec(ff) == CodecId::none) {
          std::memcpy(field_dst(s, f, i), src, loc.length);
          continue;
        }
        try {
          detail::decode_value(L, ff, {src, loc.length},
                               {field_dst(s, f, i), L.decoded_length(id, ff)});
        } catch (const std::exception& e) {
          if (!sample_failed(s, i, "decode failed", e, keep)) return;
          break;
        }
      }
    }
  }

  // Decodes the compressed fields of samples [first, last) from their staged bytes (the
  // requests' destinations) into the slot; samples already failed are left alone.
  void decode_staged(BatchSlot& s, const std::vector<ReadRequest>& requests, uint64_t first,
                     uint64_t last, std::vector<uint8_t>& keep) {
    const Layout& L = reader->layout();
    const size_t nf = fields.size();
    for (uint64_t i = first; i < last; ++i) {
      if (!keep[i]) continue;
      for (size_t f = 0; f < nf; ++f) {
        const size_t ff = field_index[f];
        if (L.field_codec(ff) == CodecId::none) continue;
        const ReadRequest& r = requests[i * nf + f];
        try {
          detail::decode_value(L, ff, {static_cast<const uint8_t*>(r.dst), r.length},
                               {field_dst(s, f, i), L.decoded_length(s.sample_ids[i], ff)});
        } catch (const std::exception& e) {
          if (!sample_failed(s, i, "decode failed", e, keep)) return;
          break;
        }
      }
    }
  }

  void read_through_source(BatchSlot& s, std::vector<ReadRequest>& requests,
                           std::vector<uint8_t>& keep, detail::DecodeStaging& staging) {
    const Layout& L = reader->layout();
    requests.clear();
    if (compressed) staging.reset(detail::compressed_stored_bytes(L, s.sample_ids, field_index));
    for (uint64_t i = 0; i < s.size; ++i)
      for (size_t f = 0; f < fields.size(); ++f) {
        const FieldLoc loc = L.sample_fields(s.sample_ids[i])[field_index[f]];
        // A compressed field is read into the staging buffer and decoded after the read.
        uint8_t* dst = L.field_codec(field_index[f]) == CodecId::none ? field_dst(s, f, i)
                                                                      : staging.take(loc.length);
        requests.push_back({L.field_offset(s.sample_ids[i], field_index[f]), loc.length, dst});
      }
    const size_t per_sample = fields.size();
    for (size_t start = 0; start < requests.size(); start += kReadChunk * per_sample) {
      if (stop_flag.load(std::memory_order_relaxed))
        return;  // shutting down: the batch is discarded
      const size_t count = std::min(kReadChunk * per_sample, requests.size() - start);
      try {
        reader->source().read_many(std::span(requests).subspan(start, count));
      } catch (const std::exception&) {
        retry_one_by_one(s, requests, start, count, keep);  // find which samples failed
      }
      if (s.error) return;
      if (compressed)
        decode_staged(s, requests, start / per_sample, (start + count) / per_sample, keep);
      if (s.error) return;
    }
  }

  void retry_one_by_one(BatchSlot& s, const std::vector<ReadRequest>& requests, size_t start,
                        size_t count, std::vector<uint8_t>& keep) {
    const size_t per_sample = fields.size();
    for (size_t r = start; r < start + count; r += per_sample) {
      const uint64_t i = r / per_sample;
      try {
        reader->source().read_many(std::span(requests).subspan(r, per_sample));
      } catch (const std::exception& e) {
        if (!sample_failed(s, i, "read failed", e, keep)) return;
      }
    }
  }

  // Records a failed sample. Returns false if the batch must stop (on_error=raise).
  bool sample_failed(BatchSlot& s, uint64_t i, std::string_view what, const std::exception& e,
                     std::vector<uint8_t>& keep) {
    const uint64_t id = s.sample_ids[i];
    if (opt.on_error == OnError::raise) {
      s.error = std::make_exception_ptr(SampleError("ferry file '" + reader->path() + "': sample " +
                                                        std::to_string(id) + ": " +
                                                        std::string(what) + ": " + e.what(),
                                                    id));
      return false;
    }
    keep[i] = 0;
    ++s.skipped;
    return true;
  }

  void run_transform(BatchSlot& s, std::vector<uint8_t>& keep) {
    const auto t0 = Clock::now();
    std::vector<SampleSlot::Field> views(fields.size());
    for (uint64_t i = 0; i < s.size && !s.error; ++i) {
      if (!keep[i]) continue;
      for (size_t f = 0; f < fields.size(); ++f) {
        const FieldBuffer& fb = s.fields[f];
        const uint64_t size =
            fb.offsets ? fb.offsets[i + 1] - fb.offsets[i] : fields[f].fixed_bytes();
        views[f] = {&fields[f], field_dst(s, f, i), size};
      }
      SampleSlot slot{s.sample_ids[i], views};
      try {
        opt.transform(slot);
      } catch (const std::exception& e) {
        sample_failed(s, i, "transform failed", e, keep);
      }
    }
    metrics.transform_ns.fetch_add(ns_since(t0), std::memory_order_relaxed);
  }

  // Drops skipped samples, moving later ones down (only on the error path).
  void compact(BatchSlot& s, const std::vector<uint8_t>& keep) const {
    if (std::all_of(keep.begin(), keep.end(), [](uint8_t k) { return k; })) return;
    uint64_t out = 0;
    for (uint64_t i = 0; i < s.size; ++i)
      if (keep[i]) move_sample(s, i, s, out++);
    s.size = out;
    s.sample_ids.resize(out);
  }

  // Copies sample i of `from` to position `at` of `to` (which may be the same slot, at <= i).
  // Positions before `at` must be filled: a bytes field's value starts at offsets[at].
  void move_sample(const BatchSlot& from, uint64_t i, BatchSlot& to, uint64_t at) const {
    for (size_t f = 0; f < fields.size(); ++f) {
      const FieldBuffer& src = from.fields[f];
      FieldBuffer& dst = to.fields[f];
      if (src.offsets) {
        const uint64_t len = src.offsets[i + 1] - src.offsets[i];
        std::memmove(dst.data + dst.offsets[at], src.data + src.offsets[i], len);
        dst.offsets[at + 1] = dst.offsets[at] + len;
      } else {
        const uint64_t sz = fields[f].fixed_bytes();
        std::memmove(dst.data + at * sz, src.data + i * sz, sz);
      }
    }
    if (to.sample_ids.size() <= at) to.sample_ids.resize(at + 1);
    to.sample_ids[at] = from.sample_ids[i];
  }

  // ---- consumer ----

  Batch next(std::optional<Clock::time_point> deadline) {
    const auto t0 = Clock::now();
    std::unique_lock lk(pool->mu);
    metrics.record_queue(ready.size(), prefetch);
    while (true) {
      if (stop) throw ShutdownError("loader closed");
      if (delivered == num_batches) {  // end of epoch: the next call starts the next one
        start_epoch(epoch + 1, 0);
        metrics.add_wait(ns_since(t0));
        return Batch();
      }
      auto it = wait_ready(lk, deadline, t0,
                           opt.ordered ? std::optional<uint64_t>(delivered) : std::nullopt);
      BatchSlot* slot = it->second;
      const uint64_t k = it->first;
      if (!slot->error) {
        apply_borrowed(*slot, k);
        if (opt.ordered && slot->size < nominal_size(k))
          borrow_from_following(lk, deadline, t0, *slot, k);
      }
      ready.erase(it);
      borrowed.erase(k);
      ++delivered;
      // The window moved. Sleeping workers are woken once half of it is free rather than for
      // every batch: each wake-up of a sleeping thread costs a cross-core interrupt (and on a
      // VM an exit), which at millions of samples per second is a large share of a batch.
      if (next_claim - delivered <= prefetch / 2) pool->work_cv.notify_all();
      metrics.errors_skipped.fetch_add(slot->skipped, std::memory_order_relaxed);
      if (slot->error) {
        metrics.add_wait(ns_since(t0));
        auto err = slot->error;
        slot->error = nullptr;
        pool->put(slot);
        lk.unlock();
        std::rethrow_exception(err);
      }
      // Every sample skipped or lent to the batch before; or drop_last's short final batch.
      if (slot->size == 0 || (opt.drop_last && slot->size < opt.batch_size)) {
        pool->put(slot);
        continue;
      }
      metrics.add_wait(ns_since(t0));
      metrics.add_latency(
          std::chrono::duration<double, std::milli>(Clock::now() - slot->claimed).count());
      metrics.batches.fetch_add(1, std::memory_order_relaxed);
      metrics.samples.fetch_add(slot->size, std::memory_order_relaxed);
      metrics.bytes.fetch_add(slot->bytes, std::memory_order_relaxed);
      return pool->wrap(slot);
    }
  }

  // Waits until batch `index` (or, with nullopt, any batch) is ready; it stays in `ready`.
  std::map<uint64_t, BatchSlot*>::iterator wait_ready(std::unique_lock<std::mutex>& lk,
                                                      std::optional<Clock::time_point> deadline,
                                                      Clock::time_point t0,
                                                      std::optional<uint64_t> index) {
    bool spun = false;
    while (true) {
      auto it = index ? ready.find(*index) : ready.begin();
      if (it != ready.end()) return it;
      if (stop) throw ShutdownError("loader closed");
      if (in_flight == 0 && !pool->can_take())
        throw CapacityError(
            "all " + std::to_string(pool->total_slots()) + " batch buffers (" +
            std::to_string(pool->total_slots() * pool->slot_bytes()) +
            " bytes) are held by the consumer: release batches you no longer need, or raise "
            "memory_budget");
      if (!spun && spin_for_ready(lk, deadline)) {
        spun = true;
        continue;
      }
      if (!deadline) {
        pool->ready_cv.wait(lk);
      } else if (pool->ready_cv.wait_until(lk, *deadline) == std::cv_status::timeout) {
        it = index ? ready.find(*index) : ready.begin();
        if (it != ready.end()) return it;
        metrics.add_wait(ns_since(t0));
        throw TimeoutError("no batch within the timeout (epoch " + std::to_string(epoch) +
                           ", batch " + std::to_string(delivered) +
                           "); the loader is still running");
      }
    }
  }

  // Before sleeping, the consumer polls for up to kSpin with the lock released: a batch that is
  // about to be ready is then picked up without a wake-up (see the note in next()). Returns
  // false (no spin) when a worker is not busy on a batch, since nothing could arrive then.
  bool spin_for_ready(std::unique_lock<std::mutex>& lk, std::optional<Clock::time_point> deadline) {
    if (in_flight == 0) return false;
    const uint64_t seen = ready_events.load(std::memory_order_acquire);
    lk.unlock();
    auto until = Clock::now() + kSpin;
    if (deadline && *deadline < until) until = *deadline;
    // yield, not a pause loop: if the worker we wait for shares this core, it runs now.
    while (ready_events.load(std::memory_order_acquire) == seen && Clock::now() < until)
      std::this_thread::yield();
    lk.lock();
    return true;
  }

  uint64_t nominal_size(uint64_t k) const {
    return std::min<uint64_t>(opt.batch_size, order->size() - k * opt.batch_size);
  }

  // on_error=skip leaves batches short; they are filled from the END of the following batch(es)
  // (so only the lender shrinks, and only by what it lent). `borrowed[j]` counts samples lent by
  // batch j; it is part of the resume state, so a resumed run shrinks j the same way.
  void apply_borrowed(BatchSlot& s, uint64_t k) {
    auto it = borrowed.find(k);
    const uint64_t want = it == borrowed.end() ? 0 : it->second;
    if (want <= s.truncated) return;
    const uint64_t cut = std::min(want - s.truncated, s.size);
    s.size -= cut;
    s.sample_ids.resize(s.size);
    s.truncated = want;
    s.bytes = 0;
    for (const auto& f : s.fields) s.bytes += f.bytes(s.size);
  }

  void borrow_from_following(std::unique_lock<std::mutex>& lk,
                             std::optional<Clock::time_point> deadline, Clock::time_point t0,
                             BatchSlot& target, uint64_t k) {
    for (uint64_t j = k + 1; target.size < opt.batch_size && j < num_batches; ++j) {
      lend_window_end = j + 1;  // workers may claim j even if it lies past the prefetch window
      pool->work_cv.notify_all();
      BatchSlot& lender = *wait_ready(lk, deadline, t0, j)->second;
      lend_window_end = 0;
      if (lender.error) return;  // on_error=raise: the lender throws in its turn
      apply_borrowed(lender, j);
      const uint64_t take = std::min(opt.batch_size - target.size, lender.size);
      for (uint64_t i = lender.size - take; i < lender.size; ++i) append_sample(target, lender, i);
      borrowed[j] += take;
      apply_borrowed(lender, j);
    }
  }

  void append_sample(BatchSlot& to, const BatchSlot& from, uint64_t i) const {
    move_sample(from, i, to, to.size);
    to.size += 1;
    to.bytes = 0;
    for (const auto& f : to.fields) to.bytes += f.bytes(to.size);
  }

  void shutdown() {
    {
      std::lock_guard lk(pool->mu);
      stop = true;
      stop_flag.store(true, std::memory_order_relaxed);
      for (auto& [k, slot] : ready) pool->put(slot);
      ready.clear();
    }
    pool->work_cv.notify_all();
    pool->ready_cv.notify_all();
    std::lock_guard join_lock(join_mu);  // close() and the destructor may race to join
    for (auto& t : workers)
      if (t.joinable()) t.join();
  }
};

Loader::Loader(const std::string& path, LoaderOptions options)
    : Loader(open_for_loading(path, options), std::move(options)) {}

Loader::Loader(std::shared_ptr<Reader> reader, LoaderOptions options)
    : impl_(std::make_unique<Impl>(std::move(reader), std::move(options))) {
  Impl& m = *impl_;
  m.configure();
  {
    std::lock_guard lk(m.pool->mu);
    if (m.opt.resume) {
      m.check_resume(*m.opt.resume);
      m.start_epoch(m.opt.resume->epoch, m.opt.resume->next_batch);
      m.borrowed = m.opt.resume->borrowed;
    } else {
      m.start_epoch(0, 0);
    }
  }
  m.metrics.reset();
  try {
    for (uint32_t i = 0; i < m.threads; ++i) m.workers.emplace_back([&m] { m.worker_loop(); });
  } catch (...) {
    m.shutdown();
    throw;
  }
}

Loader::~Loader() { impl_->shutdown(); }

void Loader::close() { impl_->shutdown(); }

std::optional<Batch> Loader::try_next(std::chrono::milliseconds timeout) {
  try {
    return impl_->next(Clock::now() + timeout);
  } catch (const TimeoutError&) {
    return std::nullopt;
  }
}

Batch Loader::next() { return impl_->next(std::nullopt); }
Batch Loader::next(std::chrono::milliseconds timeout) {
  return impl_->next(Clock::now() + timeout);
}

void Loader::set_epoch(uint64_t epoch) {
  std::lock_guard lk(impl_->pool->mu);
  impl_->start_epoch(epoch, 0);
}

uint64_t Loader::epoch() const {
  std::lock_guard lk(impl_->pool->mu);
  return impl_->epoch;
}

uint64_t Loader::batches_per_epoch() const {
  std::lock_guard lk(impl_->pool->mu);
  return impl_->num_batches;
}

uint64_t Loader::samples_per_epoch() const {
  std::lock_guard lk(impl_->pool->mu);
  return impl_->order->size();
}

LoaderState Loader::state() const {
  LoaderState s = impl_->fingerprint();
  std::lock_guard lk(impl_->pool->mu);
  s.epoch = impl_->epoch;
  s.next_batch = impl_->delivered;
  s.borrowed = impl_->borrowed;
  return s;
}

Metrics Loader::metrics() const {
  const Impl& m = *impl_;
  Metrics out = m.metrics.snapshot(m.threads, m.prefetch);
  {
    std::lock_guard lk(m.pool->mu);
    out.pool_slots = m.pool->total_slots();
  }
  out.pool_max_slots = m.pool->max_slots();
  out.slot_bytes = m.pool->slot_bytes();
  out.bottleneck = diagnose_bottleneck(out);
  return out;
}

std::string Loader::report() const { return metrics().to_table(); }
void Loader::reset_metrics() { impl_->metrics.reset(); }
const Reader& Loader::reader() const { return *impl_->reader; }
const std::vector<FieldSpec>& Loader::fields() const { return impl_->fields; }
const LoaderOptions& Loader::options() const { return impl_->opt; }

std::vector<uint64_t> Loader::epoch_order() const {
  std::lock_guard lk(impl_->pool->mu);
  return *impl_->order;
}

}  // namespace ferry
