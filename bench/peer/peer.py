#!/usr/bin/env python3
"""The PyTorch peer of `iomm bench` (issue 16): times IOMM's training step and generation in plain PyTorch
(transformers + diffusers, bench/peer/iomm_peer.py) on the inputs that `iomm bench train|generate --dump DIR` wrote,
and checks that it computes what iomm computes.

  peer.py train    --dir DIR [--warmup W] [--steps S] [--threads N] [--compile] [--json] [--check]
  peer.py generate --dir DIR [--warmup 1] [--rounds R] [--threads N] [--compile] [--json] [--check]

--check (train): every step's loss equals DIR/bench.json's "losses" (the first to 1e-5 relative, the following
after AdamW updates to 1e-4); (generate): the images equal DIR/generate.safetensors "images" to 1e-3 max abs.
Exit status: 0 ok, 1 a check failed, 3 torch.compile does not work here (--compile).
"""
import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import time
import traceback

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import iomm_peer  # noqa: E402

FIRST_LOSS_RTOL = 1e-5   # the same objective on the same weights: float-rounding only
LATER_LOSS_RTOL = 1e-4   # after AdamW updates the rounding differences compound a little
IMAGE_ATOL = 1e-3
EXIT_CHECK, EXIT_COMPILE = 1, 3


# ------------------------------------------------------------------------------------------------ helpers

def quiet_libraries():
    import diffusers
    import transformers
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()


def summarize(times):
    """Median, extremes, mean and the 10th / 90th percentiles (linear interpolation) of the timed calls."""
    s = sorted(times)

    def pct(q):
        k = (len(s) - 1) * q
        lo = int(k)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)

    return dict(median=statistics.median(s), min=s[0], max=s[-1], mean=statistics.fmean(s), p10=pct(0.1),
                p90=pct(0.9))


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def memory_fields(device):
    """Peak memory as iomm reports it: the process's peak RSS on the CPU, the allocator's peak on CUDA (since the
    end of the warm-up)."""
    out = dict(peak_rss_bytes=peak_rss_bytes())
    if device.type == "cuda":
        out.update(peak_memory_bytes=torch.cuda.max_memory_allocated(device), memory_kind="cuda_allocator_peak")
    else:
        out.update(peak_memory_bytes=out["peak_rss_bytes"], memory_kind="rss_peak")
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_threads(n):
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def dtype_name(peer):
    return str(peer.dtype).removeprefix("torch.")  # "float32", as iomm writes it


def impl_name(a):
    return "peer-compile" if a.compile else "peer-eager"


def make_peer(a):
    d = pathlib.Path(a.dir)
    peer = iomm_peer.IommPeer(d / "model", d / "generator-diffusers", llm_pass=a.llm_pass,
                              attn_implementation=a.attn, device=a.device, dtype=a.dtype)
    if a.compile:
        peer.compile()
    return peer


def timed(fn, n_warmup, n_timed, compile_, device):
    """Runs fn() n_warmup + n_timed times; returns its results, the timed durations and, with torch.compile, the
    first call's duration (which holds the compilation). A failing first compiled call exits with status 3."""
    results, times, first = [], [], None
    for i in range(n_warmup + n_timed):
        if i == n_warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t0 = time.perf_counter()
        try:
            results.append(fn())
        except Exception as e:  # noqa: BLE001  inductor needs a working C++ toolchain; say why it failed
            if compile_ and i == 0:
                traceback.print_exc()
                why = (str(e).strip().splitlines() or [""])[0]
                print(f"peer: torch.compile does not work on this machine: {type(e).__name__}: {why}", file=sys.stderr)
                sys.exit(EXIT_COMPILE)
            raise
        sync(device)
        dt = time.perf_counter() - t0
        if i == 0:
            first = dt
        if i >= n_warmup:
            times.append(dt)
    return results, times, first


def report(a, out, human):
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        print(human)


# ------------------------------------------------------------------------------------------------ train

def check_losses(peer_losses, iomm_losses):
    """Returns the failures (empty when the losses agree)."""
    n = min(len(peer_losses), len(iomm_losses))
    if n == 0:
        return ["no losses to compare (bench.json has no 'losses', or the peer ran no step)"]
    bad = []
    for i in range(n):
        p, q = peer_losses[i], iomm_losses[i]
        rel = abs(p - q) / max(abs(q), 1e-12)
        tol = FIRST_LOSS_RTOL if i == 0 else LATER_LOSS_RTOL
        print(f"  step {i}: iomm {q:.8f}  peer {p:.8f}  rel err {rel:.2e}{'' if rel <= tol else '  > ' + str(tol)}",
              file=sys.stderr)
        if not rel <= tol:
            bad.append(f"step {i}: peer loss {p:.8g} vs iomm {q:.8g} (relative error {rel:.2e} > {tol:g})")
    return bad


