"""The PyTorch peer of `iomm bench` (bench/peer/) computes what iomm computes, and its checks have teeth.

- Golden fixture (tests/fixtures/iomm_step, pinned by an independent reference): the peer's objective reproduces the
  expected loss and the 10 AdamW steps; a flipped MIM mask, the other prediction mode or other tokens fail its check.
- `iomm bench train|generate --dump` on the tiny world's IOMM with the tiny preset's MLLM
  (bench/peer/make_checkpoints.py): `peer.py --check` passes on iomm's dump (losses, images) and fails on a
  corrupted one.
The peer runs in this process (its CLI's main()), so transformers and diffusers are imported once. No timing is
asserted.
"""
import json
import re
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT, run_iomm

pytest.importorskip("transformers")
pytest.importorskip("diffusers")

sys.path.insert(0, str(ROOT / "bench" / "peer"))
import make_checkpoints  # noqa: E402
import peer as peer_cli  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "iomm_step"
TINY_CONFIG = ROOT / "configs" / "world" / "iomm-tiny.toml"  # the tiny world's IOMM (pixel space, x-prediction)
GOLDEN_RTOL = 1e-5


def run_peer(capsys, *args):
    """peer.py ARGS --json in this process: (exit status, the JSON result)."""
    capsys.readouterr()  # what the test printed before
    rc = peer_cli.main([str(a) for a in args] + ["--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if out.strip() else None)


def copy_dump(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def flip_keep(d):
    t = load_file(str(d / "batch.safetensors"))
    assert t["keep"].numel() > 0, "the batch has no self-conditioned sample; MIM is not exercised"
    t["keep"] = ~t["keep"]
    save_file(t, str(d / "batch.safetensors"))


def flip_prediction(d):
    """velocity <-> data (x-prediction) in the model's iomm.toml."""
    toml = d / "model" / "iomm.toml"
    text, n = re.subn(r"""^prediction = (["'])(velocity|data)\1""",
                      lambda m: f'prediction = "{"data" if m.group(2) == "velocity" else "velocity"}"',
                      toml.read_text(), flags=re.M)
    if n == 0:  # absent: iomm's default, velocity
        text = text.replace("[model]\n", '[model]\nprediction = "data"\n', 1)
    toml.write_text(text)


def edit_condition_text(d):
    meta = json.loads((d / "batch.json").read_text())
    for c in meta["conditions"]:
        if c["kind"] == "text":
            c["text"] = c["text"] + " please"
            break
    else:
        meta["conditions"][0] = {"kind": "uncond", "text": ""}
    (d / "batch.json").write_text(json.dumps(meta))


# ------------------------------------------------------------------------------------------------ golden fixture

@pytest.fixture(scope="module")
def golden_dump(tmp_path_factory):
    """The golden fixture in the layout of `iomm bench train --dump`: the generator converted to diffusers names by
    `iomm convert`, the fixture's inputs and ids as the batch, its AdamW losses as iomm's."""
    d = tmp_path_factory.mktemp("golden") / "dump"
    shutil.copytree(FIXTURE / "model", d / "model")
    shutil.copytree(FIXTURE / "mllm", d / "mllm")  # iomm.toml: mllm = "../mllm"
    run_iomm("convert", "--component", "mmdit", "--model", FIXTURE / "model" / "generator",
             "--out", d / "generator-diffusers", "--format", "diffusers")
    inputs, expected = load_file(str(FIXTURE / "inputs.safetensors")), load_file(str(FIXTURE / "expected.safetensors"))
    save_file(dict(inputs, input_ids=expected["input_ids"], attention_mask=expected["attention_mask"]),
              str(d / "batch.safetensors"))
    meta = json.loads((FIXTURE / "batch.json").read_text())
    losses = expected["adamw_losses"].tolist()  # loss k before update k: the same as a bench step's loss
    (d / "batch.json").write_text(json.dumps(dict(conditions=meta["conditions"], optim=meta["optim"], ema_decay=0.999,
                                                  warmup=0, steps=len(losses), threads=1)))
    (d / "bench.json").write_text(json.dumps(dict(impl="reference", kind="train", losses=losses)))
    return d, expected


@pytest.mark.parametrize("llm_pass", ["cached", "full"])
def test_peer_reproduces_the_golden_objective(golden_dump, capsys, llm_pass):
    d, expected = golden_dump
    rc, r = run_peer(capsys, "train", "--dir", d, "--check", "--llm-pass", llm_pass)
    assert rc == 0 and r["check"] == "ok"
    want = expected["loss"].item()
    err = abs(r["first_loss"] - want) / abs(want)
    print(f"{llm_pass}: first loss {r['first_loss']:.8f} vs {want:.8f} (relative error {err:.1e})")
    assert err <= GOLDEN_RTOL
    assert len(r["losses"]) == len(expected["adamw_losses"])
    assert {"impl", "kind", "batch_size", "warmup", "steps", "threads", "step_seconds", "times", "samples_per_s",
            "peak_rss_bytes", "losses", "first_loss"} <= r.keys()


@pytest.mark.parametrize("breakage", [flip_keep, flip_prediction], ids=["mim-mask", "prediction"])
def test_golden_check_fails_when_the_peer_computes_something_else(golden_dump, tmp_path, capsys, breakage):
    d = copy_dump(golden_dump[0], tmp_path / "dump")
    breakage(d)
    rc, r = run_peer(capsys, "train", "--dir", d, "--check", "--steps", 2)
    assert rc == peer_cli.EXIT_CHECK and r["check"] == "failed"


def test_golden_tokens_are_checked(golden_dump, tmp_path, capsys):
    d = copy_dump(golden_dump[0], tmp_path / "dump")
    edit_condition_text(d)
    with pytest.raises(AssertionError, match="tokenisation differs"):
        run_peer(capsys, "train", "--dir", d, "--steps", 1)


# ------------------------------------------------------------------------------------------------ iomm bench

def has_bench():
    return "bench" in run_iomm("--help").stdout


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    if not has_bench():
        pytest.fail("this iomm has no `bench` command (rebuild: make build)")
    d = tmp_path_factory.mktemp("tiny_ck")
    torch.manual_seed(0)
    make_checkpoints.write_mllm(d / "mllm", "tiny")
    return d


def bench_args(kind, ck, dump, *extra):
    return ["bench", kind, "--config", TINY_CONFIG, "--set", f"model.mllm={ck / 'mllm'}",
            "--set", "model.autoencoder=identity", "--threads", 1, "--dump", dump, "--json", *extra]


@pytest.fixture(scope="module")
def train_dump(tiny_checkpoints, tmp_path_factory):
    """Four samples of a mixed batch (self-conditioned with MIM, captions, the CFG prompt: seed 2 draws all three
    kinds), EMA on, 1 warm-up + 2 steps."""
    d = tmp_path_factory.mktemp("bench_train") / "dump"
    run_iomm(*bench_args("train", tiny_checkpoints, d, "--warmup", 1, "--steps", 2, "--set", "train.batch_size=4",
                         "--set", "train.data=mix", "--set", "train.mix_ratio=0.5", "--set", "train.cfg_drop=0.3",
                         "--set", "train.seed=2", "--set", "train.ema_decay=0.99"))
    return d


def test_peer_matches_iomm_bench_train(train_dump, capsys):
    meta = json.loads((train_dump / "batch.json").read_text())
    kinds = {c["kind"] for c in meta["conditions"]}
    assert kinds == {"image", "text", "uncond"}, f"the batch draws only {kinds}; pick a train.seed that draws all"
    iomm = json.loads((train_dump / "bench.json").read_text())
    rc, r = run_peer(capsys, "train", "--dir", train_dump, "--check")
    assert rc == 0 and r["check"] == "ok"
    assert len(r["losses"]) == len(iomm["losses"]) == 3
    assert r["batch_size"] == iomm["batch_size"] == 4


@pytest.mark.parametrize("breakage", [flip_keep, flip_prediction], ids=["mim-mask", "prediction"])
def test_bench_train_check_fails_when_the_peer_computes_something_else(train_dump, tmp_path, capsys, breakage):
    d = copy_dump(train_dump, tmp_path / "dump")
    breakage(d)
    rc, r = run_peer(capsys, "train", "--dir", d, "--check", "--warmup", 0, "--steps", 1)
    assert rc == peer_cli.EXIT_CHECK and r["check"] == "failed"


@pytest.mark.parametrize("sampler,cfg", [("euler", 3.0), ("dpmpp_2m", 1.0)])
def test_peer_matches_iomm_bench_generate(tiny_checkpoints, tmp_path, capsys, sampler, cfg):
    d = tmp_path / "dump"
    run_iomm(*bench_args("generate", tiny_checkpoints, d, "--warmup", 0, "--steps", 1, "--images", 2,
                         "--sampler-steps", 3, "--sampler", sampler, "--cfg-scale", cfg, "--shift", 2.0,
                         "--seed", 5))
    rc, r = run_peer(capsys, "generate", "--dir", d, "--check", "--warmup", 0, "--rounds", 1)
    assert rc == 0 and r["check"] == "ok" and r["batch_size"] == 2
    print(f"{sampler} cfg {cfg}: max abs err {r['max_abs_err']:.1e}")
    flip_prediction(d)
    rc, r = run_peer(capsys, "generate", "--dir", d, "--check", "--warmup", 0, "--rounds", 1)
    assert rc == peer_cli.EXIT_CHECK and r["check"] == "failed"
