// ferry.TileLoader: the keyed asynchronous loader (include/ferry/tile_loader.h) for Python
// callables and arbitrary Python objects.
//
// GIL discipline: every method releases the GIL before it enters the C++ loader, and C++ takes
// it only to call Python (the loader function, size_fn, next_keys, process's fn and progress)
// and to drop Python references. The C++ loader never waits for the GIL while holding its own
// lock, so the two locks cannot deadlock; and a wait (get, process, shutdown) never blocks the
// workers that need the GIL to run the loader function.
//
// Cache pinning: the C++ cache sees copies of its TileValue, not Python references to the
// object. A value Python still uses may be evicted; Python keeps the object alive regardless
// (eviction only drops the cache's reference), so this costs budget accuracy, never safety.
#include "ferry/tile_loader.h"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "bindings.h"

namespace ferry::python {
namespace {

/// Waits (GIL released) for a load. Its Python error is one error_already_set shared by every
/// waiter and every result() call; restoring it twice aborts the interpreter, so each raise gets
/// its own copy of the exception (same type, args and traceback).
template <class Wait>
TileValue wait_with_fresh_error(Wait&& wait) {
  try {
    py::gil_scoped_release nogil;
    return wait();
  } catch (const py::error_already_set& e) {
    py::object fresh = e.value();
    try {
      fresh = py::module_::import("copy").attr("copy")(e.value());
      if (e.trace()) PyException_SetTraceback(fresh.ptr(), e.trace().ptr());
    } catch (const py::error_already_set&) {  // not copyable: raise the original object
      fresh = e.value();
    }
    PyErr_SetObject(e.type().ptr(), fresh.ptr());
    throw py::error_already_set();
  }
}

bool python_alive() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsInitialized() && !Py_IsFinalizing();
#else
  return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

/// A Python object owned from C++. The destructor may run on a worker thread or in a thread that
/// released the GIL, so it takes the GIL itself (a no-op if held). During interpreter shutdown
/// the reference is leaked instead: taking the GIL then would crash.
class PyRef {
 public:
  explicit PyRef(py::object obj) : obj_(std::move(obj)) {}
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  ~PyRef() {
    if (!obj_) return;
    if (!python_alive()) {
      obj_.release();
      return;
    }
    py::gil_scoped_acquire gil;
    obj_ = py::object();
  }
  /// Call with the GIL held.
  const py::object& get() const { return obj_; }

 private:
  py::object obj_;
};

using PyRefPtr = std::shared_ptr<const PyRef>;

PyRefPtr hold(py::object obj) {
  if (obj.is_none()) return nullptr;
  return std::make_shared<const PyRef>(std::move(obj));
}

/// The size the cache budget counts: size_fn(value), else value.nbytes (numpy, torch via
/// untyped storage is not needed: tensors have nbytes too), else sys.getsizeof(value).
/// Called with the GIL held.
uint64_t size_of(const py::object& value, const PyRefPtr& size_fn) {
  py::object size;
  if (size_fn)
    size = size_fn->get()(value);
  else if (py::hasattr(value, "nbytes"))
    size = value.attr("nbytes");
  else
    size = py::module_::import("sys").attr("getsizeof")(value);
  const long long n = size.cast<long long>();
  if (n < 0) throw InvalidArgument("TileLoader: the size of a value must be >= 0");
  return static_cast<uint64_t>(n);
}

/// The object inside a value loaded by a Python loader function. Call with the GIL held.
py::object object_of(const TileValue& value) { return value.as<PyRef>().get(); }

std::optional<std::chrono::nanoseconds> to_timeout(const py::object& seconds) {
  if (seconds.is_none()) return std::nullopt;
  const double s = seconds.cast<double>();
  if (std::isnan(s)) throw InvalidArgument("TileLoader: timeout must be a number of seconds");
  return std::chrono::nanoseconds(static_cast<int64_t>(std::max(0.0, std::min(s, 3e9)) * 1e9));
}

std::vector<std::string> to_keys(const py::iterable& keys) {
  std::vector<std::string> out;
  for (const py::handle k : keys) out.push_back(k.cast<std::string>());
  return out;
}

py::dict stats_to_dict(const TileLoaderStats& s) {
  py::dict d;
  d["num_workers"] = s.num_workers;
  d["cache_budget_bytes"] = s.cache_budget_bytes;
  d["gets"] = s.gets;
  d["hits"] = s.hits;
  d["misses"] = s.misses;
  d["waits"] = s.waits;
  d["timeouts"] = s.timeouts;
  d["preloads"] = s.preloads;
  d["loads"] = s.loads;
  d["neighbour_loads"] = s.neighbour_loads;
  d["attempts"] = s.attempts;
  d["retries"] = s.retries;
  d["errors"] = s.errors;
  d["cancelled"] = s.cancelled;
  d["next_keys_errors"] = s.next_keys_errors;
  d["evictions"] = s.evictions;
  d["bytes_loaded"] = s.bytes_loaded;
  d["bytes_cached"] = s.bytes_cached;
  d["entries_cached"] = s.entries_cached;
  d["in_flight"] = s.in_flight;
  d["total_load_seconds"] = s.total_load_seconds;
  d["mean_load_seconds"] = s.mean_load_seconds;
  d["consumer_wait_seconds"] = s.consumer_wait_seconds;
  d["hit_rate"] = s.hit_rate;
  return d;
}

/// What preload() returns: a handle on the load, like concurrent.futures.Future's read side.
class PyTileFuture {
 public:
  explicit PyTileFuture(std::shared_future<TileValue> f) : future_(std::move(f)) {}

