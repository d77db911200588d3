"""Steps 4-6 (CLS token, encoder, classify): the pure functions behind the pages, their figures, the pages.

Oracles: the model's own trace (attention weights, LayerNorm output, logits), hand-made attention
patterns, and arithmetic. The page tests (AppTest, slow) run the default model in both languages and
compare what the page draws with a trace computed here straight from vit_core; then a DeiT-like model
with a non-square grid and 1000 classes, and a CNN (which these pages must decline politely).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from apptest import assert_clean, choice, charts, live_trace, open_app, plotly_array, select_patch, texts
from vit_core import analysis, experiments as ex
from vit_core.i18n import placeholders, translate
from vit_core.model import ViT, ViTConfig
from vit_core.viz import encoder as vz

LANGS = ["en", "zh"]


def tiny(distilled: bool = False, image_size=(32, 48), classes: int = 7, seed: int = 0):
    """A random ViT on a non-square 4×6 grid, and its trace on a batch of two images."""
    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=image_size, patch_size=8, in_chans=3, embed_dim=32, depth=3, num_heads=4,
                    mlp_dim=64, num_classes=classes, distilled=distilled)
    model = ViT(cfg).eval()
    return model, model.trace(torch.randn(2, 3, *image_size))


# ----------------------------------------------------------------------------- analysis

def test_prefix_attention_maps_reads_the_prefix_row_onto_the_grid():
    grid, p = (2, 3), 2  # non-square, CLS + DIST: T = 8
    T = p + 6
    a = torch.zeros(2, 1, 2, T, T)  # (L, B, heads, T, T)
    a[0, 0, :, 0, p + 1 * 3 + 2] = 1.0  # layer 1: CLS looks only at patch (1, 2), in both heads
    a[1, 0, 0, 0, 0] = 1.0  # layer 2, head 1: CLS looks at itself
    a[1, 0, 1, 0, p + 0 * 3 + 1] = 1.0  # layer 2, head 2: at patch (0, 1)
    a[:, 0, :, 1, p] = 1.0  # DIST always looks at patch (0, 0)
    maps = analysis.prefix_attention_maps(list(a), grid, num_prefix_tokens=p)  # (L, B, h, w)
    assert maps.shape == (2, 1, 2, 3)
    expected0 = torch.zeros(2, 3)
    expected0[1, 2] = 1.0
    expected1 = torch.zeros(2, 3)
    expected1[0, 1] = 0.5  # the mean over heads; the other half went to a prefix token
    torch.testing.assert_close(maps[0, 0], expected0)
    torch.testing.assert_close(maps[1, 0], expected1)
    dist = analysis.prefix_attention_maps(list(a), grid, num_prefix_tokens=p, token=1)
    assert torch.all(dist[:, 0, 0, 0] == 1) and dist.sum() == 2


def test_prefix_attention_maps_on_a_real_trace_leave_the_prefix_share_out():
    for distilled in (False, True):
        _, tr = tiny(distilled)
        p = tr.num_prefix_tokens
        maps = analysis.prefix_attention_maps(tr.attentions, tr.grid, p)
        assert maps.shape == (len(tr.layers), 2, *tr.grid)
        for layer, a in enumerate(tr.attentions):
            torch.testing.assert_close(maps[layer].reshape(2, -1), a[:, :, 0, p:].mean(1))
            prefix_share = a[:, :, 0, :p].sum(-1).mean(1)  # (B,)
            torch.testing.assert_close(maps[layer].sum((-2, -1)) + prefix_share, torch.ones(2))
    with pytest.raises(ValueError):
        analysis.prefix_attention_maps(tr.attentions, (5, 5), p)


def test_query_attention_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # (T=2, d=2)
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = analysis.query_attention(q, k, 0)
    torch.testing.assert_close(out["scores"], torch.tensor([2 ** -0.5, 0.0]))
    e = torch.exp(torch.tensor([2 ** -0.5, 0.0]))
    torch.testing.assert_close(out["weights"], e / e.sum())


@pytest.mark.parametrize("distilled", [False, True])
def test_query_attention_equals_the_models_attention(distilled):
    _, tr = tiny(distilled)
    T = tr.tokens.shape[1]
    for layer in tr.layers:
        for query in (0, tr.num_prefix_tokens, T - 1):
            out = analysis.query_attention(layer.q, layer.k, query)  # all images and heads at once
            torch.testing.assert_close(out["weights"], layer.attention[:, :, query], atol=1e-6, rtol=0)
            torch.testing.assert_close(out["weights"].sum(-1), torch.ones(2, layer.q.shape[1]))
            one = analysis.query_attention(layer.q[1, 2], layer.k[1, 2], query)  # one image, one head
            torch.testing.assert_close(one["weights"], layer.attention[1, 2, query], atol=1e-6, rtol=0)


def test_sublayer_norms_are_what_each_sub_block_adds_to_the_stream():
    _, tr = tiny()
    out = analysis.sublayer_norms(tr.layers)
    L, (B, T, _) = len(tr.layers), tr.tokens.shape
    assert out["attention"].shape == out["mlp"].shape == (L, B, T)
    z = tr.hidden_states
    for i, layer in enumerate(tr.layers):  # the residual stream, differenced independently
        torch.testing.assert_close(out["attention"][i], (layer.after_attn - z[i]).norm(dim=-1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out["mlp"][i], (z[i + 1] - layer.after_attn).norm(dim=-1), atol=1e-5, rtol=1e-5)


def test_attention_cost_of_vit_b16_and_its_growth_with_n_squared():
    # B/16 at 224: 196 patches + CLS = 197 tokens; 197² = 38,809; ×12 heads = 465,708; ×12 layers = 5,588,496
    cost = analysis.attention_cost(197, 12, 12, 768)
    assert cost == analysis.AttentionCost(per_head=38_809, per_layer=465_708, total=5_588_496,
                                          mult_adds=2 * 38_809 * 768 * 12)
    finer = analysis.attention_cost(28 * 28 + 1, 12, 12, 768)  # patch 8: four times the patches
    assert 15 < finer.total / cost.total < 16.5


@pytest.mark.parametrize("distilled", [False, True])
def test_classify_readout_reproduces_the_trace(distilled):
    model, tr = tiny(distilled)
    model.requires_grad_(False)  # as the app loads it (the trace's tensors are inference tensors)
    heads = [(model.head.weight, model.head.bias)]
    if distilled:
        heads.append((model.head_dist.weight, model.head_dist.bias))
    norm = (model.norm.weight, model.norm.bias, model.norm.eps)
    out = analysis.classify_readout(tr.hidden_states[-1], norm, heads)
    p = tr.num_prefix_tokens
    assert len(out["head_logits"]) == len(tr.head_logits) == p
    torch.testing.assert_close(out["y"], tr.final[:, :p])
    for mine, theirs in zip(out["head_logits"], tr.head_logits):
        torch.testing.assert_close(mine, theirs)
    torch.testing.assert_close(out["logits"], tr.logits)
    torch.testing.assert_close(out["probs"].sum(-1), torch.ones(2))
    # the head alone, on the trace's own LayerNorm output of CLS (the page's second check)
    torch.testing.assert_close(F.linear(tr.final[:, 0], model.head.weight, model.head.bias), tr.head_logits[0])
    # a readout that skipped the LayerNorm would not match: the check can fail
    wrong = analysis.classify_readout(tr.hidden_states[-1], (torch.ones(32), torch.zeros(32), 1e6), heads)
    assert not torch.allclose(wrong["logits"], tr.logits, atol=1e-3)


@pytest.mark.parametrize("step", ["step4", "step5", "step6"])
def test_every_string_has_both_languages_with_the_same_placeholders(step):
    table = json.loads((Path(__file__).parent.parent / "assets" / "i18n" / f"{step}.json").read_text(encoding="utf-8"))
    for key, entry in table.items():
        assert entry.get("en") and entry.get("zh"), key
        assert placeholders(entry["en"]) == placeholders(entry["zh"]), key


@pytest.mark.parametrize("distilled", [False, True])
def test_the_overview_and_step6_readouts_are_the_trace_read_by_hand(distilled):
    _, tr = tiny(distilled)
    p, (h, w), probs = tr.num_prefix_tokens, tr.grid, tr.probs[0]
    order = probs.argsort(descending=True).tolist()
    ov = analysis.overview(tr)
    assert [i for i, _ in ov.top] == order[:5] and ov.top[0][1] == pytest.approx(float(probs.max()))
    torch.testing.assert_close(ov.cls_attention.flatten(), tr.attentions[-1][0, :, 0, p:].mean(0))
    assert ov.centre == (h // 2, w // 2)
    e = F.normalize(tr.pos_embed[0, p:], dim=-1)
    torch.testing.assert_close(ov.similarity.flatten(), e @ e[ov.centre[0] * w + ov.centre[1]])

    fn = analysis.final_norm(tr)
    torch.testing.assert_close(fn.y, tr.final[0, 0])
    assert fn.y_mean == 0.0 and str(fn.y_mean) == "0.0"  # LayerNorm centres it; printed without a minus sign
    assert fn.z_std == pytest.approx(float(tr.hidden_states[-1][0, 0].std(unbiased=False)), abs=5e-4)

    top = analysis.top_k(tr, 3)
    assert top.indices == order[:3] and top.rest == pytest.approx(float(probs.sort().values[:-3].sum()), abs=1e-6)
    torch.testing.assert_close(top.logits, tr.logits[0, order[:3]])
    assert len(top.head_logits) == p
    torch.testing.assert_close(sum(top.head_logits) / p, top.logits)  # DeiT's logits: the heads' mean


# ----------------------------------------------------------------------------- figures

def fig_data(fig) -> list[dict]:
    return json.loads(fig.to_json())["data"]


def test_map_grid_puts_every_panel_on_one_scale_with_one_colorbar():
    maps = np.stack([np.full((4, 6), 0.1), np.full((4, 6), 0.2), np.arange(24.0).reshape(4, 6) / 100])
    fig = vz.map_grid(maps, ["a", "b", "c"], colorbar_title="attention", cols=2, mark=(3, 5))
    data = fig_data(fig)
    assert len(data) == 3
    assert {(d["zmin"], d["zmax"]) for d in data} == {(0, 0.23)}
    assert [d.get("showscale") for d in data].count(True) == 1
    assert all(plotly_array(d["z"]).shape == (4, 6) for d in data)  # non-square grids keep their shape
    np.testing.assert_allclose(plotly_array(data[2]["z"]), maps[2])
    assert len(fig.layout.shapes) == 3  # the marked patch in every panel


@pytest.mark.parametrize("prefix", [1, 2])
def test_token_heatmap_names_rows_readably(prefix):
    N = 196
    labels = ["CLS", "DIST"][:prefix] + [f"patch {i}" for i in range(N)]
    values = np.random.default_rng(0).normal(size=(prefix + N, 8))
    fig = vz.token_heatmap(values, labels, colorbar_title="v", x_title="d", y_title="t", hover="%{y}",
                           prefix_rows=prefix, mark_row=prefix + 5)
    (data,) = fig_data(fig)
    assert data["y"] == labels  # hover names every row
    assert data["zmin"] == -data["zmax"] == pytest.approx(-np.abs(values).max(), rel=1e-6)
    ticks = list(fig.layout.yaxis.tickvals)
    texts = list(fig.layout.yaxis.ticktext)
    assert texts[0] == " · ".join(labels[:prefix])  # CLS (and DIST, merged when rows are thin) come first
    rows = [labels.index(v) for v in ticks]
    assert 8 <= len(rows) <= 18 and min(np.diff(rows)) >= 10  # 197 rows in ~430 px: ticks ≥ 16 px apart
    assert len(fig.layout.shapes) == 2  # the prefix box and the marked row


def test_a_wide_token_map_sends_every_kth_feature_at_its_own_index():
    values = np.random.default_rng(0).standard_normal((197, 768)).astype(np.float32)  # ViT-B/16's z0
    fig = vz.token_heatmap(values, [str(i) for i in range(197)], colorbar_title="v", x_title="d", y_title="t",
                           hover="%{x}")
    trace = fig.data[0]
    assert np.asarray(trace.z).shape == (197, 256) and list(trace.x) == list(range(0, 768, 3))
    np.testing.assert_array_equal(np.asarray(trace.z, dtype=np.float32), values[:, ::3])
    narrow = vz.token_heatmap(values[:, :64], [str(i) for i in range(197)], colorbar_title="v", x_title="d",
                              y_title="t", hover="")
    np.testing.assert_array_equal(np.asarray(narrow.data[0].z, dtype=np.float32), values[:, :64])  # D = 64: all


def test_token_heatmap_names_every_row_of_a_short_sequence():
    labels = ["CLS"] + [f"patch {i}" for i in range(6)]
    fig = vz.token_heatmap(np.ones((7, 3)), labels, colorbar_title="v", x_title="d", y_title="t", hover="",
                           prefix_rows=1)
    assert list(fig.layout.yaxis.ticktext) == labels


def test_qkv_heatmaps_share_one_scale_and_the_token_axis():
    rng = np.random.default_rng(1)
    mats = {"Q": rng.normal(size=(26, 8)), "K": 3 * rng.normal(size=(26, 8)), "V": rng.normal(size=(26, 8))}
    labels = ["CLS", "DIST"] + [f"p{i}" for i in range(24)]
    data = fig_data(vz.qkv_heatmaps(mats, labels, colorbar_title="v", x_title="d", hover="", prefix_rows=2))
    zmax = max(np.abs(m).max() for m in mats.values())
    assert all(d["zmax"] == pytest.approx(zmax, rel=1e-6) and d["zmin"] == -d["zmax"] for d in data)
    assert [d.get("showscale") for d in data].count(True) == 1
    np.testing.assert_allclose(plotly_array(data[1]["z"]), mats["K"], rtol=1e-6)


def test_key_bars_colour_prefix_keys_and_the_query():
    (data,) = fig_data(vz.key_bars(np.arange(5.0), list("abcde"), y_title="", x_title="", hover="", prefix=2, mark=3))
    assert data["marker"]["color"] == [vz.PREFIX_COLOR, vz.PREFIX_COLOR, vz.PATCH_COLOR, vz.HIGHLIGHT, vz.PATCH_COLOR]


def test_the_encoder_formulas_carry_the_models_sizes():
    # ViT-B/16 at 224: T = 197 tokens of D = 768, 12 layers of 12 heads of d = 64, an MLP 768 -> 3072 -> 768
    block, attention = vz.encoder_formulas(tokens=197, dim=768, depth=12, heads=12, mlp=3072)
    assert r"_{197\times768}" in block and r"\ell = 1 \dots 12" in block
    for part in (r"^{197\times64}", r"^{64\times197}", r"\sqrt{64}", r"\mathbb{R}^{197\times197}", r"A_{12} V_{12}",
                 r"768 \to 3072 \xrightarrow{\mathrm{GELU}} 768"):
        assert part in attention, part
    assert r"\frac{\overbrace{Q_h}" in attention  # Q_h K_hᵀ is the fraction's numerator, over √d
    tiny = vz.softmax_formula(tokens=17, head_dim=8)
    assert r"\sum_{j'=1}^{17}" in tiny and r"\sqrt{8}" in tiny and r"\mathbb{R}^{8}" in tiny
    assert vz.encoder_formulas(tokens=17, dim=32, depth=2, heads=4, mlp=64)[1].count(r"\sqrt{8}") == 1


# ----------------------------------------------------------------------------- the pages (AppTest)

def chart(at, key) -> list[dict]:
    """The data traces of the plotly chart drawn with `key`."""
    return charts(at)[key]["data"]


def z_of(at, key, i=0) -> np.ndarray:
    return plotly_array(chart(at, key)[i]["z"])


def overlay_map(at, key) -> np.ndarray:  # viz.overlay: trace 0 is the picture, trace 1 the per-patch map
    return plotly_array(chart(at, key)[1]["z"])


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_step4_builds_the_sequence_and_follows_cls(lang, fmnist_model):
    model, _, tr = live_trace(fmnist_model)
    p, N, L = tr.num_prefix_tokens, tr.grid[0] * tr.grid[1], len(tr.layers)
    at = open_app(lang, "pages/step4_cls.py", **{"vx.model": fmnist_model})
    assert_clean(at)
    assert translate("step4.title", lang) in texts(at)
    assert len(at.get("plotly_chart")) >= 5
    seq = chart(at, "step4.seq")[0]
    np.testing.assert_allclose(plotly_array(seq["z"]), tr.patch_embeddings[0].numpy(), atol=1e-5)  # ① N×D
    assert len(seq["y"]) == N
    cls = z_of(at, "step4.cls")
    np.testing.assert_allclose(cls[0], model.cls_token[0, 0].detach().numpy(), atol=1e-6)  # learned x_class
    np.testing.assert_allclose(cls[2], tr.hidden_states[-1][0, 0].numpy(), atol=1e-5)  # z_L^0
    attn = chart(at, "step4.attn")
    assert len(attn) == L
    maps = analysis.prefix_attention_maps(tr.attentions, tr.grid, p)[:, 0]
    for panel, m in zip(attn, maps):
        np.testing.assert_allclose(plotly_array(panel["z"]), m.numpy(), atol=1e-6)
    norms = tr.tokens.new_tensor([z[0, 0].norm() for z in tr.hidden_states])
    np.testing.assert_allclose(plotly_array(chart(at, "step4.norm")[0]["y"]), norms, rtol=1e-5)

    choice(at, "button_group", "step4.stage").set_value(2).run()  # ② prepend CLS
    assert_clean(at)
    seq = chart(at, "step4.seq")[0]
    assert len(seq["y"]) == N + p and seq["y"][0] == translate("step4.token.cls", lang)
    np.testing.assert_allclose(plotly_array(seq["z"])[0], model.cls_token[0, 0].detach().numpy(), atol=1e-6)

    choice(at, "button_group", "step4.stage").set_value(3).run()  # ③ add E_pos: z0
    assert_clean(at)
    np.testing.assert_allclose(z_of(at, "step4.seq"), tr.tokens[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(z_of(at, "step4.pos"), tr.pos_embed[0].numpy(), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_step5_attention_follows_layer_head_and_query(lang, fmnist_model):
    _, _, tr = live_trace(fmnist_model)
    p, (h, w) = tr.num_prefix_tokens, tr.grid
    at = open_app(lang, "pages/step5_encoder.py", **{"vx.model": fmnist_model})
    assert_clean(at)
    assert translate("step5.title", lang) in texts(at)
    r, c = at.number_input(key="vx.pick.row").value, at.number_input(key="vx.pick.col").value
    layer, head, query = 0, 0, p + r * w + c  # the defaults: layer 1, head 1, the shared selected patch
    assert (r, c) != (h - 1, w - 1)

    def check(layer, head, query):
        A = tr.attentions[layer][0, head]
        np.testing.assert_allclose(overlay_map(at, "step5.query"), A[query, p:].reshape(h, w).numpy(), atol=1e-6)
        np.testing.assert_allclose(overlay_map(at, "step5.cls"), A[0, p:].reshape(h, w).numpy(), atol=1e-6)
        weights = plotly_array(chart(at, "step5.weights")[0]["y"])
        assert weights.sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(weights, A[query].numpy(), atol=1e-6)  # softmax(qk/√d) == trace.attentions
        heads = chart(at, "step5.heads")
        assert len(heads) == tr.attentions[layer].shape[1]
        last_head = tr.attentions[layer][0, -1, query, p:].reshape(h, w)
        np.testing.assert_allclose(plotly_array(heads[-1]["z"]), last_head.numpy(), atol=1e-6)
        qkv = chart(at, "step5.qkv")
        np.testing.assert_allclose(plotly_array(qkv[2]["z"]), tr.layers[layer].v[0, head].numpy(), atol=1e-5)
        assert "1.000000" in " ".join(s.value for s in at.success)
        return overlay_map(at, "step5.query")

    before = check(layer, head, query)
    at.slider(key="vx.enc.layer").set_value(2).run()
    assert_clean(at)
    after_layer = check(1, head, query)
    at.slider(key="vx.enc.head").set_value(2).run()
    assert_clean(at)
    after_head = check(1, 1, query)
    select_patch(at, h - 1, w - 1)
    after_query = check(1, 1, p + h * w - 1)
    for a, b in ((before, after_layer), (after_layer, after_head), (after_head, after_query)):
        assert not np.allclose(a, b)  # every control changes the map


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_step5_windows_on_the_chosen_attention_count_like_the_engine(lang, fmnist_model):
    model, card, tr = live_trace(fmnist_model)
    p, (h, w) = tr.num_prefix_tokens, tr.grid
    at = open_app(lang, "pages/step5_encoder.py", **{"vx.model": fmnist_model})
    at.slider(key="vx.enc.layer").set_value(2).run()
    at.slider(key="vx.enc.head").set_value(2).run()
    select_patch(at, 1, w - 2)
    at.slider(key=f"step5.windows.size.{h}x{w}").set_value(3).run()
    at.toggle(key="step5.windows.shift").set_value(True).run()
    assert_clean(at)
    metric = {m.label: m for m in at.metric}
    stats = ex.window_stats(tr.attentions, tr.grid, 3, True, p)
    assert metric[translate("step5.windows.metric.windows", lang)].value == str(stats.windows)
    assert metric[translate("step5.windows.metric.pairs", lang)].value == f"{stats.allowed_pairs:,}"
    # the query's attention is layer 2, head 2 of the patch chosen above; its share outside its shifted window
    row = tr.attentions[1][0, 1, p + 1 * w + w - 2, p:]
    outside = row[~ex.window_mask(tr.grid, 3, True)[1 * w + w - 2]].sum()
    assert metric[translate("step5.windows.metric.lost", lang)].value == f"{float(outside):.1%}"
    np.testing.assert_allclose(overlay_map(at, "step5.windows.fig"), row.reshape(h, w).numpy(), atol=1e-6)
    lines = chart(at, "step5.windows.layers")
    np.testing.assert_allclose(plotly_array(lines[0]["y"]), stats.outside.mean(1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(plotly_array(lines[1]["y"]), stats.outside[:, 1].numpy(), rtol=1e-5)
    probs = ex.windowed_probs(model, tr.pixels, 3, True)[0]  # the what-if: same weights, windowed attention
    names = card.names(lang)
    shown = metric[translate("step5.windows.whatif.windowed", lang)]
    assert (shown.value, shown.delta) == (names[int(probs.argmax())], f"{float(probs.max()):.1%}")


@pytest.mark.slow
def test_step5_residual_stream_shows_what_each_sub_layer_adds(fmnist_model):
    _, _, tr = live_trace(fmnist_model)
    p = tr.num_prefix_tokens
    at = open_app("zh", "pages/step5_encoder.py", **{"vx.model": fmnist_model})
    assert_clean(at)
    z = [state[0] for state in tr.hidden_states]  # z_0 … z_L of the image, (T, D) each
    norms = chart(at, "step5.norms")
    np.testing.assert_allclose(plotly_array(norms[0]["y"]), [float(zl[0].norm()) for zl in z], rtol=1e-5)
    np.testing.assert_allclose(plotly_array(norms[1]["y"]), [float(zl[p:].norm(dim=-1).mean()) for zl in z], rtol=1e-5)
    added = chart(at, "step5.added")  # attention → CLS, → patches, MLP → CLS, → patches
    assert [line["line"]["dash"] for line in added] == ["solid", "dot", "solid", "dot"]
    attn = [(lt.after_attn[0] - z[i]).norm(dim=-1) for i, lt in enumerate(tr.layers)]
    mlp = [(z[i + 1] - lt.after_attn[0]).norm(dim=-1) for i, lt in enumerate(tr.layers)]
    for line, rows in zip(added, (attn, attn, mlp, mlp)):
        expected = [float(row[0]) if line["line"]["dash"] == "solid" else float(row[p:].mean()) for row in rows]
        np.testing.assert_allclose(plotly_array(line["y"]), expected, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_step6_logits_probabilities_and_top_k(lang, fmnist_model):
    _, card, tr = live_trace(fmnist_model)
    K = tr.logits.shape[-1]
    at = open_app(lang, "pages/step6_classify.py", **{"vx.model": fmnist_model})
    assert_clean(at)
    assert translate("step6.title", lang) in texts(at)
    names = card.names(lang)
    bars = chart(at, "step6.logits")[0]
    assert len(bars["y"]) == K == 10  # ten classes: all of them
    order = tr.logits[0].argsort(descending=True)
    assert bars["y"] == [names[i] for i in order]
    np.testing.assert_allclose(plotly_array(bars["x"]), tr.logits[0, order].numpy(), atol=1e-5)
    probs = plotly_array(chart(at, "step6.probs")[0]["x"])
    np.testing.assert_allclose(probs, tr.probs[0, order].numpy(), atol=1e-6)
    np.testing.assert_allclose(z_of(at, "step6.y")[0], tr.final[0, 0].numpy(), atol=1e-5)
    assert "0.0e+00" in at.success[0].value or "e-0" in at.success[0].value

    at.slider(key="step6.topk").set_value(3).run()
    assert_clean(at)
    assert len(chart(at, "step6.logits")[0]["y"]) == len(chart(at, "step6.probs")[0]["y"]) == 3


@pytest.mark.slow
def test_deit_with_a_non_square_grid_and_1000_classes(deit_model):
    _, card, tr = live_trace(deit_model)
    p, (h, w) = tr.num_prefix_tokens, tr.grid
    assert (p, h, w) == (2, 4, 6)

    at = open_app("en", "pages/step4_cls.py", **{"vx.model": deit_model})
    assert_clean(at)
    assert translate("step4.deit", "en") in texts(at)
    choice(at, "button_group", "step4.stage").set_value(2).run()
    seq = chart(at, "step4.seq")[0]
    assert seq["y"][:2] == ["CLS", "DIST"] and len(seq["y"]) == p + h * w
    np.testing.assert_allclose(plotly_array(seq["z"])[:2], tr.prefix_tokens[0].numpy(), atol=1e-6)

    at.switch_page("pages/step5_encoder.py").run()
    assert_clean(at)
    query = p + at.number_input(key="vx.pick.row").value * w + at.number_input(key="vx.pick.col").value
    np.testing.assert_allclose(overlay_map(at, "step5.query"), tr.attentions[0][0, 0, query, p:].reshape(h, w).numpy(),
                               atol=1e-6)

    at.switch_page("pages/step6_classify.py").run()
    assert_clean(at)
    assert len(chart(at, "step6.logits")[0]["y"]) == 5  # 1000 classes: the top 5, not 1000 bars
    deit = chart(at, "step6.deit")
    assert len(deit) == 3  # CLS head, distillation head, their mean
    top = tr.probs[0].topk(5).indices
    np.testing.assert_allclose(plotly_array(deit[0]["x"]), tr.head_logits[0][0, top].numpy(), atol=1e-5)
    np.testing.assert_allclose(plotly_array(deit[1]["x"]), tr.head_logits[1][0, top].numpy(), atol=1e-5)
    np.testing.assert_allclose(plotly_array(deit[2]["x"]), tr.logits[0, top].numpy(), atol=1e-5)
    at.slider(key="step6.topk").set_value(12).run()
    assert_clean(at)
    assert len(chart(at, "step6.logits")[0]["y"]) == 12


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_classes_a_checkpoint_leaves_unnamed_are_numbered_in_the_page_language(lang, tmp_path):
    from apptest import save_vit
    from vit_core.card import Preprocess
    from vit_core.weights import class_names

    cfg = ViTConfig(image_size=(32, 32), patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_dim=64, num_classes=4)
    unnamed = class_names(4)  # what a checkpoint without labels gets: "class 0" … "class 3"
    model = save_vit(tmp_path, "unnamed", cfg, unnamed, seed=2, std=0.15, preprocess=Preprocess(size=(32, 32)))
    at = open_app(lang, "pages/step6_classify.py", **{"vx.model": model})
    assert_clean(at)
    shown = chart(at, "step6.logits")[0]["y"]
    assert sorted(shown) == sorted(translate("app.class_number", lang, i=i) for i in range(4))
    assert lang == "en" or not set(shown) & set(unnamed), "no English class name on a Chinese page"


@pytest.mark.slow
def test_a_cnn_gets_a_message_not_a_traceback(tmp_path):
    from vit_core.card import ModelCard, Preprocess
    from vit_core.cnn import DEFAULT_CONFIG, build_cnn
    from vit_core.weights import save_checkpoint
    card = ModelCard(name="cnn", arch="cnn", config=DEFAULT_CONFIG, class_names=[str(i) for i in range(10)],
                     preprocess=Preprocess(size=(28, 28), resize="fit_pad", mean=(0.5,), std=(0.5,), channels="L"))
    weights, _ = save_checkpoint(build_cnn(DEFAULT_CONFIG), card, tmp_path / "cnn")
    for i, page in enumerate(("step4_cls", "step5_encoder", "step6_classify")):
        at = open_app("zh", f"pages/{page}.py", **{"vx.model": str(weights)})
        assert_clean(at)
        assert [e.value for e in at.info] == [translate(f"step{4 + i}.not_vit", "zh")]
        assert not at.get("plotly_chart")
