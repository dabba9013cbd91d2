#!/usr/bin/env python3
"""Writes the golden fixture of the Muon optimiser (issue 15): tests/fixtures/muon_step.safetensors, read by
src/train/optimizer_test.cpp.

The reference is Keller Jordan's public Muon (github.com/KellerJordan/Muon, MuonWithAuxAdam), restated here:
Nesterov momentum through lerp, the Newton–Schulz quintic (3.4445, -4.7750, 2.0315) on the wide orientation of the
update scaled to unit Frobenius norm, the sqrt(max(1, rows/cols)) scale, decoupled weight decay at Muon's LR; every
other parameter goes to torch.optim.AdamW. Newton–Schulz runs in fp32 here (the reference casts to bf16 on GPUs), so
the C++ side can be held to 1e-5. No gradient clipping (the trainer's clipping is tested separately).

  python3 scripts/dump_muon_step.py [--out FILE]

Tensors: param.NAME (initial), grad.K.NAME (the gradient of step K), expected.K.NAME (after step K); metadata: the
optimiser settings as JSON.
"""
import argparse
import json
import pathlib

import torch
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEED = 15
STEPS = 3
OPTIM = dict(lr=1e-3, muon_lr=0.02, betas=[0.9, 0.95], eps=1e-8, weight_decay=0.1, muon_momentum=0.95,
             muon_nesterov=True, muon_ns_steps=5)
# iomm checkpoint names: hidden matrices (tall, wide, square) go to Muon; embedder, final layer, queries, biases and
# norms to AdamW (src/train/optimizer.cpp, is_muon_parameter).
SHAPES = {
    "generator.double_blocks.0.img_attn.qkv.weight": (96, 32),
    "generator.double_blocks.0.img_attn.qkv.bias": (96,),
    "generator.single_blocks.0.linear2.weight": (32, 160),
    "generator.single_blocks.0.modulation.lin.weight": (96, 32),
    "generator.double_blocks.0.img_attn.norm.query_norm.scale": (16,),
    "generator.img_in.weight": (32, 12),
    "generator.final_layer.linear.weight": (12, 32),
    "conditioner.rqa.attn.in_proj_weight": (96, 32),
    "conditioner.rqa.queries": (8, 32),
}
MUON = {n for n, s in SHAPES.items() if len(s) == 2 and not any(
    k in n for k in ("img_in.", "final_layer.", "queries"))}


def newton_schulz5(G, steps):
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G
    if G.size(-2) > G.size(-1):
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(-2) > G.size(-1):
        X = X.mT
    return X


def muon_update(grad, momentum, beta, ns_steps, nesterov):
    momentum.lerp_(grad, 1 - beta)
    update = grad.lerp_(momentum, beta) if nesterov else momentum
    update = newton_schulz5(update, ns_steps)
    update *= max(1, grad.size(-2) / grad.size(-1)) ** 0.5
    return update


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "muon_step.safetensors"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(SEED)
    params = {n: torch.randn(s, generator=g) * 0.1 for n, s in SHAPES.items()}
    out = {f"param.{n}": p.clone() for n, p in params.items()}
    adam = [p for n, p in params.items() if n not in MUON]
    opt = torch.optim.AdamW(adam, lr=OPTIM["lr"], betas=tuple(OPTIM["betas"]), eps=OPTIM["eps"],
                            weight_decay=OPTIM["weight_decay"])
    momentum = {n: torch.zeros_like(params[n]) for n in MUON}
    for k in range(STEPS):
        grads = {n: torch.randn(s, generator=g) for n, s in SHAPES.items()}
        out.update({f"grad.{k}.{n}": v.clone() for n, v in grads.items()})
        for n, p in params.items():
            p.grad = grads[n].clone()
        with torch.no_grad():
            opt.step()
            for n in sorted(MUON):
                p = params[n]
                u = muon_update(p.grad, momentum[n], OPTIM["muon_momentum"], OPTIM["muon_ns_steps"],
                                OPTIM["muon_nesterov"])
                p.mul_(1 - OPTIM["muon_lr"] * OPTIM["weight_decay"])
                p.add_(u.reshape(p.shape), alpha=-OPTIM["muon_lr"])
        out.update({f"expected.{k}.{n}": p.detach().clone() for n, p in params.items()})
    save_file({k: v.contiguous() for k, v in out.items()}, a.out,
              metadata={"optim": json.dumps(OPTIM), "muon": json.dumps(sorted(MUON)), "steps": str(STEPS)})
    print(f"{a.out}: {len(SHAPES)} parameters ({len(MUON)} Muon), {STEPS} steps")


if __name__ == "__main__":
    main()
