"""ferry.TileLoader: Python callables, arbitrary objects, the GIL, errors and shutdown."""
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import ferry


class Counter:
    """Loader calls per key, thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = {}

    def add(self, key):
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            return self.calls[key]

    def of(self, key):
        with self.lock:
            return self.calls.get(key, 0)


def eventually(pred, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.001)
    return pred()


def test_get_miss_then_hit_returns_the_same_object():
    counter = Counter()

    def load(key):
        counter.add(key)
        return {"key": key, "payload": [1, 2, 3]}

    with ferry.TileLoader(load, num_workers=2) as loader:
        a = loader.get("a")
        assert a == {"key": "a", "payload": [1, 2, 3]}
        assert loader.get("a") is a  # the cached object itself, not a copy
        assert "a" in loader and "b" not in loader
        s = loader.stats()
        assert (s["gets"], s["hits"], s["misses"], s["loads"]) == (2, 1, 1, 1)
        assert s["bytes_cached"] == sys.getsizeof(a)
        assert counter.of("a") == 1
        assert "hits 1 (50.0%)" in loader.report()


def test_sizes_from_nbytes_and_size_fn():
    with ferry.TileLoader(lambda k: np.zeros(1000, dtype=np.float64)) as loader:
        loader.get("x")
        assert loader.stats()["bytes_cached"] == 8000
    with ferry.TileLoader(lambda k: "tile " + k, size_fn=lambda obj: 123) as loader:
        loader.get("x")
        assert loader.stats()["bytes_cached"] == 123


def test_preload_dedups_and_returns_a_future():
    counter = Counter()
    release = threading.Event()

    def load(key):
        counter.add(key)
        release.wait(10)
        return key.upper()

    with ferry.TileLoader(load, num_workers=2) as loader:
        f1 = loader.preload("a")
        f2 = loader.preload("a")
        assert not f1.done()
        release.set()
        assert f1.result(timeout=10) == "A"
        assert f2.result() == "A"
        assert f2.done()
        assert loader.get("a") == "A"
        assert counter.of("a") == 1
        s = loader.stats()
        assert s["misses"] == 0 and s["preloads"] == 2 and s["loads"] == 1


def test_get_timeout_does_not_cancel_the_load():
    release = threading.Event()
    counter = Counter()

    def load(key):
        counter.add(key)
        release.wait(10)
        return key

    with ferry.TileLoader(load, num_workers=1) as loader:
        with pytest.raises(TimeoutError):
            loader.get("a", timeout=0.02)
        release.set()
        assert loader.get("a", timeout=10) == "a"
        assert counter.of("a") == 1
        assert loader.stats()["timeouts"] == 1


def test_retries_then_success():
    counter = Counter()

    def load(key):
        if counter.add(key) <= 2:
            raise OSError("flaky")
        return key

    with ferry.TileLoader(load, max_retries=2, backoff=0.001) as loader:
        assert loader.get("a") == "a"
        s = loader.stats()
        assert (s["attempts"], s["retries"], s["errors"]) == (3, 2, 0)


def test_exhausted_retries_raise_the_original_python_error_every_time():
    counter = Counter()

    class TileCorrupt(Exception):
        pass

    def load(key):
        counter.add(key)
        if key == "bad":
            raise TileCorrupt("tile " + key + " is corrupt")
        return key

    with ferry.TileLoader(load, max_retries=1, backoff=0.001) as loader:
        for _ in range(2):  # not cached: each get loads anew and fails the same way
            with pytest.raises(TileCorrupt, match="tile bad is corrupt"):
                loader.get("bad")
        assert counter.of("bad") == 4
        assert loader.get("good") == "good"  # other keys go on
        assert loader.stats()["errors"] == 2
        with pytest.raises(TileCorrupt):
            loader.preload("bad").result()


def test_lru_eviction_within_the_byte_budget():
    with ferry.TileLoader(lambda k: k, num_workers=1, cache_bytes=250,
                          size_fn=lambda obj: 100) as loader:
        loader.get("a")
        loader.get("b")
        loader.get("a")
        loader.get("c")  # b is the least recently used
        assert "a" in loader and "b" not in loader and "c" in loader
        s = loader.stats()
        assert s["evictions"] == 1 and s["bytes_cached"] == 200
        assert loader.clear_cache() == 200


def test_concurrent_get_and_preload_from_8_threads():
    counter = Counter()

    def load(key):
        counter.add(key)
        return ("value", key)

    errors = []
    with ferry.TileLoader(load, num_workers=4, cache_bytes=10 * 64,
                          size_fn=lambda obj: 64) as loader:

        def worker(t):
            try:
                for i in range(200):
                    key = str((t * 7 + i * 13) % 30)
                    loader.preload(str((t * 7 + i * 13 + 1) % 30))
                    if loader.get(key) != ("value", key):
                        errors.append(key)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        s = loader.stats()
        assert s["gets"] == 1600 and s["hits"] + s["misses"] == 1600


def test_process_in_order_with_progress():
    seen = []
    keys = [f"t{i}" for i in range(12)]
    with ferry.TileLoader(lambda k: k + "!", num_workers=2, prefetch_ahead=3) as loader:
        out = loader.process(keys, lambda key, obj: (key, obj),
                             progress=lambda done, total: seen.append((done, total)))
        assert out == [(k, k + "!") for k in keys]
        assert seen == [(i + 1, len(keys)) for i in range(len(keys))]
        assert loader.stats()["misses"] == 0
        # An error in fn propagates with its own type.
        with pytest.raises(ZeroDivisionError):
            loader.process(keys, lambda key, obj: 1 / 0)
        assert loader.process(keys[:2], lambda key, obj: obj, progress=True) == ["t0!", "t1!"]


def test_neighbour_prefetch():
    counter = Counter()

    def load(key):
        counter.add(key)
        return key

    with ferry.TileLoader(load, num_workers=2,
                          next_keys=lambda k: [k + "+1"]) as loader:
        loader.get("a")
        assert eventually(lambda: loader.stats()["neighbour_loads"] == 1)
        assert loader.get("a+1") == "a+1"
        assert loader.stats()["misses"] == 1
        assert counter.of("a+1+1") == 0  # neighbours do not chain


def test_shutdown_with_loads_in_flight_is_prompt_and_final():
    release = threading.Event()
    started = Counter()

    def load(key):
        started.add("any")
        release.wait(10)
        return key

    loader = ferry.TileLoader(load, num_workers=2, shutdown_timeout=30)
    futures = [loader.preload(f"k{i}") for i in range(8)]
    assert eventually(lambda: started.of("any") == 2)  # k0, k1 running; k2..k7 queued
    threading.Timer(0.05, release.set).start()
    t0 = time.monotonic()
    loader.shutdown()
    assert time.monotonic() - t0 < 5
    assert loader.is_shut_down
    assert futures[0].result() == "k0"
    with pytest.raises(ferry.ShutdownError):
        futures[-1].result()
    with pytest.raises(ferry.ShutdownError, match="shut down"):
        loader.get("k0")
    loader.shutdown()  # idempotent
    assert loader.stats()["cancelled"] == 6


def test_stuck_load_is_abandoned_after_shutdown_timeout():
    release = threading.Event()
    started = threading.Event()

    def load(key):
        started.set()
        return release.wait(10)

    loader = ferry.TileLoader(load, num_workers=1, shutdown_timeout=0.05)
    f = loader.preload("stuck")
    assert started.wait(10)
    t0 = time.monotonic()
    loader.shutdown()
    assert time.monotonic() - t0 < 5
    with pytest.raises(ferry.ShutdownError):
        f.result()
    release.set()  # the detached worker finishes and lets go


def test_bad_arguments():
    with pytest.raises(ValueError):
        ferry.TileLoader(42)
    with pytest.raises(ValueError):
        ferry.TileLoader(lambda k: k, num_workers=0)
    with ferry.TileLoader(lambda k: k) as loader:
        with pytest.raises(TypeError):
            loader.get(3)


def test_interpreter_exit_with_loads_in_flight(tmp_path):
    script = textwrap.dedent("""
        import threading, time
        import ferry
        stuck = threading.Event()
        slow = ferry.TileLoader(lambda k: time.sleep(0.2) or k, num_workers=2)
        slow.preload("a"); slow.preload("b"); slow.preload("c")
        hung = ferry.TileLoader(lambda k: stuck.wait(60), num_workers=1, shutdown_timeout=0.1)
        hung.preload("forever")
        time.sleep(0.05)
        print("exiting")
    """)
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": ":".join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "exiting"
    assert time.monotonic() - t0 < 30


def test_garbage_collected_with_loads_in_flight():
    import gc

    release = threading.Event()
    loader = ferry.TileLoader(lambda k: release.wait(10), num_workers=1)
    loader.preload("a")
    loader.preload("b")
    threading.Timer(0.05, release.set).start()
    del loader
    gc.collect()
