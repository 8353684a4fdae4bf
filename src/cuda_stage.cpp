// The GPU stage (include/ferry/cuda.h): pinned host batches, a copier thread, a ring of device
// buffers. Host code only (the CUDA runtime API); kernels live with the tests and benchmarks.
// Without CUDA the same symbols exist and every constructor throws "built without CUDA".
#include "ferry/cuda.h"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "ferry/order.h"
#include "ferry/reader.h"

#ifndef FERRY_HAVE_CUDA
#define FERRY_HAVE_CUDA 0
#endif
#if FERRY_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace ferry {

namespace {

using Clock = std::chrono::steady_clock;

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

}  // namespace

bool cuda_available() noexcept { return FERRY_HAVE_CUDA != 0; }

// ---- the ring's slots (metadata in every build; CUDA handles only with CUDA) ----

#if FERRY_HAVE_CUDA
namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess)
    throw CudaError(std::string(what) + " failed: " + cudaGetErrorName(rc) + " (" +
                        cudaGetErrorString(rc) + ")",
                    static_cast<int>(rc));
}

/// Makes `device` current for a scope and restores the caller's device afterwards: the GPU stage
/// runs on threads it does not own (the consumer's, a tensor deleter's) and must leave their
/// current device as it found it.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device_) check(cudaSetDevice(device_), "cudaSetDevice");
  }
  /// The noexcept form, for destructors and release paths: failures leave the device as it is.
  DeviceGuard(int device, std::nothrow_t) noexcept : device_(device) {
    if (cudaGetDevice(&previous_) != cudaSuccess ||
        (previous_ != device_ && cudaSetDevice(device_) != cudaSuccess))
      previous_ = device_;
  }
  ~DeviceGuard() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int previous_ = 0;
};

// RAII owners of CUDA handles. Destruction never throws: a failed destroy during teardown (the
// runtime may already be unloading at process exit) leaks the handle rather than crash.

