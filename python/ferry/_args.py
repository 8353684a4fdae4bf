"""The argument table of ferry.Loader: every number is range-checked here, at the boundary, so a
bad value is a ValueError naming the argument, the value and the accepted range (never a cast
error, a bad_alloc or a silent wrap-around further down)."""
import math
import os

import numpy as np

_U64 = 2**64 - 1
_I63 = 2**63 - 1

# name -> (minimum, maximum, why the bound): None for an optional argument is checked by the caller.
INT_RANGES = {
    "batch_size": (1, 2**31 - 1, "samples per batch"),
    "seed": (0, _U64, "any 64-bit unsigned value"),
    "num_threads": (1, 1024, "worker threads"),
    "prefetch": (1, 65536, "batches in flight (memory_budget bounds the pool instead)"),
    "memory_budget": (1, _I63, "bytes"),
    "rank": (0, 2**31 - 1, "0 .. world_size-1"),
    "world_size": (1, 2**31 - 1, "processes"),
    "window_pages": (1, 2**31 - 1, "pages in the shuffle window"),
    "epoch": (0, _I63, "epoch number"),
}
BOOLS = ("drop_last", "ordered", "shuffle", "pin_memory")


def check_int(name, value, optional=False):
    """value as a Python int, or None (optional and None)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    lo, hi, what = INT_RANGES[name]
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} is out of range: it must be in [{lo}, {hi}] ({what})")
    return value


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_timeout(timeout):
    """Seconds as a float for the engine: None and inf wait forever (-1.0); negative or NaN is a
    ValueError."""
    if timeout is None:
        return -1.0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)):
        raise TypeError(f"timeout must be a number of seconds or None, got {type(timeout).__name__}")
    timeout = float(timeout)
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, inf or None (wait forever), got {timeout}")
    return -1.0 if math.isinf(timeout) else timeout


def check_path(path):
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if "\0" in path:
        raise ValueError(f"path contains a NUL byte: {path!r}")
    return path


def check_fields(fields):
    if fields is None:
        return []
    if isinstance(fields, str) or not all(isinstance(f, str) for f in fields):
        raise TypeError("fields must be a list of field names")
    fields = list(fields)
    duplicates = sorted({f for f in fields if fields.count(f) > 1})
    if duplicates:
        raise ValueError(f"fields names {', '.join(duplicates)} more than once: name each field once")
    return fields
