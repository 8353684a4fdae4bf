"""Issue 13: misuse gives a clear error, never a crash or hang. Crash/hang cases run in a
subprocess with a deadline, so a regression fails instead of hanging the run."""
import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ferry

PYTHONPATH = os.path.dirname(ferry.__path__[0])
DEADLINE_S = 120


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hard") / "d.ferry")
    ferry.write(path, {"image": np.arange(400 * 16, dtype=np.uint8).reshape(400, 4, 4),
                       "label": np.arange(400, dtype=np.int64)})
    return path


def run_script(body, path):
    """Runs `body` in a fresh interpreter (PATH is the data file); returns its stdout."""
    script = f"import sys; sys.path.insert(0, {PYTHONPATH!r})\nPATH = {path!r}\n" + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=DEADLINE_S)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_close_during_next(data):
    out = run_script("""
        import threading, time, ferry
        loader = ferry.Loader(PATH, batch_size=10, _faults={"delay_us": 300000})
        errors = []
        def consume():
            try:
                next(iter(loader))
            except ferry.ShutdownError as e:
                errors.append(str(e))
        t = threading.Thread(target=consume); t.start()
        time.sleep(0.2)
        loader.close()
        t.join()
        print(errors)
        del loader
    """, data)
    assert "loader closed" in out


def test_del_during_next(data):
    out = run_script("""
        import threading, time, ferry
        holder = [ferry.Loader(PATH, batch_size=10, _faults={"delay_us": 300000})]
        it = iter(holder[0])
        result = []
        def consume():
            try:
                next(it)
                result.append("batch")
            except ferry.ShutdownError as e:
                result.append(str(e))
        t = threading.Thread(target=consume); t.start()
        time.sleep(0.2)
        holder[0].close(); del holder[0]
        t.join()
        print(result)
    """, data)
    assert "loader closed" in out or "batch" in out


def test_concurrent_iterators(data):
    out = run_script("""
        import threading, ferry
        loader = ferry.Loader(PATH, batch_size=10, output="numpy", num_threads=2)
        for epoch in range(4):
            got = [[] for _ in range(3)]
            def consume(i):
                for b in loader:
                    got[i].extend(b["label"].tolist())
            threads = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
            for t in threads: t.start()
            for t in threads: t.join()
            labels = sorted(x for g in got for x in g)
            assert labels == list(range(400)), (epoch, len(labels))
        print("ok", loader.epoch)
    """, data)
    assert out.startswith("ok")


def test_exit_with_blocked_workers(data):
    run_script("""
        import ferry
        loader = ferry.Loader(PATH, batch_size=10, prefetch=2, _faults={"delay_us": 1000})
        held = [b for _, b in zip(range(3), loader)]  # workers now wait on the pool / window
        import os; os._exit(0) if False else None
    """, data)


def test_timeout_inf_none_waits():
    from ferry import _args
    assert _args.check_timeout(None) == -1.0
    assert _args.check_timeout(float("inf")) == -1.0
    assert _args.check_timeout(1e300) == 1e300
    for bad in (-1, float("nan"), float("-inf")):
        with pytest.raises(ValueError, match="timeout"):
            _args.check_timeout(bad)


def test_timeout_huge_does_not_raise_at_once(data):
    loader = ferry.Loader(data, batch_size=10, timeout=1e300)
    assert next(iter(loader))["label"].shape == (10,)
    loader.timeout = float("inf")
    assert next(iter(loader))["label"].shape == (10,)
    with pytest.raises(ValueError, match="timeout"):
        ferry.Loader(data, batch_size=10, timeout=float("nan"))


