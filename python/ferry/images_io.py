"""Importing images: ImageFolder trees and WebDataset tar shards into .ferry files."""
import json
import os

from ferry import _ferry


def write_imagefolder(dir, out, max_side=None, quality=90, on_error="raise", num_threads=None):
    """Writes DIR/CLASS/**/IMAGE into `out` with fields image (encoded bytes) and label (int64).

    Classes and order follow torchvision.datasets.ImageFolder (sorted class folders; labels equal
    its targets). max_side re-encodes larger JPEGs once at `quality`. on_error="raise" fails
    naming the unreadable files; "skip" leaves them out. Returns {"written", "skipped", "classes"}.
    The file is written atomically; ferry.classes(out) reads the class list back.
    """
    return _ferry._write_imagefolder(os.fspath(dir), os.fspath(out), max_side, int(quality),
                                     str(on_error), num_threads)


def write_tar(shards, out, max_side=None, quality=90, on_error="raise", num_threads=None):
    """Writes WebDataset shards (KEY.jpg|jpeg|png + KEY.cls) into `out` (fields image, label)."""
    if isinstance(shards, (str, os.PathLike)):
        shards = [shards]
    return _ferry._write_tar([os.fspath(s) for s in shards], os.fspath(out), max_side, int(quality),
                             str(on_error), num_threads)


def metadata(path):
    """The file's user metadata as a dict ({} when it has none)."""
    text = _ferry.Reader(os.fspath(path)).metadata
    return json.loads(text) if text else {}


def classes(path):
    """The class names of a file written by write_imagefolder (label i is classes[i])."""
    meta = metadata(path)
    if "classes" not in meta:
        raise ValueError(f"{os.fspath(path)!r} has no class list (not written by write_imagefolder)")
    return list(meta["classes"])