  bool done() const {
    py::gil_scoped_release nogil;
    return future_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }

  py::object result(const py::object& timeout) const {
    const auto limit = to_timeout(timeout);
    const TileValue value = wait_with_fresh_error([&] {
      if (limit && future_.wait_for(*limit) != std::future_status::ready)
        throw TimeoutError("TileFuture.result: not loaded within the timeout (the load goes on)");
      return future_.get();  // rethrows the load's error
    });
    return object_of(value);
  }

 private:
  std::shared_future<TileValue> future_;
};

class PyTileLoader;

/// Every live loader, so that an atexit hook can shut them down while Python still runs: a
/// worker still inside Python code once the interpreter finalizes would be ended by Python.
/// Guarded by live_mu(); never locked with the GIL held.
std::mutex& live_mu() {
  static std::mutex mu;
  return mu;
}
std::set<PyTileLoader*>& live_loaders() {
  static auto* loaders = new std::set<PyTileLoader*>;  // leaked: outlives static destructors
  return *loaders;
}

class PyTileLoader {
 public:
  PyTileLoader(py::object loader_fn, uint32_t num_workers, uint64_t cache_bytes,
               uint32_t prefetch_ahead, uint32_t max_retries, double backoff,
               const py::object& next_keys, const py::object& size_fn, double shutdown_timeout) {
    if (!PyCallable_Check(loader_fn.ptr()))
      throw InvalidArgument("TileLoader: loader_fn must be callable");
    if (!next_keys.is_none() && !PyCallable_Check(next_keys.ptr()))
      throw InvalidArgument("TileLoader: next_keys must be callable or None");
    if (!size_fn.is_none() && !PyCallable_Check(size_fn.ptr()))
      throw InvalidArgument("TileLoader: size_fn must be callable or None");
    if (!(backoff >= 0) || !(shutdown_timeout >= 0))
      throw InvalidArgument("TileLoader: backoff and shutdown_timeout must be >= 0 seconds");

    TileLoaderOptions o;
    o.num_workers = num_workers;
    o.cache_bytes = cache_bytes;
    o.prefetch_ahead = prefetch_ahead;
    o.max_retries = max_retries;
    o.backoff = std::chrono::milliseconds(static_cast<int64_t>(backoff * 1000));
    o.shutdown_timeout = std::chrono::milliseconds(static_cast<int64_t>(shutdown_timeout * 1000));
    if (PyRefPtr fn = hold(next_keys)) {
      o.next_keys = [fn](const std::string& key) {
        py::gil_scoped_acquire gil;
        return to_keys(fn->get()(key));
      };
    }
    PyRefPtr load = hold(std::move(loader_fn));
    PyRefPtr sizer = hold(size_fn);
    TileLoadFn fn = [load, sizer](const std::string& key) {
      py::gil_scoped_acquire gil;
      py::object value = load->get()(key);
      const uint64_t bytes = size_of(value, sizer);
      return TileValue::make(std::make_shared<const PyRef>(std::move(value)), bytes);
    };
    py::gil_scoped_release nogil;  // the workers start here
    loader_ = std::make_unique<TileLoader>(std::move(fn), std::move(o));
    std::lock_guard lk(live_mu());
    live_loaders().insert(this);
  }

  ~PyTileLoader() {
    // Shutdown waits for loads that need the GIL to finish.
    py::gil_scoped_release nogil;
    {
      std::lock_guard lk(live_mu());
      live_loaders().erase(this);
    }
    loader_.reset();
  }

  /// The atexit hook: shuts down every live loader (bounded by each one's shutdown_timeout).
  static void shutdown_all() {
    py::gil_scoped_release nogil;
    std::lock_guard lk(live_mu());  // held throughout: no loader is destroyed meanwhile
    for (PyTileLoader* l : live_loaders()) l->loader_->shutdown();
  }

  PyTileFuture preload(const std::string& key) {
    py::gil_scoped_release nogil;
    return PyTileFuture(loader_->preload(key));
  }

  py::object get(const std::string& key, const py::object& timeout) {
    const auto limit = to_timeout(timeout);
    const TileValue value = wait_with_fresh_error(
        [&] { return limit ? loader_->get(key, *limit) : loader_->get(key); });
    return object_of(value);
  }

