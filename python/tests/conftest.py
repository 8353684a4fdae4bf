import numpy as np
import pytest

import ferry


@pytest.fixture(scope="session")
def small_file(tmp_path_factory):
    """1000 samples: image f32[3,4], label i64 (= index), blob bytes of varying length."""
    path = tmp_path_factory.mktemp("data") / "small.ferry"
    rng = np.random.default_rng(0)
    images = rng.standard_normal((1000, 3, 4)).astype(np.float32)
    labels = np.arange(1000, dtype=np.int64)
    blobs = [bytes(rng.integers(0, 256, size=i % 37, dtype=np.uint8)) for i in range(1000)]
    ferry.write(path, {"image": images, "label": labels, "blob": blobs}, page_size=8192)
    return str(path), images, labels, blobs


def labels_of(loader):
    """Every label of the rest of the current epoch, batch by batch."""
    return [b["label"].tolist() for b in loader]