def cmd_train(a):
    d = pathlib.Path(a.dir)
    batch, meta = iomm_peer.load_batch(d)
    threads = set_threads(a.threads or meta.get("threads"))
    warmup = a.warmup if a.warmup is not None else meta.get("warmup", 1)
    steps = a.steps if a.steps is not None else meta.get("steps", 5)
    if a.compile:
        warmup = max(warmup, 1)  # the first call compiles; never time it
    conds = meta["conditions"]
    peer = make_peer(a)
    iomm_peer.check_tokens(peer, batch, conds)
    batch = {k: (v.bool() if k in ("keep", "attention_mask") else v) for k, v in batch.items()}
    trainer = iomm_peer.Trainer(peer, batch, conds, meta["optim"], meta.get("ema_decay", 0.0), a.adamw)
    losses, times, first = timed(trainer.step, warmup, steps, a.compile, peer.device)
    B = batch["images"].shape[0]
    st = summarize(times) if times else None
    out = dict(impl=impl_name(a), kind="train", batch_size=B, warmup=warmup, steps=steps, threads=threads,
               llm_pass=a.llm_pass, adamw=a.adamw, step_seconds=st, times=times,
               samples_per_s=B / st["median"] if st else None, **memory_fields(peer.device), losses=losses,
               first_loss=losses[0] if losses else None, device=str(peer.device), dtype=dtype_name(peer))
    if a.compile:
        out["compile_seconds"] = first
    fails = []
    if a.check:
        iomm_losses = json.loads((d / "bench.json").read_text()).get("losses", [])
        fails = check_losses(losses, iomm_losses)
        out["check"] = "failed" if fails else "ok"
    med = f"{st['median'] * 1e3:.1f} ms/step, {out['samples_per_s']:.2f} samples/s" if st else "no timed steps"
    report(a, out, f"{out['impl']} train: batch {B}, {threads} threads: {med}; losses "
                   f"{[round(x, 6) for x in losses]}")
    if fails:
        print("peer check FAILED: the peer's training losses differ from iomm's (DIR/bench.json):\n  "
              + "\n  ".join(fails), file=sys.stderr)
        return EXIT_CHECK
    if a.check:
        print(f"peer check ok: {min(len(losses), len(iomm_losses))} losses agree with iomm's", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------ generate

def cmd_generate(a):
    d = pathlib.Path(a.dir)
    g = json.loads((d / "generate.json").read_text())
    threads = set_threads(a.threads or g.get("threads"))
    warmup = max(a.warmup, 1) if a.compile else a.warmup
    peer = make_peer(a)
    prompts = g["prompts"]

    def call():
        return peer.generate(prompts, g["steps"], g["cfg_scale"], g["sampler"], g["shift"], g["seed"])

    images, times, first = timed(call, warmup, a.rounds, a.compile, peer.device)
    N = len(prompts)
    st = summarize(times) if times else None
    out = dict(impl=impl_name(a), kind="generate", batch_size=N, warmup=warmup, steps=g["steps"], rounds=a.rounds,
               threads=threads, sampler=g["sampler"], cfg_scale=g["cfg_scale"], step_seconds=st, times=times,
               images_per_s=N / st["median"] if st else None, **memory_fields(peer.device),
               device=str(peer.device), dtype=dtype_name(peer))
    if a.compile:
        out["compile_seconds"] = first
    fail = None
    if a.check:
        want = load_file(str(d / "generate.safetensors"))["images"]
        got = images[-1].cpu()
        if got.shape != want.shape:
            fail = f"image shapes differ: peer {tuple(got.shape)} vs iomm {tuple(want.shape)}"
        else:
            err = (got - want).abs().max().item()
            out["max_abs_err"] = err
            print(f"  images: max abs err {err:.2e} (tolerance {IMAGE_ATOL:g})", file=sys.stderr)
            if not err <= IMAGE_ATOL:
                fail = f"max abs error {err:.3e} > {IMAGE_ATOL:g}"
        out["check"] = "failed" if fail else "ok"
    med = f"{st['median']:.3f} s/call, {out['images_per_s']:.2f} images/s" if st else "no timed calls"
    report(a, out, f"{out['impl']} generate: {N} images x {g['steps']} steps ({g['sampler']}, cfg "
                   f"{g['cfg_scale']}), {threads} threads: {med}")
    if fail:
        print(f"peer check FAILED: the peer's images differ from iomm's (DIR/generate.safetensors): {fail}",
              file=sys.stderr)
        return EXIT_CHECK
    if a.check:
        print("peer check ok: the images agree with iomm's", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------ CLI

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "generate"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True, help="the dump directory of `iomm bench %s --dump DIR`" % name)
        p.add_argument("--threads", type=int, default=None, help="torch threads (default: the dump's, else torch's)")
        p.add_argument("--compile", action="store_true", help="torch.compile the generator and the adapter")
        p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
        p.add_argument("--check", action="store_true", help="compare with iomm's result in the dump")
        p.add_argument("--llm-pass", choices=("cached", "full"), default="cached",
                       help="cached: prefix once without grad + KV cache (the paper's gradient path, as iomm); "
                            "full: one pass over [c ; q]")
        p.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa", help="transformers attention backend")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the model's, iomm.toml)")
        p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                       help="compute dtype (default: the model's, iomm.toml)")
        if name == "train":
            p.add_argument("--warmup", type=int, default=None, help="untimed steps (default: the dump's)")
            p.add_argument("--steps", type=int, default=None, help="timed steps (default: the dump's)")
            p.add_argument("--adamw", choices=("default", "foreach", "fused"), default="default",
                           help="torch.optim.AdamW implementation (default: torch's choice, as a script gets it)")
        else:
            p.add_argument("--warmup", type=int, default=1, help="untimed calls")
            p.add_argument("--rounds", type=int, default=3, help="timed calls")
    a = ap.parse_args(argv)
    quiet_libraries()
    return cmd_train(a) if a.cmd == "train" else cmd_generate(a)


if __name__ == "__main__":
    sys.exit(main())
