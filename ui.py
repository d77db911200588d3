"""Every Streamlit helper of the app: state, translations, cached loaders, the sidebar, shared renderers.

Pages read state through these functions, call vit_core, and render. Nothing here does maths.
Caches: the model once per process (cache_resource; never mutated after loading), the decoded image
and the trace once per (model id, sha256 of the image bytes), shared by every session without a copy.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import os
import pkgutil
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

from vit_core import analysis, claims, classroom, experiments, hub, viz, zoo
from vit_core.card import ModelCard
from vit_core.cnn import layer_specs
from vit_core.i18n import explain, translate
from vit_core.images import ImageError, image_digest, load_image
from vit_core.trace import TraceCache, ViTTrace
from vit_core.viz import rollout as vr, shared
from vit_core.weights import GENERIC_CLASS

import vit_core  # noqa: E402 - for its package path (the warm-up below)

# Every module a page, vit_core or Streamlit imports lazily, imported here once. app.py imports ui first,
# and Python lets one thread at a time import a module, so the script threads of sessions that open in
# the same second wait here for one finished import instead of racing into half-built modules
# ("partially initialized module 'pandas'").
WARM_IMPORTS = ["pandas", "pyarrow", "plotly.graph_objects", "plotly.subplots", "plotly.io", "PIL.Image",
                "huggingface_hub", "safetensors.torch", "streamlit.dataframe_util",
                *(m.name for m in pkgutil.walk_packages(vit_core.__path__, "vit_core."))]
for _module in WARM_IMPORTS:
    importlib.import_module(_module)

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


def join(*sentences: str) -> str:
    """Sentences as one text: Chinese puts no space between them, English one."""
    return ("" if lang() == "zh" else " ").join(s for s in sentences if s)


def persist(key: str):
    """Keep a page widget's value when the user visits another page and comes back.

    Streamlit forgets the state of widgets that are not drawn; copying the value back into session
    state under the same key on every run keeps it.
    """
    if key in st.session_state:
        st.session_state[key] = st.session_state[key]
    return key


def setting(key: str, default, valid=lambda v: True) -> str:
    """A page widget's key: its value survives page switches and falls back to `default` when the model
    or image makes it meaningless (draw the widget without value=: state is the one source)."""
    persist(key)
    if key not in st.session_state or not valid(st.session_state[key]):
        st.session_state[key] = default
    return key


def choice(widget, label: str, options, labels: dict, *, key: str, default=None, on_change=None, **kwargs):
    """A choice among stable ids (file names, model ids, setting names) shown with translated labels.

    The browser sends a choice widget's *label* back, not its option, so after a language switch its
    next message carries the old language's label. Here the value is an id kept under `key` (plain
    state, never a widget key); the widget itself is keyed by the language as well, so a switch draws a
    fresh widget that starts from the id while the old one, no longer drawn, is dropped with its stale
    label. A value that is not one of `options` is ignored and the current choice kept. `on_change(id)`
    runs when the user picks another option. `widget` is st.selectbox, st.radio, ... or a column's.
    """
    options = list(options)
    value = st.session_state.get(key, default)
    if value not in options and not (value is None and default is None):  # None: "no choice", where allowed
        value = default
    st.session_state[key] = value
    shown = f"{key}@{lang()}"
    st.session_state[shown] = st.session_state[key]

    def picked():
        value = st.session_state.get(shown)
        if value in options and value != st.session_state[key]:
            st.session_state[key] = value
            if on_change:
                on_change(value)

    widget(label, options, format_func=lambda o: labels.get(o, str(o)), key=shown, on_change=picked, **kwargs)
    return st.session_state[key]


def choices(widget, label: str, options, labels: dict, *, key: str, default: list, **kwargs) -> list:
    """ui.choice for a multiselect: a list of stable ids kept under `key`, the widget keyed by the language."""
    options = list(options)
    value = st.session_state.get(key)
    if not isinstance(value, list) or not all(v in options for v in value):
        st.session_state[key] = list(default)
    shown = f"{key}@{lang()}"
    st.session_state[shown] = st.session_state[key]

    def picked():
        st.session_state[key] = [v for v in st.session_state.get(shown) or [] if v in options]

    widget(label, options, format_func=lambda o: labels.get(o, str(o)), key=shown, on_change=picked, **kwargs)
    return st.session_state[key]


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=])")


def literal(text: str) -> str:
    """A reader's own text (a file or class name) to put inside a translated Markdown sentence: every
    Markdown character escaped, so it shows as typed and never as formatting, a link or HTML."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def notify(kind: str, key: str, **params) -> None:
    st.session_state["vx.notice"] = (kind, key, params)


def error_text(err: Exception) -> str:
    """A failure as one translated sentence: vit_core errors carry message keys (details too) and params."""
    text = explain(err, lang())
    return text if text is not None else t("app.error.unexpected", detail=f"{type(err).__name__}: {err}"[:300])


def show_error(err: Exception) -> None:
    st.error(error_text(err))


# ---------------------------------------------------------------- models

MODEL_LIST_TTL_S = 30  # a checkpoint copied into a models folder shows up within this time


@st.cache_data(show_spinner=False, ttl=MODEL_LIST_TTL_S)
def _listed(folders: tuple[str, ...], hub_cache: str) -> list[zoo.ModelEntry]:
    return zoo.list_models()  # hub cache probes and folder scans: once per TTL, not per rerun


def _models() -> list[zoo.ModelEntry]:
    """The listing for the folders configured now (another VIT_EXPLORER_MODELS or HF cache is another key)."""
    return _listed(tuple(map(str, zoo.local_dirs())), str(hub.cache_root()))


def vit_models() -> dict[str, zoo.ModelEntry]:
    """The models the sidebar offers, by id (the CNN has its own page), with the one in use always listed."""
    entries = {e.id: e for e in _models() if e.id not in zoo.NOT_VIT}
    active = st.session_state["vx.model"]
    if active not in entries:  # a checkpoint named by path (VIT_EXPLORER_MODEL) outside the listed folders
        entries[active] = zoo.ModelEntry(active, Path(active).name, "local", True, source=active)
    return entries


def download(model_id: str, progress) -> None:
    """Fetch a hub model into the cache (raises HubError); the model list shows it cached at once."""
    hub.download(model_id, progress=progress)
    _listed.clear()


def device_name() -> str:
    return zoo.device_name()


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


def image_label() -> str:
    """The current image as the reader should see it named: a sample by its translated title, an upload by
    its file name."""
    img = st.session_state["vx.image"]
    return sample_label(SAMPLES / img["name"]) if img.get("sample") else img["name"]


def _sample(path: Path) -> dict:
    data = path.read_bytes()
    return {"data": data, "name": path.name, "digest": image_digest(data), "sample": True}


def use_image(data: bytes, name: str, sample: bool = False) -> bool:
    """Make uploaded bytes (or a sample's, `sample`) the current image, or keep the previous one and say why."""
    digest = image_digest(data)
    try:
        _decoded(digest, data)  # decoded once: the trace reads the same cached image
    except ImageError as err:
        notify("error", err.key, **err.params)
        return False
    st.session_state["vx.image"] = {"data": data, "name": name, "digest": digest, "sample": sample}
    st.session_state["vx.patch"] = None
    return True


IMAGE_TYPES = ["png", "jpg", "jpeg", "gif", "webp", "bmp", "tif", "tiff"]  # what the uploaders offer


