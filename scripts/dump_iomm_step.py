#!/usr/bin/env python3
"""Writes the golden fixture of IOMM's training objective (issue 14): tests/fixtures/iomm_step/.

A tiny random IOMM (InternVL MLLM, Residual Query Adapter, FLUX MM-DiT, identity autoencoder) and one batch
(two self-conditioned images under a fixed MIM keep-mask, one caption), with the reference's loss, the gradients
of every trainable parameter and the losses of 10 AdamW steps. The reference is independent of iomm:
transformers' InternVL runs the frozen LLM on [c ; q] of every sample in ONE pass (no KV cache), the RQA is
written here from the paper's formula, and the generator is diffusers' FluxTransformer2DModel.

  python3 scripts/dump_iomm_step.py [--out DIR]

Layout of DIR:
  mllm/                  InternVL -hf checkpoint (config.json, model.safetensors, tokenizer.json = world's)
  model/                 iomm model dir: iomm.toml (mllm = "../mllm", relative to model/), generator/, rqa.safetensors
  batch.json             the conditions (kind, caption) and the optimiser settings
  inputs.safetensors     images [B,3,R,R] in [-1,1], keep [image rows, T] bool, t [B], noise [B,N,C·p²] (packed)
  expected.safetensors   input_ids, attention_mask, h, loss, grad.<iomm name>, adamw_losses [11], adamw_grad_norms
"""
import argparse
import json
import pathlib
import shutil
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer

import diffusers
import transformers

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "conformance"))
from test_mmdit import diffusers_to_bfl  # noqa: E402  the Python side's one diffusers -> BFL name map
sys.path.insert(0, str(ROOT / "bench" / "peer"))
from make_checkpoints import perturb_  # noqa: E402  weights of order 1/sqrt(fan_in), non-trivial norms and biases

TOKENIZER = ROOT / "configs" / "world" / "tokenizer.json"
SEED = 14

# The MLLM: 32 px tiles of 4 px patches -> 8×8 patches -> 16 image tokens after pixel shuffle.
TILE, PATCH_VIT = 32, 4
IMG_TOKENS = (TILE // PATCH_VIT // 2) ** 2
VISION = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=TILE,
              patch_size=PATCH_VIT, attention_bias=True, layer_norm_eps=1e-6, norm_type="layer_norm",
              hidden_act="gelu", use_qk_norm=False)
TEXT = dict(model_type="qwen2", vocab_size=492, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0,
            max_position_embeddings=256, tie_word_embeddings=False)
WIDTH = TEXT["hidden_size"]

# The generator: 16 px pixel space (identity autoencoder, 3 channels), 2×2 patches -> 64 tokens of 12.
RES, PATCH, CHANNELS = 16, 2, 3
GEN = dict(hidden_size=16, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[2, 2, 4])

# The adapter.
QUERIES, RQA_HEADS, RQA_MLP = 8, 4, 4.0

# The chat template and prompts (SPEC §1; iomm: src/text/tokenizer.cpp, src/conditioning/condition_sequence.cpp).
AUX = "Generate an image that is identical to the reference image:"
T2I = "Generate an image: "
CONDITIONS = [{"kind": "image"}, {"kind": "text", "text": "two red circles left of a blue square"}, {"kind": "image"}]
OPTIM = dict(lr=1e-3, betas=[0.9, 0.95], eps=1e-8, weight_decay=0.01, grad_clip=1.0)
ADAMW_STEPS = 10


# ------------------------------------------------------------------------------------------------ models

def make_mllm():
    cfg = transformers.InternVLConfig(vision_config=VISION, text_config=TEXT, image_token_id=491,
                                      image_seq_length=IMG_TOKENS, downsample_ratio=0.5, tie_word_embeddings=False)
    m = transformers.InternVLForConditionalGeneration._from_config(cfg, attn_implementation="eager").eval()
    perturb_(m)
    m.requires_grad_(False)
    return m


class ResidualQueryAdapter(nn.Module):
    """Paper §3.4: q = Q + MHA(LN(Q), LN(c)) with a key padding mask; q = q + MLP(LN(q)), 4× GELU-tanh.
    Non-affine LayerNorms (eps 1e-6); parameter names are iomm's (nn.MultiheadAttention's, mlp.fc1/fc2)."""

    def __init__(self, dim, queries, heads, mlp_ratio):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.ModuleDict(dict(fc1=nn.Linear(dim, hidden), fc2=nn.Linear(hidden, dim)))
        with torch.no_grad():
            self.attn.in_proj_bias.normal_(0, 0.2)
            self.attn.out_proj.bias.normal_(0, 0.2)

    def forward(self, c, key_mask):
        ln = lambda x: F.layer_norm(x, x.shape[-1:], eps=1e-6)
        Q = self.queries.expand(c.shape[0], -1, -1)
        q = Q + self.attn(ln(Q), ln(c), ln(c), key_padding_mask=~key_mask, need_weights=False)[0]
        return q + self.mlp.fc2(F.gelu(self.mlp.fc1(ln(q)), approximate="tanh"))


