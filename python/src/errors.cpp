// Maps ferry's C++ exception hierarchy to Python exception types.
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "ferry/error.h"

namespace ferry::python {

void bind_errors(py::module_& m) {
  static py::exception<ferry::Error> error(m, "Error", PyExc_RuntimeError);
  static py::exception<ferry::FormatError> format_error(m, "FormatError", error.ptr());
  static py::exception<ferry::SampleError> sample_error(m, "SampleError", error.ptr());
  static py::exception<ferry::CapacityError> capacity_error(m, "CapacityError", error.ptr());
  static py::exception<ferry::ShutdownError> shutdown_error(m, "ShutdownError", error.ptr());
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ferry::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const ferry::TimeoutError& e) {
      PyErr_SetString(PyExc_TimeoutError, e.what());
    } catch (const ferry::IoError& e) {
      PyErr_SetObject(PyExc_OSError, py::make_tuple(e.errno_value(), e.what()).ptr());
    } catch (const ferry::FormatError& e) {
      format_error(e.what());
    } catch (const ferry::SampleError& e) {
      sample_error(e.what());
    } catch (const ferry::CapacityError& e) {
      capacity_error(e.what());
    } catch (const ferry::ShutdownError& e) {
      shutdown_error(e.what());
    } catch (const ferry::Error& e) {
      error(e.what());
    }
  });
}

}  // namespace ferry::python
