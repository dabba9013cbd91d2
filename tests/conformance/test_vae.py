"""FLUX autoencoder vs diffusers' AutoencoderKL with FLUX/SD3 settings (16 latent channels, no quant convs, mid
attention) at small random sizes (fp32): encode(x).latent_dist.mean and decode(z).sample, loaded from the diffusers
layout and from the same weights in BFL ae.safetensors names (converted here, independently of iomm)."""
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_iomm

diffusers = pytest.importorskip("diffusers")

TOL = 1e-4
CONFIGS = {
    # FLUX layout scaled down: two levels (/2), two ResNet blocks per level (three in the decoder)
    "flux-2lvl": dict(block_out_channels=(32, 64), layers_per_block=2),
    # three levels (/4) with a repeated width, like FLUX's [.., 512, 512]
    "flux-3lvl": dict(block_out_channels=(32, 64, 64), layers_per_block=1),
    # SD-style quant convs around the latent (diffusers' default), read from config.json
    "quant-conv": dict(block_out_channels=(32, 64), layers_per_block=1, use_quant_conv=True,
                       use_post_quant_conv=True),
}


def make_vae(name, seed):
    kw = dict(use_quant_conv=False, use_post_quant_conv=False)
    kw.update(CONFIGS[name])
    n = len(kw["block_out_channels"])
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, latent_channels=16, norm_num_groups=32,
        scaling_factor=0.3611, shift_factor=0.1159, mid_block_add_attention=True, **kw).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for pname, p in vae.named_parameters():
            if "norm" in pname or pname.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.2)
    return vae


def diffusers_to_bfl(sd, levels):
    """diffusers AutoencoderKL names -> BFL ae.safetensors names (an independent re-statement of diffusers'
    convert_ldm_vae_checkpoint, inverted): reversed decoder levels, 1x1-conv attention weights."""
    out = {}
    for k, v in sd.items():
        n = k
        n = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", n)
        n = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", n)
        n = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", n)
        m = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)$", n)
        if m:
            level = levels - 1 - int(m.group(1))
            if m.group(2) == "resnets":
                n = f"decoder.up.{level}.block.{m.group(3)}.{m.group(4)}"
            else:
                n = f"decoder.up.{level}.upsample.{m.group(4)}"
        n = re.sub(r"\.mid_block\.resnets\.0\.", ".mid.block_1.", n)
        n = re.sub(r"\.mid_block\.resnets\.1\.", ".mid.block_2.", n)
        attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
        m = re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(\w+)$", n)
        if m:
            n = f"{m.group(1)}.mid.attn_1.{attn[m.group(2)]}.{m.group(3)}"
            if m.group(2) != "group_norm" and m.group(3) == "weight":
                v = v[:, :, None, None]
        n = n.replace(".conv_shortcut.", ".nin_shortcut.")
        assert n not in out, n
        out[n] = v.contiguous()
    return out


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def vae_dirs(request, tmp_path_factory):
    vae = make_vae(request.param, 20 + list(CONFIGS).index(request.param))
    hf = tmp_path_factory.mktemp("vae_hf")
    vae.save_pretrained(hf, safe_serialization=True)
    bfl = tmp_path_factory.mktemp("vae_bfl")
    sd = diffusers_to_bfl(vae.state_dict(), len(vae.config.block_out_channels))
    if vae.config.use_quant_conv:  # no config-less inference of scale/shift for SD-style files: give a config
        (bfl / "config.json").write_text(json.dumps(dict(vae.config)))
    save_file(sd, str(bfl / "ae.safetensors"))
    return request.param, vae, hf, bfl


def run_forward(tmp_path, component, model, inputs):
    inp, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(inp))
    run_iomm("forward", "--component", component, "--model", model, "--inputs", inp, "--out", out)
    return load_file(str(out))


def max_err(a, b):
    return (a - b).abs().max().item()


def test_bfl_names_match_the_flux_layout(vae_dirs):
    name, vae, _, _ = vae_dirs
    sd = diffusers_to_bfl(vae.state_dict(), len(vae.config.block_out_channels))
    n = len(vae.config.block_out_channels)
    assert "encoder.mid.attn_1.q.weight" in sd and sd["encoder.mid.attn_1.q.weight"].dim() == 4
    assert f"decoder.up.{n - 1}.upsample.conv.weight" in sd and "decoder.up.0.upsample.conv.weight" not in sd
    assert "encoder.down.1.block.0.nin_shortcut.weight" in sd


