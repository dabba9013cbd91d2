#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets, fuzz/corpus/<target>/, from small valid (and a few subtly broken)
inputs made with the reference libraries: safetensors, tokenizers' files, Pillow, tarfile. Deterministic: the same
bytes on every run, so the committed seeds only change when this script does. Crashing inputs found later are
added beside them by hand (named crash-*), and this script leaves those alone.

    python3 fuzz/make_corpus.py [--out fuzz/corpus]
"""
import argparse
import io
import json
import pathlib
import struct
import tarfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def safetensors_bytes(tensors, metadata=None):
    """A safetensors image by hand (the format is 8 + JSON + data), so odd but valid layouts are possible."""
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    yield "two_f32", safetensors_bytes({"a": ("F32", [2, 2], f32), "b": ("BF16", [2], b"\x80\x3f\x00\x40")},
                                       {"format": "pt"})
    yield "dtypes", safetensors_bytes({"i64": ("I64", [1], struct.pack("<q", -1)), "u8": ("U8", [3], b"abc"),
                                       "bool": ("BOOL", [1], b"\x01"), "f16": ("F16", [1], b"\x00\x3c"),
                                       "f64": ("F64", [], struct.pack("<d", 0.5))})
    yield "empty_tensor", safetensors_bytes({"e": ("F32", [0, 3], b"")})
    yield "no_tensors", safetensors_bytes({}, {"k": "v"})
    yield "overlap", safetensors_bytes({"a": ("F32", [1], f32[:4])})[:-2]  # data region shorter than declared
    yield "unknown_dtype", safetensors_bytes({"a": ("F8_E4M3", [4], f32[:4])})


def index_seeds():
    shards = {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}
    yield "valid", json.dumps({"metadata": {"total_size": 16}, "weight_map": shards})
    yield "one_shard", json.dumps({"weight_map": {"a.weight": "model-00001-of-00002.safetensors"}})
    yield "escape", json.dumps({"weight_map": {"c.weight": "../outside.safetensors"}})
    yield "absolute", json.dumps({"weight_map": {"c.weight": "/etc/passwd"}})
    yield "wrong_name", json.dumps({"weight_map": {"x.weight": "model-00001-of-00002.safetensors"}})
    yield "missing", json.dumps({"weight_map": {"a.weight": "nope.safetensors"}})


def tokenizer_json(vocab_size=120):
    """The tiny world's tokenizer cut to its first `vocab_size` ids (merges that stay inside them): small seeds."""
    full = json.loads((ROOT / "configs" / "world" / "tokenizer.json").read_text())
    vocab = {t: i for t, i in full["model"]["vocab"].items() if i < vocab_size}
    merges = []
    for m in full["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    full["model"]["vocab"], full["model"]["merges"] = vocab, merges
    for i, t in enumerate(full["added_tokens"]):
        t["id"] = vocab_size + i
    return full


def tokenizer_seeds():
    tok = tokenizer_json()
    yield "tiny_world", json.dumps(tok)
    no_norm = dict(tok, normalizer=None, post_processor=None, decoder=None, added_tokens=[])
    yield "bare", json.dumps(no_norm)
    pairs = dict(tok)
    pairs["model"] = dict(tok["model"], merges=[m.split(" ") if isinstance(m, str) else m for m in tok["model"]["merges"]])
    yield "merges_as_pairs", json.dumps(pairs)
    yield "bytelevel_only", json.dumps(dict(tok, pre_tokenizer={"type": "ByteLevel", "add_prefix_space": True,
                                                                "use_regex": True}))


def vocab_merges_seeds():
    tok = tokenizer_json()
    vocab = json.dumps({t: i for t, i in tok["model"]["vocab"].items()})
    merges = "#version: 0.2\n" + "\n".join(m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"])
    decoder = {str(t["id"]): {"content": t["content"], "special": True, "lstrip": False, "rstrip": False,
                              "single_word": False, "normalized": False} for t in tok["added_tokens"]}
    sep = "\n====\n"
    yield "vocab_merges", vocab + sep + merges
    yield "with_config", vocab + sep + merges + sep + json.dumps({"added_tokens_decoder": decoder,
                                                                  "add_prefix_space": False})
    added = {t["content"]: t["id"] for t in tok["added_tokens"]}
    yield "legacy_added", vocab + sep + merges + sep + json.dumps({"eos_token": "<|im_end|>"}) + sep + json.dumps(added)


def image_seeds():
    from PIL import Image, PngImagePlugin
    grad = Image.new("RGB", (7, 5))
    grad.putdata([(x * 30, y * 50, (x + y) * 20) for y in range(5) for x in range(7)])

    def save(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()
    info = PngImagePlugin.PngInfo()
    info.add_itxt("iomm-parameters", '{"prompt": "a red circle"}')
    info.add_text("Comment", "tEXt chunk")
    yield "rgb.png", save(grad, "PNG", pnginfo=info)
    yield "gray.png", save(grad.convert("L"), "PNG")
    yield "rgba.png", save(grad.convert("RGBA"), "PNG")
    pal = grad.convert("P", palette=Image.ADAPTIVE, colors=4)
    pal.info["transparency"] = 0
    yield "palette_trns.png", save(pal, "PNG", transparency=0)
    yield "gray16.png", save(grad.convert("I;16"), "PNG")
    yield "rgb.jpg", save(grad, "JPEG", quality=80)
    yield "gray.jpg", save(grad.convert("L"), "JPEG")
    yield "cmyk.jpg", save(grad.convert("CMYK"), "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6
    yield "exif_rotate.jpg", save(grad, "JPEG", exif=exif.tobytes())
    yield "progressive.jpg", save(grad, "JPEG", progressive=True)
    yield "lossy.webp", save(grad, "WEBP", quality=50)
    yield "lossless.webp", save(grad.convert("RGBA"), "WEBP", lossless=True)
    yield "exif_mirror.webp", save(grad, "WEBP", exif=exif.tobytes())


def tar_bytes(members, fmt=tarfile.USTAR_FORMAT):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=fmt) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return b.getvalue()


def webdataset_seeds():
    png = dict(image_seeds())["rgb.png"]
    st = safetensors_bytes({"x": ("F32", [1], b"\x00\x00\x80\x3f")})
    samples = [("000000.png", png), ("000000.txt", b"a red circle"),
               ("000001.jpg", png), ("000001.json", b'{"caption": "a blue square"}'),
               ("part/000002.webp", png), ("part/000002.json", b'{"prompt": 3}'),
               ("000003.features.safetensors", st), ("000003.txt", b"\xff\xfe not utf-8"),
               (".hidden", b"x"), ("noext", b"y"), ("000004.png", png), ("000004.png", png)]
    for mode in range(4):  # the first byte: bit 0 tolerant, bit 1 a required member (see webdataset_tar.cpp)
        yield f"mode{mode}", bytes([mode]) + tar_bytes(samples)
    yield "gnu_long_names", bytes([1]) + tar_bytes([("d" * 120 + "/000000.png", png), ("d" * 120 + "/000000.txt", b"x")],
                                                    tarfile.GNU_FORMAT)
    whole = tar_bytes(samples[:4])
    yield "cut_at_member", bytes([1]) + whole[:1536]
    yield "no_end_blocks", bytes([0]) + whole[:-1024]


def toml_seeds():
    for name in ["pretrain.toml", "finetune.toml", "iomm-tiny.toml", "stage-base.toml", "understanding.toml"]:
        text = (ROOT / "configs" / "world" / name).read_text()
        if name != "stage-base.toml":  # their base files are not beside run.toml in the fuzz target
            text = text.replace('base = "stage-base.toml"', 'base = "base.toml"')
        yield name, text
    yield "self_base.toml", 'base = "run.toml"\n[train]\nsteps = 3\n'
    yield "base_list.toml", 'base = ["base.toml", "base.toml"]\n[train]\nlr = 0.5\nstage = "finetune"\n'
    yield "types.toml", ('[model]\nsizes = [1, 2, 3]\nratios = [0.5, 1e300]\nname = "x"\n[data]\nshards = ["a", "b"]\n'
                         '[train]\nsteps = 9223372036854775807\nema = true\nwhen = 1979-05-27T07:32:00Z\n'
                         '[[train.list]]\nx = 1\n[t.u.v.w]\ny = inf\n')


def shapes_seeds():
    lines = [
        {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"},
        {"tag": "two_object", "include": [{"class": "circle", "count": 1}, {"class": "square", "count": 1}],
         "prompt": "a photo of a circle and a square"},
        {"tag": "counting", "include": [{"class": "triangle", "count": 3}],
         "exclude": [{"class": "triangle", "count": 4}], "prompt": "a photo of three triangles"},
        {"tag": "colors", "include": [{"class": "cross", "count": 1, "color": "red"}], "prompt": "a red cross"},
        {"tag": "position", "include": [{"class": "circle", "count": 1},
                                        {"class": "square", "count": 1, "position": ["left of", 0]}],
         "prompt": "a square left of a circle"},
        {"tag": "color_attr", "include": [{"class": "circle", "count": 1, "color": "blue"},
                                          {"class": "square", "count": 1, "color": "yellow"}],
         "prompt": "a blue circle and a yellow square"},
    ]
    for line in lines:
        yield line["tag"], json.dumps(line) + "\n"
    yield "many", "".join(json.dumps(line) + "\n" for line in lines)
    yield "bad_count", json.dumps(dict(lines[0], include=[{"class": "circle", "count": 1.5}])) + "\n"
    yield "crowded", json.dumps(dict(lines[2], include=[{"class": "circle", "count": 100}], exclude=[])) + "\n"


def serve_seeds():
    yield "gen_min", b"\x00" + json.dumps({"prompt": "a red circle"}).encode()
    yield "gen_full", b"\x00" + json.dumps({"prompt": "a red circle", "n": 2, "seed": 7, "steps": 20,
                                            "cfg_scale": 4.5, "sampler": "euler", "shift": 1.0, "stream": True,
                                            "preview": True, "model": "iomm-tiny", "size": "32x32",
                                            "response_format": "b64_json", "negative_prompt": ""}).encode()
    yield "gen_bad", b"\x00" + json.dumps({"prompt": "\u00e9" * 3, "n": 1e9, "seed": -1, "steps": "20"}).encode()
    yield "edit", b"\x01prompt=make it blue\nn=1\nseed=3\nsteps=10\ncfg_scale=2.5\nsampler=dpm\nshift=3\nstream=true"
    yield "edit_bad", b"\x01prompt=\xff\nsize=64x64\nseed=18446744073709551616"


TARGETS = {"safetensors_file": safetensors_seeds, "safetensors_index": index_seeds, "tokenizer_json": tokenizer_seeds,
           "tokenizer_vocab_merges": vocab_merges_seeds, "image_decode": image_seeds,
           "webdataset_tar": webdataset_seeds, "toml_config": toml_seeds, "shapes_metadata": shapes_seeds,
           "serve_request": serve_seeds}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "fuzz" / "corpus")
    args = ap.parse_args()
    for target, seeds in TARGETS.items():
        d = args.out / target
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        n = 0
        for name, data in seeds():
            (d / f"seed-{name}").write_bytes(data.encode() if isinstance(data, str) else data)
            n += 1
        print(f"{target}: {n} seeds")


if __name__ == "__main__":
    main()
