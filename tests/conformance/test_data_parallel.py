"""Data parallel training on torch c10d (Gloo), two processes on this machine (issue 15's acceptance):
- 2 ranks × B, 1 rank × 2B, 1 rank × B × 2 accumulation, 2 ranks with ZeRO-1, 2 ranks with the gradient
  all-reduce after backward instead of overlapped with it, and 2 ranks × B/2 × 2 accumulation with activation
  checkpointing give the same per-step losses and the same final weights, optimizer state and EMA;
- a 2-rank run killed with SIGKILL resumes on 1 rank, and a 1-rank run resumes on 2, both ending at the
  uninterrupted run's weights;
- a rank that dies makes its peer exit non-zero within dist.timeout_s, naming it.

Why these can match: every sample of a step draws its kind, CFG dropout, image, MIM mask, t and noise from its own
generator (seed, step, global index), and gradients are averaged over the global batch, so a split changes only the
order in which per-sample gradients are summed (fp32 rounding, ~1e-7 relative), never what is computed.
Tolerance on weights: 1e-5 absolute per element and 1e-5 relative over all weights, with one exception: the key bias
of the adapter's attention (the middle third of `attn.in_proj_bias`) has a gradient that is exactly zero in exact
arithmetic (softmax ignores a constant added to every key), so AdamW turns its ~1e-10 rounding noise into lr-sized
steps: a random walk that any two summation orders take differently and that changes no output. It is compared
against AdamW's bound instead (|step| <= lr per step)."""
import json
import os
import re
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, iomm_bin, run_iomm

FIXTURE = ROOT / "tests" / "fixtures" / "iomm_step"
STEPS = 20
GLOBAL_BATCH = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("dp")
    run_iomm("world", "make", "--out", d / "world", "--image-only", 16, "--captioned", 12, "--shard-size", 4)
    model = (FIXTURE / "model" / "iomm.toml").read_text().replace('"../mllm"', f'"{FIXTURE / "mllm"}"')
    cfg = d / "train.toml"
    cfg.write_text(model + f"""
[train]
stage = "pretrain"
data = "mix"
steps = {STEPS}
batch_size = {GLOBAL_BATCH}
log_every = 1
ema_decay = 0.9
cfg_drop = 0.2
threads = 1
checkpoint_every = 5
[optim]
lr = 3e-3
warmup_steps = 2
[data]
images = "{d / 'world' / 'image'}"
pairs = "{d / 'world' / 'captioned'}"
loader = "memory"
""")
    return dict(dir=d, cfg=cfg)


