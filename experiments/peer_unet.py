#!/usr/bin/env python3
"""The tiny world's peer bound (issue 19): a small conditional U-Net in PyTorch (diffusers), trained on the demo's
captioned pool for a fixed wall time, sampled on the held-out prompts, scored by the same ShapesEval.

It is not IOMM: no MLLM, no image-only pre-training, a convolutional generator. It says what this machine's budget
can reach at all with the architecture that is known to learn shapes from few samples, so iomm's numbers have a
bound beside them. The design is the research note's (../shared/research/tiny-world-learning.md, section 0b):
diffusers UNet2DConditionModel (channels 32-64-64, one layer per block, cross attention at the two lower levels,
GroupNorm 8) + a 2-layer, 64-wide transformer over learned word embeddings; flow matching with velocity
prediction, t = sigmoid(N(0, 1)); AdamW 1e-3, batch 32, 10% of captions dropped for CFG; 16 Euler steps, CFG 5.

    python3 experiments/peer_unet.py --world runs/demo/world --out runs/peer --seconds 540
    # then: build/iomm eval shapes --images runs/peer/samples --out runs/peer/shapes.json  (done here when
    # IOMM_BIN or build/iomm exists)

Writes OUT/samples/<00000>/{metadata.jsonl, samples/<0000>.png} (GenEval's layout), OUT/peer.json (steps, samples/s,
seconds, parameters, the score).
"""
import argparse
import io
import json
import math
import os
import pathlib
import subprocess
import sys
import tarfile
import time

import numpy as np
import torch
from PIL import Image
from torch import nn


def read_captioned(folder):
    """(uint8 [N, 32, 32, 3], captions) from the corpus's captioned shards (<key>.png + <key>.txt)."""
    images, captions = [], []
    for shard in sorted(pathlib.Path(folder).glob("*.tar")):
        members = {}
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.isfile():
                    members[m.name] = tar.extractfile(m).read()
        for name, data in members.items():
            if not name.endswith(".png"):
                continue
            txt = members.get(name[:-4] + ".txt")
            if txt is None:
                continue
            images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
            captions.append(txt.decode().strip())
    if not images:
        sys.exit(f"{folder}: no <key>.png + <key>.txt samples; pass --world RUN/world of an `iomm demo` run")
    return np.stack(images), captions


class Words:
    """Whitespace tokens of lower-cased text; id 0 pads, 1 is the empty (unconditional) prompt."""

    def __init__(self, texts, max_len=20):
        vocab = sorted({w for t in texts for w in t.lower().split()})
        self.ids = {w: i + 2 for i, w in enumerate(vocab)}
        self.max_len = max_len

    def __len__(self):
        return len(self.ids) + 2

    def encode(self, texts):
        out = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.ids[w] for w in t.lower().split() if w in self.ids][: self.max_len] or [1]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


class TextEncoder(nn.Module):
    def __init__(self, vocab, width=64, layers=2, max_len=20):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(max_len, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, width * 2, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids):
        h = self.embed(ids) + self.pos[: ids.shape[1]]
        return self.norm(self.encoder(h, src_key_padding_mask=ids == 0))


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, norm_num_groups=8, attention_head_dim=8)


def velocity(unet, text, x, t, ids):
    return unet(x, t * 1000, encoder_hidden_states=text(ids)).sample


