"""`iomm report`: an HTML report over fabricated run directories. Checks what a reader relies on: the sample
image is linked relative to the report, the loss curve is an inline SVG with one point per logged loss, every
SVG is well-formed XML, and text from the file system (a hostile run name) is escaped."""
import html
import html.parser
import json
import pathlib
import re
import urllib.parse
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from conftest import run_iomm

HOSTILE = "run <b>&\"x\"'"
SVG_NS = "{http://www.w3.org/2000/svg}"


def make_run(root: pathlib.Path, name: str, steps: int = 30) -> pathlib.Path:
    run = root / name
    (run / "samples").mkdir(parents=True)
    with open(run / "metrics.jsonl", "w") as f:
        for i in range(steps):
            f.write(json.dumps({"step": i * 10, "loss": 2.0 * 0.9 ** i, "lr": 1e-4, "time": 1000.0 + i}) + "\n")
        f.write(json.dumps({"step": steps * 10, "grad_norm": 0.5, "note": "no loss on this line"}) + "\n")
    rng = np.random.default_rng(0)
    for step in (100, 200):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(run / "samples" / f"{step:06d}.png")
    (run / "config.toml").write_text('[train]\nlr = 1e-4\nprompt = "a <red> circle & square"\n')
    return run


class Headings(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tag, self.h2 = None, []

    def handle_starttag(self, tag, attrs):
        self.tag = tag

    def handle_endtag(self, tag):
        self.tag = None

    def handle_data(self, data):
        if self.tag == "h2":
            self.h2.append(data)


def svgs(page: str):
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", page, flags=re.S)]


def svg_titled(page: str, title: str):
    for root in svgs(page):
        texts = [t.text for t in root.iter(SVG_NS + "text")]
        if title in texts[:1]:
            return root
    raise AssertionError(f"no SVG titled {title!r}")


def points(polyline):
    return [tuple(map(float, p.split(","))) for p in polyline.get("points").split()]


def test_single_run_report(tmp_path):
    run = make_run(tmp_path, HOSTILE)
    out = tmp_path / "report.html"
    run_iomm("report", run, "--out", out, "--samples", "1")
    page = out.read_text()

    # The newest sample only (--samples 1), linked relative to the report and percent-encoded.
    src = urllib.parse.quote(f"{HOSTILE}/samples/000200.png", safe="/~")
    assert f'src="{html.escape(src)}"' in page
    assert "000100.png" not in page
    assert (out.parent / urllib.parse.unquote(src)).exists()
    assert "image-rendering: pixelated" in page

    # Every SVG parses as XML; the loss plot has the raw and the smoothed curve, one point per logged loss,
    # falling (SVG y grows downwards).
    assert len(svgs(page)) == 4  # loss, lr, elapsed_s, grad_norm
    loss = svg_titled(page, "loss")
    lines = list(loss.iter(SVG_NS + "polyline"))
    assert len(lines) == 2
    for line in lines:
        pts = points(line)
        assert len(pts) == 30
        assert all(b[1] > a[1] for a, b in zip(pts, pts[1:]))
        assert all(b[0] > a[0] for a, b in zip(pts, pts[1:]))
    assert len(points(next(svg_titled(page, "grad_norm").iter(SVG_NS + "polyline")))) == 1

    # The hostile name is escaped everywhere it appears as text.
    assert HOSTILE not in page and "<b>" not in page
    parser = Headings()
    parser.feed(page)
    assert parser.h2 == [HOSTILE]
    assert "<script" not in page

    # The config, folded, escaped.
    assert "<details><summary>config.toml</summary>" in page
    assert "a &lt;red&gt; circle &amp; square" in page


def test_several_runs_compare_losses(tmp_path):
    runs = [make_run(tmp_path / "runs", n, steps) for n, steps in (("a", 30), ("b", 12))]
    out = tmp_path / "out" / "nested" / "report.html"
    run_iomm("report", *runs, "--out", out, "--title", "A & B")
    page = out.read_text()
    assert "<title>A &amp; B</title>" in page
    compare = svgs(page)[0]
    assert [len(points(p)) for p in compare.iter(SVG_NS + "polyline")] == [30, 30, 12, 12]
    assert 'src="../../runs/a/samples/000200.png"' in page
    assert 'src="../../runs/b/samples/000100.png"' in page


def test_missing_run_is_a_clear_error(tmp_path):
    proc = run_iomm("report", tmp_path / "nope", "--out", tmp_path / "r.html", check=False)
    assert proc.returncode != 0
    assert "nope" in proc.stderr and "run directory" in proc.stderr
    assert not (tmp_path / "r.html").exists()
