"""ferry.Loader / ferry.Reader over HTTP: nginx on 127.0.0.1 behind the fault proxy
(tests/remote/fixture.py); every read goes through the proxy."""
import os
import sys

import numpy as np
import pytest

import ferry

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "remote"))
from fixture import Fixture  # noqa: E402


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    rng = np.random.default_rng(0)
    ferry.write(str(root / "x.ferry"), {"image": rng.integers(0, 255, (2000, 8, 8), dtype=np.uint8),
                                       "label": np.arange(2000, dtype=np.int64)})
    with Fixture(str(root)) as f:
        yield f, str(root / "x.ferry")


def epoch(loader):
    return [(b["image"].numpy().copy(), b["label"].numpy().copy()) for b in loader]


@pytest.mark.parametrize("order", ["sequential", "random", "quasi_random"])
def test_loader_over_http_matches_the_local_file(served, order, tmp_path):
    fx, local = served
    want = epoch(ferry.Loader(local, batch_size=100, order=order, seed=2))
    got = epoch(ferry.Loader(fx.url("x.ferry"), batch_size=100, order=order, seed=2))
    assert len(got) == len(want)
    for (gi, gl), (wi, wl) in zip(got, want):
        assert np.array_equal(gi, wi) and np.array_equal(gl, wl)


def test_retries_and_cache_show_in_stats(served, tmp_path):
    fx, local = served
    want = epoch(ferry.Loader(local, batch_size=100, order="random"))
    fx.control("__faults?reset=0.1&error=0.1&truncate=0.1&seed=4")
    loader = ferry.Loader(fx.url("x.ferry"), batch_size=100, order="random", retries=40,
                          cache_dir=tmp_path / "cache", cache_bytes=1 << 30, remote_timeout=30,
                          headers={"X-Test": "1"})
    got = epoch(loader)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(got, want))
    remote = loader.stats()["remote"]
    assert remote["requests"] > 0 and remote["bytes"] > 0
    assert remote["cache_misses"] > 0
    assert "remote:" in loader.report()
    # A restart with the same cache dir: only the HEAD reaches the server.
    fx.control("__faults?reset=0&error=0&truncate=0")
    fx.control("__reset_stats")
    again = ferry.Loader(fx.url("x.ferry"), batch_size=100, order="random",
                         cache_dir=tmp_path / "cache", cache_bytes=1 << 30)
    assert len(epoch(again)) == len(want)
    assert fx.stats()["requests"] == 1


def test_reader_and_open_errors(served):
    fx, local = served
    r = ferry.Reader(fx.url("x.ferry"))
    assert r.num_samples == 2000
    with pytest.raises(Exception, match="404"):
        ferry.Reader(fx.url("nope.ferry"))
    with pytest.raises(Exception, match="403"):
        ferry.Loader(fx.url("forbidden/x.ferry"), batch_size=10)