def pictures(files) -> tuple[list[tuple[str, object]], list[tuple[str, ImageError]]]:
    """Uploaded files (st.file_uploader / st.camera_input; None is skipped) decoded safely: ([(digest, PIL
    picture)], [(file name, ImageError)] for each file that is not a usable picture). Never raises for bad bytes."""
    good, bad = [], []
    for f in (f for f in files if f is not None):
        data = f.getvalue()
        digest = image_digest(data)
        try:
            good.append((digest, _decoded(digest, data)))
        except ImageError as err:
            bad.append((f.name, err))
    return good, bad


def with_progress(text: str, work):
    """Run work(progress) under a progress bar that is gone when it ends (also when a cache replays it)."""
    bar = st.progress(0.0, text=text)
    try:
        return work(lambda f: bar.progress(min(1.0, f), text=text))
    finally:
        bar.empty()


@st.cache_resource(show_spinner=False, max_entries=64)
def _decoded(digest: str, _data: bytes):
    """The decoded image (PIL), shared: callers never change it (preprocess returns a new tensor)."""
    return load_image(_data)


@st.cache_data(show_spinner=False, max_entries=256)
def _thumbnail(digest: str, _data: bytes, side: int) -> bytes:
    image = _decoded(digest, _data).copy()
    image.thumbnail((side, side))  # a 12-megapixel photo is not re-encoded at full size on every rerun
    out = io.BytesIO()
    image.save(out, "PNG" if max(image.size) <= 64 else "JPEG", quality=90)
    return out.getvalue()


def current_thumbnail(side: int = 512) -> bytes:
    """The current image, encoded once at most `side` pixels a side, for the sidebar."""
    img = st.session_state["vx.image"]
    return _thumbnail(img["digest"], img["data"], side)


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
        """The classes in the current language; a checkpoint's numbered stand-ins ("class 3") translated."""
        return [t("app.class_number", i=i) if name == GENERIC_CLASS.format(i) else name
                for i, name in enumerate(self.card.names(lang()))]


TRACE_CACHE_MB = int(os.environ.get("VIT_EXPLORER_TRACE_CACHE_MB", "1024"))


@st.cache_resource(show_spinner=False)
def traces() -> TraceCache:
    """Every session's traces, one per (model id, image digest), shared without a copy (a trace's
    tensors cannot be changed in place: see vit_core.trace) and bounded by bytes, not entries: a
    ViT-B/16 trace at 224 holds about 100 MB, the embedded model's under 1 MB."""
    return TraceCache(TRACE_CACHE_MB << 20)


def _trace(model_id: str, digest: str, data: bytes) -> ViTTrace:
    def compute():
        model, card = load_model(model_id)
        return model.trace(card.preprocess(_decoded(digest, data))).to("cpu")

    return traces().get((model_id, digest), compute)


def live() -> Live:
    model, card = current_model()
    img = st.session_state["vx.image"]
    tr = _trace(st.session_state["vx.model"], img["digest"], img["data"])
    return Live(model=model, card=card, trace=tr, image_name=img["name"], model_id=st.session_state["vx.model"],
                digest=img["digest"])


@st.cache_resource(show_spinner=False, max_entries=16)
def _gradients(model_id: str, digest: str, class_index: int, _pixels: torch.Tensor) -> list[torch.Tensor]:
    model, _ = load_model(model_id)
    _, grads = analysis.attention_gradients(model, _pixels, class_index)  # the shared model is not touched
    return [g.cpu() for g in grads]


def attention_gradients(lv: Live, class_index: int) -> list[torch.Tensor]:
    """d logit[class] / d attention of every layer for the current trace, once per (model, image, class) and
    shared like the trace (never changed by a caller). Needs autograd: call it outside inference_mode."""
    return _gradients(lv.model_id, lv.digest, class_index, lv.trace.pixels)


@st.cache_data(show_spinner=False, max_entries=16)
def _comparison(model_id: str, digest: str, class_index: int, settings: tuple, steps: int, orders: int,
                _trace: ViTTrace) -> experiments.MapComparison:
    return experiments.compare_maps(load_model(model_id)[0], _trace, class_index, steps=steps, random_orders=orders,
                                    **dict(settings))


def map_comparison(lv: Live, class_index: int, *, steps: int, orders: int, **settings) -> experiments.MapComparison:
    """experiments.compare_maps for the current trace, kept per (model, image, class, settings, steps, orders)."""
    return _comparison(lv.model_id, lv.digest, class_index, tuple(settings.items()), steps, orders, lv.trace)


@st.cache_data(show_spinner=False, max_entries=32)
def _windowed(model_id: str, digest: str, window: int, shift: bool, _pixels: torch.Tensor) -> torch.Tensor:
    return experiments.windowed_probs(load_model(model_id)[0], _pixels, window, shift)[0]


def windowed_probs(lv: Live, window: int, shift: bool) -> torch.Tensor:
    """experiments.windowed_probs (classes,) for the current image, kept per (model, image, window, shift)."""
    return _windowed(lv.model_id, lv.digest, window, shift, lv.trace.pixels)


# --- step 5's windows what-if and residual stream, drawn from their vit_core results


