"""Curated ImageNet ViTs from the Hugging Face hub: download once with real progress, then offline.

    entry = hub.get("deit-tiny")
    hub.is_cached(entry)                               # no network
    model, card = hub.load(entry, progress=lambda done, total: ...)

Without network the answer comes within a second: HF_HUB_OFFLINE is honoured, and otherwise a
short probe of the endpoint (HF_ENDPOINT and proxies respected) runs before huggingface_hub is
handed the work, because its own retries take about 25 s to give up. A cached model never touches
the network.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from vit_core.card import ModelCard
from vit_core.i18n import TranslatableError
from vit_core.weights import load_checkpoint

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 0.8  # a TCP connect to the hub takes ~0.1 s; past this we call it offline
HTTP_TIMEOUT_S = 3.0  # once something answers, time for one HEAD request (TLS included)


@dataclass(frozen=True)
class HubModel:
    id: str  # what the app and load_model() call it
    repo: str  # owner/name on the hub
    title: str
    size_mb: int  # about how much is downloaded
    files: tuple[str, ...] = ("config.json", "preprocessor_config.json")  # fetched when the repo has them
    weights: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")  # the first one the repo has
    revision: str = "main"

    @property
    def url(self) -> str:
        return f"{DEFAULT_ENDPOINT}/{self.repo}"


CATALOGUE = (
    HubModel("deit-tiny", "facebook/deit-tiny-patch16-224", "DeiT-Ti/16 · ImageNet-1k", 23),
    HubModel("deit-small", "facebook/deit-small-patch16-224", "DeiT-S/16 · ImageNet-1k", 88),
    HubModel("deit-tiny-distilled", "facebook/deit-tiny-distilled-patch16-224",
             "DeiT-Ti/16 distilled · ImageNet-1k", 23),
    HubModel("vit-base", "google/vit-base-patch16-224", "ViT-B/16 · ImageNet-21k → 1k", 346),
    HubModel("vit-tiny-augreg", "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
             "ViT-Ti/16 AugReg · ImageNet-21k → 1k", 23, files=("config.json",)),
)  # the app shows each title in the reader's language: app.model.title.<id> in assets/i18n/app.json


class HubError(TranslatableError):
    """A download that did not happen: `key` and `detail` are message ids the UI translates, `blanks`
    fill them (the endpoint is always one)."""

    def __init__(self, key: str, detail: str, params: dict | None = None, **blanks):
        super().__init__(key, detail, {"endpoint": endpoint()} | (params or {}) | blanks)


class HubOfflineError(HubError):
    def __init__(self, detail: str, params: dict | None = None, **blanks):
        super().__init__("hub.offline", detail, params, **blanks)


def get(name: str) -> HubModel:
    """A catalogue entry by id ("deit-tiny") or repo ("facebook/deit-tiny-patch16-224")."""
    for entry in CATALOGUE:
        if name in (entry.id, entry.repo):
            return entry
    raise KeyError(f"{name!r} is not in the hub catalogue: {', '.join(e.id for e in CATALOGUE)}")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def cache_root(path: str | Path | None = None) -> Path:
    """The usual huggingface_hub cache (HF_HUB_CACHE, HF_HOME), read at call time, unless given."""
    if path is not None:
        return Path(path)
    from huggingface_hub import constants
    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


def offline_mode() -> bool:
    from huggingface_hub import constants
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().lower() in ("1", "true", "yes", "on") or constants.is_offline_mode()


def _within(seconds: float, fn, silence: str):
    """fn() in a daemon thread, given at most `seconds`: DNS lookups ignore socket timeouts. `silence` is
    the detail key of the error when no answer comes."""
    box: list = []

    def run():
        try:
            box.append((True, fn()))
        except Exception as e:  # noqa: BLE001 - reported as the reason below
            box.append((False, e))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if not box:
        raise HubOfflineError(silence, seconds=seconds)
    ok, value = box[0]
    if not ok:
        raise HubOfflineError("hub.detail.unreachable", reason=str(value) or type(value).__name__)
    return value


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 302 to the CDN is answer enough


def _head(url: str, timeout: float):
    try:
        with urllib.request.build_opener(_NoRedirect).open(urllib.request.Request(url, method="HEAD"),
                                                            timeout=timeout) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def check_online(repo: str = CATALOGUE[0].repo, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise HubOfflineError unless the hub answers, quickly.

    Two steps: a TCP connect to the endpoint (or to the HTTP proxy the environment names) within
    `timeout`, which is how a machine without network fails; then one HEAD request for a file of
    `repo`, which must carry the hub's X-Repo-Commit header, so that a captive portal or a proxy's
    error page is not taken for the hub."""
    if offline_mode():
        raise HubOfflineError("hub.detail.offline_mode")
    url = urlparse(endpoint())
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlparse(proxy if "://" in proxy else "http://" + proxy)
        host, port = p.hostname or "", p.port or 80
    _within(timeout, lambda: socket.create_connection((host, port), timeout=timeout).close(),
            "hub.detail.no_connection")
    status, headers = _within(HTTP_TIMEOUT_S, lambda: _head(f"{endpoint()}/{repo}/resolve/main/config.json",
                                                            HTTP_TIMEOUT_S), "hub.detail.no_answer")
    if status >= 500 or headers.get("X-Repo-Commit") is None:
        raise HubOfflineError("hub.detail.not_hub", status=status)


