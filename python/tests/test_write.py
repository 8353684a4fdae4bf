import os

import numpy as np
import pytest
import torch

import ferry


def test_every_dtype_round_trips(tmp_path):
    cols = {}
    for dt in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16",
               "float32", "float64"):
        cols[dt] = (np.arange(60) % 100).astype(dt).reshape(20, 3)
    cols["scalar"] = np.arange(20, dtype=np.float32)
    cols["flag"] = np.arange(20) % 2 == 0
    cols["bf"] = torch.arange(20, dtype=torch.bfloat16)
    path = tmp_path / "all.ferry"
    assert ferry.write(path, cols, page_size=4096) == 20
    r = ferry.Reader(str(path))
    assert r.num_samples == 20
    kinds = {f["name"]: f["dtype"] for f in r.schema}
    assert kinds["bf"] == "bf16" and kinds["flag"] == "u8" and kinds["float16"] == "f16"
    for i in range(20):
        s = r.sample(i)
        for dt in ("uint8", "int64", "float16", "float64"):
            np.testing.assert_array_equal(s[dt], cols[dt][i])
    batch = next(iter(ferry.Loader(path, batch_size=20, order="sequential")))
    assert batch["bf"].dtype == torch.bfloat16
    assert torch.equal(batch["bf"], cols["bf"])
    assert batch["scalar"].shape == (20,)


def test_write_from_map_style_dataset(tmp_path):
    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 300

        def __getitem__(self, i):
            return {"x": torch.full((2, 2), float(i)), "y": i, "raw": bytes([i % 256]) * (i % 5)}

    path = tmp_path / "ds.ferry"
    assert ferry.write_from(Squares(), path, chunk=64) == 300
    r = ferry.Reader(str(path))
    s = r.sample(123)
    assert s["raw"] == bytes([123]) * 3 and int(s["y"]) == 123 and float(s["x"][0, 0]) == 123.0

    class Pairs:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.array([i, i], dtype=np.int16), np.float64(i) / 2

    ferry.write_from(Pairs(), tmp_path / "pairs.ferry")
    assert {f["name"] for f in ferry.Reader(str(tmp_path / "pairs.ferry")).schema} == {"f0", "f1"}


def test_inconsistent_dataset_leaves_no_file(tmp_path):
    class Bad:
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return {"x": np.zeros(3 if i < 7 else 4)}

    with pytest.raises(ValueError, match="sample 7"):
        ferry.write_from(Bad(), tmp_path / "bad.ferry")
    assert os.listdir(tmp_path) == []


def test_write_errors(tmp_path):
    with pytest.raises(ValueError, match="'b' has 3 samples"):
        ferry.write(tmp_path / "x.ferry", {"a": np.zeros((4, 2)), "b": np.zeros(3)})
    with pytest.raises(TypeError, match="complex"):
        ferry.write(tmp_path / "x.ferry", {"a": np.zeros(4, dtype=np.complex64)})
    with pytest.raises(ValueError, match="page_size"):
        ferry.write(tmp_path / "x.ferry", {"a": np.zeros(4)}, page_size=1000)
    assert os.listdir(tmp_path) == []


def test_corrupt_file_is_a_format_error(tmp_path):
    path = tmp_path / "c.ferry"
    ferry.write(path, {"a": np.arange(100)})
    data = bytearray(path.read_bytes())
    data[116] ^= 0xFF  # the field name, in the schema block after the 112-byte prefix: the header checksum catches it
    path.write_bytes(bytes(data))
    with pytest.raises(ferry.FormatError, match="header"):
        ferry.Loader(path, batch_size=4)
