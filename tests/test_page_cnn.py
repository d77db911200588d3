"""The "CNN vs ViT reach" page: its analyses against independent oracles, then the page in AppTest.

Oracles: a linear conv stack with all-ones kernels has a gradient that is non-zero exactly on the
theoretical receptive field, so `rf_span` must draw that support; a ViT token before any block
(z0) depends only on its own patch. The page's numbers are checked against vit_core computed here.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from apptest import assert_clean, default_image, live_trace, open_app, plotly_array, save_vit
from vit_core import analysis, claims, zoo
from vit_core.card import ModelCard, Preprocess
from vit_core.cnn import DEFAULT_CONFIG, build_cnn, layer_specs
from vit_core.i18n import translate
from vit_core.model import ViT, ViTConfig
from vit_core.weights import save_checkpoint

REACHED = analysis.ERF_THRESHOLD  # the share of the peak the page counts as reached
PAGE = "pages/cnn_vs_vit.py"


# ----------------------------------------------------------------------------- analysis: receptive fields

def _ones_stack(specs) -> nn.Sequential:
    """The layers of `specs` as linear ops with positive weights (convs of ones, average pools):
    no ReLU and no max, so no gradient is zeroed or cancelled inside the receptive field."""
    layers = []
    for name, k, s, d, p in specs:
        if name.startswith("pool"):
            layers.append(nn.AvgPool2d(k, s, p))
        else:
            conv = nn.Conv2d(1, 1, k, s, p, dilation=d, bias=False)
            nn.init.ones_(conv.weight)
            layers.append(conv)
    return nn.Sequential(*layers)


@pytest.mark.parametrize("depth", [1, 3, 5, 8])  # a conv, after a pool, a later stage, the last conv
@pytest.mark.parametrize("point", [(0.3, 0.3), (14.0, 9.5), (27.9, 27.9), (5.2, 22.0)])
def test_rf_span_is_the_gradient_support_of_a_positive_linear_stack(depth, point):
    specs = layer_specs(DEFAULT_CONFIG)[:depth]
    field = analysis.receptive_field(specs)[-1]
    net = _ones_stack(specs)
    i, _ = analysis.nearest_unit(point[0], field, 28)
    j, _ = analysis.nearest_unit(point[1], field, 28)
    erf = analysis.effective_receptive_field(net, torch.rand(1, 1, 28, 28), (i, j))[0]  # (28, 28)
    rows, cols = (erf > 0).any(1).nonzero()[:, 0], (erf > 0).any(0).nonzero()[:, 0]
    _, y0, y1 = analysis.rf_span(point[0], field, 28)
    _, x0, x1 = analysis.rf_span(point[1], field, 28)
    assert (rows.min().item(), rows.max().item() + 1) == (y0, y1)  # pixel i spans [i, i+1)
    assert (cols.min().item(), cols.max().item() + 1) == (x0, x1)
    assert (erf > 0).sum().item() == (y1 - y0) * (x1 - x0)  # the whole clipped square, nothing else


def test_nearest_unit_finds_the_unit_under_a_point():
    vgg5 = analysis.receptive_field(analysis.VGG16_LAYERS)[-1]  # 7×7 units, 32 px apart, centres at 16 + 32 i
    assert analysis.nearest_unit(16.0, vgg5, 224) == (0, 16.0)
    assert analysis.nearest_unit(100.0, vgg5, 224) == (3, 112.0)
    assert analysis.nearest_unit(500.0, vgg5, 224) == (6, 208.0)  # clamped to the last unit
    assert analysis.rf_span(16.0, vgg5, 224) == (16.0, 0.0, 122.0)  # 212 px wide, cut at the left edge
    last = analysis.receptive_field(layer_specs(DEFAULT_CONFIG))[-1]  # 7×7 map, centres at 4 i + 2
    assert [analysis.nearest_unit(4 * r + 2, last, 28)[0] for r in range(7)] == list(range(7))  # ViT patch r


# ----------------------------------------------------------------------------- analysis: ERF numbers

def test_erf_fraction_counts_pixels_above_one_percent_of_the_peak():
    erf = torch.zeros(2, 4, 4)
    erf[0, 0, 0], erf[0, 1, 1], erf[0, 2, 2] = 5.0, 0.06, 0.04  # 0.06 / 5 = 1.2 % in, 0.8 % out
    assert analysis.erf_fraction(erf).tolist() == [2 / 16, 0.0]  # an all-zero map reaches nothing
    assert analysis.normalise_peak(erf)[0].max().item() == 1.0


def _tiny_vit(**over) -> ViT:
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=(12, 8), patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2, mlp_dim=32,
                    num_classes=3, **over)
    return ViT(cfg).eval().requires_grad_(False)


@pytest.mark.parametrize("distilled", [False, True])
def test_vit_erf_before_the_blocks_is_the_patch_and_after_a_block_reaches_further(distilled):
    model = _tiny_vit(distilled=distilled)
    prefix, (_, w) = model.cfg.num_prefix_tokens, model.cfg.grid  # 3×2 grid: non-square
    pixels = torch.randn(1, 1, 12, 8)
    r, c = 2, 1
    token = prefix + r * w + c
    z0 = analysis.vit_erf(model, pixels, 0, token)[0]  # z0 = patch embedding + position: its own patch only
    support = (z0 > 0).nonzero()
    assert support[:, 0].min() == 4 * r and support[:, 0].max() == 4 * r + 3
    assert support[:, 1].min() == 4 * c and support[:, 1].max() == 4 * c + 3
    z1 = analysis.vit_erf(model, pixels, 1, token)[0]  # one block of global attention: every pixel counts
    assert (z1 > 0).all() and ((z0 > 0) <= (z1 > 0)).all()
    assert not any(p.grad is not None for p in model.parameters())


def test_cnn_erf_stays_inside_the_theoretical_field():
    torch.manual_seed(0)
    cnn = build_cnn(DEFAULT_CONFIG).eval().requires_grad_(False)
    fields = {f.name: f for f in analysis.receptive_field(layer_specs(DEFAULT_CONFIG))}
    pixels = torch.randn(1, 1, 28, 28)
    for name, cell in [("stage1.conv2", (10, 3)), ("stage2.conv1", (0, 6)), ("stage3.conv2", (3, 3))]:
        erf = analysis.cnn_erf(cnn, pixels, name, cell)[0]
        f = fields[name]
        y0, y1 = max(0, f.start + cell[0] * f.jump - f.rf / 2), min(28, f.start + cell[0] * f.jump + f.rf / 2)
        x0, x1 = max(0, f.start + cell[1] * f.jump - f.rf / 2), min(28, f.start + cell[1] * f.jump + f.rf / 2)
        inside = torch.zeros(28, 28, dtype=torch.bool)
        inside[int(y0):int(y1), int(x0):int(x1)] = True
        assert (erf[~inside] == 0).all() and erf[inside].max() > 0, name


# ----------------------------------------------------------------------------- analysis: data efficiency

def _runs(acc: dict) -> list[dict]:
    """{(model, size): [accuracy per seed]} -> runs as vit_core.studies writes them, each size's budget settled
    by seed 0's doubling check (twice the steps gained nothing, so the base budget stands)."""
    runs = []
    for (m, n), accs in acc.items():
        for s, a in enumerate(accs):
            runs.append({"job": f"de-{m}-{n}-s{s}", "model": m, "train_size": n, "seed": s, "scale": 1,
                         "test_accuracy": a, "final_val_accuracy": a, "cpu_time_s": 60.0 * (s + 2),
                         "stopped_early": s == 1})
        runs.append({**runs[-len(accs)], "job": f"de-{m}-{n}-s0-x2", "scale": 2, "test_accuracy": 0.5,
                     "cpu_time_s": 999.0})  # the check: not shown as a result
    return runs


