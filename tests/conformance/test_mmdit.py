"""FLUX MM-DiT vs diffusers' FluxTransformer2DModel at small random configs (fp32), BFL-name loading, export to
diffusers names, and flow-matching schedules vs FlowMatchEulerDiscreteScheduler."""
import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT, run_iomm

diffusers = pytest.importorskip("diffusers")

HEADS, HEAD_DIM, CTX, POOLED, IN_CH = 2, 16, 24, 8, 16


def make_model(guidance, seed):
    torch.manual_seed(seed)
    model = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=IN_CH, num_layers=2, num_single_layers=2, attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS, joint_attention_dim=CTX, pooled_projection_dim=POOLED,
        guidance_embeds=guidance, axes_dims_rope=(4, 6, 6)).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.2)
    return model


@pytest.fixture(scope="module", params=[False, True], ids=["schnell-like", "guidance"])
def flux_dir(request, tmp_path_factory):
    model = make_model(request.param, 10 + int(request.param))
    d = tmp_path_factory.mktemp("flux")
    model.save_pretrained(d)
    return d, model, request.param


def make_inputs(guidance, batch=2, txt_len=5, h=4, w=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    inputs = {
        "hidden_states": torch.randn(batch, h * w, IN_CH, generator=g),
        "encoder_hidden_states": torch.randn(batch, txt_len, CTX, generator=g),
        "pooled_projections": torch.randn(batch, POOLED, generator=g),
        "timestep": torch.tensor([0.3, 0.85][:batch]),
        "img_ids": img_ids.reshape(h * w, 3),
        # random text positions too, so that every RoPE axis is exercised on both streams
        "txt_ids": torch.randint(0, 7, (txt_len, 3), generator=g).float(),
    }
    if guidance:
        inputs["guidance"] = torch.tensor([3.5, 1.5][:batch])
    return inputs


def reference(model, inputs):
    with torch.no_grad():
        return model(**{k: v for k, v in inputs.items() if k != "txt_mask"}).sample


def run_forward(tmp_path, model_dir, inputs, *extra):
    inp, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(inp))
    run_iomm("forward", "--component", "mmdit", "--model", model_dir, "--inputs", inp, "--out", out, *extra)
    return load_file(str(out))["sample"]


def max_err(a, b):
    return (a - b).abs().max().item()


def diffusers_to_bfl(sd):
    """An independent re-statement of diffusers' convert_flux_to_diffusers.py mapping, inverted."""
    out = {}
    pairs = {
        "x_embedder": "img_in", "context_embedder": "txt_in",
        "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
        "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
        "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
        "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
        "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
        "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
        "proj_out": "final_layer.linear",
    }
    for hf, bfl in pairs.items():
        for s in ("weight", "bias"):
            if f"{hf}.{s}" in sd:
                out[f"{bfl}.{s}"] = sd[f"{hf}.{s}"]
    for s in ("weight", "bias"):
        shift_scale = sd[f"norm_out.linear.{s}"].chunk(2, 0)  # diffusers: (scale, shift)
        out[f"final_layer.adaLN_modulation.1.{s}"] = torch.cat([shift_scale[1], shift_scale[0]], 0)
    n_double = len({k.split(".")[1] for k in sd if k.startswith("transformer_blocks.")})
    n_single = len({k.split(".")[1] for k in sd if k.startswith("single_transformer_blocks.")})
    for i in range(n_double):
        h, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for s in ("weight", "bias"):
            out[f"{b}img_mod.lin.{s}"] = sd[f"{h}norm1.linear.{s}"]
            out[f"{b}txt_mod.lin.{s}"] = sd[f"{h}norm1_context.linear.{s}"]
            out[f"{b}img_attn.qkv.{s}"] = torch.cat([sd[f"{h}attn.to_{x}.{s}"] for x in "qkv"])
            out[f"{b}txt_attn.qkv.{s}"] = torch.cat([sd[f"{h}attn.add_{x}_proj.{s}"] for x in "qkv"])
            out[f"{b}img_attn.proj.{s}"] = sd[f"{h}attn.to_out.0.{s}"]
            out[f"{b}txt_attn.proj.{s}"] = sd[f"{h}attn.to_add_out.{s}"]
            out[f"{b}img_mlp.0.{s}"] = sd[f"{h}ff.net.0.proj.{s}"]
            out[f"{b}img_mlp.2.{s}"] = sd[f"{h}ff.net.2.{s}"]
            out[f"{b}txt_mlp.0.{s}"] = sd[f"{h}ff_context.net.0.proj.{s}"]
            out[f"{b}txt_mlp.2.{s}"] = sd[f"{h}ff_context.net.2.{s}"]
        out[f"{b}img_attn.norm.query_norm.scale"] = sd[f"{h}attn.norm_q.weight"]
        out[f"{b}img_attn.norm.key_norm.scale"] = sd[f"{h}attn.norm_k.weight"]
        out[f"{b}txt_attn.norm.query_norm.scale"] = sd[f"{h}attn.norm_added_q.weight"]
        out[f"{b}txt_attn.norm.key_norm.scale"] = sd[f"{h}attn.norm_added_k.weight"]
    for i in range(n_single):
        h, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for s in ("weight", "bias"):
            out[f"{b}modulation.lin.{s}"] = sd[f"{h}norm.linear.{s}"]
            out[f"{b}linear1.{s}"] = torch.cat([sd[f"{h}attn.to_{x}.{s}"] for x in "qkv"] + [sd[f"{h}proj_mlp.{s}"]])
            out[f"{b}linear2.{s}"] = sd[f"{h}proj_out.{s}"]
        out[f"{b}norm.query_norm.scale"] = sd[f"{h}attn.norm_q.weight"]
        out[f"{b}norm.key_norm.scale"] = sd[f"{h}attn.norm_k.weight"]
    assert len(out) == len(sd) - 8 * n_double - 6 * n_single, "every diffusers tensor mapped once"
    return out


