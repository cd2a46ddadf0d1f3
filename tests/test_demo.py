"""The web demo: POST /api/super-resolve and its errors, the job queue, the page's job API, ``cresshift demo``."""
import io
import socket
import threading
import time
import warnings

import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("starlette", reason='the demo needs its extra: pip install -e ".[demo]"')
pytest.importorskip("python_multipart", reason='the demo needs its extra: pip install -e ".[demo]"')
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the test extra)")

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 and warns about httpx; both work
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from cresshift.data.io import bicubic_down, load_image  # noqa: E402
from cresshift.demo.app import create_app  # noqa: E402
from cresshift.demo.jobs import Job, JobCancelled, JobQueue, QueueFull  # noqa: E402
from cresshift.demo.samples import BUNDLED_PHOTOS, find_photo  # noqa: E402
from cresshift.demo.service import ModelChoice, SRRequest, encode_png, super_resolve  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def lr_tile() -> torch.Tensor:
    """A 16x16 LR: a bundled held-out test tile downscaled x4, at 8 bits (as a PNG upload decodes)."""
    from cresshift.bench import bundled_testset
    from cresshift.metrics import quantize

    lr = bicubic_down(load_image(sorted(bundled_testset().glob("*.png"))[0]), 4)
    return (quantize(lr) / 255).float().mul_(2).sub_(1)