def make_flux():
    """iomm's generator has no pooled vector (vec_in_dim 0); diffusers always has text_embedder, so it is zeroed and
    frozen, as iomm's export to diffusers does (name_conversion.cpp, flux_to_diffusers)."""
    m = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=CHANNELS * PATCH * PATCH, num_layers=GEN["depth"],
        num_single_layers=GEN["depth_single_blocks"], attention_head_dim=GEN["hidden_size"] // GEN["num_heads"],
        num_attention_heads=GEN["num_heads"], joint_attention_dim=WIDTH, pooled_projection_dim=4,
        guidance_embeds=False, axes_dims_rope=tuple(GEN["axes_dim"]))
    perturb_(m)
    with torch.no_grad():
        for p in m.time_text_embed.text_embedder.parameters():
            p.zero_()
            p.requires_grad_(False)
    return m


# ------------------------------------------------------------------------------------------------ names

def flux_to_bfl(sd):
    """diffusers FluxTransformer2DModel names -> BFL names, by the conformance tests' one map (test_mmdit), less the
    pooled-text embedder that iomm's IOMM generator does not have (zeroed and frozen in the reference). Also maps
    gradients: every BFL tensor is a concatenation or permutation of diffusers tensors."""
    out = {k: v for k, v in diffusers_to_bfl(sd).items() if not k.startswith("vector_in.")}
    n_trainable = sum(1 for k in sd if not k.startswith("time_text_embed.text_embedder."))
    fused = 8 * GEN["depth"] + 6 * GEN["depth_single_blocks"]  # q, k, v (+ proj_mlp) become one tensor
    assert len(out) == n_trainable - fused, "every trainable diffusers tensor mapped exactly once"
    return out


# ------------------------------------------------------------------------------------------------ batch

def tokenize(tok, conds):
    """Right-padded ids in the Qwen2 chat template + OpenUni's trailing <img> (the image to produce)."""
    rows = []
    for c in conds:
        prompt = T2I + c["text"] if c["kind"] == "text" else AUX + "<img>" + "<IMG_CONTEXT>" * IMG_TOKENS + "</img>"
        s = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<img>"
        rows.append(tok.encode(s, add_special_tokens=False).ids)
    L = max(map(len, rows))
    pad = tok.token_to_id("<|endoftext|>")
    ids = torch.tensor([r + [pad] * (L - len(r)) for r in rows])
    mask = torch.tensor([[True] * len(r) + [False] * (L - len(r)) for r in rows])
    return ids, mask


