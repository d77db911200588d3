"""Every Streamlit helper of the app: state, translations, cached loaders, the sidebar, shared renderers.

Pages read state through these functions, call vit_core, and render. Nothing here does maths.
Caches: the model once per process (cache_resource; never mutated after loading), the trace once
per (model id, sha256 of the image bytes) in a bounded cache_data shared by every session.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from vit_core import zoo
from vit_core.card import ModelCard
from vit_core.i18n import translate
from vit_core.images import ImageError, image_digest, load_image
from vit_core.model import ViTTrace

ROOT = Path(__file__).resolve().parent
SAMPLES = ROOT / "assets" / "samples"
zoo.keep_freed_memory()  # once per process: traces reuse warm heap pages (see zoo)
UPLOAD_MB = 20  # Streamlit's own cap on the widget; vit_core.images caps again before decoding
DEFAULTS = {
    "vx.lang": None,  # set from ?lang= or the browser's locale on first run
    # the model in use (a load that fails leaves it unchanged); a classroom server can set another default
    "vx.model": os.environ.get("VIT_EXPLORER_MODEL", zoo.DEFAULT_MODEL),
    "vx.image": None,  # {"data": bytes, "name": str, "digest": str}: the image in use
    "vx.patch": None,  # (row, col) of the selected patch, shared by every step; None: the centre
    "vx.layer": 0,
    "vx.head": 0,
    "vx.notice": None,  # (kind, message key, params): a message to show once in the sidebar
}


# ---------------------------------------------------------------- state and language

def init_state() -> None:
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    if st.session_state["vx.lang"] is None:
        asked = st.query_params.get("lang", "")
        locale = (st.context.locale or "") if hasattr(st, "context") else ""
        st.session_state["vx.lang"] = "zh" if (asked or locale).lower().startswith("zh") else "en"
    if st.session_state["vx.image"] is None:
        st.session_state["vx.image"] = _sample(default_sample())


def lang() -> str:
    return st.session_state.get("vx.lang") or "en"


def t(key: str, **params) -> str:
    return translate(key, lang(), **params)


def persist(key: str):
    """Keep a page widget's value when the user visits another page and comes back.

    Streamlit forgets the state of widgets that are not drawn; copying the value back into session
    state under the same key on every run keeps it.
    """
    if key in st.session_state:
        st.session_state[key] = st.session_state[key]
    return key


def notify(kind: str, key: str, **params) -> None:
    st.session_state["vx.notice"] = (kind, key, params)


def error_text(err: Exception) -> str:
    """A failure as one translated sentence: vit_core errors carry a message key and its params."""
    key = getattr(err, "key", None)
    if key:
        return t(key, **(getattr(err, "params", None) or {}))
    return t("app.error.unexpected", detail=f"{type(err).__name__}: {err}"[:300])


def show_error(err: Exception) -> None:
    st.error(error_text(err))


# ---------------------------------------------------------------- models

@st.cache_resource(show_spinner=False, max_entries=6)
def load_model(model_id: str):
    """(model, card), loaded once per process and shared by every session: never mutate it."""
    return zoo.load_model(model_id)


def current_model():
    return load_model(st.session_state["vx.model"])


def switch_model(model_id: str) -> bool:
    """Load `model_id` and make it current; on failure keep the previous model and say why."""
    try:
        with st.spinner(t("app.model.loading")):
            load_model(model_id)
    except Exception as err:  # noqa: BLE001 - every failure becomes a message, the old model stays
        show_error(err)
        return False
    st.session_state["vx.model"] = model_id
    return True


# ---------------------------------------------------------------- images

def sample_files() -> list[Path]:
    return sorted(p for p in SAMPLES.glob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})


def default_sample() -> Path:
    files = sample_files()
    return next((p for p in files if "ankle" in p.stem), files[0])


def sample_label(path: Path) -> str:
    return t(f"app.sample.{path.stem}")


def _sample(path: Path) -> dict:
    data = path.read_bytes()
    return {"data": data, "name": path.name, "digest": image_digest(data)}


def use_image(data: bytes, name: str) -> bool:
    """Make uploaded bytes the current image, or keep the previous one and say why."""
    try:
        load_image(data)
    except ImageError as err:
        notify("error", err.key, **err.params)
        return False
    st.session_state["vx.image"] = {"data": data, "name": name, "digest": image_digest(data)}
    st.session_state["vx.patch"] = None
    return True


@st.cache_data(show_spinner=False, max_entries=64)
def _decoded(digest: str, _data: bytes):
    return load_image(_data)


def current_image():
    img = st.session_state["vx.image"]
    return _decoded(img["digest"], img["data"])


# ---------------------------------------------------------------- the trace

@dataclass
class Live:
    """Everything a page needs about the current model and image."""

    model: torch.nn.Module
    card: ModelCard
    trace: ViTTrace
    image_name: str
    model_id: str  # with digest, what the pages' own caches are keyed by
    digest: str

    @property
    def display(self) -> np.ndarray:  # the input as the model sees it, (H, W, 3) in [0, 1]
        return self.card.preprocess.to_display(self.trace.pixels)

    def class_names(self) -> list[str]:
        return self.card.names(lang())


@st.cache_data(show_spinner=False, max_entries=32)
def _trace(model_id: str, digest: str, _data: bytes) -> ViTTrace:
    model, card = load_model(model_id)
    pixels = card.preprocess(_decoded(digest, _data))
    return model.trace(pixels).to("cpu")


def live() -> Live:
    model, card = current_model()
    img = st.session_state["vx.image"]
    tr = _trace(st.session_state["vx.model"], img["digest"], img["data"])
    return Live(model=model, card=card, trace=tr, image_name=img["name"], model_id=st.session_state["vx.model"],
                digest=img["digest"])


def patch_index(tr: ViTTrace) -> tuple[int, int]:
    """The selected patch, clamped to the current grid (another model may have a smaller one)."""
    h, w = tr.grid
    r, c = st.session_state["vx.patch"] or (h // 2, w // 2)
    return min(r, h - 1), min(c, w - 1)


# ---------------------------------------------------------------- shared renderers

def _through_app() -> None:
    """Rerun a page that Streamlit started without app.py.

    Streamlit 1.67 treats a `pages/` folder beside the entry script the old (v1) way until the first
    st.navigation call of the process (and AppTest resets that at every run): a deep link (…/encoder)
    opened first after a server start runs the page alone, without the sidebar or state. Turning v1
    mode off and rerunning goes through app.py, whose st.navigation then opens the page asked for.
    app.py marks each run it makes ("vx.via_app"); page_header consumes the mark.
    """
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False
    st.rerun()


def page_header(step: str) -> None:
    """Every page starts here: the title and two or three sentences of what this step is and why."""
    if not st.session_state.pop("vx.via_app", False):
        _through_app()
    st.title(t(f"{step}.title"))
    st.markdown(t(f"{step}.why"))


def show_tensor(label: str, tensor: torch.Tensor, *, max_rows: int = 64, max_cols: int = 64) -> None:
    """The raw numbers of a tensor in an expander, with its shape (large tensors are cut, and say so)."""
    x = tensor.detach().float().cpu()
    with st.expander(t("app.tensor.show", name=label, shape=" × ".join(map(str, x.shape)))):
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x[None]
        cut = x2[:max_rows, :max_cols]
        if cut.shape != x2.shape:
            st.caption(t("app.tensor.cut", rows=cut.shape[0], cols=cut.shape[1], total=x.numel()))
        st.dataframe(cut.numpy(), width="stretch", height=min(400, 38 + 35 * cut.shape[0]))


def patch_picker(tr: ViTTrace) -> tuple[int, int]:
    """Row / column inputs for the selected patch: keyboard operable, shared across pages.

    "vx.patch" is the one source of truth: the inputs are set from it before they are drawn, and write
    back to it in their callbacks (as a click on a chart does), so typing, clicking and switching pages
    or models (a smaller grid clamps it) all agree.
    """
    h, w = tr.grid
    st.session_state["vx.pick.row"], st.session_state["vx.pick.col"] = patch_index(tr)
    cols = st.columns(2)
    cols[0].number_input(t("app.patch.row", h=h - 1), 0, h - 1, key="vx.pick.row", on_change=_typed_patch)
    cols[1].number_input(t("app.patch.col", w=w - 1), 0, w - 1, key="vx.pick.col", on_change=_typed_patch)
    return patch_index(tr)


def _typed_patch():
    st.session_state["vx.patch"] = (int(st.session_state["vx.pick.row"]), int(st.session_state["vx.pick.col"]))


def clickable_chart(fig, *, key: str, grid: tuple[int, int]) -> None:
    """Draw a figure whose patch-centre markers select a patch when clicked."""

    def on_click():  # a callback runs before the next script run, so it may set the inputs' values
        points = st.session_state[key]["selection"]["points"]
        cd = points[0].get("customdata") if points else None
        if isinstance(cd, dict):  # the browser sends a list as {"0": r, "1": c}
            cd = [cd[k] for k in sorted(cd, key=int)]
        if cd is not None and len(cd) >= 2 and 0 <= int(cd[0]) < grid[0] and 0 <= int(cd[1]) < grid[1]:
            st.session_state["vx.patch"] = (int(cd[0]), int(cd[1]))

    st.plotly_chart(fig, key=key, on_select=on_click, selection_mode="points", config={"displayModeBar": False})


def layer_head_picker(depth: int, heads: int, *, key: str = "lh", with_head: bool = True) -> tuple[int, int]:
    cols = st.columns(2 if with_head else 1)
    layer = cols[0].slider(t("app.layer"), 1, depth, min(st.session_state["vx.layer"] + 1, depth), key=f"vx.{key}.layer") - 1
    st.session_state["vx.layer"] = layer
    head = 0
    if with_head:
        head = cols[1].slider(t("app.head"), 1, heads, min(st.session_state["vx.head"] + 1, heads), key=f"vx.{key}.head") - 1
        st.session_state["vx.head"] = head
    return layer, head


def plot(fig, **kwargs) -> None:
    st.plotly_chart(fig, config={"displayModeBar": False}, **kwargs)


# --- steps 4-6 pages (CLS token, encoder, classify)

def page(step: str, *, vit_only: bool = False) -> Live:
    """A live page's opening: its header, (for token-level steps) the ViT check, then the live tensors."""
    page_header(step)
    if vit_only:
        require_vit(step)
    return live()