def test_compare_data_efficiency_reads_the_summary(tmp_path):
    runs = _runs({("vit", 1000): [0.70, 0.72], ("cnn", 1000): [0.80, 0.81],
                  ("vit", 20000): [0.90, 0.91], ("cnn", 20000): [0.905, 0.93], ("vit", 5000): [0.8]})
    (tmp_path / "data_efficiency.json").write_text(json.dumps({"runs": runs, "planned": [r["job"] for r in runs]}))
    de = claims.data_efficiency(tmp_path)
    rows = analysis.compare_data_efficiency(de.summary())
    assert [r["size"] for r in rows] == [1000, 20000, 55000]  # 5000 has no CNN run: left out; 55000: the cards
    assert rows[0]["leader"] == "cnn" and rows[0]["clear"] and rows[0]["diff"] == pytest.approx(0.71 - 0.805)
    assert rows[1]["leader"] == "cnn" and not rows[1]["clear"]  # seed ranges 0.90-0.91 and 0.905-0.93 overlap
    assert rows[1]["seeds"] == 2
    cards = {m: json.loads(claims.CARDS[m].read_text())["extra"]["test_accuracy"] for m in claims.MODELS}
    assert de.cells["vit"][55000].accuracies == (cards["vit"],) and de.cells["vit"][55000].seeds == (0,)
    assert [g.size for g in de.gaps] == [1000, 20000, 55000]  # CNN − ViT per seed both ran
    assert de.gaps[0].gaps == pytest.approx((0.10, 0.09)) and de.gaps[2].gaps == pytest.approx((cards["cnn"] - cards["vit"],))
    assert de.cpu_minutes("vit", 1000) == 2.5 and not de.missing  # 120 and 180 CPU seconds; the 2× check not counted
    assert de.chosen[("vit", 1000)] == 1 and de.checks[("vit", 1000)] == {1: 0.70, 2: 0.70}


