// Bindings for the GPU stage (include/ferry/cuda.h): _ferry.DeviceLoader, whose batches reach
// Python as DLPack capsules over the ring's device buffers (ferry/cuda.py makes torch tensors of
// them). Each capsule keeps the batch alive; the ring slot is released — an event recorded on the
// stream the batch was taken on — when the last tensor (or unconsumed capsule) of it is gone.
// Builds without CUDA bind nothing but built_with_cuda = False; ferry.Loader then says
// "ferry was built without CUDA".
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "bindings.h"
#include "convert.h"
#include "engine_args.h"
#include "ferry/cuda.h"
#include "ferry/error.h"
#include "ferry/reader.h"

namespace ferry::python {

#if FERRY_HAVE_CUDA
namespace {

// The DLPack ABI (v0.8, the unversioned "dltensor" capsule every framework accepts), declared
// from the published specification (https://dmlc.github.io/dlpack/latest/c_api.html).
struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
constexpr int32_t kDLCUDA = 2;
constexpr uint8_t kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4;

DLDataType dl_dtype(DType t) {
  switch (t) {
    case DType::u8:
      return {kDLUInt, 8, 1};
    case DType::i8:
      return {kDLInt, 8, 1};
    case DType::u16:
      return {kDLUInt, 16, 1};
    case DType::i16:
      return {kDLInt, 16, 1};
    case DType::u32:
      return {kDLUInt, 32, 1};
    case DType::i32:
      return {kDLInt, 32, 1};
    case DType::u64:
      return {kDLUInt, 64, 1};
    case DType::i64:
      return {kDLInt, 64, 1};
    case DType::f16:
      return {kDLFloat, 16, 1};
    case DType::bf16:
      return {kDLBfloat, 16, 1};
    case DType::f32:
      return {kDLFloat, 32, 1};
    case DType::f64:
      return {kDLFloat, 64, 1};
  }
  return {kDLUInt, 8, 1};
}

/// One exported tensor: the DLPack struct, its shape and strides, and a share of the batch.
/// Deleted by the consumer's deleter call (any thread, GIL or not: it touches no Python object).
struct Export {
  DLManagedTensor managed{};
  std::vector<int64_t> shape, strides;
  std::shared_ptr<DeviceBatch> batch;
};

void delete_export(DLManagedTensor* t) noexcept { delete static_cast<Export*>(t->manager_ctx); }

// A capsule nobody consumed still owns its tensor; a consumed one was renamed "used_dltensor".
void capsule_destructor(PyObject* capsule) noexcept {
  if (!PyCapsule_IsValid(capsule, "dltensor")) return;
  auto* t = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
  if (t && t->deleter) t->deleter(t);
}

py::capsule make_capsule(const std::shared_ptr<DeviceBatch>& batch, void* data, DLDataType dtype,
                         std::vector<int64_t> shape) {
  auto e = std::make_unique<Export>();
  e->shape = std::move(shape);
  e->strides.assign(e->shape.size(), 1);
  for (size_t i = e->shape.size(); i-- > 1;) e->strides[i - 1] = e->strides[i] * e->shape[i];
  e->batch = batch;
  DLTensor& t = e->managed.dl_tensor;
  t.data = data;
  t.device = {kDLCUDA, batch->device()};
  t.ndim = static_cast<int32_t>(e->shape.size());
  t.dtype = dtype;
  t.shape = e->shape.data();
  t.strides = e->strides.data();
  t.byte_offset = 0;
  e->managed.manager_ctx = e.get();
  e->managed.deleter = delete_export;
  PyObject* cap = PyCapsule_New(&e->managed, "dltensor", capsule_destructor);
  if (!cap) throw py::error_already_set();
  e.release();  // owned by the capsule now
  return py::reinterpret_steal<py::capsule>(cap);
}

/// dict: field name -> capsule ([size, ...shape] of the field's dtype), or for bytes fields
/// (data capsule uint8 [bytes], offsets capsule int64 [size + 1]).
py::dict batch_capsules(const std::shared_ptr<DeviceBatch>& b) {
  py::dict out;
  for (size_t i = 0; i < b->num_fields(); ++i) {
    const DeviceField& f = b->field(i);
    if (f.offsets) {
      auto data = make_capsule(b, f.data, {kDLUInt, 8, 1}, {static_cast<int64_t>(f.bytes)});
      // Offsets are uint64 in memory; int64 (the same bits, all < 2^63) is what torch indexes with.
      auto offsets = make_capsule(b, const_cast<uint64_t*>(f.offsets), {kDLInt, 64, 1},
                                  {static_cast<int64_t>(b->size() + 1)});
      out[py::str(f.spec->name)] = py::make_tuple(data, offsets);
    } else {
      std::vector<int64_t> shape;
      for (uint64_t d : b->shape(i)) shape.push_back(static_cast<int64_t>(d));
      out[py::str(f.spec->name)] =
          make_capsule(b, f.data, dl_dtype(f.spec->dtype), std::move(shape));
    }
  }
  return out;
}

/// DeviceLoader owned for Python (EngineOwner), plus its Ctrl-C-aware next().
class PyDeviceLoader : public EngineOwner<DeviceLoader> {
 public:
  using EngineOwner::EngineOwner;

