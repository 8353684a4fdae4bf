// The GPU stage in a build without CUDA: the same API; constructing anything says why it cannot
// work. Chosen instead of the CUDA files by src/CMakeLists.txt.
#include "cuda/ring.h"
#include "ferry/cuda.h"

namespace ferry {

DeviceRing::~DeviceRing() = default;
void DeviceRing::release(DeviceSlot*) noexcept {}

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
std::optional<DeviceBatch> DeviceLoader::try_next(CudaStream, std::chrono::milliseconds) {
  throw_no_cuda("cuda");
}
void DeviceLoader::close() {}
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

}  // namespace ferry
