"""Loader(pipeline=...): per-field op chains in C++, given as dicts or JSON text."""
import json

import numpy as np
import pytest

import ferry


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(300, 6, 8), dtype=np.uint8)
    y = np.arange(300, dtype=np.int32)
    path = tmp_path / "img.ferry"
    ferry.write(path, {"image": x, "label": y})
    return path, x, y


CHAIN = [{"field": "image", "ops": [{"op": "unsqueeze", "axis": 0},
                                     {"op": "normalize", "mean": [0.5], "std": [0.25], "scale": 1 / 255}]},
         {"field": "label", "ops": [{"op": "cast", "dtype": "int64"}]}]


def test_pipeline_matches_numpy_arithmetic(images):
    path, x, y = images
    loader = ferry.Loader(path, batch_size=64, order="sequential", pipeline=CHAIN, output="numpy")
    fields = {f["name"]: f for f in loader.fields}
    assert fields["image"]["shape"] == [1, 6, 8] or tuple(fields["image"]["shape"]) == (1, 6, 8)
    got_x, got_y = [], []
    for batch in loader:
        got_x.append(batch["image"])
        got_y.append(batch["label"])
    got_x, got_y = np.concatenate(got_x), np.concatenate(got_y)
    assert got_x.dtype == np.float32 and got_x.shape == (300, 1, 6, 8)
    np.testing.assert_allclose(got_x[:, 0], (x / 255 - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
    assert got_y.dtype == np.int64 and (got_y == y).all()


def test_pipeline_as_json_text_and_torch_output(images):
    path, x, _ = images
    loader = ferry.Loader(path, batch_size=100, order="sequential", pipeline=json.dumps(CHAIN[:1]))
    batch = next(iter(loader))
    import torch
    assert batch["image"].dtype == torch.float32 and tuple(batch["image"].shape) == (100, 1, 6, 8)


def test_random_flip_is_reproducible_and_resumes(images):
    path, _, _ = images
    chain = [{"field": "image", "ops": [{"op": "flip", "axis": -1, "p": 0.5}]}]

    def run(threads, state=None):
        loader = ferry.Loader(path, batch_size=32, seed=5, num_threads=threads, pipeline=chain, output="numpy")
        if state is not None:
            loader.load_state_dict(state)
        return [b["image"].copy() for b in loader], loader

    ref, _ = run(1)
    again, _ = run(2)
    assert all((a == b).all() for a, b in zip(ref, again))
    loader = ferry.Loader(path, batch_size=32, seed=5, num_threads=2, pipeline=chain, output="numpy")
    it = iter(loader)
    head = [next(it)["image"].copy() for _ in range(3)]
    state = loader.state_dict()
    tail, _ = run(2, state)
    assert all((a == b).all() for a, b in zip(head + tail, ref))


def test_bad_chains_fail_at_construction_naming_field_and_op(images):
    path, _, _ = images
    with pytest.raises(ValueError, match="field 'image'.*normalize"):
        ferry.Loader(path, batch_size=8, pipeline=[{"field": "image", "ops": [
            {"op": "normalize", "mean": [1, 2], "std": [1, 1]}]}])
    with pytest.raises(ValueError, match="unknown op 'blur'"):
        ferry.Loader(path, batch_size=8, pipeline=[{"field": "image", "ops": [{"op": "blur"}]}])
    with pytest.raises(ValueError, match="not among the loaded fields"):
        ferry.Loader(path, batch_size=8, pipeline=[{"field": "nope", "ops": []}])
    with pytest.raises(TypeError):
        ferry.Loader(path, batch_size=8, pipeline=42)
