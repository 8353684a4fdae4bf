"""ferry.Loader: a drop-in replacement for torch.utils.data.DataLoader over a .ferry file."""
import json
import os
import threading

import numpy as np

from ferry import _args, _ferry, _porting
from ferry import cuda as _cuda
from ferry._distributed import default_rank_world

_OUTPUTS = ("torch", "numpy", "tuple")
_ABANDONED_IN_CHILD = []  # engines inherited through fork: see Loader.close


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

    def __init__(self, path, batch_size, order=None, seed=None, drop_last=False,
                 num_threads=None, prefetch=None, memory_budget=None, on_error="raise", rank=None,
                 world_size=None, output="torch", backend="auto", fields=None, window_pages=4,
                 ordered=True, remainder="pad", timeout=None, device="cpu", pipeline=None,
                 transforms=None, shuffle=None, num_workers=None, pin_memory=False,
                 headers=None, cache_dir=None, cache_bytes=None, remote_timeout=None, retries=None,
                 max_in_flight=None, verify_tls=None, ca_file=None, _faults=None,
                 **dataloader_kwargs):
        # DataLoader's keywords: shuffle -> order, num_workers -> threads, pin_memory accepted
        # (batches are already in reusable host buffers); the rest say what to use (_porting.py).
        _porting.map_dataloader_kwargs(dataloader_kwargs)
        _args.check_bool("pin_memory", pin_memory)
        if shuffle is not None:
            shuffle = _args.check_bool("shuffle", shuffle)
            if order is not None and order != _porting.shuffle_order(shuffle):
                raise ValueError(f"shuffle={shuffle} contradicts order={order!r}: give one of them")
            order = _porting.shuffle_order(shuffle)
        if num_workers is not None and num_threads is None:
            num_threads = num_workers if num_workers != 0 else None  # 0: DataLoader's main process
        batch_size = _args.check_int("batch_size", batch_size)
        seed = None if seed is None else _args.check_int("seed", seed)
        num_threads = _args.check_int("num_threads", num_threads, optional=True)
        prefetch = _args.check_int("prefetch", prefetch, optional=True)
        memory_budget = _args.check_int("memory_budget", memory_budget, optional=True)
        window_pages = _args.check_int("window_pages", window_pages)
        rank = _args.check_int("rank", rank, optional=True)
        world_size = _args.check_int("world_size", world_size, optional=True)
        drop_last = _args.check_bool("drop_last", drop_last)
        ordered = _args.check_bool("ordered", ordered)
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        fields = _args.check_fields(fields)
        if output == "tuple" and not fields:
            raise ValueError("output='tuple' needs fields=(...): the tuple holds them in that order")
        if transforms is not None:  # {"image": [ferry.transforms...]} (docs/transforms.md)
            if pipeline is not None:
                raise ValueError("give either transforms or pipeline, not both")
            from ferry.transforms import to_pipeline
            pipeline = to_pipeline(transforms)
        self.path = _args.check_path(path)
        self.output = output
        self.timeout = timeout
        self.device = str(device)
        if self.device.startswith("cuda"):  # the GPU stage yields torch CUDA tensors (ferry/cuda.py)
            _cuda.check_output("torch" if output == "tuple" else output)
        rank, world_size = default_rank_world(rank, world_size)
        if rank >= world_size:
            raise ValueError(f"rank={rank} is out of range: it must be in [0, {world_size - 1}] "
                             f"(world_size={world_size})")
        if seed is None:
            # One process: torch.initial_seed(), so torch.manual_seed controls the order (as with
            # DataLoader). Several ranks must agree on the order: 0, as DistributedSampler does.
            seed = _porting.default_seed() if world_size == 1 else 0
        self._pid = os.getpid()
        self._lock = threading.Lock()  # one next() at a time: each caller gets a distinct batch
        self._generation = 0  # bumped when an epoch starts; an iterator ends with its epoch
        self._ended = -1  # the last generation whose end was seen
        self._mid_epoch = False  # a batch of the current epoch was delivered
        self._active = 0  # live iterators (concurrent ones share the epoch)
        self._resumed = False  # load_state_dict: the next iter() continues mid-epoch
        self._closed = False
        self._dataset = None
        self._args = dict(
            path=self.path, batch_size=batch_size, order=str(order or "quasi_random"), seed=seed,
            drop_last=drop_last, num_threads=int(num_threads or 0), prefetch=int(prefetch or 0),
            memory_budget=int(memory_budget or 0), on_error=str(on_error), rank=rank, world_size=world_size,
            remainder=str(remainder), backend=str(backend), fields=fields,
            window_pages=window_pages, ordered=ordered, device=self.device,
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
        if output in ("torch", "tuple"):
            import torch  # noqa: F401  (fail early with a clear ImportError)
        # Per-field converters, built once: _convert runs for every batch.
        self._converters = ({f["name"]: _converter(f) for f in self._engine.fields}
                            if output != "numpy" else None)
        self._tuple_fields = tuple(fields) if output == "tuple" else None

    def preview(self, n=16, path=None, seed=0, field="image"):
        """Contact sheet (PIL image; also written to `path` as PNG) of n samples of `field`
        after this loader's pipeline, normalization undone for display (ferry/preview.py)."""
        from ferry.preview import preview
        return preview(self.path, json.loads(self._args["pipeline"] or "[]"), path, n=n, seed=seed,
                       field=field)

    def _make_engine(self, resume_json):
        if self.device.startswith("cuda"):
            make = getattr(_ferry, "DeviceLoader", None)
            if make is None:
                raise ValueError(f"device={self.device!r}: ferry was built without CUDA")
            return make(resume_json=resume_json, **self._args)
        return _ferry.Loader(resume_json=resume_json, **self._args)

    # -- iteration ---------------------------------------------------------------------------
    def __iter__(self):
        """A new epoch from its first batch, as with DataLoader: after a completed loop the engine
        is already at the next epoch; after a loop left early (break) the current epoch is
        abandoned and epoch+1 starts. Only load_state_dict() makes the next iter() continue
        mid-epoch. Iterators alive at the same time (threads) share one epoch: each next() gets
        a distinct batch and every one of them ends when the epoch ends."""
        self._check_usable()
        with self._lock:
            if self._active == 0:
                if self._mid_epoch and not self._resumed:
                    self._engine.set_epoch(self._engine.epoch + 1)
                    self._mid_epoch = False
                if not self._mid_epoch:
                    self._generation += 1
                self._resumed = False
            generation = self._generation
            self._active += 1
        try:
            while True:
                batch = self._next(generation)
                if batch is None:
                    return
                yield batch
        finally:
            with self._lock:
                self._active -= 1

    def _next(self, generation):
        self._check_usable()
        try:
            with self._lock:
                if self._ended >= generation:
                    return None
                if self.device.startswith("cuda"):  # the GPU stage (ferry/cuda.py)
                    batch = _cuda.next_batch(self._engine, self.timeout)
                    if batch is None:
                        self._epoch_ended(generation)
                    else:
                        self._mid_epoch = True
                    return batch
                batch = self._engine.next(self._engine_timeout)
                if batch is None:
                    self._epoch_ended(generation)
                    return None
                self._mid_epoch = True
        except KeyboardInterrupt:
            self.close()
            raise
        return self._convert(batch)

    @property
    def timeout(self):
        """Seconds next() waits for a batch: None or inf wait forever (TimeoutError after it)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value):
        self._engine_timeout = _args.check_timeout(value)
        self._timeout = value

    def _epoch_ended(self, generation):
        self._ended = generation
        self._mid_epoch = False
        self._generation = generation + 1

    def _check_usable(self):
        if self._pid != os.getpid():
            raise _ferry.Error(f"this ferry.Loader was created in another process (pid {self._pid}); "
                               "create it after fork (e.g. in the worker) or use threads")
        if self._closed:
            raise _ferry.ShutdownError("loader closed")

    def _convert(self, batch):
        out = batch.arrays()
        if self._converters is not None:
            out = {name: self._converters[name](value) for name, value in out.items()}
        if self._tuple_fields is not None:
            return tuple(out[name] for name in self._tuple_fields)
        return out

    def __len__(self):
        return self._engine.batches_per_epoch

    # -- epochs and resumption ---------------------------------------------------------------
    def set_epoch(self, epoch):
        """The next iter() starts epoch `epoch` from its first batch."""
        epoch = _args.check_int("epoch", epoch)
        self._check_usable()
        with self._lock:
            self._engine.set_epoch(epoch)
            self._mid_epoch = False
            self._resumed = False

    @property
    def epoch(self):
        return self._engine.epoch

    def state_dict(self):
        """Where the loader is: load_state_dict() of this resumes with exactly the batches an
        uninterrupted run would have yielded next."""
        self._check_usable()
        return json.loads(self._engine.state_json())

    def load_state_dict(self, state):
        """Resumes at `state`: this rank's state_dict(), or a list of every rank's (an elastic
        resume on a world of another size: ferry.distributed, docs/distributed.md). The next
        iter() continues mid-epoch there. A state from other data or other options is refused
        naming what differs; on a closed loader, ShutdownError."""
        elastic = isinstance(state, (list, tuple)) and all(isinstance(s, dict) for s in state)
        if not isinstance(state, dict) and not elastic:
            raise TypeError("state must be the dict state_dict() returned, or a list of every rank's")
        self._check_usable()
        new = self._make_engine(resume_json=json.dumps(list(state) if elastic else state))
        with self._lock:
            old, self._engine = self._engine, new
            self._mid_epoch = False
            self._resumed = True
        old.close()

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

    @property
    def dataset(self):
        """The file's samples (len, indexing), as DataLoader scripts expect of loader.dataset."""
        if self._dataset is None:
            self._dataset = _porting.Dataset(self.path)
        return self._dataset

    # -- lifetime ----------------------------------------------------------------------------
    def close(self):
        """Stops the worker threads. Batches already yielded stay valid."""
        engine = getattr(self, "_engine", None)
        if engine is None:
            return
        self._closed = True
        if getattr(self, "_pid", None) != os.getpid():
            # A forked child: the engine's threads live in the parent only; closing here would
            # wait for threads that do not exist. Keep it (never freed in this process).
            _ABANDONED_IN_CHILD.append(engine)
            self._engine = None
            return
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
