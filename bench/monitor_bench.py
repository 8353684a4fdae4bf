"""Cost of a monitor thread polling loader.stats() every millisecond: epochs/s with and without
it, side by side in one run (goal: < 5% slower). Usage: PYTHONPATH=python python3 bench/monitor_bench.py"""
import os
import tempfile
import threading
import time

import numpy as np

import ferry


def epoch_seconds(path, poll):
    loader = ferry.Loader(path, batch_size=256, output="numpy", num_threads=1)
    stop = threading.Event()

    def monitor():
        while not stop.is_set():
            loader.stats()
            time.sleep(0.001)

    thread = threading.Thread(target=monitor) if poll else None
    if thread:
        thread.start()
    start = time.perf_counter()
    for _ in range(3):
        for _ in loader:
            pass
    elapsed = time.perf_counter() - start
    stop.set()
    if thread:
        thread.join()
    loader.close()
    return elapsed


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.ferry")
        ferry.write(path, {"image": np.zeros((60000, 28, 28), np.uint8), "label": np.zeros(60000, np.int64)})
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        base = min(epoch_seconds(path, False) for _ in range(3))
        polled = min(epoch_seconds(path, True) for _ in range(3))
        slowdown = (polled / base - 1) * 100
        print(f"3 epochs: {base:.3f} s without monitor, {polled:.3f} s with a 1 ms monitor: "
              f"{slowdown:+.1f}% ({'met' if slowdown < 5 else 'MISSED'}: goal < 5%)")


if __name__ == "__main__":
    main()
