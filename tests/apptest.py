"""What the page tests share: the app opened in Streamlit's AppTest, the check that a page rendered
cleanly, the charts it drew, and the same numbers computed straight from vit_core (the oracle)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import torch
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
RAW_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")  # a translation key shown instead of its text
AREAS = sorted(p.stem for p in (ROOT / "assets" / "i18n").glob("*.json"))  # every key starts with one
KEY_INSIDE = re.compile(rf"(?<![A-Za-z0-9_])(?:{'|'.join(AREAS)})\.[a-z]")  # ... also inside a sentence or chart
TEXT_KINDS = ("title", "header", "subheader", "markdown", "caption", "info", "warning", "success", "error")


def open_app(lang: str = "en", page: str | None = None, **state) -> AppTest:
    """The app in `lang` with `state` set before the first run (`**{"vx.model": path}`; a None value keeps
    the app's default), then on `page` ("pages/step1_patchify.py")."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["vx.lang"] = lang
    for key, value in state.items():
        if value is not None:
            at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    return at


def texts(at: AppTest) -> list[str]:
    return [str(e.value) for kind in TEXT_KINDS for e in getattr(at, kind)]


def charts(at: AppTest) -> dict[str, dict]:
    """{key: the plotly figure (data and layout) as sent to the browser} of every chart on the page."""
    return {el.key: json.loads(el.proto.spec) for el in at.get("plotly_chart")}


def assert_clean(at: AppTest):
    """No exception, no st.error, and no translation key shown instead of its text (alone, inside a
    sentence, or in a chart's titles and labels)."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    shown = texts(at)
    assert not [s for s in shown if RAW_KEY.match(s.strip())], "an untranslated key is shown"
    inside = KEY_INSIDE.search(" ".join(shown + [el.proto.spec for el in at.get("plotly_chart")]))
    assert not inside, f"an untranslated key is on the page: {inside.string[inside.start():inside.start() + 40]!r}"


def choice(at: AppTest, kind: str, key: str):
    """The widget of a ui.choice (`kind`: "selectbox", "radio", ...): keyed by its state key and the language."""
    return getattr(at, kind)(key=f"{key}@{at.session_state['vx.lang']}")


def select_patch(at: AppTest, r: int, c: int):
    at.number_input(key="vx.pick.row").set_value(r)
    at.number_input(key="vx.pick.col").set_value(c)
    at.run()
    assert_clean(at)


def plotly_array(v) -> np.ndarray:
    """A plotly JSON array: a plain list, or plotly's typed-array form {"dtype", "bdata", "shape"}."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape([int(s) for s in str(v["shape"]).split(",")]) if "shape" in v else a
    return np.asarray(v, dtype=float)


def default_image():
    """The picture every page starts with, read as the app reads it."""
    import ui
    from vit_core.images import load_image

    return load_image(ui.default_sample().read_bytes())


def live_trace(model_id: str | None = None, image: dict | None = None):
    """What the page shows, computed here without the app: (model, card, trace) of the app's default
    sample (or of `image`, a "vx.image" dict) through `model_id` (None: the app's default model)."""
    import ui
    from vit_core import zoo
    from vit_core.images import load_image

    model, card = zoo.load_model(model_id or ui.DEFAULTS["vx.model"])
    picture = load_image(image["data"]) if image else default_image()
    return model, card, model.trace(card.preprocess(picture)).to("cpu")


def save_vit(folder: Path, name: str, cfg, class_names: list[str], *, seed: int = 0, std: float | None = None,
             **card) -> str:
    """A random ViT saved as a checkpoint the app can select (returns its weights' path). `std`: draw every
    weight matrix from N(0, std²), wide enough that attention is far from uniform (a 0.02 init is nearly
    flat, so a control could leave a map unchanged). `card`: more ModelCard fields (preprocess, ...)."""
    from vit_core.card import ModelCard, Preprocess
    from vit_core.model import ViT
    from vit_core.weights import save_checkpoint

    card.setdefault("preprocess", Preprocess(size=cfg.image_size))
    with torch.random.fork_rng(devices=[]):  # the same weights whichever test asks first
        torch.manual_seed(seed)
        model = ViT(cfg)
        if std is not None:
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() > 1:
                        p.normal_(0, std)
    weights, _ = save_checkpoint(model, ModelCard(name=name, arch="vit", config=cfg, class_names=class_names, **card),
                                 Path(folder) / name)
    return str(weights)
