"""Reliability of the CLI (issue 17): fatal errors reach the run's log, and generation options that can only give a
black image are refused before any model is loaded."""
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


def test_generate_refuses_options_that_give_a_black_image(iomm, tmp_path):
    # Checked before the model loads, so no model is needed: the error must name the option, not the model.
    missing = tmp_path / "no-model"
    for option, value in [("--cfg", "nan"), ("--cfg", "inf"), ("--shift", "0"), ("--shift", "nan"),
                          ("--shift", "-2")]:
        p = iomm("generate", "--model", missing, "--prompt", "a red circle", "--out", tmp_path / "x.png",
                 f"{option}={value}", check=False)
        assert p.returncode == 1, (option, value, p.stderr)
        assert option in p.stderr and value in p.stderr, (option, value, p.stderr)
    assert not (tmp_path / "x.png").exists()


def test_generate_and_edit_refuse_an_output_that_is_not_png(iomm, tmp_path):
    ref = tmp_path / "ref.png"
    ref.write_bytes(b"not read: the output name is refused first")
    for out in ["x.jpg", "x.JPEG", "x.webp", "x"]:
        p = iomm("generate", "--model", tmp_path, "--prompt", "a red circle", "--out", tmp_path / out, check=False)
        assert p.returncode == 1 and "must end in .png" in p.stderr and out in p.stderr, p.stderr
        p = iomm("edit", "--model", tmp_path, "--image", ref, "--prompt", "make it blue", "--out", tmp_path / out,
                 check=False)
        assert p.returncode == 1 and "must end in .png" in p.stderr, p.stderr
    # Upper-case .PNG is a PNG name: it gets past the check (and fails on the missing model instead).
    p = iomm("generate", "--model", tmp_path, "--prompt", "a red circle", "--out", tmp_path / "x.PNG", check=False)
    assert p.returncode == 1 and "must end in .png" not in p.stderr


def test_world_make_refuses_an_absurd_pool_before_writing(iomm, tmp_path):
    out = tmp_path / "world"
    for option in ("--image-only", "--captioned"):
        p = iomm("world", "make", "--out", out, option, "100000000000", check=False)
        assert p.returncode != 0 and option in p.stderr, p.stderr
    assert not out.exists()  # nothing was written


def test_train_refuses_an_absurd_batch_size_at_start(iomm, tmp_path):
    p = iomm("train", "--config", UNDERSTANDING, "--set", "train.batch_size=1000000000", "--out", tmp_path / "u",
             cwd=ROOT, check=False)
    assert p.returncode == 1
    assert "train.batch_size" in p.stderr and "frame #" not in p.stderr, p.stderr


def test_a_libtorch_error_prints_its_message_without_the_cpp_backtrace(iomm, tmp_path):
    # Qwen2 given embeddings of the wrong width: the clash surfaces inside libtorch (its RMSNorm's multiply).
    import torch
    import transformers
    from safetensors.torch import save_file
    cfg = transformers.Qwen2Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1)
    transformers.Qwen2Model(cfg).save_pretrained(tmp_path / "qwen2")
    save_file({"inputs_embeds": torch.randn(1, 3, 12)}, str(tmp_path / "in.safetensors"))  # 12 wide, not 16
    p = iomm("forward", "--component", "qwen2", "--model", tmp_path / "qwen2", "--inputs", tmp_path / "in.safetensors",
             "--out", tmp_path / "out.safetensors", check=False)
    assert p.returncode == 1, p.stderr
    assert "frame #" not in p.stderr and "raised inside libtorch" in p.stderr, p.stderr
    assert "(16)" in p.stderr and "(12)" in p.stderr, p.stderr  # libtorch's own message is kept


def test_samples_lost_without_a_cause_are_caught_by_the_index(iomm, tmp_path):
    # A shard replaced by a shorter, valid copy loses samples that no skip cause counts; iomm world's index.jsonl
    # still lists them, and a whole read says so (a warning with both counts, not an error).
    import io
    import json
    import tarfile
    world = tmp_path / "world"
    iomm("world", "make", "--out", world, "--image-only", 40, "--captioned", 0, "--shard-size", 20)
    shard = world / "image" / "shard-000000.tar"
    with tarfile.open(shard) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as t:
        for m, data in members[:-3]:  # the last 3 samples (one .png member each) are gone
            t.addfile(m, io.BytesIO(data))
    p = iomm("data", "scan", "--data", world / "image", "--resolution", 16, "--json")
    report = json.loads(p.stdout)
    assert report["samples"] == 37, report
    warning = report["index_mismatch"]
    assert "lists 40 samples" in warning and "37 were loaded and 0 skipped" in warning, warning
    assert "3 missing" in warning and str(world / "image" / "index.jsonl") in warning, warning
    assert warning in p.stderr  # in the log too
    intact = tmp_path / "intact"
    iomm("world", "make", "--out", intact, "--image-only", 40, "--captioned", 0, "--shard-size", 20)
    assert json.loads(iomm("data", "scan", "--data", intact / "image", "--json").stdout)["index_mismatch"] is None