def bfl_params(guidance):
    return {"in_channels": IN_CH, "out_channels": IN_CH, "vec_in_dim": POOLED, "context_in_dim": CTX,
            "hidden_size": HEADS * HEAD_DIM, "mlp_ratio": 4.0, "num_heads": HEADS, "depth": 2,
            "depth_single_blocks": 2, "axes_dim": [4, 6, 6], "theta": 10000, "qkv_bias": True,
            "guidance_embed": guidance}


def test_matches_diffusers(tmp_path, flux_dir):
    d, model, guidance = flux_dir
    inputs = make_inputs(guidance)
    ref = reference(model, inputs)
    got = run_forward(tmp_path, d, inputs)
    err = max_err(got, ref)
    print(f"mmdit vs diffusers (guidance={guidance}): max abs error {err:.3e}, max |ref| {ref.abs().max():.3f}")
    assert err <= 1e-4
    assert ref.abs().max() > 0.1  # a non-trivial output


def test_bfl_names_give_the_same_outputs(tmp_path, flux_dir):
    d, model, guidance = flux_dir
    bfl = tmp_path / "bfl"
    bfl.mkdir()
    save_file(diffusers_to_bfl(load_file(str(d / "diffusion_pytorch_model.safetensors"))),
              str(bfl / "flux.safetensors"))
    (bfl / "config.json").write_text(json.dumps(bfl_params(guidance)))
    inputs = make_inputs(guidance, seed=2)
    assert max_err(run_forward(tmp_path, bfl, inputs), reference(model, inputs)) <= 1e-4


def test_export_to_diffusers_loads_in_diffusers(tmp_path, flux_dir):
    d, model, guidance = flux_dir
    # from diffusers names and from BFL names
    bfl = tmp_path / "bfl"
    bfl.mkdir()
    save_file(diffusers_to_bfl(load_file(str(d / "diffusion_pytorch_model.safetensors"))),
              str(bfl / "model.safetensors"))
    (bfl / "config.json").write_text(json.dumps(bfl_params(guidance)))
    inputs = make_inputs(guidance, seed=3)
    ref = reference(model, inputs)
    for src in (d, bfl):
        out = tmp_path / f"export_{src.name}"
        run_iomm("convert", "--component", "mmdit", "--model", src, "--out", out, "--format", "diffusers")
        loaded = diffusers.FluxTransformer2DModel.from_pretrained(out).eval()
        assert max_err(reference(loaded, inputs), ref) <= 1e-5
        # and iomm's own BFL export reads back the same
        back = tmp_path / f"bfl_{src.name}"
        run_iomm("convert", "--component", "mmdit", "--model", out, "--out", back, "--format", "bfl")
        assert max_err(run_forward(tmp_path, back, inputs), ref) <= 1e-4


def test_txt_padding_mask_equals_truncation(tmp_path, flux_dir):
    d, model, guidance = flux_dir
    inputs = make_inputs(guidance, txt_len=6, seed=4)
    inputs["txt_ids"] = torch.zeros(6, 3)  # FLUX's text ids; a padded row then equals a shorter prompt
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    got = run_forward(tmp_path, d, {**inputs, "txt_mask": mask})
    assert max_err(got[0], reference(model, inputs)[0]) <= 1e-4
    row = {k: (v[1:2] if k not in ("img_ids", "txt_ids") else v) for k, v in inputs.items()}
    row["encoder_hidden_states"] = row["encoder_hidden_states"][:, :3]
    row["txt_ids"] = torch.zeros(3, 3)
    assert max_err(got[1:2], reference(model, row)) <= 1e-4


