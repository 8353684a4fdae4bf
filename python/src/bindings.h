#pragma once
// Each concept binds itself in its own file; module.cpp calls them in order.
#include <pybind11/pybind11.h>

namespace ferry::python {
namespace py = pybind11;

void bind_errors(py::module_& m);       // errors.cpp: exception classes
void bind_format(py::module_& m);       // format.cpp: schema, Writer, Reader, orders
void bind_loader(py::module_& m);       // loader.cpp: Loader, Batch
void bind_tile_loader(py::module_& m);  // tile_loader.cpp: TileLoader
void bind_images_io(py::module_& m);    // images_io.cpp: write_imagefolder, write_tar
void bind_cuda(py::module_& m);         // cuda.cpp: DeviceLoader, DeviceBatch (CUDA builds)

}  // namespace ferry::python
