#!/usr/bin/python3
"""Op chains in the engine vs numpy doing the same arithmetic, side by side in one run.

Fashion-MNIST (70,000 × 28×28 u8), batch 256, random order. ferry: Loader(pipeline=cast to
float32 + normalize(mean, std)) with 2 threads, numpy output. Ceiling: numpy on the whole
in-memory array, per batch: fancy-index gather of the batch, astype(float32), subtract, divide
(what a loader that held the data in RAM would do). Best of 3 epochs each; ratio = ferry /
ceiling.

    /usr/bin/python3 bench/ops_bench.py [--threads 2] [--epochs 3]
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import compare_torch  # noqa: E402  (fmnist_arrays, the machine line)

import ferry  # noqa: E402

MEAN, STD, BATCH = 0.2860 * 255, 0.3530 * 255, 256


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{os.cpu_count()} cores ({model}), {platform.platform()}"


def numpy_ceiling(x, epochs):
    rng = np.random.default_rng(0)
    best = 0.0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        t0 = time.perf_counter()
        for i in range(0, len(x), BATCH):
            b = x[order[i:i + BATCH]].astype(np.float32)
            b -= MEAN
            b /= STD
        best = max(best, len(x) / (time.perf_counter() - t0))
    return best


def ferry_rate(path, threads, epochs):
    chain = [{"field": "image", "ops": [{"op": "cast", "dtype": "float32"},
                                         {"op": "normalize", "mean": [MEAN], "std": [STD]}]}]
    loader = ferry.Loader(path, batch_size=BATCH, order="random", num_threads=threads, pipeline=chain,
                          output="numpy", fields=["image", "label"])
    for _ in loader:  # warm-up epoch
        pass
    best = 0.0
    for _ in range(epochs):
        t0, n = time.perf_counter(), 0
        for b in loader:
            n += len(b["label"])
        best = max(best, n / (time.perf_counter() - t0))
    return best, loader.report()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    x, y = compare_torch.fmnist_arrays()
    os.makedirs(os.path.join(ROOT, "data"), exist_ok=True)
    path = os.path.join(ROOT, "data", "ops-fmnist.ferry")
    if not os.path.exists(path):
        ferry.write(path, {"image": x, "label": y})
    print(f"ops_bench — {machine()}")
    ceiling = numpy_ceiling(x, a.epochs)
    rate, report = ferry_rate(path, a.threads, a.epochs)
    print(f"  numpy in-memory gather + cast + normalize: {ceiling / 1e6:.2f} M samples/s")
    print(f"  ferry cast + normalize, {a.threads} threads:        {rate / 1e6:.2f} M samples/s")
    print(f"  ratio {rate / ceiling:.2f}× the ceiling: {'met' if rate >= 0.9 * ceiling else 'MISSED'} (goal ≥ 0.9×)")
    print(report)


if __name__ == "__main__":
    main()