def test_de_table_and_budget_table_are_the_studys_columns(tmp_path):
    runs = _runs({("vit", 1000): [0.70, 0.72], ("cnn", 1000): [0.80, 0.81], ("vit", 5000): [0.8],
                  ("cnn", 5000): [0.85]})
    runs = [r for r in runs if r["job"] != "de-cnn-5000-s0-x2"]  # its doubling check has not run yet
    (tmp_path / "data_efficiency.json").write_text(json.dumps({"runs": runs, "planned": [r["job"] for r in runs]}))
    de = claims.data_efficiency(tmp_path)
    tb = claims.de_table(de)
    cards = {m: json.loads(claims.CARDS[m].read_text())["extra"] for m in claims.MODELS}
    assert tb.sizes == [1000, 5000, 55000] and tb.seeds == [2, 1, 1]
    assert tb.cells["vit"][0].accuracies == (0.70, 0.72)
    assert tb.cells["cnn"][2].accuracies == (cards["cnn"]["test_accuracy"],)  # the embedded CNN's card
    assert tb.diff[:2] == pytest.approx([100 * (0.805 - 0.71), 100 * (0.85 - 0.8)])  # CNN − ViT, in points
    assert tb.diff[2] == pytest.approx(100 * (cards["cnn"]["test_accuracy"] - cards["vit"]["test_accuracy"]))
    assert tb.cpu_minutes["vit"][0] == 2.5 and tb.cpu_minutes["cnn"][1] == 2.0  # (120 + 180) / 2 s; 120 s
    assert tb.cpu_minutes["vit"][2] == pytest.approx(cards["vit"]["cpu_time_s"] / 60)
    assert [r["size"] for r in tb.rows] == tb.sizes and tb.rows[0]["leader"] == "cnn"
    assert [r["settled"] for r in tb.rows] == [True, False, False]  # CNN 5k and both 55k checks still to run
    assert tb.gap_sizes == [1000, 5000, 55000]  # per seed: 0.80 − 0.70 and 0.81 − 0.72
    assert (tb.gap_mean[0], tb.gap_lo[0], tb.gap_hi[0]) == pytest.approx((9.5, 9.0, 10.0))
    bt = claims.budget_table(de)  # ViT first, then the CNN; at the full training set 1× is the card
    assert (bt.models, bt.sizes) == (["vit"] * 3 + ["cnn"] * 3, [1000, 5000, 55000] * 2)
    card_val = {m: cards[m]["history"][-1]["val_accuracy"] for m in claims.MODELS}
    assert bt.accuracy == {1: [0.70, 0.8, card_val["vit"], 0.80, 0.85, card_val["cnn"]],
                           2: [0.70, 0.8, None, 0.80, None, None]}
    assert bt.chosen == [1, 1, None, 1, None, None]  # doubling gained nothing; the CNN at 5,000 and 55,000: checking
    assert bt.rising == [False] * 6


