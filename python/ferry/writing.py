"""Writing .ferry files from numpy arrays or any map-style dataset."""
import os
import sys
import time

import numpy as np

from ferry import _ferry

# numpy dtype -> ferry dtype name. bfloat16 comes from torch tensors (see _to_numpy).
_DTYPES = {
    np.dtype("uint8"): "u8", np.dtype("int8"): "i8", np.dtype("uint16"): "u16", np.dtype("int16"): "i16",
    np.dtype("uint32"): "u32", np.dtype("int32"): "i32", np.dtype("uint64"): "u64", np.dtype("int64"): "i64",
    np.dtype("float16"): "f16", np.dtype("float32"): "f32", np.dtype("float64"): "f64",
}
_BOOL_AS = np.dtype("uint8")


def _ferry_dtype(name, dtype):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return "u8"
    try:
        return _DTYPES[dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype]
    except KeyError:
        raise TypeError(f"field {name!r}: dtype {dtype} is not supported "
                        f"(use one of {sorted(str(d) for d in _DTYPES)}, bool, or bytes)") from None


def _to_numpy(name, value):
    """Array-like (numpy, torch, scalar) -> (numpy array, ferry dtype name)."""
    try:
        import torch

        if isinstance(value, torch.Tensor):
            t = value.detach().cpu()
            if t.dtype == torch.bfloat16:
                return np.ascontiguousarray(t.view(torch.int16).numpy()).view(np.uint16), "bf16"
            value = t.numpy()
    except ImportError:
        pass
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise TypeError(f"field {name!r}: expected a numeric array or bytes, got {arr.dtype}")
    kind = _ferry_dtype(name, arr.dtype)
    if arr.dtype == np.bool_:
        arr = arr.astype(_BOOL_AS)
    # reshape: ascontiguousarray makes a 0-d array 1-d; a scalar must stay a scalar (a 0-d value
    # to write() is refused, a per-sample scalar to write_from() is a shape () field: labels [B]).
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).reshape(arr.shape), kind


def _is_bytes_field(value):
    return isinstance(value, (bytes, bytearray, memoryview))


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total, label, enabled=None):
        self.total, self.label = total, label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done):
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.1 and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {done}/{self.total} ({rate:,.0f}/s)")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _check_compression(compression):
    if compression is None:
        return None
    if not isinstance(compression, dict):
        raise TypeError("compression must be a dict of field name -> 'lz4', 'zstd', 'zstd:LEVEL' "
                        f"or None, got {type(compression).__name__}")
    return compression


def write(path, fields, page_size=2 << 20, alignment=64, compression=None):
    """Writes a .ferry file from columns.

    fields: dict of name -> numpy array (or torch tensor) with one row per sample, or a sequence
    of bytes objects for a variable-length field. All columns must have the same length.
    compression: optional dict of field name -> codec ("lz4", "zstd", "zstd:3", "lz4:9" for
    LZ4-HC; None stores the field as is). Each sample's value is compressed on its own; the
    loader decodes it. A file with a compressed field is format version 2.
    The file appears under `path` only when complete (written to a temporary file, then renamed).
    Returns the number of samples written.
    """
    if not isinstance(fields, dict) or not fields:
        raise TypeError("fields must be a non-empty dict of name -> array or list of bytes")
    schema, columns, n = [], [], None
    for name, value in fields.items():
        if not isinstance(name, str):
            raise TypeError(f"field names must be str, got {name!r}")
        if isinstance(value, (list, tuple)) and (len(value) == 0 or _is_bytes_field(value[0])):
            lengths = np.fromiter((len(v) for v in value), dtype=np.uint64, count=len(value))
            offsets = np.zeros(len(value) + 1, dtype=np.uint64)
            np.cumsum(lengths, out=offsets[1:])
            data = np.frombuffer(b"".join(bytes(v) for v in value), dtype=np.uint8)
            schema.append({"name": name, "kind": "bytes", "dtype": "u8", "shape": ()})
            columns.append((data, offsets))
            count = len(value)
        else:
            arr, kind = _to_numpy(name, value)
            if arr.ndim == 0:
                raise ValueError(f"field {name!r}: needs one row per sample, got a 0-d value")
            schema.append({"name": name, "kind": "ndarray", "dtype": kind, "shape": tuple(arr.shape[1:])})
            columns.append(arr)
            count = arr.shape[0]
        if n is not None and count != n:
            raise ValueError(f"field {name!r} has {count} samples, earlier fields have {n}")
        n = count
    w = _ferry.Writer(os.fspath(path), schema, page_size, alignment, _check_compression(compression))
    try:
        w.append_batch(columns, n)
        w.close()
    except BaseException:
        w.abort()
        raise
    return n


def _sample_dict(sample):
    if isinstance(sample, dict):
        return sample
    if isinstance(sample, (tuple, list)):
        return {f"f{i}": v for i, v in enumerate(sample)}
    return {"f0": sample}


def write_from(dataset, path, page_size=2 << 20, alignment=64, chunk=1024, progress=None,
               compression=None):
    """Writes every sample of a map-style dataset (len() and [i] returning a dict, or a tuple,
    of arrays / tensors / scalars / bytes) to `path`. Tuples become fields f0, f1, ...
    compression: as for write() (field names as in the file: f0, f1, ... for tuples).
    The schema comes from sample 0; later samples must match it. A progress bar goes to stderr
    when it is a terminal (progress=True/False forces it). Atomic like write().
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("dataset is empty: nothing to write")
    first = _sample_dict(dataset[0])
    schema = []
    for name, value in first.items():
        if _is_bytes_field(value):
            schema.append({"name": str(name), "kind": "bytes", "dtype": "u8", "shape": ()})
        else:
            arr, kind = _to_numpy(name, value)
            schema.append({"name": str(name), "kind": "ndarray", "dtype": kind, "shape": tuple(arr.shape)})
    bar = _Progress(n, f"writing {os.path.basename(os.fspath(path))}", progress)
    w = _ferry.Writer(os.fspath(path), schema, page_size, alignment, _check_compression(compression))
    try:
        for start in range(0, n, chunk):
            rows = [first if i == 0 else _sample_dict(dataset[i]) for i in range(start, min(n, start + chunk))]
            w.append_batch([_column(spec, rows, start) for spec in schema], len(rows))
            bar.update(start + len(rows))
        w.close()
    except BaseException:
        w.abort()
        raise
    return n


def _column(spec, rows, start):
    name = spec["name"]
    try:
        values = [r[name] if name in r else r[int(name[1:])] for r in rows]
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"sample near index {start} has no field {name!r}") from None
    if spec["kind"] == "bytes":
        lengths = np.fromiter((len(v) for v in values), dtype=np.uint64, count=len(values))
        offsets = np.zeros(len(values) + 1, dtype=np.uint64)
        np.cumsum(lengths, out=offsets[1:])
        return (np.frombuffer(b"".join(bytes(v) for v in values), dtype=np.uint8), offsets)
    arrays = []
    for i, v in enumerate(values):
        arr, kind = _to_numpy(name, v)
        if kind != spec["dtype"] or tuple(arr.shape) != tuple(spec["shape"]):
            raise ValueError(f"sample {start + i} field {name!r}: {kind}{tuple(arr.shape)} does not match "
                             f"sample 0's {spec['dtype']}{tuple(spec['shape'])}")
        arrays.append(arr)
    return np.ascontiguousarray(np.stack(arrays))
