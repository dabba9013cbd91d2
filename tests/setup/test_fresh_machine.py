"""Set-up from a clean state (issue 13): every step that the README's two commands depend on, checked against a
fresh state without downloading anything.

- the pip decision of scripts/setup.sh, run against a fresh virtual environment (it must decide to install every
  pin) and against the set-up interpreter (it must decide to install nothing);
- the Debian decision, run against an empty dpkg database (every package), and each package being installable;
- the build directory, configured from nothing in a temporary folder;
- the world's tokenizer, regenerated from scratch and compared with the checked-in one
  (tests/conformance/test_world_tokenizer.py checks its ids).

An earlier setup.sh decided with `pip install -q --dry-run | grep "Would install"`; -q hides that line, so it always
concluded that torch was there, and a fresh machine stopped with ModuleNotFoundError. test_fresh_venv_installs_every_pin
fails on that script (it installs nothing and exits 1)."""
import os
import re
import subprocess
import sys

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def iomm_bin():
    path = os.environ.get("IOMM_BIN", str(ROOT / "build" / "iomm"))
    if not os.path.exists(path):
        pytest.fail(f"iomm binary not found at {path}: run `make build` or set IOMM_BIN")
    return path

SETUP = ROOT / "scripts" / "setup.sh"
PINS = [line.split("#")[0].strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()]
PINS = [p for p in PINS if p]


def run_setup(*args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True, env=e, timeout=300)


def plan_line(out, kind):
    lines = [line for line in out.splitlines() if line.startswith(f"plan: {kind} ")]
    assert len(lines) <= 1, out
    return lines[0].split()[2:] if lines else []


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    d = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(d)], check=True)
    return d / "bin" / "python"


def test_fresh_venv_installs_every_pin(fresh_venv):
    p = run_setup("--plan", env={"PYTHON": str(fresh_venv)})
    assert p.returncode == 0, p.stdout + p.stderr
    assert plan_line(p.stdout, "pip") == PINS, p.stdout


def test_set_up_interpreter_installs_nothing():
    p = run_setup("--plan", env={"PYTHON": sys.executable})
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "plan: nothing to install", p.stdout


def site_packages(python):
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("installed,wanted", [("1.0.0", True), ("2.4.6", False), ("2.4.6+local", False)])
def test_pin_versions_are_compared(tmp_path, installed, wanted):
    """A wrong version of an installed package is reinstalled; the pinned one (or its local build) is not."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    info = os.path.join(site_packages(venv / "bin" / "python"), f"numpy-{installed}.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: numpy\nVersion: {installed}\n")
    p = run_setup("--plan", env={"PYTHON": str(venv / "bin" / "python")})
    assert ("numpy==2.4.6" in plan_line(p.stdout, "pip")) == wanted, p.stdout


def test_malformed_requirement_is_an_error(tmp_path):
    req = tmp_path / "req.txt"
    req.write_text("torch>=2\n")
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "missing_requirements.py"), str(req)],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "req.txt:1" in p.stderr and "pin" in p.stderr


def apt_packages():
    text = SETUP.read_text()
    block = re.search(r"APT_PACKAGES=\((.*?)\n\)", text, re.S).group(1)
    return [w for line in block.splitlines() for w in line.split("#")[0].split()]


def test_empty_dpkg_database_installs_every_debian_package(tmp_path):
    (tmp_path / "status").write_text("")
    p = run_setup("--plan", env={"IOMM_SETUP_DPKG_ADMINDIR": str(tmp_path), "PYTHON": sys.executable})
    assert p.returncode == 0, p.stdout + p.stderr
    assert plan_line(p.stdout, "apt") == apt_packages(), p.stdout
    assert plan_line(p.stdout, "pip") == []


def test_every_debian_package_has_a_candidate():
    """Each name in setup.sh is a real Debian package that apt can install (a typo would only show on a fresh
    machine)."""
    for pkg in apt_packages():
        out = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout
        m = re.search(r"Candidate: (\S+)", out)
        assert m and m.group(1) != "(none)", f"{pkg}: no install candidate\n{out}"


def test_build_directory_configures_from_nothing(tmp_path):
    """What `make build` does first on a fresh clone: CMake finds torch (through python3) and every Debian
    library."""
    p = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path / "build"), "-G", "Ninja",
                        "-DCMAKE_BUILD_TYPE=Release"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert (tmp_path / "build" / "build.ninja").exists()


def test_world_tokenizer_regenerates_identically(tmp_path):
    """configs/world/tokenizer.json is what scripts/make_world_tokenizer.py makes from the world's text, so the
    tokenizer the demo and the tests read can be rebuilt from a clean state."""
    world = tmp_path / "world"
    subprocess.run([iomm_bin(), "world", "make", "--out", str(world), "--captioned", "20000", "--image-only", "10"],
                   check=True, capture_output=True)
    out = tmp_path / "tokenizer.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_world_tokenizer.py"), "--corpus", str(world),
                    "--out", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == (ROOT / "configs" / "world" / "tokenizer.json").read_bytes()