def test_the_full_set_is_checked_at_2x_and_the_cards_reproduction_is_judged_by_the_seed_spread(tmp_path):
    cards = {m: claims.card_run(m) for m in claims.MODELS}
    vit_card, cnn_card = cards["vit"]["test_accuracy"], cards["cnn"]["test_accuracy"]

    def run(m, seed, scale, test, val):
        return {"job": f"de-{m}-55000-s{seed}" + (f"-x{scale}" if scale > 1 else ""), "model": m, "train_size": 55000,
                "seed": seed, "scale": scale, "test_accuracy": test, "final_val_accuracy": val, "cpu_time_s": 60.0}
    runs = _runs({("vit", 1000): [0.70, 0.72, 0.705], ("cnn", 1000): [0.80, 0.81, 0.8]}) + [
        run("vit", 0, 2, 0.92, cards["vit"]["final_val_accuracy"] + 0.005),  # 2× pays: the ViT's point moves to 2×
        run("vit", 1, 2, 0.925, 0.0), run("vit", 1, 1, vit_card - 0.019, 0.0),  # the card again: 1.9 points off
        run("cnn", 0, 2, 0.5, cards["cnn"]["final_val_accuracy"] + 0.001),  # 2× gains 0.1: the card's budget stands
        run("cnn", 1, 1, cnn_card + 0.004, 0.0)]
    (tmp_path / "data_efficiency.json").write_text(json.dumps({"runs": runs, "planned": [r["job"] for r in runs]}))
    de = claims.data_efficiency(tmp_path)
    assert de.chosen[("vit", 55000)] == 2 and de.chosen[("cnn", 55000)] == 1
    assert de.cells["vit"][55000].accuracies == (0.92, 0.925)  # the 2× runs, not the card
    assert de.cells["cnn"][55000].accuracies == (cnn_card, cnn_card + 0.004)  # the card and its re-run
    assert de.reruns == {"vit": [vit_card - 0.019], "cnn": [cnn_card + 0.004]}
    assert de.seed_spread("vit") == pytest.approx(0.02) and de.seed_spread("cnn") == pytest.approx(0.01)
    assert de.card_agrees("vit") is True and de.card_agrees("cnn") is True  # 1.9 ≤ 2 points; 0.4 ≤ 1 point
    assert claims.capped(de) == [("vit", 55000, pytest.approx(0.005))]  # the ViT's 2× still gained: the cap
    said = claims.de_rules(de, "en")
    assert translate("cnn.de.rule.capped", "en", gain=0.2, cells=translate(
        "cnn.de.capped_cell", "en", model="ViT", size=55000, pts=0.5)) in said
    assert translate("cnn.de.rule.card", "en", model="ViT", full=55000, card=vit_card, reruns=f"{vit_card - 0.019:.2%}",
                     pts="1.90") + " " + translate("cnn.de.rule.card_in", "en", spread=2.0) in said
    assert any(line.startswith(translate("cnn.de.rule.full", "en", full=55000, vit=0, cnn=0, most=2, hours=0)[:60])
               for line in said)

    runs[-1]["test_accuracy"] = cnn_card + 0.011  # more than the CNN's seeds ever differed: said so
    (tmp_path / "data_efficiency.json").write_text(json.dumps({"runs": runs, "planned": []}))
    de = claims.data_efficiency(tmp_path)
    assert de.card_agrees("cnn") is False
    assert any(translate("cnn.de.rule.card_out", "zh", spread=1.0) in line for line in claims.de_rules(de, "zh"))
    first = json.loads(claims.CARDS["vit"].read_text(encoding="utf-8"))["extra"]["history"][0]
    assert translate("cnn.de.rule.same_code", "zh", loss=first["train_loss"], acc=first["val_accuracy"]) in \
        claims.de_rules(de, "zh")
    runs.append(run("cnn", 2, 1, cnn_card - 0.002, 0.0))  # a third run of the card's budget: 1.3 points from the
    (tmp_path / "data_efficiency.json").write_text(json.dumps({"runs": runs, "planned": []}))  # second one
    de = claims.data_efficiency(tmp_path)
    assert de.seed_spread("cnn") == pytest.approx(0.013) and de.card_agrees("cnn") is True  # 1.1 ≤ 1.3 points
    (tmp_path / "data_efficiency.json").write_text(json.dumps({"runs": runs[-6:-1], "planned": []}))  # no second seed
    assert claims.data_efficiency(tmp_path).card_agrees("vit") is None