def make_inputs(n_images):
    g = torch.Generator().manual_seed(SEED + 1)
    B = len(CONDITIONS)
    images = torch.rand(B, 3, RES, RES, generator=g) * 2 - 1
    keep = torch.rand(n_images, IMG_TOKENS, generator=g) < 0.5
    t = torch.rand(B, generator=g)
    noise = torch.randn(B, (RES // PATCH) ** 2, CHANNELS * PATCH * PATCH, generator=g)
    assert keep.any(1).all() and (~keep).any(1).all()
    return dict(images=images, keep=keep, t=t, noise=noise)


# ------------------------------------------------------------------------------------------------ reference

def vit_pixels(images):
    """OpenUni's preprocessing: [-1,1] -> [0,1] -> ImageNet normalisation -> bilinear to the tile (no antialias)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    x = ((images + 1) / 2 - mean) / std
    return F.interpolate(x, size=(TILE, TILE), mode="bilinear", align_corners=False, antialias=False)


def condition_embeds(mllm, ids, images, keep, conds):
    """c: token embeddings with each self-conditioned image's tokens, MIM-masked (zeroed, paper §3.3), spliced in."""
    rows = [i for i, c in enumerate(conds) if c["kind"] == "image"]
    c = mllm.get_input_embeddings()(ids)
    img = mllm.model.get_image_features(pixel_values=vit_pixels(images[rows]), vision_feature_layer=-1,
                                        vision_feature_select_strategy="default").pooler_output
    img = img * keep.unsqueeze(-1)
    for j, r in enumerate(rows):
        c[r, ids[r] == mllm.config.image_token_id] = img[j]
    return c


def query_states(mllm, c, mask, q):
    """h: the frozen LLM on [c ; q] of each sample in one pass (sequences right-padded to a common length), final
    norm, at the query positions."""
    B, Nq = q.shape[:2]
    n = mask.sum(1).tolist()
    L = max(n) + Nq
    seq = c.new_zeros(B, L, c.shape[-1])
    full = torch.zeros(B, L, dtype=torch.bool)
    for b in range(B):
        seq[b, :n[b] + Nq] = torch.cat([c[b, :n[b]], q[b]])
        full[b, :n[b] + Nq] = True
    pos = torch.arange(L).expand(B, L)
    out = mllm.model.language_model(inputs_embeds=seq, attention_mask=full.long(), position_ids=pos)
    return torch.stack([out.last_hidden_state[b, n[b]:n[b] + Nq] for b in range(B)])


def pack(x):
    """FLUX's 'b c (h p) (w q) -> b (h w) (c p q)'."""
    B, C, H, W = x.shape
    x = x.view(B, C, H // PATCH, PATCH, W // PATCH, PATCH).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // PATCH) * (W // PATCH), C * PATCH * PATCH)


def flow_loss(flux, h, images, t, noise):
    """Rectified flow (SPEC §1): x_t = (1−t)x + t·z, the model predicts the velocity z − x, MSE."""
    x = pack(images)
    tt = t.view(-1, 1, 1)
    x_t = (1 - tt) * x + tt * noise
    s = RES // PATCH
    img_ids = torch.zeros(s, s, 3)  # (0, row, column)
    img_ids[..., 1] = torch.arange(s).view(-1, 1)
    img_ids[..., 2] = torch.arange(s).view(1, -1)
    v = flux(hidden_states=x_t, encoder_hidden_states=h, pooled_projections=h.new_zeros(h.shape[0], 4), timestep=t,
             img_ids=img_ids.view(-1, 3), txt_ids=torch.zeros(h.shape[1], 3)).sample
    return ((v - (noise - x)) ** 2).mean()


class Objective:
    def __init__(self, mllm, rqa, flux, ids, mask, inputs):
        self.mllm, self.rqa, self.flux = mllm, rqa, flux
        self.ids, self.mask, self.inp = ids, mask, inputs
        with torch.no_grad():
            self.c = condition_embeds(mllm, ids, inputs["images"], inputs["keep"], CONDITIONS)

    def h(self):
        return query_states(self.mllm, self.c, self.mask, self.rqa(self.c, self.mask))

    def __call__(self):
        return flow_loss(self.flux, self.h(), self.inp["images"], self.inp["t"], self.inp["noise"])


def check_one_pass_equals_rows(obj):
    """The batched pass equals each sample alone (no padding, no mask): padding is invisible."""
    with torch.no_grad():
        h = obj.h()
        for b in range(len(CONDITIONS)):
            n = int(obj.mask[b].sum())
            c, q = obj.c[b:b + 1, :n], obj.rqa(obj.c[b:b + 1, :n], obj.mask[b:b + 1, :n])
            alone = obj.mllm.model.language_model(inputs_embeds=torch.cat([c, q], 1)).last_hidden_state[:, n:]
            assert (alone[0] - h[b]).abs().max() < 1e-5, b


def trainable(rqa, flux):
    return [p for p in list(rqa.parameters()) + list(flux.parameters()) if p.requires_grad]


def gradients(rqa, flux):
    g = {f"grad.conditioner.rqa.{n}": p.grad.clone() for n, p in rqa.named_parameters()}
    fg = flux_to_bfl({n: (p.grad.clone() if p.requires_grad else p.detach()) for n, p in flux.named_parameters()})
    g.update({f"grad.generator.{n}": v for n, v in fg.items()})
    return g


def adamw_run(obj, params):
    """ADAMW_STEPS steps on the same batch: loss k is before update k, the last one after the final update."""
    opt = torch.optim.AdamW(params, lr=OPTIM["lr"], betas=tuple(OPTIM["betas"]), eps=OPTIM["eps"],
                            weight_decay=OPTIM["weight_decay"])
    losses, norms = [], []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad()
        loss = obj()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, OPTIM["grad_clip"])))
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        losses.append(obj().item())
    return torch.tensor(losses, dtype=torch.float32), torch.tensor(norms, dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ files

def write_mllm(d, mllm):
    d.mkdir(parents=True)
    sd = {k: v.contiguous() for k, v in mllm.state_dict().items() if not k.startswith("lm_head.")}
    save_file(sd, str(d / "model.safetensors"))
    (d / "config.json").write_text(mllm.config.to_json_string(use_diff=False))
    shutil.copyfile(TOKENIZER, d / "tokenizer.json")


def model_toml():
    g = GEN
    return (f'[model]\nmllm = "../mllm"\nautoencoder = "identity"\nresolution = {RES}\ndevice = "cpu"\n'
            f'dtype = "float32"\nprediction = "velocity"\n\n'
            f"[generator]\nhidden_size = {g['hidden_size']}\nnum_heads = {g['num_heads']}\ndepth = {g['depth']}\n"
            f"depth_single_blocks = {g['depth_single_blocks']}\ncontext_in_dim = {WIDTH}\nvec_in_dim = 0\n"
            f"mlp_ratio = 4.0\naxes_dim = {g['axes_dim']}\ntheta = 10000.0\nqkv_bias = true\n"
            f"guidance_embed = false\npatch_size = {PATCH}\nin_channels = {CHANNELS * PATCH * PATCH}\n\n"
            f'[conditioner]\nmode = "rqa"\ncond_tokens = "queries"\nnum_queries = {QUERIES}\n'
            f'num_heads = {RQA_HEADS}\nmlp_ratio = {RQA_MLP}\nmask_granularity = "token"\n'
            f"aux_prompt = {json.dumps(AUX)}\nt2i_prefix = {json.dumps(T2I)}\n")


def write_model(d, rqa, flux):
    (d / "generator").mkdir(parents=True)
    bfl = flux_to_bfl({k: v.detach().contiguous() for k, v in flux.state_dict().items()})
    save_file({k: v.contiguous() for k, v in bfl.items()}, str(d / "generator" / "model.safetensors"))
    gen_cfg = dict(in_channels=CHANNELS * PATCH * PATCH, out_channels=CHANNELS * PATCH * PATCH, vec_in_dim=0,
                   context_in_dim=WIDTH, mlp_ratio=4.0, theta=10000.0, qkv_bias=True, guidance_embed=False,
                   iomm_patch_size=PATCH, **GEN)
    (d / "generator" / "config.json").write_text(json.dumps(gen_cfg, indent=1) + "\n")
    save_file({k: v.detach().contiguous() for k, v in rqa.state_dict().items()}, str(d / "rqa.safetensors"))
    (d / "iomm.toml").write_text(model_toml())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "iomm_step"))
    out = pathlib.Path(ap.parse_args().out)
    torch.set_num_threads(1)  # reproducible reductions: the pytest regenerates and compares
    torch.manual_seed(SEED)
    mllm, rqa, flux = make_mllm(), ResidualQueryAdapter(WIDTH, QUERIES, RQA_HEADS, RQA_MLP), make_flux()
    tok = Tokenizer.from_file(str(TOKENIZER))
    assert tok.token_to_id("<IMG_CONTEXT>") == mllm.config.image_token_id
    ids, mask = tokenize(tok, CONDITIONS)
    inputs = make_inputs(sum(c["kind"] == "image" for c in CONDITIONS))

    if out.exists():
        shutil.rmtree(out)
    write_mllm(out / "mllm", mllm)
    write_model(out / "model", rqa, flux)  # before training: the weights the objective starts from
    (out / "batch.json").write_text(json.dumps(dict(conditions=CONDITIONS, optim=OPTIM, adamw_steps=ADAMW_STEPS),
                                               indent=1) + "\n")
    save_file(inputs, str(out / "inputs.safetensors"))

    obj = Objective(mllm, rqa, flux, ids, mask, inputs)
    check_one_pass_equals_rows(obj)
    h = obj.h().detach()
    loss = obj()
    loss.backward()
    expected = dict(input_ids=ids, attention_mask=mask, h=h, loss=loss.detach(), **gradients(rqa, flux))
    expected["adamw_losses"], expected["adamw_grad_norms"] = adamw_run(obj, trainable(rqa, flux))
    save_file({k: v.contiguous() for k, v in expected.items()}, str(out / "expected.safetensors"))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: loss {loss.item():.6f}, lengths {mask.sum(1).tolist()}, AdamW losses "
          f"{[round(x, 4) for x in expected['adamw_losses'].tolist()]}, grad norms "
          f"{[round(x, 3) for x in expected['adamw_grad_norms'].tolist()]}, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
