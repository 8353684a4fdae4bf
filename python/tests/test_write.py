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


def _compressible(n, width, seed):
    rng = np.random.default_rng(seed)
    base = np.repeat(np.arange(width // 8, dtype=np.uint8), 8)[:width]
    return (base[None, :] + (rng.random((n, width)) < 0.05)).astype(np.uint8)


@pytest.mark.parametrize("codec", ["lz4", "zstd", "zstd:9", "lz4:4"])
def test_compression_round_trips(tmp_path, codec):
    n = 300
    images = _compressible(n, 784, 1).reshape(n, 28, 28)
    floats = np.linspace(0, 1, n * 6, dtype=np.float32).reshape(n, 2, 3)
    labels = np.arange(n, dtype=np.int64)
    blobs = [bytes(images[i].ravel()[: i % 50]) * 3 for i in range(n)]
    path = tmp_path / "c.ferry"
    cols = {"image": images, "floats": floats, "label": labels, "blob": blobs}
    ferry.write(path, cols, page_size=8192,
                compression={"image": codec, "floats": codec, "blob": codec, "label": None})
    r = ferry.Reader(str(path))
    assert r.format_version == 2
    name = codec.split(":")[0]
    assert r.codecs == {"image": name, "floats": name, "label": "none", "blob": name}
    plain = tmp_path / "p.ferry"
    ferry.write(plain, cols, page_size=8192)
    assert ferry.Reader(str(plain)).format_version == 1
    assert os.path.getsize(path) < os.path.getsize(plain) * 0.75
    for i in (0, 1, 77, n - 1):
        s = r.sample(i)
        np.testing.assert_array_equal(s["image"], images[i])
        np.testing.assert_array_equal(s["floats"], floats[i])
        assert s["blob"] == blobs[i]
    seen = 0
    for b in ferry.Loader(path, batch_size=32, order="random", num_threads=2):
        ids = b["label"].numpy()
        np.testing.assert_array_equal(b["image"].numpy(), images[ids])
        np.testing.assert_array_equal(b["floats"].numpy(), floats[ids])
        seen += len(ids)
    assert seen == n


def test_write_from_with_compression(tmp_path):
    class Rows:
        def __len__(self):
            return 50

        def __getitem__(self, i):
            return (np.full((16, 16), i % 7, dtype=np.uint8), i)

    path = tmp_path / "w.ferry"
    assert ferry.write_from(Rows(), path, compression={"f0": "zstd"}) == 50
    r = ferry.Reader(str(path))
    assert r.codecs == {"f0": "zstd", "f1": "none"}
    np.testing.assert_array_equal(r.sample(9)["f0"], np.full((16, 16), 2, dtype=np.uint8))


def test_compression_errors(tmp_path):
    cols = {"a": np.zeros((4, 8), dtype=np.uint8)}
    with pytest.raises(ValueError, match="unknown codec 'gzip'"):
        ferry.write(tmp_path / "x.ferry", cols, compression={"a": "gzip"})
    with pytest.raises(ValueError, match="level 99"):
        ferry.write(tmp_path / "x.ferry", cols, compression={"a": "zstd:99"})
    with pytest.raises(ValueError, match="no field named 'b'"):
        ferry.write(tmp_path / "x.ferry", cols, compression={"b": "lz4"})
    with pytest.raises(TypeError, match="compression must be a dict"):
        ferry.write(tmp_path / "x.ferry", cols, compression="zstd")
    with pytest.raises(TypeError, match="codec name"):
        ferry.write(tmp_path / "x.ferry", cols, compression={"a": 3})
    assert os.listdir(tmp_path) == []


def test_corrupt_compressed_sample_raises_or_skips(tmp_path):
    n = 64
    images = _compressible(n, 512, 2)
    path = tmp_path / "bad.ferry"
    ferry.write(path, {"image": images, "label": np.arange(n)}, compression={"image": "zstd"})
    data = bytearray(path.read_bytes())
    # Sample 0's image is the first stored field: page 0 starts at the 4 KiB data offset. A zstd
    # frame starts with its magic number; smashing it makes the sample undecodable.
    assert data[4096:4100] == b"\x28\xb5\x2f\xfd"
    data[4096:4100] = b"\0\0\0\0"
    path.write_bytes(bytes(data))
    with pytest.raises(ferry.SampleError, match="sample 0: field 'image': decode failed"):
        for _ in ferry.Loader(path, batch_size=8, order="sequential"):
            pass
    got = [int(x) for b in ferry.Loader(path, batch_size=8, order="sequential", on_error="skip")
           for x in b["label"]]
    assert sorted(got) == list(range(1, n))  # a short batch borrows from the next one
