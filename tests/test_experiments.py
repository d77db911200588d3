"""Oracle tests for vit_core.experiments: each result checked against an independent, slower computation."""

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from vit_core import experiments as ex
from vit_core.data import is_available, load_fashion_mnist
from vit_core.model import ViT, ViTConfig
from vit_core.viz import experiments as vz

needs_data = pytest.mark.skipif(not is_available(), reason="Fashion-MNIST is not installed "
                                "(sudo apt-get install -y dataset-fashion-mnist)")
PROBE_TARGET = 0.93  # held-out accuracy of the embedded backbone's linear probe on the fixed footwear task


def wide_vit(distilled=False, seed=0, grid=(4, 6)) -> ViT:
    """A small random ViT on a non-square grid with weights wide enough that attention is far from uniform
    and E_pos matters (a 0.02 init would make every what-if look alike)."""
    cfg = ViTConfig(image_size=(grid[0] * 4, grid[1] * 4), patch_size=4, in_chans=3, embed_dim=32, depth=3,
                    num_heads=4, mlp_dim=64, num_classes=7, distilled=distilled)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViT(cfg).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() > 1:
                    p.normal_(0, 1.0 if "pos_embed" in name else 0.3)
    return model


def image(model, seed=1):
    H, W = model.cfg.image_size
    return torch.randn(1, model.cfg.in_chans, H, W, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=[False, True], ids=["vit", "deit"])
def model(request):
    return wide_vit(distilled=request.param)


# ----------------------------------------------------------------------------- the model's own modules

def test_encoder_input_and_run_encoder_reproduce_the_trace(model):
    x = image(model)
    tr = model.trace(x)
    torch.testing.assert_close(ex.encoder_input(model, x), tr.tokens)
    states = ex.run_encoder(model, tr.tokens)
    for a, b in zip(states, tr.hidden_states):
        torch.testing.assert_close(a, b)
    with torch.inference_mode():
        torch.testing.assert_close(ex._readout(model, states[-1]), tr.logits)


def test_without_pos_embed_is_the_model_with_its_pos_embed_zeroed(model):
    x = torch.cat([image(model, s) for s in range(3)])
    zeroed = copy.deepcopy(model)  # a private copy: the shared model itself is never changed
    with torch.no_grad():
        zeroed.pos_embed.zero_()
    ab = ex.pos_ablation(model, x, labels=torch.tensor([0, 1, 2]), batch_size=2)
    with torch.inference_mode():
        expect = zeroed(x).softmax(-1).max(-1)
        own = model(x).softmax(-1).max(-1)
    assert ab.pred_nopos.tolist() == expect.indices.tolist() and ab.pred_pos.tolist() == own.indices.tolist()
    torch.testing.assert_close(ab.prob_nopos, expect.values)
    assert ab.accuracy(True) == float((own.indices == torch.tensor([0, 1, 2])).float().mean())
    assert ab.agreement == float((expect.indices == own.indices).float().mean())


# ----------------------------------------------------------------------------- 1. position

def test_shuffle_patches_moves_whole_patches():
    x = torch.arange(2 * 3 * 8 * 12.0).reshape(2, 3, 8, 12)
    perm = ex.random_perms(6, 1, seed=3)[0]
    y = ex.shuffle_patches(x, perm, 4)
    for k in range(6):
        (r, c), (r0, c0) = divmod(k, 3), divmod(int(perm[k]), 3)
        assert torch.equal(y[..., 4 * r:4 * r + 4, 4 * c:4 * c + 4], x[..., 4 * r0:4 * r0 + 4, 4 * c0:4 * c0 + 4])
    assert ex.swap_perm(5, 1, 3).tolist() == [0, 3, 2, 1, 4]