  /// The next batch ordered on `stream` (a cudaStream_t as an int: torch's
  /// current_stream().cuda_stream; 0 is the legacy default stream), or None at the end of the
  /// epoch. timeout < 0: wait as long as needed.
  py::object next(double timeout_seconds, uintptr_t stream) {
    std::shared_ptr<DeviceLoader> l = share();  // alive even if another thread closes us
    const auto s = reinterpret_cast<CudaStream>(stream);
    return next_interruptibly(
        timeout_seconds, [&l, s](std::chrono::milliseconds slice) { return l->next(s, slice); },
        [](DeviceBatch b) { return py::cast(std::make_shared<DeviceBatch>(std::move(b))); },
        [this] { return closed(); });
  }
};

}  // namespace

void bind_cuda(py::module_& m) {
  m.attr("built_with_cuda") = true;

  py::class_<DeviceBatch, std::shared_ptr<DeviceBatch>>(
      m, "DeviceBatch", "One batch in device memory (see ferry/cuda.py)")
      .def_property_readonly("size", &DeviceBatch::size)
      .def_property_readonly("epoch", &DeviceBatch::epoch)
      .def_property_readonly("index", &DeviceBatch::index)
      .def_property_readonly("device", &DeviceBatch::device)
      .def_property_readonly("sample_ids",
                             [](const DeviceBatch& b) {
                               return py::array_t<uint64_t>(static_cast<py::ssize_t>(b.size()),
                                                            b.sample_ids().data());
                             })
      .def("capsules", &batch_capsules,
           "dict of field name -> DLPack capsule (bytes fields: (data, offsets) capsules); each "
           "keeps the "
           "batch's device buffer until the tensor made from it is freed");

  py::class_<PyDeviceLoader>(m, "DeviceLoader")
      .def(py::init([](const std::string& path, const py::kwargs& kw) {
             EngineArgs a = engine_args(kw, {"ring_depth"});
             const DeviceOptions d{kw.contains("ring_depth") ? kw["ring_depth"].cast<uint32_t>()
                                                             : 3u};
             py::gil_scoped_release nogil;
             auto loader = a.faulty()
                               ? std::make_unique<DeviceLoader>(faulty_reader(path, a),
                                                                std::move(a.options), d)
                               : std::make_unique<DeviceLoader>(path, std::move(a.options), d);
             return std::make_unique<PyDeviceLoader>(std::move(loader));
           }),
           py::arg("path"),
           "Keyword arguments: those of _ferry.Loader (engine_args.h) and ring_depth")
      .def("next", &PyDeviceLoader::next, py::arg("timeout") = -1.0, py::arg("stream") = 0)
      .def("close", &PyDeviceLoader::close)
      .def("set_epoch",
           [](PyDeviceLoader& l, uint64_t e) {
             DeviceLoader& loader = l.get();
             py::gil_scoped_release nogil;
             loader.set_epoch(e);
           })
      .def_property_readonly("device", [](PyDeviceLoader& l) { return l.get().device(); })
      .def_property_readonly("epoch", [](PyDeviceLoader& l) { return l.get().epoch(); })
      .def_property_readonly("batches_per_epoch",
                             [](PyDeviceLoader& l) { return l.get().batches_per_epoch(); })
      .def_property_readonly("samples_per_epoch",
                             [](PyDeviceLoader& l) { return l.get().samples_per_epoch(); })
      .def_property_readonly("fields",
                             [](PyDeviceLoader& l) { return schema_to_python(l.get().fields()); })
      .def("state_json", [](PyDeviceLoader& l) { return l.get().state().to_json(); })
      .def("metrics_json", [](PyDeviceLoader& l) { return l.get().metrics().to_json(); })
      .def("report", [](PyDeviceLoader& l) { return l.get().report(); })
      .def("reset_metrics", [](PyDeviceLoader& l) { l.get().reset_metrics(); })
      .def("epoch_order", [](PyDeviceLoader& l) {
        const auto o = l.get().epoch_order();
        return py::array_t<uint64_t>(static_cast<py::ssize_t>(o.size()), o.data());
      });
}

#else

void bind_cuda(py::module_& m) { m.attr("built_with_cuda") = false; }

#endif  // FERRY_HAVE_CUDA

}  // namespace ferry::python