  py::list process(const py::iterable& keys, const py::object& fn, const py::object& progress) {
    if (!PyCallable_Check(fn.ptr()))
      throw InvalidArgument("TileLoader.process: fn must be callable");
    const std::vector<std::string> key_list = to_keys(keys);
    ProcessOptions po;
    if (PyBool_Check(progress.ptr())) {
      po.progress_bar = progress.cast<bool>();
    } else if (!progress.is_none()) {
      if (!PyCallable_Check(progress.ptr()))
        throw InvalidArgument("TileLoader.process: progress must be a bool or a callable");
      po.on_progress = [&progress](std::size_t done, std::size_t total) {
        py::gil_scoped_acquire gil;
        progress(done, total);
      };
    }
    py::list results;
    {
      py::gil_scoped_release nogil;
      loader_->process_each(
          key_list,
          [&](std::size_t, const std::string& key, const TileValue& value) {
            py::gil_scoped_acquire gil;
            results.append(fn(key, object_of(value)));
          },
          po);
    }
    return results;
  }

  bool contains(const std::string& key) const {
    py::gil_scoped_release nogil;
    return loader_->contains(key);
  }

  uint64_t clear_cache() {
    py::gil_scoped_release nogil;
    return loader_->clear_cache();
  }

  py::dict stats() const {
    TileLoaderStats s;
    {
      py::gil_scoped_release nogil;
      s = loader_->stats();
    }
    return stats_to_dict(s);
  }

  std::string report() const {
    py::gil_scoped_release nogil;
    return loader_->report();
  }

  void reset_stats() {
    py::gil_scoped_release nogil;
    loader_->reset_stats();
  }

  void shutdown() {
    py::gil_scoped_release nogil;
    loader_->shutdown();
  }

  bool is_shut_down() const {
    py::gil_scoped_release nogil;
    return loader_->is_shut_down();
  }

 private:
  std::unique_ptr<TileLoader> loader_;
};

}  // namespace

void bind_tile_loader(py::module_& m) {
  py::class_<PyTileFuture>(m, "TileFuture",
                           "The load of one key, as returned by TileLoader.preload().")
      .def("done", &PyTileFuture::done, "True once the load finished (or failed).")
      .def("result", &PyTileFuture::result, py::arg("timeout") = py::none(),
           "The loaded object; raises the load's error, or TimeoutError after `timeout` seconds "
           "(the load goes on).");

  py::class_<PyTileLoader>(m, "TileLoader", R"doc(
Keyed asynchronous loader with an LRU cache (see docs/tile_loader.md).

loader_fn(key) -> object runs on `num_workers` threads (with the GIL, as any Python code).
The cache budget counts size_fn(obj) if given, else obj.nbytes, else sys.getsizeof(obj).
A failing load is retried `max_retries` times after `backoff`, 2*`backoff`, ... seconds; its
error is then raised by every get() of the key, and not cached. next_keys(key) -> [keys] names
keys to prefetch when workers and budget allow. Use it as a context manager, or call
shutdown(): queued loads are cancelled, running ones waited for up to `shutdown_timeout`.
)doc")
      .def(py::init<py::object, uint32_t, uint64_t, uint32_t, uint32_t, double, py::object,
                    py::object, double>(),
           py::arg("loader_fn"), py::arg("num_workers") = 4, py::arg("cache_bytes") = 1ull << 30,
           py::arg("prefetch_ahead") = 2, py::arg("max_retries") = 2, py::arg("backoff") = 0.01,
           py::arg("next_keys") = py::none(), py::arg("size_fn") = py::none(),
           py::arg("shutdown_timeout") = 5.0)
      .def("preload", &PyTileLoader::preload, py::arg("key"),
           "Starts loading `key` unless cached or loading; returns a TileFuture at once.")
      .def("get", &PyTileLoader::get, py::arg("key"), py::arg("timeout") = py::none(),
           "The object for `key`: cached, awaited, or loaded now. Raises TimeoutError after "
           "`timeout` seconds (the load goes on) and the load's own error if it failed.")
      .def("process", &PyTileLoader::process, py::arg("keys"), py::arg("fn"),
           py::arg("progress") = py::none(),
           "[fn(key, obj) for each key], in order, with prefetch_ahead keys loading ahead. "
           "progress: True for a bar on a terminal's stderr, or a callable(done, total).")
      .def("__contains__", &PyTileLoader::contains, py::arg("key"))
      .def("clear_cache", &PyTileLoader::clear_cache,
           "Drops cached entries not in use; returns the bytes released.")
      .def("stats", &PyTileLoader::stats, "The counters and times, as a dict.")
      .def("report", &PyTileLoader::report, "A short human summary.")
      .def("reset_stats", &PyTileLoader::reset_stats)
      .def("shutdown", &PyTileLoader::shutdown,
           "Cancels queued loads and waits (bounded) for running ones; later calls raise "
           "ShutdownError. Idempotent.")
      .def_property_readonly("is_shut_down", &PyTileLoader::is_shut_down)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyTileLoader& self, const py::args&) {
        self.shutdown();
        return false;
      });

  py::module_::import("atexit").attr("register")(
      py::cpp_function([] { PyTileLoader::shutdown_all(); }));
}

}  // namespace ferry::python
