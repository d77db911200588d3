"""The attention rollout lab: its pure helpers, then the page in AppTest against vit_core computed directly."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from apptest import assert_clean, choice, charts, live_trace, open_app, plotly_array, save_vit
from vit_core import analysis, experiments as ex, zoo
from vit_core.card import Preprocess
from vit_core.i18n import translate
from vit_core.images import image_digest
from vit_core.model import ViTConfig
from vit_core.viz import rollout as vz

PAGE = "pages/rollout_lab.py"
CJK = re.compile(r"[\u4e00-\u9fff]")


# ----------------------------------------------------------------------------- pure helpers (fast)

def test_top_patches_on_a_non_square_grid():
    values = torch.tensor([[0.1, 0.9, 0.3], [0.7, 0.2, 0.5]])  # (2, 3)
    assert analysis.top_patches(values, 3) == [(0, 1, pytest.approx(0.9)), (1, 0, pytest.approx(0.7)),
                                               (1, 2, pytest.approx(0.5))]
    assert len(analysis.top_patches(values, 10)) == 6


def test_overlay_image_blends_viridis_over_the_picture():
    P = 4
    picture = np.random.default_rng(0).random((8, 12, 3))
    values = np.array([[0.0, 1.0, 2.0], [2.0, 0.5, 0.0]])
    viridis = colormaps["viridis"]
    solid = vz.overlay_image(picture, values, P, alpha=1.0, min_side=16)  # the map alone, enlarged 2×
    assert solid.shape == (16, 24, 3) and solid.dtype == np.uint8
    for (i, j), v in np.ndenumerate(values):
        expected = np.round(np.array(viridis(v / 2.0)[:3]) * 255)
        np.testing.assert_array_equal(solid[i * 2 * P, j * 2 * P], expected)  # one patch = 2P output pixels
    clear = vz.overlay_image(picture, values, P, alpha=0.0, min_side=1)
    np.testing.assert_array_equal(clear, np.round(picture * 255).astype(np.uint8))
    capped = vz.overlay_image(picture, values, P, alpha=1.0, vmax=1.0, min_side=1)  # above vmax: the top colour
    np.testing.assert_array_equal(capped[0, 8], capped[0, 4])
    png = Image.open(io.BytesIO(vz.png_bytes(solid)))
    assert png.format == "PNG" and png.size == (24, 16)
    with pytest.raises(ValueError):
        vz.overlay_image(picture, values, 8)


def test_csv_and_json_exports_read_back():
    values = np.array([[0.125, 1 / 3, 0.0], [2e-7, 0.5, 1.0]])
    meta = {"model": "m", "image": "a,b\nc.png", "residual": True, "grid": [2, 3]}
    text = vz.map_csv(values, meta)
    assert text.count("\n") == len(meta) + 2  # the newline in the file name did not start a row
    np.testing.assert_allclose(np.loadtxt(io.StringIO(text), delimiter=",", comments="#"), values, rtol=1e-8)
    curves = {"fractions": torch.tensor([0.0, 0.5, 1.0]), "deletion": torch.tensor([0.9, 0.3, 0.1]),
              "insertion": torch.tensor([0.1, 0.6, 0.9]), "random_deletion": torch.tensor([0.9, 0.5, 0.1]),
              "random_insertion": torch.tensor([0.1, 0.4, 0.9]), "deletion_auc": 0.4, "insertion_auc": 0.55,
              "random_deletion_auc": 0.5, "random_insertion_auc": 0.45}
    record = json.loads(vz.export_json(values, meta, curves))
    assert record["image"] == meta["image"] and record["residual"] is True
    np.testing.assert_allclose(record["map"], values)
    assert record["faithfulness"]["deletion_auc"] == 0.4
    np.testing.assert_allclose(record["faithfulness"]["insertion"], [0.1, 0.6, 0.9], rtol=1e-6)
    assert "faithfulness" not in json.loads(vz.export_json(values, meta))
    table = np.loadtxt(io.StringIO(vz.curves_csv(curves)), delimiter=",", skiprows=1)
    np.testing.assert_allclose(table[:, 1], [0.9, 0.3, 0.1], rtol=1e-6)


def test_map_export_heads_the_files_with_the_map_its_class_and_the_lab_settings():
    from types import SimpleNamespace

    from vit_core.model import ViT

    cfg = ViTConfig(image_size=(16, 24), patch_size=8, embed_dim=16, depth=3, num_heads=2, mlp_dim=32, num_classes=4)
    tr = ViT(cfg).eval().trace(torch.zeros(1, 3, 16, 24))
    card = SimpleNamespace(title="", name="tiny")  # no title: the model's file name
    settings = analysis.RolloutSettings(residual=False, head_fusion="max", discard_ratio=0.30000001, start_layer=1,
                                        end_layer=2)
    values, curves = torch.rand(2, 3), {"deletion_auc": 0.5}
    out = vz.map_export(card, "a b.png", tr, settings, "rollout", values, 3, "cat", curves)
    assert out.values is values and out.curves is curves
    assert out.meta == {"model": "tiny", "image": "a b.png", "map": "rollout", "query_token": "CLS", "grid": [2, 3],
                        "patch_size": 8, "start_layer": 2, "end_layer": 2, "class_index": 3, "class_name": "cat",
                        "residual": False, "head_fusion": "max", "discard_ratio": 0.3}  # layers from 1, as shown
    card.title = "Tiny ViT"
    grad = vz.map_export(card, "a b.png", tr, analysis.RolloutSettings(), "gradient", values, 0, "dog")
    assert grad.curves is None and "residual" not in grad.meta  # rollout's own settings belong to rollout alone
    assert (grad.meta["model"], grad.meta["map"], grad.meta["start_layer"], grad.meta["end_layer"]) == \
        ("Tiny ViT", "gradient", 1, 3)  # no end layer: every layer
    assert json.loads(vz.export_json(values, grad.meta))["class_name"] == "dog"


# ----------------------------------------------------------------------------- the page (AppTest)

@pytest.fixture
def downloads(monkeypatch) -> dict:
    """What the page hands to st.download_button, by file name (the bytes behind each button)."""
    seen = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        if filename:  # st.image in the sidebar stores files too, without a name
            seen[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return seen


def start(lang: str, model: str | None, image: dict | None = None) -> AppTest:
    at = open_app(lang, PAGE, **{"vx.model": model, "vx.image": image})
    assert_clean(at)
    return at


def figure(at: AppTest, key: str) -> dict:
    found = charts(at)
    assert key in found, f"no chart {key!r} among {list(found)}"
    return found[key]


def shown_map(at: AppTest, key: str) -> np.ndarray:
    heatmap = next(d for d in figure(at, key)["data"] if d["type"] == "heatmap")
    return plotly_array(heatmap["z"]).astype(float)


def expected_rollout(tr, **settings) -> np.ndarray:
    joint = analysis.attention_rollout(tr.attentions, num_prefix_tokens=tr.num_prefix_tokens, **settings)
    return analysis.rollout_to_grid(joint, tr.grid, tr.num_prefix_tokens)[0].numpy()


def check_faithfulness(at, model, tr, scores: np.ndarray, class_index: int, steps: int):
    """The curves the page draws are probabilities and equal deletion_insertion run here on the shown map."""
    predict = lambda x: model(x).softmax(-1)  # noqa: E731
    grid, P = tr.grid, tr.patch_size
    ours = analysis.deletion_insertion(predict, tr.pixels, torch.as_tensor(scores), grid, P, class_index, steps=steps)
    seeded = analysis.random_scores(grid, torch.Generator().manual_seed(0))  # the page's fixed seed
    rand = analysis.deletion_insertion(predict, tr.pixels, seeded, grid, P, class_index, steps=steps)
    for kind in ("deletion", "insertion"):
        fig = figure(at, f"rollout.{kind}")
        curve, random_curve = (plotly_array(d["y"]) for d in fig["data"][:2])
        assert len(curve) == len(random_curve) == steps + 1
        assert all(np.all((c >= 0) & (c <= 1)) for c in (curve, random_curve)), "probabilities"
        np.testing.assert_allclose(curve, ours[kind].numpy(), atol=1e-5)
        np.testing.assert_allclose(random_curve, rand[kind].numpy(), atol=1e-5)
        label = translate(f"rollout.faith.{kind}_auc", at.session_state["vx.lang"])
        shown_auc = float(next(m.value for m in at.metric if m.label == label))
        assert shown_auc == pytest.approx(ours[f"{kind}_auc"], abs=6e-4)
    # with nothing removed the model sees the image itself: the deletion curve starts at the class probability
    assert ours["deletion"][0].item() == pytest.approx(tr.probs[0, class_index].item(), abs=1e-5)
    return ours


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_page_shows_live_maps_checks_faithfulness_and_exports_what_it_shows(lang, fmnist_model, downloads):
    at = start(lang, fmnist_model)
    model, card, tr = live_trace(fmnist_model)
    L = len(tr.layers)
    assert bool(CJK.search(at.title[0].value)) == (lang == "zh")
    assert any(e.value.count("**") >= 2 and translate("app.sample.fmnist_ankle_boot", lang) in e.value
               for e in at.info), "names the image (a sample by its title) and says where to upload"
    assert {"rollout.map", "rollout.raw", "rollout.grad"} <= {el.key for el in at.get("plotly_chart")}

    # the default map is the paper's rollout (mean, residual, nothing discarded, every layer) of this model
    shown = shown_map(at, "rollout.map")
    expected = expected_rollout(tr, residual=True, head_fusion="mean", discard_ratio=0.0, start_layer=0, end_layer=L)
    np.testing.assert_allclose(shown, expected, rtol=1e-5, atol=1e-7)
    raw = tr.attentions[0][0, 0, 0, tr.num_prefix_tokens:].reshape(tr.grid)  # layer 1, head 1 by default
    np.testing.assert_allclose(shown_map(at, "rollout.raw"), raw.numpy(), rtol=1e-5, atol=1e-7)
    assert float(at.metric[0].value) == pytest.approx(1.0, abs=1e-4)  # the CLS row of R sums to 1
    assert float(at.metric[1].value) == pytest.approx(expected.sum(), abs=1e-4)

    # the exports are the shown map with its settings
    csv_name = next(n for n in downloads if n.endswith(".csv"))
    csv = downloads[csv_name].decode() if isinstance(downloads[csv_name], bytes) else downloads[csv_name]
    np.testing.assert_allclose(np.loadtxt(io.StringIO(csv), delimiter=",", comments="#", ndmin=2), shown, rtol=1e-6)
    record = json.loads(downloads[next(n for n in downloads if n.endswith(".json"))])
    np.testing.assert_allclose(record["map"], shown, rtol=1e-6)
    assert (record["image"], record["head_fusion"], record["residual"], record["discard_ratio"]) == \
        ("fmnist_ankle_boot.png", "mean", True, 0.0)
    assert (record["start_layer"], record["end_layer"], record["grid"]) == (1, L, list(tr.grid))
    png = Image.open(io.BytesIO(downloads[next(n for n in downloads if n.endswith(".png"))]))
    assert png.format == "PNG" and min(png.size) >= 448

    # the faithfulness check of this cheap model ran unasked, on the predicted class, every patch a step (49 for 7×7)
    assert "rollout.run" not in [b.key for b in at.button], "a cheap check needs no click"
    top1 = int(tr.probs[0].argmax())
    steps = at.slider(key=f"rollout.steps.{tr.grid[0] * tr.grid[1]}").value
    ours = check_faithfulness(at, model, tr, shown, top1, steps)
    assert record["faithfulness"]["deletion_auc"] == pytest.approx(ours["deletion_auc"], abs=1e-6)
    assert record["class_index"] == top1
    assert any(n.endswith("_curves.csv") for n in downloads)


@pytest.mark.slow
def test_occlusion_beside_the_rollouts_agrees_and_is_judged_with_them(fmnist_model, downloads):
    """Occlusion is the engine's, its rank correlation with the shown rollout is Spearman's, the three maps and
    random are judged in one table, and the curves and exports follow the map picked, with the lab's settings."""
    at = start("zh", fmnist_model)
    model, _, tr = live_trace(fmnist_model)
    L = len(tr.layers)
    cls = int(tr.probs[0].topk(2).indices[1])  # the runner-up class
    choice(at, "selectbox", "rollout.class").set_value(cls).run()
    at.slider(key="rollout.discard").set_value(0.3).run()
    at.slider(key=f"rollout.layers.{L}").set_value((2, L)).run()
    at.slider(key="rollout.orders").set_value(2).run()
    assert_clean(at)
    occlusion = ex.occlusion_map(ex.predictor(model), tr.pixels, tr.grid, tr.patch_size, cls)
    np.testing.assert_allclose(shown_map(at, "rollout.occlusion"), occlusion.numpy(), atol=1e-5)
    rollout = shown_map(at, "rollout.map")
    np.testing.assert_allclose(rollout, expected_rollout(tr, discard_ratio=0.3, start_layer=1, end_layer=L), atol=1e-7)
    agree, _, faith = at.dataframe[0].value, at.dataframe[1].value, at.dataframe[2].value
    assert agree.iloc[0, 1] == pytest.approx(ex.spearman(occlusion, torch.tensor(rollout)), abs=1e-4)
    res = ex.compare_maps(model, tr, cls, discard_ratio=0.3, start_layer=1, end_layer=L,
                          steps=tr.grid[0] * tr.grid[1], random_orders=2)
    for row, name in enumerate(ex.MAPS + ("random",)):
        assert faith.iloc[row, 1] == pytest.approx(res.faithfulness[name].deletion_auc, abs=1e-5)
        assert faith.iloc[row, 2] == pytest.approx(res.faithfulness[name].insertion_auc, abs=1e-5)
    assert faith.iloc[0, 3] == translate(f"rollout.faith.short.{res.verdict('occlusion')}", "zh")

    downloads.clear()
    choice(at, "radio", "rollout.target").set_value("occlusion").run()
    assert_clean(at)
    curve = plotly_array(figure(at, "rollout.deletion")["data"][0]["y"])
    np.testing.assert_allclose(curve, res.faithfulness["occlusion"].deletion.numpy(), atol=1e-5)
    record = json.loads(downloads[next(n for n in downloads if n.endswith("_occlusion.json"))])
    np.testing.assert_allclose(record["map"], occlusion.numpy(), atol=1e-5)
    assert record["faithfulness"]["random_insertion_auc"] == pytest.approx(res.faithfulness["random"].insertion_auc,
                                                                           abs=1e-5)
    for lang in ("en", "zh"):  # the class and the map picked survive a language switch
        at.sidebar.button_group(key="vx.lang").set_value(lang).run()
        assert_clean(at)
        assert (at.session_state["rollout.class"], at.session_state["rollout.target"]) == (cls, "occlusion")


