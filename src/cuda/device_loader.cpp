// DeviceLoader: a host Loader over pinned memory, a copier thread that hands each host batch to
// the device stage (copier.h) into a free ring slot, and the consumer's next().
#include <algorithm>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "cuda/copier.h"
#include "cuda/ring.h"
#include "ferry/cuda.h"
#include "ferry/order.h"
#include "ferry/reader.h"

namespace ferry {

using cuda_detail::align_up;
using cuda_detail::check;
using cuda_detail::Clock;
using cuda_detail::DeviceGuard;
using cuda_detail::kDeviceAlign;
using cuda_detail::seconds_since;
using cuda_detail::Stream;

namespace {
// The copier polls the host loader this often for stop and set_epoch requests. Only an idle
// copier polls; a batch becoming ready wakes it at once.
constexpr auto kPoll = std::chrono::milliseconds(20);
}  // namespace

struct DeviceLoader::Impl {
  struct Item {
    enum class Kind { batch, end_of_epoch, error } kind;
    DeviceSlot* slot = nullptr;
    std::exception_ptr error;
    LoaderState after;  // the host loader's state right after it produced this item
  };
  // A copy issued on the copy stream whose host batch must stay pinned until it completes.
  struct Pending {
    DeviceSlot* slot;
    Batch host;
  };

  int device = 0;
  DeviceOptions dopt;
  std::unique_ptr<Loader> host;
  std::shared_ptr<DeviceRing> ring;
  std::optional<Stream> copy_stream;
  std::unique_ptr<DeviceStage> stage;  // fills a slot from a host batch (memcpy today)
  std::thread copier;
  std::mutex close_mu;  // serialises close()
  OrderOptions order_options;

  // Scheduling state, guarded by ring->mu. The ready queue holds at most ring_depth + 1 items
  // (batches are bounded by the ring anyway; this bounds end-of-epoch and error markers too).
  std::deque<Item> ready;
  size_t ready_cap = 0;
  uint64_t generation = 0;  // bumped by set_epoch: the copier drops work of older generations
  std::optional<uint64_t> epoch_request;
  bool stop = false;
  bool copier_waits_for_slot = false;
  std::exception_ptr fatal;  // the copier stopped on this (a CUDA failure); next() rethrows it
  // The consumer's position: the host state that followed the last item it took (so skipped
  // batches and on_error=skip's borrowing resume exactly as the host loader would).
  LoaderState position;
  // Metrics, guarded by ring->mu.
  Clock::time_point started = Clock::now();
  uint64_t batches = 0, copies = 0, bytes_copied = 0, copies_behind_consumer = 0;
  double copy_seconds = 0, consumer_wait = 0, slot_wait = 0;
  uint64_t copies_behind_consumer_ = 0;  // copier thread only; published by finish_one

  Impl(const LoaderOptions& options, DeviceOptions d) : dopt(d) {
    device = parse_cuda_device(options.device);
    if (dopt.ring_depth < 2 || dopt.ring_depth > 8)
      throw InvalidArgument("ring_depth " + std::to_string(dopt.ring_depth) +
                            " must be in 2..8 (2: copy one batch ahead; 3: two)");
    order_options = {options.order, options.seed, options.window_pages};
  }

  LoaderOptions host_options(LoaderOptions o) const {
    o.allocator = std::make_shared<PinnedAllocator>(device);
    o.device = "cpu";
    return o;
  }

  // After `host` exists: the ring, the copy stream and the copier.
  void start() {
    ring = std::make_shared<DeviceRing>(device);
    ring->fields = host->fields();
    const uint64_t batch_size = host->options().batch_size;
    const std::vector<uint64_t>& capacity =
        host->field_capacities();  // the host pool's BatchLayout
    for (uint32_t i = 0; i < dopt.ring_depth; ++i) {
      std::vector<uint64_t> data_offset, offsets_offset;
      uint64_t bytes = 0;
      for (size_t f = 0; f < capacity.size(); ++f) {
        data_offset.push_back(bytes);
        bytes += align_up(std::max<uint64_t>(capacity[f], 1), kDeviceAlign);
        offsets_offset.push_back(bytes);
        if (host->fields()[f].kind == FieldKind::bytes)
          bytes += align_up((batch_size + 1) * 8, kDeviceAlign);
      }
      auto slot = std::make_unique<DeviceSlot>(std::max<uint64_t>(bytes, kDeviceAlign));
      slot->data_offset = std::move(data_offset);
      slot->offsets_offset = std::move(offsets_offset);
      slot->capacity = capacity;
      slot->fields.resize(capacity.size());
      slot->host_offsets.resize(capacity.size());
      ring->free.push_back(slot.get());
      ring->slots.push_back(std::move(slot));
    }
    copy_stream.emplace();
    stage = make_memcpy_stage(ring->fields);
    ready_cap = dopt.ring_depth + 1;
    position = host->state();
    started = Clock::now();
    copier = std::thread([this] { copier_main(); });
  }

