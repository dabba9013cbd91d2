"""IOMM's training step and generation in plain PyTorch: the peer that iomm's speed is measured against (issue 16).

Written the way an ML researcher would put IOMM together from the ecosystem's parts, independent of iomm's C++:
  - the frozen MLLM is transformers' InternVLForConditionalGeneration: get_image_features -> the MIM keep-mask
    zeroing (paper §3.3) -> spliced into the token embeddings at the <IMG_CONTEXT> slots;
  - the Residual Query Adapter (paper §3.4) is an nn.Module around nn.MultiheadAttention;
  - the LLM runs on [c ; q] of each sample: by default the prefix c once without grad with transformers' KV cache,
    then only the query positions with grad (the paper's gradient path, SPEC §1; the same algorithm as iomm), or
    with llm_pass = "full" one pass over [c ; q] as scripts/dump_iomm_step.py does;
  - the generator is diffusers' FluxTransformer2DModel, the autoencoder diffusers' AutoencoderKL (or the identity);
  - rectified flow with the MSE loss, torch.optim.AdamW, clip_grad_norm_, an fp32 EMA; Euler / DPM-Solver++(2M)
    with true CFG for generation.

Inputs are the dump directory of `iomm bench train|generate --dump DIR` (see load_dump). The numerics follow
scripts/dump_iomm_step.py, which matches iomm's objective to 1e-5 (tests/fixtures/iomm_step).
"""
import json
import math
import pathlib
import tomllib
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------------ settings

@dataclass
class Settings:
    """What the peer needs from DIR/model/iomm.toml, with iomm's defaults (src/model/iomm_model.h,
    src/conditioning/*.h) for absent keys."""
    mllm: pathlib.Path
    autoencoder: str | pathlib.Path          # "identity" or a diffusers AutoencoderKL directory
    resolution: int = 32
    device: str = "cpu"
    dtype: str = "float32"
    prediction: str = "velocity"             # velocity | data (x-prediction, v = (x_t − x̂) / max(t, t_min))
    prediction_t_min: float = 0.05
    patch_size: int = 2
    theta: float = 10000.0                   # the generator's RoPE base
    mode: str = "rqa"
    cond_tokens: str = "queries"
    num_queries: int = 256
    num_heads: int | None = None             # None: max(1, width / 128), as iomm
    mlp_ratio: float = 4.0
    mask_granularity: str = "token"
    aux_prompt: str = "Generate an image that is identical to the reference image:"
    t2i_prefix: str = "Generate an image: "
    uncond_prompt: str = "Generate an image."
    max_text_tokens: int = 128
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_model_dir(cls, model_dir):
        model_dir = pathlib.Path(model_dir)
        t = tomllib.loads((model_dir / "iomm.toml").read_text())
        m, g, c = t.get("model", {}), t.get("generator", {}), t.get("conditioner", {})
        ae = m.get("autoencoder", "identity")
        s = cls(mllm=model_dir / m["mllm"],
                autoencoder=ae if ae in ("identity", "pixel") else model_dir / ae, extra=t)
        for key in ("resolution", "device", "dtype", "prediction", "prediction_t_min"):
            if key in m:
                setattr(s, key, m[key])
        s.patch_size = g.get("patch_size", s.patch_size)
        s.theta = g.get("theta", s.theta)
        for key in ("mode", "cond_tokens", "num_queries", "num_heads", "mlp_ratio", "mask_granularity", "aux_prompt",
                    "t2i_prefix", "uncond_prompt", "max_text_tokens"):
            if key in c:
                setattr(s, key, c[key])
        s.check()
        return s

    def check(self):
        arch = self.extra.get("generator", {}).get("arch", "mmdit")
        if arch != "mmdit":
            raise SystemExit(f"peer: generator.arch = {arch}; only the MM-DiT (FluxTransformer2DModel) is peered")
        if self.mode not in ("rqa", "metaquery"):
            raise SystemExit(f"peer: conditioner.mode = {self.mode}; the peer covers rqa and metaquery")
        if self.cond_tokens != "queries":
            raise SystemExit("peer: conditioner.cond_tokens = all needs a text mask in the generator, which "
                             "diffusers' FluxTransformer2DModel does not take; the peer covers 'queries'")
        if self.mask_granularity not in ("token", "element"):
            raise SystemExit(f"peer: unknown conditioner.mask_granularity {self.mask_granularity}")


