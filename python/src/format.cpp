#include "bindings.h"

namespace ferry::python {

void bind_format(py::module_& /*m*/) {}

}  // namespace ferry::python
