"""The app in Streamlit's AppTest: every page in both languages, uploads, and failures as messages."""

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from apptest import ROOT, RAW_KEY, assert_clean, choice, open_app, select_patch
from vit_core.i18n import translate

PAGES = ["pages/home.py", "pages/step1_patchify.py", "pages/step2_project.py", "pages/step3_position.py",
         "pages/step4_cls.py", "pages/step5_encoder.py", "pages/step6_classify.py", "pages/rollout_lab.py",
         "pages/cnn_vs_vit.py", "pages/classroom.py", "pages/exp_position.py", "pages/exp_logit_lens.py",
         "pages/exp_finetune.py"]
CJK = re.compile(r"[\u4e00-\u9fff]")

pytestmark = pytest.mark.slow

# In a Chinese figure (titles, axes, ticks, legends, hover texts, colour scales, labels) Latin letters may
# only spell names, formulas and layer identifiers; anything else is English left on a Chinese page.
NAMES = {"CLS", "DIST", "ViT", "CNN", "MLP", "ResNet", "VGG", "Fashion-MNIST", "DeiT", "ImageNet", "logit", "logits",
         "softmax", "GELU", "CPU"}  # CPU: written so in Chinese too
NOT_WORDS = re.compile(r"%\{[^{}]*\}|<[^<>]*>|\b[a-z]+\d[\w.]*|\w+_\w+")  # blanks, markup, layer2.3.conv3, E_pos
WORD = re.compile(r"[A-Za-z][A-Za-z-]*[A-Za-z]{2}|\bpx\b")


def figure_texts(spec) -> list[str]:
    """Every text a plotly figure shows: titles, tick texts, annotations, trace names, hover texts, data labels
    and categories (a bar chart's class names)."""
    out = []
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "shapes":  # outlines: their names are ids, never drawn
                continue
            categories = key in ("x", "y") and isinstance(value, list) and value and isinstance(value[0], str)
            shown = key in ("text", "name", "hovertemplate", "ticktext") or (key == "title" and isinstance(value, str))
            if categories or shown:
                out += [str(v) for v in (value if isinstance(value, list) else [value])]
            else:
                out += figure_texts(value)
    elif isinstance(spec, list) and spec and isinstance(spec[0], (dict, list)):
        out += [t for item in spec for t in figure_texts(item)]
    return out


def english_in_figures(at) -> list[str]:
    import json

    texts = [x for c in at.get("plotly_chart") for x in figure_texts(json.loads(c.proto.spec))]
    return sorted({w for x in texts for w in WORD.findall(NOT_WORDS.sub(" ", x)) if w not in NAMES})


def test_every_page_exists_in_the_navigation():
    app = (ROOT / "app.py").read_text(encoding="utf-8")
    assert sorted(PAGES) == sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))
    assert all(f'"{p}"' in app for p in PAGES)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_in_both_languages(page, lang):
    at = open_app(lang, page)
    assert_clean(at)
    assert at.title, "every page has a title"
    title = at.title[0].value
    assert bool(CJK.search(title)) == (lang == "zh"), title
    assert at.get("plotly_chart"), "every page shows at least one live chart"
    if lang == "zh":
        assert not english_in_figures(at), "English in a Chinese figure"