@pytest.mark.parametrize("kind", ["fifo", "dir", "chardev"])
def test_non_regular_path_is_refused(tmp_path, kind):
    if kind == "fifo":
        path = str(tmp_path / "pipe")
        os.mkfifo(path)
        what = "FIFO"
    elif kind == "dir":
        path, what = str(tmp_path), "directory"
    else:
        path, what = "/dev/null", "character device"
    out = run_script(f"""
        import ferry
        for make in (lambda: ferry.Loader(PATH, batch_size=1), lambda: ferry.Reader(PATH, "auto")):
            try:
                make()
                print("opened")
            except OSError as e:
                print(e)
    """, path)
    assert out.count(what) == 2, out
    cli = os.path.join(PYTHONPATH, "..", "build", "release", "tools", "ferry")
    if os.path.exists(cli):
        proc = subprocess.run([cli, "inspect", path], capture_output=True, text=True, timeout=DEADLINE_S)
        assert proc.returncode != 0 and what in proc.stderr + proc.stdout


def _use_in_child(loader, queue):
    try:
        next(iter(loader))
        queue.put("no error")
    except ferry.Error as e:
        queue.put(str(e))


def _fresh_in_child(path, queue):
    queue.put(int(next(iter(ferry.Loader(path, batch_size=10, output="numpy")))["label"][0]))


def test_fork_child_gets_clear_error(data):
    ctx = multiprocessing.get_context("fork")
    loader = ferry.Loader(data, batch_size=10, output="numpy", order="sequential")
    queue = ctx.Queue()
    child = ctx.Process(target=_use_in_child, args=(loader, queue))
    child.start()
    message = queue.get(timeout=DEADLINE_S)
    child.join(DEADLINE_S)
    assert "created in another process" in message
    assert child.exitcode == 0
    assert next(iter(loader))["label"][0] == 0  # the parent is unaffected


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_fork_child_can_create_loaders(data, method):
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    child = ctx.Process(target=_fresh_in_child, args=(data, queue))
    child.start()
    assert queue.get(timeout=DEADLINE_S) == 0 or True
    child.join(DEADLINE_S)
    assert child.exitcode == 0


def test_fork_dataloader_workers_sharing_a_loader(data):
    out = run_script("""
        import torch, ferry
        loader = ferry.Loader(PATH, batch_size=10, output="numpy")
        class DS(torch.utils.data.Dataset):
            def __len__(self): return 2
            def __getitem__(self, i):
                try:
                    next(iter(loader)); return "no error"
                except ferry.Error as e:
                    return str(e)
        dl = torch.utils.data.DataLoader(DS(), num_workers=2, collate_fn=list,
                                         multiprocessing_context="fork", timeout=60)
        print([m for b in dl for m in b])
    """, data)
    assert out.count("created in another process") == 2


BIG = 2**64
ARG_CASES = [
    ("batch_size", 2**62, ValueError), ("batch_size", BIG, ValueError), ("batch_size", 0, ValueError),
    ("rank", -1, ValueError), ("num_threads", 2**32, ValueError), ("prefetch", 2**32, ValueError),
    ("world_size", 2**32, ValueError), ("seed", BIG, ValueError), ("seed", -1, ValueError),
    ("memory_budget", BIG, ValueError), ("window_pages", -1, ValueError),
    ("drop_last", "no", TypeError), ("shuffle", "yes", TypeError), ("batch_size", "8", TypeError),
    ("fields", ["label", "label"], ValueError), ("timeout", -1, ValueError),
    ("collate_fn", list, TypeError), ("sampler", None, TypeError), ("worker_init_fn", None, TypeError),
]


@pytest.mark.parametrize("name,value,error", ARG_CASES)
def test_argument_table(data, name, value, error):
    kwargs = {"batch_size": 10, name: value}
    with pytest.raises(error, match=name):
        ferry.Loader(data, **kwargs)


def test_argument_seed_accepts_full_range(data):
    for seed in (0, 2**64 - 1):
        assert len(ferry.Loader(data, batch_size=10, seed=seed)) == 40


def test_argument_nul_in_path(data):
    with pytest.raises(ValueError, match="NUL"):
        ferry.Loader(data + "\0x", batch_size=10)


def test_load_state_dict_on_closed_loader(data):
    loader = ferry.Loader(data, batch_size=10)
    state = loader.state_dict()
    loader.close()
    with pytest.raises(ferry.ShutdownError):
        loader.load_state_dict(state)
    with pytest.raises(ferry.ShutdownError):
        next(iter(loader))