# ------------------------------------------------------------------------------------------------ tokens

def chat_prompt(cond, s: Settings, image_tokens, tok):
    """The Qwen2 chat template around one condition's user turn, with OpenUni's trailing <img> (the image the
    assistant is asked to produce). Captions longer than max_text_tokens are cut on a token boundary."""
    kind = cond["kind"]
    if kind == "text":
        ids = tok.encode(cond["text"], add_special_tokens=False).ids
        text = cond["text"] if len(ids) <= s.max_text_tokens else tok.decode(ids[:s.max_text_tokens],
                                                                                skip_special_tokens=False)
        user = s.t2i_prefix + text
    elif kind == "uncond":
        user = s.uncond_prompt
    elif kind == "image":
        user = s.aux_prompt + "<img>" + "<IMG_CONTEXT>" * image_tokens + "</img>"
    else:
        raise SystemExit(f"peer: condition kind {kind!r} is not one of image, text, uncond")
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n<img>"


def tokenize(tok, conds, s: Settings, image_tokens):
    """Right-padded ids [B, L] (pad = <|endoftext|>) and the mask [B, L] bool."""
    rows = [tok.encode(chat_prompt(c, s, image_tokens, tok), add_special_tokens=False).ids for c in conds]
    L = max(map(len, rows))
    pad = tok.token_to_id("<|endoftext|>") or 0
    ids = torch.tensor([r + [pad] * (L - len(r)) for r in rows], dtype=torch.long)
    mask = torch.tensor([[True] * len(r) + [False] * (L - len(r)) for r in rows])
    return ids, mask


# ------------------------------------------------------------------------------------------------ modules

class ResidualQueryAdapter(nn.Module):
    """Paper §3.4: q = Q + MHA(LN(Q), LN(c)) with a key padding mask; q = q + MLP(LN(q)), GELU-tanh; non-affine
    LayerNorms (eps 1e-6). cross_attention = False is the MetaQuery ablation (q = Q). Parameter names are iomm's
    rqa.safetensors names (nn.MultiheadAttention's, mlp.fc1 / mlp.fc2)."""

    def __init__(self, dim, queries, heads, mlp_ratio, cross_attention=True):
        super().__init__()
        self.cross_attention = cross_attention
        self.queries = nn.Parameter(torch.zeros(queries, dim))
        if cross_attention:
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            hidden = round(dim * mlp_ratio)
            self.mlp = nn.ModuleDict(dict(fc1=nn.Linear(dim, hidden), fc2=nn.Linear(hidden, dim)))

    @staticmethod
    def ln(x):
        return F.layer_norm(x, x.shape[-1:], eps=1e-6)

    def forward(self, c, key_mask):
        Q = self.queries.expand(c.shape[0], -1, -1)
        if not self.cross_attention:
            return Q
        kv = self.ln(c)
        q = Q + self.attn(self.ln(Q), kv, kv, key_padding_mask=~key_mask, need_weights=False)[0]
        return q + self.mlp.fc2(F.gelu(self.mlp.fc1(self.ln(q)), approximate="tanh"))


class IdentityAE:
    """Pixel space: the latent is the image."""
    channels, factor = 3, 1

    def encode(self, x):
        return x

    def decode(self, z):
        return z


class DiffusersAE:
    """diffusers' AutoencoderKL with FLUX's latent convention: z = scale · (mean − shift), the posterior mean (not a
    sample); decode(z / scale + shift)."""

    def __init__(self, path, device, dtype):
        import diffusers
        self.vae = diffusers.AutoencoderKL.from_pretrained(str(path)).eval().requires_grad_(False).to(device, dtype)
        cfg = self.vae.config
        self.scale, self.shift = cfg.scaling_factor, cfg.shift_factor or 0.0
        self.channels, self.factor = cfg.latent_channels, 2 ** (len(cfg.block_out_channels) - 1)

    def encode(self, x):
        return self.scale * (self.vae.encode(x).latent_dist.mean - self.shift)

    def decode(self, z):
        return self.vae.decode(z / self.scale + self.shift).sample