def test_bf16_tracks_diffusers_in_bf16(tmp_path, flux_dir):
    # FLUX rounds the timestep to the compute dtype before x1000 (as BFL and diffusers do), so bf16 differs from
    # fp32 by several percent on a random model; the reference for bf16 is diffusers itself in bf16.
    d, model, guidance = flux_dir
    inputs = make_inputs(guidance, seed=5)
    ref = reference(model, inputs)
    ref_bf16 = reference(copy.deepcopy(model).to(torch.bfloat16),
                         {k: (v.to(torch.bfloat16) if v.dim() == 3 or k == "pooled_projections" else v)
                          for k, v in inputs.items()}).float()
    got = run_forward(tmp_path, d, inputs, "--dtype", "bfloat16")
    scale = ref.abs().max().item()
    rel_ref, rel = max_err(ref_bf16, ref) / scale, max_err(got, ref_bf16) / scale
    print(f"mmdit bf16: diffusers-bf16 vs fp32 {rel_ref:.4f}, iomm-bf16 vs diffusers-bf16 {rel:.4f} (of max |out|)")
    assert rel < 0.02
    assert max_err(got, ref) / scale < 1.5 * rel_ref + 0.01


def test_missing_pooled_vector_is_a_clear_error(tmp_path, flux_dir):
    d, _, guidance = flux_dir
    inputs = make_inputs(guidance)
    del inputs["pooled_projections"]
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(tmp_path / "in.safetensors"))
    proc = run_iomm("forward", "--component", "mmdit", "--model", d, "--inputs", tmp_path / "in.safetensors",
                    "--out", tmp_path / "o.safetensors", check=False)
    assert proc.returncode != 0 and "pooled" in proc.stderr


# ------------------------------------------------------------------------------------------------ schedules

def iomm_schedule(*args):
    return json.loads(run_iomm("schedule", "--json", *args).stdout)


@pytest.mark.parametrize("steps", [1, 4, 28, 50])
def test_static_shift_schedule_matches_diffusers(steps):
    s = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    s.set_timesteps(steps)
    got = iomm_schedule("--kind", "diffusers", "--shift", "3.0", "--steps", steps)
    assert np.abs(np.array(got["sigmas"]) - s.sigmas.numpy()).max() <= 1e-6
    assert np.abs(np.array(got["timesteps"]) - s.timesteps.numpy()).max() <= 1e-3


@pytest.mark.parametrize("steps,mu", [(4, 0.5), (28, 0.8), (50, 1.15)])
def test_dynamic_shift_schedule_matches_diffusers(steps, mu):
    s = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    s.set_timesteps(steps, mu=mu)
    got = iomm_schedule("--kind", "diffusers", "--dynamic", "--mu", mu, "--steps", steps)
    assert np.abs(np.array(got["sigmas"]) - s.sigmas.numpy()).max() <= 1e-6
    assert np.abs(np.array(got["timesteps"]) - s.timesteps.numpy()).max() <= 1e-3


@pytest.mark.parametrize("steps,seq", [(28, 1024), (20, 256), (50, 4096)])
def test_flux_pipeline_schedule_matches_diffusers(steps, seq):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift
    s = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                   max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    mu = calculate_shift(seq)
    s.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    got = iomm_schedule("--kind", "flux-pipeline", "--image-seq-len", seq, "--steps", steps)
    assert abs(got["mu"] - mu) < 1e-12
    assert np.abs(np.array(got["sigmas"]) - s.sigmas.numpy()).max() <= 1e-6
    assert np.abs(np.array(got["timesteps"]) - s.timesteps.numpy()).max() <= 1e-3


# ------------------------------------------------------------------------------------------------ inspect --config

def generator_toml(guidance, depth=2):
    return (f"[generator]\nhidden_size = {HEADS * HEAD_DIM}\nnum_heads = {HEADS}\ndepth = {depth}\n"
            f"depth_single_blocks = 2\ncontext_in_dim = {CTX}\nvec_in_dim = {POOLED}\n"
            f"guidance_embed = {str(guidance).lower()}\naxes_dim = [4, 6, 6]\nin_channels = {IN_CH}\n")


def test_inspect_config_checks_a_checkpoint(tmp_path, flux_dir):
    d, model, guidance = flux_dir
    good = tmp_path / "good.toml"
    good.write_text(generator_toml(guidance))
    proc = run_iomm("inspect", d, "--config", good)
    n = sum(p.numel() for p in model.parameters())
    assert "matches the config" in proc.stdout
    assert f": {n} parameters" in proc.stdout  # the config's count equals diffusers' own count
    bad = tmp_path / "bad.toml"
    bad.write_text(generator_toml(guidance, depth=3))
    proc = run_iomm("inspect", d, "--config", bad, check=False)
    assert proc.returncode != 0
    assert "double_blocks.2.img_attn.qkv.weight" in proc.stderr  # listed as missing


def test_inspect_config_counts_the_paper_sizes():
    out = run_iomm("inspect", "--config", "configs/model/iomm-b.toml", cwd=str(ROOT)).stdout
    assert "1567980608 parameters (1.57B)" in out
    out = run_iomm("inspect", "--config", "configs/model/iomm-l.toml", cwd=str(ROOT)).stdout
    assert "2692193088 parameters (2.69B)" in out
