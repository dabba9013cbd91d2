"""Image decoding, resizing and centre-cropping against Pillow 13 (and torchvision's Resize/CenterCrop rules).

Every reference image is generated here with fixed seeds. `iomm image convert ... --out-dir` converts a whole
group per call (the binary's start-up dominates otherwise); its PNGs are compared with what Pillow produces from
the same files. Measured on this stack: every comparison is bit-exact (max |diff| = 0). JPEG and lossy WebP are
allowed 1/255 because Pillow's wheel bundles its own libjpeg-turbo / libwebp, which may differ from the system's.
"""
import io
import pathlib
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin

from conftest import run_iomm

MODES_OUT = {"1": "L", "L": "L", "I;16": "L", "RGB": "RGB", "CMYK": "RGB", "LA": "RGBA", "RGBA": "RGBA"}


def smooth(h, w, c, phase=0.0):
    y, x = np.mgrid[0:h, 0:w]
    chans = [127 + 120 * np.sin(x / (3 + 0.07 * w) + i + phase) * np.cos(y / (2 + 0.05 * h) - i) for i in range(c)]
    return np.stack(chans, -1).clip(0, 255).astype(np.uint8)


def noise(h, w, c, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def pil_image(a, mode):
    return Image.fromarray(a[..., 0] if mode == "L" else a, mode)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png_raw(path, a, depth, color_type, interlace=False):
    """Minimal PNG writer for what Pillow cannot write: 16-bit RGB/RGBA and Adam7-interlaced files."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    h, w = a.shape[:2]
    a = a.astype(">u2" if depth == 16 else np.uint8)
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = a[y0::dy, x0::dx]
        if sub.shape[0] and sub.shape[1]:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) +
                     chunk(b"IEND", b""))


def pillow_decoded(path):
    """What iomm's decoder must return: exif_transpose(Image.open(p)) in the mode iomm maps it to."""
    im = ImageOps.exif_transpose(Image.open(path))
    if im.mode == "P":
        mode = "RGBA" if "transparency" in im.info else "RGB"
    else:
        mode = MODES_OUT[im.mode]
    return np.asarray(im.convert(mode))


def convert_all(tmp_path, name, inputs, *opts):
    out = tmp_path / name
    run_iomm("--log-level", "warn", "image", "convert", *inputs, "--out-dir", out, *opts)
    return {p: np.asarray(Image.open(out / (pathlib.Path(p).stem + ".png"))) for p in inputs}


def max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(int) - b.astype(int)).max())


# ------------------------------------------------------------------------------------------------ decoding

