"""The app in Streamlit's AppTest: every page in both languages, uploads, and failures as messages."""

import io
import re

import pytest
from PIL import Image

from apptest import ROOT, RAW_KEY, assert_clean, open_app, select_patch

PAGES = ["pages/home.py", "pages/step1_patchify.py", "pages/step2_project.py", "pages/step3_position.py",
         "pages/step4_cls.py", "pages/step5_encoder.py", "pages/step6_classify.py", "pages/rollout_lab.py",
         "pages/cnn_vs_vit.py", "pages/exp_position.py", "pages/exp_logit_lens.py", "pages/exp_occlusion.py",
         "pages/exp_windows.py", "pages/exp_finetune.py"]
CJK = re.compile(r"[\u4e00-\u9fff]")

pytestmark = pytest.mark.slow


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


def _jpeg(size=(320, 240), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, color)
    img.paste((20, 20, 220), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    img.save(buf, "JPEG")
    return buf.getvalue()


def test_upload_a_real_image_then_a_broken_one():
    at = open_app("en")
    at.sidebar.segmented_control(key="vx.image_source").set_value("upload").run()
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
    at.sidebar.segmented_control(key="vx.image_source").set_value("upload").run()
    at.sidebar.file_uploader(key="vx.upload").upload("grace_hopper.jpg", data, "image/jpeg").run()
    assert_clean(at)
    assert at.session_state["vx.image"]["digest"] != before


def test_a_sample_can_be_chosen():
    at = open_app("zh")
    at.sidebar.selectbox(key="vx.sample").select("photo_chelsea.jpg").run()
    assert_clean(at)
    assert at.session_state["vx.image"]["name"] == "photo_chelsea.jpg"


def test_a_broken_checkpoint_is_a_message_and_the_model_stays(tmp_path, monkeypatch):
    bad = tmp_path / "broken_vit.safetensors"
    bad.write_bytes(b"this is not a safetensors file")
    monkeypatch.setenv("VIT_EXPLORER_MODELS", str(tmp_path))
    for lang in ("en", "zh"):
        at = open_app(lang)
        model_before = at.session_state["vx.model"]
        at.sidebar.selectbox(key="vx.model_choice").select(str(bad)).run()
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
    at.sidebar.selectbox(key="vx.model_choice").select(entry.id).run()
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
    options = at.sidebar.selectbox(key="vx.sample").options
    assert len(options) == len(list((ROOT / "assets" / "samples").glob("*.[pj][np]g")))
    assert any("CPU" in c.value or "CUDA" in c.value for c in at.sidebar.caption)


@pytest.mark.parametrize("page", PAGES)
def test_pages_work_for_an_rgb_deit_on_a_non_square_grid(page, deit_model):
    at = open_app("en", page, **{"vx.model": deit_model})
    assert_clean(at)
    assert at.session_state["vx.model"] == deit_model