  // Stops the copier and the host loader; waiters in next() throw ShutdownError. The host loader
  // object stays (metrics, options and fields still answer), its workers are gone. Idempotent.
  void close() {
    std::lock_guard close_lk(close_mu);  // two closing threads must not both join the copier
    if (ring) {
      {
        std::lock_guard lk(ring->mu);
        stop = true;
        for (auto& item : ready)
          if (item.slot) ring->free.push_back(item.slot);
        ready.clear();
      }
      ring->copier_cv.notify_all();
      ring->consumer_cv.notify_all();
    }
    if (copier.joinable()) copier.join();
    if (host) host->close();  // stops and joins the host workers
  }

  void shutdown() {
    close();
    host.reset();
    copy_stream.reset();
  }

  // ---- copier thread ----

  void copier_main() {
    std::deque<Pending> pending;
    try {
      DeviceGuard g(device);
      copier_loop(pending);
      finish_all(pending);
    } catch (...) {
      // A CUDA failure: the stage cannot continue. The consumer gets the error from next().
      {
        std::lock_guard lk(ring->mu);
        fatal = std::current_exception();
      }
      ring->consumer_cv.notify_all();
      DeviceGuard g(device, std::nothrow);
      for (auto& p : pending) cudaEventSynchronize(p.slot->copy_done.get());
    }
  }

  void copier_loop(std::deque<Pending>& pending) {
    while (true) {
      uint64_t gen;
      std::optional<uint64_t> restart;
      {
        std::lock_guard lk(ring->mu);
        if (stop) return;
        gen = generation;
        restart = std::exchange(epoch_request, std::nullopt);
      }
      if (restart) {
        finish_all(pending);
        host->set_epoch(*restart);
      }

      // Take the next host item. Errors travel to the consumer in order, as items.
      Item item{Item::Kind::batch, nullptr, nullptr, {}};
      Batch hb;
      try {
        auto got = host->try_next(kPoll);
        if (!got) continue;  // nothing yet: look at stop and set_epoch again
        hb = std::move(*got);
        if (!hb) item.kind = Item::Kind::end_of_epoch;
      } catch (const CapacityError&) {
        if (!pending.empty()) {  // the batches this thread still pins fill a tiny pool: free them
          finish_all(pending);
          continue;
        }
        item = {Item::Kind::error, nullptr, std::current_exception(), {}};
      } catch (const ShutdownError&) {
        return;
      } catch (const Error&) {
        item = {Item::Kind::error, nullptr, std::current_exception(), {}};
      }
      item.after = host->state();

      // Wait for room in the ready queue and, for a batch, a free device buffer.
      DeviceSlot* slot = nullptr;
      {
        std::unique_lock lk(ring->mu);
        const bool is_batch = item.kind == Item::Kind::batch;
        auto room = [&] {
          return stop || generation != gen ||
                 (ready.size() < ready_cap && (!is_batch || !ring->free.empty()));
        };
        if (!room() && !pending.empty()) {  // about to wait: release the pinned host batches first
          lk.unlock();
          finish_all(pending);
          lk.lock();
        }
        if (!room()) {
          const auto t0 = Clock::now();
          copier_waits_for_slot = is_batch && ring->free.empty();
          ring->consumer_cv.notify_all();  // a consumer holding every buffer must learn it now
          ring->copier_cv.wait(lk, room);
          copier_waits_for_slot = false;
          slot_wait += seconds_since(t0);
        }
        if (stop) return;
        if (generation != gen) continue;  // set_epoch: this item belongs to the old order
        if (!is_batch) {
          ready.push_back(std::move(item));
          ring->consumer_cv.notify_all();
          continue;
        }
        slot = ring->free.back();
        ring->free.pop_back();
      }

      // The slot is this thread's until it is queued: no lock needed to fill it.
      finish_copies_into(pending, slot);
      if (stage->issue(*slot, hb, copy_stream->get())) ++copies_behind_consumer_;
      {
        std::lock_guard lk(ring->mu);
        if (stop || generation != gen) {
          ring->free.push_back(slot);  // copied but never delivered: the copy stream orders reuse
        } else {
          item.slot = slot;
          ready.push_back(std::move(item));
          ring->consumer_cv.notify_all();
        }
      }
      pending.push_back({slot, std::move(hb)});
      // Keep one copy queued behind the newest so the copy engine never idles between batches,
      // and release the older host batch as soon as its copy is done.
      while (pending.size() > 1) finish_one(pending);
      while (!pending.empty() &&
             cudaEventQuery(pending.front().slot->copy_done.get()) == cudaSuccess)
        finish_one(pending);
    }
  }