def make_decode_cases(d):
    """Returns {path: allowed max |diff|}."""
    cases = {}
    sizes = [(1, 1), (7, 13), (97, 61), (640, 427)]

    def add(name, tol, save):
        p = d / name
        save(p)
        cases[str(p)] = tol

    for i, (w, h) in enumerate(sizes):
        rgb = smooth(h, w, 3) if i % 2 else noise(h, w, 3, i)
        rgba = np.concatenate([rgb, noise(h, w, 1, 100 + i)], -1)
        add(f"png_l_{w}x{h}.png", 0, lambda p: pil_image(rgb, "L").save(p))
        add(f"png_rgb_{w}x{h}.png", 0, lambda p: pil_image(rgb, "RGB").save(p))
        add(f"png_rgba_{w}x{h}.png", 0, lambda p: pil_image(rgba, "RGBA").save(p))
        add(f"png_la_{w}x{h}.png", 0, lambda p: pil_image(rgba, "RGBA").convert("LA").save(p))
        add(f"png_1bit_{w}x{h}.png", 0, lambda p: pil_image(rgb, "L").convert("1").save(p))
        add(f"png_pal_{w}x{h}.png", 0, lambda p: pil_image(rgb, "RGB").quantize(37).save(p))
        add(f"png_paltrns_{w}x{h}.png", 0, lambda p: pil_image(rgb, "RGB").quantize(37).save(p, transparency=5))
        add(f"png_interlaced_{w}x{h}.png", 0, lambda p: write_png_raw(p, rgba, 8, 6, interlace=True))
        add(f"png_g16_{w}x{h}.png", 0,
            lambda p: write_png_raw(p, np.random.default_rng(i).integers(0, 65536, (h, w)), 16, 0))
        add(f"png_rgb16_{w}x{h}.png", 0,
            lambda p: write_png_raw(p, np.random.default_rng(i).integers(0, 65536, (h, w, 3)), 16, 2))
        add(f"png_rgba16_{w}x{h}.png", 0,
            lambda p: write_png_raw(p, np.random.default_rng(i).integers(0, 65536, (h, w, 4)), 16, 6))
        add(f"jpg_gray_{w}x{h}.jpg", 1, lambda p: pil_image(rgb, "L").save(p, quality=90))
        add(f"jpg_rgb_{w}x{h}.jpg", 1, lambda p: pil_image(rgb, "RGB").save(p, quality=90))
        add(f"jpg_prog420_{w}x{h}.jpg", 1,
            lambda p: pil_image(rgb, "RGB").save(p, quality=90, progressive=True, subsampling=2))
        add(f"jpg_cmyk_{w}x{h}.jpg", 1, lambda p: pil_image(rgb, "RGB").convert("CMYK").save(p, quality=90))
        add(f"webp_lossy_{w}x{h}.webp", 1, lambda p: pil_image(rgb, "RGB").save(p, quality=80))
        add(f"webp_lossyalpha_{w}x{h}.webp", 1, lambda p: pil_image(rgba, "RGBA").save(p, quality=80))
        add(f"webp_lossless_{w}x{h}.webp", 0, lambda p: pil_image(rgb, "RGB").save(p, lossless=True))
        add(f"webp_losslessalpha_{w}x{h}.webp", 0, lambda p: pil_image(rgba, "RGBA").save(p, lossless=True))

    # EXIF orientations on a non-square image, where a wrong rotation changes the shape.
    rgb = smooth(61, 97, 3, phase=1.0)
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        add(f"jpg_exif{o}.jpg", 1, lambda p: pil_image(rgb, "RGB").save(p, quality=90, exif=exif.tobytes()))
        add(f"jpg_gray_exif{o}.jpg", 1, lambda p: pil_image(rgb, "L").save(p, quality=90, exif=exif.tobytes()))
        add(f"webp_exif{o}.webp", 0, lambda p: pil_image(rgb, "RGB").save(p, lossless=True, exif=exif.tobytes()))
        add(f"png_exif{o}.png", 0, lambda p: pil_image(rgb, "RGB").save(p, exif=exif.tobytes()))
    # Without an EXIF orientation, Pillow takes it from the XMP packet.
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    add("jpg_xmp6.jpg", 1, lambda p: pil_image(rgb, "RGB").save(p, quality=90, xmp=xmp))
    add("webp_xmp6.webp", 0, lambda p: pil_image(rgb, "RGB").save(p, lossless=True, xmp=xmp))
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta><tiff:Orientation>8</tiff:Orientation></x:xmpmeta>")
    add("png_xmp8.png", 0, lambda p: pil_image(rgb, "RGB").save(p, pnginfo=info))
    # EXIF orientation 1 wins over an XMP 6.
    exif = Image.Exif()
    exif[0x0112] = 1
    add("jpg_exif1xmp6.jpg", 1, lambda p: pil_image(rgb, "RGB").save(p, quality=90, exif=exif.tobytes(), xmp=xmp))
    return cases