@pytest.mark.slow
def test_a_costly_model_waits_for_the_click_and_keeps_the_result(fmnist_model, monkeypatch):
    monkeypatch.setattr(ex, "AUTO_MACS", 0)  # every model is costly now
    at = start("en", fmnist_model)
    model, _, tr = live_trace(fmnist_model)
    N = tr.grid[0] * tr.grid[1]
    assert "rollout.occlusion" not in charts(at) and "rollout.deletion" not in charts(at)
    passes = ex.comparison_passes(N, at.slider(key=f"rollout.steps.{N}").value, 1)
    assert str(passes) in at.button(key="rollout.run").label
    at.button(key="rollout.run").click().run()
    assert_clean(at)
    assert {"rollout.occlusion", "rollout.deletion", "rollout.insertion"} <= set(charts(at))
    at.toggle(key="rollout.residual").set_value(True).run()  # a rerun with the same settings keeps it
    assert "rollout.deletion" in charts(at)
    at.slider(key="rollout.discard").set_value(0.5).run()  # new settings: the old result is not passed off as theirs
    assert_clean(at)
    assert "rollout.deletion" not in charts(at) and at.button(key="rollout.run").label
    assert any(translate("rollout.faith.stale", "en") == c.value for c in at.caption)


@pytest.mark.slow
def test_a_failed_gradient_map_is_a_message_and_the_tables_still_name_all_three(fmnist_model, monkeypatch):
    import ui

    def out_of_memory(*args):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(ui, "attention_gradients", out_of_memory)
    at = start("en", fmnist_model)  # the comparison itself runs (a cheap model) and draws the gradient map too
    assert "rollout.grad" not in charts(at) and "rollout.occlusion" in charts(at)
    assert any("out of memory" in w.value for w in at.warning)
    names = [translate(f"rollout.map.{m}", "en") for m in ex.MAPS]
    auc = next(d.value for d in at.dataframe if translate("rollout.faith.col.map", "en") in d.value.columns)
    assert auc[translate("rollout.faith.col.map", "en")].tolist()[:3] == names
    assert translate("rollout.map.gradient", "en") not in choice(at, "radio", "rollout.target").options


