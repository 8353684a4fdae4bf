#include "bindings.h"

namespace ferry::python {

void bind_loader(py::module_& /*m*/) {}

}  // namespace ferry::python
