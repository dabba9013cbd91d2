#!/usr/bin/env python3
"""Linear probes of what the tiny world's condition path carries (issue 19, step 2).

Input: the folder written by `iomm eval recon --features` (features.safetensors with `vit_tokens` [N, T, D], the
MLLM's image tokens, and `query_states` [N, Q, D], the generator's condition after the frozen LLM; scenes.jsonl,
each input's scene; inputs/ the rendered images). For each feature set, ridge regression (closed form, the
penalty picked on a validation split of the training prompts) is fitted on 75% of the prompts and scored on the
other 25% (split by prompt, so a test scene's prompt was never seen). Targets:
  - single-object scenes: shape class (4-way) and colour (5-way) accuracy, object centre x / y (R²);
  - every scene: which shape classes / colours are present (mean balanced accuracy over classes), object count
    (exact after rounding), 4×4 occupancy of object boxes (accuracy per cell, and the majority baseline).
The raw pixels are probed the same way as a reference (what a linear read-out of the input itself gives).
The ViT tokens and the query states are also probed mean-pooled over their tokens (a position-free read-out).
--control adds a positive control: log|FFT2| of each input's foreground mask (not background grey), a translation-
invariant shape feature without colour; it should read shapes (and not colours) if the probe set-up can at all.

Usage: python3 experiments/probe_condition.py DIR [--json OUT.json] [--control]
"""
import argparse
import json
import pathlib

import numpy as np
from safetensors.numpy import load_file

SHAPES = ["circle", "square", "triangle", "cross"]
COLORS = ["red", "yellow", "green", "blue", "purple"]
GRID = 4


def read_png(path):
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0


def targets(scenes):
    n = len(scenes)
    shape_present = np.zeros((n, len(SHAPES)))
    color_present = np.zeros((n, len(COLORS)))
    count = np.zeros(n)
    occupancy = np.zeros((n, GRID * GRID))
    single = []
    for i, s in enumerate(scenes):
        objs = s["scene"]["objects"]
        size = s["scene"]["size"]
        count[i] = len(objs)
        for o in objs:
            # bbox = [x0, y0, x1, y1] in pixels (world/scene.cpp's JSON)
            o = dict(o, shape=o["class"], x=o["bbox"][0], y=o["bbox"][1], size=o["bbox"][2] - o["bbox"][0])
            shape_present[i, SHAPES.index(o["shape"])] = 1
            color_present[i, COLORS.index(o["color"])] = 1
            cell = size / GRID
            for gy in range(GRID):
                for gx in range(GRID):
                    if o["x"] < (gx + 1) * cell and o["x"] + o["size"] > gx * cell and \
                       o["y"] < (gy + 1) * cell and o["y"] + o["size"] > gy * cell:
                        occupancy[i, gy * GRID + gx] = 1
        if len(objs) == 1:
            o, b = objs[0], objs[0]["bbox"]
            single.append((i, SHAPES.index(o["class"]), COLORS.index(o["color"]),
                           (b[0] + b[2]) / 2 / size, (b[1] + b[3]) / 2 / size))
    return shape_present, color_present, count, occupancy, single


def ridge_fit(x, y, lam):
    d = x.shape[1]
    return np.linalg.solve(x.T @ x + lam * np.eye(d), x.T @ y)


def standardise(train, test):
    mu, sd = train.mean(0), train.std(0) + 1e-6
    return np.hstack([(train - mu) / sd, np.ones((len(train), 1))]), np.hstack([(test - mu) / sd, np.ones((len(test), 1))])


def fit_predict(x_tr, y_tr, x_te, score):
    """Ridge with the penalty chosen on the last fifth of the training rows, refitted on all of them."""
    x_tr, x_te = standardise(x_tr, x_te)
    cut = int(len(x_tr) * 0.8)
    best = None
    for lam in (1e-1, 1, 10, 1e2, 1e3, 1e4):
        w = ridge_fit(x_tr[:cut], y_tr[:cut], lam)
        s = score(x_tr[cut:] @ w, y_tr[cut:])
        if best is None or s > best[0]:
            best = (s, lam)
    return x_te @ ridge_fit(x_tr, y_tr, best[1])


def mlp_predict(x_tr, y_tr, x_te, classify, seed=0):
    """A one-hidden-layer MLP (256 wide, weight decay, full-batch Adam): a non-linear read-out, to tell 'absent'
    from 'present but not linearly readable' (the generator behind the condition is non-linear too)."""
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    x_tr, x_te = standardise(x_tr, x_te)
    xt, yt = torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(xt.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, yt.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    for _ in range(400):
        opt.zero_grad()
        out = net(xt)
        if classify == "softmax":
            loss = torch.nn.functional.cross_entropy(out, yt.argmax(1))
        elif classify == "sigmoid":
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out, yt)
        else:
            loss = torch.nn.functional.mse_loss(out, yt)
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = net(torch.tensor(x_te, dtype=torch.float32))
        if classify == "sigmoid":
            out = torch.sigmoid(out)
    return out.numpy()


def one_hot(labels, k):
    out = np.zeros((len(labels), k))
    out[np.arange(len(labels)), labels] = 1
    return out