def test_a_check_that_ends_at_its_cap_still_gaining_is_named_as_still_rising(tmp_path):
    def check(m, n, vals):  # seed 0's final validation accuracy at 1×, 2×, 4×, 8×
        return [{"job": f"de-{m}-{n}-s0" + (f"-x{k}" if k > 1 else ""), "model": m, "train_size": n, "seed": 0,
                 "scale": k, "test_accuracy": v, "final_val_accuracy": v, "cpu_time_s": 60.0}
                for k, v in zip((1, 2, 4, 8), vals)]
    runs = check("vit", 5000, [0.80, 0.82, 0.84, 0.845]) + check("vit", 1000, [0.70, 0.72, 0.74, 0.741]) + check(
        "cnn", 5000, [0.85, 0.851])
    (tmp_path / "data_efficiency.json").write_text(json.dumps({"runs": runs, "planned": []}))
    de = claims.data_efficiency(tmp_path)
    assert (de.chosen[("vit", 5000)], de.chosen[("vit", 1000)], de.chosen[("cnn", 5000)]) == (8, 4, 1)
    assert claims.capped(de) == [("vit", 5000, pytest.approx(0.005))]  # 1,000: 8× gained 0.1, so 4× is the budget
    assert claims.budget_table(de).rising == [False, True, False, False, False]  # the ViT, then the CNN; 55,000: the cards
    cell = translate("cnn.de.capped_cell", "zh", model=translate("cnn.model.vit", "zh"), size=5000, pts=0.5)
    assert translate("cnn.de.rule.capped", "zh", gain=0.2, cells=cell) in claims.de_rules(de, "zh")
    runs[3]["final_val_accuracy"] = 0.841  # now 8× gains 0.1 at 5,000 too: nothing is still rising
    (tmp_path / "data_efficiency.json").write_text(json.dumps({"runs": runs, "planned": []}))
    de = claims.data_efficiency(tmp_path)
    assert claims.capped(de) == [] and not any("仍在上升" in line for line in claims.de_rules(de, "zh"))


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_verdict_names_the_trend_and_every_step_against_it(lang):
    def rows(gaps):  # CNN − ViT in points at 1k, 5k, 20k, 55k; the ViT at 0.8 everywhere
        return [{"size": n, "a": 0.8, "b": 0.8 + g / 100, "diff": -g / 100, "leader": "cnn" if g > 0 else "vit",
                 "seeds": 3, "clear": True} for n, g in zip((1000, 5000, 20000, 55000), gaps)]
    t = lambda key, **p: translate(key, lang, **p)  # noqa: E731
    said = claims.de_verdict(rows([5.7, 3.2, 1.5, 2.3]), lang)
    assert said[0].startswith(t("cnn.de.pattern.all", model="CNN", n=4))
    assert said[-1].startswith(t("cnn.de.support.yes", n=1000))
    assert t("cnn.de.trend.to_vit") in said[-1] and t("cnn.de.back.to_vit", a=20000, b=55000) in said[-1]
    assert t("cnn.de.back.to_vit", a=1000, b=5000) not in said[-1]
    steady = claims.de_verdict(rows([5.7, 3.2, 1.5, 1.45]), lang)[-1]  # 0.05 points back: within rounding, not said
    assert t("cnn.de.trend.to_vit") in steady and "20,000" not in steady
    other = claims.de_verdict(rows([-1.0, 2.0, 1.0, 3.0]), lang)
    assert other[0].startswith(t("cnn.de.pattern.cross", first="ViT", last="CNN", n1=1000, n2=5000))
    assert t("cnn.de.trend.to_cnn") in other[-1] and t("cnn.de.back.to_cnn", a=5000, b=20000) in other[-1]
    checking = rows([5.7, 3.2, 1.5, 2.3])
    checking[-1]["settled"] = False  # one model's budget check at 55k still running: not read as a finding
    held = claims.de_verdict(checking, lang)
    assert held[0].startswith(t("cnn.de.pattern.all", model="CNN", n=3)) and "55,000" not in " ".join(held[:-1])
    assert held[-1] == t("cnn.de.pending", sizes="55,000")
    assert t("cnn.de.back.to_vit", a=20000, b=55000) not in held[-2]
    sizes = {"en": "1,000, 5,000, 20,000, 55,000", "zh": "1,000、5,000、20,000、55,000"}[lang]  # "、" keeps 1,000 whole
    assert claims.de_verdict([dict(r, settled=False) for r in checking], lang) == [t("cnn.de.pending", sizes=sizes)]