@pytest.mark.slow
def test_every_control_changes_the_map(fmnist_model):
    at = start("en", fmnist_model)
    _, _, tr = live_trace(fmnist_model)
    L = len(tr.layers)
    settings = dict(residual=True, head_fusion="mean", discard_ratio=0.0, start_layer=0, end_layer=L)
    before = shown_map(at, "rollout.map")
    changes = [("slider", "rollout.discard", 0.5, dict(discard_ratio=0.5)),
               ("radio", "rollout.fusion", "max", dict(head_fusion="max")),
               ("toggle", "rollout.residual", False, dict(residual=False)),
               ("slider", f"rollout.layers.{L}", (2, L - 1), dict(start_layer=1, end_layer=L - 1))]
    for kind, key, value, change in changes:
        (choice(at, kind, key) if kind == "radio" else getattr(at, kind)(key=key)).set_value(value).run()
        assert_clean(at)
        settings |= change
        now = shown_map(at, "rollout.map")
        assert not np.allclose(now, before, rtol=1e-3, atol=0), f"{key} = {value} did not change the map"
        np.testing.assert_allclose(now, expected_rollout(tr, **settings), rtol=1e-5, atol=1e-7)
        before = now

    # gradient rollout follows the class: two classes, two maps, each equal to the computation done here
    model, _, _ = live_trace(fmnist_model)
    grads = {}
    for cls in [int(i) for i in tr.probs[0].topk(2).indices]:
        choice(at, "selectbox", "rollout.class").set_value(cls).run()
        assert_clean(at)
        _, g = analysis.attention_gradients(model, tr.pixels, cls)
        R = analysis.gradient_rollout(tr.attentions, g, start_layer=1, end_layer=L - 1)
        grads[cls] = shown_map(at, "rollout.grad")
        np.testing.assert_allclose(grads[cls], analysis.rollout_to_grid(R, tr.grid)[0].numpy(), rtol=1e-4, atol=1e-7)
    first, second = grads.values()
    assert not np.allclose(first, second, rtol=1e-3, atol=0)


