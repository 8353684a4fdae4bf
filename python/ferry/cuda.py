"""device='cuda': batches as torch CUDA tensors, copied by ferry's GPU stage (docs/gpu.md).

ferry.Loader(path, batch_size, device="cuda" | "cuda:N") uses this module. Each batch is a dict
of field name -> torch tensor in device memory (bytes fields: a (data uint8, offsets int64) pair),
copied from pinned host buffers on ferry's own copy stream while your previous step runs.

The stream rule: a batch is ordered on torch's CURRENT stream of the loader's device at the time
it is yielded (that stream waits for the copy on the GPU; Python never blocks for it). Use the
tensors on that stream, or make your other stream wait on it first. The device buffer returns to
ferry's ring when the last tensor of the batch is freed: an event recorded on that same stream
then orders the next copy into the buffer after all your work on it, so freeing tensors early
(e.g. `del batch` right after the step is enqueued) is always safe and needs no synchronize.
"""

from ferry import _ferry


def available():
    """True when ferry was built with the CUDA stage (says nothing about GPUs being present)."""
    return bool(getattr(_ferry, "built_with_cuda", False))


def check_output(output):
    if output != "torch":
        raise ValueError(f"device='cuda' yields torch CUDA tensors: use output='torch', not {output!r}")


def _from_dlpack(capsule):
    import torch.utils.dlpack

    return torch.utils.dlpack.from_dlpack(capsule)


def to_tensors(batch):
    """A DeviceBatch -> dict of torch tensors viewing its device buffer (zero-copy)."""
    out = {}
    for name, value in batch.capsules().items():
        if isinstance(value, tuple):
            out[name] = (_from_dlpack(value[0]), _from_dlpack(value[1]))
        else:
            out[name] = _from_dlpack(value)
    return out


def next_batch(engine, timeout):
    """The DeviceLoader engine's next batch, ordered on torch's current stream of the engine's
    device, as tensors; None at the end of the epoch."""
    import torch

    index = engine.device  # "cuda" resolved when the loader was made
    stream = torch.cuda.current_stream(torch.device("cuda", index)).cuda_stream
    batch = engine.next(-1.0 if timeout is None else float(timeout), stream)
    if batch is None:
        return None
    return to_tensors(batch)
