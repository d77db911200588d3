"""The hub: a fast, clear answer offline; cached models with no network; real download progress.

No test reaches the real hub. The cache is laid out as huggingface_hub lays it out
(models--org--name/blobs, snapshots/<commit>/ symlinks, refs/main) with files written by
transformers' save_pretrained. The download test runs huggingface_hub's real download code against
a small local HTTP server that answers like the hub.
"""

import hashlib
import http.server
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

from vit_core import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ENTRY = hub.get("deit-tiny-distilled")


def tiny_deit_files(folder: Path) -> Path:
    cfg = DeiTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     image_size=32, patch_size=8, num_labels=10)
    torch.manual_seed(0)
    DeiTForImageClassificationWithTeacher(cfg).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"size": 36, "crop_size": 32, "do_center_crop": True, "resample": 3,
         "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    return folder


def make_hf_cache(cache: Path, repo: str, files_from: Path) -> Path:
    """huggingface_hub's cache layout: blobs named by hash, snapshot files are relative symlinks."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / COMMIT
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in files_from.iterdir():
        data = f.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def online_env(monkeypatch):
    """Tests run with HF_HUB_OFFLINE=1 (conftest); these need it off to exercise the probe."""
    from huggingface_hub import constants
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens here once the socket is closed


@pytest.fixture
def blackhole():
    """A port whose accept queue is full: new connections get no answer at all (SYNs are dropped)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.05)
    yield port
    for s in fillers + [server]:
        s.close()


def test_catalogue():
    repos = {e.repo for e in hub.CATALOGUE}
    assert {"facebook/deit-tiny-patch16-224", "facebook/deit-small-patch16-224", "google/vit-base-patch16-224",
            "facebook/deit-tiny-distilled-patch16-224"} <= repos
    assert any(r.startswith("timm/vit_") and "augreg" in r for r in repos)
    for e in hub.CATALOGUE:
        assert e.id and e.title and e.size_mb > 0 and "config.json" in e.files and e.weights
        assert hub.get(e.id) is e and hub.get(e.repo) is e
    with pytest.raises(KeyError):
        hub.get("resnet-50")


def test_offline_mode_answers_at_once(tmp_path):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest
    start = time.perf_counter()
    with pytest.raises(hub.HubOfflineError) as e:
        hub.load(ENTRY, cache_dir=tmp_path)
    assert time.perf_counter() - start < 1.0
    assert e.value.key == "hub.offline" and "HF_HUB_OFFLINE" in str(e.value)


@pytest.mark.parametrize("where", ["closed port", "blackhole", "10.255.255.1"])
def test_unreachable_endpoint_answers_within_a_second(online_env, tmp_path, where, request):
    port = {"closed port": closed_port, "blackhole": lambda: request.getfixturevalue("blackhole")}.get(where)
    online_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port()}" if port else "http://10.255.255.1")
    start = time.perf_counter()
    with pytest.raises(hub.HubOfflineError) as e:
        hub.load(ENTRY, cache_dir=tmp_path)  # not cached, so it must try the network
    assert time.perf_counter() - start < 1.0
    assert e.value.key == "hub.offline" and "cached" in str(e.value)


def test_cached_model_loads_without_network(online_env, tmp_path, blackhole):
    snapshot = make_hf_cache(tmp_path / "cache", ENTRY.repo, tiny_deit_files(tmp_path / "files"))
    assert hub.is_cached(ENTRY, tmp_path / "cache") and not hub.is_cached(hub.get("deit-tiny"), tmp_path / "cache")
    online_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{blackhole}")  # any network use would hang here
    start = time.perf_counter()
    model, card = hub.load(ENTRY.id, cache_dir=tmp_path / "cache")
    assert time.perf_counter() - start < 5
    assert card.name == ENTRY.id and card.title == ENTRY.title and card.layout == "transformers"
    assert card.extra["path"] == str(snapshot) and card.config.distilled
    assert card.preprocess.interpolation == "bicubic" and card.preprocess.crop_pct == 32 / 36
    assert model.trace(torch.randn(1, 3, 32, 32)).logits.shape == (1, 10)


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Just enough of the hub's HTTP API for hf_hub_download: paths-info, HEAD and GET of resolve/."""

    files: dict[str, bytes] = {}

    def log_message(self, *args):
        pass

    def _file(self):
        prefix = f"/{ENTRY.repo}/resolve/"
        if not self.path.startswith(prefix):
            return None
        name = self.path[len(prefix):].split("/", 1)[1]
        return self.files.get(name)

    def _headers(self, data):
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()

    def do_HEAD(self):
        data = self._file()
        if data is None:
            self.send_error(404)
        else:
            self._headers(data)

    def do_GET(self):
        data = self._file()
        if data is None:
            self.send_error(404)
            return
        self._headers(data)
        self.wfile.write(data)

    def do_POST(self):  # /api/models/<repo>/paths-info/<rev>
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps([{"type": "file", "path": k, "size": len(v), "oid": hashlib.sha1(v).hexdigest()}
                           for k, v in self.files.items()]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_download_reports_real_progress_then_loads(online_env, tmp_path):
    from huggingface_hub import constants
    files = tiny_deit_files(tmp_path / "files")
    FakeHub.files = {f.name: f.read_bytes() for f in files.iterdir()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    online_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    online_env.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)  # small chunks: many progress steps
    calls = []
    try:
        model, card = hub.load(ENTRY, progress=lambda done, total: calls.append((done, total, threading.get_ident())),
                               cache_dir=tmp_path / "cache")
    finally:
        server.shutdown()
    total = sum(len(v) for v in FakeHub.files.values())
    assert calls[-1][:2] == (total, total)
    assert len(calls) > 5 and all(t == total for _, t, _ in calls)
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls)  # never goes backwards
    assert {who for _, _, who in calls} == {threading.get_ident()}  # the caller's thread (Streamlit needs it)
    assert card.config.distilled and hub.is_cached(ENTRY, tmp_path / "cache")