def train_cmd(world, out, *sets, resume=False):
    cmd = [iomm_bin(), "train", "--config", str(world["cfg"]), "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    return cmd + (["--resume"] if resume else [])


def train(world, out, *sets, nproc=1, resume=False):
    cmd = train_cmd(world, out, *sets, resume=resume)
    if nproc > 1:
        cmd = [iomm_bin(), "launch", "--nproc", str(nproc), "--"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def last_checkpoint(run):
    done = sorted(p.parent for p in (run / "checkpoints").glob("step-*/COMPLETE"))
    assert done, f"no complete checkpoint in {run}"
    return done[-1]


def split_key_bias(tensors, steps, lr=3e-3):
    """Takes the key bias (module docstring) out of the model's tensors, asserting AdamW's bound on it instead."""
    for k in [k for k in tensors if k.endswith("attn.in_proj_bias")]:
        q, key, v = tensors[k].chunk(3)
        assert float(key.abs().max()) <= lr * steps, (k, float(key.abs().max()))
        tensors[k] = torch.cat([q, v])
    return tensors


def assert_same_state(a, b, what):
    """Model weights, AdamW state and EMA of the newest checkpoints of runs a and b agree (module docstring)."""
    ca, cb = last_checkpoint(a), last_checkpoint(b)
    assert ca.name == cb.name, (ca, cb)
    steps = int(ca.name.split("-")[1])
    for f in ("model", "ema", "optimizer"):  # the optimizer's key-bias moments are ~1e-10: within the bound as they are
        x, y = load_file(ca / f"{f}.safetensors"), load_file(cb / f"{f}.safetensors")
        assert x.keys() == y.keys(), (what, f)
        x, y = split_key_bias(x, steps), split_key_bias(y, steps)
        num = sum(float(((x[k].double() - y[k].double()) ** 2).sum()) for k in x)
        den = sum(float((x[k].double() ** 2).sum()) for k in x)
        worst = max((float((x[k].double() - y[k].double()).abs().max()), k) for k in x)
        assert (num / den) ** 0.5 <= 1e-5, (what, f, (num / den) ** 0.5)
        assert worst[0] <= 1e-5, (what, f, worst)


def assert_same_losses(a, b, what):
    la, lb = losses(a), losses(b)
    assert sorted(la) == sorted(lb) == list(range(1, STEPS + 1)), (what, sorted(la), sorted(lb))
    for s in la:
        assert abs(la[s] - lb[s]) <= 1e-5 * abs(la[s]), (what, s, la[s], lb[s])


def test_two_ranks_equal_one_rank_with_accumulation_and_zero1(world):
    d = world["dir"]
    half = f"train.batch_size={GLOBAL_BATCH // 2}"
    train(world, d / "one")
    two = train(world, d / "two", half, nproc=2)
    train(world, d / "accum", half, "train.grad_accum=2")
    train(world, d / "zero1", half, "dist.zero1=true", nproc=2)
    train(world, d / "after", half, "dist.overlap=false", nproc=2)
    train(world, d / "ckpt", "train.batch_size=1", "train.grad_accum=2", "train.activation_checkpointing=1",
          "dist.bucket_mb=0.01", nproc=2)  # ~13 buckets of 10 KiB
    assert "global batch 4" in (d / "two" / "log.txt").read_text()
    assert "overlapped with backward" in (d / "two" / "log.txt").read_text()
    assert "all-reduce after backward" in (d / "after" / "log.txt").read_text()
    buckets = re.search(r"in (\d+) buckets", (d / "ckpt" / "log.txt").read_text())
    assert buckets and int(buckets.group(1)) > 5, "the small-bucket run should use many buckets"
    early = re.search(r"(\d+) of (\d+) gradient buckets started their all-reduce during backward",
                      (d / "ckpt" / "log.txt").read_text())
    assert early and int(early.group(1)) > 0, "no bucket's all-reduce overlapped backward"
    assert "ZeRO-1 on" in (d / "zero1" / "log.txt").read_text()
    assert (d / "two" / "log-rank-1.txt").exists() and not (d / "two" / "metrics-rank-1.jsonl").exists()
    assert "rank 1 of 2" in (d / "two" / "log-rank-1.txt").read_text(), two.stderr[-2000:]
    for name in ("two", "accum", "zero1", "after", "ckpt"):
        assert_same_losses(d / "one", d / name, name)
        assert_same_state(d / "one", d / name, name)
    # The runs did train (a split that dropped samples' gradients would also be "equal" at step 0 only).
    lo = losses(d / "one")
    assert lo[STEPS] < lo[1]


def launch_in_own_group(cmd, log):
    # stderr to a file: a pipe nobody reads would fill and stall the run.
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)


def kill_after_checkpoint(proc, run, step, timeout=120):
    """SIGKILL to the launcher and every rank once checkpoint `step` is complete (mid-way through the run)."""
    marker = run / "checkpoints" / f"step-{step:08d}" / "COMPLETE"
    t0 = time.monotonic()
    while not marker.exists():
        assert proc.poll() is None, f"the run ended before step {step}"
        assert time.monotonic() - t0 < timeout
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_two_rank_run_resumes_on_one_rank_and_one_rank_run_on_two(world):
    d = world["dir"]
    # 40 steps: long enough that SIGKILL lands mid-way (it waits for step 10's checkpoint; the 30 steps left take
    # ~1 s), short enough that the runs stay within 1e-5. Over 200 steps the ~1e-8 differences of another summation
    # order grow to ~1e-5 in the losses and ~4e-3 in the weights, in an uninterrupted 2-rank vs 1-rank run alike
    # (measured 2026-12-01): that is the training's sensitivity to rounding, not the resume.
    long_steps = 40
    sets = (f"train.steps={long_steps}", "train.checkpoint_every=5", "train.log_every=5")
    train(world, d / "whole", *sets)
    half = f"train.batch_size={GLOBAL_BATCH // 2}"

    p = launch_in_own_group([iomm_bin(), "launch", "--nproc", "2", "--"] + train_cmd(world, d / "killed2", *sets, half),
                            d / "killed2.stderr")
    kill_after_checkpoint(p, d / "killed2", 10)
    resumed = train(world, d / "killed2", *sets, resume=True)  # 1 rank at batch 4: the same global batch
    assert "written by 2 process(es), continuing on 1" in resumed.stderr, resumed.stderr[-3000:]

    train(world, d / "stopped1", *sets, "train.stop_at=20")
    resumed = train(world, d / "stopped1", *sets, half, nproc=2, resume=True)
    assert "continuing on 2" in (d / "stopped1" / "log.txt").read_text()
    for name in ("killed2", "stopped1"):
        assert last_checkpoint(d / name).name == f"step-{long_steps:08d}"
        assert_same_state(d / "whole", d / name, name)
    # A different global batch at resume is said (not refused): the steps from there draw other samples.
    train(world, d / "stopped1b", *sets, "train.stop_at=10")
    other = train(world, d / "stopped1b", *sets, half, resume=True)
    assert "global batch of 4 samples per step, this run has 2" in other.stderr, other.stderr[-3000:]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_rank_stops_its_peer_within_the_timeout_naming_it(world):
    d = world["dir"]
    port = free_port()
    ranks = []
    for r in (0, 1):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        cmd = train_cmd(world, d / "dies", "train.steps=100000", "train.checkpoint_every=50", "dist.timeout_s=10",
                        f"train.batch_size={GLOBAL_BATCH // 2}")
        ranks.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(d / f"dies-{r}.stderr", "w")))
        if r == 0:
            time.sleep(1)  # rank 0 creates the run directory; rank 1 opens it after the barrier either way
    try:
        marker = d / "dies" / "checkpoints" / "step-00000050" / "COMPLETE"
        t0 = time.monotonic()
        while not marker.exists():
            assert ranks[0].poll() is None and ranks[1].poll() is None, (d / "dies-0.stderr").read_text()[-3000:]
            assert time.monotonic() - t0 < 120
            time.sleep(0.05)
        ranks[1].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        ranks[0].wait(timeout=60)
        waited = time.monotonic() - t0
        err = (d / "dies-0.stderr").read_text()
    finally:
        for p in ranks:
            p.kill()
    assert ranks[0].returncode != 0
    assert waited < 10 + 20, waited  # the timeout, plus the 2.5 s heartbeat check and exit
    assert "rank(s) 1 stopped" in err, err[-3000:]
    assert "--resume" in err
    # The last complete checkpoint is intact and loads.
    ck = last_checkpoint(d / "dies")
    assert load_file(ck / "model.safetensors")