def open_autoencoder(spec, device, dtype):
    return IdentityAE() if str(spec) in ("identity", "pixel") else DiffusersAE(spec, device, dtype)


def load_mllm(path, attn_implementation="sdpa"):
    import transformers
    cfg = json.loads((pathlib.Path(path) / "config.json").read_text())
    if cfg.get("model_type") != "internvl":
        raise SystemExit(f"peer: {path}/config.json has model_type {cfg.get('model_type')!r}; the peer loads "
                         "transformers' InternVL (-hf layout, model_type 'internvl'), e.g. from "
                         "bench/peer/make_checkpoints.py")
    m = transformers.InternVLForConditionalGeneration.from_pretrained(str(path),
                                                                      attn_implementation=attn_implementation)
    return m.eval().requires_grad_(False)


def load_generator(path, theta):
    """diffusers' FluxTransformer2DModel; its pooled-text embedder (iomm's generator has no pooled vector) is zero
    and stays frozen. diffusers' config has no RoPE base (FLUX's 10000 is built in), so a generator with another
    theta (the tiny world's 64) gets it set on the position embedder."""
    import diffusers
    flux = diffusers.FluxTransformer2DModel.from_pretrained(str(path))
    flux.pos_embed.theta = theta
    for p in flux.time_text_embed.text_embedder.parameters():
        if p.abs().max() != 0:
            raise SystemExit(f"peer: {path} has a non-zero pooled-text embedder; iomm's generator has none")
        p.requires_grad_(False)
    return flux


