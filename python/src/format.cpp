// Bindings for writing and reading .ferry files and for epoch orders.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>

#include "bindings.h"
#include "convert.h"
#include "ferry/codec.h"
#include "ferry/error.h"
#include "ferry/importers.h"
#include "ferry/order.h"
#include "ferry/reader.h"
#include "ferry/writer.h"

namespace ferry::python {

namespace {

/// Turns Python columns into ferry Columns. ndarray fields: a C-contiguous array whose bytes are
/// n samples; bytes fields: a (data uint8, offsets uint64 of n+1) pair. Keeps the arrays alive
/// in `keep` while the GIL is released.
std::vector<Column> columns_from_python(const Schema& schema, const py::list& columns, uint64_t n,
                                        std::vector<py::array>& keep) {
  if (columns.size() != schema.fields.size())
    throw py::value_error("got " + std::to_string(columns.size()) + " columns for " +
                          std::to_string(schema.fields.size()) + " fields");
  std::vector<Column> out;
  for (size_t f = 0; f < schema.fields.size(); ++f) {
    const FieldSpec& spec = schema.fields[f];
    if (spec.kind == FieldKind::bytes) {
      const auto pair = columns[f].cast<py::tuple>();
      auto data = py::array::ensure(pair[0], py::array::c_style);
      auto offsets =
          py::array_t<uint64_t, py::array::c_style | py::array::forcecast>::ensure(pair[1]);
      if (!data || !offsets || static_cast<uint64_t>(offsets.size()) != n + 1)
        throw py::value_error("field '" + spec.name +
                              "': bytes columns are (data, offsets) with n+1 offsets");
      if (offsets.at(n) > static_cast<uint64_t>(data.nbytes()))
        throw py::value_error("field '" + spec.name + "': offsets point past the data");
      keep.push_back(data);
      keep.push_back(offsets);
      out.push_back({data.data(), offsets.data()});
    } else {
      auto arr = py::array::ensure(columns[f], py::array::c_style);
      if (!arr) throw py::type_error("field '" + spec.name + "': expected an array");
      if (static_cast<uint64_t>(arr.nbytes()) != n * spec.fixed_bytes())
        throw py::value_error("field '" + spec.name + "': " + std::to_string(arr.nbytes()) +
                              " bytes for " + std::to_string(n) + " samples of " +
                              std::to_string(spec.fixed_bytes()) + " bytes");
      keep.push_back(arr);
      out.push_back({arr.data()});
    }
  }
  return out;
}

/// {"image": "zstd:3", "label": None} -> WriterOptions::codecs (None: stored as is). Field names
/// are checked by the Writer against the schema.
std::map<std::string, CodecChoice> codecs_from_python(const py::object& compression) {
  std::map<std::string, CodecChoice> out;
  if (compression.is_none()) return out;
  if (!py::isinstance<py::dict>(compression))
    throw py::type_error(
        "compression must be a dict of field name -> codec ('lz4', 'zstd', "
        "'zstd:3') or None");
  for (const auto& [key, value] : compression.cast<py::dict>()) {
    if (!py::isinstance<py::str>(key)) throw py::type_error("compression: field names must be str");
    const std::string name = key.cast<std::string>();
    if (value.is_none()) continue;
    if (!py::isinstance<py::str>(value))
      throw py::type_error("compression of field '" + name +
                           "': expected a codec name such as 'lz4', 'zstd' or 'zstd:3', or None");
    try {
      out[name] = CodecChoice::parse(value.cast<std::string>());
    } catch (const InvalidArgument& e) {
      throw InvalidArgument("compression of field '" + name + "': " + e.what());
    }
  }
  return out;
}

py::object field_to_python(const FieldSpec& spec, const FieldView& v) {
  if (spec.kind == FieldKind::bytes)
    return py::bytes(reinterpret_cast<const char*>(v.data), v.size);
  std::vector<py::ssize_t> shape(spec.shape.begin(), spec.shape.end());
  py::array out(py::dtype(numpy_dtype(spec.dtype)), shape);
  std::memcpy(out.mutable_data(), v.data, v.size);
  return out;
}

}  // namespace

void bind_format(py::module_& m) {
  py::class_<Writer>(m, "Writer", "Streaming, atomic writer (see ferry.write / ferry.write_from)")
      .def(py::init([](const std::string& path, const py::list& schema, uint64_t page_size,
                       uint32_t alignment, const py::object& compression) {
             WriterOptions o;
             o.page_size = page_size;
             o.alignment = alignment;
             o.codecs = codecs_from_python(compression);
             return std::make_unique<Writer>(path, schema_from_python(schema), o);
           }),
           py::arg("path"), py::arg("schema"), py::arg("page_size") = kDefaultPageSize,
           py::arg("alignment") = kDefaultAlignment, py::arg("compression") = py::none())
      .def(
          "append_batch",
          [](Writer& w, const py::list& columns, uint64_t n) {
            std::vector<py::array> keep;
            const auto cols = columns_from_python(w.schema(), columns, n, keep);
            py::gil_scoped_release nogil;
            w.append_batch(cols, n);
          },
          py::arg("columns"), py::arg("n"))
      .def("close",
           [](Writer& w) {
             py::gil_scoped_release nogil;
             w.close();
           })
      .def("abort", &Writer::abort)
      .def_property_readonly("num_samples", &Writer::num_samples);

  py::class_<Reader, std::shared_ptr<Reader>>(m, "Reader",
                                              "Random access to a validated .ferry file")
      .def(py::init([](const std::string& path, const std::string& backend) {
             py::gil_scoped_release nogil;
             return Reader::open(path, SourceOptions{parse_backend(backend)});
           }),
           py::arg("path"), py::arg("backend") = "auto")
      .def_property_readonly("num_samples", &Reader::num_samples)
      .def_property_readonly("path", &Reader::path)
      .def_property_readonly("schema",
                             [](const Reader& r) { return schema_to_python(r.schema().fields); })
      .def_property_readonly("page_size", [](const Reader& r) { return r.layout().page_size(); })
      .def_property_readonly("num_pages", [](const Reader& r) { return r.layout().num_pages(); })
      .def_property_readonly("file_size", [](const Reader& r) { return r.layout().file_size(); })
      .def_property_readonly("format_version", [](const Reader& r) { return r.layout().version(); })
      .def_property_readonly(
          "metadata", [](const Reader& r) { return r.layout().metadata(); },
          "The file's user metadata (JSON text; '' if none)")
      .def_property_readonly(
          "codecs",
          [](const Reader& r) {
            py::dict out;
            for (size_t f = 0; f < r.schema().fields.size(); ++f)
              out[py::str(r.schema().fields[f].name)] =
                  py::str(std::string(codec_by_id(r.layout().field_codec(f)).name()));
            return out;
          },
          "Each field's codec: 'none', 'lz4' or 'zstd'")
      .def(
          "sample",
          [](const Reader& r, uint64_t id) {
            std::vector<uint8_t> scratch;
            const auto views = r.sample(id, scratch);
            py::dict out;
            for (size_t f = 0; f < views.size(); ++f)
              out[py::str(r.schema().fields[f].name)] =
                  field_to_python(r.schema().fields[f], views[f]);
            return out;
          },
          py::arg("index"), "One sample as a dict of numpy arrays (copies) and bytes")
      .def("verify", [](const Reader& r) {
        py::gil_scoped_release nogil;
        return r.verify().errors;
      });

  m.def(
      "import_idx",
      [](const std::string& images, const std::string& labels, const std::string& out,
         uint64_t page_size, const py::object& compression) {
        WriterOptions o;
        o.page_size = page_size;
        o.codecs = codecs_from_python(compression);
        py::gil_scoped_release nogil;
        return import_idx(images, labels, out, o);
      },
      py::arg("images"), py::arg("labels"), py::arg("out"), py::arg("page_size") = kDefaultPageSize,
      py::arg("compression") = py::none(),
      "Converts IDX files (MNIST family, gzip or raw) into a .ferry file with fields image and "
      "label");

  m.def(
      "epoch_order",
      [](const std::string& path, const std::string& order, uint64_t seed, uint64_t epoch,
         uint32_t window_pages) {
        auto r = Reader::open(path);
        const auto o = epoch_order(OrderOptions{parse_order(order), seed, window_pages}, epoch,
                                   r->layout().sample_pages());
        return py::array_t<uint64_t>(static_cast<py::ssize_t>(o.size()), o.data());
      },
      py::arg("path"), py::arg("order") = "quasi_random", py::arg("seed") = 0, py::arg("epoch") = 0,
      py::arg("window_pages") = 4, "The order of an epoch over a file's samples (before sharding)");
}

}  // namespace ferry::python