def test_permutation_proof(model):
    """Without E_pos the CLS output is the same under every shuffle (to 1e-5); with E_pos it is not."""
    x = image(model)
    N = model.cfg.grid[0] * model.cfg.grid[1]
    res = ex.position_experiment(model, x, ex.random_perms(N, 8, seed=0))
    assert res.delta_nopos.shape == (8,) and res.probs_pos.shape == (9, 7)
    assert res.max_delta_nopos < 1e-5, res.delta_nopos
    assert res.delta_pos.min() > 1e-2, res.delta_pos  # every shuffle moves it
    torch.testing.assert_close(res.probs_nopos[1:], res.probs_nopos[:1].expand(8, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(res.shuffled, ex.shuffle_patches(x, res.perms[0], 4))
    # the same numbers the long way: each shuffle traced on its own, by the model and by a copy with E_pos zeroed
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.pos_embed.zero_()
    p = model.cfg.num_prefix_tokens
    for m, delta in ((model, res.delta_pos), (zeroed, res.delta_nopos)):
        base = m.trace(x).final[0, :p]
        for k, perm in enumerate(res.perms):
            moved = (m.trace(ex.shuffle_patches(x, perm, 4)).final[0, :p] - base).abs().max()
            assert float(moved) == pytest.approx(float(delta[k]), rel=1e-4, abs=2e-6)
    assert res.moved == int((res.perms[0] != torch.arange(N)).sum()) > 0
    assert res.top_classes(3) == res.probs_pos[0].argsort(descending=True)[:3].tolist()
    for with_pos, probs in ((True, res.probs_pos), (False, res.probs_nopos)):
        assert res.answers(with_pos) == (int(probs[0].argmax()), int(probs[1].argmax()))


def test_without_pos_embed_the_patch_outputs_are_shuffled_the_same_way(model):
    x = image(model)
    p, N = model.cfg.num_prefix_tokens, model.cfg.grid[0] * model.cfg.grid[1]
    perm = ex.random_perms(N, 1, seed=5)[0]
    z = ex.run_encoder(model, ex.encoder_input(model, x, pos_embed=False))[-1]
    zs = ex.run_encoder(model, ex.encoder_input(model, ex.shuffle_patches(x, perm, 4), pos_embed=False))[-1]
    torch.testing.assert_close(zs[:, p:], z[:, p:][:, perm], atol=1e-5, rtol=1e-5)  # equivariant


# ----------------------------------------------------------------------------- 2. logit lens

def test_logit_lens_ends_at_the_model_logits_and_reads_every_depth(model):
    tr = model.trace(image(model))
    lens = ex.logit_lens(model, tr)
    L, p = len(tr.layers), tr.num_prefix_tokens
    torch.testing.assert_close(lens.logits[-1], tr.logits[0], atol=1e-5, rtol=1e-5)
    assert lens.final_class == int(tr.logits.argmax()) and lens.final_rank[-1] == 0
    with torch.inference_mode():
        for d, z in enumerate(tr.hidden_states):  # the slow way, depth by depth, token by token
            y = model.norm(z[0])
            heads = [model.head(y[0])] + ([model.head_dist(y[1])] if p == 2 else [])
            logits = torch.stack(heads).mean(0)
            torch.testing.assert_close(lens.logits[d], logits, atol=1e-5, rtol=1e-5)
            assert lens.final_rank[d] == int((logits > logits[lens.final_class]).sum())
            patch = model.head(y[p:]).softmax(-1)  # (N, classes)
            torch.testing.assert_close(lens.patch_prob[d].flatten(), patch[:, lens.final_class])
            assert lens.patch_top[d].flatten().tolist() == patch.argmax(-1).tolist()
    assert lens.cls_probs.shape == (L + 1, 7) and lens.top_classes(3)[0] == lens.final_class
    assert lens.final_diff(tr) < 1e-5
    names = [f"c{i}" for i in range(7)]
    depth = L // 2
    assert [n for row in lens.patch_names(depth, names) for n in row] == [names[i] for i in lens.patch_top[depth].flatten()]
    assert lens.patch_agreement(depth, lens.final_class) == float((lens.patch_top[depth] == lens.final_class).float().mean())
    settled = lens.settled_depth
    assert (lens.final_rank[settled:] == 0).all() and (settled == 0 or lens.final_rank[settled - 1] != 0)
    votes = lens.patch_votes(2, k=7)
    assert sum(n for _, n in votes) == tr.grid[0] * tr.grid[1]


# ----------------------------------------------------------------------------- 3. occlusion

def test_occlusion_map_matches_one_patch_at_a_time(model):
    x = image(model)
    predict = ex.predictor(model)
    h, w = model.cfg.grid
    cls = 3
    fast = ex.occlusion_map(predict, x, (h, w), 4, cls, baseline=0.25, batch_size=5)  # 24 patches in odd batches
    base = float(predict(x)[0, cls])
    slow = torch.empty(h, w)
    for r in range(h):
        for c in range(w):
            y = x.clone()
            y[..., 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 0.25
            slow[r, c] = base - float(predict(y)[0, cls])
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=0)
    assert slow.abs().max() > 1e-3  # the check is not vacuous


def test_spearman_agrees_with_pandas_also_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 7, generator=g)
    b = (a + torch.randn(5, 7, generator=g)).round()  # many ties
    expect = pd.DataFrame({"a": a.flatten().numpy(), "b": b.flatten().numpy()}).corr(method="spearman").iloc[0, 1]
    assert ex.spearman(a, b) == pytest.approx(expect, abs=1e-9)
    assert ex.spearman(a, a) == pytest.approx(1.0) and ex.spearman(a, -a) == pytest.approx(-1.0)
    assert ex.spearman(a, torch.ones(5, 7)) == 0.0


def test_compare_maps_counts_its_passes_and_reports_three_maps(model, monkeypatch):
    tr = model.trace(image(model))
    seen = []
    real = ex.predictor

    def counting(m):
        predict = real(m)
        return lambda batch: seen.append(len(batch)) or predict(batch)

    monkeypatch.setattr(ex, "predictor", counting)
    res = ex.compare_maps(model, tr, 2, steps=6, random_orders=2, batch_size=8)
    N = tr.grid[0] * tr.grid[1]
    assert sum(seen) + 1 == res.forward_passes == ex.comparison_passes(N, 6, 2)  # + 1: the gradient pass
    assert set(res.maps) == set(ex.MAPS) and all(m.shape == tr.grid for m in res.maps.values())
    assert set(res.faithfulness) == set(ex.MAPS) | {"random"} and len(res.correlation) == 3
    assert res.base_prob == pytest.approx(float(tr.probs[0, 2]), abs=1e-5)
    rand = res.faithfulness["random"]
    assert rand.deletion[0] == pytest.approx(res.base_prob, abs=1e-5)  # nothing removed yet
    assert rand.deletion_auc == pytest.approx(torch.trapezoid(rand.deletion, res.fractions).item())


def test_compare_maps_honours_the_rollout_settings_and_judges_against_random(model):
    """The rollout and gradient maps are analysis' own with the lab's settings, each map's curves are
    deletion_insertion run straight, random is the mean of the seeded orders, and the verdict follows the AUCs."""
    from vit_core import analysis

    tr = model.trace(image(model))
    settings = dict(residual=False, head_fusion="max", discard_ratio=0.3, start_layer=1, end_layer=3)
    res = ex.compare_maps(model, tr, 4, steps=5, random_orders=3, seed=7, **settings)
    p = tr.num_prefix_tokens
    joint = analysis.attention_rollout(tr.attentions, num_prefix_tokens=p, **settings)
    torch.testing.assert_close(res.maps["rollout"], analysis.rollout_to_grid(joint, tr.grid, p)[0])
    _, grads = analysis.attention_gradients(model, tr.pixels, 4)
    R = analysis.gradient_rollout(tr.attentions, grads, start_layer=1, end_layer=3)
    torch.testing.assert_close(res.maps["gradient"], analysis.rollout_to_grid(R, tr.grid, p)[0], rtol=1e-4, atol=1e-6)
    default = ex.compare_maps(model, tr, 4, steps=5, random_orders=1)
    assert not torch.allclose(default.maps["rollout"], res.maps["rollout"])  # the settings reached the map

    predict = ex.predictor(model)
    run = lambda s: analysis.deletion_insertion(predict, tr.pixels, s, tr.grid, 4, 4, steps=5)  # noqa: E731
    g = torch.Generator().manual_seed(7)
    randoms = [run(analysis.random_scores(tr.grid, g)) for _ in range(3)]
    for name in ex.MAPS:
        curves, direct = res.curves(name), run(res.maps[name])
        for kind in ("deletion", "insertion"):
            torch.testing.assert_close(curves[kind], direct[kind], atol=1e-5, rtol=0)
            assert curves[f"{kind}_auc"] == pytest.approx(direct[f"{kind}_auc"], abs=1e-5)
            mean = torch.stack([r[kind] for r in randoms]).mean(0)
            torch.testing.assert_close(curves[f"random_{kind}"], mean, atol=1e-5, rtol=0)
            assert curves[f"random_{kind}_auc"] == pytest.approx(np.mean([r[f"{kind}_auc"] for r in randoms]),
                                                                 abs=1e-5)  # AUC of the mean = mean of the AUCs
        f, r = res.faithfulness[name], res.faithfulness["random"]
        good = (f.deletion_auc < r.deletion_auc - 0.01, f.insertion_auc > r.insertion_auc + 0.01)
        assert res.beats(name) == good
        assert res.verdict(name) == ("both" if all(good) else "some" if any(good) else "none")
    assert res.verdict("random", margin=0.0) == "none"  # random never beats itself
    assert res.beats("occlusion", margin=10.0) == (False, False)


def test_auc_table_lists_each_map_then_random_with_its_aucs_and_verdict(model):
    """The lab's faithfulness table: AUCs are the trapezoids of each map's own curves, the verdict is worked out
    here from the AUCs and the margin, random has none; the comparison records the device it ran on."""
    tr = model.trace(image(model))
    res = ex.compare_maps(model, tr, 1, steps=4, random_orders=2)
    table = res.auc_table()
    assert table.maps == ("occlusion", "rollout", "gradient", "random")
    rand = res.faithfulness["random"]
    for i, name in enumerate(table.maps):
        f = res.faithfulness[name]
        assert table.deletion_auc[i] == pytest.approx(torch.trapezoid(f.deletion, res.fractions).item(), abs=1e-6)
        assert table.insertion_auc[i] == pytest.approx(torch.trapezoid(f.insertion, res.fractions).item(), abs=1e-6)
        if name == "random":
            assert table.verdicts[i] is None
            continue
        wins = (table.deletion_auc[i] < rand.deletion_auc - ex.MARGIN) + (table.insertion_auc[i] >
                                                                           rand.insertion_auc + ex.MARGIN)
        assert table.verdicts[i] == ("none", "some", "both")[wins]
    assert len(set(table.deletion_auc)) > 1  # the maps differ: the check is not vacuous
    assert res.device_kind == "cpu" == str(next(model.parameters()).device)


# ----------------------------------------------------------------------------- 4. stride and windows

@pytest.mark.parametrize("size,P,S", [((28, 28), 4, 4), ((28, 28), 4, 2), ((28, 28), 7, 3), ((24, 40), 8, 5),
                                      ((30, 17), 5, 7)])
def test_stride_geometry_counts_like_brute_force_and_unfold(size, P, S):
    H, W = size
    g = ex.stride_geometry(size, P, S, in_chans=3)
    starts_r = [r for r in range(H) if r + P <= H and r % S == 0]  # every top-left corner, one by one
    starts_c = [c for c in range(W) if c + P <= W and c % S == 0]
    assert g.grid == (len(starts_r), len(starts_c)) and g.num_patches == len(starts_r) * len(starts_c)
    assert F.unfold(torch.zeros(1, 3, H, W), P, stride=S).shape[1:] == (3 * P * P, g.num_patches)
    assert g.tokens == g.num_patches + 1 and g.attention_entries == g.tokens ** 2
    assert g.used == (starts_r[-1] + P, starts_c[-1] + P) and g.overlap == max(0, P - S)
    with pytest.raises(ValueError):
        ex.stride_geometry(size, 0, 1, 3)


def swin_allowed_pairs(h, w, window, shift):
    """Swin's own construction, written out: pad the grid to whole windows, roll it by −⌊w/2⌋ when shifted,
    label the rolled map's three bands per axis (as Swin's attention mask does), and let two patches attend
    when they share a window of the rolled map and a label. Returns the set of (i, j) original patch pairs."""
    s = window // 2 if shift else 0
    Hp, Wp = math.ceil(h / window) * window, math.ceil(w / window) * window
    ids = -np.ones((Hp, Wp), dtype=int)
    ids[:h, :w] = np.arange(h * w).reshape(h, w)
    label = np.zeros((Hp, Wp), dtype=int)
    if s:
        bands = lambda n: [slice(0, n - window), slice(n - window, n - s), slice(n - s, n)]  # noqa: E731
        for a, rows in enumerate(bands(Hp)):
            for b, cols in enumerate(bands(Wp)):
                label[rows, cols] = 3 * a + b
    rolled = np.roll(ids, (-s, -s), axis=(0, 1))
    pairs = set()
    for r0 in range(0, Hp, window):
        for c0 in range(0, Wp, window):
            cells = [(rolled[r, c], label[r, c]) for r in range(r0, r0 + window) for c in range(c0, c0 + window)]
            pairs |= {(i, j) for i, a in cells for j, b in cells if i >= 0 and j >= 0 and a == b}
    return pairs


@pytest.mark.parametrize("grid,window,shift", [((7, 7), 3, False), ((7, 7), 3, True), ((8, 8), 4, True),
                                               ((4, 6), 2, True), ((14, 14), 7, True), ((5, 9), 4, False),
                                               ((6, 6), 1, True)])
def test_window_mask_is_swins_partition(grid, window, shift):
    mask = ex.window_mask(grid, window, shift)
    expect = swin_allowed_pairs(*grid, window, shift)
    got = {(int(i), int(j)) for i, j in torch.nonzero(mask)}
    assert got == expect
    attn = [torch.rand(1, 2, 1 + grid[0] * grid[1], 1 + grid[0] * grid[1]).softmax(-1) for _ in range(3)]
    stats = ex.window_stats(attn, grid, window, shift)
    assert stats.allowed_pairs == len(expect) and stats.total_pairs == (grid[0] * grid[1]) ** 2
    partners = {}
    for i, j in expect:
        partners.setdefault(i, set()).add(j)
    assert stats.windows == len({frozenset(v) for v in partners.values()})  # one partner set per window
    N = grid[0] * grid[1]
    for layer in range(3):  # the attention mass outside, summed the slow way
        a = attn[layer][0].numpy()
        outside = [[sum(a[hd, 1 + i, 1 + j] for j in range(N) if j not in partners[i]) for i in range(N)]
                   for hd in range(2)]
        torch.testing.assert_close(stats.outside[layer], torch.tensor(outside).float().mean(1), atol=1e-5, rtol=0)
        torch.testing.assert_close(stats.prefix[layer], torch.from_numpy(a[:, 1:, 0]).mean(1))


def test_window_figure_draws_every_window_once():
    img = np.zeros((28, 28))
    for window, shift in [(3, False), (3, True), (4, True), (7, False)]:
        fig = vz.window_figure(img, np.random.rand(7, 7), 4, window, ex.window_offset(window, shift), (3, 3),
                               colorbar_title="a")
        assert len(fig.layout.shapes) == ex.window_stats([torch.rand(1, 1, 50, 50)], (7, 7), window, shift).windows + 1


def test_window_what_if_with_one_window_for_all_is_the_model(model):
    x = image(model)
    h, w = model.cfg.grid
    with torch.inference_mode():
        own = model(x).softmax(-1).cpu()
    torch.testing.assert_close(ex.windowed_probs(model, x, max(h, w)), own, atol=1e-5, rtol=1e-5)
    assert (ex.windowed_probs(model, x, 1) - own).abs().max() > 1e-3
    attn, lost = ex.query_window([torch.rand(1, 2, 1 + h * w, 1 + h * w).softmax(-1)], (h, w), 2, False, 0, 1, (1, 2))
    inside = ex.window_mask((h, w), 2)[1 * w + 2]
    assert attn.shape == (h, w) and lost == pytest.approx(float(attn.flatten()[~inside].sum()))


def test_window_whatif_reads_one_query_layer_and_head_off_the_trace(model):
    x = image(model)
    tr = model.trace(x)
    p, (h, w) = tr.num_prefix_tokens, tr.grid
    window, shift, layer, head, (r, c) = 2, True, 1, 2, (1, 4)
    windowed = ex.windowed_probs(model, x, window, shift)[0]
    out = ex.window_whatif(tr, window, shift, layer, head, (r, c), windowed)
    assert (out.layer, out.head, out.patch, out.offset) == (layer, head, (r, c), ex.window_offset(window, shift))
    ids = ex.window_ids(tr.grid, window, shift)  # (N,) the window of every patch
    row = tr.attentions[layer][0, head, p + r * w + c, p:]  # the query's attention on the patch keys
    torch.testing.assert_close(out.attention, row.reshape(h, w))
    assert out.lost == pytest.approx(float(row[ids != ids[r * w + c]].sum()), abs=1e-6)
    assert out.stats.windows == len(ids.unique()) and out.stats.allowed_pairs == int((ids[:, None] == ids).sum())
    cut = ids[:, None] != ids[None, :]  # (N, N) pairs a windowed layer cannot compute
    for i, a in enumerate(tr.attentions):  # every patch query's share outside its window, one head at a time
        shares = torch.stack([(a[0, k, p:, p:] * cut).sum(-1).mean() for k in range(a.shape[1])])
        assert float(out.outside[i]) == pytest.approx(float(shares.mean()), abs=1e-6)
        assert float(out.outside_head[i]) == pytest.approx(float(shares[head]), abs=1e-6)
        assert float(out.prefix[i]) == pytest.approx(float(a[0, :, p:, :p].sum(-1).mean()), abs=1e-6)
    assert out.own == (int(tr.probs[0].argmax()), pytest.approx(float(tr.probs[0].max())))
    assert out.windowed == (int(windowed.argmax()), pytest.approx(float(windowed.max())))
    assert out.outside.shape == out.prefix.shape == (len(tr.layers),)


# ----------------------------------------------------------------------------- 5. teach it new classes

def test_linear_probe_separates_separable_features_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 3
    labels = torch.arange(3).repeat_interleave(40)
    feats = centres[labels] + torch.randn(120, 16, generator=g)
    seen = []
    probe = ex.fit_linear_probe(feats[::2], labels[::2], 3, seed=1, progress=seen.append)
    assert probe.accuracy(feats[1::2], labels[1::2]) >= 0.95 and probe.losses[-1] < probe.losses[0]
    assert seen and seen[-1] == pytest.approx(1.0)
    again = ex.fit_linear_probe(feats[::2], labels[::2], 3, seed=1)
    torch.testing.assert_close(again.weight, probe.weight)
    torch.testing.assert_close(probe.probs(feats).sum(-1), torch.ones(120))


def newton_logistic(x: np.ndarray, y: np.ndarray, k: int, weight_decay: float, iters: int = 40):
    """The probe's objective (mean cross-entropy + weight_decay · |W|², bias free) minimised by Newton's
    method in float64 numpy, the full Hessian built sample by sample. Returns ((k, D) W, (k,) b, loss)."""
    n, D = x.shape
    xt = np.hstack([x, np.ones((n, 1))])
    Y = np.eye(k)[y]
    reg = np.full((k, D + 1), 2 * weight_decay)
    reg[:, -1] = 0
    theta = np.zeros((k, D + 1))

    def softmax(th):
        z = xt @ th.T
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    for _ in range(iters):
        p = softmax(theta)
        grad = ((p - Y).T @ xt) / n + reg * theta
        H = sum(np.kron(np.diag(p[i]) - np.outer(p[i], p[i]), np.outer(xt[i], xt[i])) for i in range(n)) / n
        theta -= (np.linalg.pinv(H + np.diag(reg.flatten())) @ grad.flatten()).reshape(k, D + 1)
    loss = -np.log(softmax(theta)[np.arange(n), y]).mean() + weight_decay * (theta[:, :-1] ** 2).sum()
    return theta[:, :-1], theta[:, -1], loss


def test_linear_probe_reaches_the_optimum_newtons_method_finds():
    """Overlapping classes (no perfect split), so the optimum is a real one; Adam's 300 steps land on it."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(30)
    feats = torch.randn(3, 6, generator=g)[labels] + 1.2 * torch.randn(90, 6, generator=g)
    probe = ex.fit_linear_probe(feats, labels, 3, seed=0, weight_decay=1e-3)
    x = ((feats - probe.mean) / probe.std).double().numpy()
    torch.testing.assert_close(torch.from_numpy(x).mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-6, rtol=0)
    W, b, best = newton_logistic(x, labels.numpy(), 3, 1e-3)
    assert probe.losses[-1] == pytest.approx(best, abs=1e-3) and probe.losses[-1] >= best - 1e-6
    ref = torch.from_numpy(x @ W.T + b).softmax(-1).float()
    torch.testing.assert_close(probe.probs(feats), ref, atol=1e-2, rtol=0)
    assert probe.probs(feats).argmax(-1).tolist() == ref.argmax(-1).tolist()
    assert 0.7 < probe.accuracy(feats, labels) < 1.0  # the classes do overlap


def test_probe_readout_is_the_probes_answer_for_the_traced_image(model):
    """Sizes from the fit itself; the answer is the probe, written out here, on the CLS token's final output."""
    g = torch.Generator().manual_seed(5)
    pixels = torch.randn(9, *image(model).shape[1:], generator=g)
    labels = torch.arange(9) % 3
    probe = ex.fit_linear_probe(ex.cls_features(model, pixels), labels, 3, steps=40, seed=1)
    res = ex.ProbeResult(probe, 1.0, None, 0.0, 9)
    tr = model.trace(image(model, seed=6))
    readout = ex.probe_readout(res, tr)
    assert (readout.features, readout.classes, readout.steps) == (32, 3, 40)
    feature = ex.cls_features(model, tr.pixels)[0]  # the model's own modules run again, not the trace
    expected = (((feature - probe.mean) / probe.std) @ probe.weight.T + probe.bias).softmax(-1)
    torch.testing.assert_close(readout.probs, expected, atol=1e-5, rtol=0)
    assert readout.top == int(expected.argmax()) and readout.probs.sum() == pytest.approx(1.0)
    assert readout.probs.max() - readout.probs.min() > 1e-3  # the answer is not flat


def test_few_shot_set_is_stratified_seeded_and_held_out_fixed():
    images = {"train": torch.arange(60, dtype=torch.uint8)[:, None, None].expand(60, 28, 28),
              "test": torch.arange(30, dtype=torch.uint8)[:, None, None].expand(30, 28, 28)}
    labels = {"train": torch.arange(60) % 10, "test": torch.arange(30) % 10}
    a = ex.few_shot_set(images, labels, [7, 2], shots=3, held_out=2, seed=0)
    b = ex.few_shot_set(images, labels, [7, 2], shots=3, held_out=2, seed=1)
    assert a.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and a.test_labels.tolist() == [0, 0, 1, 1]
    assert all(int(img[0, 0]) % 10 == [7, 2][int(y)] for img, y in zip(a.train_images, a.train_labels))
    assert [int(i[0, 0]) for i in a.test_images] == [7, 17, 2, 12] == [int(i[0, 0]) for i in b.test_images]
    assert not torch.equal(a.train_images, b.train_images)  # another seed, other training images


def test_train_from_scratch_is_seeded_and_measured():
    g = torch.Generator().manual_seed(0)
    imgs = (torch.rand(8, 28, 28, generator=g) * 255).to(torch.uint8)
    data = ex.FewShotSet([0, 1], imgs[:4], torch.tensor([0, 1, 0, 1]), imgs[4:], torch.tensor([0, 1, 0, 1]))
    a = ex.train_from_scratch(data, steps=3, seed=4)
    b = ex.train_from_scratch(data, steps=3, seed=4)
    assert a.losses == b.losses and a.test_accuracy == b.test_accuracy and a.steps == 3 and a.batch_size == 4
    assert a.parameters > 100_000 and a.seconds > 0


@needs_data
def test_linear_probe_on_the_embedded_backbone_reaches_its_stated_accuracy():
    """The panel's default task: sandal, sneaker, ankle boot; 5 training images each (seed 0) from the training
    split, and the first 100 test images of each class held out."""
    from vit_core import load_model

    backbone, card = load_model()
    split = {s: load_fashion_mnist(s) for s in ("train", "test")}
    task = ex.few_shot_set({k: v[0] for k, v in split.items()}, {k: v[1] for k, v in split.items()}, [5, 7, 9],
                           shots=5, held_out=100, seed=0)
    res = ex.probe_task(backbone, card.preprocess, task, seed=0)
    assert res.train_accuracy == 1.0 and res.images == 315
    assert res.test_accuracy >= PROBE_TARGET, res.test_accuracy
    # its features are the ones the model's own head reads: the trace of one image gives the same vector
    tr = backbone.trace(ex.to_pixels(card.preprocess, task.test_images[:1]))
    torch.testing.assert_close(res.probe.classify(tr), res.probe.probs(
        ex.cls_features(backbone, ex.to_pixels(card.preprocess, task.test_images[:1])))[0])


SAMPLES = Path(__file__).resolve().parent.parent / "assets" / "samples"


def own_pictures(name: str, n: int) -> list:
    """A committed sample and up to three variants of it (mirrored, cropped, darker): a learner's few photos."""
    img = Image.open(SAMPLES / name).convert("RGB")
    w, h = img.size
    return [img, ImageOps.mirror(img), img.crop((w // 10, h // 10, w - w // 10, h - h // 10)),
            ImageEnhance.Brightness(img).enhance(0.75)][:n]


def test_own_set_holds_one_seeded_picture_out_of_each_class_of_three_or_more():
    pics = [own_pictures("fmnist_bag.png", 4), own_pictures("fmnist_trouser.png", 3), own_pictures("fmnist_dress.png", 2)]
    task = ex.own_set(["bag", "trouser", "dress"], pics, seed=0)
    assert task.held_out[2] is None and all(0 <= i < len(p) for i, p in zip(task.held_out[:2], pics))
    assert task.test_labels.tolist() == [0, 1] and task.train_labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    for c, i in enumerate(task.held_out[:2]):
        assert task.test_images[c] is pics[c][i] and not any(img is pics[c][i] for img in task.train_images)
    assert ex.own_set(["bag", "trouser", "dress"], pics, seed=0).held_out == task.held_out  # seeded
    assert {tuple(ex.own_set(["a", "b", "c"], pics, seed=s).held_out) for s in range(6)} != {tuple(task.held_out)}
    for bad in ([pics[0]], [pics[0], pics[2][:1]]):  # one class; a class of one picture
        with pytest.raises(ValueError):
            ex.own_set(["x"] * len(bad), bad)


def test_probe_on_own_pictures_reads_the_traced_features_and_reaches_its_stated_accuracy():
    """Four classes of the learner's own photos (committed samples and variants: 4, 4, 3 and 2 pictures), seed 0:
    one picture of each of the first three classes held out. On this fixed split the embedded backbone's probe
    is right on all 10 training and all 3 held-out pictures."""
    from vit_core import load_model

    backbone, card = load_model()
    counts = {"photo_chelsea.jpg": 4, "photo_coffee.jpg": 4, "photo_rocket.jpg": 3, "photo_astronaut.jpg": 2}
    task = ex.own_set(["cat", "coffee", "rocket", "astronaut"], [own_pictures(n, k) for n, k in counts.items()], seed=0)
    res = ex.probe_task(backbone, card.preprocess, task, seed=0)
    assert (res.images, len(task.test_labels)) == (13, 3)
    assert (res.train_accuracy, res.test_accuracy) == (1.0, 1.0)
    # independently: each picture traced on its own, its CLS output (what the model's head reads) into the probe
    traced = torch.cat([backbone.trace(card.preprocess(img)).final[:, 0].cpu() for img in task.test_images])
    predicted = res.probe.probs(traced).argmax(-1)
    assert predicted.tolist() == task.test_labels.tolist()
    torch.testing.assert_close(res.probe.probs(traced), res.probe.probs(ex.cls_features(
        backbone, ex.to_pixels(card.preprocess, task.test_images))), atol=1e-5, rtol=0)
    two = ex.own_set(["cat", "coffee"], [own_pictures("photo_chelsea.jpg", 2), own_pictures("photo_coffee.jpg", 2)])
    assert ex.probe_task(backbone, card.preprocess, two).test_accuracy is None  # nothing held out: no number


def test_pictures_travel_as_small_images():
    fig = vz.picture(np.random.rand(28, 28))
    uri = fig.data[0].source
    assert uri.startswith("data:image/png;base64,") and len(uri) < 60_000
    fig = vz.map_over(np.random.rand(28, 28, 3), np.random.rand(7, 7), 4, colorbar_title="x")
    assert np.asarray(fig.data[1].z).shape == (7, 7)  # one number per patch, not per pixel
    assert vz.picture(np.random.rand(224, 224, 3)).data[0].source.startswith("data:image/jpeg;base64,")
    montage = vz.examples_montage(np.zeros((6, 28, 28), np.uint8), np.array([0, 0, 0, 1, 1, 1]), 2, 3, scale=2)
    assert montage.shape == (2 * (2 * 28 + 2), 2 * (3 * 28 + 2 * 2)) and montage.max() == 255
