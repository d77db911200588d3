"""The experiment pages in Streamlit's AppTest: clean in both languages, their numbers the same as
vit_core computes them straight (the oracle), and their translated choices kept across a language switch."""

import io
import re

import numpy as np
import pytest

from apptest import assert_clean, charts, choice, live_trace, open_app, plotly_array, texts
from vit_core import data, experiments as ex
from vit_core.i18n import translate

PAGES = ["pages/exp_position.py", "pages/exp_logit_lens.py", "pages/exp_finetune.py"]
CJK = re.compile(r"[\u4e00-\u9fff]")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live():
    return live_trace()  # (model, card, trace) of the app's default model and sample


def metric(at, start: str):
    """The value of the one metric whose label starts with `start`."""
    found = [m.value for m in at.metric if m.label.startswith(start)]
    assert len(found) == 1, [m.label for m in at.metric]
    return found[0]


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("page", PAGES)
def test_experiment_page_renders_in_both_languages(page, lang):
    at = open_app(lang, page)
    assert_clean(at)
    assert bool(CJK.search(at.title[0].value)) == (lang == "zh"), at.title[0].value
    assert at.get("plotly_chart"), "every experiment shows a live chart"
    if lang == "zh":  # every sentence of the page is in Chinese (names like E_pos, CLS and numbers aside)
        english = [s for s in texts(at) if not CJK.search(s) and re.search(r"[a-z]{4,} [a-z]{4,}", s)]
        assert not english, english


def test_position_page_prints_the_measured_proof(live):
    model, _, tr = live
    at = open_app("en", "pages/exp_position.py")
    at.number_input(key="exp.position.seed").set_value(4).run()
    assert_clean(at)
    N = tr.grid[0] * tr.grid[1]
    perms = ex.random_perms(N, 8, seed=0)
    perms[0] = ex.random_perms(N, 1, seed=4)[0]
    res = ex.position_experiment(model, tr.pixels, perms)
    proof = charts(at)["exp.position.proof"]["data"]
    np.testing.assert_allclose(plotly_array(proof[0]["y"]), res.delta_pos.numpy(), rtol=1e-5)
    np.testing.assert_allclose(plotly_array(proof[1]["y"]), res.delta_nopos.numpy(), rtol=1e-3, atol=1e-9)
    assert res.max_delta_nopos < 1e-5 < 1e-2 < res.max_delta_pos
    assert f"{res.max_delta_nopos:.1e}" in at.success[0].value and f"{res.max_delta_pos:.3g}" in at.success[0].value
    if data.is_available():  # the embedded model reads Fashion-MNIST: the ablation runs on its test split
        images, labels = data.load_fashion_mnist("test")
        ab = ex.pos_ablation(model, ex.to_pixels(live[1].preprocess, images[:1000]), labels[:1000])
        assert metric(at, "Accuracy with E_pos (") == f"{ab.accuracy(True):.1%}"
        assert metric(at, "Accuracy with E_pos taken away") == f"{ab.accuracy(False):.1%}"


def test_swapping_two_patches_on_the_position_page():
    at = open_app("zh", "pages/exp_position.py")
    choice(at, "radio", "exp.position.mode").set_value("swap").run()
    at.number_input(key="exp.position.r2").set_value(1).run()
    assert_clean(at)
    assert at.session_state["exp.position.mode"] == "swap"
    assert "2" in charts(at)["exp.position.shuffled"]["layout"]["title"]["text"]  # two patches moved


def test_logit_lens_page_reads_the_lens(live):
    model, card, tr = live
    lens = ex.logit_lens(model, tr)
    at = open_app("en", "pages/exp_logit_lens.py")
    at.slider(key=f"exp.lens.depth.{len(tr.layers)}").set_value(1).run()
    assert_clean(at)
    assert metric(at, "The model's answer") == card.class_names[lens.final_class]
    assert metric(at, "Top-1 for good from depth") == str(lens.settled_depth)
    z = plotly_array(charts(at)["exp.lens.patches"]["data"][1]["z"])
    np.testing.assert_allclose(z, lens.patch_prob[1].numpy(), rtol=1e-5, atol=1e-7)
    rank = charts(at)["exp.lens.rank"]["data"][0]["y"]
    assert plotly_array(rank).tolist() == (lens.final_rank + 1).tolist()


@pytest.mark.skipif(not data.is_available(), reason="Fashion-MNIST is not installed "
                    "(sudo apt-get install -y dataset-fashion-mnist)")
def test_finetune_page_reports_the_probe_and_trains_from_scratch(live):
    model, card, _ = live
    at = open_app("en", "pages/exp_finetune.py")
    assert_clean(at)
    split = {s: data.load_fashion_mnist(s) for s in ("train", "test")}
    task = ex.few_shot_set({k: v[0] for k, v in split.items()}, {k: v[1] for k, v in split.items()}, [5, 7, 9],
                           shots=5, held_out=ex.held_out_per_class(model), seed=0)
    res = ex.probe_task(model, card.preprocess, task, seed=0)
    assert metric(at, "Held-out accuracy") == f"{res.test_accuracy:.1%}"
    assert metric(at, "Training accuracy") == f"{res.train_accuracy:.1%}"
    at.button(key="exp.finetune.scratch.run").click().run()
    assert_clean(at)
    bars = charts(at)["exp.finetune.compare"]["data"]
    assert plotly_array(bars[0]["x"]).tolist() == pytest.approx([res.train_accuracy, res.test_accuracy])