  // Waits for the oldest pending copy, counts it, and returns its host batch to the pool.
  void finish_one(std::deque<Pending>& pending) {
    Pending& p = pending.front();
    check(cudaEventSynchronize(p.slot->copy_done.get()), "cudaEventSynchronize (copy)");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, p.slot->copy_start.get(), p.slot->copy_done.get()),
          "cudaEventElapsedTime");
    {
      std::lock_guard lk(ring->mu);
      ++copies;
      bytes_copied += p.slot->bytes;
      copy_seconds += ms / 1e3;
      copies_behind_consumer += std::exchange(copies_behind_consumer_, 0);
    }
    pending.pop_front();  // releases the host batch
  }

  void finish_all(std::deque<Pending>& pending) {
    while (!pending.empty()) finish_one(pending);
  }

  // The slot's events are about to be re-recorded: earlier copies into it must be accounted for.
  void finish_copies_into(std::deque<Pending>& pending, const DeviceSlot* slot) {
    while (std::any_of(pending.begin(), pending.end(),
                       [&](const Pending& p) { return p.slot == slot; }))
      finish_one(pending);
  }

  // ---- consumer ----

  // The next item; nullopt when `deadline` passes first. An end of epoch is the empty batch.
  std::optional<DeviceBatch> next(CudaStream stream, std::optional<Clock::time_point> deadline) {
    const auto t0 = Clock::now();
    std::unique_lock lk(ring->mu);
    while (true) {
      if (stop) throw ShutdownError("device loader closed");
      if (!ready.empty()) break;
      if (fatal) std::rethrow_exception(fatal);
      if (copier_waits_for_slot && ring->free.empty())
        throw CapacityError(
            "all " + std::to_string(dopt.ring_depth) +
            " device buffers are held by the consumer: release batches you no longer need, or "
            "raise ring_depth");
      if (!deadline) {
        ring->consumer_cv.wait(lk);
      } else if (ring->consumer_cv.wait_until(lk, *deadline) == std::cv_status::timeout &&
                 ready.empty() && !stop) {
        consumer_wait += seconds_since(t0);
        return std::nullopt;
      }
    }
    Item item = std::move(ready.front());
    ready.pop_front();
    consumer_wait += seconds_since(t0);
    ring->copier_cv.notify_all();  // the ready queue made room
    position = std::move(item.after);
    switch (item.kind) {
      case Item::Kind::end_of_epoch:
        return DeviceBatch();
      case Item::Kind::error:
        lk.unlock();
        std::rethrow_exception(item.error);
      case Item::Kind::batch:
        break;
    }
    ++batches;
    ++ring->held;
    DeviceSlot* slot = item.slot;
    slot->consumer = stream;
    lk.unlock();
    DeviceBatch b = ring->wrap(slot);  // from here on, failures still hand the slot back
    // The consumer's stream waits for the copy on the device: no host-side synchronisation.
    DeviceGuard g(device);
    check(cudaStreamWaitEvent(stream, slot->copy_done.get(), 0),
          "cudaStreamWaitEvent (consumer stream)");
    return b;
  }

  void set_epoch(uint64_t e) {
    {
      std::lock_guard lk(ring->mu);
      if (stop) throw ShutdownError("device loader closed");
      ++generation;
      epoch_request = e;
      for (auto& item : ready)
        if (item.slot) ring->free.push_back(item.slot);
      ready.clear();
      position.epoch = e;
      position.next_batch = 0;
      position.borrowed.clear();
    }
    ring->copier_cv.notify_all();
  }
};

DeviceLoader::DeviceLoader(const std::string& path, LoaderOptions options,
                           DeviceOptions device_options)
    : impl_(std::make_unique<Impl>(options, device_options)) {
  DeviceGuard g(impl_->device);  // the host pool's pinned buffers are allocated now
  impl_->host = std::make_unique<Loader>(path, impl_->host_options(std::move(options)));
  try {
    impl_->start();
  } catch (...) {
    impl_->shutdown();
    throw;
  }
}

