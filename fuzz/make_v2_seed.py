"""Writes fuzz/corpus/v2_compressible.ferry: a small version-2 seed whose lz4 and zstd payloads
hold real matches (the synthetic seeds are noise, which the codecs store as literals).

    PYTHONPATH=python /usr/bin/python3 fuzz/make_v2_seed.py
"""
import os

import numpy as np

import ferry

here = os.path.dirname(os.path.abspath(__file__))
n = 6
image = np.tile(np.arange(32, dtype=np.uint8) // 4, (n, 8)).reshape(n, 16, 16)
image[:, ::5, 3] += 7
weights = np.linspace(0, 1, n * 20, dtype=np.float32).reshape(n, 20)
text = [(b"the quick brown fox " * (i + 1))[: 30 + 9 * i] for i in range(n)]
ferry.write(os.path.join(here, "corpus", "v2_compressible.ferry"),
            {"image": image, "weights": weights, "text": text, "label": np.arange(n)},
            page_size=4096, compression={"image": "lz4", "weights": "zstd:9", "text": "zstd"})
