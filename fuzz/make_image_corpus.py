"""Writes fuzz/image_corpus/: small real and broken images cut from a wallpaper photograph (PIL),
the fuzzer's seeds and the fixtures of tests/image_test.cpp and python/tests/test_image_ops.py.
Deterministic: run `python3 fuzz/make_image_corpus.py` to regenerate."""
import io
import os
import sys

from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "image_corpus")
PHOTO = "/usr/share/wallpapers/Kite/contents/images/2560x1600.jpg"


def main():
    os.makedirs(OUT, exist_ok=True)
    src = Image.open(PHOTO).convert("RGB")
    base = src.crop((900, 500, 900 + 640, 500 + 400)).resize((97, 61), Image.BILINEAR)

    def save(name, img, **kw):
        img.save(os.path.join(OUT, name), **kw)

    save("rgb420.jpg", base, quality=85, subsampling=2)
    save("rgb444.jpg", base, quality=90, subsampling=0)
    save("progressive.jpg", base, quality=80, progressive=True)
    save("gray.jpg", base.convert("L"), quality=85)
    save("cmyk.jpg", base.convert("CMYK"), quality=90)
    save("rgb.png", base)
    save("gray.png", base.convert("L"))
    save("palette.png", base.convert("P", palette=Image.ADAPTIVE, colors=32))
    rgba = base.copy()
    rgba.putalpha(128)
    save("rgba.png", rgba)
    # 16-bit gray: PIL writes mode I;16 as a 16-bit PNG.
    g16 = base.convert("L").point(lambda v: v).convert("I").point(lambda v: v * 257)
    save("gray16.png", g16.convert("I;16"))
    big = src.crop((0, 0, 640, 480))
    save("photo640.jpg", big, quality=90, subsampling=2)
    data = open(os.path.join(OUT, "rgb420.jpg"), "rb").read()
    open(os.path.join(OUT, "truncated.jpg"), "wb").write(data[: len(data) // 2])
    png = open(os.path.join(OUT, "rgb.png"), "rb").read()
    open(os.path.join(OUT, "truncated.png"), "wb").write(png[: len(png) // 2])
    open(os.path.join(OUT, "not_an_image.bin"), "wb").write(b"GIF89a this is not a jpeg" * 4)
    # A JPEG header announcing 60000 x 60000 pixels (SOF0 height/width patched).
    bomb = bytearray(data)
    i = bomb.find(b"\xff\xc0")
    bomb[i + 5:i + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    open(os.path.join(OUT, "bomb.jpg"), "wb").write(bytes(bomb))
    return 0


if __name__ == "__main__":
    sys.exit(main())
