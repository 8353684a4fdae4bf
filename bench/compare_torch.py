#!/usr/bin/python3
"""ferry vs torch.utils.data.DataLoader vs a numpy in-memory ceiling, side by side in one run.

Same data, same batch size, random order for everyone. Each configuration runs in its own
subprocess so peak RSS and CPU seconds are its own. Reports samples/s (best of the timed
epochs), time to first batch, peak RSS (VmHWM of the main process; DataLoader workers are
separate processes, their CPU time is included in "CPU s" but their memory is not), CPU seconds.

    /usr/bin/python3 bench/compare_torch.py [--quick] [--only fmnist|large] [--json OUT]
"""
import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
DATA = os.path.join(ROOT, "data")
FMNIST = "/usr/share/datasets/fashion-mnist"
BATCH = 256


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fmnist_arrays():
    imgs = [read_idx(f"{FMNIST}/{p}-images-idx3-ubyte.gz") for p in ("train", "t10k")]
    labels = [read_idx(f"{FMNIST}/{p}-labels-idx1-ubyte.gz") for p in ("train", "t10k")]
    return np.concatenate(imgs), np.concatenate(labels).astype(np.int64)


def large_arrays(n):
    # 150 KB samples; content is irrelevant to the loaders but must not be all zeros.
    data = np.empty((n, 150 * 1024), dtype=np.uint8)
    data[:] = (np.arange(150 * 1024) % 251).astype(np.uint8)
    data[:, 0] = np.arange(n) % 256
    return data, np.arange(n, dtype=np.int64)


def dataset(name, quick):
    if name == "fmnist":
        return fmnist_arrays()
    return large_arrays(4000 if quick else 20000)


def ferry_file(name, quick):
    import ferry

    path = os.path.join(DATA, f"compare-{name}{'-quick' if quick else ''}.ferry")
    if not os.path.exists(path):
        os.makedirs(DATA, exist_ok=True)
        x, y = dataset(name, quick)
        ferry.write(path, {"x": x, "y": y})
    return path


# --- one configuration, run in a child process ----------------------------------------------
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class AnonPeak:
    """Peak anonymous RSS (memory the process owns: arrays, buffers), sampled while loading.
    Unlike VmHWM it leaves out file pages a mapping shares with the page cache."""

    def __init__(self):
        self.peak = 0.0
        self.sample()
        self.start = self.peak

    def sample(self):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) / 1024)


def child(kind, name, quick, epochs):
    import torch

    torch.set_num_threads(1)
    baseline = rss_mb()  # the interpreter + numpy + torch, which every configuration pays
    anon = AnonPeak()
    if kind.startswith("ferry"):
        import ferry

        path = ferry_file(name, quick)
        backend = "pread" if kind == "ferry-pread" else "auto"
        t0 = time.perf_counter()
        loader = ferry.Loader(path, batch_size=BATCH, order="random", num_threads=2, backend=backend)

        def epoch():
            n = 0
            for i, b in enumerate(loader):
                n += b["y"].shape[0]
                if i % 32 == 0:
                    anon.sample()
            return n
    elif kind.startswith("dataloader"):
        workers = int(kind.split("-")[1])
        x, y = dataset(name, quick)

        class Arrays(torch.utils.data.Dataset):
            def __len__(self):
                return len(x)

            def __getitem__(self, i):
                return torch.from_numpy(x[i]), int(y[i])

        t0 = time.perf_counter()
        loader = torch.utils.data.DataLoader(Arrays(), batch_size=BATCH, shuffle=True, num_workers=workers,
                                             pin_memory=False, persistent_workers=workers > 0)

        def epoch():
            n = 0
            for i, (bx, by) in enumerate(loader):
                n += by.shape[0]
                if i % 32 == 0:
                    anon.sample()
            return n
    else:  # numpy ceiling: gather random batches from RAM into a preallocated batch
        x, y = dataset(name, quick)
        out_x = np.empty((BATCH,) + x.shape[1:], dtype=x.dtype)
        out_y = np.empty(BATCH, dtype=y.dtype)
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()

        def epoch():
            perm = rng.permutation(len(x))
            n = 0
            for s in range(0, len(x), BATCH):
                idx = perm[s:s + BATCH]
                np.take(x, idx, axis=0, out=out_x[:len(idx)])
                np.take(y, idx, axis=0, out=out_y[:len(idx)])
                n += len(idx)
                if s % (32 * BATCH) == 0:
                    anon.sample()
            return n

    first = None
    rates = []
    cpu0 = time.process_time()
    for e in range(epochs):
        t = time.perf_counter()
        if e == 0 and kind != "numpy":
            it = iter(loader)
            b = next(it)
            first = time.perf_counter() - t0
            n = (b["y"] if kind.startswith("ferry") else b[1]).shape[0]
            for i, b in enumerate(it):
                n += (b["y"] if kind.startswith("ferry") else b[1]).shape[0]
                if i % 32 == 0:
                    anon.sample()
        else:
            n = epoch()
            if first is None:
                first = time.perf_counter() - t0
        rates.append(n / (time.perf_counter() - t))
    hwm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    if kind == "numpy":
        first = None  # the ceiling has no loader start-up to measure
    print(json.dumps({"rate": max(rates[1:] or rates), "first_ms": None if first is None else first * 1000,
                      "rss_mb": hwm, "rss_above_mb": hwm - baseline, "anon_mb": anon.peak, "anon_above_mb": anon.peak - anon.start,
                      "self_cpu": time.process_time() - cpu0}))