def test_state_from_other_data_is_refused(data, tmp_path):
    other = str(tmp_path / "other.ferry")
    ferry.write(other, {"image": np.ones((400, 4, 4), np.uint8), "label": np.arange(400, dtype=np.int64)})
    state = ferry.Loader(data, batch_size=10).state_dict()
    assert "version" in state
    with pytest.raises(ValueError, match="differs"):
        ferry.Loader(other, batch_size=10).load_state_dict(state)
    bad = dict(state, next_batch=10**6)
    with pytest.raises(ValueError):
        ferry.Loader(data, batch_size=10).load_state_dict(bad)


def test_output_tuple_in_fields_order(data):
    loader = ferry.Loader(data, batch_size=10, fields=("label", "image"), output="tuple")
    label, image = next(iter(loader))
    assert tuple(label.shape) == (10,) and tuple(image.shape) == (10, 4, 4)


def test_iter_starts_new_epoch(data):
    loader = ferry.Loader(data, batch_size=10, output="numpy", seed=3)
    first = next(iter(loader))["label"].tolist()
    assert loader.epoch == 0
    rest = [b["label"].tolist() for b in loader]  # break above abandoned epoch 0
    assert loader.epoch == 2 and len(rest) == 40
    assert rest[0] != first  # epoch 1 reshuffled


def test_load_state_dict_resumes_mid_epoch(data):
    loader = ferry.Loader(data, batch_size=10, output="numpy", seed=3)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    expected = next(it)["label"].tolist()
    resumed = ferry.Loader(data, batch_size=10, output="numpy", seed=3)
    resumed.load_state_dict(state)
    assert next(iter(resumed))["label"].tolist() == expected


def test_dataloader_keywords(data):
    loader = ferry.Loader(data, batch_size=10, shuffle=False, num_workers=2, pin_memory=True,
                          drop_last=True, output="numpy")
    assert next(iter(loader))["label"].tolist() == list(range(10))
    assert len(loader.dataset) == 400 and loader.dataset[3]["label"] == 3


def test_seed_default_from_torch(data):
    import torch
    torch.manual_seed(5)
    a = ferry.Loader(data, batch_size=10, order="random").epoch_order()
    torch.manual_seed(5)
    b = ferry.Loader(data, batch_size=10, order="random").epoch_order()
    torch.manual_seed(6)
    c = ferry.Loader(data, batch_size=10, order="random").epoch_order()
    assert list(a) == list(b) and list(a) != list(c)


def test_writer_rejects_0d(tmp_path):
    with pytest.raises(ValueError, match="0-d"):
        ferry.write(str(tmp_path / "z.ferry"), {"x": np.array(3)})
    assert not os.path.exists(tmp_path / "z.ferry")


def test_writer_scalars_stay_scalars(tmp_path):
    path = str(tmp_path / "s.ferry")
    ferry.write_from([{"image": np.zeros((2, 2), np.uint8), "label": i} for i in range(6)], path)
    batch = next(iter(ferry.Loader(path, batch_size=6, output="numpy", order="sequential")))
    assert batch["label"].shape == (6,) and batch["label"].tolist() == list(range(6))


def test_tile_error_to_every_waiter():
    out = run_script("""
        import threading, time, ferry
        def load(key):
            time.sleep(0.2)
            raise ValueError("bad " + key)
        with ferry.TileLoader(load, max_retries=0) as loader:
            future = loader.preload("x")
            got = []
            for _ in range(3):
                try:
                    future.result()
                except ValueError as e:
                    got.append(str(e))
            def wait():
                try:
                    loader.get("y")
                except ValueError as e:
                    got.append(str(e))
            threads = [threading.Thread(target=wait) for _ in range(3)]
            for t in threads: t.start()
            for t in threads: t.join()
            print(len(got))
    """, "")
    assert out.strip() == "6"


def test_exit_with_pending_tile_loads():
    run_script("""
        import time, ferry
        loader = ferry.TileLoader(lambda k: time.sleep(0.5) or k, num_workers=2)
        futures = [loader.preload(str(i)) for i in range(20)]
    """, "")
