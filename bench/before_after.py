#!/usr/bin/python3
"""Before/after: this tree against an older commit built beside it, in one run.

Runs the same measurements from both trees, interleaved (old, new, new, old, ...) so that a
change in machine load hits both columns alike, and prints the median of each with the ratio:

  * `ferry bench` (the CLI's async loop, no step) on Fashion-MNIST and on 150 KB samples;
  * `bench/compare_torch.py`'s ferry and ferry-pread configurations (Python iteration,
    samples/s of the best epoch), same data sets.

Build the old commit first, e.g.

    git worktree add /tmp/ferry-old 3f362ee
    (cd /tmp/ferry-old && cmake --preset release && cmake --build --preset release -j2)
    /usr/bin/python3 bench/before_after.py --old /tmp/ferry-old [--rounds 3] [--quick]

Both trees read files written by the old tree's writer (format version 1, which the new
tree still reads), so the bytes on disk are the same for both columns.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

NEW = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(root):
    return os.path.join(root, "build", "release", "tools", "ferry")


def ensure_data(old, quick):
    """compare_torch.py writes its data files under ROOT/data; let the old tree write them and
    share them with the new tree (a symlink), so both columns read the same bytes."""
    for name in ("fmnist", "large"):
        code = (f"import sys; sys.path.insert(0, {os.path.join(old, 'bench')!r}); "
                f"import compare_torch as c; print(c.ferry_file({name!r}, {quick}))")
        path = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                              cwd=old).stdout.strip().splitlines()[-1]
        mine = os.path.join(NEW, "data", os.path.basename(path))
        os.makedirs(os.path.dirname(mine), exist_ok=True)
        if os.path.realpath(mine) != os.path.realpath(path):
            if os.path.lexists(mine):
                os.remove(mine)
            os.symlink(path, mine)
        yield name, path


def bench_cli(root, path):
    out = subprocess.run([cli(root), "bench", path, "--threads", "2", "--batch-size", "256", "--order", "random",
                          "--epochs", "3", "--json", "--no-baseline"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["loader"]["samples_per_second"]


def bench_python(root, kind, name, quick):
    out = subprocess.run([sys.executable, os.path.join(root, "bench", "compare_torch.py"), "--child", kind, "--only",
                          name, "--epochs", "4"] + (["--quick"] if quick else []),
                         check=True, capture_output=True, text=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])["rate"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True, help="root of the old tree, built with the release preset")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    old = os.path.abspath(a.old)
    for root in (old, NEW):
        if not os.path.exists(cli(root)):
            raise SystemExit(f"{cli(root)} is missing: build {root} with the release preset first")
    rev = lambda root: subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                      text=True).stdout.strip()
    load = os.getloadavg()[0]
    print(f"before_after — old {rev(old)} vs new {rev(NEW)}; {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}, load {load:.2f} at start; {a.rounds} rounds, medians")
    rows = {}
    for name, path in ensure_data(old, a.quick):
        cases = [(f"ferry bench, {name}", lambda root: bench_cli(root, path))]
        for kind in ("ferry", "ferry-pread"):
            cases.append((f"compare_torch {kind}, {name}",
                          lambda root, kind=kind: bench_python(root, kind, name, a.quick)))
        for label, measure in cases:
            got = {old: [], NEW: []}
            for r in range(a.rounds):
                for root in ((old, NEW) if r % 2 == 0 else (NEW, old)):
                    got[root].append(measure(root))
            rows[label] = (statistics.median(got[old]), statistics.median(got[NEW]))
            print(f"  {label:<36} old {rows[label][0]:>12,.0f}  new {rows[label][1]:>12,.0f}  "
                  f"new/old {rows[label][1] / rows[label][0]:.3f}", flush=True)
    worst = min(n / o for o, n in rows.values())
    print(f"\n{'met   ' if worst >= 0.97 else 'MISSED'} every figure within 3% of before or better: "
          f"worst new/old {worst:.3f}; load {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
