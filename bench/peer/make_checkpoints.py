#!/usr/bin/env python3
"""Random user checkpoints in the ecosystem's formats, written by transformers / diffusers themselves, for the speed
benchmarks against the PyTorch peer (issue 16).

  python3 bench/peer/make_checkpoints.py --preset tiny|small-real|iomm-b --out DIR [--seed N]

DIR/mllm/  transformers InternVLForConditionalGeneration (-hf layout, save_pretrained, safetensors) + tokenizer.json
           (the tiny world's tokenizer, configs/world/tokenizer.json; image_token_id = its <IMG_CONTEXT>)
DIR/vae/   small-real and iomm-b: diffusers AutoencoderKL in the FLUX VAE architecture (save_pretrained)

Weights are random but non-trivial (every norm, bias and layer scale differs from its default), so a benchmark's loss
depends on every part of the models and a peer that computes something else is caught.
"""
import argparse
import pathlib
import shutil

import torch

import diffusers
import transformers
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "configs" / "world" / "tokenizer.json"

# InternViT / Qwen2 settings shared by both presets (InternVL3's, research/mllm.md §1.2 and §1.5).
VISION_COMMON = dict(attention_bias=True, layer_norm_eps=1e-6, norm_type="layer_norm", hidden_act="gelu",
                     use_qk_norm=False)
TEXT_COMMON = dict(model_type="qwen2", rms_norm_eps=1e-6, tie_word_embeddings=False)

PRESETS = {
    # The tiny world's understanding model (configs/world/understanding.toml).
    "tiny": dict(
        vision=dict(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=256),
        text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  intermediate_size=192, rope_theta=10000.0, max_position_embeddings=2048),
        vae=False),
    # InternVL3-2B's widths (InternViT-300M at 448 px, Qwen2.5-1.5B; research/mllm.md §1) with 2 + 2 layers, so one
    # layer costs what it costs at full scale. The vocabulary stays the world tokenizer's 492 tokens: only the
    # embedding table is smaller than the real 151,674 rows, and IOMM never runs the LM head.
    "small-real": dict(
        vision=dict(image_size=448, patch_size=14, hidden_size=1024, num_hidden_layers=2, num_attention_heads=16,
                    intermediate_size=4096),
        text=dict(hidden_size=1536, num_hidden_layers=2, num_attention_heads=12, num_key_value_heads=2,
                  head_dim=128, intermediate_size=8960, rope_theta=1000000.0, max_position_embeddings=32768),
        vae=True),
    # The full InternVL3-2B shapes (24 ViT + 28 LLM layers, ~2B parameters with a 151,674-row vocabulary table) for
    # the GPU row (bench/configs/iomm-b.toml: IOMM-B at 512²); too slow for 2 CPU cores.
    "iomm-b": dict(
        vision=dict(image_size=448, patch_size=14, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                    intermediate_size=4096),
        text=dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                  head_dim=128, intermediate_size=8960, rope_theta=1000000.0, max_position_embeddings=32768),
        vae=True, vocab_size=151674),
}

# FLUX's VAE (diffusers AutoencoderKL config of black-forest-labs/FLUX.1-dev/vae).
FLUX_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                latent_channels=16, norm_num_groups=32, scaling_factor=0.3611, shift_factor=0.1159,
                use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True, sample_size=1024)


def perturb_(model):
    """Weights of order 1/sqrt(fan_in), unit-scale embedding tables, non-trivial norms, biases and layer scales
    (the same recipe as scripts/dump_iomm_step.py)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if any(k in n for k in ("embed_tokens", "position_embeddings", "cls_token")):
                p.normal_(0.0, 1.0)
            elif p.dim() >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5)
            elif ("norm" in n and n.endswith(".weight")) or "lambda" in n:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))


def image_tokens(vision, downsample_ratio=0.5):
    """Tokens per tile after pixel shuffle: (tile / patch · ratio)²."""
    return int(vision["image_size"] // vision["patch_size"] * downsample_ratio) ** 2


def make_mllm(preset, image_token_id, vocab_size):
    p = PRESETS[preset]
    vision = dict(VISION_COMMON, **p["vision"])
    text = dict(TEXT_COMMON, vocab_size=vocab_size, **p["text"])
    cfg = transformers.InternVLConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                                      image_seq_length=image_tokens(p["vision"]), downsample_ratio=0.5,
                                      tie_word_embeddings=False)
    model = transformers.InternVLForConditionalGeneration._from_config(cfg).eval()
    perturb_(model)
    return model


def make_vae():
    """diffusers' default initialisation, then non-trivial norms and biases (as tests/conformance/test_vae.py):
    N(0, 1/fan_in) convs through 4 levels would only blow up or vanish the activations."""
    vae = diffusers.AutoencoderKL(**FLUX_VAE).eval()
    with torch.no_grad():
        for n, p in vae.named_parameters():
            if "norm" in n or n.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.2)
    return vae


def write_mllm(out, preset):
    tok = Tokenizer.from_file(str(TOKENIZER))
    img_id = tok.token_to_id("<IMG_CONTEXT>")
    if img_id is None:
        raise SystemExit(f"{TOKENIZER} has no <IMG_CONTEXT> token")
    vocab = max(PRESETS[preset].get("vocab_size", 0), tok.get_vocab_size(with_added_tokens=True))
    model = make_mllm(preset, img_id, vocab)
    model.save_pretrained(out)
    shutil.copyfile(TOKENIZER, out / "tokenizer.json")
    return sum(p.numel() for p in model.parameters())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    n = write_mllm(a.out / "mllm", a.preset)
    print(f"wrote {a.out / 'mllm'} (InternVL, {n / 1e6:.1f}M parameters)")
    if PRESETS[a.preset]["vae"]:
        vae = make_vae()
        vae.save_pretrained(a.out / "vae")
        print(f"wrote {a.out / 'vae'} (AutoencoderKL, {sum(p.numel() for p in vae.parameters()) / 1e6:.1f}M "
              f"parameters)")


if __name__ == "__main__":
    main()
