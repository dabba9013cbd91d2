"""The fuzz targets (fuzz/, issue 17) in CI: scripts/fuzz.sh --short builds them (clang, ASan + UBSan, a
configuration of their own in build-fuzz/) and runs each 2,000 iterations from a fixed seed over its corpus, which
holds every input that once crashed a parser. The long runs are `scripts/fuzz.sh` (docs/reliability.md)."""
import os
import subprocess

import pytest

from conftest import ROOT


def test_every_fuzz_target_runs_its_short_budget_without_a_finding():
    env = dict(os.environ, BUILD=os.environ.get("IOMM_FUZZ_BUILD", str(ROOT / "build-fuzz")))
    p = subprocess.run(["bash", str(ROOT / "scripts" / "fuzz.sh"), "--short"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1200)
    if p.returncode == 77:
        pytest.skip(p.stderr.strip().splitlines()[-1])
    assert p.returncode == 0, p.stdout + p.stderr[-4000:]
    rows = [line for line in p.stdout.splitlines() if line.startswith("| ") and "| target |" not in line]
    targets = (ROOT / "fuzz" / "CMakeLists.txt").read_text().split("set(IOMM_FUZZ_TARGETS")[1].split(")")[0].split()
    assert len(rows) == len(targets) == 9, p.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "2000" and cells[5] == "none", row
