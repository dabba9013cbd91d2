"""Reliability of the CLI (issue 17): fatal errors reach the run's log."""
from conftest import ROOT

UNDERSTANDING = ROOT / "configs" / "world" / "understanding.toml"


def test_fatal_error_is_written_to_the_run_log(iomm, tmp_path):
    run = tmp_path / "u"
    short = ["--config", UNDERSTANDING, "--set", "train.steps=4", "--set", "train.stop_at=2", "--set",
             "train.log_every=1", "--set", "train.eval_samples=8", "--out", run]
    iomm("train", *short, cwd=ROOT)
    shard = run / "checkpoints" / "step-00000002" / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-8])  # a damaged checkpoint: resume must stop, and say so in the log
    p = iomm("train", *short, "--resume", cwd=ROOT, check=False)
    assert p.returncode == 1
    error = p.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "model.safetensors" in error
    log = (run / "log.txt").read_text()
    assert error in log, log
    assert log.rstrip().splitlines()[-1].endswith(error)