def acc_argmax(pred, y):
    return float((pred.argmax(1) == y.argmax(1)).mean())


def balanced_acc(pred, y):
    scores = []
    for j in range(y.shape[1]):
        pos, neg = y[:, j] > 0.5, y[:, j] <= 0.5
        if pos.any() and neg.any():
            scores.append(0.5 * ((pred[pos, j] > 0.5).mean() + (pred[neg, j] <= 0.5).mean()))
    return float(np.mean(scores))


def r2(pred, y):
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def cell_acc(pred, y):
    return float(((pred > 0.5) == (y > 0.5)).mean())


def probe(features, scenes, train, test):
    shape_p, color_p, count, occ, single = targets(scenes)
    out = {}
    tr, te = np.array(train), np.array(test)
    p = fit_predict(features[tr], shape_p[tr], features[te], balanced_acc)
    out["shapes_present_bal_acc"] = balanced_acc(p, shape_p[te])
    out["shapes_present_bal_acc_mlp"] = balanced_acc(mlp_predict(features[tr], shape_p[tr], features[te], "sigmoid"),
                                                     shape_p[te])
    p = fit_predict(features[tr], color_p[tr], features[te], balanced_acc)
    out["colors_present_bal_acc"] = balanced_acc(p, color_p[te])
    p = fit_predict(features[tr], count[tr, None], features[te], lambda a, b: -((a - b) ** 2).mean())
    out["count_exact"] = float((np.rint(p[:, 0]) == count[te]).mean())
    p = fit_predict(features[tr], occ[tr], features[te], cell_acc)
    out["occupancy_cell_acc"] = cell_acc(p, occ[te])
    out["occupancy_cell_acc_mlp"] = cell_acc(mlp_predict(features[tr], occ[tr], features[te], "sigmoid"), occ[te])
    out["occupancy_majority_baseline"] = float(np.maximum(occ[te].mean(0), 1 - occ[te].mean(0)).mean())
    s_tr = [r for r in single if r[0] in set(train)]
    s_te = [r for r in single if r[0] in set(test)]
    if len(s_tr) > 20 and len(s_te) > 5:
        ftr = features[[r[0] for r in s_tr]]
        fte = features[[r[0] for r in s_te]]
        for name, col, k in (("single_shape_acc", 1, 4), ("single_color_acc", 2, 5)):
            ytr = one_hot(np.array([r[col] for r in s_tr]), k)
            yte = one_hot(np.array([r[col] for r in s_te]), k)
            out[name] = acc_argmax(fit_predict(ftr, ytr, fte, acc_argmax), yte)
            out[name + "_chance"] = float(yte.mean(0).max())
            out[name + "_mlp"] = acc_argmax(mlp_predict(ftr, ytr, fte, "softmax"), yte)
        ytr = np.array([[r[3], r[4]] for r in s_tr])
        yte = np.array([[r[3], r[4]] for r in s_te])
        out["single_center_r2"] = r2(fit_predict(ftr, ytr, fte, r2), yte)
        out["single_objects_test"] = len(s_te)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--control", action="store_true", help="add the |FFT| foreground-mask shape feature")
    a = ap.parse_args()
    d = pathlib.Path(a.dir)
    feats = load_file(str(d / "features.safetensors"))
    scenes = [json.loads(l) for l in (d / "scenes.jsonl").read_text().splitlines()]
    prompts = sorted({s["prompt_index"] for s in scenes})
    rng = np.random.default_rng(a.seed)
    test_prompts = set(rng.choice(prompts, size=len(prompts) // 4, replace=False).tolist())
    train = [i for i, s in enumerate(scenes) if s["prompt_index"] not in test_prompts]
    test = [i for i, s in enumerate(scenes) if s["prompt_index"] in test_prompts]
    pixels = np.stack([read_png(d / "inputs" / f"{s['prompt_index']:05d}" / "samples" / f"{s['k']:04d}.png").reshape(-1)
                       for s in scenes])
    sets = {
        "pixels (reference)": pixels,
        "vit_tokens (c_img)": feats["vit_tokens"].reshape(len(scenes), -1),
        "vit_tokens mean-pooled": feats["vit_tokens"].mean(1),
        "query_states (h)": feats["query_states"].reshape(len(scenes), -1),
        "query_states mean-pooled": feats["query_states"].mean(1),
    }
    if a.control:
        masks = [np.abs(p.reshape(s["scene"]["size"], s["scene"]["size"], 3) - np.array(s["scene"]["background"]) / 255.0).sum(-1) > 0.15
                 for p, s in zip(pixels, scenes)]
        sets["control: |FFT| of mask"] = np.stack([np.log1p(np.abs(np.fft.rfft2(m.astype(np.float64)))).reshape(-1)
                                                   for m in masks])
    results = {name: probe(x.astype(np.float64), scenes, train, test) for name, x in sets.items()}
    results["_n"] = {"train": len(train), "test": len(test), "split_seed": a.seed}
    keys = [k for k in results["query_states (h)"]]
    print(f"{'target':<32}" + "".join(f"{n[:24]:>26}" for n in sets))
    for k in keys:
        print(f"{k:<32}" + "".join(f"{results[n].get(k, float('nan')):>26.3f}" for n in sets))
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