@pytest.mark.slow
def test_own_photo_on_a_deit_like_model_with_a_non_square_grid(tmp_path, monkeypatch, downloads):
    """Two prefix tokens, a 2×3 grid, 1000 classes: the page never assumes one CLS or a square grid."""
    cfg = ViTConfig(image_size=(32, 48), patch_size=16, embed_dim=32, depth=3, num_heads=2, mlp_dim=64,
                    num_classes=1000, distilled=True)
    monkeypatch.setenv(zoo.ENV_DIR, str(tmp_path))
    model_id = save_vit(tmp_path, "tiny-deit", cfg, [f"class {i}" for i in range(1000)], seed=1, std=0.15,
                        preprocess=Preprocess(size=(32, 48), crop_pct=1.0), title="tiny DeiT")
    buf = io.BytesIO()
    photo = Image.new("RGB", (120, 80), (200, 40, 40))
    photo.paste((30, 30, 220), (60, 10, 110, 70))
    photo.save(buf, "PNG")
    image = {"data": buf.getvalue(), "name": "my photo.png", "digest": image_digest(buf.getvalue())}

    at = start("en", model_id, image)
    model, _, tr = live_trace(model_id, image)
    assert tr.num_prefix_tokens == 2 and tr.grid == (2, 3)
    assert any("my photo.png" in e.value for e in at.info)
    shown = shown_map(at, "rollout.map")
    np.testing.assert_allclose(shown, expected_rollout(tr, start_layer=0, end_layer=3), rtol=1e-5, atol=1e-7)
    assert float(at.metric[0].value) == pytest.approx(1.0, abs=1e-4)

    check_faithfulness(at, model, tr, shown, int(tr.probs[0].argmax()), steps=6)  # cheap: shown unasked
    assert Path(next(n for n in downloads if n.endswith(".png"))).stem == "my_photo_rollout"
