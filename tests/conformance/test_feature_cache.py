"""`iomm cache` end to end on a tiny world: the shards hold what diffusers' AutoencoderKL gives as the posterior MEAN
(scaled and shifted, on Pillow's shorter-side resize + centre crop), the caption's templated token ids as the
tokenizers library gives them, and a manifest; a killed or --limit-ed run resumed gives the bytes of an uninterrupted
one; ranks split the input units and combine; a cache of other autoencoder weights is refused naming it."""
import io
import json
import os
import signal
import subprocess
import tarfile
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load as load_safetensors

from conftest import ROOT, iomm_bin, run_iomm

diffusers = pytest.importorskip("diffusers")
tokenizers = pytest.importorskip("tokenizers")

MLLM = ROOT / "tests" / "fixtures" / "iomm_step" / "mllm"  # a tiny InternVL (-hf layout) with its tokenizer
RES = 16


def make_vae(out, perturb=0.0):
    torch.manual_seed(3)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
        latent_channels=16, norm_num_groups=32, scaling_factor=0.3611, shift_factor=0.1159,
        use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.2)
        vae.encoder.conv_in.weight[0, 0, 0, 0] += perturb
    vae.save_pretrained(out, safe_serialization=True)
    return vae


def model_toml(path, vae_dir):
    path.write_text(f"""[model]
mllm = "{MLLM}"
autoencoder = "{vae_dir}"
resolution = {RES}
[generator]
hidden_size = 16
num_heads = 2
depth = 1
depth_single_blocks = 1
axes_dim = [2, 2, 4]
latent_channels = 16
patch_size = 2
[conditioner]
num_queries = 4
num_heads = 4
""")
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    run_iomm("world", "make", "--out", d / "world", "--image-only", 16, "--captioned", 12, "--shard-size", 4)
    vae = make_vae(d / "vae")
    make_vae(d / "vae_other", perturb=1e-3)
    return dict(dir=d, world=d / "world", vae=vae, model=model_toml(d / "model.toml", d / "vae"),
                other=model_toml(d / "other.toml", d / "vae_other"))


def cache(env, out, data="image", *extra, check=True):
    return run_iomm("cache", "--model", env["model"], "--data", env["world"] / data, "--out", out, *extra, check=check)


def shard_bytes(d):
    return {p.name: p.read_bytes() for p in sorted(d.glob("features-*.tar"))}


def members(tar_path):
    with tarfile.open(tar_path) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}


def pillow_preprocess(png_bytes):
    """Shorter side to RES (bicubic), centre crop, as data::training_image; [-1, 1]."""
    img = Image.open(io.BytesIO(png_bytes)).convert("RGB")
    w, h = img.size
    s = RES / min(w, h)
    img = img.resize((max(RES, round(w * s)), max(RES, round(h * s))), Image.BICUBIC)
    left, top = (img.width - RES) // 2, (img.height - RES) // 2
    img = img.crop((left, top, left + RES, top + RES))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)
    return x / 127.5 - 1


def vit_pixels(images, tile):
    """OpenUni's preprocessing: [-1,1] -> [0,1] -> ImageNet normalisation -> bilinear to the tile (no antialias)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    x = ((images + 1) / 2 - mean) / std
    return torch.nn.functional.interpolate(x, size=(tile, tile), mode="bilinear", align_corners=False)


def reference_image_tokens(images):
    """c_img as transformers' InternVL computes it (InternViT, pixel shuffle, mlp1), unmasked."""
    transformers = pytest.importorskip("transformers")
    m = transformers.InternVLForConditionalGeneration.from_pretrained(MLLM).eval()
    with torch.no_grad():
        return m.model.get_image_features(pixel_values=vit_pixels(images, m.config.vision_config.image_size[0]),
                                          vision_feature_layer=-1,
                                          vision_feature_select_strategy="default").pooler_output


