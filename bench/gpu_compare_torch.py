"""ferry device='cuda' against torch's DataLoader on the same data, in the same run.

Baseline: torch.utils.data.DataLoader(num_workers=8, pin_memory=True, persistent_workers=True)
over a memory-mapped .npy of uint8 images, then .to('cuda', non_blocking=True) — the usual recipe.
ferry: ferry.Loader(..., num_threads=8, device='cuda'): batches arrive in device memory, copied
on ferry's copy stream while the previous step runs.

Models (bf16 autocast, batch 256, 3x64x64 uint8 images normalised on the GPU):
  resnet18 — torchvision ResNet-18: model-bound; target: ferry's GPU idle <= 2% of wall time;
  linear   — one Linear layer: loader-bound; target: ferry >= 3x DataLoader's samples/s.
The step is captured once in a CUDA graph and replayed (see Trainer; --eager to measure eager
PyTorch instead). Per run: samples/s, GPU idle % (1 - sum of CUDA-event step times / wall time;
a step is the batch's device-to-device copy into the graph's inputs plus the replay, so waiting
for a batch counts as idle), host CPU seconds (this process and its DataLoader workers) over
the timed steps.

Usage: PYTHONPATH=python python3 bench/gpu_compare_torch.py [--quick] [--eager] [--dir DIR] [--json FILE]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import psutil
import torch
import torch.nn.functional as F

import ferry

BATCH = 256
SHAPE = (3, 64, 64)


class NpyImages(torch.utils.data.Dataset):
    """Samples of a memory-mapped .npy (opened lazily, once per worker process)."""

    def __init__(self, images_path, labels):
        self.images_path, self.labels, self.images = images_path, labels, None

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if self.images is None:
            self.images = np.load(self.images_path, mmap_mode="r")
        return torch.from_numpy(np.array(self.images[i])), int(self.labels[i])


def make_data(folder, n):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n,) + SHAPE, dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.int64)
    npy = os.path.join(folder, "images.npy")
    np.save(npy, images)
    path = os.path.join(folder, "images.ferry")
    ferry.write(path, {"image": images, "label": labels})
    return npy, labels, path


def make_model(name):
    if name == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(weights=None, num_classes=10)
        model = model.to("cuda", memory_format=torch.channels_last)
    else:
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(SHAPE)), 10)).cuda()
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


class Trainer:
    """One training step on a batch already in device memory. By default the step (normalise,
    forward, backward, SGD) is captured once in a CUDA graph and replayed, as performance-minded
    training loops do (torch.cuda.graphs): eager PyTorch spends ~2 ms of CPU per ResNet-18 step
    launching kernels, longer than the GPU needs at 64x64, and would measure the launch overhead,
    not the loaders. The batch is copied into the graph's static inputs (device to device)."""

    def __init__(self, model_name, use_graph):
        self.model, self.opt = make_model(model_name)
        self.x = torch.randint(0, 256, (BATCH,) + SHAPE, dtype=torch.uint8, device="cuda")
        self.y = torch.randint(0, 10, (BATCH,), device="cuda")
        self.graph = None
        if not use_graph:
            return
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.opt.zero_grad(set_to_none=True)  # backward allocates .grad from the graph's pool
            with torch.cuda.graph(graph):
                self._step(zero_grad=False)
            self.graph = graph
        except Exception as e:  # noqa: BLE001 - report and measure eager steps instead
            print(f"  CUDA graph capture failed ({e}); eager steps", flush=True)

    def _step(self, zero_grad=True):
        x = self.x.float().div_(255.0).sub_(0.5).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            loss = F.cross_entropy(self.model(x), self.y)
        if zero_grad:
            self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def __call__(self, images_u8, labels):
        self.x.copy_(images_u8, non_blocking=True)
        self.y.copy_(labels, non_blocking=True)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()


def torch_batches(npy, labels):
    loader = torch.utils.data.DataLoader(NpyImages(npy, labels), batch_size=BATCH, shuffle=True, num_workers=8,
                                         pin_memory=True, persistent_workers=True, drop_last=True)
    while True:
        for images, y in loader:
            yield images.to("cuda", non_blocking=True), y.to("cuda", non_blocking=True)