@torch.no_grad()
def sample(unet, text, words, prompts, steps, cfg, noise):
    x = noise
    cond, null = words.encode(prompts), words.encode([""] * len(prompts))
    ts = torch.linspace(1, 0, steps + 1)
    for i in range(steps):
        t = ts[i].expand(len(prompts))
        v = velocity(unet, text, torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null]))
        vc, vu = v.chunk(2)
        x = x + (ts[i + 1] - ts[i]) * (vu + cfg * (vc - vu))
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def generate_and_score(unet, text, words, prompts, out, a, batch=64):
    """Samples every prompt (GenEval's layout under OUT/samples), scores it with `iomm eval shapes` when the binary
    exists. Each prompt's noise comes from its own generator, so batching does not change an image."""
    unet.eval(), text.eval()
    jobs = []
    for i, p in enumerate(prompts):
        d = out / "samples" / f"{i:05d}"
        (d / "samples").mkdir(parents=True, exist_ok=True)
        (d / "metadata.jsonl").write_text(json.dumps(p) + "\n")
        noise = torch.randn(a.per_prompt, 3, 32, 32, generator=torch.Generator().manual_seed(a.seed * 100003 + i))
        jobs += [(d / "samples" / f"{k:04d}.png", p["prompt"], noise[k]) for k in range(a.per_prompt)]
    for b in range(0, len(jobs), batch):
        chunk = jobs[b : b + batch]
        imgs = sample(unet, text, words, [j[1] for j in chunk], a.steps, a.cfg, torch.stack([j[2] for j in chunk]))
        for (path, _, _), img in zip(chunk, imgs):
            Image.fromarray(img).save(path)
    unet.train(), text.train()
    iomm = os.environ.get("IOMM_BIN", "build/iomm")
    if not os.path.exists(iomm):
        return None
    subprocess.run([iomm, "eval", "shapes", "--images", str(out / "samples"), "--out", str(out / "shapes.json"),
                    "--grid", str(out / "grid.png")], check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "shapes.json").read_text())["overall"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", required=True, help="an `iomm demo` corpus (RUN/world)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=540.0, help="training wall time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-prompt", type=int, default=2)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--prompts", default="eval", help="prompt set under WORLD/prompts (eval | eval-small)")
    ap.add_argument("--eval-every", type=float, default=0.0,
                    help="also sample and score every this many seconds of training (OUT/at-<s>s/; the training "
                         "clock stops while it samples): the learning curve of a long run")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    world, out = pathlib.Path(a.world), pathlib.Path(a.out)
    images, captions = read_captioned(world / "captioned")
    prompts = [json.loads(line) for line in (world / "prompts" / f"{a.prompts}.jsonl").read_text().splitlines() if line]
    words = Words(captions + [p["prompt"] for p in prompts])
    unet, text = make_unet(), TextEncoder(len(words))
    params = list(unet.parameters()) + list(text.parameters())
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    ids_all = words.encode(captions)
    null_ids = words.encode([""])
    gen = torch.Generator().manual_seed(a.seed)
    print(f"peer: U-Net + text encoder {n_params / 1e6:.2f}M params, {len(images)} captioned images, "
          f"{a.seconds:.0f} s of training", flush=True)
    train_s, step, losses, curve = 0.0, 0, [], []
    next_eval = a.eval_every if a.eval_every > 0 else float("inf")
    t0 = time.time()
    while train_s < a.seconds:
        idx = torch.randint(len(images), (32,), generator=gen)
        x0, ids = x_all[idx], ids_all[idx].clone()
        ids[torch.rand(32, generator=gen) < 0.1] = null_ids[0]
        t = torch.sigmoid(torch.randn(32, generator=gen))
        noise = torch.randn(x0.shape, generator=gen)
        xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
        loss = (velocity(unet, text, xt, t, ids) - (noise - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        train_s = time.time() - t0
        if step % 50 == 0:
            print(f"step {step}  loss {np.mean(losses[-50:]):.4f}  {32 * step / train_s:.1f} samples/s  "
                  f"{train_s:.0f} s", flush=True)
        if train_s >= next_eval and train_s < a.seconds:
            score = generate_and_score(unet, text, words, prompts, out / f"at-{int(next_eval)}s", a)
            curve.append({"train_seconds": train_s, "steps": step, "loss": float(np.mean(losses[-50:])),
                          "shapes_eval": score})
            print(f"at {train_s:.0f} s of training ({step} steps): ShapesEval {score}", flush=True)
            next_eval += a.eval_every
            t0 = time.time() - train_s  # the clock counts training only
    t1 = time.time()
    score = generate_and_score(unet, text, words, prompts, out, a)
    result = {"params": n_params, "steps": step, "batch": 32, "train_seconds": train_s,
              "samples_per_second": 32 * step / train_s, "final_loss": float(np.mean(losses[-50:])),
              "sample_seconds": time.time() - t1, "prompts": len(prompts), "per_prompt": a.per_prompt,
              "sampler": {"steps": a.steps, "cfg": a.cfg}, "seed": a.seed, "threads": a.threads}
    if score is not None:
        result["shapes_eval"] = score
    if curve:
        result["curve"] = curve + [{"train_seconds": train_s, "steps": step, "loss": result["final_loss"],
                                    "shapes_eval": score}]
    (out / "peer.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
