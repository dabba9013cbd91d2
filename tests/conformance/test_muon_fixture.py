"""The Muon fixture (tests/fixtures/muon_step.safetensors, read by src/train/optimizer_test.cpp) is what
scripts/dump_muon_step.py writes today: regenerated, every tensor equals the checked-in one, so the golden values
cannot drift from the reference they claim to come from."""
import subprocess
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "muon_step.safetensors"


def test_muon_fixture_regenerates(tmp_path):
    out = tmp_path / "muon_step.safetensors"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "dump_muon_step.py"), "--out", str(out)], check=True,
                   capture_output=True, text=True, timeout=120)
    want, got = load_file(str(FIXTURE)), load_file(str(out))
    assert sorted(want) == sorted(got)
    for k in want:
        assert torch.allclose(want[k], got[k], atol=1e-6, rtol=0), k
    with safe_open(str(FIXTURE), "pt") as a, safe_open(str(out), "pt") as b:
        assert a.metadata() == b.metadata()
