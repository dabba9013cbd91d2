"""Synthetic WebDataset shards for the loader benchmark: N photo-like 512x512 images (smooth gradients, soft
ellipses, sensor-like noise, so that JPEG/WebP sizes are those of real photos, ~40-90 KB) as .jpg or .webp members
with a .txt caption, 250 per shard. Deterministic for a seed.

    python bench/loader/make_loader_data.py --out DIR --count 2000 --format jpg [--size 512] [--seed 0]
"""
import argparse
import io
import os
import tarfile

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def photo(rng: np.random.Generator, size: int) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([rng.uniform(40, 200) + rng.uniform(-60, 60) * x + rng.uniform(-60, 60) * y for _ in range(3)], -1)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(size / 20, size / 4)]
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    img = img.filter(ImageFilter.GaussianBlur(2))
    noise = rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--format", choices=["jpg", "webp"], default="jpg")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--per-shard", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    # 64 distinct images, reused: the loader's cost is per image, and making 2000 distinct ones takes minutes.
    encoded = []
    for _ in range(64):
        b = io.BytesIO()
        photo(rng, a.size).save(b, "JPEG" if a.format == "jpg" else "WEBP", quality=90)
        encoded.append(b.getvalue())
    for s in range(0, a.count, a.per_shard):
        with tarfile.open(f"{a.out}/shard-{s // a.per_shard:06d}.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
            for i in range(s, min(a.count, s + a.per_shard)):
                for ext, data in ((a.format, encoded[i % 64]), ("txt", f"image {i}".encode())):
                    ti = tarfile.TarInfo(f"{i:09d}.{ext}")
                    ti.size = len(data)
                    tf.addfile(ti, io.BytesIO(data))
    print(f"{a.count} {a.format} images of {a.size}² ({sum(map(len, encoded)) / len(encoded) / 1e3:.0f} KB mean) "
          f"-> {a.out}")


if __name__ == "__main__":
    main()
