"""Real torchrun jobs (gloo on CPU, loopback rendezvous): exactly-once sharding for every order,
pad/drop remainders, elastic 4->3 and 2->4 resumes, and a rank killed mid-epoch then restarted
from the per-rank states it saved. Every job has a deadline and is killed with its process group."""
import collections
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

import ferry

torch = pytest.importorskip("torch")
import torch.distributed  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), "dist_worker.py")
# torch.distributed.run (Debian ships no torchrun script), fixed for Python 3.11: dist_launch.py
LAUNCH = os.path.join(os.path.dirname(__file__), "dist_launch.py")
N = 103  # samples: uneven for 3 and 4 ranks
DEADLINE_S = 240

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or
                                not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "d.ferry"
    ferry.write(path, {"label": np.arange(N, dtype=np.int64),
                       "x": np.zeros((N, 400), dtype=np.uint8)}, page_size=4096)
    return str(path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc, data, out, mode, **opt):
    """Runs the worker on `nproc` ranks; returns (returncode, output). Kills the whole process
    group if it runs past the deadline."""
    cmd = [sys.executable, LAUNCH, "--nnodes", "1", "--nproc_per_node",
           str(nproc), "--master_addr", "127.0.0.1", "--master_port", str(free_port()), WORKER,
           data, str(out), mode, json.dumps(opt)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(ferry.__file__)))
    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun {mode} on {nproc} ranks ran past {DEADLINE_S} s")
    return proc.returncode, output.decode(errors="replace")


def read(path):
    with open(path) as f:
        return json.load(f)



def test_every_rank_reads_its_shard_exactly_once_for_every_order(data, tmp_path):
    rc, log = torchrun(4, data, tmp_path, "once")
    assert rc == 0, log
    for order in ("sequential", "random", "quasi_random"):
        for remainder in ("pad", "drop"):
            for drop_last in (0, 1):
                cfg = f"{order}_{remainder}_{drop_last}"
                per_rank = [read(tmp_path / f"labels_{cfg}_{r}.json") for r in range(4)]
                counts = [len(per_rank[r]) for r in range(4)]
                assert len(set(counts)) == 1, f"{cfg}: ranks got {counts} batches"
                flat = [x for rank in per_rank for b in rank for x in b]
                seen = collections.Counter(flat)
                shard = (N + 3) // 4 if remainder == "pad" else N // 4  # 26 or 25
                if drop_last:  # each rank's short last batch is dropped
                    assert all(len(b) == 4 for rank in per_rank for b in rank), cfg
                    assert len(flat) == 4 * (shard // 4 * 4), cfg
                else:
                    assert len(flat) == 4 * shard, cfg
                if remainder == "pad" and not drop_last:
                    # 104 slots for 103 samples: the first sample of the epoch order comes twice.
                    assert set(seen) == set(range(N)), cfg
                    assert sorted(seen.values()).count(2) == 1, cfg
                if remainder == "drop":
                    assert max(seen.values()) == 1, f"{cfg}: drop repeats nothing"
                    if not drop_last:
                        assert len(seen) == N - N % 4, cfg


@pytest.mark.parametrize("old,new,order", [(4, 3, "quasi_random"), (2, 4, "random"),
                                           (4, 3, "sequential")])
def test_elastic_resume_yields_each_remaining_sample_once_then_normal_epochs(data, tmp_path, old,
                                                                              new, order):
    stops = [3, 1, 5, 0][:old] if old == 4 else [2, 6]
    rc, log = torchrun(old, data, tmp_path, "stop", order=order, stops=stops)
    assert rc == 0, log
    before = [x for r in range(old) for x in read(tmp_path / f"before_{r}.json")]
    assert len(before) == 4 * sum(stops) and len(set(before)) == len(before)
    states = read(tmp_path / "states.json")
    assert [s["rank"] for s in states] == list(range(old))
    rc, log = torchrun(new, data, tmp_path, "resume", order=order, states=str(tmp_path / "states.json"))
    assert rc == 0, log
    after = [read(tmp_path / f"after_{r}.json") for r in range(new)]
    resumed = [x for a in after for x in a["seen"]]
    assert not set(resumed) & set(before), "a consumed sample came again"
    assert set(resumed) | set(before) == set(range(N)), "a sample was lost"
    remaining = N - len(before)
    shard = -(-remaining // new)
    assert all(len(a["seen"]) == shard for a in after), "ranks get as many samples (pad)"
    assert len(resumed) - len(set(resumed)) == shard * new - remaining  # the padding
    for a in after:  # then a normal epoch on the new world size
        assert a["epoch"] == 1 and a["next_samples"] == -(-N // new)


def test_killed_rank_restarts_from_the_last_saved_states_exactly_once(data, tmp_path):
    rc, log = torchrun(4, data, tmp_path, "crash", order="quasi_random", kill_rank=2, kill_at=3)
    assert rc != 0, "the job must fail when a rank dies"
    saved = {r: read(tmp_path / f"rank_{r}.json") for r in range(4)}
    assert len(saved[2]["seen"]) == 3 * 4, "rank 2 saved 3 batches, died in the 4th"
    before = [x for r in range(4) for x in saved[r]["seen"]]
    # Ranks that finished their shard: rank 3's padded slot repeats the epoch's first sample.
    assert len(before) - len(set(before)) <= 1
    states_file = tmp_path / "gathered.json"
    states_file.write_text(json.dumps({str(r): saved[r]["state"] for r in range(4)}))
    rc, log = torchrun(3, data, tmp_path, "resume", order="quasi_random", states=str(states_file))
    assert rc == 0, log
    resumed = [x for r in range(3) for x in read(tmp_path / f"after_{r}.json")["seen"]]
    assert not set(resumed) & set(before)
    assert set(resumed) | set(before) == set(range(N))
