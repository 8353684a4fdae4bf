// The GPU stage's parts every build has: DeviceBatch (a view of a ring slot), DeviceMetrics'
// formatting and cuda_available(). The CUDA parts are ring.cpp, copier.cpp, pinned.cpp and
// device_loader.cpp; a build without CUDA compiles stub.cpp instead (src/CMakeLists.txt).
#include <sstream>
#include <utility>

#include "cuda/ring.h"
#include "ferry/cuda.h"
#include "util.h"

namespace ferry {

namespace {
std::string fmt(const char* format, double v) { return detail::printf_double(format, v); }
}  // namespace

bool cuda_available() noexcept { return FERRY_HAVE_CUDA != 0; }

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

}  // namespace ferry
