"""Qwen2 decoder vs transformers' Qwen2 at a small random config (fp32, eager attention)."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_iomm

transformers = pytest.importorskip("transformers")


def tiny_config():
    return transformers.Qwen2Config(
        vocab_size=311, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0,
        tie_word_embeddings=False, attn_implementation="eager")


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(tiny_config()).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for n, p in model.named_parameters():
            if n.endswith("norm.weight") or n.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    d = tmp_path_factory.mktemp("qwen2")
    model.save_pretrained(d)
    return d, model


def padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 311, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, :4] = 0    # left padding
    mask[2, 6:] = 0    # right padding
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return ids, mask, pos


def reference(model, ids, mask, pos):
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    return out.hidden_states[-1], out.logits


def run_forward(tmp_path, model_dir, tensors, *extra):
    inp, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(inp))
    run_iomm("forward", "--component", "qwen2", "--model", model_dir, "--inputs", inp, "--out", out, *extra)
    return load_file(str(out))


def assert_close_on_tokens(a, b, mask, tol):
    valid = mask.bool()
    err = (a[valid] - b[valid]).abs().max().item()
    assert err <= tol, f"max abs error {err} > {tol}"
    return err


def test_padded_batch_matches_transformers(tmp_path, qwen2_dir):
    d, model = qwen2_dir
    ids, mask, pos = padded_batch()
    ref_h, ref_logits = reference(model, ids, mask, pos)
    got = run_forward(tmp_path, d, {"input_ids": ids, "attention_mask": mask})  # positions derived from the mask
    assert_close_on_tokens(got["last_hidden_state"], ref_h, mask, 1e-4)
    assert_close_on_tokens(got["logits"], ref_logits, mask, 1e-4)
    assert torch.isfinite(got["last_hidden_state"]).all()


def test_inputs_embeds_and_explicit_positions(tmp_path, qwen2_dir):
    d, model = qwen2_dir
    ids, mask, pos = padded_batch()
    embeds = model.model.embed_tokens(ids).detach()
    ref_h, _ = reference(model, ids, mask, pos)
    got = run_forward(tmp_path, d, {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": pos})
    assert_close_on_tokens(got["last_hidden_state"], ref_h, mask, 1e-4)


def test_original_internvl_and_bare_layouts_load(tmp_path, qwen2_dir):
    d, model = qwen2_dir
    ids, mask, pos = padded_batch()
    ref_h, _ = reference(model, ids, mask, pos)
    state = load_file(str(d / "model.safetensors"))
    cfg = json.loads((d / "config.json").read_text())
    layouts = {
        "original": ({"language_model." + k: v for k, v in state.items()}, {"llm_config": cfg}),
        "hf": ({("model.language_model." + k[6:] if k.startswith("model.") else k): v for k, v in state.items()},
               {"text_config": cfg}),
        "bare": ({k[6:]: v for k, v in state.items() if k.startswith("model.")}, cfg),
    }
    for name, (tensors, config) in layouts.items():
        md = tmp_path / name
        md.mkdir()
        save_file(tensors, str(md / "model.safetensors"))
        (md / "config.json").write_text(json.dumps(config))
        got = run_forward(tmp_path, md, {"input_ids": ids, "attention_mask": mask})
        assert_close_on_tokens(got["last_hidden_state"], ref_h, mask, 1e-4)
        assert ("logits" in got) == (name != "bare")


def test_mis_shaped_checkpoint_lists_tensors(tmp_path, qwen2_dir):
    d, _ = qwen2_dir
    state = load_file(str(d / "model.safetensors"))
    state["model.norm.weight"] = torch.ones(65)
    del state["model.layers.1.mlp.up_proj.weight"]
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(state, str(bad / "model.safetensors"))
    (bad / "config.json").write_text((d / "config.json").read_text())
    ids, mask, _ = padded_batch()
    save_file({"input_ids": ids}, str(tmp_path / "in.safetensors"))
    proc = run_iomm("forward", "--component", "qwen2", "--model", bad, "--inputs", tmp_path / "in.safetensors",
                    "--out", tmp_path / "o.safetensors", check=False)
    assert proc.returncode != 0
    assert "model.layers.1.mlp.up_proj.weight" in proc.stderr
    assert "model.norm.weight" in proc.stderr and "[65]" in proc.stderr


def test_bf16_error_is_small(tmp_path, qwen2_dir):
    d, model = qwen2_dir
    ids, mask, pos = padded_batch()
    ref_h, _ = reference(model, ids, mask, pos)
    got = run_forward(tmp_path, d, {"input_ids": ids, "attention_mask": mask}, "--dtype", "bfloat16")
    rel = ((got["last_hidden_state"] - ref_h)[mask.bool()].abs().max() / ref_h[mask.bool()].abs().max()).item()
    print(f"qwen2 bf16 vs fp32 reference: max abs error relative to max |h| = {rel:.4f}")
    assert rel < 0.05