def require_vit(step: str) -> None:
    """These steps read a ViT's tokens: with another kind of model selected, say so and stop the page."""
    if current_model()[1].arch != "vit":
        st.info(t(f"{step}.not_vit"))
        st.stop()


def token_labels(tr: ViTTrace) -> list[str]:
    """A name for every token in model order: CLS (and DeiT's distillation token), then the patches."""
    w = tr.grid[1]
    prefix = [t("step4.token.cls"), t("step4.token.dist")][:tr.num_prefix_tokens]
    return prefix + [t("step4.token.patch", i=i, r=i // w, c=i % w) for i in range(tr.grid[0] * w)]


# --- experiment pages

def setting(key: str, default, valid=lambda v: True) -> str:
    """A page widget's key: its value survives page switches and falls back to `default` when the model or
    image makes it meaningless (draw the widget without value=, so session state is the one source)."""
    persist(key)
    if key not in st.session_state or not valid(st.session_state[key]):
        st.session_state[key] = default
    return key


@st.cache_resource(show_spinner=False)
def fashion_mnist() -> dict:
    """{"train": (images, labels), "test": (...)}: Fashion-MNIST read once per process and shared read-only.
    Raises vit_core.data.DatasetMissingError when the Debian package is not installed."""
    from vit_core.data import load_fashion_mnist

    return {split: load_fashion_mnist(split) for split in ("train", "test")}
