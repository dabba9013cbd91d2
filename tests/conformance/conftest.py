"""Shared fixtures for the conformance tests: they build small reference objects with the Python ecosystem
(torch, transformers, diffusers, tokenizers, safetensors, Pillow) and compare iomm's results with them."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def iomm_bin() -> str:
    path = os.environ.get("IOMM_BIN", str(ROOT / "build" / "iomm"))
    if not os.path.exists(path):
        pytest.fail(f"iomm binary not found at {path}: run `make build` or set IOMM_BIN")
    return path


def run_iomm(*args, check=True, **kw) -> subprocess.CompletedProcess:
    """Runs `iomm ARGS...` and returns the completed process (stdout/stderr as text)."""
    proc = subprocess.run([iomm_bin(), *map(str, args)], capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"iomm {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture
def iomm():
    return run_iomm


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A loadable IOMM model directory, small enough to generate in milliseconds: the golden fixture's random tiny
    model (16 px, pixel space) and its MLLM, copied so tests may write beside it. Returns the model directory."""
    import shutil
    src = ROOT / "tests" / "fixtures" / "iomm_step"
    d = tmp_path_factory.mktemp("tiny_model")
    shutil.copytree(src / "model", d / "model")  # iomm.toml: mllm = "../mllm"
    shutil.copytree(src / "mllm", d / "mllm")
    return d / "model"
