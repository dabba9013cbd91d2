"""The tiny world end to end, shortened for CI (`iomm demo` with few steps and the small prompt set): the whole
IOMM pipeline runs (understanding model, image-only pre-training, mixed fine-tuning from stage 1, ShapesEval of
the untrained, stage-1 and stage-2 generators, report, results), and both training losses fall.

Not asserted yet: that stage 2 beats the untrained generator by a margin. At the lengths measured so far the
generator draws no recognisable shapes, and ShapesEval's detector accepts some noise images as objects
(docs/tiny-world.md), so a margin here would pass for the wrong reason."""
import json

from conftest import ROOT


def mean(xs):
    return sum(xs) / len(xs)


def test_shortened_demo(iomm, tmp_path):
    out = tmp_path / "demo"
    iomm("demo", "--out", out, "--prompts", "eval-small", "--per-prompt", "1", "--image-only", "1000",
         "--captioned", "200", "--eval-steps", "4",
         "--set", "understanding:train.steps=200", "--set", "understanding:train.eval_samples=32",
         "--set", "pretrain:train.steps=60", "--set", "pretrain:train.sample_every=30",
         "--set", "finetune:train.steps=60", "--set", "finetune:train.sample_every=30",
         cwd=ROOT, timeout=1500)
    res = json.loads((out / "results.json").read_text())
    overall = res["overall"]
    assert overall["ground truth"] > 0.95
    for name in ("untrained", "stage 1 (image-only)", "stage 2 (mix)"):
        assert 0.0 <= overall[name] <= 1.0, overall
        assert len(res["shapes_eval"][name]["images"]) == 24, name

    for stage in ("pretrain", "finetune"):
        losses = [r["loss"] for r in map(json.loads, (out / stage / "metrics.jsonl").read_text().splitlines())]
        assert len(losses) == 6, stage  # log_every 10
    pre = [r["loss"] for r in map(json.loads, (out / "pretrain" / "metrics.jsonl").read_text().splitlines())]
    assert mean(pre[-2:]) < 0.6 * pre[0], pre

    assert res["understanding"]["token_accuracy"] > 0.2
    html = (out / "report.html").read_text()
    for ref in ("eval/finetune_grid.png", "edits.png", "<svg", "ShapesEval"):
        assert ref in html, ref
    recon = sorted((out / "pretrain" / "samples").glob("*-recon.png"))
    assert recon, "stage-1 reconstructions were not written"
    assert (out / "finetune" / "model" / "iomm.toml").exists()
