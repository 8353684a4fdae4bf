#pragma once
// Shared by the binding files: numpy dtype names and schema conversion.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "ferry/format.h"

namespace ferry::python {
namespace py = pybind11;

/// numpy's name for a ferry dtype. numpy has no bfloat16: bf16 travels as uint16 (the Python
/// layer views it as torch.bfloat16).
inline const char* numpy_dtype(DType t) {
  static const char* names[] = {"uint8",  "int8",  "uint16",  "int16",  "uint32",  "int32",
                                "uint64", "int64", "float16", "uint16", "float32", "float64"};
  return names[static_cast<int>(t)];
}

/// numpy_dtype() as a dtype object, built once per type (parsing the name costs a few µs, and
/// batches are converted thousands of times a second).
inline const py::dtype& cached_numpy_dtype(DType t) {
  static std::vector<py::dtype>* cache = [] {
    auto* v =
        new std::vector<py::dtype>();  // leaked on purpose: outlives interpreter shutdown order
    for (int i = 0; i < kNumDTypes; ++i)
      v->push_back(py::dtype(numpy_dtype(static_cast<DType>(i))));
    return v;
  }();
  return (*cache)[static_cast<int>(t)];
}

/// A schema as Python sees it: [{"name", "kind" ("ndarray"|"bytes"), "dtype", "shape"}].
inline py::list schema_to_python(const std::vector<FieldSpec>& fields) {
  py::list out;
  for (const auto& f : fields) {
    py::dict d;
    d["name"] = f.name;
    d["kind"] = f.kind == FieldKind::bytes ? "bytes" : "ndarray";
    d["dtype"] = std::string(dtype_name(f.dtype));
    d["shape"] = py::tuple(py::cast(f.shape));
    out.append(d);
  }
  return out;
}

inline Schema schema_from_python(const py::list& fields) {
  Schema s;
  for (const auto& item : fields) {
    const auto d = item.cast<py::dict>();
    const auto kind = d["kind"].cast<std::string>();
    const auto name = d["name"].cast<std::string>();
    if (kind == "bytes") {
      s.fields.push_back(FieldSpec::bytes(name));
    } else if (kind == "ndarray") {
      s.fields.push_back(FieldSpec::array(name, parse_dtype(d["dtype"].cast<std::string>()),
                                          d["shape"].cast<std::vector<uint64_t>>()));
    } else {
      throw py::value_error("field '" + name + "': kind must be 'ndarray' or 'bytes', got '" +
                            kind + "'");
    }
  }
  return s;
}

}  // namespace ferry::python