def ferry_batches(path):
    loader = ferry.Loader(path, batch_size=BATCH, order="random", num_threads=8, drop_last=True, device="cuda")
    while True:
        for b in loader:
            yield b["image"], b["label"]


def cpu_seconds(proc):
    """CPU time of this process and its live children (the DataLoader's workers)."""
    total = 0.0
    for p in [proc] + proc.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run(model_name, loader_name, batches, warmup, steps, use_graph):
    train = Trainer(model_name, use_graph)
    proc = psutil.Process()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
    for _ in range(warmup):
        images, y = next(batches)
        train(images, y)
    torch.cuda.synchronize()
    cpu0, t0 = cpu_seconds(proc), time.perf_counter()
    for k in range(steps):
        images, y = next(batches)
        events[k][0].record()
        train(images, y)
        events[k][1].record()
        del images, y  # ferry: the device buffer returns to the ring (ordered on this stream)
    torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, cpu_seconds(proc) - cpu0
    busy = sum(a.elapsed_time(b) for a, b in events) / 1e3
    return {"model": model_name, "loader": loader_name, "samples_per_s": steps * BATCH / wall,
            "gpu_idle": max(0.0, 1 - busy / wall), "cpu_s": cpu, "wall_s": wall, "steps": steps,
            "graph": train.graph is not None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--json")
    ap.add_argument("--eager", action="store_true", help="no CUDA graph: eager PyTorch steps")
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, {os.cpu_count()} host cores",
          flush=True)
    n = 20_000 if args.quick else 60_000
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        npy, labels, path = make_data(folder, n)
        results = []
        plan = [("resnet18", 20, 60 if args.quick else 200), ("linear", 20, 100 if args.quick else 600)]
        for loader_name in ("torch DataLoader", "ferry cuda"):  # baselines first: printed even if ferry fails
            for model_name, warmup, steps in plan:
                batches = torch_batches(npy, labels) if loader_name.startswith("torch") else ferry_batches(path)
                r = run(model_name, loader_name, batches, warmup, steps, not args.eager)
                batches.close()
                results.append(r)
                print(f"  {model_name:9s} {loader_name:17s} {r['samples_per_s']:10.0f} samples/s  "
                      f"GPU idle {100 * r['gpu_idle']:5.1f}%  host CPU {r['cpu_s']:6.2f} s over {r['wall_s']:.2f} s",
                      flush=True)
    by = {(r["model"], r["loader"]): r for r in results}
    speedup = by[("linear", "ferry cuda")]["samples_per_s"] / by[("linear", "torch DataLoader")]["samples_per_s"]
    idle = by[("resnet18", "ferry cuda")]["gpu_idle"]
    steps_kind = "CUDA-graph steps" if all(r["graph"] for r in results) else "eager steps"
    print(f"\n== ferry device='cuda' vs torch DataLoader(num_workers=8, pin_memory=True) "
          f"({torch.cuda.get_device_name()}, batch {BATCH}, 3x64x64 u8, bf16, {steps_kind}) ==")
    print(f"{'model':9s} {'loader':17s} {'samples/s':>10s} {'GPU idle':>9s} {'host CPU s':>11s} {'CPU s/10k':>10s}")
    for r in results:
        per10k = r["cpu_s"] / (r["steps"] * BATCH) * 1e4
        print(f"{r['model']:9s} {r['loader']:17s} {r['samples_per_s']:10.0f} {100 * r['gpu_idle']:8.1f}% "
              f"{r['cpu_s']:11.2f} {per10k:10.3f}")
    ok_speed, ok_idle = speedup >= 3, idle <= 0.02
    print(f"{'MET   ' if ok_speed else 'MISSED'}  linear (loader-bound): ferry {speedup:.2f}x DataLoader samples/s "
          f"(target >= 3x)")
    print(f"{'MET   ' if ok_idle else 'MISSED'}  resnet18 (model-bound): ferry GPU idle {100 * idle:.2f}% "
          f"(target <= 2%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "speedup_linear": speedup, "ferry_idle_resnet18": idle}, f, indent=1)
    return 0 if ok_speed and ok_idle else 1


if __name__ == "__main__":
    sys.exit(main())
