"""What the app lists and loads: the embedded models, the curated hub models, local checkpoints.

    load_model()                      the embedded Fashion-MNIST ViT ("fmnist-vit")
    load_model("fmnist-cnn")          the embedded CNN
    load_model("deit-tiny")           a curated hub model (from the cache, else downloaded)
    load_model("models/my_vit.npz")   any checkpoint load_checkpoint reads
    list_models()                     all of the above, each with whether it loads without network

Every model comes back on `device()` in eval mode with its parameters frozen: nothing in the app
trains, and trace_with_grad() differentiates with respect to the input, not the weights.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vit_core import hub
from vit_core.weights import ROOT, WEIGHT_SUFFIXES, CheckpointError, load_checkpoint

ASSETS = ROOT / "assets" / "models"
MODELS_DIR = ROOT / "models"  # drop checkpoints here
ENV_DIR = "VIT_EXPLORER_MODELS"  # ... or in the folder this variable names
DEFAULT_MODEL = "fmnist-vit"
EMBEDDED = {"fmnist-vit": "ViT · Fashion-MNIST (embedded)", "fmnist-cnn": "CNN · Fashion-MNIST (embedded)"}
NOT_VIT = {"fmnist-cnn"}  # loadable by name, but not a model the six ViT steps can show


@dataclass(frozen=True)
class ModelEntry:
    id: str  # what load_model() takes: an embedded name, a hub id, or a path
    title: str
    kind: str  # "embedded", "hub" or "local"
    cached: bool  # loads now without network: embedded file present, hub model in the cache, local file
    size_mb: float | None = None  # hub: about how much a download is
    source: str = ""  # file path or hub URL


def keep_freed_memory() -> bool:
    """glibc only: keep freed blocks in the heap for reuse instead of handing them back to the kernel
    (M_MMAP_THRESHOLD 256 MB, M_TRIM_THRESHOLD 512 MB). The next call then finds warm pages instead
    of faulting in fresh zeroed ones for every tensor the trace keeps. The app calls it once per
    process: benchmarks/bench_trace.py measured B/16 trace / transformers 1.09 without, 0.99 with."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): the default allocator it is
        return False
    return bool(mallopt(-3, 256 << 20) and mallopt(-1, 512 << 20))


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name() -> str:
    return f"CUDA · {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU"


def embedded_path(name: str) -> Path:
    return ASSETS / f"{name}.safetensors"


def local_dirs() -> list[Path]:
    dirs = [MODELS_DIR]
    if os.environ.get(ENV_DIR):
        dirs.append(Path(os.environ[ENV_DIR]).expanduser())
    return list(dict.fromkeys(d.resolve() for d in dirs if d.is_dir()))  # each folder once


def local_checkpoints(folder: Path) -> list[Path]:
    """Weights files and checkpoint directories (with config.json) directly inside `folder`.
    Our own pairs (x.safetensors + x.json) count once, through the weights file."""
    found = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if (p.is_dir() and (p / "config.json").is_file()) or (p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)):
            found.append(p)
    return found


def list_models(cache_dir: str | Path | None = None) -> list[ModelEntry]:
    entries = [ModelEntry(name, title, "embedded", embedded_path(name).is_file(), source=str(embedded_path(name)))
               for name, title in EMBEDDED.items()]
    entries += [ModelEntry(e.id, e.title, "hub", hub.is_cached(e, cache_dir), e.size_mb, e.url) for e in hub.CATALOGUE]
    entries += [ModelEntry(str(p), p.name, "local", True, source=str(p))
                for folder in local_dirs() for p in local_checkpoints(folder)]
    return entries


def load_model(name_or_path: str | Path | None = None, *, progress=None, cache_dir: str | Path | None = None):
    """(model, card) on device(), in eval mode. `progress(done, total)` reports a hub download."""
    name = str(name_or_path or DEFAULT_MODEL)
    if name in EMBEDDED:
        if not embedded_path(name).is_file():
            raise CheckpointError("checkpoint.not_found", "checkpoint.detail.embedded", name=name,
                                  path=str(embedded_path(name)))
        model, card = load_checkpoint(embedded_path(name))
    elif (entry := _hub_entry(name)) is not None:
        model, card = hub.load(entry, progress=progress, cache_dir=cache_dir)
    elif Path(name).expanduser().exists():
        model, card = load_checkpoint(Path(name).expanduser())
    else:
        raise CheckpointError("zoo.unknown_model", "zoo.detail.unknown", name=repr(name), embedded=", ".join(EMBEDDED),
                              hub=", ".join(e.id for e in hub.CATALOGUE))
    model = model.to(device()).eval().requires_grad_(False)
    return model, card


def _hub_entry(name: str) -> hub.HubModel | None:
    try:
        return hub.get(name)
    except KeyError:
        return None
