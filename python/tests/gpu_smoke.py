"""Minimal ferry GPU-stage steps, one per process, for scripts/gpu-check to bisect a crash.

Usage: python3 python/tests/gpu_smoke.py MODE FOLDER, MODE one of
  cpu          ferry.Loader on the CPU (output='numpy'; torch never imported)
  device       _ferry.DeviceLoader constructed and iterated, torch never imported
  torch-device the same after `import torch` and CUDA initialised by torch
  tensors      ferry.Loader(device='cuda') yielding torch tensors
Prints "ok MODE" on success.
"""
import os
import sys

import numpy as np

MODE, FOLDER = sys.argv[1], sys.argv[2]
if MODE in ("torch-device", "tensors"):
    import torch

    torch.zeros(1, device="cuda")  # CUDA initialised by torch first

import ferry  # noqa: E402
from ferry import _ferry  # noqa: E402

path = os.path.join(FOLDER, f"smoke-{MODE}.ferry")
ferry.write(path, {"x": np.arange(1000, dtype=np.int64), "y": np.ones((1000, 3), dtype=np.uint8)})
print(f"{MODE}: file written", flush=True)
args = dict(path=path, batch_size=64, order="random", seed=0, drop_last=False, num_threads=2, prefetch=0,
            memory_budget=0, on_error="raise", rank=0, world_size=1, remainder="pad", backend="auto", fields=[],
            window_pages=4, ordered=True, resume_json="", device="cuda")
if MODE == "cpu":
    n = sum(len(b["x"]) for b in ferry.Loader(path, batch_size=64, output="numpy"))
elif MODE in ("device", "torch-device"):
    engine = _ferry.DeviceLoader(**args)
    print(f"{MODE}: DeviceLoader constructed", flush=True)
    n = 0
    while (b := engine.next(-1.0, 0)) is not None:
        n += b.size
        caps = b.capsules()
        del b, caps
    engine.close()
else:
    n = sum(int(b["x"].shape[0]) for b in ferry.Loader(path, batch_size=64, device="cuda"))
assert n == 1000, n
print(f"ok {MODE}", flush=True)
