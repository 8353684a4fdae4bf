import gc
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import ferry
from conftest import labels_of


def test_exactly_once_in_engine_order_for_every_thread_count(small_file):
    path = small_file[0]
    reference = None
    for threads in (1, 2, 4):
        loader = ferry.Loader(path, batch_size=64, order="random", seed=3, num_threads=threads)
        order = loader.epoch_order().tolist()
        got = [x for batch in labels_of(loader) for x in batch]
        assert got == order
        assert sorted(got) == list(range(1000))
        if reference is None:
            reference = got
        assert got == reference, "delivery depends on the thread count"
        np.testing.assert_array_equal(order, ferry.epoch_order(path, "random", seed=3, epoch=0))
        loader.close()


def test_len_and_drop_last(small_file):
    path = small_file[0]
    assert len(ferry.Loader(path, batch_size=64)) == 16
    loader = ferry.Loader(path, batch_size=64, drop_last=True)
    assert len(loader) == 15
    assert all(len(b) == 64 for b in labels_of(loader))


def test_contents_equal_the_source_arrays(small_file):
    path, images, labels, blobs = small_file
    for output in ("torch", "numpy"):
        loader = ferry.Loader(path, batch_size=50, order="quasi_random", output=output)
        seen = 0
        for batch in loader:
            ids = np.asarray(batch["label"])
            np.testing.assert_array_equal(np.asarray(batch["image"]), images[ids])
            data, offsets = batch["blob"]
            data, offsets = np.asarray(data), np.asarray(offsets)
            for i, sid in enumerate(ids):
                assert data[offsets[i]:offsets[i + 1]].tobytes() == blobs[sid]
            seen += len(ids)
        assert seen == 1000
    batch = next(iter(ferry.Loader(path, batch_size=8)))
    assert isinstance(batch["image"], torch.Tensor) and batch["image"].dtype == torch.float32
    assert batch["image"].shape == (8, 3, 4)


def test_epochs_differ_and_set_epoch_replays(small_file):
    path = small_file[0]
    loader = ferry.Loader(path, batch_size=100, order="random")
    e0 = labels_of(loader)
    e1 = labels_of(loader)
    assert e0 != e1
    loader.set_epoch(0)
    assert labels_of(loader) == e0


def test_state_dict_resume_equals_uninterrupted_run(small_file):
    path = small_file[0]
    full = labels_of(ferry.Loader(path, batch_size=30, seed=11))
    loader = ferry.Loader(path, batch_size=30, seed=11)
    it = iter(loader)
    first = [next(it)["label"].tolist() for _ in range(7)]
    state = loader.state_dict()
    loader.close()
    resumed = ferry.Loader(path, batch_size=30, seed=11, num_threads=1)
    resumed.load_state_dict(state)
    assert first + labels_of(resumed) == full
    other = ferry.Loader(path, batch_size=31, seed=11)
    with pytest.raises(ValueError, match="cannot resume"):
        other.load_state_dict(state)


def test_held_tensors_never_change(small_file):
    path = small_file[0]
    loader = ferry.Loader(path, batch_size=10, prefetch=2, num_threads=2)
    it = iter(loader)
    held = [next(it) for _ in range(20)]
    copies = [{k: v.clone() for k, v in b.items() if not isinstance(v, tuple)} for b in held]
    for _ in range(50):
        next(it)
    for b, c in zip(held, copies):
        for k in c:
            assert torch.equal(b[k], c[k]), "a held batch was overwritten"


def test_holding_more_than_the_budget_is_a_clear_error(small_file):
    path = small_file[0]
    loader = ferry.Loader(path, batch_size=10, prefetch=1, memory_budget=8 * 1024, timeout=30)
    held = []
    with pytest.raises(ferry.CapacityError, match="release batches"):
        for batch in loader:
            held.append(batch)
    held.clear()
    gc.collect()
    assert next(iter(loader)) is not None


def test_sample_error_names_file_sample_and_cause(small_file):
    path = small_file[0]
    loader = ferry.Loader(path, batch_size=10, order="sequential", _faults={"samples": [123]})
    it = iter(loader)
    for _ in range(12):
        next(it)
    with pytest.raises(ferry.SampleError) as err:
        next(it)
    assert path in str(err.value) and "sample 123" in str(err.value) and "Input/output error" in str(err.value)
    skipping = ferry.Loader(path, batch_size=10, on_error="skip", _faults={"samples": [5, 6]})
    got = [x for b in labels_of(skipping) for x in b]
    assert len(got) == 998 and 5 not in got and 6 not in got
    assert skipping.stats()["errors_skipped"] == 2


def test_timeout_raises_and_loader_stays_usable(small_file):
    path = small_file[0]
    loader = ferry.Loader(path, batch_size=50, num_threads=1, prefetch=1, timeout=0.001,
                          _faults={"delay_us": 20000})
    with pytest.raises(TimeoutError):
        next(iter(loader))
    loader.timeout = 60
    assert next(iter(loader))["label"].shape == (50,)


