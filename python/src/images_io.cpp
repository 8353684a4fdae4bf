// ferry.write_imagefolder / ferry.write_tar: the image importers (GIL released while importing).
#include <pybind11/stl.h>

#include "bindings.h"
#include "ferry/error.h"
#include "ferry/importers.h"

namespace ferry::python {

namespace {

ImageImportOptions image_options(const py::object& max_side, int quality,
                                 const std::string& on_error, const py::object& num_threads) {
  if (on_error != "raise" && on_error != "skip")
    throw InvalidArgument("on_error '" + on_error + "': must be 'raise' or 'skip'");
  ImageImportOptions o;
  o.max_side = max_side.is_none() ? 0 : max_side.cast<uint32_t>();
  o.quality = quality;
  o.skip_errors = on_error == "skip";
  o.num_threads = num_threads.is_none() ? 0 : num_threads.cast<unsigned>();
  return o;
}

py::dict result_to_python(const ImageImportResult& r) {
  py::dict d;
  d["written"] = r.written;
  d["skipped"] = r.skipped;
  d["classes"] = r.classes;
  return d;
}

}  // namespace

void bind_images_io(py::module_& m) {
  m.def(
      "_write_imagefolder",
      [](const std::string& dir, const std::string& out, const py::object& max_side, int quality,
         const std::string& on_error, const py::object& num_threads, uint64_t page_size) {
        const auto o = image_options(max_side, quality, on_error, num_threads);
        WriterOptions wo;
        wo.page_size = page_size;
        ImageImportResult r;
        {
          py::gil_scoped_release nogil;
          r = import_imagefolder(dir, out, o, wo);
        }
        return result_to_python(r);
      },
      py::arg("dir"), py::arg("out"), py::arg("max_side"), py::arg("quality"), py::arg("on_error"),
      py::arg("num_threads"), py::arg("page_size") = kDefaultPageSize);
  m.def(
      "_write_tar",
      [](const std::vector<std::string>& shards, const std::string& out, const py::object& max_side,
         int quality, const std::string& on_error, const py::object& num_threads,
         uint64_t page_size) {
        const auto o = image_options(max_side, quality, on_error, num_threads);
        WriterOptions wo;
        wo.page_size = page_size;
        ImageImportResult r;
        {
          py::gil_scoped_release nogil;
          r = import_tar(shards, out, o, wo);
        }
        return result_to_python(r);
      },
      py::arg("shards"), py::arg("out"), py::arg("max_side"), py::arg("quality"),
      py::arg("on_error"), py::arg("num_threads"), py::arg("page_size") = kDefaultPageSize);
}

}  // namespace ferry::python