def test_translated_choices_survive_a_language_switch(live):
    _, _, tr = live
    cls = int(tr.probs[0].topk(3).indices[2])
    at = open_app("en", "pages/rollout_lab.py")
    choice(at, "selectbox", "rollout.class").set_value(cls).run()
    choice(at, "radio", "rollout.target").set_value("gradient").run()
    for lang in ("zh", "en", "zh"):
        at.sidebar.button_group(key="vx.lang").set_value(lang).run()
        assert_clean(at)
        at.switch_page("pages/exp_finetune.py").run()  # the next run, where a stale label would arrive
        assert_clean(at)
        at.switch_page("pages/rollout_lab.py").run()
        assert_clean(at)
        assert (at.session_state["rollout.class"], at.session_state["rollout.target"]) == (cls, "gradient")
        assert bool(CJK.search(at.title[0].value)) == (lang == "zh")
    choice(at, "radio", "rollout.target").set_value("occlusion").run()  # and it still works in 中文
    assert_clean(at)
    assert at.session_state["rollout.target"] == "occlusion"


@pytest.mark.skipif(not data.is_available(), reason="Fashion-MNIST is not installed")
def test_the_class_multiselect_survives_a_language_switch():
    at = open_app("en", "pages/exp_finetune.py")
    choice(at, "multiselect", "exp.finetune.classes").set_value([0, 1]).run()
    assert_clean(at)
    at.sidebar.button_group(key="vx.lang").set_value("zh").run()
    assert_clean(at)
    assert at.session_state["exp.finetune.classes"] == [0, 1]
    widget = choice(at, "multiselect", "exp.finetune.classes")
    assert widget.value == [0, 1] and "裤子" in widget.options  # the Chinese class names
    widget.set_value([0, 1, 3]).run()
    assert_clean(at)
    assert at.session_state["exp.finetune.classes"] == [0, 1, 3]


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_finetune_on_own_pictures_fits_the_probe_and_says_what_is_wrong(live, lang):
    """Two classes of the reader's pictures (committed samples and variants), one file that is no picture: the
    page's accuracies and its answer for the current image are the engine's on the same split, the bad file is
    a sentence in the reader's language, and a class name is shown as typed, never as markup."""
    from test_experiments import own_pictures
    from vit_core.images import load_image

    model, card, tr = live
    at = open_app(lang, "pages/exp_finetune.py")
    choice(at, "segmented_control", "exp.finetune.mode").set_value("own").run()
    assert_clean(at)
    assert translate("exp.finetune.own.need", lang, min=2) in [i.value for i in at.info]
    name = "<b>cat</b> *1*"
    at.text_input(key="exp.finetune.own.name.0").set_value(name).run()
    rocket = own_pictures("photo_rocket.jpg", 2)
    photo = io.BytesIO()
    rocket[1].save(photo, "JPEG")
    files = {0: [png_bytes(img) for img in own_pictures("photo_chelsea.jpg", 3)], 1: [png_bytes(rocket[0])]}
    for i, blobs in files.items():
        uploader = at.file_uploader(key=f"exp.finetune.own.files.{i}")
        for j, blob in enumerate(blobs):
            uploader.upload(f"p{j}.png", blob, "image/png")
    uploader.upload("notes_[x].png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image/png")  # class 2: no picture
    at.toggle(key="exp.finetune.own.camera_on.1").set_value(True).run()
    at.camera_input(key="exp.finetune.own.camera.1").upload("camera.jpg", photo.getvalue()).run()  # its second
    files[1].append(photo.getvalue())
    assert_clean(at)
    warned = [w.value for w in at.warning]
    assert len(warned) == 1 and "notes" in warned[0] and bool(CJK.search(warned[0])) == (lang == "zh"), warned

    names = [name, translate("exp.finetune.own.default", lang, i=2)]
    task = ex.own_set(names, [[load_image(b) for b in files[i]] for i in (0, 1)], seed=0)
    res = ex.probe_task(model, card.preprocess, task, seed=0)
    assert metric(at, translate("exp.finetune.train_acc", lang, n=4)) == f"{res.train_accuracy:.1%}"
    assert metric(at, translate("exp.finetune.test_acc", lang, n=1)) == f"{res.test_accuracy:.1%}"
    bars = charts(at)["exp.finetune.new"]["data"][0]
    np.testing.assert_allclose(plotly_array(bars["x"]), res.probe.classify(tr).numpy(), atol=1e-4)
    assert "&lt;b&gt;cat&lt;/b&gt; *1*" in bars["y"] and name not in bars["y"]  # plotly would draw <b> as bold
    assert translate("exp.finetune.own.split", lang, train=4, held=1, seed=0, hold=2 + 1) in [c.value for c in at.caption]
    assert not any("<b>cat</b>" in s for s in texts(at))  # the name reaches no Markdown as markup
