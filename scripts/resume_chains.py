#!/usr/bin/env python3
"""Kill -9 / resume chains on the tiny world (issue 17): every chain trains a stage with `kill -9` at random points
(some aimed at a checkpoint save in progress), resumes with --resume until the run finishes, and compares the final
weights byte for byte, and the logged losses, with an uninterrupted run of the same config.

    python3 scripts/resume_chains.py --chains 100 --out /tmp/chains [--iomm build/iomm] [--steps 24] [--seed 0]

Set-up (made once under OUT/setup and reused): a small shapes world, a briefly trained understanding model (the
frozen MLLM), and the two uninterrupted reference runs, stage 1 (pretrain) and stage 2 (finetune from stage 1's
reference model). Chains alternate between the stages. Prints one line per chain and a summary; exits 1 when a chain
ends with other weights than its reference. What makes resume bit-identical: docs/checkpoints.md.
"""
import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORLD = ROOT / "configs" / "world"


def run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"resume_chains: {' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p


def setup(iomm, out, steps):
    """The world, the MLLM and the two reference runs; returns the train commands per stage (without --out)."""
    s = out / "setup"
    world, und = s / "world", s / "understanding"
    if not (world / "world.json").exists():
        run([iomm, "world", "make", "--out", world, "--image-only", 512, "--captioned", 256, "--shard-size", 128])
    if not (und / "model" / "config.json").exists():
        run([iomm, "train", "--config", WORLD / "understanding.toml", "--set", "train.steps=10", "--set",
             "train.eval_samples=8", "--set", "train.log_every=5", "--out", und], cwd=ROOT)
    common = ["--config", WORLD / "iomm-tiny.toml", "--set", f"model.mllm={und / 'model'}",
              "--set", f"data.images={world / 'image'}", "--set", f"data.pairs={world / 'captioned'}",
              "--set", f"train.steps={steps}", "--set", "train.log_every=1", "--set", "train.checkpoint_every=2",
              "--set", "train.sample_every=8", "--set", "sample.steps=2", "--set", "optim.warmup_steps=4"]
    cmds = {"pretrain": [iomm, "train", *common[:2], "--config", WORLD / "pretrain.toml", *common[2:]]}
    cmds["finetune"] = [iomm, "train", *common[:2], "--config", WORLD / "finetune.toml", *common[2:],
                        "--set", f"train.init_from={s / 'ref-pretrain'}"]
    timing_file = s / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    refs = {}
    for stage in ("pretrain", "finetune"):  # stage 2's reference starts from stage 1's
        refs[stage] = s / f"ref-{stage}"
        if not (refs[stage] / "model" / "iomm.toml").exists() or stage not in timing:
            shutil.rmtree(refs[stage], ignore_errors=True)
            t = time.monotonic()
            run([*cmds[stage], "--out", refs[stage]], cwd=ROOT)
            timing[stage] = time.monotonic() - t
            timing_file.write_text(json.dumps(timing))
    return cmds, refs, timing


def weights(run_dir):
    """Every safetensors file of the exported model, by relative path."""
    m = run_dir / "model"
    return {str(p.relative_to(m)): p.read_bytes() for p in sorted(m.rglob("*.safetensors"))}


def losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"], r["grad_norm"]) for r in rows]


def saving(run_dir):
    ck = run_dir / "checkpoints"
    return ck.is_dir() and any(p.name.endswith(".tmp") for p in ck.iterdir())


def killed_run(cmd, run_dir, resume, rng, budget_s):
    """Starts one segment and kills it (-9) at a random time, or as soon as a save is in progress (half of the
    kills). Returns 'done' when it finished first, else 'save' or 'step' (where the kill landed)."""
    err_path = run_dir.parent / (run_dir.name + ".stderr")  # a file, not a pipe: the progress bar would fill one
    with open(err_path, "w") as err_file:
        p = subprocess.Popen([str(c) for c in cmd] + ["--out", str(run_dir)] + (["--resume"] if resume else []),
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err_file)
    aim_at_save = rng.random() < 0.5
    deadline = time.monotonic() + rng.uniform(0.2, budget_s)
    while p.poll() is None and time.monotonic() < deadline:
        if aim_at_save and saving(run_dir) and rng.random() < 0.5:
            break
        time.sleep(0.002 if aim_at_save else 0.02)
    if p.poll() is not None:
        if p.returncode != 0:
            sys.exit(f"resume_chains: a segment failed ({p.returncode}) in {run_dir}:\n{err_path.read_text()[-3000:]}")
        return "done"
    in_save = saving(run_dir)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return "save" if in_save else "step"


def chain(i, stage, cmds, ref, out, rng, budgets, max_kills):
    run_dir = out / "chains" / f"{i:03d}-{stage}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    kills = {"save": 0, "step": 0}
    resume = False
    for _ in range(rng.randint(1, max_kills)):
        t = time.monotonic()
        where = killed_run(cmds[stage], run_dir, resume, rng, budgets[stage])
        if where == "done":
            if not resume:  # a whole run finished before its kill: the load dropped, so aim earlier from now on
                budgets[stage] = min(budgets[stage], time.monotonic() - t)
            break
        resume = True
        kills[where] += 1
    if not (run_dir / "model" / "iomm.toml").exists():
        run([*cmds[stage], "--out", run_dir, *(["--resume"] if resume else [])], cwd=ROOT)
    same_w = weights(run_dir) == weights(ref)
    same_l = losses(run_dir) == losses(ref)
    if same_w and same_l:  # keep only the chains that differ, for a look
        shutil.rmtree(run_dir)
        (run_dir.parent / (run_dir.name + ".stderr")).unlink(missing_ok=True)
    return same_w, same_l, kills


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", type=int, default=10)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--iomm", default=os.environ.get("IOMM_BIN", str(ROOT / "build" / "iomm")))
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--max-kills", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=0, help="stop starting chains after this long (0: no limit)")
    a = ap.parse_args()
    a.out = a.out.resolve()
    t0 = time.monotonic()
    cmds, refs, budgets = setup(a.iomm, a.out, a.steps)
    # A kill falls anywhere in a segment: its budget is the uninterrupted run's length.
    print(f"set-up {time.monotonic() - t0:.0f} s; one uninterrupted run: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in budgets.items()), flush=True)
    ok = bad = unkilled = 0
    kills = {"save": 0, "step": 0}
    t_chains = time.monotonic()
    for i in range(a.chains):
        if a.minutes and time.monotonic() - t_chains > a.minutes * 60:
            break
        stage = "pretrain" if i % 2 == 0 else "finetune"
        rng = random.Random(a.seed * 100003 + i)
        t = time.monotonic()
        same_w, same_l, k = chain(i, stage, cmds, refs[stage], a.out, rng, budgets, a.max_kills)
        unkilled += k["step"] + k["save"] == 0
        ok += same_w and same_l
        bad += not (same_w and same_l)
        for key in kills:
            kills[key] += k[key]
        print(f"chain {i:3d} {stage:8s} kills: {k['step']} mid-step, {k['save']} mid-save; weights "
              f"{'identical' if same_w else 'DIFFER'}, losses {'identical' if same_l else 'DIFFER'} "
              f"({time.monotonic() - t:.1f} s)", flush=True)
    n = ok + bad
    print(f"summary: {n} chains ({kills['step'] + kills['save']} kills: {kills['step']} mid-step, {kills['save']} "
          f"during a checkpoint save; {unkilled} chains finished before their first kill), {ok} bit-identical, "
          f"{bad} differ; {time.monotonic() - t0:.0f} s in all")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