def test_the_formulas_carry_the_live_numbers():
    from vit_core.viz import reach as vz

    distance = vz.distance_formula((14, 10), "16 px", "uniform", "104.3 px")
    assert r"N = 14\times10 = 140,\ P = \text{16 px}" in distance
    assert distance.endswith(r"\bar d_{\text{uniform}} = \text{104.3 px}")
    assert vz.erf_formula(224, 160).endswith(r"\qquad H \times W = 224\times160")


# ----------------------------------------------------------------------------- the page (AppTest)

def _de_dir(folder: Path, vit: list[float], cnn: list[float], sizes=(1000, 5000, 20000), planned=()) -> str:
    """One seed per size; at 55,000 the cards, each with a 2× check that gained nothing (so the card stands)."""
    runs = _runs({**{("vit", n): [a] for n, a in zip(sizes, vit)}, **{("cnn", n): [a] for n, a in zip(sizes, cnn)}})
    for m in claims.MODELS:
        card = claims.card_run(m)
        runs.append({**card, "job": f"de-{m}-55000-s0-x2", "scale": 2, "test_accuracy": 0.5, "source": "study"})
    folder.mkdir(parents=True, exist_ok=True)
    data = {"runs": runs, "planned": [r["job"] for r in runs] + list(planned), "rules": {}}
    (folder / "data_efficiency.json").write_text(json.dumps(data), encoding="utf-8")
    return str(folder)


@pytest.fixture(scope="module")
def assets(tmp_path_factory, fmnist_model):
    """The embedded models and results, or random stand-ins with the same configs while they are being made."""
    tmp = tmp_path_factory.mktemp("cnn_page")
    found = {"vit": fmnist_model, "cnn": "fmnist-cnn", "de": str(claims.EXPERIMENTS), "tmp": tmp}
    if not zoo.embedded_path("fmnist-cnn").is_file():
        torch.manual_seed(0)
        card = ModelCard("fmnist-cnn", "cnn", DEFAULT_CONFIG, Preprocess(size=(28, 28), resize="fit_pad",
                         crop_pct=1.0, mean=(0.286,), std=(0.353,), channels="L", invert="auto"),
                         [f"c{i}" for i in range(10)])
        found["cnn"] = str(save_checkpoint(build_cnn(DEFAULT_CONFIG), card, tmp / "cnn" / "fmnist-cnn")[0])
    return found


def _start(assets, monkeypatch, lang, **state):
    monkeypatch.setenv(zoo.ENV_DIR, str(assets["tmp"] / "models"))
    defaults = {"cnn.model": assets["cnn"], "cnn.de_dir": assets["de"], "vx.model": assets["vit"]}
    at = open_app(lang, PAGE, **(defaults | state))
    assert_clean(at)
    return at


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _figure(at, title: str) -> dict:
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if (spec["layout"].get("title") or {}).get("text") == title:
            return spec
    raise AssertionError(f"no figure titled {title!r}")


