"""Contact sheet of augmented samples: what the model will see.

    python3 -m ferry.preview FILE --transforms spec.json --out grid.png [-n 16 --seed S --field image]

spec.json is the Loader's pipeline (a list of {"field", "ops"}; ops as docs/ops.md) or
{"image": [...ops...]}. Normalization is undone for display (from the normalize op's mean, std
and scale); CHW images are shown as HWC. Each tile is labelled with its sample id and class.
"""
import argparse
import json
import math
import sys

import numpy as np


def _display_uint8(img, ops):
    """A float/normalized sample back to uint8 HWC for display."""
    img = np.asarray(img, dtype=np.float32) if img.dtype != np.uint8 else img
    chw = any(o.get("op") == "to_chw" for o in ops)
    if chw and img.ndim == 3:
        img = np.transpose(img, (1, 2, 0))
    norm = [o for o in ops if o.get("op") == "normalize"]
    if norm and img.dtype != np.uint8:
        n = norm[-1]
        mean = np.asarray(n.get("mean", 0.0), np.float32)
        std = np.asarray(n.get("std", 1.0), np.float32)
        scale = float(n.get("scale", 1.0))
        img = (img * std + mean) / scale
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def contact_sheet(tiles, captions, columns=None, pad=4, caption_h=14):
    """PIL image: tiles (uint8 HWC) on a grid, each with its caption below."""
    from PIL import Image, ImageDraw
    n = len(tiles)
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    sheet = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + caption_h + pad) + pad), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for i, (tile, cap) in enumerate(zip(tiles, captions)):
        x = pad + (i % cols) * (tw + pad)
        y = pad + (i // cols) * (th + caption_h + pad)
        sheet.paste(Image.fromarray(tile), (x, y))
        draw.text((x + 2, y + th + 1), cap, fill=(230, 230, 230))
    return sheet


def _pipeline_ops(pipeline, field):
    for chain in pipeline:
        if chain.get("field") == field:
            return chain.get("ops", [])
    return []


def preview(path, pipeline, out, n=16, seed=0, field="image", label_field="label"):
    """Writes a grid PNG of n samples of `field` after `pipeline`; returns the PIL image."""
    import ferry
    from ferry.images_io import metadata
    if isinstance(pipeline, dict):
        pipeline = [{"field": k, "ops": v} for k, v in pipeline.items()]
    pipeline = [c for c in pipeline if c.get("field") == field]
    reader = ferry.Reader(str(path))
    names = {f["name"] for f in reader.schema}
    n = min(int(n), reader.num_samples)
    loader = ferry.Loader(path, batch_size=n, order="random", seed=int(seed), output="numpy",
                          pipeline=pipeline, drop_last=False)
    batch = next(iter(loader))
    classes = metadata(path).get("classes", [])
    images = batch[field]
    labels = batch.get(label_field) if label_field in names else None
    ids = batch.get("__sample_id__") if isinstance(batch, dict) else None
    ops = _pipeline_ops(pipeline, field)
    tiles, captions = [], []
    for i in range(n):
        tiles.append(_display_uint8(images[i], ops))
        cap = f"#{int(ids[i])}" if ids is not None else f"{i}"
        if labels is not None:
            lab = int(labels[i])
            cap += f" {classes[lab] if 0 <= lab < len(classes) else lab}"
        captions.append(cap)
    sheet = contact_sheet(tiles, captions)
    if out:
        sheet.save(out)
    return sheet


def main(argv=None):
    ap = argparse.ArgumentParser(prog="ferry preview", description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--transforms", required=True, help="pipeline JSON file")
    ap.add_argument("--out", required=True)
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--field", default="image")
    a = ap.parse_args(argv)
    with open(a.transforms) as f:
        spec = json.load(f)
    try:
        sheet = preview(a.file, spec, a.out, n=a.n, seed=a.seed, field=a.field)
    except Exception as e:  # noqa: BLE001  (one clear line, like the ferry CLI)
        print(f"ferry preview: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {a.out}: {sheet.size[0]}x{sheet.size[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
