#include "bindings.h"

PYBIND11_MODULE(_ferry, m) {
  m.doc() = "ferry's C++ engine (use the `ferry` package, not this module, directly)";
  ferry::python::bind_errors(m);
  ferry::python::bind_format(m);
  ferry::python::bind_loader(m);
  ferry::python::bind_tile_loader(m);
  ferry::python::bind_images_io(m);
  ferry::python::bind_cuda(m);
}
