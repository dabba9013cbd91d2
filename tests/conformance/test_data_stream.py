"""The streaming loader from the command line (`iomm data scan`): memory that does not grow with the data set,
ranks that split an epoch exactly, damage counted by cause, an unreadable shard that stops the run. (A streaming
training run resumed mid-epoch: GeneratorTrainer.ResumeAfterAnInterruptionEqualsAnUninterruptedRun.)"""
import io
import json
import pathlib
import tarfile

from PIL import Image

from conftest import run_iomm


def png(i: int) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (32, 32), (i % 256, (i // 256) % 256, 7)).save(b, "PNG")
    return b.getvalue()


def write_shards(out: pathlib.Path, n: int, per_shard: int = 10000, caption: bool = False) -> pathlib.Path:
    """`n` 32x32 PNG samples (256 distinct images, reused: the loader's cost and memory are per sample)."""
    out.mkdir(parents=True, exist_ok=True)
    pngs = [png(i) for i in range(256)]
    for s in range(0, n, per_shard):
        with tarfile.open(out / f"shard-{s // per_shard:06d}.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
            for i in range(s, min(n, s + per_shard)):
                members = [("png", pngs[i % 256])] + ([("txt", f"caption {i}".encode())] if caption else [])
                for ext, data in members:
                    ti = tarfile.TarInfo(f"{i:09d}.{ext}")
                    ti.size = len(data)
                    tf.addfile(ti, io.BytesIO(data))
    return out


def scan(data, *args) -> dict:
    proc = run_iomm("data", "scan", "--data", data, "--resolution", 32, "--json", *args)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_the_data_set(tmp_path):
    # In memory, 200,000 images of 32² would take 590 MiB more than 20,000; streamed, the same.
    small = scan(write_shards(tmp_path / "20k", 20_000), "--workers", 2)
    big = scan(write_shards(tmp_path / "200k", 200_000), "--workers", 2)
    assert small["samples"] == 20_000 and big["samples"] == 200_000
    assert big["peak_rss_mib"] - small["peak_rss_mib"] < 32, (small, big)
    assert big["peak_rss_mib"] < 1024, big


def test_two_ranks_with_two_workers_read_the_epoch_exactly_once(tmp_path):
    data = write_shards(tmp_path / "d", 5_000, per_shard=500)
    whole = scan(data, "--workers", 2)
    parts = [scan(data, "--workers", 2, "--rank", r, "--world-size", 2) for r in (0, 1)]
    assert sum(p["samples"] for p in parts) == whole["samples"] == 5_000
    # An order-independent sum of per-key hashes: the ranks' multisets of keys add up to the whole's.
    assert (parts[0]["key_checksum"] + parts[1]["key_checksum"]) % 2**64 == whole["key_checksum"]


def test_damage_is_counted_by_cause_and_a_missing_shard_stops_the_scan(tmp_path):
    data = write_shards(tmp_path / "d", 40, per_shard=20, caption=True)
    with tarfile.open(data / "shard-000002.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, payload in [("x.png", b"not an image"), ("x.txt", b"broken"), ("y.json", b"{}"),
                              ("z.png", png(3))]:
            ti = tarfile.TarInfo(name)
            ti.size = len(payload)
            tf.addfile(ti, io.BytesIO(payload))
    cut = data / "shard-000001.tar"
    cut.write_bytes(cut.read_bytes()[: 512 * 29 + 100])  # truncated inside sample 7's image
    cut2 = data / "shard-000003.tar"  # cut between two members: only the missing end blocks tell
    write_shards(tmp_path / "e", 10, caption=True)
    cut2.write_bytes((tmp_path / "e/shard-000000.tar").read_bytes()[: 512 * 2 * 7])
    r = scan(data, "--captions")
    assert r["skipped"]["undecodable"] == 1, r
    assert r["skipped"]["no_image"] == 1, r
    assert r["skipped"]["no_caption"] == 1, r
    assert r["skipped"]["damaged_shard"] == 2, r
    assert "shard-000001.tar" in r["first_skipped"]["damaged_shard"], r
    assert "x" in r["first_skipped"]["undecodable"], r
    # The good shard whole, the truncated ones up to the damage (7 and 3 whole samples; the last one dropped).
    assert r["samples"] == 20 + 7 + 3, r

    listing = tmp_path / "shards.txt"
    listing.write_text(f"{data}/shard-000000.tar\n{data}/gone.tar\n")
    proc = run_iomm("data", "scan", "--data", listing, "--json", check=False)
    assert proc.returncode != 0
    assert "gone.tar" in proc.stderr and "shards.txt" in proc.stderr, proc.stderr
