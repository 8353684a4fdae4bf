"""What a torch.utils.data.DataLoader user brings along: its keywords, mapped or answered with
what to use instead, and `loader.dataset` (docs/porting.md)."""

import importlib.util
import os
import sys

# DataLoader keywords ferry does not take, and what to use instead.
UNSUPPORTED = {
    "collate_fn": "batches are collated by the engine; use pipeline= ops or transform the batch "
                  "dict in your loop",
    "sampler": "use order= ('sequential', 'random', 'quasi_random') and seed=",
    "batch_sampler": "use batch_size=, order= and drop_last=",
    "transform": "use pipeline= (per-field ops, docs/ops.md)",
    "target_transform": "use pipeline= on the label field (docs/ops.md)",
    "worker_init_fn": "ferry workers are C++ threads that run no Python; set up state before "
                      "creating the Loader",
    "persistent_workers": "ferry's threads always persist across epochs",
    "prefetch_factor": "use prefetch= (batches in flight) or memory_budget=",
    "generator": "use seed= (default: torch.initial_seed())",
    "multiprocessing_context": "ferry uses threads, not processes",
    "pin_memory_device": "use device='cuda' for batches in device memory",
}


def map_dataloader_kwargs(kwargs):
    """ferry.Loader keywords from DataLoader-only ones (shuffle, num_workers, pin_memory); other
    unknown keywords are a TypeError that says what to use instead."""
    out = {}
    for key, value in kwargs.items():
        if key in UNSUPPORTED:
            raise TypeError(f"ferry.Loader does not take DataLoader's {key}=: {UNSUPPORTED[key]}")
        if key == "timeout" or key in out:
            continue
        raise TypeError(f"ferry.Loader got an unexpected keyword argument '{key}'")
    return out


def shuffle_order(shuffle):
    return "random" if shuffle else "sequential"


def default_seed():
    """Like DataLoader: torch.manual_seed controls the order (torch.initial_seed()), 0 without torch.

    torch is not imported for this (1-2 s, paid by every numpy-only Loader): if the script has not
    imported it, it cannot have called torch.manual_seed, and torch.initial_seed() would be the
    fresh random seed a new torch process draws; so draw one the same way."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.initial_seed()) % 2**64
    if importlib.util.find_spec("torch") is None:
        return 0
    return int.from_bytes(os.urandom(8), "little")


class Dataset:
    """loader.dataset: the file's samples, as scripts written for DataLoader expect
    (len(loader.dataset), loader.dataset[i] -> dict of field -> numpy array / bytes)."""

    def __init__(self, path):
        from ferry import _ferry

        self._reader = _ferry.Reader(path, "auto")

    def __len__(self):
        return self._reader.num_samples

    def __getitem__(self, index):
        n = self._reader.num_samples
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"dataset index must be an int, got {type(index).__name__}")
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"sample {index} out of range (the file has {n} samples)")
        return self._reader.sample(index)

    @property
    def reader(self):
        return self._reader