@pytest.mark.parametrize("layout", ["diffusers", "bfl"])
def test_encode_mean(vae_dirs, layout, tmp_path):
    name, vae, hf, bfl = vae_dirs
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 8 * f, 6 * f, generator=g) * 2 - 1
    with torch.no_grad():
        ref = vae.encode(x).latent_dist.mean
    got = run_forward(tmp_path, "vae-encode", hf if layout == "diffusers" else bfl / "ae.safetensors"
                      if not vae.config.use_quant_conv else bfl, {"sample": x})["latent_dist.mean"]
    assert got.shape == ref.shape == (2, 16, 8, 6)
    err = max_err(got, ref)
    print(f"vae-encode {name} {layout}: max abs err {err:.3g} (|ref| max {ref.abs().max():.3g})")
    assert err < TOL


@pytest.mark.parametrize("layout", ["diffusers", "bfl"])
def test_decode_sample(vae_dirs, layout, tmp_path):
    name, vae, hf, bfl = vae_dirs
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    g = torch.Generator().manual_seed(6)
    z = torch.randn(2, 16, 5, 7, generator=g)
    with torch.no_grad():
        ref = vae.decode(z).sample
    got = run_forward(tmp_path, "vae-decode", hf if layout == "diffusers" else bfl / "ae.safetensors"
                      if not vae.config.use_quant_conv else bfl, {"z": z})["sample"]
    assert got.shape == ref.shape == (2, 3, 5 * f, 7 * f)
    err = max_err(got, ref)
    print(f"vae-decode {name} {layout}: max abs err {err:.3g} (|ref| max {ref.abs().max():.3g})")
    assert err < TOL


def test_errors_name_the_file_and_the_fix(vae_dirs, tmp_path):
    _, vae, hf, _ = vae_dirs
    inp = tmp_path / "in.safetensors"
    save_file({"sample": torch.zeros(1, 3, 8, 8)}, str(inp))
    missing = tmp_path / "nowhere"
    p = run_iomm("forward", "--component", "vae-encode", "--model", missing, "--inputs", inp, "--out",
                 tmp_path / "o.safetensors", check=False)
    assert p.returncode != 0 and "nowhere" in p.stderr and "AutoencoderKL" in p.stderr
    bad = tmp_path / "odd.safetensors"
    save_file({"sample": torch.zeros(1, 3, 9, 8)}, str(bad))
    p = run_iomm("forward", "--component", "vae-encode", "--model", hf, "--inputs", bad, "--out",
                 tmp_path / "o.safetensors", check=False)
    assert p.returncode != 0 and "multiple of the downsample factor" in p.stderr


@pytest.mark.parametrize("tile,overlap", [(4, 0.25), (6, 0.5)])
def test_tiled_decode_matches_diffusers(vae_dirs, tile, overlap, tmp_path):
    """iomm's tiled decode equals diffusers' tiled_decode, so its seam error vs the untiled decode is diffusers'."""
    name, vae, hf, _ = vae_dirs
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    z = torch.randn(1, 16, 11, 9, generator=torch.Generator().manual_seed(7))
    vae.tile_latent_min_size, vae.tile_sample_min_size, vae.tile_overlap_factor = tile, tile * f, overlap
    with torch.no_grad():
        full = vae.decode(z).sample
        ref = vae.tiled_decode(z).sample
    got = run_forward(tmp_path, "vae-decode", hf, {"z": z, "tile_latent_size": torch.tensor(tile),
                                                   "tile_overlap": torch.tensor(overlap, dtype=torch.float64)})["sample"]
    assert got.shape == ref.shape == full.shape
    err = max_err(got, ref)
    seam_iomm, seam_ref = max_err(got, full), max_err(ref, full)
    print(f"tiled {name} tile {tile} overlap {overlap}: vs diffusers tiled {err:.3g}; "
          f"seam error vs untiled: iomm {seam_iomm:.3g}, diffusers {seam_ref:.3g}")
    assert seam_ref > 1e-3  # the tiling is real
    assert err < TOL
    assert seam_iomm <= seam_ref + TOL
