"""`iomm train` on the understanding stage: a shortened run of the shipped config writes an InternVL checkpoint
directory in the original layout (config.json internvl_chat + model.safetensors + tokenizer.json) that the
InternVL loader and the tokenizer read back, and caption_eval.json with its scores."""
import json

from safetensors import safe_open

from conftest import ROOT

CONFIG = ROOT / "configs" / "world" / "understanding.toml"


def test_train_understanding_cli(iomm, tmp_path):
    run = tmp_path / "u"
    proc = iomm("train", "--config", CONFIG, "--set", "train.steps=30", "--set", "optim.warmup_steps=5",
                "--set", "train.eval_samples=64",
                "--set", "train.log_every=10", "--out", run, cwd=ROOT)
    assert str(run / "model") in proc.stderr + proc.stdout
    model = run / "model"
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["model_type"] == "internvl_chat" and cfg["force_image_size"] == 32
    assert cfg["vision_config"]["patch_size"] == 4 and cfg["llm_config"]["hidden_size"] == 64
    tok = json.loads((model / "tokenizer.json").read_text())
    ctx = [t["id"] for t in tok["added_tokens"] if t["content"] == "<IMG_CONTEXT>"]
    assert ctx == [cfg["img_context_token_id"]]
    assert cfg["llm_config"]["vocab_size"] == max(t["id"] for t in tok["added_tokens"]) + 1
    with safe_open(str(model / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert {"vision_model.embeddings.patch_embedding.weight", "mlp1.1.weight", "language_model.lm_head.weight",
            "language_model.model.layers.1.mlp.down_proj.weight"} <= names
    assert all(n.split(".")[0] in ("vision_model", "mlp1", "language_model") for n in names)

    ev = json.loads((run / "caption_eval.json").read_text())
    for k in ("token_accuracy", "exact_match", "content_word_accuracy", "content_all_match", "by_tag", "examples"):
        assert k in ev, k
    assert ev["captions"] == 64 and 0 <= ev["token_accuracy"] <= 1
    # 30 steps already beat chance at the next token (1/vocab ≈ 0.002) by far.
    assert ev["token_accuracy"] > 0.2
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert (run / "config.toml").exists()

    # The trained model goes through the same InternVL forward as InternVL3-2B: `iomm forward internvl`.
    import torch
    from safetensors.torch import save_file
    T = 16
    ids = torch.tensor([[cfg["img_context_token_id"]] * T + [5, 6]])
    save_file({"input_ids": ids, "pixel_values": torch.zeros(1, 3, 32, 32)}, str(tmp_path / "in.safetensors"))
    iomm("forward", "--component", "internvl", "--model", model, "--inputs", tmp_path / "in.safetensors",
         "--out", tmp_path / "out.safetensors")
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as f:
        assert list(f.get_tensor("last_hidden_state").shape) == [1, T + 2, 64]


def test_train_rejects_typos_and_generator_stages(iomm, tmp_path):
    p = iomm("train", "--config", CONFIG, "--set", "train.stpes=3", "--out", tmp_path / "a", cwd=ROOT, check=False)
    assert p.returncode != 0 and "stpes" in p.stderr
    p = iomm("train", "--config", CONFIG, "--set", "train.stage=pretrain", "--out", tmp_path / "b", cwd=ROOT,
             check=False)
    # The generator stages run the IOMM trainer, which needs an MLLM: the error names the key and the fix.
    assert p.returncode != 0 and "model.mllm" in p.stderr


def test_train_without_a_stage_lists_the_stages(iomm, tmp_path):
    cfg = tmp_path / "no-stage.toml"
    cfg.write_text("[train]\nsteps = 3\n")
    p = iomm("train", "--config", cfg, "--out", tmp_path / "run", check=False)
    assert p.returncode != 0
    for stage in ("understanding", "pretrain", "finetune"):
        assert stage in p.stderr, p.stderr
    assert not (tmp_path / "run").exists()