def test_shards_hold_mean_latents_token_ids_and_a_manifest(env, tmp_path):
    out = tmp_path / "c"
    cache(env, out, "captioned", "--batch-size", 3)
    m = json.loads((out / "manifest.json").read_text())
    assert m["finished"] and m["latent"] == "mean" and m["fingerprints"]["resolution"] == RES
    assert m["counts"]["samples"] == 12 and m["counts"]["captions"] == 12 and m["counts"]["skipped"] == {}
    assert [s["name"] for s in m["shards"]] == [f"features-{i:06d}.tar" for i in range(3)]
    assert m["shapes"]["latents"] == [16, RES // 2, RES // 2] and m["shapes"]["c_img"] == [16, 32]
    assert "centre crop" in m["preprocess"] and m["fingerprints"]["autoencoder"].startswith("fnv1a64:")
    tok = tokenizers.Tokenizer.from_file(str(MLLM / "tokenizer.json"))
    src = members(sorted((env["world"] / "captioned").glob("*.tar"))[0])
    got = members(out / "features-000000.tar")
    keys = sorted({n.split(".")[0] for n in got})
    assert len(keys) == 4 and set(got) == {f"{k}.{e}" for k in keys for e in ("features.safetensors", "txt")}
    images = torch.stack([pillow_preprocess(src[f"{k}.png"]) for k in keys])
    with torch.no_grad():
        mean = env["vae"].encode(images).latent_dist.mean
    want = (mean - 0.1159) * 0.3611
    want_tokens = reference_image_tokens(images)
    for i, k in enumerate(keys):
        t = load_safetensors(got[f"{k}.features.safetensors"])
        assert t["latents"].dtype == torch.float32 and t["c_img"].shape == (16, 32)
        err = (t["latents"] - want[i]).abs().max().item()
        assert err < 2e-3, f"{k}: latents differ from diffusers' scaled posterior mean by {err}"
        err = (t["c_img"] - want_tokens[i]).abs().max().item()
        assert err < 2e-3, f"{k}: c_img differs from transformers' unmasked image features by {err}"
        caption = got[f"{k}.txt"].decode()
        assert caption == src[f"{k}.txt"].decode()
        prompt = f"<|im_start|>user\nGenerate an image: {caption}<|im_end|>\n<|im_start|>assistant\n<img>"
        assert t["input_ids"].tolist() == tok.encode(prompt).ids


def test_killed_and_limited_runs_resume_to_the_same_bytes(env, tmp_path):
    ref = tmp_path / "ref"
    cache(env, ref, "image", "--batch-size", 1)  # every run of this test batches alike: bytes compare exactly
    assert len(shard_bytes(ref)) == 4
    # --limit stops inside the second shard (recorded partial); the rerun redoes it and continues.
    limited = tmp_path / "limited"
    cache(env, limited, "image", "--batch-size", 1, "--limit", 6)
    m = json.loads((limited / "manifest.json").read_text())
    assert m["counts"]["samples"] == 6 and m["shards"][1]["partial"] and m["finished"]
    cache(env, limited, "image", "--batch-size", 1)
    assert shard_bytes(limited) == shard_bytes(ref)
    assert (limited / "manifest.json").read_bytes() == (ref / "manifest.json").read_bytes()
    # A real SIGKILL once the first shard is recorded; leftovers of a torn write are there too.
    killed = tmp_path / "killed"
    proc = subprocess.Popen([iomm_bin(), "cache", "--model", env["model"], "--data", env["world"] / "image",
                             "--out", killed, "--batch-size", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        mf = killed / "manifest.json"
        if mf.exists() and json.loads(mf.read_text())["shards"]:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    rc = proc.wait()
    (killed / "features-000003.tar.tmp").write_bytes(b"torn")
    m = json.loads((killed / "manifest.json").read_text())
    print(f"killed with rc {rc} after {len(m['shards'])} shard(s)")
    if rc == -signal.SIGKILL:
        assert not m["finished"]
    cache(env, killed, "image", "--batch-size", 1)
    assert shard_bytes(killed) == shard_bytes(ref)
    assert (killed / "manifest.json").read_bytes() == (ref / "manifest.json").read_bytes()
    assert not list(killed.glob("*.tmp"))


def test_ranks_split_units_and_combine(env, tmp_path):
    ref, split = tmp_path / "ref", tmp_path / "split"
    cache(env, ref, "image")
    cache(env, split, "image", "--rank", 1, "--world-size", 2)
    assert sorted(shard_bytes(split)) == ["features-000001.tar", "features-000003.tar"]
    p = run_iomm("cache", "--check", "--model", env["model"], "--out", split, check=False)
    assert p.returncode != 0 and "manifest.rank-0.json is missing" in p.stderr
    cache(env, split, "image", "--rank", 0, "--world-size", 2)
    assert shard_bytes(split) == shard_bytes(ref)
    assert sorted(p.name for p in split.glob("manifest*")) == ["manifest.rank-0.json", "manifest.rank-1.json"]
    p = run_iomm("cache", "--check", "--model", env["model"], "--out", split)
    assert "16 samples" in p.stderr + p.stdout


def test_other_autoencoder_weights_are_refused(env, tmp_path):
    out = tmp_path / "c"
    cache(env, out, "image", "--limit", 4)
    p = run_iomm("cache", "--check", "--model", env["other"], "--out", out, check=False)
    assert p.returncode != 0 and "autoencoder fingerprint" in p.stderr and "iomm cache" in p.stderr, p.stderr
    assert "resolution" not in p.stderr and "tokenizer" not in p.stderr
    # Resuming into it with the other weights is refused too, before anything is written.
    before = shard_bytes(out)
    p = run_iomm("cache", "--model", env["other"], "--data", env["world"] / "image", "--out", out, check=False)
    assert p.returncode != 0 and "autoencoder fingerprint" in p.stderr, p.stderr
    assert shard_bytes(out) == before
    p = run_iomm("cache", "--check", "--model", env["model"], "--set", "model.resolution=32", "--out", out,
                 check=False)
    assert p.returncode != 0 and "resolution 16 (this run: 32)" in p.stderr, p.stderr


def test_every_data_spec_form_and_damage_counted_by_cause_as_the_stream_does(env, tmp_path):
    """`iomm cache --data` resolves and reads its input with the training stream's code: a shard list (.txt) with a
    truncated shard and a shard of bad samples is cached with the samples `iomm data scan` finds usable, and the
    same skips by cause; a JSONL index of image files caches the same features as the folder of those files."""
    src = sorted((env["world"] / "image").glob("*.tar"))
    data = tmp_path / "data"
    data.mkdir()
    for p in src[:3]:
        (data / p.name).write_bytes(p.read_bytes())
    cut = data / src[1].name
    # Inside its third sample's image data: the reader keeps the first two (the third's header, read whole, names
    # another key, so the second is complete).
    cut.write_bytes(cut.read_bytes()[: 512 * 5 + 100])
    with tarfile.open(data / "bad.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, payload in [("x.png", b"not an image"), ("y.json", b"{}"), ("z.png", members(src[3])[
                sorted(members(src[3]))[0]])]:
            ti = tarfile.TarInfo(name)
            ti.size = len(payload)
            tf.addfile(ti, io.BytesIO(payload))
    listing = tmp_path / "shards.txt"
    listing.write_text("".join(f"data/{n}\n" for n in [src[0].name, src[1].name, "bad.tar", src[2].name]))
    out = tmp_path / "c"
    run_iomm("cache", "--model", env["model"], "--data", listing, "--out", out)
    m = json.loads((out / "manifest.json").read_text())
    scan = run_iomm("data", "scan", "--data", listing, "--resolution", RES, "--json")
    s = json.loads(scan.stdout.strip().splitlines()[-1])
    assert m["input_units"] == 4 and m["unit"] == "tar" and len(m["shards"]) == 4
    assert m["counts"]["samples"] == s["samples"] == 4 + 2 + 1 + 4, (m["counts"], s)
    assert m["counts"]["skipped"] == s["skipped"] == {"damaged_shard": 1, "no_image": 1, "undecodable": 1}, \
        (m["counts"], s)
    assert m["shards"][1]["skipped"] == {"damaged_shard": 1} and m["shards"][2]["samples"] == 1
    # A JSONL index of the image files, and the folder holding them, cache the same features.
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, payload in sorted(members(src[0]).items()):
        if name.endswith(".png"):
            (folder / name).write_bytes(payload)
    index = tmp_path / "index.jsonl"
    index.write_text("".join(json.dumps({"image": f"folder/{p.name}"}) + "\n" for p in sorted(folder.glob("*.png"))))
    run_iomm("cache", "--model", env["model"], "--data", index, "--out", tmp_path / "ci", "--batch-size", 1)
    run_iomm("cache", "--model", env["model"], "--data", folder, "--out", tmp_path / "cf", "--batch-size", 1)
    by_index, by_folder = members(tmp_path / "ci/features-000000.tar"), members(tmp_path / "cf/features-000000.tar")
    assert sorted(by_index) == [f"folder/{k}" for k in sorted(by_folder)]  # keys: paths relative to the index
    assert [by_index[k] for k in sorted(by_index)] == [by_folder[k] for k in sorted(by_folder)]
    # A cache is not images: giving one as --data is refused, naming it.
    p = run_iomm("cache", "--model", env["model"], "--data", out, "--out", tmp_path / "again", check=False)
    assert p.returncode != 0 and "is a feature cache" in p.stderr, p.stderr


def test_iomm_train_on_caches_matches_training_on_the_images(env, tmp_path):
    """`iomm train` with data.images / data.pairs pointing at caches (pixel space: the identity autoencoder, so the
    recon grid's input column, the cache's decoded latents, is the images themselves): the same per-step losses
    as on the images and the same sample grid, byte for byte."""
    model = tmp_path / "pixel.toml"
    head = env["model"].read_text().split("[generator]")[0]
    model.write_text(head.replace(f'autoencoder = "{env["dir"] / "vae"}"\n', "")
                     + "[generator]\nhidden_size = 16\nnum_heads = 2\ndepth = 1\ndepth_single_blocks = 1\n"
                     "axes_dim = [2, 2, 4]\nlatent_channels = 3\npatch_size = 4\n"
                     "[conditioner]\nnum_queries = 4\nnum_heads = 4\n")
    assert "autoencoder" not in model.read_text()
    for src, out in [("image", "ci"), ("captioned", "cp")]:
        run_iomm("cache", "--model", model, "--data", env["world"] / src, "--out", tmp_path / out)
    runs = {}
    for name, images, pairs in [("img", env["world"] / "image", env["world"] / "captioned"),
                                ("cache", tmp_path / "ci", tmp_path / "cp")]:
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(f'[train]\nstage = "pretrain"\ndata = "mix"\nsteps = 3\nbatch_size = 4\nlog_every = 1\n'
                       f'sample_every = 3\nthreads = 1\n'
                       f'[data]\nimages = "{images}"\npairs = "{pairs}"\nshuffle_buffer = 8\n')
        run_iomm("train", "--config", model, "--config", cfg, "--out", tmp_path / name)
        rows = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = ([r["loss"] for r in rows], (tmp_path / name / "samples/step-00000003-recon.png").read_bytes())
    assert len(runs["img"][0]) == 3
    assert runs["cache"][0] == pytest.approx(runs["img"][0], rel=1e-5), runs
    assert runs["cache"][1] == runs["img"][1]