def _jpeg(size=(320, 240), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, color)
    img.paste((20, 20, 220), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    img.save(buf, "JPEG")
    return buf.getvalue()


def test_upload_a_real_image_then_a_broken_one():
    at = open_app("en")
    choice(at, "segmented_control", "vx.image_source").set_value("upload").run()
    at.sidebar.file_uploader(key="vx.upload").upload("my photo.jpg", _jpeg(), "image/jpeg").run()
    assert_clean(at)
    assert at.session_state["vx.image"]["name"] == "my photo.jpg"
    digest = at.session_state["vx.image"]["digest"]

    for lang, broken in [("en", b"\x89PNG\r\n\x1a\n" + b"\0" * 40), ("zh", b"GIF89a-not-really")]:
        at.session_state["vx.lang"] = lang
        at.sidebar.file_uploader(key="vx.upload").upload("broken.png", broken, "image/png").run()
        assert not at.exception
        shown = [e.value for e in at.sidebar.error]
        assert len(shown) == 1 and not RAW_KEY.match(shown[0])
        assert bool(CJK.search(shown[0])) == (lang == "zh"), shown
        assert at.session_state["vx.image"]["digest"] == digest, "the previous image is kept"


def test_a_real_photo_changes_the_prediction_input():
    from matplotlib.cbook import get_sample_data

    with get_sample_data("grace_hopper.jpg") as f:
        data = f.read()
    at = open_app("en", "pages/step1_patchify.py")
    before = at.session_state["vx.image"]["digest"]
    choice(at, "segmented_control", "vx.image_source").set_value("upload").run()
    at.sidebar.file_uploader(key="vx.upload").upload("grace_hopper.jpg", data, "image/jpeg").run()
    assert_clean(at)
    assert at.session_state["vx.image"]["digest"] != before


def test_a_sample_can_be_chosen():
    at = open_app("zh")
    choice(at, "selectbox", "vx.sample").select("photo_chelsea.jpg").run()
    assert_clean(at)
    assert at.session_state["vx.image"]["name"] == "photo_chelsea.jpg"


def test_a_broken_checkpoint_is_a_message_and_the_model_stays(tmp_path, monkeypatch):
    bad = tmp_path / "broken_vit.safetensors"
    bad.write_bytes(b"this is not a safetensors file")
    monkeypatch.setenv("VIT_EXPLORER_MODELS", str(tmp_path))
    for lang in ("en", "zh"):
        at = open_app(lang)
        model_before = at.session_state["vx.model"]
        choice(at, "selectbox", "vx.model_choice").select(str(bad)).run()
        assert not at.exception
        shown = [e.value for e in at.sidebar.error]
        assert len(shown) == 1 and bool(CJK.search(shown[0])) == (lang == "zh"), shown
        assert at.session_state["vx.model"] == model_before
        assert at.get("plotly_chart"), "the page still renders with the previous model"


def test_a_hub_model_offline_is_a_message_within_a_second(monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = open_app("zh")
    model_before = at.session_state["vx.model"]
    from vit_core import hub

    entry = next(e for e in hub.CATALOGUE if not hub.is_cached(e))
    choice(at, "selectbox", "vx.model_choice").select(entry.id).run()
    assert at.sidebar.button(key="vx.download")
    started = time.perf_counter()
    at.sidebar.button(key="vx.download").click().run()
    assert time.perf_counter() - started < 10  # the app run itself; the hub answer is < 1 s (test_hub)
    shown = [e.value for e in at.sidebar.error]
    assert len(shown) == 1 and CJK.search(shown[0]), shown
    assert at.session_state["vx.model"] == model_before
    assert not at.exception


def test_patch_selection_is_shared_between_pages():
    at = open_app("en", "pages/step1_patchify.py")
    select_patch(at, 3, 5)  # with the row / column inputs, as a user does (a click sets them too)
    at.switch_page("pages/step3_position.py")
    at.run()
    assert at.session_state["vx.patch"] == (3, 5)
    assert_clean(at)


def test_sidebar_offers_every_sample_and_the_device():
    at = open_app("en")
    options = choice(at, "selectbox", "vx.sample").options
    assert len(options) == len(list((ROOT / "assets" / "samples").glob("*.[pj][np]g")))
    assert any("CPU" in c.value or "CUDA" in c.value for c in at.sidebar.caption)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("page", PAGES)
def test_pages_work_for_an_rgb_deit_on_a_non_square_grid(page, lang, deit_model):
    at = open_app(lang, page, **{"vx.model": deit_model})
    assert_clean(at)
    assert at.session_state["vx.model"] == deit_model
    if lang == "zh":  # two prefix tokens, 1000 ImageNet classes: their labels too
        assert not english_in_figures(at), "English in a Chinese figure"


# ----------------------------------------------------------------------------- switching the language

VIEW = ("vx.model", "vx.patch", "vx.layer", "vx.head", "vx.image_source", "vx.sample", "rollout.fusion",
        "step4.stage")


def view(at) -> dict:
    """What a language switch must leave alone: the model, the image, the patch, layer, head, settings."""
    return {k: at.session_state[k] for k in VIEW if k in at.session_state} | {
        "image": at.session_state["vx.image"]["digest"]}


def switch_language_on_every_page(at):
    """English → 中文 → English on every page, each switch followed by a click in the navigation."""
    for page in PAGES:  # every page once: its settings exist, with their defaults or the values chosen
        at.switch_page(page).run()
    before = view(at)
    for page, nxt in zip(PAGES, PAGES[1:] + PAGES[:1]):
        at.switch_page(page).run()
        for lang in ("zh", "en"):
            at.sidebar.button_group(key="vx.lang").set_value(lang).run()
            assert_clean(at)
            at.switch_page(nxt).run()  # the next click, where the stale label used to arrive
            assert_clean(at)
            assert at.session_state["vx.lang"] == lang, "the chosen language is kept"
            assert bool(CJK.search(at.title[0].value)) == (lang == "zh"), at.title[0].value
            assert view(at) == before, f"{page}: switching to {lang} changed the view"
            at.switch_page(page).run()


def test_switching_the_language_keeps_everything_on_every_page():
    at = open_app("en", "pages/step5_encoder.py")
    select_patch(at, 2, 5)
    at.slider(key="vx.enc.layer").set_value(3).run()
    at.slider(key="vx.enc.head").set_value(2).run()
    at.switch_page("pages/rollout_lab.py").run()
    choice(at, "radio", "rollout.fusion").set_value("max").run()
    assert_clean(at)
    assert (at.session_state["vx.patch"], at.session_state["vx.layer"], at.session_state["rollout.fusion"]) == (
        (2, 5), 2, "max")
    switch_language_on_every_page(at)


def test_switching_the_language_keeps_an_uploaded_photo():
    at = open_app("en")
    choice(at, "segmented_control", "vx.image_source").set_value("upload").run()
    at.sidebar.file_uploader(key="vx.upload").upload("my photo.jpg", _jpeg(), "image/jpeg").run()
    assert at.session_state["vx.image"]["name"] == "my photo.jpg"
    switch_language_on_every_page(at)
    assert at.session_state["vx.image"]["name"] == "my photo.jpg"


def test_switching_the_language_keeps_a_local_and_a_hub_model(tmp_path, monkeypatch, deit_model):
    from test_hub import make_hf_cache, tiny_deit_files
    from vit_core import hub

    entry = hub.get("deit-tiny-distilled")
    make_hf_cache(tmp_path / "cache", entry.repo, tiny_deit_files(tmp_path / "files"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VIT_EXPLORER_MODELS", str(Path(deit_model).parent))
    for model in (deit_model, entry.id):
        at = open_app("en")
        choice(at, "selectbox", "vx.model_choice").select(model).run()
        assert_clean(at)
        assert at.session_state["vx.model"] == model
        switch_language_on_every_page(at)


def send_label(widget, label: str):
    """Make `widget` send `label` as its value on the next run, as the browser does with a label it was
    shown (AppTest itself only sends labels of the current options)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    stale = property(lambda self: WidgetState(id=self.id, string_value=label))
    widget.__class__ = type("BrowserSent", (type(widget),), {"_widget_state": stale})
    return widget


def test_a_label_instead_of_an_option_is_ignored():
    """What a browser sends after a language switch: the old language's label. It is never opened as a file
    name or loaded as a model; the current choice is kept."""
    at = open_app("zh")
    before = view(at)
    english = translate("app.sample." + Path(at.session_state["vx.image"]["name"]).stem, "en")
    send_label(choice(at, "selectbox", "vx.sample"), english)
    send_label(choice(at, "selectbox", "vx.model_choice"), translate("app.model.title.fmnist-vit", "en"))
    at.run()
    assert_clean(at)
    assert view(at) == before


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_tensor_table_is_built_only_while_its_expander_is_open(lang):
    at = open_app(lang, "pages/step1_patchify.py")
    assert_clean(at)
    label = translate("step1.tensor.pixels", lang)
    def tensor_tables():  # the study table further down the page is not a tensor
        return [d for d in at.dataframe if translate("step1.study.col.P", lang) not in d.value.columns]

    assert any(label in e.label for e in at.expander) and not tensor_tables()  # closed: nothing built or sent
    at.session_state[f"vx.tensor.{label}"] = True  # what a click on the expander does
    at.run()
    assert_clean(at)
    (table,) = tensor_tables()
    from vit_core import zoo
    from vit_core.images import load_image
    _, card = zoo.load_model()
    pixels = card.preprocess(load_image((ROOT / "assets" / "samples" / "fmnist_ankle_boot.png").read_bytes()))
    np.testing.assert_allclose(table.value.to_numpy(), pixels[0, 0].numpy(), atol=1e-6)  # the model's input, 28×28


def test_the_address_carries_the_view_and_a_new_session_reopens_it():
    at = open_app("en", "pages/step1_patchify.py")
    select_patch(at, 2, 5)
    at.switch_page("pages/rollout_lab.py").run()
    at.slider(key="vx.rollout.layer").set_value(4).run()
    at.slider(key="rollout.discard").set_value(0.5).run()
    choice(at, "radio", "rollout.fusion").set_value("max").run()
    assert_clean(at)
    q = dict(at.query_params)
    q = {k: v[0] if isinstance(v, list) else v for k, v in q.items()}
    assert (q["lang"], q["image"], q["patch"], q["layer"], q["rollout.discard"], q["rollout.fusion"]) == \
        ("en", "fmnist_ankle_boot.png", "2,5", "4", "0.5", '"max"')

    # a reconnect (another replica, a reload, a shared link) is a new session on the same address, in Chinese here
    again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    for k, v in (q | {"lang": "zh"}).items():
        again.query_params[k] = v
    again.run()
    again.switch_page("pages/rollout_lab.py").run()
    assert_clean(again)
    s = again.session_state
    assert (s["vx.lang"], s["vx.patch"], s["vx.layer"], s["rollout.discard"], s["rollout.fusion"]) == \
        ("zh", (2, 5), 3, 0.5, "max")
    assert again.slider(key="vx.rollout.layer").value == 4


def test_the_address_carries_the_stride_and_window_what_ifs():
    def address(at):
        return {k: v[0] if isinstance(v, list) else v for k, v in dict(at.query_params).items()}

    def reopen(q, page):  # a new session on that address
        again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        for k, v in q.items():
            again.query_params[k] = v
        again.run()
        again.switch_page(page).run()
        assert_clean(again)
        return again

    at = open_app("en", "pages/step1_patchify.py")
    at.slider(key="vx.step1.stride.4").set_value(2).run()
    assert address(at)["vx.step1.stride.4"] == "2"
    assert reopen(address(at), "pages/step1_patchify.py").slider(key="vx.step1.stride.4").value == 2
    too_wide = reopen(address(at) | {"vx.step1.stride.4": "9"}, "pages/step1_patchify.py")  # wider than the patch
    assert too_wide.slider(key="vx.step1.stride.4").value == 4  # ignored: the default, the patch size

    at.switch_page("pages/step5_encoder.py").run()
    at.slider(key="step5.windows.size.7x7").set_value(2).run()
    at.toggle(key="step5.windows.shift").set_value(True).run()
    assert_clean(at)
    q = address(at)
    assert (q["step5.windows.size.7x7"], q["step5.windows.shift"]) == ("2", "true")
    again = reopen(q, "pages/step5_encoder.py")
    assert again.slider(key="step5.windows.size.7x7").value == 2 and again.toggle(key="step5.windows.shift").value


def test_an_address_naming_an_own_photo_asks_for_it_again_and_bad_values_are_ignored():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    for k, v in {"lang": "zh", "image": "upload", "patch": "99,-1", "layer": "x", "rollout.discard": "7",
                 "model": "../../etc/passwd"}.items():
        at.query_params[k] = v
    at.run()
    assert_clean(at)
    assert any(translate("app.image.upload_again", "zh") in e.value for e in at.info)
    assert at.session_state["vx.image_source"] == "upload" and at.session_state["vx.patch"] is None
    assert at.session_state["vx.layer"] == 0 and at.session_state["vx.model"] == "fmnist-vit"
