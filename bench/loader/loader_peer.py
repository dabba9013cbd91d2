"""The Python peer of iomm's streaming loader: webdataset + Pillow + torch DataLoader, doing what
`iomm data scan` does per sample: decode, RGB, shorter side to R (bicubic), centre crop, uint8 CHW tensor, and the
caption. One epoch; prints one JSON object {"samples", "seconds", "images_per_s", "workers"}. With --draft, JPEGs
are decoded at reduced scale first (Image.draft, libjpeg's DCT scaling), as `iomm data scan --jpeg-draft` does.

    python bench/loader/loader_peer.py --data DIR --resolution 256 --workers 2 [--draft]
"""
import argparse
import glob
import io
import json
import time

import numpy as np
import torch
import webdataset as wds
from PIL import Image


def preprocess(sample: dict, r: int, draft: bool) -> tuple:
    key = next(k for k in ("jpg", "jpeg", "png", "webp") if k in sample)
    img = Image.open(io.BytesIO(sample[key]))
    if draft:
        img.draft("RGB", (r, r))  # JPEG only: the largest 1/2^k scale keeping both sides >= r
    img = img.convert("RGB")
    w, h = img.size
    s = r / min(w, h)
    img = img.resize((max(r, round(w * s)), max(r, round(h * s))), Image.BICUBIC)
    left, top = (img.width - r) // 2, (img.height - r) // 2
    img = img.crop((left, top, left + r, top + r))
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous(), sample["txt"].decode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--draft", action="store_true")
    a = ap.parse_args()
    shards = sorted(glob.glob(f"{a.data}/*.tar"))
    ds = wds.WebDataset(shards, shardshuffle=False, empty_check=False).map(lambda s: preprocess(s, a.resolution, a.draft))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=a.workers, prefetch_factor=16)
    t0 = time.perf_counter()
    n = 0
    for img, _ in loader:
        n += 1
    dt = time.perf_counter() - t0
    print(json.dumps({"samples": n, "seconds": dt, "images_per_s": n / dt, "workers": a.workers}))


if __name__ == "__main__":
    main()