def test_invalid_arguments_name_the_argument(small_file):
    path = small_file[0]
    with pytest.raises(ValueError, match="batch_size"):
        ferry.Loader(path, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        ferry.Loader(path, batch_size="8")
    with pytest.raises(ValueError, match="order"):
        ferry.Loader(path, batch_size=8, order="shuffled")
    with pytest.raises(ValueError, match="on_error"):
        ferry.Loader(path, batch_size=8, on_error="ignore")
    with pytest.raises(ValueError, match="output"):
        ferry.Loader(path, batch_size=8, output="jax")
    with pytest.raises(ValueError, match="nope"):
        ferry.Loader(path, batch_size=8, fields=["nope"])
    with pytest.raises(ValueError, match="CUDA"):
        ferry.Loader(path, batch_size=8, device="cuda")
    with pytest.raises(OSError):
        ferry.Loader("/nonexistent.ferry", batch_size=8)


def test_stats_and_report(small_file):
    loader = ferry.Loader(small_file[0], batch_size=100)
    labels_of(loader)
    stats = loader.stats()
    assert stats["samples"] == 1000 and stats["batches"] == 10
    assert {s["name"] for s in stats["stages"]} == {"read", "decode", "ops", "transform"}
    assert "bottleneck:" in loader.report()


def test_rank_and_world_size_from_torchrun_environment(small_file, monkeypatch):
    path = small_file[0]
    seen, counts = [], set()
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        loader = ferry.Loader(path, batch_size=16, remainder="drop")
        batches = labels_of(loader)
        counts.add(len(batches))
        seen += [x for b in batches for x in b]
    assert len(counts) == 1, "every rank must get the same number of batches"
    assert len(seen) == len(set(seen)) == 999


def test_two_process_gloo_group_covers_the_data_once(small_file, tmp_path):
    path = small_file[0]
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, torch.distributed as dist
        sys.path.insert(0, {os.path.dirname(ferry.__path__[0])!r})
        import ferry
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method="file://{tmp_path}/rendezvous", rank=rank, world_size=2)
        loader = ferry.Loader({path!r}, batch_size=32)
        labels = [x for b in loader for x in b["label"].tolist()]
        with open("{tmp_path}/out%d" % rank, "w") as f:
            f.write("%d %s" % (len(loader), ",".join(map(str, labels))))
        dist.destroy_process_group()
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    procs = [subprocess.Popen([sys.executable, str(script), str(r)], env=env) for r in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    parts = [(tmp_path / f"out{r}").read_text().split(" ") for r in range(2)]
    assert parts[0][0] == parts[1][0], "ranks got different batch counts"
    labels = [int(x) for p in parts for x in p[1].split(",")]
    assert sorted(labels) == list(range(1000))


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_buffers_return_to_the_pool_rss_flat_over_ten_epochs(tmp_path):
    path = tmp_path / "big.ferry"
    ferry.write(path, {"x": np.ones((2000, 16384), dtype=np.uint8)})
    # numpy output: torch's uint8 sum makes a 12.8 MB int64 temporary per batch, whose place in
    # glibc's heap (not ferry's pool) made RSS drift by that much at random.
    loader = ferry.Loader(path, batch_size=100, num_threads=2, output="numpy")
    for batch in loader:  # warm up: the pool, the page cache and torch's own first-use allocations
        batch["x"].sum()
    gc.collect()
    start = rss_mb()
    for _ in range(10):
        for batch in loader:
            batch["x"].sum()
    gc.collect()
    assert rss_mb() - start < 16, f"RSS grew from {start:.0f} MB to {rss_mb():.0f} MB"
    assert loader.stats()["pool_slots"] <= loader.stats()["prefetch"] + 2


def test_ctrl_c_interrupts_iteration_promptly(small_file, tmp_path):
    path = small_file[0]
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(ferry.__path__[0])!r})
        import ferry
        # Each read takes 50 ms: the consumer is always waiting inside next() when SIGINT arrives.
        loader = ferry.Loader({path!r}, batch_size=100, num_threads=1, _faults={{"delay_us": 50000}})
        print("ready", flush=True)
        try:
            for batch in loader:
                pass
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(7)
    """))
    import signal
    import time

    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 7 and "interrupted" in out
    assert time.monotonic() - start < 10, "KeyboardInterrupt and shutdown took too long"


def test_numpy_loader_does_not_import_torch(small_file):
    # A numpy-only user must not pay torch's 1-2 s import inside Loader() (the default seed and
    # the distributed rank only look torch up when the script has imported it itself).
    code = textwrap.dedent(f"""
        import sys, ferry
        loader = ferry.Loader({small_file[0]!r}, batch_size=4, output="numpy")
        next(iter(loader))
        print("torch" in sys.modules)
    """)
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), ".."))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_torch_manual_seed_still_fixes_the_default_order(small_file):
    torch.manual_seed(1234)
    first = labels_of(ferry.Loader(small_file[0], batch_size=4, order="random"))
    torch.manual_seed(1234)
    again = labels_of(ferry.Loader(small_file[0], batch_size=4, order="random"))
    torch.manual_seed(99)
    other = labels_of(ferry.Loader(small_file[0], batch_size=4, order="random"))
    assert first == again and first != other