def _rf_box(spec: dict) -> tuple[float, ...]:
    s = next(s for s in spec["layout"]["shapes"] if s.get("name") == "rf")
    return s["y0"] + 0.5, s["y1"] + 0.5, s["x0"] + 0.5, s["x1"] + 0.5


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_page_shows_the_numbers_vit_core_computes(assets, monkeypatch, lang):
    t = lambda key, **p: translate(key, lang, **p)  # noqa: E731
    r, c = 2, 5  # the selected patch: every section centres on it
    at = _start(assets, monkeypatch, lang, **{"vx.patch": (r, c)})
    assert at.title[0].value == t("cnn.title")
    assert not any(w.value.startswith(t("cnn.missing_cnn", path="")[:20]) for w in at.warning)
    model, card, tr = live_trace(at.session_state["vx.model"])
    cnn, cnn_card = zoo.load_model(assets["cnn"])

    # 1 · receptive fields: the metric and the drawn square follow the slider
    before = _rf_box(_figure(at, t("cnn.rf.fig", net="ResNet-50", H=224, W=224)))
    at.select_slider(key="cnn.rf.resnet").set_value("layer4.2.conv3")
    at.select_slider(key="cnn.rf.vgg").set_value("pool5")
    last_cnn = layer_specs(cnn_card.config)[-1][0]
    at.select_slider(key="cnn.rf.cnn").set_value(last_cnn).run()
    assert not at.exception
    fields = {f.name: f for f in analysis.receptive_field(analysis.RESNET50_LAYERS)}
    assert fields["layer4.2.conv3"].rf == 427
    assert _metric(at, t("cnn.rf.metric", net="ResNet-50", layer="layer4.2.conv3")) == t("cnn.px", v=427)
    assert _metric(at, t("cnn.rf.metric", net="VGG-16", layer="pool5")) == t("cnn.px", v=212)
    cnn_rf = analysis.receptive_field(layer_specs(cnn_card.config))[-1].rf
    assert _metric(at, t("cnn.rf.metric", net=t("cnn.model.cnn_ours"), layer=last_cnn)) == t("cnn.px", v=cnn_rf)
    after = _rf_box(_figure(at, t("cnn.rf.fig", net="ResNet-50", H=224, W=224)))
    assert after != before
    ref = fields["layer4.2.conv3"]  # the patch centre on the 224×224 view: (r + 0.5) / 7 of the side
    (_, y0, y1), (_, x0, x1) = analysis.rf_span((r + 0.5) * 32, ref, 224), analysis.rf_span((c + 0.5) * 32, ref, 224)
    assert after == pytest.approx((y0, y1, x0, x1))
    assert x1 - x0 < 427  # clipped at the border

    # 2 · attention distance: every head of every layer, and the uniform ceiling
    dist = analysis.mean_attention_distance(tr.attentions, tr.grid, tr.patch_size,
                                            num_prefix_tokens=tr.num_prefix_tokens)[0]
    spec = _figure(at, t("cnn.dist.title"))
    current = next(d for d in spec["data"] if d.get("name") == t("cnn.dist.current"))
    assert plotly_array(current["y"]).tolist() == pytest.approx(dist.reshape(-1).tolist(), abs=1e-4)
    ceiling = analysis.uniform_attention_distance(tr.grid, tr.patch_size)
    assert t("cnn.dist.ceiling", d=ceiling) in json.dumps(spec, ensure_ascii=False)

    # 3 · ERF: the share above 1 % equals vit_core's, for both models, at block 1 and the selected patch
    token = tr.num_prefix_tokens + r * tr.grid[1] + c
    vit_frac = analysis.erf_fraction(analysis.vit_erf(model, tr.pixels, 1, token).cpu()).item()
    assert _metric(at, t("cnn.erf.fraction", model=t("cnn.model.vit"), threshold=REACHED)) == f"{vit_frac:.1%}"
    pixels = cnn_card.preprocess(default_image())
    cell = (4 * r + 2, 4 * c + 2)  # stage1 keeps 28×28: the pixel at the patch centre (4 px patches)
    cnn_frac = analysis.erf_fraction(analysis.cnn_erf(cnn, pixels, "stage1.conv1", cell).cpu()).item()
    assert _metric(at, t("cnn.erf.fraction", model=t("cnn.model.cnn_ours"), threshold=REACHED)) == f"{cnn_frac:.1%}"
    _figure(at, t("cnn.erf.cnn_title", layer="stage1.conv1", i=cell[0], j=cell[1]))
    at.slider(key="vx.cnn.layer").set_value(len(tr.layers)).run()  # the top block
    top = analysis.erf_fraction(analysis.vit_erf(model, tr.pixels, len(tr.layers), token).cpu()).item()
    assert _metric(at, t("cnn.erf.fraction", model=t("cnn.model.vit"), threshold=REACHED)) == f"{top:.1%}"

    # 4 · data efficiency: both models in the figure, one table row per size
    spec = _figure(at, t("cnn.de.title"))
    assert {d["legendgroup"] for d in spec["data"]} == {"vit", "cnn"}
    assert spec["layout"]["xaxis"]["type"] == "log"
    assert at.dataframe, "the results table"


