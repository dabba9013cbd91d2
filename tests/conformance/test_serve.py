"""`iomm serve` end to end on the loopback interface: the server is started on a free port (--port 0, the bound
address is read from its stdout) over a tiny model, then driven by HTTP: generations and edits give the same PNG
bytes as the CLI for the same seed, server-sent progress events arrive per step with previews, queued and running
jobs cancel, every class of bad request gets its 4xx while the server keeps serving, 50 concurrent requests against
a queue of 8 are all answered (image or 429) with bounded memory, SIGTERM cancels running jobs and exits 0, and a
real browser (Debian's chromium through selenium) generates and edits through the page. PNGs carry their
parameters and `iomm generate --from-png` / `iomm edit --from-png` redo them byte for byte."""
import base64
import concurrent.futures
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from PIL import Image

from conftest import iomm_bin, run_iomm

START_TIMEOUT = 60


class Server:
    """A running `iomm serve`; its log goes to LOG (shown when a test fails)."""

    def __init__(self, model, log_dir, *args):
        self.log_path = log_dir / f"serve-{uuid.uuid4().hex[:6]}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([iomm_bin(), "serve", "--model", str(model), "--port", "0", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self._read_address()
        self.base = line.split("listening on ", 1)[1].strip()
        assert self.base.startswith("http://127.0.0.1:"), line
        self.host, self.port = "127.0.0.1", int(self.base.rsplit(":", 1)[1])

    def _read_address(self):
        found = []
        reader = threading.Thread(target=lambda: found.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not found or "listening on" not in found[0]:
            self.proc.kill()
            raise AssertionError(f"iomm serve did not start: {found}\n{self.log_path.read_text()}")
        return found[0]

    def request(self, method, path, body=None, headers=None, timeout=120):
        """(status, headers, body bytes); never raises for an HTTP error status."""
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def post_json(self, path, obj, **kw):
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        return self.request("POST", path, body, {"Content-Type": "application/json", **kw.pop("headers", {})}, **kw)

    def post_form(self, path, fields, files, **kw):
        body, ctype = multipart(fields, files)
        return self.request("POST", path, body, {"Content-Type": ctype}, **kw)

    def events(self, method, path, body, content_type, on_event=None):
        """Server-sent events of a streamed request as [(name, data)]; on_event(name, data) is called as they come."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        conn.request(method, path, body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        assert resp.status == 200, (resp.status, resp.read())
        assert resp.getheader("Content-Type").startswith("text/event-stream")
        out, name, data = [], None, None
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and name:
                out.append((name, data))
                if on_event:
                    on_event(name, data)
                name = data = None
        conn.close()
        return out

    def rss_kib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError(f"iomm serve did not exit within {timeout} s of SIGTERM")
        self.log.close()
        return self.proc.returncode


def multipart(fields, files):
    boundary = "iommtest" + uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, (filename, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{filename}"\r\n'
                     f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def png_bytes(size=40, color=(200, 30, 30)):
    buf = io.BytesIO()
    img = Image.new("RGB", (size, size + 8), (240, 240, 240))
    for x in range(8, 24):
        for y in range(10, 30):
            img.putpixel((x, y), color)
    img.save(buf, format="PNG")
    return buf.getvalue()


def record_of(png):
    return json.loads(Image.open(io.BytesIO(png)).text["iomm-parameters"])


def cli_generate(model, out, prompt, seed, steps, cfg, sampler="euler"):
    run_iomm("generate", "--model", model, "--prompt", prompt, "--seed", seed, "--steps", steps, "--cfg", cfg,
             "--sampler", sampler, "--out", out)
    return out.read_bytes()


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    s = Server(tiny_model, tmp_path_factory.mktemp("serve_log"), "--max-prompt-chars", 60, "--max-upload-bytes",
               20000, "--max-n", 3, "--max-steps", 2000)
    yield s
    assert s.stop() == 0, s.log_path.read_text()


# ---------------------------------------------------------------- API

def test_health_and_models(server):
    status, _, body = server.request("GET", "/health")
    assert status == 200
    h = json.loads(body)
    assert h["status"] == "ok" and h["queue"]["capacity"] == 8
    status, _, body = server.request("GET", "/v1/models")
    m = json.loads(body)["data"][0]
    assert m["object"] == "model" and m["resolution"] == 16
    assert m["fingerprint"].startswith("sha256:") and len(m["fingerprint"]) == 7 + 64
    assert m["limits"]["max_n"] == 3 and m["limits"]["max_upload_bytes"] == 20000


def test_generation_gives_the_cli_bytes_for_the_same_seed(server, tiny_model, tmp_path):
    status, headers, body = server.post_json("/v1/images/generations", {
        "prompt": "a red circle", "n": 2, "seed": 7, "steps": 4, "cfg_scale": 3.0, "sampler": "dpmpp_2m",
        "response_format": "b64_json"})
    assert status == 200, body
    r = json.loads(body)
    assert r["id"] == headers["X-Job-Id"] and len(r["data"]) == 2
    pngs = [base64.b64decode(d["b64_json"]) for d in r["data"]]
    assert [d["seed"] for d in r["data"]] == [7, 8]  # image i uses seed + i
    assert pngs[0] != pngs[1]
    for i, png in enumerate(pngs):
        assert png == cli_generate(tiny_model, tmp_path / f"cli{i}.png", "a red circle", 7 + i, 4, 3.0, "dpmpp_2m")
    rec = record_of(pngs[0])
    fingerprint = json.loads(server.request("GET", "/v1/models")[2])["data"][0]["fingerprint"]
    assert rec == {"task": "generate", "prompt": "a red circle", "negative_prompt": None, "seed": 7, "steps": 4,
                   "cfg_scale": 3.0, "sampler": "dpmpp_2m", "shift": 1.0, "model_fingerprint": fingerprint}
    assert r["data"][0]["parameters"] == rec


def test_a_seedless_request_reports_the_seed_it_drew(server, tiny_model, tmp_path):
    status, _, body = server.post_json("/v1/images/generations", {"prompt": "a blue square", "steps": 2})
    assert status == 200, body
    item = json.loads(body)["data"][0]
    png = base64.b64decode(item["b64_json"])
    assert record_of(png)["seed"] == item["seed"]
    assert png == cli_generate(tiny_model, tmp_path / "x.png", "a blue square", item["seed"], 2, 4.5)


def test_edit_gives_the_cli_bytes_and_from_png_redoes_it(server, tiny_model, tmp_path):
    ref = tmp_path / "ref.png"
    ref.write_bytes(png_bytes())
    status, _, body = server.post_form("/v1/images/edits", {"prompt": "make it blue", "seed": "3", "steps": "3"},
                                       {"image": ("ref.png", ref.read_bytes())})
    assert status == 200, body
    png = base64.b64decode(json.loads(body)["data"][0]["b64_json"])
    out = tmp_path / "edit.png"
    run_iomm("edit", "--model", tiny_model, "--image", ref, "--prompt", "make it blue", "--seed", 3, "--steps", 3,
             "--out", out)
    assert out.read_bytes() == png
    assert record_of(png)["task"] == "edit"
    redo = tmp_path / "redo.png"
    run_iomm("edit", "--model", tiny_model, "--image", ref, "--from-png", out, "--out", redo)
    assert redo.read_bytes() == png


def test_png_record_round_trip_and_from_png(tiny_model, tmp_path, iomm):
    first = tmp_path / "first.png"
    cli_generate(tiny_model, first, "two green triangles \u2713", 11, 3, 2.5, "euler")
    rec = record_of(first.read_bytes())
    assert rec["prompt"] == "two green triangles \u2713" and rec["seed"] == 11 and rec["cfg_scale"] == 2.5
    again = tmp_path / "again.png"
    iomm("generate", "--model", tiny_model, "--from-png", first, "--out", again)
    assert again.read_bytes() == first.read_bytes()
    # --from-png replaces the sampling options; giving both is refused, as is a PNG without a record.
    p = iomm("generate", "--model", tiny_model, "--from-png", first, "--seed", 2, "--out", again, check=False)
    assert p.returncode != 0 and "excludes" in p.stderr
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    p = iomm("generate", "--model", tiny_model, "--from-png", plain, "--out", again, check=False)
    assert p.returncode != 0 and "no 'iomm-parameters' text chunk" in p.stderr
    p = iomm("edit", "--model", tiny_model, "--image", plain, "--from-png", first, "--out", again, check=False)
    assert p.returncode != 0 and "iomm generate --from-png" in p.stderr


def test_progress_events_per_step_with_previews(server):
    body = json.dumps({"prompt": "a yellow triangle", "seed": 1, "steps": 5, "n": 2, "stream": True,
                       "preview": True}).encode()
    events = server.events("POST", "/v1/images/generations", body, "application/json")
    names = [n for n, _ in events]
    assert names[:2] == ["queued", "started"] and names[-1] == "done", names
    progress = [d for n, d in events if n == "progress"]
    assert [(p["image"], p["step"]) for p in progress] == [(i, s) for i in range(2) for s in range(1, 6)]
    assert all(p["steps"] == 5 and p["n"] == 2 for p in progress)
    preview = Image.open(io.BytesIO(base64.b64decode(progress[-1]["preview"].split(",", 1)[1])))
    assert preview.size == (16, 16)
    images = [d for n, d in events if n == "image"]
    done = events[-1][1]
    assert [i["b64_json"] for i in images] == [d["b64_json"] for d in done["data"]]
    # The same job's events replay from GET /v1/jobs/ID/events, and its state is kept.
    job = done["id"]
    replay = server.events("GET", f"/v1/jobs/{job}/events", None, "text/plain")
    assert [n for n, _ in replay] == names
    status, _, body = server.request("GET", f"/v1/jobs/{job}")
    assert status == 200 and json.loads(body)["state"] == "done"


def start_stream(server, payload):
    """Streams a generation in a thread; returns (the events as they arrive, set at the first progress, thread)."""
    got, progressed = [], threading.Event()

    def on(name, data):
        got.append((name, data))
        if name == "progress":
            progressed.set()

    def run():
        try:
            server.events("POST", "/v1/images/generations", json.dumps({**payload, "stream": True}).encode(),
                          "application/json", on)
        finally:
            progressed.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return got, progressed, t


def test_cancel_running_and_queued_jobs(server):
    long_job = {"prompt": "a long job", "seed": 1, "steps": 2000, "n": 3}
    running, progressed, t1 = start_stream(server, long_job)
    assert progressed.wait(60)
    queued, _, t2 = start_stream(server, {**long_job, "prompt": "waits"})
    deadline = time.time() + 30
    while time.time() < deadline and not queued:
        time.sleep(0.05)
    job_running = running[0][1]["id"]
    job_queued = queued[0][1]["id"]
    status, _, body = server.request("DELETE", f"/v1/jobs/{job_queued}")
    assert (status, json.loads(body)["state"]) == (200, "cancelled")
    status, _, body = server.request("DELETE", f"/v1/jobs/{job_running}")
    assert (status, json.loads(body)["state"]) == (202, "cancelling")
    t1.join(60)
    t2.join(60)
    assert not t1.is_alive() and not t2.is_alive()
    assert running[-1][0] == "cancelled" and queued[-1][0] == "cancelled"
    assert [n for n, _ in queued] == ["queued", "cancelled"]  # it never started
    steps_run = sum(1 for n, _ in running if n == "progress")
    assert 0 < steps_run < 3 * 2000
    status, _, body = server.request("GET", f"/v1/jobs/{job_running}")
    assert json.loads(body)["state"] == "cancelled"
    status, _, body = server.request("DELETE", f"/v1/jobs/{job_running}")
    assert status == 409 and "already ended" in json.loads(body)["error"]["message"]
    assert server.request("DELETE", "/v1/jobs/job-0000000000000000")[0] == 404


BAD_REQUESTS = [
    # (name, method, path, body, content type, status, words the message must contain)
    ("bad-json", "POST", "/v1/images/generations", b'{"prompt": "x",', "application/json", 400, "not valid JSON"),
    ("not-object", "POST", "/v1/images/generations", b'["x"]', "application/json", 400, "JSON object"),
    ("unknown-field", "POST", "/v1/images/generations", b'{"prompt": "x", "stepz": 3}', "application/json", 400,
     "stepz: unknown field"),
    ("negative-prompt", "POST", "/v1/images/generations", b'{"prompt": "x", "negative_prompt": "y"}',
     "application/json", 400, "no negative prompt"),
    ("long-prompt", "POST", "/v1/images/generations", json.dumps({"prompt": "x" * 61}).encode(), "application/json",
     400, "61 characters, over the limit of 60"),
    ("too-many-images", "POST", "/v1/images/generations", b'{"prompt": "x", "n": 4}', "application/json", 400,
     "--max-n"),
    ("too-many-steps", "POST", "/v1/images/generations", b'{"prompt": "x", "steps": 2001}', "application/json", 400,
     "--max-steps"),
    ("wrong-type", "POST", "/v1/images/generations", b'{"prompt": "x", "seed": "7"}', "application/json", 400,
     "seed: expected a non-negative integer"),
    ("url-format", "POST", "/v1/images/generations", b'{"prompt": "x", "response_format": "url"}',
     "application/json", 400, "b64_json"),
    ("edit-as-json", "POST", "/v1/images/edits", b'{"prompt": "x"}', "application/json", 400, "multipart/form-data"),
    ("no-route", "GET", "/v1/nothing", None, "text/plain", 404, "no endpoint GET /v1/nothing"),
    ("unknown-job", "GET", "/v1/jobs/job-ffff", None, "text/plain", 404, "no job 'job-ffff'"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_that_says_what_to_fix(server, case):
    _, method, path, body, ctype, want, words = case
    status, _, out = server.request(method, path, body, {"Content-Type": ctype})
    assert status == want, out
    err = json.loads(out)["error"]
    assert words in err["message"], err
    assert server.request("GET", "/health")[0] == 200


def test_bad_uploads_get_a_4xx_and_the_server_keeps_serving(server):
    good = png_bytes()
    cases = [
        ({"prompt": "x"}, {"image": ("big.png", b"\x89PNG" + os.urandom(30000))}, 413, "over the limit of 20000"),
        ({"prompt": "x"}, {"image": ("junk.png", b"not an image at all")}, 400,
         "image: the uploaded file 'junk.png': not a PNG"),
        ({"prompt": "x"}, {"image": ("cut.png", good[: len(good) // 2])}, 400, "invalid or corrupt PNG"),
        ({"prompt": "x"}, {}, 400, "image: missing"),
        ({"prompt": "x", "mask": "m"}, {"image": ("a.png", good)}, 400, "mask: unknown field"),
        ({"prompt": "x", "steps": "many"}, {"image": ("a.png", good)}, 400, "steps: 'many' is not an integer"),
        ({}, {"image": ("a.png", good)}, 400, "prompt: missing"),
    ]
    for fields, files, want, words in cases:
        status, _, out = server.post_form("/v1/images/edits", fields, files)
        assert status == want, (words, out)
        assert words in json.loads(out)["error"]["message"], out
    # A body beyond the payload limit is refused by the HTTP layer, with a message all the same.
    status, _, out = server.post_form("/v1/images/edits", {"prompt": "x"}, {"image": ("huge", b"0" * (2 << 20))})
    assert status == 413 and "over 20000 bytes" in json.loads(out)["error"]["message"]
    status, _, body = server.post_json("/v1/images/generations", {"prompt": "still here", "steps": 1, "seed": 0})
    assert status == 200 and json.loads(body)["data"][0]["b64_json"]


def test_api_key_is_required_on_the_api_but_not_the_page(tiny_model, tmp_path):
    s = Server(tiny_model, tmp_path, "--api-key", "s3cret")
    try:
        assert s.request("GET", "/health")[0] == 401
        status, headers, body = s.request("GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
        assert status == 401 and "Authorization: Bearer KEY" in json.loads(body)["error"]["message"]
        assert s.post_json("/v1/images/generations", {"prompt": "x", "steps": 1})[0] == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert s.request("GET", "/health", headers=ok)[0] == 200
        status, _, body = s.post_json("/v1/images/generations", {"prompt": "x", "steps": 1}, headers=ok)
        assert status == 200, body
        status, _, page = s.request("GET", "/")
        assert status == 200 and b"<title>iomm</title>" in page
    finally:
        assert s.stop() == 0


def test_fifty_concurrent_requests_with_a_queue_of_8(tiny_model, tmp_path):
    """A long job holds the worker while 50 requests arrive at once: exactly 8 are queued, 42 get 429 at once (they
    do not wait for the worker); cancelling the long job lets the 8 finish. Twice, with RSS sampled throughout: the
    second round needs no more memory than the first."""
    s = Server(tiny_model, tmp_path, "--queue", 8, "--max-steps", 100000)
    try:
        baseline = s.rss_kib()
        peaks = []
        for _ in range(2):
            peak, stop = [0], threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], s.rss_kib())
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            blocker, progressed, t = start_stream(s, {"prompt": "hold the worker", "steps": 100000, "seed": 0})
            assert progressed.wait(60)
            started = time.time()
            with concurrent.futures.ThreadPoolExecutor(50) as ex:
                futures = [ex.submit(s.post_json, "/v1/images/generations",
                                     {"prompt": "a crowd", "steps": 2, "seed": i}, timeout=120) for i in range(50)]
                while sum(f.done() for f in futures) < 42 and time.time() - started < 60:
                    time.sleep(0.02)
                refused_in = time.time() - started
                assert s.request("DELETE", f"/v1/jobs/{blocker[0][1]['id']}")[0] == 202
                results = [f.result() for f in futures]
            elapsed = time.time() - started
            t.join(30)
            stop.set()
            sampler.join()
            peaks.append(peak[0])
            codes = [c for c, _, _ in results]
            assert (codes.count(200), codes.count(429)) == (8, 42), codes
            for c, headers, body in results:
                if c == 200:
                    assert base64.b64decode(json.loads(body)["data"][0]["b64_json"]).startswith(b"\x89PNG")
                else:
                    assert "queue is full" in json.loads(body)["error"]["message"]
                    assert headers["Retry-After"] == "1"
            assert elapsed < 90
            print(f"round: 42 x 429 within {refused_in:.2f} s, all 50 answered in {elapsed:.2f} s; "
                  f"RSS baseline {baseline / 1024:.0f} MiB, peak {peak[0] / 1024:.0f} MiB")
        assert peaks[0] < baseline + 256 * 1024, (baseline, peaks)
        assert peaks[1] < peaks[0] + 32 * 1024, peaks
        assert s.request("GET", "/health")[0] == 200
    finally:
        assert s.stop() == 0


def test_sigterm_cancels_the_running_job_and_exits_0(tiny_model, tmp_path):
    s = Server(tiny_model, tmp_path)
    events, progressed, t = start_stream(s, {"prompt": "interrupted", "steps": 100, "n": 4, "seed": 0})
    try:
        assert progressed.wait(60)
    finally:
        t0 = time.time()
        code = s.stop()
    assert code == 0, s.log_path.read_text()
    assert time.time() - t0 < 15
    t.join(10)
    assert events[-1][0] == "cancelled", [n for n, _ in events]
    assert "shutting down" in events[-1][1]["error"]["message"]


# ---------------------------------------------------------------- the page, in a real browser

@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("chromium / chromedriver missing: run `make setup` (apt: chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000",
                "--disable-gpu"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def wait_for(driver, condition, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def test_web_page_generates_and_edits_in_a_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server.base + "/")
    wait_for(browser, lambda d: "sha256:" in d.find_element(By.ID, "model").text)
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("a red circle left of a blue square")
    for field, value in (("seed", "42"), ("steps", "12"), ("cfg", "3")):
        el = browser.find_element(By.ID, field)
        el.clear()
        el.send_keys(value)
    browser.find_element(By.ID, "generate").click()
    card = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery .card[data-seed='42']"))[0]
    src = card.find_element(By.TAG_NAME, "img").get_attribute("src")
    page_png = base64.b64decode(src.split(",", 1)[1])
    status, _, body = server.post_json("/v1/images/generations", {
        "prompt": "a red circle left of a blue square", "seed": 42, "steps": 12, "cfg_scale": 3})
    assert status == 200
    assert page_png == base64.b64decode(json.loads(body)["data"][0]["b64_json"])
    assert "42" in card.text and "euler" in card.text
    wait_for(browser, lambda d: d.find_element(By.ID, "progress-text").text == "done")
    browser.save_screenshot(str(tmp_path / "generate.png"))
    shutil.copy(tmp_path / "generate.png", "/tmp/serve_screenshot.png")

    browser.find_element(By.ID, "tab-edit").click()
    ref = tmp_path / "ref.png"
    ref.write_bytes(png_bytes(48))
    browser.find_element(By.ID, "edit-image").send_keys(str(ref))
    browser.find_element(By.ID, "edit-prompt").send_keys("make the square green")
    seed = browser.find_element(By.ID, "edit-seed")
    seed.send_keys("9")
    browser.find_element(By.ID, "edit-run").click()
    after = wait_for(browser, lambda d: d.find_element(By.ID, "edit-after").get_attribute("src") or None)
    edited = base64.b64decode(after.split(",", 1)[1])
    status, _, body = server.post_form("/v1/images/edits", {"prompt": "make the square green", "seed": "9"},
                                       {"image": ("ref.png", ref.read_bytes())})
    assert status == 200
    assert edited == base64.b64decode(json.loads(body)["data"][0]["b64_json"])
    assert browser.find_element(By.ID, "edit-before").get_attribute("src").startswith("blob:")
    wait_for(browser, lambda d: d.find_element(By.ID, "edit-progress-text").text == "done")
    browser.save_screenshot(str(tmp_path / "edit.png"))
    shutil.copy(tmp_path / "edit.png", "/tmp/serve_edit_screenshot.png")