def test_decode_matches_pillow_exif_transpose(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cases = make_decode_cases(src)
    got = convert_all(tmp_path, "dec", list(cases))
    worst = {}
    for path, tol in cases.items():
        ref = pillow_decoded(path)
        assert got[path].shape == ref.shape, (path, got[path].shape, ref.shape)
        d = max_diff(got[path], ref)
        kind = pathlib.Path(path).stem.split("_")[0] + "_" + pathlib.Path(path).stem.split("_")[1]
        worst[kind] = max(worst.get(kind, 0), d)
        assert d <= tol, f"{path}: max |diff| {d} > {tol}"
    print("decode max |diff| by kind:", worst)


def test_mode_conversion_matches_pillow(tmp_path):
    rgba = np.concatenate([noise(13, 7, 3, 1), noise(13, 7, 1, 2)], -1)
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    for mode, pil_mode in (("rgb", "RGB"), ("gray", "L"), ("rgba", "RGBA")):
        got = convert_all(tmp_path, mode, [str(p)], "--mode", mode)[str(p)]
        assert max_diff(got, np.asarray(Image.open(p).convert(pil_mode))) == 0, mode
    g = tmp_path / "g.png"
    Image.fromarray(noise(5, 9, 1, 3)[..., 0], "L").save(g)
    got = convert_all(tmp_path, "g2rgb", [str(g)], "--mode", "rgb")[str(g)]
    assert max_diff(got, np.asarray(Image.open(g).convert("RGB"))) == 0


def test_truncated_and_bogus_files_fail_like_pillow(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(noise(128, 128, 3, 7)).save(buf, "JPEG", quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    with pytest.raises(OSError):
        Image.open(cut).load()
    proc = run_iomm("image", "convert", cut, tmp_path / "o.png", check=False)
    assert proc.returncode != 0 and str(cut) in proc.stderr and "truncated" in proc.stderr, proc.stderr

    txt = tmp_path / "notes.png"
    txt.write_text("not an image at all")
    proc = run_iomm("image", "convert", txt, tmp_path / "o.png", check=False)
    assert proc.returncode != 0 and str(txt) in proc.stderr, proc.stderr
    assert not (tmp_path / "o.png").exists()


# ------------------------------------------------------------------------------------------------ resizing

# (40, 300) -> (64, 17) and (7, 13) -> (5, 4) take Pillow 13's vertical-pass-first branch.
RESIZE_SOURCES = [(640, 427), (97, 61), (7, 13), (1, 1), (300, 2), (64, 64), (40, 300)]
RESIZE_TARGETS = [(224, 224), (300, 200), (3, 5), (5, 4), (64, 17)]
FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


@pytest.fixture(scope="module")
def resize_sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("resize_src")
    paths = []
    for i, (w, h) in enumerate(RESIZE_SOURCES):
        for mode, c in (("L", 1), ("RGB", 3), ("RGBA", 4)):
            a = noise(h, w, c, 10 * i + c) if i % 2 == 0 else smooth(h, w, c, phase=0.3 * i)
            p = d / f"{mode}_{w}x{h}.png"
            pil_image(a, mode).save(p)
            paths.append(str(p))
    return paths


@pytest.mark.parametrize("filt", list(FILTERS))
@pytest.mark.parametrize("target", RESIZE_TARGETS, ids=lambda t: f"{t[0]}x{t[1]}")
def test_resize_matches_pillow(tmp_path, resize_sources, target, filt):
    got = convert_all(tmp_path, "r", resize_sources, "--resize", f"{target[0]}x{target[1]}", "--filter", filt)
    worst = 0
    for p in resize_sources:
        ref = np.asarray(Image.open(p).resize(target, FILTERS[filt]))
        d = max_diff(got[p], ref)
        worst = max(worst, d)
        assert d <= 1, f"{p} -> {target} {filt}: max |diff| {d}"
    print(f"resize {filt} -> {target}: max |diff| {worst}")
    assert worst == 0  # bit-exact on this stack; the 1/255 bound above is the contract


@pytest.mark.parametrize("filt", ["bilinear", "bicubic"])
def test_resize_random_sizes_match_pillow(tmp_path, filt):
    rng = np.random.default_rng(1234 if filt == "bilinear" else 4321)
    src = tmp_path / "src"
    src.mkdir()
    for t in range(4):
        target = tuple(int(v) for v in rng.integers(1, 150, 2))
        paths = []
        for i in range(12):
            w, h = (int(v) for v in rng.integers(1, 200, 2))
            mode, c = (("L", 1), ("RGB", 3), ("RGBA", 4))[i % 3]
            p = src / f"{t}_{i}.png"
            pil_image(rng.integers(0, 256, (h, w, c), dtype=np.uint8), mode).save(p)
            paths.append(str(p))
        got = convert_all(tmp_path, f"o{t}", paths, "--resize", f"{target[0]}x{target[1]}", "--filter", filt)
        for p in paths:
            ref = np.asarray(Image.open(p).resize(target, FILTERS[filt]))
            assert max_diff(got[p], ref) == 0, (p, Image.open(p).size, target, filt)


def torchvision_resize_center_crop(im, size, resample):
    """torchvision Resize(size) + CenterCrop(size) on a PIL image, written out from its documented rules."""
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    nw, nh = (size, new_long) if w <= h else (new_long, size)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), resample)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    return np.asarray(im.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize("filt", ["bilinear", "bicubic"])
def test_shorter_side_resize_center_crop_matches_torchvision_rules(tmp_path, filt):
    d = tmp_path / "src"
    d.mkdir()
    paths = []
    for i, (w, h) in enumerate([(640, 427), (427, 640), (97, 61), (61, 97), (512, 512), (1023, 700), (600, 601)]):
        mode = ("RGB", "L", "RGBA")[i % 3]
        c = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        a = noise(h, w, c, i) if i % 2 else smooth(h, w, c)
        p = d / f"{i}_{w}x{h}.png"
        pil_image(a, mode).save(p)
        paths.append(str(p))
    for size in (512, 64):
        got = convert_all(tmp_path, f"cc{size}", paths, "--center-crop", size, "--filter", filt)
        for p in paths:
            ref = torchvision_resize_center_crop(Image.open(p), size, FILTERS[filt])
            assert max_diff(got[p], ref) == 0, (p, size, filt)


def test_jpeg_draft_matches_pillow_draft(tmp_path):
    """`--jpeg-draft` (the loader's data.jpeg_draft) decodes a JPEG at 1/2, 1/4 or 1/8 scale in libjpeg's DCT domain
    exactly as Pillow's Image.draft(mode, (n, n)) does, before the same resize and centre crop; images under twice
    the size decode whole. Sizes straddle the scale thresholds (511 vs 512 for n = 128: Pillow picks 1/2 and 1/4)."""
    d = tmp_path / "src"
    d.mkdir()
    paths = []
    for i, (w, h) in enumerate([(512, 512), (511, 700), (640, 480), (1023, 767), (333, 501), (200, 150)]):
        mode = "L" if i == 3 else "RGB"
        p = d / f"{i}_{w}x{h}.jpg"
        pil_image(smooth(h, w, 1 if mode == "L" else 3, phase=i), mode).save(p, quality=90)
        paths.append(str(p))
    rotated = d / "6_rot.jpg"  # EXIF orientation 6: the draft scales before the transpose
    exif = Image.Exif()
    exif[0x0112] = 6
    pil_image(smooth(480, 640, 3), "RGB").save(rotated, quality=90, exif=exif)
    paths.append(str(rotated))
    for size in (128, 100):
        got = convert_all(tmp_path, f"draft{size}", paths, "--center-crop", size, "--jpeg-draft")
        exact = convert_all(tmp_path, f"exact{size}", paths, "--center-crop", size)
        scaled = 0
        for p in paths:
            im = Image.open(p)
            before = im.size
            im.draft(im.mode, (size, size))
            scaled += im.size != before
            ref = torchvision_resize_center_crop(ImageOps.exif_transpose(im), size, Image.BICUBIC)
            assert max_diff(got[p], ref) <= 1, (p, size, before, im.size)  # 1/255: Pillow bundles its libjpeg
            if im.size != before:
                assert max_diff(got[p], exact[p]) > 0, p  # the draft really ran
        assert scaled >= 5, scaled