def cached_path(entry: HubModel, cache_dir: str | Path | None = None) -> Path | None:
    """The snapshot directory when the config and a weights file are cached, else None. No network."""
    found = {name: path for name in ("config.json", *entry.weights) if (path := _cached_file(entry, name, cache_dir))}
    if "config.json" in found and any(w in found for w in entry.weights):
        return found["config.json"].parent
    return None


def is_cached(entry: HubModel, cache_dir: str | Path | None = None) -> bool:
    return cached_path(entry, cache_dir) is not None


def _progress_bar(callback, total: int, done: int):
    """A class huggingface_hub accepts as `tqdm_class`: it builds one per file and calls update(n) with
    every chunk written to disk (plain HTTP and Xet alike). All files add up to one (done, total)."""
    state = {"done": done}
    lock = threading.Lock()

    class FileProgress:
        def __init__(self, *args, initial=0, **kwargs):
            self.total = kwargs.get("total")
            self.update(initial or 0)  # bytes of a resumed download already on disk

        def update(self, n=1):
            with lock:
                state["done"] += n or 0
                now = state["done"]
            if callback and n:
                callback(min(now, total), total)

        def ignore(self, *args, **kwargs):
            return None

        # Network bytes (Xet) go to update_transfer: update() already counts the bytes of the file.
        update_transfer = set_postfix_str = set_transfer_postfix_str = set_description = refresh = close = ignore

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    return FileProgress


def _cached_file(entry: HubModel, name: str, cache_dir: str | Path | None) -> Path | None:
    """The cached copy of one file of the entry's revision, or None. No network."""
    from huggingface_hub import try_to_load_from_cache
    path = try_to_load_from_cache(entry.repo, name, cache_dir=cache_root(cache_dir), revision=entry.revision)
    return Path(path) if isinstance(path, str) else None


def download(entry: HubModel | str, progress=None, cache_dir: str | Path | None = None) -> Path:
    """Fetch the entry's files into the HF cache and return the snapshot directory.

    `progress(done_bytes, total_bytes)` is called as bytes reach the disk, always from the calling
    thread (Xet reports from its own threads; a Streamlit progress bar may only be touched from the
    script's thread). The total is known before the first byte, from one paths-info request."""
    entry = get(entry) if isinstance(entry, str) else entry
    check_online(entry.repo)
    from huggingface_hub import HfApi, hf_hub_download
    cache = cache_root(cache_dir)
    try:
        infos = HfApi(endpoint=endpoint()).get_paths_info(entry.repo, [*entry.files, *entry.weights],
                                                          revision=entry.revision)
    except Exception as e:  # noqa: BLE001 - one clear message for the app
        raise HubError("hub.download_failed", "hub.detail.listing", repo=entry.repo, reason=str(e)) from e
    sizes = {i.path: i.size for i in infos}
    weights = next((w for w in entry.weights if w in sizes), None)
    if weights is None:
        raise HubError("hub.no_weights", "hub.detail.no_weights", repo=entry.repo, files=", ".join(entry.weights))
    files = [f for f in entry.files if f in sizes] + [weights]
    total = sum(sizes[f] for f in files)
    done = sum(sizes[f] for f in files if _cached_file(entry, f, cache))
    events: queue.Queue = queue.Queue()
    bar = _progress_bar(lambda d, t: events.put(("progress", (d, t))), total, done)

    def work():
        try:
            events.put(("done", [hf_hub_download(entry.repo, f, revision=entry.revision, cache_dir=cache,
                                                 endpoint=endpoint(), tqdm_class=bar) for f in files]))
        except Exception as e:  # noqa: BLE001 - handed to the calling thread
            events.put(("error", e))

    threading.Thread(target=work, daemon=True).start()
    while True:
        kind, value = events.get()
        if kind == "progress" and progress:
            progress(*value)
        elif kind == "error":
            raise HubError("hub.download_failed", "hub.detail.download", repo=entry.repo, reason=str(value)) from value
        elif kind == "done":
            break
    if progress:
        progress(total, total)
    return Path(value[-1]).parent


def load(entry: HubModel | str, progress=None, cache_dir: str | Path | None = None) -> tuple[object, ModelCard]:
    """(model, card) for a catalogue entry: from the cache with no network, else downloaded first."""
    entry = get(entry) if isinstance(entry, str) else entry
    path = cached_path(entry, cache_dir) or download(entry, progress=progress, cache_dir=cache_dir)
    model, card = load_checkpoint(path)
    extra = {**card.extra, "path": str(path)}
    return model, replace(card, name=entry.id, title=entry.title, source=entry.url, extra=extra)