@pytest.fixture(scope="module")
def client():
    app = create_app([ModelChoice("bundled", "bundled")], max_pixels=32 * 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with TestClient(app) as c:
            yield c


def post(client, image=None, **fields):
    files = {"image": ("lr.png", image, "image/png")} if image is not None else None
    return client.post("/api/super-resolve", files=files, data={k: str(v) for k, v in fields.items()})


def test_super_resolve_returns_the_pipelines_png(client):
    """The endpoint's PNG is exactly the pipeline's result for the same solver, NFE, rho and seed."""
    lr = lr_tile()
    r = post(client, encode_png(lr), solver="ddim", nfe=2, rho=1, seed=3)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-cresshift-nfe"] == "2" and float(r.headers["x-cresshift-seconds"]) > 0
    assert [float(t) for t in r.headers["x-cresshift-grid"].split(",")] == pytest.approx([1.0, 1 / 15], rel=1e-5)
    from PIL import Image

    assert Image.open(io.BytesIO(r.content)).size == (64, 64)
    pipe = client.app.state.demo.store.get("bundled")
    expected = pipe.run(lr[None], solver="ddim", nfe=2, rho=1.0, seed=3).sr[0]
    assert r.content == encode_png(expected)


def test_grid_field_chooses_the_grid_family(client):
    """grid=lambda (not rho) gives exactly pipe.run(grid="lambda") and reports that grid's times."""
    from cresshift.grids import lambda_grid

    lr = lr_tile()
    r = post(client, encode_png(lr), solver="dpmpp-2m", nfe=3, rho=4, grid="lambda", seed=1)
    assert r.status_code == 200, r.text
    pipe = client.app.state.demo.store.get("bundled")
    expected = pipe.run(lr[None], solver="dpmpp-2m", nfe=3, grid="lambda", seed=1)
    assert r.content == encode_png(expected.sr[0])
    got = [float(t) for t in r.headers["x-cresshift-grid"].split(",")]
    assert got == pytest.approx(lambda_grid(3, pipe.schedule_for(None)).tolist(), rel=1e-5)
    assert got != pytest.approx(pipe.run(lr[None], solver="dpmpp-2m", nfe=3, rho=4.0, seed=1).ts.tolist(), rel=1e-5)


def test_job_api_reports_progress_nfe_and_psnr(client):
    r = client.post("/api/jobs", data={"photo": "chelsea", "solver": "euler", "nfe": "3", "rho": "1"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.time() + 300
    while (status := client.get(f"/api/jobs/{job_id}").json())["state"] not in ("done", "failed", "cancelled"):
        assert time.time() < deadline
        time.sleep(0.1)
    assert status["state"] == "done", status
    assert status["nfe"] == 3 and status["done"] == status["total"] == 2 and len(status["grid"]) == 3
    assert (status["width"], status["height"]) == (256, 256)
    import numpy as np
    from PIL import Image

    from cresshift.metrics import psnr_y

    png = client.get(f"/api/jobs/{job_id}/sr.png").content
    sr = torch.from_numpy(np.asarray(Image.open(io.BytesIO(png)), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    hr = find_photo("chelsea").hr()
    assert status["psnr_y"] == pytest.approx(float(psnr_y(sr[None], hr[None])), abs=1e-6)
    for kind, side in (("bicubic", 256), ("lr", 64)):
        img = Image.open(io.BytesIO(client.get(f"/api/jobs/{job_id}/{kind}.png").content))
        assert img.size == (side, side)


BAD = [
    (dict(image=b"not an image at all"), 415, "not an image"),
    (dict(image=b""), 415, "empty"),
    (dict(), 400, "'image'"),
    (dict(image="big"), 413, "at most 1024 LR pixels"),
    (dict(image="small"), 400, "at least 8x8"),
    (dict(image="tile", solver="nope"), 400, "unknown solver"),
    (dict(image="tile", solver="adaptive"), 400, "unknown solver"),
    (dict(image="tile", nfe=0), 400, "nfe must be between 1 and 100"),
    (dict(image="tile", nfe=101), 400, "nfe must be between 1 and 100"),
    (dict(image="tile", nfe="five"), 400, "'nfe' must be"),
    (dict(image="tile", solver="heun", nfe=2), 400, "nfe >= 3"),
    (dict(image="tile", solver="markov", nfe=16), 400, "between 1 and 15"),
    (dict(image="tile", rho=0), 400, "rho must be non-zero"),
    (dict(image="tile", rho="nan"), 400, "'rho' must be"),
    (dict(image="tile", grid="cosine"), 400, "unknown grid"),
    (dict(image="tile", seed=-1), 400, "seed"),
    (dict(image="tile", tile=5), 400, "tile must be"),
    (dict(image="tile", model="other.safetensors"), 400, "unknown model"),
]


@pytest.mark.parametrize("fields, status, needle", BAD, ids=[b[2] for b in BAD])
def test_bad_input_is_a_one_line_json_4xx(client, fields, status, needle):
    image = fields.pop("image", None)
    if image == "tile":
        image = encode_png(lr_tile())
    elif image == "big":
        image = encode_png(torch.zeros(3, 40, 40))  # 1600 px > the fixture's 32 x 32 limit
    elif image == "small":
        image = encode_png(torch.zeros(3, 4, 30))
    r = post(client, image, **fields)
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and needle in body["error"], body
    assert "\n" not in body["error"] and "Traceback" not in r.text


def test_not_multipart_and_unknown_routes_are_json(client):
    r = client.post("/api/super-resolve", content=b"\x00\x01", headers={"content-type": "application/octet-stream"})
    assert r.status_code == 400 and "error" in r.json()
    r = client.get("/api/jobs/nope")
    assert r.status_code == 404 and "no such job" in r.json()["error"]
    assert client.get("/api/photos/nope/lr.png").status_code == 404
    # the server keeps serving after all of that
    assert client.get("/api/config").json()["solvers"][0] == "markov"


def test_page_and_assets_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text.replace("http://HOST:PORT", "") and "https://" not in page.text
    for asset in ("/static/app.js", "/static/app.css"):
        r = client.get(asset)
        assert r.status_code == 200 and "https://" not in r.text and "@import" not in r.text
    config = client.get("/api/config").json()
    assert [p["name"] for p in config["photos"]] == [p.name for p in BUNDLED_PHOTOS]
    lr = client.get("/api/photos/astronaut/lr.png")
    from PIL import Image

    assert Image.open(io.BytesIO(lr.content)).size == (128, 128)


# --- the queue ---------------------------------------------------------------------------------
def _wait(cond, timeout=30.0):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline
        time.sleep(0.01)


def test_queue_runs_one_job_at_a_time_in_order_and_cancels():
    queue = JobQueue(max_waiting=2)
    release, order, running = threading.Event(), [], []

    def blocking(job):
        running.append(job.id)
        assert len(running) - len(order) == 1  # never two at once
        release.wait(10)
        order.append(job.id)
        return job.id

    def stepping(job):
        for i in range(1000):
            job.progress(i, 1000)
            time.sleep(0.01)
        return "never"

    first = queue.submit(blocking)
    _wait(lambda: first.state == "running")
    second, third = queue.submit(blocking), queue.submit(stepping)
    assert (queue.ahead_of(second), queue.ahead_of(third)) == (1, 2)
    with pytest.raises(QueueFull) as full:
        queue.submit(blocking)
    assert full.value.status == 503
    queue.cancel(second)  # queued: never starts
    release.set()
    _wait(lambda: third.state == "running" and third.done > 0)
    queue.cancel(third)  # running: stops at its next step
    _wait(lambda: third.finished.is_set())
    assert order == [first.id] and first.result == first.id
    assert second.state == third.state == "cancelled" and third.done < 999
    failing = queue.submit(lambda job: 1 / 0)
    _wait(lambda: failing.finished.is_set())
    assert failing.state == "failed" and failing.status == 500 and "ZeroDivisionError" in failing.error
    queue.close()


def test_super_resolve_stops_when_cancelled(client):
    store = client.app.state.demo.store
    job = Job(lambda j: None)
    job.cancel_requested.set()
    with pytest.raises(JobCancelled):
        super_resolve(store, SRRequest("bundled", "euler", 3, 1.0, 0), lr_tile(), job)


# --- the command -------------------------------------------------------------------------------
def _one_line_error(result, *needles):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_demo_command_errors_are_one_line(monkeypatch, tmp_path):
    import sys

    from cresshift.cli import main

    runner = CliRunner()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        _one_line_error(runner.invoke(main, ["demo", "--port", str(port), "--device", "cpu"]), f"port {port} is in use")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    _one_line_error(runner.invoke(main, ["demo", "--model", str(bad), "--device", "cpu"]))
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # the demo extra is not installed
    _one_line_error(runner.invoke(main, ["demo"]), 'pip install -e ".[demo]"')
