"""Z-Image S3-DiT (IOMM-XL's generator) vs diffusers' ZImageTransformer2DModel at small random configs (fp32):
ragged caption lengths (padding to 32 + batch padding), caption masks with holes, image token counts that need
x_pad_token, 4-D and 5-D latents, and `iomm inspect --config` on the XL config."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT, run_iomm

diffusers = pytest.importorskip("diffusers")
if not hasattr(diffusers, "ZImageTransformer2DModel"):
    pytest.skip("diffusers has no ZImageTransformer2DModel", allow_module_level=True)

IN_CH, CAP = 4, 24


def make_model(seed, dim=64, heads=2, axes=(8, 12, 12), refiners=2, layers=2):
    torch.manual_seed(seed)
    model = diffusers.ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=IN_CH, dim=dim, n_layers=layers,
        n_refiner_layers=refiners, n_heads=heads, n_kv_heads=heads, cap_feat_dim=CAP, axes_dims=list(axes),
        axes_lens=[256, 64, 64]).eval()
    with torch.no_grad():  # non-trivial norms, pad tokens and biases (diffusers leaves the pad tokens at zero)
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith(".bias") or "pad_token" in n:
                p.add_(torch.randn_like(p) * 0.3)
            elif "adaLN" in n:
                p.mul_(3.0)
    return model


@pytest.fixture(scope="module")
def zdir(tmp_path_factory):
    model = make_model(3)
    d = tmp_path_factory.mktemp("zimage")
    model.save_pretrained(d, safe_serialization=True)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["_class_name"] == "ZImageTransformer2DModel"
    return d, model


def reference(model, x, t, cap, mask):
    xs = [xi.unsqueeze(1) if xi.dim() == 3 else xi for xi in x]
    caps = [cap[i][mask[i].bool()] for i in range(cap.shape[0])]
    with torch.no_grad():
        out = model(xs, t, caps, return_dict=False)[0]
    return torch.stack(out)


def run_forward(tmp_path, model_dir, inputs):
    inp, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(inp))
    run_iomm("forward", "--component", "zimage-dit", "--model", model_dir, "--inputs", inp, "--out", out)
    return load_file(str(out))["sample"]


def inputs(batch, h, w, L, lens, seed, five_d=False, holes=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, IN_CH, 1, h, w, generator=g) if five_d else torch.randn(batch, IN_CH, h, w, generator=g)
    cap = torch.randn(batch, L, CAP, generator=g)
    mask = torch.zeros(batch, L, dtype=torch.bool)
    for i, n in enumerate(lens):
        if holes:
            mask[i, torch.randperm(L, generator=g)[:n]] = True
        else:
            mask[i, :n] = True
    t = torch.rand(batch, generator=g)
    return {"x": x, "t": t, "cap_feats": cap, "cap_mask": mask.to(torch.uint8)}


CASES = {
    # name: (batch, h, w, L, lens, five_d, holes)
    "ragged-captions": (2, 8, 6, 40, [5, 37], False, False),   # totals 32 / 64, 12 image tokens (+20 pad)
    "equal-32-tokens": (1, 8, 16, 32, [32], False, False),     # no padding anywhere, no masks
    "same-total": (3, 6, 6, 30, [3, 30, 17], True, False),     # same padded total (32): no key mask, 5-D latents
    "mask-with-holes": (2, 4, 10, 50, [33, 9], False, True),   # real tokens scattered through the sequence
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_diffusers(zdir, tmp_path, case):
    d, model = zdir
    b, h, w, L, lens, five, holes = CASES[case]
    inp = inputs(b, h, w, L, lens, seed=len(case), five_d=five, holes=holes)
    ref = reference(model, list(inp["x"]), inp["t"], inp["cap_feats"], inp["cap_mask"])
    if not five:
        ref = ref.squeeze(2)
    got = run_forward(tmp_path, d, inp)
    assert got.shape == ref.shape
    err = (got - ref).abs().max().item()
    print(f"{case}: max abs err {err:.3g} (ref max {ref.abs().max().item():.3g})")
    assert err < 1e-4


def test_without_mask_equals_all_real(zdir, tmp_path):
    d, model = zdir
    inp = inputs(2, 4, 4, 7, [7, 7], seed=5)
    ref = reference(model, list(inp["x"]), inp["t"], inp["cap_feats"], inp["cap_mask"])
    del inp["cap_mask"]
    got = run_forward(tmp_path, d, inp)
    assert (got - ref.squeeze(2)).abs().max().item() < 1e-4


def test_wrong_channels_fail_clearly(zdir, tmp_path):
    d, _ = zdir
    inp = inputs(1, 4, 4, 5, [5], seed=1)
    inp["x"] = torch.randn(1, IN_CH + 1, 4, 4)
    save_file(inp, str(tmp_path / "in.safetensors"))
    proc = run_iomm("forward", "--component", "zimage-dit", "--model", d, "--inputs", tmp_path / "in.safetensors",
                    "--out", tmp_path / "o.safetensors", check=False)
    assert proc.returncode != 0 and "in_channels" in proc.stderr


def test_inspect_xl_config():
    out = run_iomm("inspect", "--config", ROOT / "configs/model/iomm-xl.toml").stdout
    assert "Z-Image" in out
    n = int(out.split(" parameters")[0].split()[-1])
    assert 6_000_000_000 <= n <= 6_300_000_000
    # The count of diffusers' own module at the same config, built on the meta device.
    with torch.device("meta"):
        ref = diffusers.ZImageTransformer2DModel(cap_feat_dim=1536, axes_lens=[1536, 512, 512])
    assert n == sum(p.numel() for p in ref.parameters())


def test_inspect_checks_a_checkpoint_against_a_config(zdir, tmp_path):
    d, _ = zdir
    toml = tmp_path / "z.toml"
    body = ('[generator]\narch = "zimage"\nin_channels = 4\ndim = 64\nn_layers = 2\nn_refiner_layers = 2\n'
            'n_heads = 2\nn_kv_heads = 2\ncap_feat_dim = 24\naxes_dims = [8, 12, 12]\naxes_lens = [256, 64, 64]\n')
    toml.write_text(body)
    assert "matches the config" in run_iomm("inspect", d, "--config", toml).stdout
    toml.write_text(body.replace("n_layers = 2", "n_layers = 3"))
    proc = run_iomm("inspect", d, "--config", toml, check=False)
    assert proc.returncode != 0 and "layers.2.attention.to_q.weight" in proc.stderr
