"""The golden fixture of the training objective (tests/fixtures/iomm_step, read by src/model/iomm_step_golden_test.cpp)
is what scripts/dump_iomm_step.py writes today: regenerated into a temp dir, every file equals the checked-in one
(tensors within 1e-6), so the fixture cannot drift silently from its generator."""
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT

pytest.importorskip("transformers")
pytest.importorskip("diffusers")

FIXTURE = ROOT / "tests" / "fixtures" / "iomm_step"
TOL = 1e-6


def files(d):
    return sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("iomm_step") / "iomm_step"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "dump_iomm_step.py"), "--out", str(out)], check=True,
                   capture_output=True, text=True, timeout=300)
    return out


def test_same_files(regenerated):
    assert files(regenerated) == files(FIXTURE)


@pytest.mark.parametrize("name", [str(p) for p in files(FIXTURE)])
def test_file_matches(regenerated, name):
    new, old = regenerated / name, FIXTURE / name
    if not name.endswith(".safetensors"):
        assert new.read_bytes() == old.read_bytes(), name
        return
    a, b = load_file(str(new)), load_file(str(old))
    assert a.keys() == b.keys(), name
    worst = 0.0
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        if a[k].dtype == torch.bool or not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k
        else:
            err = (a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0
            worst = max(worst, err)
            assert err <= TOL * max(1.0, b[k].abs().max().item()), f"{name}: {k} differs by {err:.2e}"
    print(f"{name}: max abs difference {worst:.2e}")
