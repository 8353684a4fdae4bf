// Bindings for the loader engine. Batches are handed to Python as numpy arrays that VIEW the
// engine's pooled buffers: each array's base is the Batch object, so a buffer returns to the
// pool only when every array (and tensor made from it) is gone.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <chrono>
#include <optional>

#include "bindings.h"
#include "convert.h"
#include "engine_args.h"
#include "ferry/error.h"
#include "ferry/loader.h"

namespace ferry::python {

namespace {

/// Loader owned for Python (EngineOwner), plus its Ctrl-C-aware next().
class PyLoader : public EngineOwner<Loader> {
 public:
  using EngineOwner::EngineOwner;

  /// The next batch, or None at the end of the epoch. timeout < 0: wait as long as needed.
  py::object next(double timeout_seconds) {
    std::shared_ptr<Loader> l = share();  // alive even if another thread closes us meanwhile
    return next_interruptibly(
        timeout_seconds,
        [&l](std::chrono::milliseconds slice) -> Batch {
          auto b = l->try_next(slice);
          if (!b) throw TimeoutError("slice");
          return std::move(*b);
        },
        [](Batch b) { return py::cast(std::make_shared<Batch>(std::move(b))); },
        [this] { return closed(); });
  }
};

py::array field_view(const py::object& self, const Batch& b, const FieldBuffer& f) {
  if (f.offsets) throw std::logic_error("bytes field");
  std::vector<py::ssize_t> shape = {static_cast<py::ssize_t>(b.size())};
  for (uint64_t d : f.spec->shape) shape.push_back(static_cast<py::ssize_t>(d));
  return py::array(cached_numpy_dtype(f.spec->dtype), shape, {}, f.data, self);
}

py::dict batch_arrays(const py::object& self) {
  const Batch& b = self.cast<const Batch&>();
  py::dict out;
  for (size_t i = 0; i < b.num_fields(); ++i) {
    const FieldBuffer& f = b.field(i);
    if (f.offsets) {
      py::array data(cached_numpy_dtype(DType::u8), {static_cast<py::ssize_t>(f.offsets[b.size()])},
                     {}, f.data, self);
      py::array offsets(cached_numpy_dtype(DType::u64), {static_cast<py::ssize_t>(b.size() + 1)},
                        {}, f.offsets, self);
      out[py::str(f.spec->name)] = py::make_tuple(data, offsets);
    } else {
      out[py::str(f.spec->name)] = field_view(self, b, f);
    }
  }
  return out;
}

}  // namespace

void bind_loader(py::module_& m) {
  py::class_<Batch, std::shared_ptr<Batch>>(m, "Batch",
                                            "One batch; its arrays view pooled engine memory")
      .def_property_readonly("size", &Batch::size)
      .def_property_readonly("epoch", &Batch::epoch)
      .def_property_readonly("index", &Batch::index)
      .def_property_readonly("sample_ids",
                             [](py::object self) {
                               const Batch& b = self.cast<const Batch&>();
                               return py::array(py::dtype("uint64"),
                                                {static_cast<py::ssize_t>(b.size())}, {},
                                                b.sample_ids().data(), self);
                             })
      .def("arrays", &batch_arrays,
           "dict of field name -> numpy array [size, ...] (zero-copy views); bytes fields -> "
           "(data, offsets)");

  py::class_<PyLoader>(m, "Loader")
      .def(py::init([](const std::string& path, const py::kwargs& kw) {
             EngineArgs a = engine_args(kw);
             py::gil_scoped_release nogil;
             auto loader =
                 a.faulty() ? std::make_unique<Loader>(faulty_reader(path, a), std::move(a.options))
                            : std::make_unique<Loader>(path, std::move(a.options));
             return std::make_unique<PyLoader>(std::move(loader));
           }),
           py::arg("path"), "Keyword arguments: see engine_args.h (ferry.Loader passes them all)")
      .def("next", &PyLoader::next, py::arg("timeout") = -1.0)
      .def("close", &PyLoader::close)
      .def("set_epoch",
           [](PyLoader& l, uint64_t e) {
             std::shared_ptr<Loader> loader = l.share();
             py::gil_scoped_release nogil;
             loader->set_epoch(e);
           })
      .def_property_readonly("epoch", [](PyLoader& l) { return l.get().epoch(); })
      .def_property_readonly("batches_per_epoch",
                             [](PyLoader& l) { return l.get().batches_per_epoch(); })
      .def_property_readonly("samples_per_epoch",
                             [](PyLoader& l) { return l.get().samples_per_epoch(); })
      .def_property_readonly("fields",
                             [](PyLoader& l) { return schema_to_python(l.get().fields()); })
      .def("state_json", [](PyLoader& l) { return l.get().state().to_json(); })
      .def("metrics_json",
           [](PyLoader& l) {  // without the GIL: a monitor thread must not stall next()
             std::shared_ptr<Loader> loader = l.share();
             py::gil_scoped_release nogil;
             return loader->metrics().to_json();
           })
      .def("report", [](PyLoader& l) { return l.get().report(); })
      .def("reset_metrics", [](PyLoader& l) { l.get().reset_metrics(); })
      .def("epoch_order", [](PyLoader& l) {
        const auto o = l.get().epoch_order();
        return py::array_t<uint64_t>(static_cast<py::ssize_t>(o.size()), o.data());
      });
}

}  // namespace ferry::python
