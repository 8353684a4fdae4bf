"""ferry.Loader(device='cuda'): the GPU stage from Python (skipped without the CUDA build or a GPU)."""
import numpy as np
import pytest

import ferry
from ferry import cuda as fcuda

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not (fcuda.available() and torch.cuda.is_available()),
                                reason="needs ferry's CUDA build and a CUDA device")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """3000 samples: image u8[3,16,16] (random), label i64 = index, w bf16[4], blob bytes."""
    path = tmp_path_factory.mktemp("gpu") / "gpu.ferry"
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3000, 3, 16, 16), dtype=np.uint8)
    labels = np.arange(3000, dtype=np.int64)
    w = torch.randn(3000, 4).to(torch.bfloat16)
    blobs = [bytes(rng.integers(0, 256, size=i % 53, dtype=np.uint8)) for i in range(3000)]
    ferry.write(path, {"image": images, "label": labels, "w": w, "blob": blobs}, page_size=65536)
    return str(path), images, w, blobs


def check_batch(b, images, w, blobs):
    assert b["image"].is_cuda and b["image"].dtype == torch.uint8
    assert b["w"].dtype == torch.bfloat16
    ids = b["label"].cpu().numpy()
    np.testing.assert_array_equal(b["image"].cpu().numpy(), images[ids])
    assert torch.equal(b["w"].cpu(), w[torch.from_numpy(ids)])
    data, offsets = b["blob"]
    data, offsets = data.cpu().numpy(), offsets.cpu().numpy()
    for k, i in enumerate(ids):
        assert data[offsets[k]:offsets[k + 1]].tobytes() == blobs[i]
    return ids


@pytest.mark.parametrize("threads", [1, 4])
def test_every_sample_on_the_gpu_every_epoch(data, threads):
    path, images, w, blobs = data
    loader = ferry.Loader(path, batch_size=128, num_threads=threads, device="cuda")
    for _ in range(3):
        seen = np.concatenate([check_batch(b, images, w, blobs) for b in loader])
        assert sorted(seen.tolist()) == list(range(3000))


def test_batches_follow_torchs_current_stream(data):
    path, images, w, blobs = data
    loader = ferry.Loader(path, batch_size=256, device="cuda:0")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # batches are ordered on (and released to) `side`
        sums = [b["image"].sum(dtype=torch.int64) for b in loader]
    side.synchronize()
    assert sum(int(s) for s in sums) == int(images.astype(np.int64).sum())


def test_held_tensors_stay_valid_while_the_loader_runs_ahead(data):
    path, images, w, blobs = data
    loader = ferry.Loader(path, batch_size=100, device="cuda")
    held = [next(iter(loader))]
    # Later batches come and go (their buffers are reused) while the first one is held.
    for b in loader:
        pass
    check_batch(held[0], images, w, blobs)


def test_state_dict_resumes_and_errors_map(data):
    path, images, w, blobs = data
    a = ferry.Loader(path, batch_size=100, device="cuda", order="random", seed=4)
    it = iter(a)
    for _ in range(7):
        next(it)
    state = a.state_dict()
    assert state["next_batch"] == 7
    b = ferry.Loader(path, batch_size=100, device="cuda", order="random", seed=4)
    b.load_state_dict(state)
    for x, y in zip(it, b):
        assert torch.equal(x["label"], y["label"])
    assert "GPU stage" in a.report()
    assert a.stats()["device"]["bytes_copied"] > 0
    with pytest.raises(ValueError, match="output='torch'"):
        ferry.Loader(path, batch_size=8, device="cuda", output="numpy")
    with pytest.raises(ValueError, match="cuda:N"):
        ferry.Loader(path, batch_size=8, device="cuda:x")
    bad = ferry.Loader(path, batch_size=100, device="cuda", order="sequential", _faults={"samples": [250]})
    it = iter(bad)
    next(it), next(it)
    with pytest.raises(ferry.SampleError):
        next(it)