def load_rqa(path, width, s: Settings):
    heads = s.num_heads or max(1, width // 128)
    rqa = ResidualQueryAdapter(width, s.num_queries, heads, s.mlp_ratio, cross_attention=s.mode == "rqa")
    rqa.load_state_dict(load_file(str(path)), strict=True)
    return rqa


# ------------------------------------------------------------------------------------------------ latents

def pack(x, p):
    """FLUX's 'b c (h p) (w q) -> b (h w) (c p q)'."""
    B, C, H, W = x.shape
    x = x.view(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // p) * (W // p), C * p * p)


def unpack(x, side, p):
    B, N, D = x.shape
    C, s = D // (p * p), side // p
    return x.view(B, s, s, C, p, p).permute(0, 3, 1, 4, 2, 5).reshape(B, C, side, side)


def image_ids(tokens_side):
    """FLUX's 3-axis positions of the image tokens: (0, row, column)."""
    ids = torch.zeros(tokens_side, tokens_side, 3)
    ids[..., 1] = torch.arange(tokens_side).view(-1, 1)
    ids[..., 2] = torch.arange(tokens_side).view(1, -1)
    return ids.view(-1, 3)


def vit_pixels(images, tile):
    """OpenUni's conditioning path: [-1,1] -> [0,1] -> ImageNet normalisation -> bilinear to the tile, no
    antialias."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
    x = ((images.float() + 1) / 2 - mean) / std
    return F.interpolate(x, size=(tile, tile), mode="bilinear", align_corners=False, antialias=False)


# ------------------------------------------------------------------------------------------------ samplers

def static_shift_sigmas(steps, shift):
    """linspace(1, 0, steps + 1) under the static shift s·t / (1 + (s − 1)·t), in Python floats (doubles)."""
    return [shift * t / (1 + (shift - 1) * t) for t in (1 - i / steps for i in range(steps + 1))]


def sample_euler(model, x, sigmas):
    for s, sn in zip(sigmas[:-1], sigmas[1:]):
        x = x + (sn - s) * model(x, s)
    return x


def _flow_lambda(sigma):
    return -math.inf if sigma >= 1 else math.log((1 - sigma) / sigma)


def sample_dpmpp_2m(model, x, sigmas):
    """DPM-Solver++(2M) for flows: alpha = 1 − sigma, x0 = x − sigma·v, lambda = log(alpha / sigma); first order on
    the first step and on the final step to sigma = 0."""
    prev_x0, prev_h = None, math.inf
    for s, sn in zip(sigmas[:-1], sigmas[1:]):
        x0 = x - s * model(x, s)
        h = math.inf
        if sn <= 0:
            x = x0
        else:
            h = _flow_lambda(sn) - _flow_lambda(s)
            d = x0
            if prev_x0 is not None and math.isfinite(prev_h) and math.isfinite(h):
                r = prev_h / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
            x = (sn / s) * x - (1 - sn) * math.expm1(-h) * d
        prev_x0, prev_h = x0, h
    return x


SAMPLERS = {"euler": sample_euler, "dpmpp_2m": sample_dpmpp_2m}


# ------------------------------------------------------------------------------------------------ the model

class IommPeer:
    """The frozen MLLM + trainable RQA and generator + frozen autoencoder, from an iomm model directory (RQA, iomm.toml)
    and the generator in diffusers layout."""

    def __init__(self, model_dir, generator_dir, llm_pass="cached", attn_implementation="sdpa", device=None,
                 dtype=None):
        model_dir = pathlib.Path(model_dir)
        self.s = Settings.from_model_dir(model_dir)
        # As iomm: every module on the model's device in the model's dtype (iomm.toml), unless overridden.
        self.device = torch.device(device or self.s.device)
        self.dtype = getattr(torch, dtype or self.s.dtype)
        self.mllm = load_mllm(self.s.mllm, attn_implementation).to(self.device, self.dtype)
        self.tok = Tokenizer.from_file(str(self.s.mllm / "tokenizer.json"))
        cfg = self.mllm.config
        if self.tok.token_to_id("<IMG_CONTEXT>") != cfg.image_token_id:
            raise SystemExit("peer: the tokenizer's <IMG_CONTEXT> differs from the MLLM's image_token_id")
        self.width = cfg.text_config.hidden_size
        size = cfg.vision_config.image_size
        self.tile = size[0] if isinstance(size, (list, tuple)) else size
        patch = cfg.vision_config.patch_size
        patch = patch[0] if isinstance(patch, (list, tuple)) else patch
        self.image_tokens = int(self.tile // patch * cfg.downsample_ratio) ** 2
        self.rqa = load_rqa(model_dir / "rqa.safetensors", self.width, self.s).to(self.device, self.dtype)
        self.flux = load_generator(generator_dir, self.s.theta).to(self.device, self.dtype)
        self.ae = open_autoencoder(self.s.autoencoder, self.device, self.dtype)
        self.side = self.s.resolution // self.ae.factor
        self.llm_pass = llm_pass
        # What the forward passes call: the modules, or their torch.compile wrappers (compile()).
        self.flux_fn, self.rqa_fn = self.flux, self.rqa

    def compile(self, **kw):
        self.flux_fn = torch.compile(self.flux, **kw)
        self.rqa_fn = torch.compile(self.rqa, **kw)

    def trainable(self):
        return [p for p in list(self.rqa.parameters()) + list(self.flux.parameters()) if p.requires_grad]

    # ---- conditioning

    def tokenize(self, conds):
        return tokenize(self.tok, conds, self.s, self.image_tokens)

    @torch.no_grad()
    def prefix(self, ids, conds, images=None, keep=None):
        """c: the frozen token embeddings with each image condition's tokens (ViT -> pixel shuffle -> mlp1),
        MIM-masked by `keep` (zeroed, not dropped), spliced in at the <IMG_CONTEXT> slots."""
        ids = ids.to(self.device)
        c = self.mllm.get_input_embeddings()(ids)
        rows = [i for i, cd in enumerate(conds) if cd["kind"] == "image"]
        if not rows:
            return c
        pixels = vit_pixels(images[rows].to(self.device), self.tile).to(self.dtype)
        img = self.mllm.model.get_image_features(pixel_values=pixels,
                                                 vision_feature_layer=-1,
                                                 vision_feature_select_strategy="default").pooler_output
        if keep is not None:
            keep = keep.to(self.device)
            img = img * (keep.unsqueeze(-1) if self.s.mask_granularity == "token" else keep).to(img.dtype)
        slots = ids == self.mllm.config.image_token_id
        c[rows] = c[rows].masked_scatter(slots[rows].unsqueeze(-1), img)
        return c

    def query_states(self, c, mask):
        """h: the LLM's final-norm hidden states at the query positions of [c ; q]."""
        mask = mask.to(self.device)
        q = self.rqa_fn(c, mask)
        return (self._cached_pass if self.llm_pass == "cached" else self._full_pass)(c, mask, q)

    def _cached_pass(self, c, mask, q):
        """The prefix once without grad, its KV cache kept; the queries with grad after it. Each sample's queries
        sit right after its own valid tokens (positions from the mask; padding masked out of attention)."""
        lm = self.mllm.model.language_model
        B, L = mask.shape
        with torch.no_grad():
            pre = lm(inputs_embeds=c, attention_mask=mask.long(),
                     position_ids=torch.arange(L, device=c.device).expand(B, L), use_cache=True)
        Nq = q.shape[1]
        pos = mask.sum(1, keepdim=True) + torch.arange(Nq, device=c.device)
        full = torch.cat([mask, torch.ones(B, Nq, dtype=torch.bool, device=c.device)], 1)
        return lm(inputs_embeds=q, attention_mask=full.long(), position_ids=pos, past_key_values=pre.past_key_values,
                  use_cache=True).last_hidden_state

    def _full_pass(self, c, mask, q):
        """One pass over [c ; q] of each sample, packed left and right-padded (scripts/dump_iomm_step.py)."""
        B, Nq = q.shape[:2]
        n = mask.sum(1).tolist()
        L = max(n) + Nq
        seq = c.new_zeros(B, L, c.shape[-1])
        valid = torch.zeros(B, L, dtype=torch.bool, device=c.device)
        for b in range(B):
            seq[b, :n[b] + Nq] = torch.cat([c[b, :n[b]], q[b]])
            valid[b, :n[b] + Nq] = True
        out = self.mllm.model.language_model(inputs_embeds=seq, attention_mask=valid.long(),
                                             position_ids=torch.arange(L, device=c.device).expand(B, L)
                                             ).last_hidden_state
        return torch.stack([out[b, n[b]:n[b] + Nq] for b in range(B)])

    def condition(self, ids, mask, conds, images=None, keep=None):
        return self.query_states(self.prefix(ids, conds, images, keep), mask)

    # ---- the generator

    def velocity(self, x_t, t, h):
        """The generator's output on packed tokens as a velocity (prediction = data: v = (x_t − x̂) / max(t, t_min),
        since x_t = (1 − t)·x + t·z)."""
        t = t.to(self.device, x_t.dtype)
        h = h.to(x_t.dtype)
        pooled = h.new_zeros(h.shape[0], self.flux.config.pooled_projection_dim)
        out = self.flux_fn(hidden_states=x_t, encoder_hidden_states=h, pooled_projections=pooled, timestep=t,
                           img_ids=image_ids(self.side // self.s.patch_size).to(self.device),
                           txt_ids=torch.zeros(h.shape[1], 3, device=self.device), return_dict=False)[0]
        if self.s.prediction == "velocity":
            return out
        return (x_t - out) / t.clamp_min(self.s.prediction_t_min).view(-1, 1, 1)

    @torch.no_grad()
    def latents(self, images):
        return pack(self.ae.encode(images.to(self.device, self.dtype)), self.s.patch_size)

    def loss(self, batch, conds):
        """Rectified flow (SPEC §1): x_t = (1 − t)·x + t·z, target z − x, MSE per sample (in fp32), then the
        batch mean."""
        h = self.condition(batch["input_ids"], batch["attention_mask"], conds, batch["images"], batch.get("keep"))
        x = self.latents(batch["images"])
        z, t = batch["noise"].to(self.device, x.dtype), batch["t"].to(self.device)
        tt = t.to(x.dtype).view(-1, 1, 1)
        x_t = (1 - tt) * x + tt * z
        v = self.velocity(x_t, t, h)
        return (v.float() - (z - x).float()).pow(2).mean((1, 2)).mean()

    # ---- generation

    @torch.no_grad()
    def text_condition(self, conds):
        ids, mask = self.tokenize(conds)
        return self.condition(ids, mask, conds)

    def initial_noise(self, n, seed):
        """Image i's noise from its own CPU generator seeded seed + i, drawn as [C, side, side]."""
        return torch.stack([torch.randn(self.ae.channels, self.side, self.side,
                                        generator=torch.Generator().manual_seed(seed + i)) for i in range(n)])

    @torch.no_grad()
    def generate(self, prompts, steps, cfg_scale, sampler, shift, seed):
        """Text-to-image: PF-ODE from t = 1 to 0, true CFG against the unconditional prompt batched as
        [cond ; uncond]. Images [N, 3, R, R] in [-1, 1]."""
        conds = [{"kind": "text", "text": p} for p in prompts]
        h = self.text_condition(conds)
        guided = cfg_scale != 1.0
        if guided:
            h = torch.cat([h, self.text_condition([{"kind": "uncond"}] * len(conds))])

        def model(x, sigma):
            xin = torch.cat([x, x]) if guided else x
            v = self.velocity(xin, torch.full((xin.shape[0],), sigma, dtype=xin.dtype, device=xin.device), h)
            if not guided:
                return v
            cond, uncond = v.chunk(2)
            return uncond + cfg_scale * (cond - uncond)

        x = pack(self.initial_noise(len(conds), seed), self.s.patch_size).to(self.device, self.dtype)
        x = SAMPLERS[sampler](model, x, static_shift_sigmas(steps, shift))
        return self.ae.decode(unpack(x, self.side, self.s.patch_size)).float().clamp(-1, 1)


# ------------------------------------------------------------------------------------------------ training

class Trainer:
    """forward -> backward -> clip -> AdamW -> EMA on one fixed batch (the benchmark's step)."""

    def __init__(self, peer: IommPeer, batch, conds, optim, ema_decay, adamw="default"):
        self.peer, self.conds = peer, conds
        self.batch = {k: v.to(peer.device) for k, v in batch.items()}  # the data already on the device
        self.params = peer.trainable()
        # adamw: "default" is what a script gets from torch.optim.AdamW(params, ...) (on the CPU the per-tensor loop);
        # "foreach" / "fused" are torch's faster multi-tensor implementations, for a stronger peer.
        impl = {"default": {}, "foreach": dict(foreach=True), "fused": dict(fused=True)}[adamw]
        self.opt = torch.optim.AdamW(self.params, lr=optim["lr"], betas=tuple(optim["betas"]), eps=optim["eps"],
                                     weight_decay=optim["weight_decay"], **impl)
        self.clip = optim.get("grad_clip", 0.0)
        self.ema_decay = ema_decay
        self.ema = [p.detach().float().clone() for p in self.params] if ema_decay > 0 else None
        self.n = 0

    def ema_decay_now(self):
        """min(decay, (1 + n) / (10 + n)) for update n: the usual EMA warm-up (timm / diffusers), as iomm."""
        return min(self.ema_decay, (1 + self.n) / (10 + self.n))

    def step(self):
        self.opt.zero_grad(set_to_none=True)
        loss = self.peer.loss(self.batch, self.conds)
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach().float() for p in self.params], 1.0 - self.ema_decay_now())
        self.n += 1
        return loss.item()


def load_batch(dump_dir):
    """DIR/batch.safetensors and DIR/batch.json of `iomm bench train --dump DIR`."""
    d = pathlib.Path(dump_dir)
    batch = load_file(str(d / "batch.safetensors"))
    meta = json.loads((d / "batch.json").read_text())
    return batch, meta


def check_tokens(peer: IommPeer, batch, conds):
    """The peer's own tokenisation must give iomm's ids and mask: both read the same conditions."""
    ids, mask = peer.tokenize(conds)
    want_ids, want_mask = batch["input_ids"].long(), batch["attention_mask"].bool()
    if ids.shape != want_ids.shape or not torch.equal(ids, want_ids) or not torch.equal(mask, want_mask):
        bad = [b for b in range(len(conds)) if b >= min(len(ids), len(want_ids))
               or ids[b].tolist() != want_ids[b].tolist() or mask[b].tolist() != want_mask[b].tolist()]
        raise AssertionError(f"peer tokenisation differs from the dump's input_ids/attention_mask (shapes "
                             f"{tuple(ids.shape)} vs {tuple(want_ids.shape)}; rows {bad}; first: "
                             f"{conds[bad[0]] if bad else None})")
    return ids, mask
