"""Steps 1-3 (patchify, flatten + project, position embedding): the maths behind the pages, the figure
builders, and the pages themselves through AppTest.

The pages are checked against vit_core computed directly here (same model, same image): the numbers
and heatmaps they show must be the live tensors, and every control must change what is shown.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from apptest import assert_clean, choice, charts, live_trace, open_app, plotly_array, select_patch
from vit_core import analysis, viz
from vit_core.analysis import (corresponding_cell, linear_patch_embed, patch_geometry, patch_size_options,
                               pos_embed_row, pos_embed_similarity)
from vit_core.i18n import translate
from vit_core.model import ViT, ViTConfig, resample_pos_embed
from vit_core.viz import steps as vz

# ----------------------------------------------------------------------------- geometry (step 1)


def test_patch_geometry_of_the_paper_and_of_our_models():
    b16 = patch_geometry((224, 224), 16, 3)  # ViT-B/16: 14×14 patches of 16·16·3 numbers
    assert (b16.grid, b16.num_patches, b16.patch_dim, b16.tokens, b16.attention_entries) == \
        ((14, 14), 196, 768, 197, 197 ** 2)
    fm = patch_geometry((28, 28), 4, 1)
    assert (fm.grid, fm.num_patches, fm.patch_dim, fm.tokens) == ((7, 7), 49, 16, 50)
    wide = patch_geometry((224, 160), 16, 3, num_prefix_tokens=2)  # non-square, DeiT's two prefix tokens
    assert (wide.grid, wide.num_patches, wide.tokens) == ((14, 10), 140, 142)
    with pytest.raises(ValueError):
        patch_geometry((28, 28), 5, 1)


def test_halving_p_quadruples_n_and_multiplies_attention_by_about_16():
    a, b = patch_geometry((224, 224), 16, 3), patch_geometry((224, 224), 8, 3)
    assert b.num_patches == 4 * a.num_patches
    assert 15.5 < b.attention_entries / a.attention_entries < 16.5  # (4N+1)² / (N+1)²
    assert b.patch_dim * 4 == a.patch_dim


def test_patch_size_options_tile_the_image():
    assert patch_size_options((28, 28), 4) == [2, 4, 7, 14]  # the divisors of 28 from 2 to 14
    for size, own in [((224, 224), 16), ((224, 160), 16), ((384, 384), 16), ((32, 48), 8)]:
        options = patch_size_options(size, own)
        assert own in options
        for p in options:
            assert size[0] % p == 0 and size[1] % p == 0 and min(size) // p >= 2


# ----------------------------------------------------------------------------- unfold + matmul (step 2)


def test_linear_patch_embed_equals_the_strided_conv():
    g = torch.Generator().manual_seed(0)
    for C, P, H, W in [(3, 16, 32, 48), (1, 4, 28, 28), (3, 7, 14, 21)]:
        pixels = torch.randn(2, C, H, W, generator=g)
        weight, bias = torch.randn(5, C, P, P, generator=g), torch.randn(5, generator=g)
        conv = F.conv2d(pixels, weight, bias, stride=P).flatten(2).transpose(1, 2)  # (B, N, D), the oracle
        torch.testing.assert_close(linear_patch_embed(pixels, weight, bias), conv, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(linear_patch_embed(pixels, weight, None), conv - bias, atol=1e-4, rtol=1e-5)


def test_flattened_patches_are_in_c_p_p_order():
    """Entry c·P² + i·P + j of patch (r, col) is pixel (c, r·P + i, col·P + j): the order the page states."""
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=(8, 12), patch_size=4, in_chans=3, embed_dim=8, depth=1, num_heads=2, mlp_dim=8,
                    num_classes=2)
    model = ViT(cfg).eval()
    pixels = torch.randn(1, 3, 8, 12)
    tr = model.trace(pixels)
    P, (h, w) = 4, tr.grid
    for r in range(h):
        for c in range(w):
            by_hand = pixels[0, :, r * P:(r + 1) * P, c * P:(c + 1) * P].reshape(-1)  # (C, P, P) flattened
            torch.testing.assert_close(tr.patches[0, r * w + c], by_hand)
    proj = model.patch_embed.proj
    diff = (linear_patch_embed(tr.pixels, proj.weight, proj.bias) - tr.patch_embeddings).abs().max()
    assert diff < 1e-5


# ----------------------------------------------------------------------------- position similarity (step 3)


def test_pos_embed_row_splits_prefix_and_grid():
    g = torch.Generator().manual_seed(1)
    grid, prefix = (3, 5), 2
    pos = torch.randn(1, prefix + 15, 16, generator=g)
    full = pos_embed_similarity(pos, grid, prefix)
    for r, c in [(0, 0), (2, 4), (1, 3)]:
        pre, sims = pos_embed_row(pos, prefix + r * grid[1] + c, grid, prefix)
        torch.testing.assert_close(sims, full[r, c])
        assert sims[r, c] == pytest.approx(1.0, abs=1e-6)
        for i in range(prefix):  # by hand: the cosine of two vectors
            expect = F.cosine_similarity(pos[0, i], pos[0, prefix + r * grid[1] + c], dim=0)
            assert pre[i] == pytest.approx(expect.item(), abs=1e-6)
    pre, sims = pos_embed_row(pos, 1, grid, prefix)  # the distillation slot against the grid
    assert sims.shape == grid and pre[1] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError):
        pos_embed_row(pos, 0, (4, 4), prefix)


def test_corresponding_cell_keeps_the_relative_place():
    assert corresponding_cell((3, 4), (7, 7), (7, 7)) == (3, 4)
    assert corresponding_cell((3, 3), (7, 7), (14, 14)) == (7, 7)  # centre stays centre
    assert corresponding_cell((0, 0), (7, 7), (3, 20)) == (0, 1)  # 0.5/7 of 20 = 1.4
    assert corresponding_cell((6, 6), (7, 7), (3, 20)) == (2, 18)  # 6.5/7 of 20 = 18.6
    for new in [(1, 1), (5, 9), (30, 2)]:
        for cell in [(0, 0), (6, 6), (2, 5)]:
            i, j = corresponding_cell(cell, (7, 7), new)
            assert 0 <= i < new[0] and 0 <= j < new[1]


def test_resampling_keeps_prefix_slots_and_matches_the_old_grid_at_the_same_size():
    g = torch.Generator().manual_seed(2)
    pos = torch.randn(1, 2 + 7 * 7, 8, generator=g)
    new = resample_pos_embed(pos, (7, 10), (7, 7), 2)
    assert new.shape == (1, 2 + 70, 8)
    torch.testing.assert_close(new[:, :2], pos[:, :2])  # the page reports this difference (0)


def test_the_section_readouts_are_the_live_tensors():
    """Steps 1-3 read their sections from vit_core: each readout equals the tensors sliced here by hand."""
    model, card, tr = live_trace()
    P, p, (h, w) = tr.patch_size, tr.num_prefix_tokens, tr.grid
    display = card.preprocess.to_display(tr.pixels[0])
    cut = analysis.patch_cut(tr, display, card.preprocess, (2, 5))
    assert np.array_equal(cut.picture, display[2 * P:3 * P, 5 * P:6 * P])
    torch.testing.assert_close(cut.values, tr.pixels[0, :, 2 * P:3 * P, 5 * P:6 * P])
    lo, hi = cut.value_range  # every normalised pixel of this image lies inside the fixed scale
    assert lo - 1e-6 <= float(tr.pixels.min()) and float(tr.pixels.max()) <= hi + 1e-6  # float32 input
    assert lo == pytest.approx(-0.8099150, abs=1e-6)  # Fashion-MNIST: (0 - 0.2860) / 0.3530
    assert cut.mean == ", ".join(f"{m:g}" for m in card.preprocess.mean)

    pj = analysis.patch_projection(model, tr)
    assert pj.ok and pj.scale == float(tr.patch_embeddings.abs().max()) and pj.relative < 1e-5
    assert not analysis.Projection(pj.weight, pj.bias, pj.E, diff=pj.scale, tf32=False, scale=pj.scale).ok

    for reference in [(3, 3), 0]:  # a patch follows to the same place of the new grid; CLS stays CLS
        new = analysis.resampled_positions(tr.pos_embed, (h, w), (h, w + 3), p, reference)
        oracle = resample_pos_embed(tr.pos_embed, (h, w + 3), (h, w), p)
        token = p + new.cell[0] * (w + 3) + new.cell[1] if new.cell else reference
        torch.testing.assert_close(new.sims, pos_embed_row(oracle, token, (h, w + 3), p)[1])
        assert (new.grid, new.tokens, new.prefix_change) == ((h, w + 3), p + h * (w + 3), 0.0)
    assert analysis.resampled_positions(tr.pos_embed, (h, w), (h, w), p, (3, 3)).cell == (3, 3)


def test_the_cls_journey_is_the_residual_stream_read_by_hand():
    _, _, tr = live_trace()
    cj, states = analysis.cls_journey(tr), torch.stack(list(tr.hidden_states))[:, 0]  # (L+1, T, D)
    torch.testing.assert_close(cj.cls_norm, states[:, 0].norm(dim=-1))
    torch.testing.assert_close(cj.patch_norm, states[:, 1:].norm(dim=-1).mean(-1))
    torch.testing.assert_close(cj.to_final, F.cosine_similarity(states[:, 0], states[-1:, 0], dim=-1))
    assert torch.isnan(cj.to_previous[0])
    torch.testing.assert_close(cj.to_previous[1:], F.cosine_similarity(states[1:, 0], states[:-1, 0], dim=-1))
    cls_rows = torch.stack([a[0, :, 0, 1:].mean(0) for a in tr.attentions]).reshape(-1, *tr.grid)
    torch.testing.assert_close(cj.attention, cls_rows)


def test_the_stride_what_if_counts_against_the_model_s_own_cut():
    from vit_core import experiments as ex

    own, half = patch_geometry((28, 28), 4, 1), ex.stride_geometry((28, 28), 4, 2, 1)
    assert ex.stride_counts(half, own) == [("n", 169, 49), ("ppc", 16, 16), ("t", 170, 50), ("att", 170 ** 2, 50 ** 2)]
    assert "= 169" in viz.experiments.stride_formula((28, 28), 4, 2, 169)
    assert "= 7 \\times 7 = 49" in vz.patch_count_formula(28, 28, 4, (7, 7), 16)


# ----------------------------------------------------------------------------- figure builders


def test_mosaic_places_tiles_row_major_with_gaps():
    tiles = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    m = vz.mosaic(tiles, 3)
    assert m.shape == (2 * 2 + 1, 3 * 3 + 2)
    np.testing.assert_array_equal(m[0:2, 4:7], tiles[1])
    np.testing.assert_array_equal(m[3:5, 4:7], tiles[4])
    assert np.isnan(m[2]).all() and np.isnan(m[:, 3]).all() and np.isnan(m[3:5, 8:]).all()  # gaps, empty slot


def test_similarity_mosaic_is_one_heatmap_of_all_maps():
    sim = pos_embed_similarity(torch.randn(1, 1 + 14 * 14, 32), (14, 14)).numpy()
    fig, k = vz.similarity_mosaic(sim, colorbar_title="cos", selected=(2, 3))
    assert k == 1 and len(fig.data) == 1  # ONE heatmap, not 196 figures
    z = plotly_array(fig.to_plotly_json()["data"][0]["z"])
    assert z.shape == (14 * 15 - 1, 14 * 15 - 1)
    np.testing.assert_allclose(z[2 * 15: 2 * 15 + 14, 3 * 15: 3 * 15 + 14], sim[2, 3])
    big = pos_embed_similarity(torch.randn(1, 1 + 20 * 24, 8), (20, 24)).numpy()
    fig, k = vz.similarity_mosaic(big, colorbar_title="cos")
    assert k == 2 and plotly_array(fig.to_plotly_json()["data"][0]["z"]).shape == (10 * 21 - 1, 12 * 25 - 1)


def test_grid_map_markers_carry_row_col_value():
    values = np.random.default_rng(0).uniform(-1, 1, (3, 5))
    fig = vz.grid_map(values, colorbar_title="cos", hover="%{customdata[2]}", selected=(1, 2))
    cd = plotly_array(fig.to_plotly_json()["data"][1]["customdata"])
    assert cd.shape == (15, 3)
    for r, c, v in cd:
        assert values[int(r), int(c)] == pytest.approx(v)


def test_projection_matrix_is_cut_for_big_models_with_real_indices():
    E = np.random.default_rng(0).normal(size=(768, 768))
    fig, (rows, cols) = vz.projection_matrix(E, colorbar_title="w", x_title="x", y_title="y")
    data = fig.to_plotly_json()["data"][0]
    assert (rows, cols) == (256, 256) and plotly_array(data["z"]).shape == (256, 256)
    np.testing.assert_array_equal(plotly_array(data["y"])[:3], [0, 3, 6])
    np.testing.assert_allclose(plotly_array(data["z"])[1, 2], E[3, 6])
    fig, shape = vz.projection_matrix(E[:16, :64], colorbar_title="w", x_title="x", y_title="y")
    assert shape == (16, 64)


def test_components_mosaic_for_gray_and_rgb():
    comps, ratio = analysis.embedding_components(torch.randn(64, 1, 4, 4), k=28)
    assert len(ratio) == 16  # min(D, P²C): a 4×4 grayscale patch has only 16 directions
    fig = vz.components_mosaic(comps.numpy(), [str(i) for i in range(16)], cols=4, colorbar_title="w")
    z = plotly_array(fig.to_plotly_json()["data"][0]["z"])
    assert np.nanmax(np.abs(z)) == pytest.approx(1.0)  # each component divided by its own max |w|
    comps, ratio = analysis.embedding_components(torch.randn(192, 3, 16, 16), k=28)
    fig = vz.components_mosaic(comps.numpy(), [str(i) for i in range(28)], cols=7, colorbar_title="w")
    assert fig.data[0].type == "image" and len(fig.data[1].x) == 28


# ----------------------------------------------------------------------------- the pages (AppTest)

LANGS = ["en", "zh"]


def heat(at, key: str, trace: int = 0) -> np.ndarray:
    return plotly_array(charts(at)[key]["data"][trace]["z"])


def metrics(at) -> dict:
    return {m.label: m for m in at.metric}


@pytest.fixture(params=["embedded", "imagenet"])
def model_id(request, fmnist_model, deit_model):
    """The embedded model (None: the app's default, or its stand-in) and an ImageNet-like DeiT."""
    return deit_model if request.param == "imagenet" else fmnist_model


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_step1_page(lang, model_id):
    model, card, tr = live_trace(model_id)
    _, C, H, W = tr.pixels.shape
    P, (h, w) = tr.patch_size, tr.grid
    at = open_app(lang, "pages/step1_patchify.py", **{"vx.model": model_id})
    assert_clean(at)
    assert {"step1.grid", "step1.crop", "step1.pixels", "step1.whatif.grid"} <= set(charts(at))
    assert rf"{h} \times {w} = {h * w}" in at.latex[0].value  # N with the live numbers
    assert any(f"{h * w}" in m.value and f"{P * P * C}" in m.value for m in at.markdown)
    # the enlarged patch shows the model's input values of the selected patch, one panel per channel
    r, c = h // 2, w - 1
    select_patch(at, r, c)
    for ch in range(C):
        np.testing.assert_allclose(heat(at, "step1.pixels", ch), tr.pixels[0, ch, r * P:(r + 1) * P, c * P:(c + 1) * P],
                                   atol=1e-6)
    # what-if: a smaller P gives more patches; the numbers are those of patch_geometry
    n_label = translate("step1.whatif.n", lang)
    assert metrics(at)[n_label].value == f"{h * w:,}"
    Q = min(patch_size_options((H, W), P))
    choice(at, "select_slider", "vx.step1.whatif").set_value(Q).run()
    alt = patch_geometry((H, W), Q, C, tr.num_prefix_tokens)
    assert metrics(at)[n_label].value == f"{alt.num_patches:,}" and alt.num_patches > h * w
    assert metrics(at)[translate("step1.whatif.att", lang)].value == f"{alt.attention_entries:,}"
    shapes = charts(at)["step1.whatif.grid"]["layout"]["shapes"]
    assert len(shapes) == (H // Q + 1) + (W // Q + 1)  # one line per patch border
    assert_clean(at)
    # a stride below P: the patches overlap, N and T² follow the unfold with that stride
    choice(at, "select_slider", "vx.step1.whatif").set_value(P).run()
    S = max(1, P // 2)
    at.slider(key=f"vx.step1.stride.{P}").set_value(S).run()
    assert_clean(at)
    n_over = F.unfold(torch.zeros(1, C, H, W), P, stride=S).shape[-1]
    assert metrics(at)[n_label].value == f"{n_over:,}" and n_over > h * w
    T = n_over + tr.num_prefix_tokens
    assert metrics(at)[translate("step1.whatif.att", lang)].value == f"{T * T:,}"
    assert len(charts(at)["step1.whatif.grid"]["layout"]["shapes"]) == 9 + 1  # a patch, 8 neighbours, the used area
    used = [(n - P) // S * S + P for n in (H, W)]  # the pixels some patch covers
    assert translate("step1.stride.caption", lang, overlap=P - S, used_h=used[0], used_w=used[1], H=H, W=W) in \
        [c.value for c in at.caption]


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_step2_page(lang, model_id):
    model, card, tr = live_trace(model_id)
    (h, w), P, C = tr.grid, tr.patch_size, tr.pixels.shape[1]
    at = open_app(lang, "pages/step2_project.py", **{"vx.model": model_id})
    assert_clean(at)
    assert {"step2.grid", "step2.flat", "step2.embed", "step2.E", "step2.pca", "step2.pca.curve"} <= set(charts(at))
    # the unfold check: a number below 1e-4, and the same number computed here
    check = metrics(at)[translate("step2.check.metric", lang)]
    proj = model.patch_embed.proj
    ours = (linear_patch_embed(tr.pixels, proj.weight.cpu(), proj.bias.cpu()) - tr.patch_embeddings).abs().max()
    assert float(check.value) < 1e-4 and float(check.value) == pytest.approx(ours.item(), abs=1e-7)
    assert at.success and not at.warning
    # the selected patch's x_p and x_p E + b are the live tensors; another patch changes both
    for r, c in [(0, 0), (h - 1, w // 2)]:
        select_patch(at, r, c)
        k = r * w + c
        np.testing.assert_allclose(heat(at, "step2.flat")[0], tr.patches[0, k], atol=1e-6)
        np.testing.assert_allclose(heat(at, "step2.embed")[0], tr.patch_embeddings[0, k], atol=1e-5)
    # principal components: as many tiles as analysis.embedding_components gives, variance in the labels
    comps, ratio = analysis.embedding_components(proj.weight.detach().cpu(), k=28)
    labels = charts(at)["step2.pca"]["data"][1]["text"]
    assert len(labels) == len(ratio) == min(28, P * P * C, proj.weight.shape[0])
    assert labels[0] == translate("step2.pca.label", lang, i=1, p=float(ratio[0]))


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_step3_page(lang, model_id):
    model, card, tr = live_trace(model_id)
    (h, w), P, prefix = tr.grid, tr.patch_size, tr.num_prefix_tokens
    at = open_app(lang, "pages/step3_position.py", **{"vx.model": model_id})
    assert_clean(at)
    assert {"step3.map", "step3.all", "step3.resampled"} <= set(charts(at))
    sim = pos_embed_similarity(tr.pos_embed, tr.grid, prefix)
    # the selected position's map is its row of the similarity table; selecting another patch changes it
    before = heat(at, "step3.map")
    for r, c in [(h // 2, w // 2), (h - 1, 0)]:  # the default (the centre), then another patch
        select_patch(at, r, c)
        np.testing.assert_allclose(heat(at, "step3.map"), sim[r, c], atol=1e-5)
    assert not np.allclose(before, heat(at, "step3.map"))
    # the full grid: one heatmap with every map in its tile
    z = heat(at, "step3.all")
    np.testing.assert_allclose(z[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w], sim[r, c], atol=1e-5)
    # the CLS slot is not on the grid: its map comes from pos_embed_row, and no cell is outlined
    choice(at, "radio", "vx.step3.ref").set_value("0").run()
    _, cls_map = pos_embed_row(tr.pos_embed, 0, tr.grid, prefix)
    np.testing.assert_allclose(heat(at, "step3.map"), cls_map, atol=1e-5)
    assert not charts(at)["step3.map"]["layout"].get("shapes")
    select_patch(at, 0, 0)  # picking a patch makes the patch the reference again
    assert choice(at, "radio", "vx.step3.ref").value == "patch"
    np.testing.assert_allclose(heat(at, "step3.map"), sim[0, 0], atol=1e-5)
    # resampling: another input size gives another grid, N and T, and the map of the same place
    H2, W2 = 2 * P * h, P * max(1, w // 2)
    at.select_slider(key="vx.step3.height").set_value(H2)
    at.select_slider(key="vx.step3.width").set_value(W2)
    at.run()
    assert_clean(at)
    new_grid = (H2 // P, W2 // P)
    new = resample_pos_embed(tr.pos_embed, new_grid, tr.grid, prefix)
    cell = corresponding_cell((0, 0), tr.grid, new_grid)
    _, expect = pos_embed_row(new, prefix + cell[0] * new_grid[1] + cell[1], new_grid, prefix)
    np.testing.assert_allclose(heat(at, "step3.resampled"), expect, atol=1e-5)
    m = metrics(at)
    assert m[translate("step3.resample.n", lang)].value == f"{new_grid[0] * new_grid[1]:,}"
    assert m[translate("step3.resample.t", lang)].value == f"{new_grid[0] * new_grid[1] + prefix:,}"
    assert any(translate("step3.resample.cls", lang, prefix=prefix, diff=0.0) == md.value for md in at.markdown)


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_step3_shows_the_position_embedding_study_from_its_file(lang, model_id, tmp_path, monkeypatch):
    import json
    from vit_core import claims
    runs = [{"job": f"pos-{k}-s{s}", "model": "vit", "seed": s, "position_embeddings": k, "test_accuracy": a,
             "cpu_time_s": 600.0, "last_window_gain": g, "converged": False}
            for k, s, a, g in [("learned", 0, 0.88, 0.01), ("learned", 1, 0.90, 0.015), ("none", 0, 0.85, 0.03),
                               ("sincos2d", 0, 0.89, 0.02)]]
    planned = [r["job"] for r in runs] + ["pos-none-s1", "pos-sincos2d-s1"]
    (tmp_path / "position_embeddings.json").write_text(json.dumps({"runs": runs, "planned": planned}))
    monkeypatch.setattr(claims, "EXPERIMENTS", tmp_path)
    at = open_app(lang, "pages/step3_position.py", **{"vx.model": model_id})
    assert_clean(at)
    dots = charts(at)["step3.ablation"]["data"][0]
    np.testing.assert_allclose(plotly_array(dots["x"]), [0.89, 0.85, 0.89])  # learned (mean of 2), none, sine-cosine
    assert dots["y"] == [translate(f"step3.ablation.kind.{k}", lang) for k in ("learned", "none", "sincos2d")]
    said = "\n".join(md.value for md in at.markdown)
    assert translate("step3.ablation.vs.none", lang, acc=0.85, base=0.89, pts=-4.0) in said
    assert translate("step3.ablation.missing", lang, done=4, planned=6) in said
    assert translate("step3.ablation.paper", lang, pts=2.824) in said  # Table 8: 64.206 % − 61.382 %
    assert translate("step1.study.rising", lang, lo=1.0, hi=3.0, epochs=claims.SHORT_EPOCHS) in said  # still gaining
    table = next(d.value for d in at.dataframe if translate("step3.ablation.col.kind", lang) in d.value.columns)
    column = lambda key: table[translate(f"step3.ablation.col.{key}", lang)].tolist()  # noqa: E731
    assert column("acc") == ["89.00% (88.00% – 90.00%)", "85.00% (85.00% – 85.00%)", "89.00% (89.00% – 89.00%)"]
    assert (column("seeds"), column("cpu")) == (["0, 1", "0", "0"], ["10", "10", "10"])  # 600 CPU s = 10 min

    monkeypatch.setattr(claims, "EXPERIMENTS", tmp_path / "nothing")  # not run yet: said so, the page stays
    at.run()
    assert_clean(at)
    assert translate("step3.ablation.none_yet", lang) in [i.value for i in at.info]


@pytest.mark.slow
def test_step1_shows_the_patch_size_study_with_p4_from_the_learned_embedding_runs(model_id, tmp_path, monkeypatch):
    import json
    from vit_core import claims

    def run(job, P, acc, seed=0, **kw):
        return {"job": job, "model": "vit", "seed": seed, "patch_size": P, "tokens": (28 // P) ** 2 + 1,
                "test_accuracy": acc, "cpu_time_s": 100.0, "train_images_per_s": 1000.0 / P,
                "test_images_per_s": 3000.0 / P, "last_window_gain": 0.001 if P == 14 else 0.02 / seed if seed else 0.01,
                "converged": P == 14, **kw}  # P = 14 stopped gaining: 0.1 points in its last quarter
    pos = [run("pos-learned-s0", 4, 0.88, position_embeddings="learned"),
           run("pos-learned-s1", 4, 0.90, seed=1, position_embeddings="learned"),
           run("pos-none-s0", 4, 0.70, position_embeddings="none")]  # not P = 4 of the patch study
    (tmp_path / "position_embeddings.json").write_text(json.dumps({"runs": pos, "planned": []}))
    (tmp_path / "patch_size.json").write_text(json.dumps({"runs": [run("patch-7-s0", 7, 0.86), run("patch-14-s0", 14, 0.8)],
                                                          "planned": ["patch-7-s0", "patch-14-s0", "patch-14-s1"]}))
    monkeypatch.setattr(claims, "EXPERIMENTS", tmp_path)
    at = open_app("en", "pages/step1_patchify.py", **{"vx.model": model_id})
    assert_clean(at)
    col = lambda key: translate(f"step1.study.col.{key}", "en")  # noqa: E731
    table = next(d.value for d in at.dataframe if col("P") in d.value.columns)
    assert table[col("P")].tolist() == [4, 7, 14]
    assert table[col("T")].tolist() == [50, 17, 5]
    assert table[col("acc")].tolist() == ["89.00% (2)", "86.00% (1)", "80.00% (1)"]
    assert table[col("train")].tolist() == ["—"] * 3  # the runs' own speeds (two at once, at different times): not shown
    assert translate("step1.study.missing", "en", left="14") in [c.value for c in at.caption]
    said = "\n".join(md.value for md in at.markdown)
    assert translate("step1.study.caption_no_cost", "en") in said
    each = [translate("step1.study.acc_many", "en", P=4, acc=0.89, n=2, lo=0.88, hi=0.90),
            translate("step1.study.acc_one", "en", P=7, acc=0.86), translate("step1.study.acc_one", "en", P=14, acc=0.8)]
    assert translate("step1.study.acc", "en", epochs=claims.SHORT_EPOCHS, each="; ".join(each)) in said
    assert translate("step1.study.order.smaller", "en") in said  # 89 > 86 > 80: smaller patches scored higher
    card = claims.card_run("vit")["test_accuracy"]
    assert translate("step1.study.rising_some", "en", n=3, total=4, lo=0.1, hi=2.0, epochs=claims.SHORT_EPOCHS) + " " + \
        translate("step1.study.short", "en", card_epochs=30, card=card, P=4) in said

    # the side-by-side timing: speeds and speed-ups for every P it timed, also before a P is trained
    rows = [{"patch_size": P, "tokens": T, "train_images_per_s": tr, "train_vs_p4": tr / 600, "test_images_per_s": te,
             "test_vs_p4": te / 1500, "train_range": [tr, tr], "test_range": [te, te]}
            for P, T, tr, te in ((4, 50, 600.0, 1500.0), (7, 17, 1800.0, 6000.0))]
    cost = {"rows": rows, "model": {"embed_dim": 64, "mlp_dim": 128}, "rounds": 5, "date": "2026-12-02T16:00:00+00:00"}
    (tmp_path / "patch_cost.json").write_text(json.dumps(cost))
    (tmp_path / "patch_size.json").write_text(json.dumps({"runs": [], "planned": ["patch-7-s0"]}))
    at.run()
    assert_clean(at)
    table = next(d.value for d in at.dataframe if col("P") in d.value.columns)
    assert table[col("P")].tolist() == [4, 7] and table[col("acc")].tolist() == ["89.00% (2)", "—"]
    assert table[col("train")].tolist() == ["600 (1.0×)", "1,800 (3.0×)"]
    assert table[col("test")].tolist() == ["1,500 (1.0×)", "6,000 (4.0×)"]
    said = "\n".join(md.value for md in at.markdown)
    assert translate("step1.study.caption", "en", date="2026-12-02", rounds=5) in said
    assert not any(translate(f"step1.study.order.{k}", "en") in said for k in ("bigger", "smaller", "mixed"))  # one P
    assert translate("step1.cost.speedup", "en", P=7, P0=4, fewer=50 / 17, train=3.0, test=4.0) in said
    assert translate("step1.cost.why", "en", D=64, M=128, T=50, P=4, share=50 / 306, b16=197 / (197 + 4608)) in said


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_patch_study_says_which_way_accuracy_goes_as_the_patches_grow(lang):
    from vit_core import claims

    def said(accs):
        cells = {P: claims.Cell((a,), (0,), (1.0,)) for P, a in zip((4, 7, 14), accs)}
        runs = [{"last_window_gain": 0.01 * (i + 1), "converged": False} for i in range(3)]
        return claims.patch_accuracy_sentences(claims.Ablation(runs, cells, []), lang)
    t = lambda key: translate(key, lang)  # noqa: E731
    assert t("step1.study.order.bigger") in said([0.85, 0.857, 0.86])
    assert t("step1.study.order.mixed") in said([0.85, 0.87, 0.86])
    assert t("step1.study.order.smaller") in said([0.87, 0.86, 0.80])
    rising = translate("step1.study.rising", lang, lo=1.0, hi=3.0, epochs=claims.SHORT_EPOCHS)
    assert said([0.85, 0.86, 0.87])[-1].startswith(rising)  # every run still gaining: said with its range
    assert claims.patch_accuracy_sentences(claims.Ablation([], {}, []), lang) == []  # nothing trained: nothing said


def test_pictures_go_to_the_browser_as_compressed_images_of_the_same_pixels():
    import base64
    import io

    from PIL import Image

    from vit_core.viz.common import image_uri
    rng = np.random.default_rng(0)
    small = (rng.random((28, 28)) > 0.5).astype(float)  # flat: PNG, lossless
    fig = viz.image_grid(small, (7, 7), 4)
    data = fig.to_plotly_json()["data"][0]
    assert data["type"] == "image" and "z" not in data and data["source"].startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(data["source"].split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded[..., 0], (small * 255).astype(np.uint8))
    assert (data["x0"], data["dx"], data["y0"], data["dy"]) == (0, 1, 0, 1)  # pixel (i, j) centred at (j, i)
    photo = (np.add.outer(np.arange(224), np.arange(224)) % 256 / 255.0)[..., None].repeat(3, 2)
    uri = image_uri(photo)
    assert len(uri) < 224 * 224 * 3  # far smaller than one JSON number per value would be
