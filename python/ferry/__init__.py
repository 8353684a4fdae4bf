"""ferry: batches for your training step, faster than it consumes them.

See README.md and docs/python.md.
"""
from ferry._ferry import (  # noqa: F401
    CapacityError,
    Error,
    FormatError,
    SampleError,
    ShutdownError,
)

__version__ = "0.1.0"
