"""iomm's safetensors reader/writer against Python's `safetensors` (0.8) and transformers' sharded checkpoints.

iomm reads a checkpoint and re-writes it (`iomm inspect PATH --save-copy OUT`, every tensor going through libtorch);
Python loads the copy and compares bit-exactly. `inspect --json` gives names, dtypes, shapes and metadata."""
import json
import struct
from collections import OrderedDict

import numpy as np
import pytest
import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import load_file, save_file

from conftest import run_iomm

TORCH_DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def random_tensor(dtype, shape, gen):
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        # Includes the values that expose byte-level mistakes: -0.0, inf, nan, subnormals.
        t = torch.randn(shape, generator=gen, dtype=torch.float64) * 100
        flat = t.view(-1)
        specials = [-0.0, float("inf"), float("-inf"), float("nan"), 1e-40]
        flat[: min(len(specials), flat.numel())] = torch.tensor(specials[: flat.numel()], dtype=torch.float64)
        return t.to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=gen, dtype=torch.int64).to(dtype)


def every_dtype_state_dict():
    gen = torch.Generator().manual_seed(1234)
    sd = {f"layer.{name.lower()}.weight": random_tensor(dt, (3, 5), gen) for name, dt in TORCH_DTYPES.items()}
    sd["scalar"] = torch.tensor(2.5, dtype=torch.float32)
    sd["empty"] = torch.zeros((0, 7), dtype=torch.bfloat16)
    sd["big"] = random_tensor(torch.float32, (33, 65), gen)
    return sd


def assert_bit_equal(expected: dict, got: dict):
    assert sorted(expected) == sorted(got)
    for name, t in expected.items():
        u = got[name]
        assert u.dtype == t.dtype, name
        assert tuple(u.shape) == tuple(t.shape), name
        # Compare the bytes, so NaN payloads and -0.0 count too.
        if t.numel():
            assert t.reshape(-1).view(torch.uint8).equal(u.reshape(-1).view(torch.uint8)), name


def inspect_json(path, *extra):
    return json.loads(run_iomm("inspect", path, "--json", *extra).stdout)


def test_inspect_lists_every_dtype_written_by_torch_api(tmp_path):
    sd = every_dtype_state_dict()
    path = tmp_path / "all.safetensors"
    save_file(sd, str(path), metadata={"format": "pt", "note": "κόσμε"})
    info = inspect_json(path)
    assert info["metadata"] == {"format": "pt", "note": "κόσμε"}
    assert [t["name"] for t in info["tensors"]] == sorted(sd)
    dtype_names = {dt: name for name, dt in TORCH_DTYPES.items()}
    for t in info["tensors"]:
        assert t["dtype"] == dtype_names[sd[t["name"]].dtype], t["name"]
        assert t["shape"] == list(sd[t["name"]].shape), t["name"]
        assert t["nbytes"] == sd[t["name"]].numel() * sd[t["name"]].element_size()
    assert info["total_parameters"] == sum(t.numel() for t in sd.values())
    assert info["num_tensors"] == len(sd)


@pytest.mark.parametrize("read_mode", [[], ["--pread"]], ids=["mmap", "pread"])
def test_copy_through_iomm_is_bit_exact(tmp_path, read_mode):
    sd = every_dtype_state_dict()
    src = tmp_path / "src.safetensors"
    save_file(sd, str(src), metadata={"format": "pt", "step": "7", "x": "y"})
    out = tmp_path / "copy.safetensors"
    run_iomm("inspect", src, "--save-copy", out, *read_mode)
    assert_bit_equal(sd, load_file(str(out)))
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {"format": "pt", "step": "7", "x": "y"}
    assert not (tmp_path / "copy.safetensors.tmp").exists()


def test_iomm_writes_the_same_bytes_as_python(tmp_path):
    # With at most one metadata key (Python orders metadata by hash), iomm's writer reproduces the file byte for byte:
    # same tensor order, same header JSON, same padding.
    sd = every_dtype_state_dict()
    src = tmp_path / "src.safetensors"
    save_file(sd, str(src), metadata={"format": "pt"})
    out = tmp_path / "copy.safetensors"
    run_iomm("inspect", src, "--save-copy", out)
    assert out.read_bytes() == src.read_bytes()


def test_numpy_api_files(tmp_path):
    rng = np.random.default_rng(7)
    arrays = {
        "f32": rng.standard_normal((4, 3)).astype(np.float32),
        "f16": rng.standard_normal((5,)).astype(np.float16),
        "f64": rng.standard_normal((2, 2, 2)),
        "i64": rng.integers(-(2**62), 2**62, (6,), dtype=np.int64),
        "i32": rng.integers(-(2**31), 2**31 - 1, (3,), dtype=np.int32),
        "i16": rng.integers(-(2**15), 2**15 - 1, (3,), dtype=np.int16),
        "i8": rng.integers(-128, 127, (9,), dtype=np.int8),
        "u8": rng.integers(0, 255, (9,), dtype=np.uint8),
        "bool": rng.random((3, 3)) > 0.5,
    }
    src = tmp_path / "np.safetensors"
    np_save_file(arrays, str(src), metadata={"framework": "numpy"})
    info = inspect_json(src)
    assert {t["name"]: t["shape"] for t in info["tensors"]} == {k: list(v.shape) for k, v in arrays.items()}
    out = tmp_path / "copy.safetensors"
    run_iomm("inspect", src, "--save-copy", out)
    back = np_load_file(str(out))
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype, k
        assert np.array_equal(back[k], v), k