@pytest.mark.slow
def test_the_measurement_sentence_follows_the_json(assets, monkeypatch, tmp_path):
    cnn_wins = _de_dir(tmp_path / "cnn", vit=[0.60, 0.75, 0.85], cnn=[0.75, 0.83, 0.88], planned=["de-vit-1000-s2"])
    vit_wins = _de_dir(tmp_path / "vit", vit=[0.75, 0.83, 0.95], cnn=[0.60, 0.75, 0.85])
    at = _start(assets, monkeypatch, "en", **{"cnn.de_dir": cnn_wins})

    def ours():
        return [m.value for m in at.markdown if translate("cnn.de.pattern.all", "en", model="", n=3)[:12] in m.value]

    first = ours()
    assert first and translate("cnn.de.pattern.all", "en", model="CNN", n=4) in first[0]  # + the cards at 55,000
    assert "15.0 points" in first[0]  # 1,000 images: 75 % vs 60 %
    still = translate("cnn.de.rule.missing", "en", done=14, planned=15,
                      left=translate("cnn.de.job", "en", model="ViT", size=1000, seed=2))
    assert any(still in m.value for m in at.markdown), "an unfinished study says what is still to come"
    gap = _figure(at, translate("cnn.de.gap_title", "en"))["data"][0]  # CNN − ViT by size, in points
    cards = {m: json.loads(claims.CARDS[m].read_text())["extra"]["test_accuracy"] for m in claims.MODELS}
    np.testing.assert_allclose(plotly_array(gap["y"]), [15, 8, 3, 100 * (cards["cnn"] - cards["vit"])], atol=1e-6)
    cpu = _figure(at, translate("cnn.de.cpu_title", "en"))  # CPU minutes of a run: 120 s below 55,000; the cards'
    card_minutes = {m: json.loads(claims.CARDS[m].read_text())["extra"]["cpu_time_s"] / 60 for m in claims.MODELS}
    assert [d["name"] for d in cpu["data"]] == ["ViT", "CNN"] and cpu["layout"]["yaxis"]["type"] == "log"
    for d, m in zip(cpu["data"], claims.MODELS):
        np.testing.assert_allclose(plotly_array(d["y"]), [2, 2, 2, card_minutes[m]])
        assert list(d["x"]) == [1000, 5000, 20000, 55000]
    at.session_state["cnn.de_dir"] = vit_wins
    at.run()
    second = ours()
    cross = translate("cnn.de.pattern.cross", "en", first="ViT", last="CNN", n1=20000, n2=55000)
    assert second and cross in second[0]  # ahead up to 20,000, the embedded CNN's card ahead at 55,000
    assert not any(still[:30] in m.value for m in at.markdown)

    at.session_state["cnn.de_dir"] = str(tmp_path / "broken")  # an unreadable file: a message, the page stays
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "data_efficiency.json").write_text("{not json")
    at.session_state["cnn.model"] = str(tmp_path / "missing.safetensors")
    at.run()
    assert not at.exception and not at.error
    warnings = [w.value for w in at.warning]
    assert translate("cnn.missing_de", "en", path=str(tmp_path / "broken" / "data_efficiency.json")) in warnings
    assert translate("cnn.missing_cnn", "en", path=str(tmp_path / "missing.safetensors")) in warnings
    assert at.get("plotly_chart")  # ResNet-50, VGG-16 and the ViT parts are still drawn


@pytest.mark.slow
def test_another_vit_shows_its_own_erf_and_says_the_cnn_uses_the_embedded_pair(assets, monkeypatch):
    cfg = ViTConfig.variant("Ti/16", image_size=(224, 160), depth=2, num_classes=10)  # 14×10 grid: non-square
    path = save_vit(assets["tmp"] / "models", "tiny-ti", cfg, [f"c{i}" for i in range(10)])
    at = _start(assets, monkeypatch, "zh", **{"vx.model": path, "vx.patch": (13, 9)})  # the last patch
    assert at.session_state["vx.model"] == path
    assert translate("cnn.erf.other_model", "zh") in [i.value for i in at.info]
    titles = [(json.loads(c.proto.spec)["layout"].get("title") or {}).get("text") for c in at.get("plotly_chart")]
    assert translate("cnn.erf.vit_title", "zh", layer=1, token=1 + 13 * 10 + 9) in titles
    cnn_map = re.compile(re.escape(translate("cnn.erf.cnn_title", "zh", layer="@", i="@", j="@")).replace("@", ".*"))
    assert not any(cnn_map.fullmatch(str(x)) for x in titles)  # no CNN map next to a different input