class Event {
 public:
  explicit Event(unsigned flags) {
    check(cudaEventCreateWithFlags(&e_, flags), "cudaEventCreateWithFlags");
  }
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

class Stream {
 public:
  Stream() {
    // Non-blocking: the copies must not serialise with the legacy default stream, which is the
    // consumer's stream in many programs (PyTorch's default).
    check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  }
  ~Stream() {
    if (s_) {
      cudaStreamSynchronize(s_);
      cudaStreamDestroy(s_);
    }
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class DeviceMemory {
 public:
  explicit DeviceMemory(uint64_t bytes) {
    check(cudaMalloc(&p_, bytes), "cudaMalloc (a device ring buffer)");
  }
  ~DeviceMemory() {
    if (p_) cudaFree(p_);
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  uint8_t* get() const { return static_cast<uint8_t*>(p_); }

 private:
  void* p_ = nullptr;
};

constexpr uint64_t kDeviceAlign = 256;  // cudaMalloc's own alignment: every field starts on one
uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace
#endif  // FERRY_HAVE_CUDA

/// One device buffer of the ring and the batch it currently holds. Owned by DeviceRing; a slot
/// belongs to exactly one party at a time — the free list, the copier (while it copies), the
/// ready queue, or the consumer (a DeviceBatch) — so its fields need no lock of their own.
struct DeviceSlot {
  uint64_t size = 0, epoch = 0, index = 0, bytes = 0;
  std::vector<uint64_t> sample_ids;
  std::vector<DeviceField> fields;
  std::vector<std::vector<uint64_t>> host_offsets;  // per field (bytes fields only)
  CudaStream consumer = nullptr;                    // the stream next() handed the batch out on
#if FERRY_HAVE_CUDA
  explicit DeviceSlot(uint64_t memory_bytes)
      : memory(memory_bytes),
        copy_start(cudaEventDefault),
        // Blocking sync: the copier sleeps in cudaEventSynchronize instead of spinning a core.
        copy_done(cudaEventBlockingSync),
        released(cudaEventDisableTiming) {}
  DeviceMemory memory;
  Event copy_start, copy_done;    // bracket the copy on the copy stream (timed)
  Event released;                 // recorded on `consumer` when the batch is released
  bool release_recorded = false;  // the next copy into this slot must wait for `released`
  std::vector<uint64_t> data_offset, offsets_offset, capacity;  // per field, in `memory`
#endif
};

/// The ring of device buffers and the lock and condition variables the DeviceLoader's scheduling
/// shares with every DeviceBatch (as BatchPool does for the host loader). Kept alive by the
/// loader and by each DeviceBatch, so a batch may outlive its loader.
class DeviceRing : public std::enable_shared_from_this<DeviceRing> {
 public:
  explicit DeviceRing(int device) : device_(device) {}
  ~DeviceRing();
  DeviceRing(const DeviceRing&) = delete;
  DeviceRing& operator=(const DeviceRing&) = delete;

  int device() const { return device_; }
  DeviceBatch wrap(DeviceSlot* slot) { return DeviceBatch(shared_from_this(), slot); }
  /// A DeviceBatch gives its slot back (any thread; takes `mu`).
  void release(DeviceSlot* slot) noexcept;

  std::vector<FieldSpec> fields;  // what DeviceField::spec points at: outlives the host loader
  std::mutex mu;
  std::condition_variable copier_cv;  // copier: a slot was freed, ready made room, set_epoch, stop
  std::condition_variable
      consumer_cv;  // consumer: an item is ready, the copier waits or failed, stop
  // Guarded by mu:
  std::vector<std::unique_ptr<DeviceSlot>> slots;
  std::vector<DeviceSlot*> free;
  uint64_t held = 0;  // slots the consumer holds

 private:
  int device_;
};

#if FERRY_HAVE_CUDA

DeviceRing::~DeviceRing() {
  // Memory may be freed only after the consumer's stream and the copy stream are done with it.
  DeviceGuard g(device_, std::nothrow);
  for (auto& s : slots) {
    if (s->release_recorded) cudaEventSynchronize(s->released.get());
    cudaEventSynchronize(s->copy_done.get());
  }
  slots.clear();
}

void DeviceRing::release(DeviceSlot* slot) noexcept {
  bool recorded;
  {
    DeviceGuard g(device_, std::nothrow);
    recorded = cudaEventRecord(slot->released.get(), slot->consumer) == cudaSuccess;
    if (!recorded) {
      // The stream is gone or broken: nothing tells us when its work ends, so wait for the whole
      // device before the buffer may be overwritten. Never taken on a healthy run.
      cudaGetLastError();
      cudaDeviceSynchronize();
    }
  }
  {
    std::lock_guard lk(mu);
    slot->release_recorded = recorded;
    --held;
    free.push_back(slot);
  }
  copier_cv.notify_all();
}

#else

DeviceRing::~DeviceRing() = default;
void DeviceRing::release(DeviceSlot*) noexcept {}

#endif

// ---- DeviceBatch ----

DeviceBatch::DeviceBatch(DeviceBatch&& o) noexcept
    : ring_(std::move(o.ring_)), slot_(std::exchange(o.slot_, nullptr)) {}
DeviceBatch& DeviceBatch::operator=(DeviceBatch&& o) noexcept {
  if (this != &o) {
    release();
    ring_ = std::move(o.ring_);
    slot_ = std::exchange(o.slot_, nullptr);
  }
  return *this;
}
DeviceBatch::~DeviceBatch() { release(); }

void DeviceBatch::release() noexcept {
  if (slot_) ring_->release(slot_);
  slot_ = nullptr;
  ring_.reset();
}

uint64_t DeviceBatch::size() const { return slot_ ? slot_->size : 0; }
uint64_t DeviceBatch::epoch() const { return slot_ ? slot_->epoch : 0; }
uint64_t DeviceBatch::index() const { return slot_ ? slot_->index : 0; }
std::span<const uint64_t> DeviceBatch::sample_ids() const {
  return slot_ ? std::span<const uint64_t>(slot_->sample_ids) : std::span<const uint64_t>();
}
size_t DeviceBatch::num_fields() const { return slot_ ? slot_->fields.size() : 0; }
int DeviceBatch::device() const { return ring_ ? ring_->device() : -1; }
CudaStream DeviceBatch::stream() const { return slot_ ? slot_->consumer : nullptr; }

const DeviceField& DeviceBatch::field(size_t i) const {
  if (!slot_ || i >= slot_->fields.size())
    throw InvalidArgument("device batch field " + std::to_string(i) + " out of range");
  return slot_->fields[i];
}

const DeviceField& DeviceBatch::field(std::string_view name) const {
  if (slot_)
    for (const auto& f : slot_->fields)
      if (f.spec->name == name) return f;
  throw InvalidArgument("device batch has no field '" + std::string(name) + "'");
}

std::vector<uint64_t> DeviceBatch::shape(size_t i) const {
  const DeviceField& f = field(i);
  if (f.offsets) return {f.bytes};
  std::vector<uint64_t> s = {slot_->size};
  s.insert(s.end(), f.spec->shape.begin(), f.spec->shape.end());
  return s;
}

// ---- DeviceMetrics ----

std::string DeviceMetrics::to_json() const {
  std::string h = host.to_json();
  if (!h.empty() && h.back() == '}') h.pop_back();
  std::ostringstream o;
  o << h << (h.size() > 1 ? "," : "") << "\"device\":{\"device\":" << device
    << ",\"ring_depth\":" << ring_depth << ",\"wall_seconds\":" << wall_seconds
    << ",\"batches\":" << batches << ",\"copies\":" << copies
    << ",\"bytes_copied\":" << bytes_copied << ",\"copy_seconds\":" << copy_seconds
    << ",\"copy_gbps\":" << copy_gbps << ",\"consumer_wait_seconds\":" << consumer_wait_seconds
    << ",\"consumer_wait_fraction\":" << consumer_wait_fraction
    << ",\"copier_slot_wait_seconds\":" << copier_slot_wait_seconds
    << ",\"copies_behind_consumer\":" << copies_behind_consumer << "}}";
  return o.str();
}

std::string DeviceMetrics::to_table() const {
  std::ostringstream o;
  o << host.to_table();
  o << "GPU stage (cuda:" << device << ", ring of " << ring_depth
    << " device buffers): " << fmt("%.2f s", wall_seconds) << "\n";
  o << "  copies " << copies << ", "
    << fmt("%.1f MiB", static_cast<double>(bytes_copied) / (1 << 20)) << " in "
    << fmt("%.3f s", copy_seconds) << " of copy-stream time (" << fmt("%.1f GB/s", copy_gbps)
    << ")\n";
  o << "  consumer wait   " << fmt("%6.2f", consumer_wait_seconds)
    << fmt("%7.1f%%", 100 * consumer_wait_fraction)
    << "   (blocked in next(); the host figures above are the copier's)\n";
  o << "  copier waited " << fmt("%.2f s", copier_slot_wait_seconds)
    << " for a free device buffer (the consumer's GPU work is the limit when this is large); "
    << copies_behind_consumer << " copies queued behind GPU work still reading their buffer\n";
  return o.str();
}

#if FERRY_HAVE_CUDA

// ---- PinnedAllocator ----

PinnedAllocator::PinnedAllocator(int device) : device_(device) {}

void* PinnedAllocator::allocate(uint64_t bytes) {
  DeviceGuard g(device_);
  void* p = nullptr;
  // Portable: the memory is pinned for every device's context, so any copy stream may read it.
  check(cudaHostAlloc(&p, std::max<uint64_t>(bytes, 1), cudaHostAllocPortable),
        "cudaHostAlloc (pinned batch buffer)");
  return p;
}

void PinnedAllocator::deallocate(void* p, uint64_t) noexcept {
  if (p) cudaFreeHost(p);
}

int parse_cuda_device(std::string_view device) {
  const std::string d(device);
  if (device.rfind("cuda", 0) != 0)
    throw InvalidArgument("device '" + d + "': use 'cuda' or 'cuda:N'");
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess || count == 0) {
    cudaGetLastError();
    throw InvalidArgument("device '" + d + "': no CUDA device is visible (" + cudaGetErrorName(rc) +
                          ")");
  }
  if (device == "cuda") {
    int current = 0;
    check(cudaGetDevice(&current), "cudaGetDevice");
    return current;
  }
  const std::string_view n = device.substr(4);
  if (n.size() < 2 || n[0] != ':' || n.size() > 4 ||
      !std::all_of(n.begin() + 1, n.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw InvalidArgument("device '" + d + "': use 'cuda' or 'cuda:N'");
  const int index = std::stoi(std::string(n.substr(1)));
  if (index >= count)
    throw InvalidArgument("device '" + d + "': only " + std::to_string(count) +
                          " CUDA device(s) are visible");
  return index;
}

// ---- DeviceLoader ----

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
  std::thread copier;
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
    const Reader& r = host->reader();
    const uint64_t batch_size = host->options().batch_size;
    std::vector<uint64_t> capacity;  // as the host pool sizes its buffers: an exact upper bound
    for (const auto& f : host->fields())
      capacity.push_back(r.layout().top_k_decoded_bytes(r.schema().index_of(f.name), batch_size));
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
    ready_cap = dopt.ring_depth + 1;
    position = host->state();
    started = Clock::now();
    copier = std::thread([this] { copier_main(); });
  }

  void shutdown() {
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
    host.reset();  // joins the host workers
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
        hb = host->next(kPoll);
        if (!hb) item.kind = Item::Kind::end_of_epoch;
      } catch (const TimeoutError&) {
        continue;  // nothing yet: look at stop and set_epoch again
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
      issue_copy(*slot, hb);
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

  void issue_copy(DeviceSlot& s, const Batch& hb) {
    cudaStream_t cs = copy_stream->get();
    // The consumer may still be using this buffer on its stream: order the copy after its
    // release event on the device, so neither thread waits for the GPU here.
    if (s.release_recorded) {
      if (cudaEventQuery(s.released.get()) == cudaErrorNotReady) ++copies_behind_consumer_;
      check(cudaStreamWaitEvent(cs, s.released.get(), 0), "cudaStreamWaitEvent (buffer reuse)");
    }
    s.release_recorded = false;
    check(cudaEventRecord(s.copy_start.get(), cs), "cudaEventRecord");
    const uint64_t n = hb.size();
    s.bytes = 0;
    for (size_t f = 0; f < hb.num_fields(); ++f) {
      const FieldBuffer& fb = hb.field(f);
      const uint64_t bytes = fb.bytes(n);
      if (bytes > s.capacity[f])  // cannot happen while the host pool is sized as we size ours
        throw Error("field '" + fb.spec->name + "': batch of " + std::to_string(bytes) +
                    " bytes exceeds the " + std::to_string(s.capacity[f]) + "-byte device buffer");
      uint8_t* dst = s.memory.get() + s.data_offset[f];
      if (bytes)
        check(cudaMemcpyAsync(dst, fb.data, bytes, cudaMemcpyHostToDevice, cs), "cudaMemcpyAsync");
      DeviceField& out = s.fields[f];
      out.spec = &ring->fields[f];
      out.data = dst;
      out.bytes = bytes;
      if (fb.offsets) {
        auto* doff = reinterpret_cast<uint64_t*>(s.memory.get() + s.offsets_offset[f]);
        check(cudaMemcpyAsync(doff, fb.offsets, (n + 1) * 8, cudaMemcpyHostToDevice, cs),
              "cudaMemcpyAsync");
        s.host_offsets[f].assign(fb.offsets, fb.offsets + n + 1);
        out.offsets = doff;
        out.host_offsets = s.host_offsets[f];
        s.bytes += (n + 1) * 8;
      } else {
        out.offsets = nullptr;
        out.host_offsets = {};
      }
      s.bytes += bytes;
    }
    check(cudaEventRecord(s.copy_done.get(), cs), "cudaEventRecord");
    s.size = n;
    s.epoch = hb.epoch();
    s.index = hb.index();
    s.sample_ids.assign(hb.sample_ids().begin(), hb.sample_ids().end());
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

  DeviceBatch next(CudaStream stream, std::optional<Clock::time_point> deadline) {
    const auto t0 = Clock::now();
    std::unique_lock lk(ring->mu);
    while (true) {
      if (stop) throw ShutdownError("device loader is shut down");
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
                 ready.empty()) {
        consumer_wait += seconds_since(t0);
        throw TimeoutError("no device batch within the timeout (epoch " +
                           std::to_string(position.epoch) + ", batch " +
                           std::to_string(position.next_batch) + "); the loader is still running");
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
      if (stop) throw ShutdownError("device loader is shut down");
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
  return impl_->next(consumer_stream, std::nullopt);
}
DeviceBatch DeviceLoader::next(CudaStream consumer_stream, std::chrono::milliseconds timeout) {
  return impl_->next(consumer_stream, Clock::now() + timeout);
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

#else  // !FERRY_HAVE_CUDA: the same API; constructing anything says why it cannot work.

namespace {
[[noreturn]] void throw_no_cuda(std::string_view device) {
  throw InvalidArgument("device '" + std::string(device) + "': ferry was built without CUDA");
}
}  // namespace

PinnedAllocator::PinnedAllocator(int device) : device_(device) {
  throw_no_cuda("cuda:" + std::to_string(device));
}
void* PinnedAllocator::allocate(uint64_t) { throw_no_cuda("cuda:" + std::to_string(device_)); }
void PinnedAllocator::deallocate(void*, uint64_t) noexcept {}

int parse_cuda_device(std::string_view device) {
  if (device.rfind("cuda", 0) != 0)
    throw InvalidArgument("device '" + std::string(device) + "': use 'cuda' or 'cuda:N'");
  throw_no_cuda(device);
}

struct DeviceLoader::Impl {};

DeviceLoader::DeviceLoader(const std::string&, LoaderOptions options, DeviceOptions) {
  parse_cuda_device(options.device);
}
DeviceLoader::DeviceLoader(std::shared_ptr<Reader>, LoaderOptions options, DeviceOptions) {
  parse_cuda_device(options.device);
}
DeviceLoader::~DeviceLoader() = default;
// Unreachable: no DeviceLoader can be constructed without CUDA.
DeviceBatch DeviceLoader::next(CudaStream) { throw_no_cuda("cuda"); }
DeviceBatch DeviceLoader::next(CudaStream, std::chrono::milliseconds) { throw_no_cuda("cuda"); }
void DeviceLoader::set_epoch(uint64_t) { throw_no_cuda("cuda"); }
uint64_t DeviceLoader::epoch() const { throw_no_cuda("cuda"); }
uint64_t DeviceLoader::batches_per_epoch() const { throw_no_cuda("cuda"); }
uint64_t DeviceLoader::samples_per_epoch() const { throw_no_cuda("cuda"); }
LoaderState DeviceLoader::state() const { throw_no_cuda("cuda"); }
std::vector<uint64_t> DeviceLoader::epoch_order() const { throw_no_cuda("cuda"); }
DeviceMetrics DeviceLoader::metrics() const { throw_no_cuda("cuda"); }
std::string DeviceLoader::report() const { throw_no_cuda("cuda"); }
void DeviceLoader::reset_metrics() { throw_no_cuda("cuda"); }
int DeviceLoader::device() const { throw_no_cuda("cuda"); }
uint32_t DeviceLoader::ring_depth() const { throw_no_cuda("cuda"); }
const std::vector<FieldSpec>& DeviceLoader::fields() const { throw_no_cuda("cuda"); }
const LoaderOptions& DeviceLoader::options() const { throw_no_cuda("cuda"); }
const Reader& DeviceLoader::reader() const { throw_no_cuda("cuda"); }

#endif  // FERRY_HAVE_CUDA

}  // namespace ferry