DeviceLoader::DeviceLoader(std::shared_ptr<Reader> reader, LoaderOptions options,
                           DeviceOptions device_options)
    : impl_(std::make_unique<Impl>(options, device_options)) {
  DeviceGuard g(impl_->device);
  impl_->host =
      std::make_unique<Loader>(std::move(reader), impl_->host_options(std::move(options)));
  try {
    impl_->start();
  } catch (...) {
    impl_->shutdown();
    throw;
  }
}

DeviceLoader::~DeviceLoader() {
  DeviceGuard g(impl_->device, std::nothrow);
  impl_->shutdown();
}

DeviceBatch DeviceLoader::next(CudaStream consumer_stream) {
  return std::move(*impl_->next(consumer_stream, std::nullopt));
}

DeviceBatch DeviceLoader::next(CudaStream consumer_stream, std::chrono::milliseconds timeout) {
  auto got = try_next(consumer_stream, timeout);
  if (!got) {
    const LoaderState at = state();
    throw TimeoutError("no device batch within the timeout (epoch " + std::to_string(at.epoch) +
                       ", batch " + std::to_string(at.next_batch) +
                       "); the loader is still running");
  }
  return std::move(*got);
}

std::optional<DeviceBatch> DeviceLoader::try_next(CudaStream consumer_stream,
                                                  std::chrono::milliseconds timeout) {
  // Clamp: a huge timeout must mean "wait long", not overflow into the past.
  const auto limit =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::hours(24 * 365 * 100));
  return impl_->next(consumer_stream, Clock::now() + std::clamp(timeout, timeout.zero(), limit));
}

void DeviceLoader::close() {
  DeviceGuard g(impl_->device, std::nothrow);
  impl_->close();
}

void DeviceLoader::set_epoch(uint64_t epoch) { impl_->set_epoch(epoch); }

uint64_t DeviceLoader::epoch() const {
  std::lock_guard lk(impl_->ring->mu);
  return impl_->position.epoch;
}

uint64_t DeviceLoader::batches_per_epoch() const { return impl_->host->batches_per_epoch(); }
uint64_t DeviceLoader::samples_per_epoch() const { return impl_->host->samples_per_epoch(); }

LoaderState DeviceLoader::state() const {
  std::lock_guard lk(impl_->ring->mu);
  return impl_->position;
}

std::vector<uint64_t> DeviceLoader::epoch_order() const {
  const LoaderOptions& o = impl_->host->options();
  const auto full = ferry::epoch_order(impl_->order_options, epoch(),
                                       impl_->host->reader().layout().sample_pages());
  return shard_order(full, o.rank, o.world_size, o.remainder);
}

DeviceMetrics DeviceLoader::metrics() const {
  DeviceMetrics m;
  m.host = impl_->host->metrics();
  m.device = impl_->device;
  m.ring_depth = impl_->dopt.ring_depth;
  std::lock_guard lk(impl_->ring->mu);
  m.wall_seconds = seconds_since(impl_->started);
  m.batches = impl_->batches;
  m.copies = impl_->copies;
  m.bytes_copied = impl_->bytes_copied;
  m.copy_seconds = impl_->copy_seconds;
  m.copy_gbps = m.copy_seconds > 0 ? static_cast<double>(m.bytes_copied) / m.copy_seconds / 1e9 : 0;
  m.consumer_wait_seconds = impl_->consumer_wait;
  m.consumer_wait_fraction = m.wall_seconds > 0 ? m.consumer_wait_seconds / m.wall_seconds : 0;
  m.copier_slot_wait_seconds = impl_->slot_wait;
  m.copies_behind_consumer = impl_->copies_behind_consumer;
  return m;
}

std::string DeviceLoader::report() const { return metrics().to_table(); }

void DeviceLoader::reset_metrics() {
  impl_->host->reset_metrics();
  std::lock_guard lk(impl_->ring->mu);
  impl_->started = Clock::now();
  impl_->batches = impl_->copies = impl_->bytes_copied = impl_->copies_behind_consumer = 0;
  impl_->copy_seconds = impl_->consumer_wait = impl_->slot_wait = 0;
}

int DeviceLoader::device() const { return impl_->device; }
uint32_t DeviceLoader::ring_depth() const { return impl_->dopt.ring_depth; }
const std::vector<FieldSpec>& DeviceLoader::fields() const { return impl_->host->fields(); }
const LoaderOptions& DeviceLoader::options() const { return impl_->host->options(); }
const Reader& DeviceLoader::reader() const { return impl_->host->reader(); }

}  // namespace ferry