# ---- sharded checkpoints, written by transformers ----

@pytest.fixture
def qwen2_checkpoint(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=300, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16).eval()
    out = tmp_path / "qwen2"
    model.save_pretrained(out, max_shard_size=20_000)
    return out, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_reads_transformers_sharded_checkpoint(qwen2_checkpoint, tmp_path):
    ckpt, sd = qwen2_checkpoint
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2, "the fixture must be sharded"
    for source in (ckpt, ckpt / "model.safetensors.index.json"):
        info = inspect_json(source)
        assert [t["name"] for t in info["tensors"]] == sorted(index["weight_map"])
        assert sorted(info["files"]) == sorted(str(ckpt / s) for s in shards)
        for t in info["tensors"]:
            assert t["file"].endswith(index["weight_map"][t["name"]])
            assert t["dtype"] == "BF16"
        assert info["total_bytes"] == index["metadata"]["total_size"]
        assert info["metadata"] == {"format": "pt"}
    out = tmp_path / "merged.safetensors"
    run_iomm("inspect", ckpt, "--save-copy", out)
    assert_bit_equal(sd, load_file(str(out)))


def test_iomm_sharded_save_matches_huggingface_split_and_loads_in_transformers(qwen2_checkpoint, tmp_path):
    from transformers import Qwen2ForCausalLM

    ckpt, sd = qwen2_checkpoint
    out = tmp_path / "resharded"
    limit = 15_000
    run_iomm("inspect", ckpt, "--save-copy", out, "--max-shard-bytes", limit)
    # Same assignment as huggingface_hub's splitter given the tensors in iomm's (name) order.
    split = split_torch_state_dict_into_shards(OrderedDict(sorted(sd.items())), max_shard_size=limit)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == split.tensor_to_filename
    assert index["metadata"]["total_size"] == split.metadata["total_size"]
    assert index["metadata"]["total_parameters"] == sum(t.numel() for t in sd.values())
    assert sorted(p.name for p in out.iterdir()) == sorted([*split.filename_to_tensors, "model.safetensors.index.json"])
    # transformers' own loader accepts it and gets the same weights.
    (out / "config.json").write_text((ckpt / "config.json").read_text())
    model = Qwen2ForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    assert_bit_equal(sd, {k: v.detach() for k, v in model.state_dict().items()})


def test_missing_shard_names_index_and_shard(qwen2_checkpoint):
    ckpt, _ = qwen2_checkpoint
    sorted(ckpt.glob("model-00002-of-*.safetensors"))[0].unlink()
    proc = run_iomm("inspect", ckpt, check=False)
    assert proc.returncode != 0
    assert "model.safetensors.index.json" in proc.stderr
    assert "model-00002-of-" in proc.stderr


# ---- corruption: iomm refuses what Python refuses, naming the file ----

def header_of(data: bytes):
    n = struct.unpack("<Q", data[:8])[0]
    return n, json.loads(data[8:8 + n])


def with_header(data: bytes, header: dict) -> bytes:
    n, _ = header_of(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n:]


def shift_offsets(data: bytes, name: str, delta_begin: int, delta_end: int) -> bytes:
    _, h = header_of(data)
    b, e = h[name]["data_offsets"]
    h[name]["data_offsets"] = [b + delta_begin, e + delta_end]
    return with_header(data, h)


def set_field(data: bytes, name: str, key: str, value) -> bytes:
    _, h = header_of(data)
    h[name][key] = value
    return with_header(data, h)


CORRUPTIONS = {
    "truncated_to_4_bytes": (lambda d: d[:4], None),
    "truncated_data": (lambda d: d[:-5], "b"),
    "header_length_too_large": (lambda d: struct.pack("<Q", len(d)) + d[8:], None),
    "header_length_absurd": (lambda d: struct.pack("<Q", 1 << 50) + d[8:], None),
    "header_not_json": (lambda d: d[:8] + b"#" + d[9:], None),
    "overlap": (lambda d: shift_offsets(d, "b", -4, -4) + b"\0" * 4, "b"),
    "gap": (lambda d: shift_offsets(d, "b", 4, 4) + b"\0" * 4, "b"),
    "trailing_bytes": (lambda d: d + b"\0" * 8, None),
    "unknown_dtype": (lambda d: set_field(d, "w", "dtype", "Q7"), "w"),
    "negative_shape": (lambda d: set_field(d, "w", "shape", [-4, 4]), "w"),
    "shape_size_mismatch": (lambda d: set_field(d, "w", "shape", [4, 5]), "w"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupted_files_fail_naming_the_file(tmp_path, kind):
    corrupt, tensor = CORRUPTIONS[kind]
    good = tmp_path / "good.safetensors"
    # "w" (F32) is first in the data region, "b" (F16) right after it, "z" (U8) last.
    save_file({"w": torch.ones(4, 4), "b": torch.ones(6, dtype=torch.float16), "z": torch.ones(3, dtype=torch.uint8)},
              str(good))
    bad = tmp_path / f"{kind}.safetensors"
    bad.write_bytes(corrupt(good.read_bytes()))
    with pytest.raises(SafetensorError):  # the reference refuses it too
        load_file(str(bad))
    # (Validation runs before any data is read, so the read mode does not matter here.)
    proc = run_iomm("inspect", bad, check=False)
    assert proc.returncode != 0, proc.stdout
    assert str(bad) in proc.stderr, proc.stderr
    if tensor:
        assert f"'{tensor}'" in proc.stderr, proc.stderr
