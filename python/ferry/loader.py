"""ferry.Loader: a drop-in replacement for torch.utils.data.DataLoader over a .ferry file."""
import json
import os

import numpy as np

from ferry import _ferry
from ferry import cuda as _cuda
from ferry._distributed import default_rank_world

_OUTPUTS = ("torch", "numpy")


class Loader:
    """Batches from a .ferry file, read and collated by C++ threads ahead of your step.

    pipeline: per-field op chains run by the engine, e.g.
    [{"field": "image", "ops": [{"op": "cast", "dtype": "float32"},
                                {"op": "normalize", "mean": [0.286], "std": [0.353], "scale": 1/255}]}]
    (docs/ops.md lists the ops). Batches hold each chain's output.

    Iterating yields dicts of field name -> torch tensor (output='torch') or numpy array
    (output='numpy'), shaped [batch, ...]. Variable-length (bytes) fields come as a
    (data, offsets) pair: sample i is data[offsets[i]:offsets[i+1]].

    Tensors and arrays are zero-copy views of the engine's pooled buffers. A buffer is reused
    only after every tensor/array viewing it is gone, so holding a batch is always safe; holding
    more batches than memory_budget allows makes the next iteration raise ferry.CapacityError.

    One `for` loop walks the rest of the current epoch; the following loop starts the next epoch
    (or call set_epoch(e) first, as with DistributedSampler). len(loader) is batches per epoch.
    """

    def __init__(self, path, batch_size, order="quasi_random", seed=0, drop_last=False,
                 num_threads=None, prefetch=None, memory_budget=None, on_error="raise", rank=None,
                 world_size=None, output="torch", backend="auto", fields=None, window_pages=4,
                 ordered=True, remainder="pad", timeout=None, device="cpu", pipeline=None,
                 headers=None, cache_dir=None, cache_bytes=None, remote_timeout=None, retries=None,
                 max_in_flight=None, verify_tls=None, ca_file=None, _faults=None):
        _check_int("batch_size", batch_size, minimum=1)
        _check_int("seed", seed, minimum=0)
        for name, value in (("num_threads", num_threads), ("prefetch", prefetch), ("memory_budget", memory_budget)):
            if value is not None:
                _check_int(name, value, minimum=1)
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        if fields is not None and (isinstance(fields, str) or not all(isinstance(f, str) for f in fields)):
            raise TypeError("fields must be a list of field names")
        self.path = os.fspath(path)
        self.output = output
        self.timeout = timeout
        self.device = str(device)
        if self.device.startswith("cuda"):  # the GPU stage yields torch CUDA tensors (ferry/cuda.py)
            _cuda.check_output(output)
        rank, world_size = default_rank_world(rank, world_size)
        self._args = dict(
            path=self.path, batch_size=int(batch_size), order=str(order), seed=int(seed),
            drop_last=bool(drop_last), num_threads=int(num_threads or 0), prefetch=int(prefetch or 0),
            memory_budget=int(memory_budget or 0), on_error=str(on_error), rank=rank, world_size=world_size,
            remainder=str(remainder), backend=str(backend), fields=list(fields or []),
            window_pages=int(window_pages), ordered=bool(ordered), device=self.device,
            pipeline=_pipeline_json(pipeline))
        # http(s):// paths (docs/remote.md): only the options given, the rest keep their defaults.
        remote = dict(headers=None if headers is None else [(str(k), str(v)) for k, v in dict(headers).items()],
                      cache_dir=None if cache_dir is None else os.fspath(cache_dir), cache_bytes=cache_bytes,
                      remote_timeout=remote_timeout, retries=retries, max_in_flight=max_in_flight,
                      verify_tls=verify_tls, ca_file=ca_file)
        self._args.update({k: v for k, v in remote.items() if v is not None})
        if _faults:  # test seam: {"samples": [ids whose reads fail], "delay_us": per-read delay}
            self._args.update(fault_samples=list(_faults.get("samples", [])),
                              fault_delay_us=int(_faults.get("delay_us", 0)))
        self._engine = self._make_engine(resume_json="")
        if output == "torch":
            import torch  # noqa: F401  (fail early with a clear ImportError)
        # Per-field converters, built once: _convert runs for every batch.
        self._converters = {f["name"]: _converter(f) for f in self._engine.fields} if output == "torch" else None

    def _make_engine(self, resume_json):
        if self.device.startswith("cuda"):
            make = getattr(_ferry, "DeviceLoader", None)
            if make is None:
                raise ValueError(f"device={self.device!r}: ferry was built without CUDA")
            return make(resume_json=resume_json, **self._args)
        return _ferry.Loader(resume_json=resume_json, **self._args)

    # -- iteration ---------------------------------------------------------------------------
    def __iter__(self):
        while True:
            batch = self._next()
            if batch is None:
                return
            yield batch

    def _next(self):
        try:
            if self.device.startswith("cuda"):  # the GPU stage (ferry/cuda.py)
                return _cuda.next_batch(self._engine, self.timeout)
            batch = self._engine.next(-1.0 if self.timeout is None else float(self.timeout))
        except KeyboardInterrupt:
            self.close()
            raise
        if batch is None:
            return None
        return self._convert(batch)

    def _convert(self, batch):
        out = batch.arrays()
        if self._converters is None:
            return out
        return {name: self._converters[name](value) for name, value in out.items()}

    def __len__(self):
        return self._engine.batches_per_epoch

    # -- epochs and resumption ---------------------------------------------------------------
    def set_epoch(self, epoch):
        _check_int("epoch", epoch, minimum=0)
        self._engine.set_epoch(int(epoch))

    @property
    def epoch(self):
        return self._engine.epoch

    def state_dict(self):
        """Where the loader is: load_state_dict() of this resumes with exactly the batches an
        uninterrupted run would have yielded next."""
        return json.loads(self._engine.state_json())

    def load_state_dict(self, state):
        if not isinstance(state, dict):
            raise TypeError("state must be the dict state_dict() returned")
        new = self._make_engine(resume_json=json.dumps(state))
        self._engine.close()
        self._engine = new

    def epoch_order(self):
        """Sample ids of the current epoch for this rank, in delivery order."""
        return self._engine.epoch_order()

    # -- observability -----------------------------------------------------------------------
    def stats(self):
        """The engine's metrics as a dict (stage busy times, consumer wait, queue, latency...)."""
        return json.loads(self._engine.metrics_json())

    def report(self):
        """A human-readable table of the metrics, ending with the bottleneck line."""
        return self._engine.report()

    def reset_stats(self):
        self._engine.reset_metrics()

    @property
    def fields(self):
        return self._engine.fields

    # -- lifetime ----------------------------------------------------------------------------
    def close(self):
        """Stops the worker threads. Batches already yielded stay valid."""
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