def run(kind, name, quick, epochs):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--only", name, "--epochs", str(epochs)]
                         + (["--quick"] if quick else []), capture_output=True, text=True, timeout=900)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{kind} on {name} failed:\n{out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["fmnist", "large"])
    ap.add_argument("--json")
    ap.add_argument("--child")
    ap.add_argument("--epochs", type=int, default=4)
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.only, a.quick, a.epochs)
    names = [a.only] if a.only else ["fmnist", "large"]
    for name in names:
        ferry_file(name, a.quick)  # write outside the timed runs
    print(f"compare_torch — {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"torch {__import__('torch').__version__}, batch {BATCH}, random order")
    results = {}
    for name in names:
        label = "Fashion-MNIST 70k × (784 B + label)" if name == "fmnist" else \
            f"synthetic {4000 if a.quick else 20000} × 150 KB"
        epochs = a.epochs if name == "fmnist" else max(2, a.epochs // 2)
        rows = {k: run(k, name, a.quick, epochs)
                for k in ("dataloader-0", "dataloader-2", "numpy", "ferry", "ferry-pread")}
        results[name] = rows
        print(f"\n{label}")
        print(f"  {'loader':<16}{'samples/s':>14}{'first batch':>13}{'peak RSS':>11}{'above base':>12}"
              f"{'peak anon':>11}{'anon above':>12}{'CPU s':>8}")
        for k, r in rows.items():
            first = "—" if r["first_ms"] is None else f"{r['first_ms']:.1f} ms"
            print(f"  {k:<16}{r['rate']:>14,.0f}{first:>13}{r['rss_mb']:>8.0f} MB{r['rss_above_mb']:>9.0f} MB"
                  f"{r['anon_mb']:>8.0f} MB{r['anon_above_mb']:>9.0f} MB{r['cpu_s']:>8.2f}")
        best_dl = max(rows["dataloader-0"]["rate"], rows["dataloader-2"]["rate"])
        f = rows["ferry"]
        dl_rss = min(rows["dataloader-0"]["rss_mb"], rows["dataloader-2"]["rss_mb"])
        if name == "fmnist":
            checks = [("ferry ≥ 15× DataLoader's best", f["rate"] >= 15 * best_dl, f"{f['rate'] / best_dl:.1f}×"),
                      ("ferry ≥ numpy in-memory ceiling", f["rate"] >= rows["numpy"]["rate"],
                       f"{f['rate'] / rows['numpy']['rate']:.2f}×")]
        else:
            checks = [("ferry ≥ 2× DataLoader's best", f["rate"] >= 2 * best_dl, f"{f['rate'] / best_dl:.1f}×")]
        fp = rows["ferry-pread"]
        dl_anon = min(rows["dataloader-0"]["anon_above_mb"], rows["dataloader-2"]["anon_above_mb"])
        checks += [("peak RSS ≤ half DataLoader's (default backend; with mmap, RSS counts the mapped file)",
                    f["rss_mb"] <= dl_rss / 2, f"{f['rss_mb']:.0f} vs {dl_rss:.0f} MB"),
                   ("peak RSS ≤ half DataLoader's (pread backend)", fp["rss_mb"] <= dl_rss / 2,
                    f"{fp['rss_mb']:.0f} vs {dl_rss:.0f} MB, at {fp['rate'] / f['rate']:.2f}× mmap's samples/s"),
                   ("memory the loader owns (anonymous RSS above the torch baseline) ≤ half DataLoader's",
                    f["anon_above_mb"] <= dl_anon / 2, f"{f['anon_above_mb']:.0f} vs {dl_anon:.0f} MB"),
                   ("first batch < 50 ms", f["first_ms"] < 50, f"{f['first_ms']:.1f} ms")]
        for what, ok, value in checks:
            print(f"  {'met   ' if ok else 'MISSED'} {what}: {value}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
