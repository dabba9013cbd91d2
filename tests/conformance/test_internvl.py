"""InternViT, pixel shuffle, mlp1 and the InternVL wrapper vs transformers' InternVL (-hf classes) at a small random
config (fp32, eager attention), loaded from the -hf layouts (legacy and current prefixes, sharded) and from the same
weights renamed to the ORIGINAL InternVL3 layout (research/mllm.md §2.1/§2.2)."""
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_iomm

transformers = pytest.importorskip("transformers")

VOCAB = 300
IMG = 299         # <IMG_CONTEXT> in the tiny vocabulary
PATCH, SIZE = 14, 56
TOKENS_PER_TILE = (SIZE // PATCH // 2) ** 2   # 4×4 patch grid -> 2×2 after pixel shuffle
TOL = 1e-4

VISION = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, image_size=SIZE,
              patch_size=PATCH, attention_bias=True, layer_norm_eps=1e-6, norm_type="layer_norm", hidden_act="gelu")
TEXT = dict(model_type="qwen2", vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0,
            max_position_embeddings=512, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    cfg = transformers.InternVLConfig(vision_config=VISION, text_config=TEXT, image_token_id=IMG,
                                      image_seq_length=TOKENS_PER_TILE, downsample_ratio=0.5,
                                      tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.InternVLForConditionalGeneration._from_config(cfg, attn_implementation="eager").eval()
    assert model.model.vision_tower.config._attn_implementation == "eager"
    with torch.no_grad():  # non-trivial CLS, position table, LayerScale, norms and biases (they start constant)
        for n, p in model.named_parameters():
            if re.search(r"(norm|layer_norm|layernorm_\w+)\.(weight|bias)$|\.bias$|lambda_|cls_token|position_emb", n):
                p.add_(torch.randn_like(p) * 0.2)
    d = tmp_path_factory.mktemp("internvl_hf")
    model.save_pretrained(d)
    return d, model


# ---------------------------------------------------------------------------------------------------- helpers

def run_forward(tmp_path, component, model_dir, tensors, *extra):
    inp, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(inp))
    model_args = ["--model", model_dir] if model_dir is not None else []
    run_iomm("forward", "--component", component, *model_args, "--inputs", inp, "--out", out, *extra)
    return load_file(str(out))


def pixels(n, h=SIZE, w=SIZE, seed=2):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def batch(tiles_per_row, length=17, seed=3):
    """input_ids [3, length] (odd): row 0 right-padded, row 1 left-padded, row 2 unpadded; row i holds
    tiles_per_row[i] blocks of TOKENS_PER_TILE <IMG_CONTEXT> tokens, each between text tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, IMG, (3, length), generator=g)
    mask = torch.ones(3, length, dtype=torch.long)
    mask[0, length - 4:] = 0
    mask[1, :5] = 0
    for row, tiles in enumerate(tiles_per_row):
        start = mask[row].nonzero()[0].item() + 2
        for t in range(tiles):
            s = start + t * (TOKENS_PER_TILE + 1)
            ids[row, s:s + TOKENS_PER_TILE] = IMG
            assert mask[row, s:s + TOKENS_PER_TILE].all()
    ids[mask == 0] = 0
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return ids, mask, pos


def reference(model, ids, mask, pos, pv):
    with torch.no_grad():
        out = model.model(input_ids=ids, attention_mask=mask, position_ids=pos, pixel_values=pv)
        return out.last_hidden_state, out.image_hidden_states, model.lm_head(out.last_hidden_state)


def max_err(a, b, mask=None):
    if mask is not None:
        a, b = a[mask.bool()], b[mask.bool()]
    return (a - b).abs().max().item()


def to_original(state):
    """-hf (legacy prefixes) -> the original InternVL3 checkpoint names and fused qkv (mllm.md §2.1/§2.2)."""
    out, qkv = {}, {}
    for k, v in state.items():
        if k.startswith("vision_tower."):
            n = k[len("vision_tower."):]
            for a, b in [("embeddings.cls_token", "embeddings.class_embedding"),
                         ("embeddings.position_embeddings", "embeddings.position_embedding"),
                         ("embeddings.patch_embeddings.projection", "embeddings.patch_embedding"),
                         ("encoder.layer.", "encoder.layers."), ("lambda_1", "ls1"), ("lambda_2", "ls2"),
                         ("attention.projection_layer", "attn.proj"), ("layernorm_before", "norm1"),
                         ("layernorm_after", "norm2")]:
                n = n.replace(a, b)
            m = re.fullmatch(r"(encoder\.layers\.\d+)\.attention\.([qkv])_proj\.(weight|bias)", n)
            if m:
                qkv.setdefault((m[1], m[3]), {})[m[2]] = v
                continue
            out["vision_model." + n] = v
        elif k.startswith("multi_modal_projector."):
            n = k[len("multi_modal_projector."):]
            n = n.replace("layer_norm", "0").replace("linear_1", "1").replace("linear_2", "3")
            out["mlp1." + n] = v
        else:
            assert k.startswith("language_model."), k
            out[k] = v
    for (layer, kind), parts in qkv.items():
        out[f"vision_model.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def original_config():
    """config.json in the original InternVLChatConfig form (InternVisionConfig keys)."""
    v = VISION
    vision = dict(model_type="intern_vit_6b", hidden_size=v["hidden_size"], num_hidden_layers=v["num_hidden_layers"],
                  num_attention_heads=v["num_attention_heads"], intermediate_size=v["intermediate_size"],
                  image_size=SIZE, patch_size=PATCH, qkv_bias=True, qk_normalization=False, norm_type="layer_norm",
                  layer_norm_eps=1e-6, hidden_act="gelu", drop_path_rate=0.0, initializer_factor=0.1)
    llm = dict(TEXT, architectures=["Qwen2ForCausalLM"])
    return dict(model_type="internvl_chat", vision_config=vision, llm_config=llm, downsample_ratio=0.5,
                ps_version="v2", select_layer=-1, force_image_size=SIZE, template="internvl2_5",
                dynamic_image_size=True, use_thumbnail=True, max_dynamic_patch=12, min_dynamic_patch=1,
                img_context_token_id=IMG, tie_word_embeddings=False)


def write_dir(path, tensors, config):
    path.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config))
    return path


# ---------------------------------------------------------------------------------------------------- InternViT

def test_internvit_matches_transformers(tmp_path, hf_model):
    d, model = hf_model
    pv = pixels(3)
    with torch.no_grad():
        ref = model.model.vision_tower(pixel_values=pv).last_hidden_state
    got = run_forward(tmp_path, "internvit", d, {"pixel_values": pv})["last_hidden_state"]
    assert got.shape == ref.shape == (3, 1 + (SIZE // PATCH) ** 2, 64)
    err = max_err(got, ref)
    print(f"internvit fp32 max abs error {err:.2e}")
    assert err <= TOL


@pytest.mark.parametrize("h,w", [(84, 84), (28, 28), (56, 112)])
def test_internvit_position_interpolation(tmp_path, hf_model, h, w):
    d, model = hf_model
    pv = pixels(2, h, w, seed=5)
    with torch.no_grad():
        ref = model.model.vision_tower(pixel_values=pv).last_hidden_state
    got = run_forward(tmp_path, "internvit", d, {"pixel_values": pv})["last_hidden_state"]
    assert got.shape == ref.shape == (2, 1 + (h // PATCH) * (w // PATCH), 64)
    err = max_err(got, ref)
    print(f"internvit {h}x{w} (interpolated positions) fp32 max abs error {err:.2e}")
    assert err <= TOL


def test_internvit_rejects_bad_image_size(tmp_path, hf_model):
    d, _ = hf_model
    save_file({"pixel_values": pixels(1, 50, 56)}, str(tmp_path / "in.safetensors"))
    proc = run_iomm("forward", "--component", "internvit", "--model", d, "--inputs", tmp_path / "in.safetensors",
                    "--out", tmp_path / "o.safetensors", check=False)
    assert proc.returncode != 0 and "patch size" in proc.stderr


# ---------------------------------------------------------------------------------------------------- InternVL

@pytest.mark.parametrize("tiles_per_row", [(1, 0, 0), (1, 2, 0), (0, 0, 3)], ids=["1tile", "3tiles", "3tiles_row2"])
def test_internvl_matches_transformers(tmp_path, hf_model, tiles_per_row):
    d, model = hf_model
    ids, mask, pos = batch(tiles_per_row)
    pv = pixels(sum(tiles_per_row))
    ref_h, ref_img, ref_logits = reference(model, ids, mask, pos, pv)
    got = run_forward(tmp_path, "internvl", d, {"input_ids": ids, "attention_mask": mask, "pixel_values": pv})
    assert got["vit_embeds"].shape == ref_img.shape == (pv.shape[0], TOKENS_PER_TILE, 48)
    e_img = max_err(got["vit_embeds"], ref_img)
    e_h = max_err(got["last_hidden_state"], ref_h, mask)
    e_l = max_err(got["logits"], ref_logits, mask)
    print(f"internvl {tiles_per_row} fp32 max abs error: vit_embeds {e_img:.2e}, last_hidden_state {e_h:.2e}, "
          f"logits {e_l:.2e}")
    assert max(e_img, e_h, e_l) <= TOL
    assert torch.isfinite(got["last_hidden_state"]).all()


def test_internvl_layouts_load(tmp_path, hf_model):
    """Original names (fused qkv, mlp1.N, original config keys), the current -hf prefixes and a sharded -hf save all
    give the reference outputs."""
    d, model = hf_model
    ids, mask, pos = batch((1, 2, 0))
    pv = pixels(3)
    ref_h, ref_img, _ = reference(model, ids, mask, pos, pv)
    state = load_file(str(d / "model.safetensors"))
    hf_cfg = json.loads((d / "config.json").read_text())

    def current_prefix(k):
        if k.startswith("language_model.lm_head."):
            return k[len("language_model."):]
        if k.startswith("language_model.model."):
            return "model.language_model." + k[len("language_model.model."):]
        return "model." + k

    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").exists()
    dirs = {
        "original": write_dir(tmp_path / "original", to_original(state), original_config()),
        "hf_current": write_dir(tmp_path / "hf_current", {current_prefix(k): v for k, v in state.items()}, hf_cfg),
        "hf_sharded": sharded,
    }
    assert "vision_model.encoder.layers.1.attn.qkv.weight" in load_file(str(dirs["original"] / "model.safetensors"))
    for name, md in dirs.items():
        got = run_forward(tmp_path, "internvl", md, {"input_ids": ids, "attention_mask": mask, "pixel_values": pv})
        e_img, e_h = max_err(got["vit_embeds"], ref_img), max_err(got["last_hidden_state"], ref_h, mask)
        assert max(e_img, e_h) <= TOL, f"{name}: vit_embeds {e_img}, last_hidden_state {e_h}"
        assert "logits" in got
        vit = run_forward(tmp_path, "internvit", md, {"pixel_values": pv})["last_hidden_state"]
        with torch.no_grad():
            assert max_err(vit, model.model.vision_tower(pixel_values=pv).last_hidden_state) <= TOL, name


def test_internvl_bad_checkpoint_lists_tensors(tmp_path, hf_model):
    d, _ = hf_model
    state = to_original(load_file(str(d / "model.safetensors")))
    del state["vision_model.encoder.layers.1.attn.qkv.bias"]
    state["mlp1.0.weight"] = torch.ones(255)
    state["vision_model.encoder.layers.0.extra"] = torch.ones(3)
    bad = write_dir(tmp_path / "bad", state, original_config())
    ids, mask, _ = batch((1, 0, 0))
    save_file({"input_ids": ids, "pixel_values": pixels(1)}, str(tmp_path / "in.safetensors"))
    proc = run_iomm("forward", "--component", "internvl", "--model", bad, "--inputs", tmp_path / "in.safetensors",
                    "--out", tmp_path / "o.safetensors", check=False)
    assert proc.returncode != 0
    for needle in ["vision_model.encoder.layers.1.attn.qkv.bias", "mlp1.0.weight", "[255]",
                   "vision_model.encoder.layers.0.extra"]:
        assert needle in proc.stderr, needle


def test_internvl_placeholder_count_mismatch_fails(tmp_path, hf_model):
    d, _ = hf_model
    ids, mask, _ = batch((1, 0, 0))
    save_file({"input_ids": ids, "attention_mask": mask, "pixel_values": pixels(2)}, str(tmp_path / "in.safetensors"))
    proc = run_iomm("forward", "--component", "internvl", "--model", d, "--inputs", tmp_path / "in.safetensors",
                    "--out", tmp_path / "o.safetensors", check=False)
    assert proc.returncode != 0 and "<IMG_CONTEXT>" in proc.stderr


def test_unsupported_config_fails_clearly(tmp_path, hf_model):
    d, _ = hf_model
    state = load_file(str(d / "model.safetensors"))
    for field, value, needle in [("use_qk_norm", True, "use_qk_norm"), ("norm_type", "rms_norm", "norm_type")]:
        cfg = json.loads((d / "config.json").read_text())
        cfg["vision_config"][field] = value
        md = write_dir(tmp_path / field, state, cfg)
        save_file({"pixel_values": pixels(1)}, str(tmp_path / "in.safetensors"))
        proc = run_iomm("forward", "--component", "internvit", "--model", md, "--inputs",
                        tmp_path / "in.safetensors", "--out", tmp_path / "o.safetensors", check=False)
        assert proc.returncode != 0 and needle in proc.stderr and "config.json" in proc.stderr


def test_bf16_error(tmp_path, hf_model):
    """bf16 compute vs the fp32 reference: reported (pytest -s), asserted only loosely."""
    d, model = hf_model
    ids, mask, pos = batch((1, 2, 0))
    pv = pixels(3)
    ref_h, ref_img, _ = reference(model, ids, mask, pos, pv)
    with torch.no_grad():
        ref_vit = model.model.vision_tower(pixel_values=pv).last_hidden_state
    vit = run_forward(tmp_path, "internvit", d, {"pixel_values": pv}, "--dtype", "bfloat16")["last_hidden_state"]
    got = run_forward(tmp_path, "internvl", d, {"input_ids": ids, "attention_mask": mask, "pixel_values": pv},
                      "--dtype", "bfloat16")
    rows = [("internvit last_hidden_state", vit, ref_vit, None),
            ("internvl vit_embeds", got["vit_embeds"], ref_img, None),
            ("internvl last_hidden_state", got["last_hidden_state"], ref_h, mask)]
    for name, a, b, m in rows:
        err = max_err(a, b, m)
        scale = (b[m.bool()] if m is not None else b).abs().max().item()
        print(f"bf16 vs fp32 reference, {name}: max abs {err:.3e}, relative to max |ref| {err / scale:.4f}")
        assert err / scale < 0.05


# ---------------------------------------------------------------------------------------------------- preprocessing

def reference_grid(w, h, min_num=1, max_num=12, size=448):
    """InternVL's closest-aspect-ratio rule (research mllm.md §3): candidates by product, the closest ratio wins, a
    later exact tie wins only when the image area exceeds half the grid's area."""
    cands = sorted({(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                    if min_num <= i * j <= max_num}, key=lambda r: r[0] * r[1])
    best, best_diff = (1, 1), float("inf")
    for i, j in cands:
        diff = abs(w / h - i / j)
        if diff < best_diff:
            best, best_diff = (i, j), diff
        elif diff == best_diff and w * h > 0.5 * size * size * i * j:
            best = (i, j)
    return best


def reference_tiles(img, size=448):
    from PIL import Image
    img = img.convert("RGB")
    cols, rows = reference_grid(*img.size)
    resized = img.resize((size * cols, size * rows))          # Pillow's default for RGB: bicubic
    tiles = [resized.crop((c * size, r * size, (c + 1) * size, (r + 1) * size))
             for r in range(rows) for c in range(cols)]
    if len(tiles) > 1:
        tiles.append(img.resize((size, size), Image.Resampling.BICUBIC))
    x = torch.stack([torch.from_numpy(__import__("numpy").array(t)).permute(2, 0, 1).float().div(255) for t in tiles])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("w,h,mode", [(800, 600, "RGB"), (300, 200, "RGB"), (1000, 100, "L"), (448, 448, "RGBA"),
                                      (120, 700, "RGB")])
def test_dynamic_tiling_matches_reference(tmp_path, w, h, mode):
    from PIL import Image
    g = torch.Generator().manual_seed(w * h)
    # Smooth content plus noise, so that resampling errors would show.
    base = torch.nn.functional.interpolate(torch.rand(1, 4, 9, 9, generator=g), size=(h, w), mode="bilinear")[0]
    arr = (base * 200 + torch.rand(4, h, w, generator=g) * 55).clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    arr = arr[:, :, :channels].contiguous()
    img = Image.fromarray(arr.numpy()[:, :, 0] if mode == "L" else arr.numpy(), mode)
    ref = reference_tiles(img)
    got = run_forward(tmp_path, "internvl_tiles", None, {"image": arr})["pixel_values"]
    assert got.shape == ref.shape, (got.shape, ref.shape)
    err = (got - ref).abs().max().item()
    print(f"dynamic tiling {w}x{h} {mode}: {got.shape[0]} tiles, max abs error {err:.2e}")
    assert err <= 1e-6