def _converter(field):
    """numpy view -> torch tensor for one field (zero-copy where torch has the dtype)."""
    import torch

    if field["kind"] == "bytes":
        return lambda pair: (torch.from_numpy(pair[0]), torch.from_numpy(pair[1].view(np.int64)))
    if field["dtype"] == "bf16":
        return lambda a: torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return _tensor


def _tensor(array):
    """Zero-copy tensor, except for unsigned types older torch lacks (uint16/32/64): those are
    widened to the next signed type (a copy; uint64 is reinterpreted as int64)."""
    import torch

    try:
        return torch.from_numpy(array)
    except TypeError:
        widened = {np.dtype("uint16"): np.int32, np.dtype("uint32"): np.int64}
        if array.dtype in widened:
            return torch.from_numpy(array.astype(widened[array.dtype]))
        return torch.from_numpy(array.view(np.int64))


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _pipeline_json(pipeline):
    """The per-field op chains as the engine's JSON text: a list of {"field", "ops"} dicts (or one
    dict), or the same already as JSON. None: every field as stored."""
    if pipeline is None:
        return ""
    if isinstance(pipeline, str):
        return pipeline
    if isinstance(pipeline, dict):
        pipeline = [pipeline]
    if not isinstance(pipeline, (list, tuple)):
        raise TypeError(f"pipeline must be a list of {{'field': ..., 'ops': [...]}} dicts or JSON text, "
                        f"got {type(pipeline).__name__}")
    return json.dumps(list(pipeline))
