"""ferry: batches for your training step, faster than it consumes them.

    import ferry
    ferry.write("train.ferry", {"image": images, "label": labels})
    for batch in ferry.Loader("train.ferry", batch_size=256):
        step(batch["image"], batch["label"])

See README.md and docs/python.md.
"""
from ferry._ferry import (  # noqa: F401
    CapacityError,
    Error,
    FormatError,
    Reader,
    SampleError,
    ShutdownError,
    epoch_order,
    import_idx,
)
from ferry.loader import Loader  # noqa: F401
from ferry import _distributed as distributed  # noqa: F401  (gather_state, load_elastic)
from ferry.writing import write, write_from  # noqa: F401
from ferry._ferry import TileFuture, TileLoader  # noqa: F401

__version__ = "0.1.0"
from ferry.images_io import classes, metadata, write_imagefolder, write_tar  # noqa: F401,E402
from ferry import transforms  # noqa: F401,E402