def window_controls(grid: tuple[int, int]) -> tuple[int, bool]:
    """The what-if's heading and explanation, then the window size (1 to the grid's longer side; its default
    and its address key follow the grid) and whether the windows shift, side by side."""
    st.subheader(t("step5.windows.title"))
    st.markdown(t("step5.windows.body"))
    h, w = grid
    size, shift = st.columns(2)
    window = size.slider(t("step5.windows.size"), 1, max(h, w),
                         key=setting(f"step5.windows.size.{h}x{w}", max(2, min(h, w) // 2)))
    shifted = shift.toggle(t("step5.windows.shift"), key=setting("step5.windows.shift", False),
                           help=t("step5.windows.shift_help"))
    return window, shifted


def window_panel(lv: Live, ww: experiments.WindowWhatIf) -> None:
    """The query's attention with the windows on it, what they cost and cut, the windowed model's answer
    beside the model's own, and the share they cut layer by layer."""
    (r, c), head, stats = ww.patch, ww.head + 1, ww.stats
    left, right = st.columns([3, 2])
    with left:
        clickable_chart(shared.experiments.window_figure(
            lv.display, ww.attention, lv.trace.patch_size, stats.window, ww.offset, ww.patch,
            colorbar_title=t("step5.attention"), hover=t("step5.windows.hover"),
            title=t("step5.windows.fig.window", r=r, c=c, l=ww.layer + 1, h=head)), key="step5.windows.fig",
            grid=lv.trace.grid)
    with right:
        st.metric(t("step5.windows.metric.lost"), f"{ww.lost:.1%}")
        st.metric(t("step5.windows.metric.windows"), f"{stats.windows}")
        note_metric(t("step5.windows.metric.pairs"), f"{stats.allowed_pairs:,}", t(
            "step5.windows.of_pairs", total=f"{stats.total_pairs:,}", ratio=f"{stats.cost_ratio:.1%}"))
        names = lv.class_names()
        for key, (k, prob) in (("own", ww.own), ("windowed", ww.windowed)):
            note_metric(t(f"step5.windows.whatif.{key}"), names[k], f"{prob:.1%}")
    shares = {t("step5.windows.series.outside"): ww.outside, t("step5.windows.series.head", h=head): ww.outside_head,
              t("step5.windows.series.prefix"): ww.prefix}
    plot(shared.experiments.layer_lines(shares, x_title=t("step5.axis.layer"), y_title=t("step5.windows.share"),
                                title=t("step5.windows.fig.layers", w=stats.window)), key="step5.windows.layers")
    st.caption(t("step5.windows.layers.caption"))
    st.info(t("step5.windows.whatif.caption"))


def residual_panel(rs: analysis.ResidualStream) -> None:
    """How long the tokens are after each layer, beside how much each sub-layer adds to them (dotted: patches)."""
    axes = dict(x_title=t("step5.axis.layer"), y_title=t("step5.axis.norm"))
    added = {t("step5.series.attention.cls"): rs.attention_cls, t("step5.series.attention.patch"): rs.attention_patches,
             t("step5.series.mlp.cls"): rs.mlp_cls, t("step5.series.mlp.patch"): rs.mlp_patches}
    left, right = st.columns(2)
    with left:
        plot(shared.common.lines(range(len(rs.cls)), {t("step5.series.cls"): rs.cls, t("step5.series.patch"): rs.patches},
                               title=t("step5.fig.norms"), height=340, **axes), key="step5.norms")
    with right:
        plot(shared.common.lines(range(1, len(rs.mlp_cls) + 1), added, title=t("step5.fig.added"), height=380,
                               dash={name: "dot" if i % 2 else "solid" for i, name in enumerate(added)},
                               legend_y=-0.3, **axes), key="step5.added")


def costly(state: str, check, *, cheap: bool) -> bool:
    """Whether work described by `check` may run now: it is `cheap`, its ask_button(state=state) was just
    pressed, or it already ran for this same `check` in this session (it stays shown until `check` changes)."""
    s = st.session_state
    if cheap or s.pop(f"{state}.pending", False) or s.get(state) == check:
        s[state] = check
        return True
    return False


def ask_button(label: str, *, key: str, state: str) -> None:
    """The button that lets costly work run. The click only leaves a note: a callback runs before any rerun,
    so the click survives page_header's rerun of a page that started without app.py; ui.costly reads it."""
    st.button(label, type="primary", key=key, on_click=lambda: st.session_state.update({f"{state}.pending": True}))


def faithfulness_curves(curves: dict, *, names: tuple[str, str], y_title: str, key: str) -> None:
    """Deletion and insertion side by side (experiments.MapComparison.curves: a map against random), each
    with its AUC and the difference from random's."""
    for col, kind in zip(st.columns(2), ("deletion", "insertion")):
        auc, rand = curves[f"{kind}_auc"], curves[f"random_{kind}_auc"]
        with col:
            plot(vr.curve_figure(curves["fractions"], curves[kind], curves[f"random_{kind}"], names=names,
                                 title=t(f"rollout.faith.{kind}"), x_title=t("rollout.faith.x"), y_title=y_title,
                                 height=380), key=f"{key}.{kind}")
            st.metric(t(f"rollout.faith.{kind}_auc"), f"{auc:.3f}", delta=f"{auc - rand:+.3f}",
                      delta_color="inverse" if kind == "deletion" else "normal",
                      help=t("rollout.faith.auc_help", random=rand))


def map_exports(lv: Live, values, meta: dict, curves: dict | None, *, suffix: str, key: str) -> None:
    """Download buttons for a per-patch map: overlay PNG, CSV, JSON (with `curves` when given) and the curves."""
    stem = (re.sub(r"[^\w-]+", "_", Path(lv.image_name).stem).strip("_")[:40] or "image") + f"_{suffix}"
    png = vr.png_bytes(vr.overlay_image(lv.display, np.clip(np.asarray(values), 0, None), lv.trace.patch_size))
    files = [("png", png, ".png", "image/png"), ("csv", vr.map_csv(values, meta), ".csv", "text/csv"),
             ("json", vr.export_json(values, meta, curves), ".json", "application/json")]
    if curves is not None:
        files.append(("curves", vr.curves_csv(curves), "_curves.csv", "text/csv"))
    for col, (kind, data, ending, mime) in zip(st.columns(4), files):
        col.download_button(t(f"{key}.export.{kind}"), data, file_name=stem + ending, mime=mime, on_click="ignore",
                            key=f"{key}.{kind}")


# --- the attention rollout lab

def map_plot(lv: Live, values, *, colorbar: str, title: str, key: str) -> None:
    """A per-patch map over the picture, coloured from 0 to its maximum, at the lab's size (figure shared)."""

    plot(shared.rollout.map_overlay(lv.display, values, lv.trace.patch_size, colorbar_title=colorbar, title=title,
                                    height=440), key=key)


def faith_budget(patches: int) -> tuple[int, int]:
    """(steps per curve, random orders) of the faithfulness check, from its sliders' state: the sliders sit
    below the maps that need the numbers. Steps default to one per patch up to 49 (8 on a grid over 64)."""
    most = min(patches, 49)
    steps = st.session_state[setting(f"rollout.steps.{patches}", most if patches <= 64 else 8,
                                     valid=lambda v: 2 <= v <= most)]
    return steps, st.session_state[setting("rollout.orders", 1)]


def checked_comparison(lv: Live, class_index: int, settings: analysis.RolloutSettings, *, steps: int, orders: int,
                       passes: int) -> experiments.MapComparison | None:
    """map_comparison when it may run now (ui.costly: cheap, asked for, or already shown for these same
    inputs), else None; an error (out of memory on a big model) is shown, and the maps stay usable."""
    check = (lv.model_id, lv.digest, class_index, settings, steps, orders)
    if not costly("rollout.faith", check, cheap=experiments.is_cheap(lv.model, lv.trace.shapes.T, passes)):
        return None
    try:
        with st.spinner(t("rollout.faith.spinner", passes=passes)):
            return map_comparison(lv, class_index, steps=steps, orders=orders, **settings.kwargs())
    except Exception as err:  # noqa: BLE001 - shown; the page goes on without the check
        show_error(err)
        return None


def rollout_numbers(roll: analysis.RolloutMap) -> None:
    """A rollout map's own numbers: where the CLS row's weight went, its largest cells, the whole map."""
    m = st.columns(3)  # how much of each token ended up in CLS
    m[0].metric(t("rollout.live.sum"), f"{roll.total:.4f}", help=t("rollout.live.sum_help"))
    m[1].metric(t("rollout.live.patches"), f"{roll.patches:.4f}", help=t("rollout.live.patches_help"))
    m[2].metric(t("rollout.live.layers"), str(roll.layers))
    table(dict(zip([t("rollout.live.row"), t("rollout.live.col"), t("rollout.live.value")], zip(*roll.top))),
          {t("rollout.live.value"): "%.4f"})
    st.caption(t("rollout.live.top_caption"))
    show_tensor(t("rollout.live.tensor"), roll.values)


def auc_table(auc: experiments.AucTable, maps: dict[str, str]) -> None:
    """The faithfulness table: each map (`maps`: id -> its shown name), then one random order, with both AUCs
    and whether the map beats random."""
    verdicts = [t(f"rollout.faith.short.{v}") if v else "—" for v in auc.verdicts]
    table({t("rollout.faith.col.map"): [t("rollout.faith.random_one") if m == "random" else maps[m] for m in auc.maps],
           t("rollout.faith.col.deletion"): auc.deletion_auc, t("rollout.faith.col.insertion"): auc.insertion_auc,
           t("rollout.faith.col.verdict", margin=experiments.MARGIN): verdicts},
          {t(f"rollout.faith.col.{k}"): "%.3f" for k in ("deletion", "insertion")})


# --- teach it new classes (exp_finetune)

@st.cache_data(show_spinner=False, max_entries=32)
def few_shot_task(classes: tuple, shots: int, seed: int, held_out: int) -> experiments.FewShotSet:
    """experiments.few_shot_set on Fashion-MNIST, kept per (classes, shots, seed, held-out images per class)."""
    split = fashion_mnist()
    return experiments.few_shot_set({k: v[0] for k, v in split.items()}, {k: v[1] for k, v in split.items()},
                                    list(classes), shots, held_out, seed)


@st.cache_data(show_spinner=False, max_entries=32)
def linear_probe(model_id: str, inputs: tuple, seed: int, _task, _text: str) -> experiments.ProbeResult:
    """The linear probe of a task, kept per (model, what names the task's images, seed)."""
    model, card = load_model(model_id)
    return with_progress(_text, lambda f: experiments.probe_task(model, card.preprocess, _task, seed=seed,
                                                                 progress=f))


def own_probe(lv: Live, names: list[str], pictures: list[list[tuple[str, object]]],
              seed: int) -> tuple[experiments.OwnSet, experiments.ProbeResult]:
    """The task of the reader's own pictures ((digest, image) per class, from ui.pictures) and its probe,
    kept per (model, the pictures' digests, seed)."""
    own = experiments.own_set(names, [[img for _, img in p] for p in pictures], seed)
    digests = tuple(tuple(d for d, _ in p) for p in pictures)
    text = t("exp.finetune.probe.progress", n=sum(map(len, pictures)))
    return own, linear_probe(lv.model_id, digests, seed, own, text)


@st.cache_data(show_spinner=False, max_entries=32)
def scratch_run(inputs: tuple, steps: int, _text: str) -> experiments.ScratchResult:
    """The small ViT trained from scratch on the few_shot_task(*inputs) images, kept per (inputs, steps)."""
    return with_progress(_text, lambda f: experiments.train_from_scratch(few_shot_task(*inputs), steps=steps,
                                                                         seed=inputs[2], progress=f))


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
    opened first after a server start runs the page alone, without the sidebar or state. Calling
    st.navigation is the documented way to leave v1 mode; the rerun then goes through app.py, whose own
    st.navigation opens the page asked for. app.py marks each run it makes ("vx.via_app");
    page_header consumes the mark.
    """
    # The same pages, by the same URLs (a page's identity is its url_path), so the rerun keeps the page asked for
    st.navigation([st.Page(str(f), url_path=f.stem, default=f.stem == "home") for f in sorted((ROOT / "pages").glob("*.py"))],
                  position="hidden")
    st.rerun()


def page_header(step: str) -> None:
    """Every page starts here: the title and two or three sentences of what this step is and why."""
    if not st.session_state.pop("vx.via_app", False):
        _through_app()
    st.title(t(f"{step}.title"))
    st.markdown(t(f"{step}.why"))


def show_tensor(label: str, tensor, *, max_rows: int = 64, max_cols: int = 64) -> None:
    """The raw numbers of a tensor (or array) in an expander, with its shape (large ones are cut, and say so)."""
    box = st.expander(t("app.tensor.show", name=label, shape=" × ".join(map(str, tensor.shape))),
                      key=f"vx.tensor.{label}", on_change="rerun")
    if not box.open:  # the table is built (and sent) only while the reader looks at it
        return
    x = torch.as_tensor(tensor).detach().float().cpu()
    with box:
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
    """Layer and head sliders (1-based on screen) of the shared "vx.layer" / "vx.head", as patch_picker does:
    set from them before they are drawn (no value=, which would fight a view that apply_view set, and make
    Streamlit warn) and written back in their callbacks."""
    picked = {"layer": (depth, st.session_state["vx.layer"]), "head": (heads, st.session_state["vx.head"])}
    for col, name in zip(st.columns(2 if with_head else 1), picked if with_head else ["layer"]):
        count, shared = picked[name]
        slider = f"vx.{key}.{name}"
        st.session_state[f"vx.{name}"] = min(shared, count - 1)  # a smaller model clamps it
        st.session_state[slider] = st.session_state[f"vx.{name}"] + 1
        col.slider(t(f"app.{name}"), 1, count, key=slider, on_change=_slid, args=(slider, name))
    return st.session_state["vx.layer"], st.session_state["vx.head"] if with_head else 0


def _slid(slider: str, name: str) -> None:
    st.session_state[f"vx.{name}"] = int(st.session_state[slider]) - 1


def section(fn):
    """A page section that reruns alone when one of its own widgets changes (st.fragment): the sidebar and
    the page's other sections are not rebuilt or sent again. Use it for a section whose widgets nothing
    outside it reads. The address bar still follows the view."""

    @st.fragment
    @functools.wraps(fn)
    def run():
        fn()
        if not st.session_state.get("vx.full_run"):  # a fragment's own rerun does not reach the end of app.py
            view_to_url()

    return run


def plot(fig, **kwargs) -> None:
    st.plotly_chart(fig, config={"displayModeBar": False}, **kwargs)


def table(columns: dict[str, list], formats: dict[str, str] | None = None) -> None:
    """A small table without its index: {translated column title: values}, numbers in printf `formats`."""
    st.dataframe(pd.DataFrame(columns), hide_index=True,
                 column_config={name: st.column_config.NumberColumn(format=f) for name, f in (formats or {}).items()})


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


# ================================================================ the view, and classroom mode
# (one section: view() / apply_view() are also what the URL's query parameters use)

# Per-page settings a view carries, each with the check a value must pass before it is set (a page
# still re-checks it against its own model and picture). rollout.layers.<L> is (first, last) of L layers.
def note_metric(label: str, value: str, note: str, where=st) -> None:
    """A metric whose delta line is a neutral note ("was 49", "×4.0 of P = 4"), not a rise or a fall; `where`:
    st or a column."""
    where.metric(label, value, note, delta_color="off", delta_arrow="off")


# --- does position matter? (exp_position)

PROOF_SHUFFLES = 7  # seeded shuffles checked beside the learner's
ABLATION_IMAGES = 1000  # Fashion-MNIST test images for the E_pos ablation


@st.cache_data(show_spinner=False, max_entries=32)
def _shuffled(model_id: str, digest: str, perm: tuple, _pixels: torch.Tensor) -> experiments.PositionResult:
    perms = experiments.random_perms(len(perm), PROOF_SHUFFLES + 1, seed=0)
    perms[0] = perms.new_tensor(perm)
    return experiments.position_experiment(load_model(model_id)[0], _pixels, perms)


def position_shuffles(lv: Live, perm: torch.Tensor) -> experiments.PositionResult:
    """The learner's shuffle `perm` (row 0) and PROOF_SHUFFLES seeded ones of the current image, with E_pos and
    with zeros in its place; kept per (model, image, shuffle)."""
    return _shuffled(lv.model_id, lv.digest, tuple(perm.tolist()), lv.trace.pixels)


@st.cache_data(show_spinner=False, max_entries=8)
def _ablation(model_id: str, on_dataset: bool) -> tuple[list[str], experiments.PosAblation]:
    model, card = load_model(model_id)
    if on_dataset:
        images, labels = fashion_mnist()["test"]
        n = ABLATION_IMAGES
        return [], experiments.pos_ablation(model, experiments.to_pixels(card.preprocess, images[:n]), labels[:n])
    files = sample_files()
    pictures = [load_image(p.read_bytes()) for p in files]
    return [p.name for p in files], experiments.pos_ablation(model, experiments.to_pixels(card.preprocess, pictures))


def position_ablation(lv: Live, on_dataset: bool) -> tuple[list[str], experiments.PosAblation]:
    """The model with and without its E_pos on ABLATION_IMAGES Fashion-MNIST test images (`on_dataset`), else on
    the sample images (their file names first); kept per model."""
    return _ablation(lv.model_id, on_dataset)


# --- step 2 page (flatten + project)

@st.cache_data(show_spinner=False, max_entries=8)
def _components(model_id: str, _weight: torch.Tensor):
    return analysis.embedding_components(_weight, k=28)


def embedding_components(lv: Live, weight: torch.Tensor):
    """The principal components of the patch-embedding filters: one SVD per model, not per click."""
    return _components(lv.model_id, weight)


# --- step 3 page (position embedding)

def slot_name(i: int) -> str:
    """A prefix slot's name: CLS, DIST, then by index."""
    return t(f"step3.slot.{i}") if i < 2 else t("step3.slot.other", i=i)


def position_reference(tr: ViTTrace, cell: tuple[int, int]) -> tuple[int, int] | int:
    """Step 3's reference radio: the picked patch (returned as its (row, col)) or a prefix slot (its index).
    A newly picked patch becomes the reference again."""
    key, options = "vx.step3.ref", ["patch"] + [str(i) for i in range(tr.num_prefix_tokens)]
    if st.session_state.get("vx.step3.seen") != cell:
        st.session_state["vx.step3.seen"] = cell
        st.session_state[key] = "patch"
    labels = {o: t("step3.ref.patch", r=cell[0], c=cell[1]) if o == "patch" else slot_name(int(o)) for o in options}
    ref = choice(st.radio, t("step3.ref.label"), options, labels, key=key, default="patch", horizontal=True)
    return cell if ref == "patch" else int(ref)


def grid_size_sliders(tr: ViTTrace) -> tuple[int, int]:
    """Step 3's picture height and width for resampling, multiples of P up to four times the grid (the default
    is a wider picture, so the new grid is not square)."""
    s, size = tr.shapes, []
    for col, name, default in zip(st.columns(2), ("height", "width"), (s.H, s.P * (3 * s.w // 2))):
        options = [s.P * i for i in range(1, 4 * max(s.h, s.w) + 1)]
        key = persist(f"vx.step3.{name}")
        if st.session_state.get(key) not in options:
            st.session_state[key] = default
        size.append(col.select_slider(t(f"step3.resample.{name}", P=s.P), options, key=key))
    return size[0], size[1]


LAB_SETTINGS = {
    "rollout.residual": lambda v: isinstance(v, bool),
    "rollout.fusion": lambda v: v in ("mean", "max", "min"),
    "rollout.discard": lambda v: type(v) in (int, float) and 0 <= v <= 0.95,
    "rollout.class": lambda v: type(v) is int and 0 <= v < 100_000,
    "rollout.target": lambda v: v in ("rollout", "gradient", "occlusion"),
    "step4.stage": lambda v: type(v) is int and v in (1, 2, 3),
    "step6.topk": lambda v: type(v) is int and 1 <= v <= 1000,
    "vx.step1.whatif": lambda v: type(v) is int and 1 <= v <= 4096,
    "vx.step3.ref": lambda v: v in ("patch", "0", "1"),
    "vx.step3.height": lambda v: type(v) is int and 1 <= v <= 4096,
    "vx.step3.width": lambda v: type(v) is int and 1 <= v <= 4096,
    "rollout.orders": lambda v: type(v) is int and 1 <= v <= 5,
    "step5.windows.shift": lambda v: isinstance(v, bool),
}
LAYER_RANGE = re.compile(r"^rollout\.layers\.(\d{1,3})$")
# Settings whose key names what bounds them: the stride of a Q-pixel cut, steps over N patches, a window on h×w
SIZED_SETTINGS = [(re.compile(r"^vx\.step1\.stride\.(\d{1,4})$"), lambda v, m: 1 <= v <= int(m[1])),
                  (re.compile(r"^rollout\.steps\.(\d{1,5})$"), lambda v, m: 2 <= v <= int(m[1])),
                  (re.compile(r"^step5\.windows\.size\.(\d{1,3})x(\d{1,3})$"), lambda v, m: 1 <= v <= max(int(m[1]), int(m[2])))]


def _lab_ok(key: str, value) -> bool:
    if key in LAB_SETTINGS:
        return LAB_SETTINGS[key](value)
    for pattern, check in SIZED_SETTINGS:
        if (sized := pattern.match(key)):
            return type(value) is int and check(value, sized)
    m = LAYER_RANGE.match(key)
    return bool(m) and isinstance(value, (list, tuple)) and len(value) == 2 and all(type(v) is int for v in value) \
        and 1 <= value[0] <= value[1] <= int(m[1])


def _current_page() -> str:
    """The stem of the page file this run shows ("step5_encoder"): also its URL path."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    info = ctx.pages_manager.get_pages().get(ctx.page_script_hash, {}) if ctx else {}
    return Path(info.get("script_path") or "home").stem


@st.cache_data(show_spinner=False)
def _sample_digests() -> dict[str, str]:
    return {p.name: image_digest(p.read_bytes()) for p in sample_files()}


def view() -> dict:
    """What this session shows, as plain JSON ids: page, language, model, sample image (None: the
    user's own picture, named by its digest), selected patch, layer, head and the pages' lab settings."""
    s = st.session_state
    img = s["vx.image"]
    lab = {k: list(v) if isinstance(v, tuple) else v for k, v in s.items() if isinstance(k, str) and _lab_ok(k, v)}
    return {"page": _current_page(), "lang": lang(), "model": s["vx.model"],
            "image": img["name"] if _sample_digests().get(img["name"]) == img["digest"] else None,
            "digest": img["digest"], "patch": list(s["vx.patch"]) if s["vx.patch"] else None,
            "layer": s["vx.layer"], "head": s["vx.head"], "lab": dict(sorted(lab.items()))}


def apply_view(v: dict) -> str | None:
    """Set this session's state from a view (any part may be missing; a value that is unknown or out of
    range is ignored). Returns the view's page file ("pages/step5_encoder.py") for the caller to
    switch to, or None. Call it before the sidebar's widgets are drawn (or rerun after it)."""
    s = st.session_state
    v = v if isinstance(v, dict) else {}
    if v.get("lang") in ("en", "zh"):
        s["vx.lang"] = v["lang"]
    models = {e.id for e in _models() if e.cached and e.id not in zoo.NOT_VIT} | {DEFAULTS["vx.model"]}
    if v.get("model") in models:
        try:
            load_model(v["model"])
            s["vx.model"] = s["vx.model_choice"] = v["model"]
        except Exception:  # noqa: BLE001 - a model that does not load here: keep ours
            pass
    if v.get("image") in _sample_digests() and v["image"] != s["vx.image"]["name"]:
        s["vx.image"] = _sample(SAMPLES / v["image"])
        for key, value in (("vx.sample", v["image"]), ("vx.image_source", "sample")):
            if s.get(key) != value:  # the sidebar's widgets show it too
                s[key] = value
    patch = v.get("patch", ())
    if patch is None or (isinstance(patch, list) and len(patch) == 2 and all(type(x) is int and 0 <= x < 4096
                                                                              for x in patch)):
        s["vx.patch"] = tuple(patch) if patch else None
    config = current_model()[1].config
    for name, count in (("layer", getattr(config, "depth", 0)), ("head", getattr(config, "num_heads", 0))):
        if type(v.get(name)) is int and 0 <= v[name] < count:
            s[f"vx.{name}"] = v[name]
    for key, value in (v.get("lab") if isinstance(v.get("lab"), dict) else {}).items():
        if _lab_ok(key, value):
            s[key] = tuple(value) if isinstance(value, list) else value
    page = v.get("page")
    return f"pages/{page}.py" if isinstance(page, str) and re.fullmatch(r"\w+", page) \
        and (ROOT / "pages" / f"{page}.py").is_file() else None


# --- the view in the address bar: a reload, a reconnect to another replica, a bookmark or a shared link
# reopens the same view. The page is the URL's path; the rest are query parameters with readable values
# (layer and head counted from 1 as on screen). Other parameters (the classroom's) are left alone.

URL_KEYS = ("lang", "model", "image", "patch", "layer", "head")


def _view_query(v: dict) -> dict[str, str]:
    q = {"lang": v["lang"], "model": v["model"], "image": v["image"] or "upload", "layer": str(v["layer"] + 1),
         "head": str(v["head"] + 1)}
    if v["patch"]:
        q["patch"] = "{},{}".format(*v["patch"])
    return q | {key: json.dumps(value) for key, value in v["lab"].items()}


def _query_view(q: dict[str, str]) -> dict:
    """The view a URL names (unknown or malformed parts dropped; apply_view checks every value again)."""
    v = {"lang": q.get("lang"), "model": q.get("model"), "image": q.get("image")}
    if re.fullmatch(r"\d{1,4},\d{1,4}", q.get("patch", "")):
        v["patch"] = [int(x) for x in q["patch"].split(",")]
    for name in ("layer", "head"):
        if re.fullmatch(r"\d{1,4}", q.get(name, "")):
            v[name] = int(q[name]) - 1
    lab = {key: value for key, text in q.items() if _lab_ok(key, value := _json_or_none(text))}
    return v | {"lab": lab}


def view_from_url() -> None:
    """Once per session, before the sidebar: take the view the address names. An own photo cannot travel
    in a URL: after a reconnect (or from a link) the sample stays and one sentence asks for the photo."""
    if st.session_state.get("vx.url_read"):
        return
    st.session_state["vx.url_read"] = True
    q = {key: st.query_params[key] for key in st.query_params}
    if not q.keys() & set(URL_KEYS):
        return
    apply_view(_query_view(q))
    if q.get("image") == "upload":
        st.session_state["vx.image_source"] = "upload"
        notify("info", "app.image.upload_again")


def view_to_url() -> None:
    """After every run: the address bar shows this session's view (only what changed is sent)."""
    wanted = _view_query(view())
    ours = {key for key in st.query_params if key in URL_KEYS or _lab_ok(key, _json_or_none(st.query_params[key]))}
    for key in ours - wanted.keys():
        del st.query_params[key]
    changed = {key: value for key, value in wanted.items() if st.query_params.get(key) != value}
    if changed:
        st.query_params.update(changed)


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


# --- classroom mode: the store, the teacher's broadcast, the students' follow and answers

PUBLISH_S, FOLLOW_S, TALLY_S = 0.5, 1.0, 1.0  # how often the teacher's view is sent, students poll, answers recount


@st.cache_resource(show_spinner=False)
def _class_store(url: str | None) -> classroom.ClassStore:
    return classroom.open_store(url)


def class_store() -> classroom.ClassStore:
    """Redis when REDIS_URL is set (every replica sees the class), else this process's memory."""
    return _class_store(os.environ.get("REDIS_URL") or None)


def class_shared() -> bool:
    return bool(os.environ.get("REDIS_URL"))


def my_class() -> dict | None:
    """{"code", "role": "teacher" | "student", "token" (teacher) or "student" and "name"}, or None."""
    return st.session_state.get("vx.class")


def _class_call(fn, *args):
    """A store call; a refusal is a message (None returned), and a class that ended is left."""
    try:
        return fn(*args)
    except classroom.ClassroomError as err:
        if err.key in ("classroom.error.unknown_code", "classroom.error.not_teacher") and my_class():
            leave_class()
        show_error(err)
    except Exception as err:  # noqa: BLE001 - Redis down or unreachable: say so, the app goes on
        import logging

        logging.getLogger("vit_explorer").warning("class store: %r", err)
        st.error(t("classroom.error.store"))
    return None


def start_class() -> None:
    teacher = _class_call(class_store().create)
    if teacher:
        st.session_state["vx.class"] = {"code": teacher.code, "role": "teacher", "token": teacher.token,
                                        "expires": teacher.expires_at, "shared": []}


def resume_class() -> None:
    """A teacher's own link (?class=CODE&teacher=TOKEN) reopens the class; the token then leaves the
    address bar, so a projected screen does not show it."""
    code, token = st.query_params.get("class"), st.query_params.pop("teacher", None)
    if code and token and not my_class():
        teacher = _class_call(class_store().resume, code, token)
        if teacher:
            st.session_state["vx.class"] = {"code": teacher.code, "role": "teacher", "token": teacher.token,
                                            "expires": teacher.expires_at, "shared": []}


def join_class(code: str, name: str) -> None:
    session = st.session_state.setdefault("vx.class.session", secrets.token_hex(8))  # rate limits count per session
    address = getattr(getattr(st, "context", None), "ip_address", None)
    address = address if isinstance(address, str) else None  # None on localhost (and in AppTest)
    student = _class_call(class_store().join, code, name, session, address)
    if student:
        st.session_state["vx.class"] = {"code": classroom.store.normalise_code(code), "role": "student",
                                        "student": student, "name": classroom.store.clean_name(name)}
        st.session_state["vx.class.follow"], st.session_state["vx.class.seen"] = True, None


def leave_class() -> None:
    for key in ("vx.class", "vx.class.seen", "vx.class.sent", "vx.class.mine"):
        st.session_state.pop(key, None)


def end_class() -> None:
    c = my_class()
    _class_call(class_store().close, c["code"], c["token"])
    leave_class()


def class_link(code: str, token: str | None = None) -> str:
    """The classroom page's address with the code (and, for the teacher's own link, the token)."""
    base = (st.context.url if hasattr(st, "context") else None) or ""
    base = base.rstrip("/").rsplit("/classroom", 1)[0] + "/classroom"
    return f"{base}?class={code}" + (f"&teacher={token}" if token else "")


@st.cache_data(show_spinner=False, max_entries=16)
def qr_png(text: str) -> bytes:
    import io

    import qrcode

    buf = io.BytesIO()
    qrcode.make(text, border=2).save(buf)  # PNG through pillow
    return buf.getvalue()


def class_bar() -> None:
    """The class in the sidebar of every page (app.py): a teacher's view goes out, a student follows."""
    c = my_class()
    if not c:
        return
    with st.container(border=True):
        if c["role"] == "teacher":
            _teacher_tick()
        else:
            st.toggle(t("classroom.bar.follow"), key="vx.class.follow", help=t("classroom.bar.follow_help"),
                      on_change=lambda: st.session_state.update({"vx.class.seen": None}), persist_state="session")
            _student_tick()


@st.fragment(run_every=PUBLISH_S)
def _teacher_tick() -> None:
    c = my_class()
    if not c:
        return
    v = view()
    if st.session_state.get("vx.class.share") and v["image"] is None and v["digest"] not in c["shared"]:
        if _class_call(class_store().share_upload, c["code"], c["token"], st.session_state["vx.image"]["data"]):
            c["shared"].append(v["digest"])
    if v != st.session_state.get("vx.class.sent") and _class_call(class_store().publish, c["code"], c["token"], v):
        st.session_state["vx.class.sent"] = v
    if my_class():
        st.caption(t("classroom.bar.teaching", code=c["code"]))


@st.fragment(run_every=FOLLOW_S)
def _student_tick() -> None:
    c = my_class()
    state = c and _class_call(class_store().state, c["code"])
    if not state:
        return
    if not state.open:
        leave_class()
        notify("info", "classroom.ended")
        st.rerun()
    follow = st.session_state.get("vx.class.follow", True)
    st.caption(t("classroom.bar.following" if follow else "classroom.bar.exploring", code=c["code"]))
    asked = state.asked
    if asked and not asked.revealed and _current_page() != "classroom":
        st.page_link("pages/classroom.py", label=t("classroom.bar.question"), icon="❓")
    now = (state.view_id if follow else None, asked and asked.id, asked and asked.revealed)
    if now == st.session_state.get("vx.class.seen"):
        return
    st.session_state["vx.class.seen"] = now
    if follow and state.view:
        page = _follow(c["code"], state.view)
        if page and page != f"pages/{_current_page()}.py":
            st.switch_page(page)
    st.rerun()  # the teacher's view, or the new question, drawn by a full run


def _follow(code: str, v: dict) -> str | None:
    """Take the teacher's view (each student keeps their own language), with the teacher's own photo
    when the teacher shared it."""
    v = {k: x for k, x in v.items() if k != "lang"}
    if v.get("image") is None and v.get("digest") != st.session_state["vx.image"]["digest"]:
        data = class_store().upload(code, str(v.get("digest")))
        if data is not None and image_digest(data) == v["digest"]:
            use_image(data, t("classroom.teacher_photo"))
        else:
            notify("info", "classroom.not_shared")
    return apply_view(v)


def class_state() -> classroom.ClassState | None:
    c = my_class()
    return c and _class_call(class_store().state, c["code"])


def ask(template_id: str) -> None:
    c, lv = my_class(), live()
    q = classroom.questions.make(template_id, lv.trace, lv.card, model_id=lv.model_id, digest=lv.digest)
    _class_call(class_store().ask, c["code"], c["token"], q.to_json())


def reveal() -> None:
    c = my_class()
    _class_call(class_store().reveal, c["code"], c["token"])


def class_answers(qid: str) -> list:
    c = my_class()
    return (c and _class_call(class_store().answers, c["code"], qid)) or []


def my_answer(qid: str):
    return st.session_state.get("vx.class.mine", {}).get(qid)


def send_answer(q: classroom.questions.Question, qid: str, value) -> bool:
    c = my_class()
    try:
        value = q.check(value)
    except classroom.ClassroomError as err:
        show_error(err)
        return False
    if not _class_call(class_store().answer, c["code"], c["student"], qid, value):
        return False
    st.session_state.setdefault("vx.class.mine", {})[qid] = value
    return True


def _clicked(q, qid: str, key: str) -> None:
    points = st.session_state[key]["selection"]["points"]
    cd = points[0].get("customdata") if points else None
    if isinstance(cd, dict):  # the browser sends a list as {"0": r, "1": c}
        cd = [cd[k] for k in sorted(cd, key=int)]
    if cd:
        send_answer(q, qid, cd[:2])


def answer_form(q, qid: str, lv: Live) -> None:
    """The widgets a student answers with: a click on the picture, one option, a number, an order."""
    if q.kind == "patch":
        if (lv.model_id, lv.digest) != (q.model, q.digest):
            st.info(t("classroom.student.other_picture"))
            return
        mine, key = my_answer(qid), f"classroom.click.{qid}"
        fig = viz.image_grid(lv.display, lv.trace.grid, lv.trace.shapes.P, selected=tuple(mine) if mine else None,
                             hover=t("classroom.student.hover"), height=480)
        st.plotly_chart(fig, key=key, on_select=functools.partial(_clicked, q, qid, key), selection_mode="points",
                        config={"displayModeBar": False})
        return
    key = f"classroom.answer.{qid}"  # no form: ui.choice needs its callback, which a form does not allow
    if q.kind == "choice":
        st.session_state.setdefault(key, None)  # no option picked yet (ui.choice reads the key before it sets it)
        value = choice(st.radio, t("classroom.student.choose"), q.options, dict(zip(q.options, q.labels[lang()])), key=key)
    elif q.kind == "number":
        value = st.number_input(t("classroom.student.number"), 0, classroom.questions.MAX_NUMBER, value=None, step=1,
                                key=key)
    else:  # a multiselect sends its labels back too: keyed by the language, a switch draws a fresh one
        heads = {h: t("classroom.head", h=h) for h in q.options}
        value = st.multiselect(t("classroom.student.order"), q.options, format_func=heads.get, key=f"{key}@{lang()}")
    if st.button(t("classroom.student.send"), type="primary", key=f"{key}.send") and send_answer(q, qid, value):
        st.rerun()  # draw the page again, the answer confirmed


def show_tally(q, answers: list, revealed: bool, lv: Live) -> None:
    """The class's answers: clicks over the picture (and, revealed, the model's own map beside them),
    or a histogram of the answers (the model's answer highlighted once revealed)."""
    tl = classroom.questions.tally(q, answers)
    cols = st.columns(3)
    cols[0].metric(t("classroom.tally.answers"), tl.n)
    if revealed:
        cols[1].metric(t("classroom.tally.correct"), f"{tl.share:.0%}")
    if q.kind != "patch":
        labels = [q.label(a, lang()) for a, _ in tl.bars]
        best = next((i for i, (a, _) in enumerate(tl.bars) if q.correct(a)), None) if revealed else None
        plot(viz.bars(labels, [n for _, n in tl.bars], highlight=best, text_format="{:.0f}",
                      x_title=t("classroom.tally.students")), key="classroom.bars")
        return
    same = (lv.model_id, lv.digest) == (q.model, q.digest)
    maps = [("clicks", tl.clicks, None)] + ([("model", np.reshape(q.truth, q.grid), tuple(q.answer))] if revealed else [])
    for col, (name, values, mark) in zip(st.columns(2), maps):
        title, bar = t(f"classroom.tally.{name}"), t(f"classroom.tally.{name}_bar")
        fig = (viz.overlay(lv.display, values, lv.trace.shapes.P, colorbar_title=bar, title=title, zmin=0, selected=mark)
               if same else viz.heatmap(values, colorbar_title=bar, title=title, square=True, marks=[mark] if mark else []))
        if name == "clicks":  # counts: whole ticks, whole numbers on hover
            fig.update_traces(colorbar_dtick=max(1, int(np.ceil(np.max(values) / 5))), hovertemplate="%{z:.0f}<extra></extra>",
                              selector={"type": "heatmap"})
        with col:
            plot(fig, key=f"classroom.{name}")


@st.fragment(run_every=TALLY_S)
def live_answers(question: dict, qid: str, revealed: bool) -> None:
    """The teacher's live count: who is in the class, and the answers so far."""
    c = my_class()
    if not c:
        return
    roster = _class_call(class_store().roster, c["code"]) or []
    with st.expander(t("classroom.teacher.roster", n=len(roster))):
        st.dataframe({t("classroom.teacher.name"): roster}, hide_index=True)  # cells are plain text
    if question:
        show_tally(classroom.questions.Question.from_json(question), class_answers(qid), revealed, live())


# --- experiment pages

@st.cache_resource(show_spinner=False)
def fashion_mnist() -> dict:
    """{"train": (images, labels), "test": (...)}: Fashion-MNIST read once per process and shared read-only.
    Raises vit_core.data.DatasetMissingError when the Debian package is not installed."""
    from vit_core.data import load_fashion_mnist

    return {split: load_fashion_mnist(split) for split in ("train", "test")}


# --- the CNN-vs-ViT page

def cnn_model():
    """(id, card) of the CNN ("cnn.model", else VIT_EXPLORER_CNN, else the embedded one), or (None, None) after
    a message: the file is made by the training script, and the page's other parts stay without it."""
    cnn_id = st.session_state.get("cnn.model", os.environ.get("VIT_EXPLORER_CNN", "fmnist-cnn"))
    try:
        return cnn_id, load_model(cnn_id)[1]
    except Exception:  # noqa: BLE001 - missing or unreadable: the CNN parts say so, the rest of the page stays
        st.warning(t("cnn.missing_cnn", path=cnn_id))
        return None, None


def data_efficiency() -> tuple[claims.DataEfficiency, claims.DeTable] | None:
    """The data-efficiency study so far ("cnn.de_dir", else VIT_EXPLORER_EXPERIMENTS, else the project's) with
    its table, or None after a message."""
    folder = Path(st.session_state.get("cnn.de_dir", os.environ.get("VIT_EXPLORER_EXPERIMENTS",
                                                                    str(claims.EXPERIMENTS))))
    try:
        de = claims.data_efficiency(folder)
        return de, claims.de_table(de)
    except Exception:  # noqa: BLE001 - missing, half-written or malformed: a message instead of the section
        st.warning(t("cnn.missing_de", path=folder / "data_efficiency.json"))
        return None


def sample_set(lv: Live) -> tuple[str, tuple[str, ...]]:
    """The sample images like the model's input: ("fmnist", names) for a one-channel model, else ("photo", names)."""
    kind = "fmnist" if lv.trace.shapes.C == 1 else "photo"
    return kind, tuple(p.name for p in sample_files() if p.stem.startswith(kind + "_"))


@st.cache_data(show_spinner=False, max_entries=8)
def _sample_distances(model_id: str, names: tuple[str, ...]) -> np.ndarray:
    """Mean attention distance (S, L, heads) over a fixed set of sample images."""
    model, card = load_model(model_id)
    images = [load_image((SAMPLES / name).read_bytes()) for name in names]
    return analysis.sample_attention_distances(model, card.preprocess, images).numpy()


@st.cache_data(show_spinner=False, max_entries=64)
def _attention_reach(model_id: str, digest: str, names: tuple[str, ...], _trace: ViTTrace) -> analysis.AttentionReach:
    return analysis.attention_reach(_trace, _sample_distances(model_id, names) if names else None)


def attention_reach(lv: Live, samples: tuple[str, ...]) -> analysis.AttentionReach:
    """analysis.attention_reach of the current trace beside the sample images `samples` (sample_set), under a
    spinner and kept per (model, image, samples): about a second for B/16 on a small CPU."""
    with st.spinner(t("cnn.dist.computing", n=len(samples))):
        return _attention_reach(lv.model_id, lv.digest, samples, lv.trace)


@st.cache_data(show_spinner=False, max_entries=64)
def _vit_erfs(model_id: str, digest: str, _pixels, token: int, blocks: tuple[int, ...]) -> np.ndarray:
    """ERF of `token` at each block in `blocks` (1..L), each divided by its max: (len(blocks), H, W)."""
    model, _ = load_model(model_id)
    maps = analysis.vit_erfs(model, _pixels, blocks, token).cpu()  # one forward, one gradient per block
    return np.stack([analysis.normalise_peak(m)[0].numpy() for m in maps])


@st.cache_data(show_spinner=False, max_entries=64)
def _cnn_erfs(cnn_id: str, digest: str, _image, centre: tuple[float, float]) -> analysis.CnnErfs:
    cnn, card = load_model(cnn_id)
    return analysis.cnn_erf_layers(cnn, layer_specs(card.config), card.preprocess(_image), centre)


def erf_reach(lv: Live, cnn_id: str | None, cnn_card, layer: int, patch: tuple[int, int]) -> analysis.ErfReach:
    """analysis.erf_reach of the current image at block layer + 1 and `patch`: the ViT's gradients kept per
    (model, image, token, blocks), the CNN's per (CNN, image, point), so a new layer beside the CNN only
    pairs them again. Under a spinner; needs autograd: call it outside inference_mode."""
    plan = analysis.erf_plan(lv.trace.shapes, layer, patch, vit_card=lv.card, cnn_card=cnn_card)
    with st.spinner(t("cnn.erf.computing")):
        maps = _vit_erfs(lv.model_id, lv.digest, lv.trace.pixels, plan.token, plan.blocks)
        cnn = None if plan.centre is None else _cnn_erfs(cnn_id, lv.digest, current_image(), plan.centre)
    return analysis.erf_reach(plan, maps, cnn)


def de_figures(de: claims.DataEfficiency, tb: claims.DeTable, vit: str, cnn: str) -> None:
    """The data-efficiency study's three figures: accuracy by size (every seed, the mean and its range), the
    CNN − ViT gap by size, and the CPU time of a run by size."""
    names = {"vit": vit, "cnn": cnn, "seed": t("cnn.de.hover.seed"), "mean": t("cnn.de.hover.mean")}
    axes, vz = {"x_title": t("cnn.de.x")}, shared.reach
    plot(vz.data_efficiency(de.runs, de.summary(), names=names, title=t("cnn.de.title"), y_title=t("cnn.de.y"), **axes),
         key="cnn.de.fig")
    plot(vz.gap_by_size(tb.gap_sizes, tb.gap_mean, tb.gap_lo, tb.gap_hi, title=t("cnn.de.gap_title"),
                        y_title=t("cnn.de.gap_y"), hover=t("cnn.de.hover.gap"), **axes), key="cnn.de.gap")
    cpu = {label: [c.cpu_s for c in tb.cells[m]] for m, label in (("vit", vit), ("cnn", cnn))}
    plot(vz.compute_by_size(tb.sizes, cpu, title=t("cnn.de.cpu_title"), y_title=t("cnn.de.cpu_y"),
                            hover=t("cnn.de.hover.cpu"), **axes), key="cnn.de.cpu")


def de_table(tb: claims.DeTable) -> None:
    """The data-efficiency results: per training-set size each model's mean test accuracy with its seeds' range,
    the CNN − ViT gap in points, the seeds and the CPU minutes of a run."""
    cell = lambda x: t("cnn.de.col.range", mean=x.mean, lo=x.lo, hi=x.hi)  # noqa: E731
    cpu = zip(tb.cpu_minutes["vit"], tb.cpu_minutes["cnn"])
    st.dataframe({t("cnn.de.col.size"): [f"{n:,}" for n in tb.sizes],
                  t("cnn.model.vit"): [cell(x) for x in tb.cells["vit"]],
                  t("cnn.model.cnn"): [cell(x) for x in tb.cells["cnn"]],
                  t("cnn.de.col.diff"): [f"{d:+.2f}" for d in tb.diff],
                  t("cnn.de.col.seeds"): tb.seeds,
                  t("cnn.de.col.cpu"): [f"{v:.0f} / {c:.0f}" for v, c in cpu]}, hide_index=True)


def budget_table(bt: claims.BudgetTable) -> None:
    """The doubling check under its caption: seed 0's final validation accuracy at each budget and the budget
    chosen, per (model, size); nothing while no check has run."""
    if not bt.models:
        return
    st.caption(t("cnn.de.check.title"))
    scales = {t("cnn.de.check.scale", scale=k): [f"{v:.2%}" if v is not None else "—" for v in accuracy]
              for k, accuracy in bt.accuracy.items()}
    st.dataframe({t("cnn.de.check.model"): [t(f"cnn.model.{m}") for m in bt.models],
                  t("cnn.de.col.size"): [f"{n:,}" for n in bt.sizes], **scales,
                  t("cnn.de.check.chosen"): [(t("cnn.de.check.scale", scale=k) + (t("cnn.de.check.rising") if up else ""))
                                             if k else t("cnn.de.check.pending") for k, up in zip(bt.chosen, bt.rising)]},
                 hide_index=True)


def lead(header: str, text: str, *, caption: str | None = None, more: tuple[str, str] | None = None) -> None:
    """A section's opening: its header and text, then a caption and an expander (title, text) with more, if given."""
    st.header(header)
    st.markdown(text)
    if caption:
        st.caption(caption)
    if more:
        st.expander(more[0]).markdown(more[1])


def bullets(lines: list[str], *, header: str | None = None) -> None:
    """Sentences as a bulleted list (empty ones left out), under a subheader if given."""
    if header:
        st.subheader(header)
    st.markdown("\n".join("- " + line for line in lines if line))
