"""Oracle tests for vit_core.analysis: each number here is known independently of the code under test."""

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from vit_core.analysis import (RESNET50_LAYERS, RESNET50_MILESTONES, VGG16_LAYERS, VGG16_MILESTONES,
                               attention_gradients, attention_rollout, cosine_to_final, deletion_insertion,
                               discard_lowest, effective_receptive_field, embedding_components, fuse_heads,
                               gradient_rollout, mean_attention_distance, milestones, pos_embed_similarity,
                               random_scores, receptive_field, rollout_to_grid, token_norms,
                               uniform_attention_distance)
from vit_core import analysis
from vit_core.model import ViT, ViTConfig


def random_attention(B, L, H, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, H, T, T, generator=g).softmax(-1)  # (B, L, H, T, T), rows sum to 1


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_dim=64, num_classes=5)
    return ViT(cfg).eval()


# ----------------------------------------------------------------------------- rollout

def test_identity_attention_gives_identity_rollout_and_zero_distance():
    B, L, H, grid = 2, 3, 2, (2, 3)
    T = 1 + grid[0] * grid[1]
    eye = torch.eye(T).expand(B, L, H, T, T)
    for residual in (True, False):
        torch.testing.assert_close(attention_rollout(eye, residual=residual), torch.eye(T).expand(B, T, T))
    assert torch.all(mean_attention_distance(eye, grid, 16) == 0)


def test_two_layer_rollout_by_hand():
    W1 = torch.tensor([[0.0, 1, 0], [0, 1, 0], [0, 0, 1]])
    W2 = torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]])
    att = [W1[None, None], W2[None, None]]  # 2 layers × (1, 1 head, 3, 3)
    # residual: A = W/2 + I/2, A1 = [[.5,.5,0],[0,1,0],[0,0,1]], A2 = [[.5,0,.5],[.5,.5,0],[0,.5,.5]]; A2 @ A1:
    expected = torch.tensor([[0.25, 0.25, 0.5], [0.25, 0.75, 0.0], [0.0, 0.5, 0.5]])
    torch.testing.assert_close(attention_rollout(att)[0], expected)
    # without the residual: W2 @ W1 (later layer on the left)
    W2W1 = torch.tensor([[0.0, 0, 1], [0, 1, 0], [0, 1, 0]])
    torch.testing.assert_close(attention_rollout(att, residual=False)[0], W2W1)
    # start inclusive, end exclusive
    torch.testing.assert_close(attention_rollout(att, start_layer=1)[0], 0.5 * W2 + 0.5 * torch.eye(3))
    torch.testing.assert_close(attention_rollout(att, end_layer=1)[0], 0.5 * W1 + 0.5 * torch.eye(3))
    with pytest.raises(ValueError):
        attention_rollout(att, start_layer=2)


def test_list_and_stacked_inputs_agree():
    att = random_attention(2, 3, 4, 5)
    torch.testing.assert_close(attention_rollout(att), attention_rollout(list(att.unbind(1))))
    torch.testing.assert_close(mean_attention_distance(att, (2, 2), 8),
                               mean_attention_distance(list(att.unbind(1)), (2, 2), 8))


def test_head_fusion_mean_max_min():
    h0 = torch.tensor([[0.6, 0.2, 0.2], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    h1 = torch.tensor([[0.2, 0.2, 0.6], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])
    att = torch.stack([h0, h1])[None]  # (1, 2 heads, 3, 3)
    torch.testing.assert_close(fuse_heads(att, "mean")[0], (h0 + h1) / 2)
    torch.testing.assert_close(fuse_heads(att, "max")[0], torch.maximum(h0, h1))
    torch.testing.assert_close(fuse_heads(att, "min")[0], torch.minimum(h0, h1))
    maps = {f: attention_rollout([att], residual=False, head_fusion=f)[0] for f in ("mean", "max", "min")}
    torch.testing.assert_close(maps["max"][0], torch.tensor([0.6, 0.2, 0.6]) / 1.4)  # renormalised rows
    torch.testing.assert_close(maps["min"][0], torch.tensor([0.2, 0.2, 0.2]) / 0.6)
    for m in maps.values():
        torch.testing.assert_close(m.sum(-1), torch.ones(3))
    assert not torch.allclose(maps["max"], maps["min"]) and not torch.allclose(maps["mean"], maps["max"])
    with pytest.raises(ValueError):
        fuse_heads(att, "median")


def test_discard_ratio_keeps_rows_normalised_and_never_drops_prefix_self_entry():
    att = random_attention(2, 2, 3, 10)
    att[:, :, :, :2, :2] *= torch.eye(2) * 1e-6 + (1 - torch.eye(2))  # make CLS->CLS and DIST->DIST the smallest
    att = att / att.sum(-1, keepdim=True)
    fused = fuse_heads(att[:, 0])  # (B, T, T)
    kept = discard_lowest(fused, 0.5, num_prefix_tokens=2)
    assert (kept == 0).sum().item() == 2 * int(0.5 * 100)  # exactly k entries per matrix
    assert torch.all(kept[:, 0, 0] > 0) and torch.all(kept[:, 1, 1] > 0)
    assert torch.all(discard_lowest(fused, 0.5, num_prefix_tokens=1)[:, 1, 1] == 0)  # only protected if prefix
    plain = attention_rollout(att, num_prefix_tokens=2)
    for residual in (True, False):
        dropped = attention_rollout(att, residual=residual, discard_ratio=0.5, num_prefix_tokens=2)
        torch.testing.assert_close(dropped.sum(-1), torch.ones(2, 10))
        assert torch.all(dropped[:, 0, 0] > 0)
    assert not torch.allclose(plain, attention_rollout(att, discard_ratio=0.5, num_prefix_tokens=2))


@pytest.mark.parametrize("grid", [(2, 3), (3, 2)])
def test_non_square_grid_one_hot_lands_on_its_cell(grid):
    h, w = grid
    T = 1 + h * w
    for r in range(h):
        for c in range(w):
            a = torch.zeros(1, 1, T, T)
            a[0, 0] = torch.eye(T)
            a[0, 0, 0] = 0
            a[0, 0, 0, 1 + r * w + c] = 1  # CLS attends only to patch (r, c)
            m = rollout_to_grid(attention_rollout([a], residual=False), grid)
            expected = torch.zeros(1, h, w)
            expected[0, r, c] = 1
            torch.testing.assert_close(m, expected)
    with pytest.raises(ValueError):
        rollout_to_grid(torch.eye(T)[None], (h, w + 1))


# ----------------------------------------------------------------------------- attention distance

def test_uniform_attention_reaches_the_paper_ceiling():
    assert uniform_attention_distance((14, 14), 16) == pytest.approx(116.49, abs=0.01)
    T = 1 + 196
    uniform = torch.full((1, 2, 3, T, T), 1 / T)  # CLS gets a share too: renormalising removes it
    torch.testing.assert_close(mean_attention_distance(uniform, (14, 14), 16),
                               torch.full((1, 2, 3), 116.4922), atol=1e-3, rtol=0)


def test_mean_distance_non_square_by_hand():
    grid, P = (2, 3), 10
    T = 1 + 6
    a = torch.zeros(1, 1, T, T)
    a[0, 0, :, 1] = 1.0  # every query attends to patch (0, 0)
    # queries (r, c) are 10·√(r² + c²) px away from (0, 0): r = 0 → 0, 10, 20; r = 1 → 10, 10√2, 10√5
    expected = 10 * (0 + 1 + 2 + 1 + math.sqrt(2) + math.sqrt(5)) / 6
    assert mean_attention_distance([a], grid, P).item() == pytest.approx(expected, rel=1e-6)


def test_mean_distance_ignores_prefix_and_renormalises():
    grid, P = (1, 3), 16
    T = 2 + 3  # CLS + DIST + 3 patches
    a = torch.zeros(1, 1, T, T)
    a[0, 0, :2] = 1.0 / T  # prefix queries: anything, they are left out
    for q in range(3):
        a[0, 0, 2 + q, 0] = 0.5  # half to CLS ...
        a[0, 0, 2 + q, 2 + (q + 1) % 3] = 0.5  # ... half to the next patch (1, 1, 2 patches away)
    expected = 16 * (1 + 1 + 2) / 3  # not half of it: the CLS share is renormalised away
    assert mean_attention_distance([a], grid, P, num_prefix_tokens=2).item() == pytest.approx(expected)


# ----------------------------------------------------------------------------- receptive fields

def test_receptive_field_oracles():
    vgg = milestones(receptive_field(VGG16_LAYERS), VGG16_MILESTONES)
    assert vgg["pool5"].rf == 212 and vgg["pool5"].jump == 32
    res = milestones(receptive_field(RESNET50_LAYERS), RESNET50_MILESTONES)
    assert {k: r.rf for k, r in res.items()} == {"conv1": 7, "maxpool": 11, "layer1": 35, "layer2": 91,
                                                  "layer3": 267, "layer4": 427}
    assert [res[k].jump for k in res] == [2, 4, 4, 8, 16, 32]
    assert receptive_field([("d", 3, 1, 2)])[0].rf == 5  # a dilated 3×3 spans 5
    assert receptive_field([("c", 3, 1, 1), ("v", 3, 2, 1, 0)])[-1].start == 1.5  # valid padding shifts the centre


def _stack_1d(layers):
    """The main path as a real 1-channel network along the height (avg-pool: gradient reaches every input)."""
    mods = []
    for name, k, s, d, *pad in layers:
        p = pad[0] if pad else (k - 1) * d // 2
        if "pool" in name:
            mods.append(nn.AvgPool2d((k, 1), (s, 1), (p, 0)))
        else:
            conv = nn.Conv2d(1, 1, (k, 1), (s, 1), (p, 0), (d, 1), bias=False)
            nn.init.constant_(conv.weight, 1.0)
            mods.append(conv)
    return nn.Sequential(*mods)


@pytest.mark.parametrize("layers,milestone,size",
                         [(VGG16_LAYERS, "pool5", 512), (RESNET50_LAYERS, "layer4.2.conv3", 1024)])
def test_receptive_field_matches_a_measured_gradient_footprint(layers, milestone, size):
    upto = layers[: [n[0] for n in layers].index(milestone) + 1]
    net = _stack_1d(upto)
    out_h = net(torch.zeros(1, 1, size, 1)).shape[2]
    erf = effective_receptive_field(net, torch.zeros(1, 1, size, 1), (out_h // 2, 0))[0, :, 0]
    rf = receptive_field(upto)[-1]
    lit = torch.nonzero(erf).flatten()
    assert len(lit) == rf.rf == lit[-1] - lit[0] + 1
    assert (lit[0] + lit[-1] + 1) / 2 == rf.start + rf.jump * (out_h // 2)  # the footprint's centre


# ----------------------------------------------------------------------------- effective receptive field

def test_erf_of_one_conv_is_its_footprint():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(54.0).reshape(3, 2, 3, 3) - 20)  # asymmetric: catches a flip
    erf = effective_receptive_field(conv, torch.randn(1, 2, 9, 9), (4, 5))[0]
    expected = torch.zeros(9, 9)
    expected[3:6, 4:7] = conv.weight.detach().sum(0).abs().sum(0)  # Σ_c |Σ_o w[o, c]|, no flip (cross-correlation)
    torch.testing.assert_close(erf, expected)
    assert conv.weight.requires_grad and conv.weight.grad is None  # the module is untouched


def test_erf_cnn_grows_by_two_per_conv_but_vit_is_global_after_one_block(tiny_vit):
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, padding=1))
    erf = effective_receptive_field(cnn, torch.randn(2, 3, 16, 16), (8, 8))
    assert erf.shape == (2, 16, 16)
    lit = erf[0] > 0
    assert lit.sum() == 25 and lit[6:11, 6:11].all()

    pixels = torch.randn(1, 3, 32, 32)
    token = 1 + 1 * 4 + 2  # patch (1, 2) of the 4×4 grid
    before = effective_receptive_field(lambda x: tiny_vit.trace_with_grad(x).hidden_states[0], pixels, token)[0]
    after = effective_receptive_field(lambda x: tiny_vit.trace_with_grad(x).hidden_states[1], pixels, token)[0]
    patch = torch.zeros(32, 32, dtype=torch.bool)
    patch[8:16, 16:24] = True
    assert torch.all((before > 0) == patch)  # z0: the token only sees its own 8×8 patch
    assert torch.all(after > 0)  # after one block: every pixel
    assert all(p.grad is None for p in tiny_vit.parameters())


# ----------------------------------------------------------------------------- gradient rollout

def test_gradient_rollout_by_hand():
    W1 = torch.tensor([[0.0, 1, 0], [0, 1, 0], [0, 0, 1]])
    W2 = torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]])
    ones = torch.ones(1, 1, 3, 3)
    # gradient 1 everywhere: Ā = A, and R = (I + W2)(I + W1), later layer on the left, rows not renormalised
    R = gradient_rollout([W1[None, None], W2[None, None]], [ones, ones])
    torch.testing.assert_close(R[0], torch.tensor([[1.0, 1, 2], [1, 3, 0], [0, 2, 2]]))
    # negative gradients are cut (positive part); heads are averaged
    att = [torch.stack([W1, W2])[None]] * 2  # 2 layers × (1, 2 heads, 3, 3)
    grads = [torch.stack([torch.ones(3, 3), -torch.ones(3, 3)])[None], -2 * torch.ones(1, 2, 3, 3)]
    torch.testing.assert_close(gradient_rollout(att, grads)[0], torch.eye(3) + W1 / 2)


def test_gradient_rollout_on_a_tiny_vit(tiny_vit):
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    maps = []
    for c in (0, 3):
        att, grads = attention_gradients(tiny_vit, pixels, c)
        assert len(att) == len(grads) == 2 and grads[0].shape == att[0].shape == (2, 2, 17, 17)
        R = gradient_rollout(att, grads)
        assert R.shape == (2, 17, 17) and torch.isfinite(R).all() and (R >= 0).all()
        maps.append(rollout_to_grid(R, (4, 4)))
    assert not torch.allclose(maps[0], maps[1])
    # one class per image gives each image its own class's map
    att, grads = attention_gradients(tiny_vit, pixels, torch.tensor([0, 3]))
    per_image = rollout_to_grid(gradient_rollout(att, grads), (4, 4))
    torch.testing.assert_close(per_image[0], maps[0][0])
    torch.testing.assert_close(per_image[1], maps[1][1])
    # zero gradients: nothing is relevant beyond the identity
    zero = [torch.zeros_like(g) for g in grads]
    torch.testing.assert_close(gradient_rollout(att, zero), torch.eye(17).expand(2, 17, 17))
    assert all(p.grad is None for p in tiny_vit.parameters())


def test_attention_gradients_match_a_recomputed_last_block(tiny_vit):
    """∂ logit / ∂ A of the last layer, from the last block written out by hand with A as the leaf."""
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    att, grads = attention_gradients(tiny_vit, pixels, 1)
    trace = tiny_vit.trace_with_grad(pixels)
    blk = tiny_vit.blocks[-1]
    z = trace.layers[-2].after_mlp.detach()  # input of the last block
    A = att[-1].clone().requires_grad_(True)  # (1, H, T, T)
    v = trace.layers[-1].v.detach()
    B, H, T, hd = v.shape
    x = z + blk.attn.proj((A @ v).transpose(1, 2).reshape(B, T, H * hd))
    x = x + blk.mlp(blk.norm2(x))
    logit = tiny_vit.head(tiny_vit.norm(x)[:, 0])[0, 1]
    (expected,) = torch.autograd.grad(logit, A)
    torch.testing.assert_close(grads[-1], expected)


# ----------------------------------------------------------------------------- the rollout lab's readouts of a trace

@pytest.fixture(scope="module")
def wide_deit():
    """Two prefix tokens, a 2×3 grid, weights wide enough that attention is far from uniform."""
    cfg = ViTConfig(image_size=(16, 24), patch_size=8, embed_dim=16, depth=3, num_heads=2, mlp_dim=32, num_classes=4,
                    distilled=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = ViT(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.5)
    return model


def deit_trace(model, seed=4):
    return model.trace(torch.randn(1, 3, 16, 24, generator=torch.Generator().manual_seed(seed)))


def test_rollout_map_of_one_layer_is_its_head_mean_cls_row(wide_deit):
    """With one layer, no residual and no discarding, rollout is that layer's head-mean attention: the map is the
    CLS row over the patches, which with the distillation token's share makes the whole row sum to 1."""
    tr = deit_trace(wide_deit)
    roll = analysis.rollout_map(tr, analysis.RolloutSettings(residual=False, start_layer=1, end_layer=2), top=3)
    row = tr.attentions[1][0].mean(0)[0]  # (T,) CLS's attention, mean over heads
    torch.testing.assert_close(roll.values, row[2:].reshape(2, 3))
    assert roll.total == pytest.approx(1.0, abs=1e-5) and roll.patches == pytest.approx(float(row[2:].sum()), abs=1e-6)
    assert roll.patches < 0.999  # the prefix tokens kept some: the patch sum is not the total
    assert roll.layers == 1
    cells = sorted(((float(row[2 + i]), i // 3, i % 3) for i in range(6)), reverse=True)[:3]
    assert [(r, c) for r, c, _ in roll.top] == [(r, c) for _, r, c in cells]
    assert [v for _, _, v in roll.top] == pytest.approx([v for v, _, _ in cells])


def test_rollout_map_follows_every_setting(wide_deit):
    tr = deit_trace(wide_deit)
    for settings in (analysis.RolloutSettings(), analysis.RolloutSettings(True, "max", 0.3, 1, 3),
                     analysis.RolloutSettings(residual=False, head_fusion="min", end_layer=2)):
        joint = attention_rollout(tr.attentions, num_prefix_tokens=2, **settings.kwargs())
        roll = analysis.rollout_map(tr, settings)
        torch.testing.assert_close(roll.values, joint[0, 0, 2:].reshape(2, 3))
        assert roll.total == pytest.approx(float(joint[0, 0].sum()), abs=1e-6)
        assert roll.layers == len(range(3)[settings.start_layer:settings.end_layer])
    assert analysis.rollout_map(tr, analysis.RolloutSettings()).layers == 3


def test_cls_attention_is_one_heads_cls_row_on_the_grid(wide_deit):
    tr = deit_trace(wide_deit)
    for layer, head in ((0, 0), (2, 1)):
        shown = analysis.cls_attention(tr, layer, head)
        assert shown.shape == (2, 3)
        for r in range(2):
            for c in range(3):
                assert shown[r, c] == tr.layers[layer].attention[0, head, 0, 2 + 3 * r + c]
    assert not torch.equal(analysis.cls_attention(tr, 0, 0), analysis.cls_attention(tr, 0, 1))


def test_gradient_rollout_map_of_one_layer_by_hand(wide_deit):
    """One layer: R = I + mean_h (∇A ⊙ A)⁺, so the CLS row over the patches is that term's (I adds nothing there)."""
    tr = deit_trace(wide_deit)
    attentions, grads = attention_gradients(wide_deit, tr.pixels, 2)
    one = analysis.gradient_rollout_map(tr, grads, analysis.RolloutSettings(start_layer=2, end_layer=3))
    cam = (grads[2][0] * attentions[2][0]).clamp_min(0).mean(0)  # (T, T)
    torch.testing.assert_close(one, cam[0, 2:].reshape(2, 3))
    assert one.abs().sum() > 0
    every = analysis.gradient_rollout_map(tr, grads, analysis.RolloutSettings())
    torch.testing.assert_close(every, rollout_to_grid(gradient_rollout(attentions, grads), (2, 3), 2)[0])
    assert not torch.allclose(every, one)


def test_top_classes_are_the_most_probable_in_order(wide_deit):
    tr = deit_trace(wide_deit)
    probs = tr.logits.softmax(-1)[0].tolist()
    ranked = sorted(range(4), key=lambda i: -probs[i])
    top = analysis.top_classes(tr, 3)
    assert [i for i, _ in top] == ranked[:3] and [p for _, p in top] == pytest.approx([probs[i] for i in ranked[:3]])
    assert [i for i, _ in analysis.top_classes(tr, 10)] == ranked  # never more than there are classes


# ----------------------------------------------------------------------------- faithfulness

def _synthetic_predict(weights):
    """Class 1's probability = Σ_patches importance · (mean pixel of the patch); images are 1 or 0."""
    def predict(batch):  # (b, 1, 8, 8) -> (b, 2)
        per_patch = nn.functional.avg_pool2d(batch, 2).flatten(1)  # (b, 16)
        p1 = (per_patch * weights.flatten()).sum(-1)
        return torch.stack([1 - p1, p1], dim=1)
    return predict


def test_deletion_insertion_perfect_ranking_beats_random():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(4, 4, generator=g) ** 4
    w = w / w.sum()  # importance of each patch, sums to 1
    predict, image, N = _synthetic_predict(w), torch.ones(1, 1, 8, 8), 16
    perfect = deletion_insertion(predict, image, w, (4, 4), 2, 1)
    rand = deletion_insertion(predict, image, random_scores((4, 4), g), (4, 4), 2, 1, batch_size=3)
    torch.testing.assert_close(perfect["fractions"], torch.arange(N + 1) / N)
    for r in (perfect, rand):
        for curve in (r["deletion"], r["insertion"]):
            assert curve.shape == (N + 1,) and (curve >= -1e-6).all() and (curve <= 1 + 1e-6).all()
        assert 0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1
        assert r["deletion"][0] == pytest.approx(1) and r["deletion"][-1] == pytest.approx(0, abs=1e-6)
        assert r["insertion"][0] == pytest.approx(0) and r["insertion"][-1] == pytest.approx(1)
    assert torch.all(perfect["deletion"] <= rand["deletion"] + 1e-6)
    assert perfect["deletion_auc"] < rand["deletion_auc"] and perfect["insertion_auc"] > rand["insertion_auc"]
    # the perfect deletion curve is 1 - (running sum of the sorted importances); AUC by trapezoid
    y = torch.cat([torch.ones(1), 1 - w.flatten().sort(descending=True).values.cumsum(0)])
    assert perfect["deletion_auc"] == pytest.approx(((y[1:] + y[:-1]) / 2).sum().item() / N, rel=1e-5)


def test_deletion_steps_and_baseline():
    w = torch.full((4, 4), 1 / 16)
    r = deletion_insertion(_synthetic_predict(w), torch.ones(1, 8, 8), w, (4, 4), 2, 1, steps=4, baseline=0.5)
    torch.testing.assert_close(r["fractions"], torch.tensor([0, 0.25, 0.5, 0.75, 1]))
    torch.testing.assert_close(r["deletion"], torch.tensor([1, 0.875, 0.75, 0.625, 0.5]))  # towards the grey baseline
    torch.testing.assert_close(r["insertion"], torch.tensor([0.5, 0.625, 0.75, 0.875, 1]))


# ----------------------------------------------------------------------------- embeddings and residual stream

def test_pos_embed_similarity():
    grid = (2, 3)
    pe = torch.randn(1, 1 + 6, 16)
    sim = pos_embed_similarity(pe, grid)
    assert sim.shape == (2, 3, 2, 3)
    flat = sim.reshape(6, 6)
    torch.testing.assert_close(flat.diagonal(), torch.ones(6))
    torch.testing.assert_close(flat, flat.T)
    pe = torch.zeros(1 + 6, 6)
    pe[1:] = torch.eye(6)
    pe[1 + 5] = pe[1 + 0] * 3  # patch (1, 2) points the same way as patch (0, 0)
    sim = pos_embed_similarity(pe, grid)
    assert sim[0, 0, 1, 2] == pytest.approx(1) and sim[0, 0, 0, 1] == 0


def test_embedding_components_recover_a_rank_one_weight():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 4, 4, generator=g)
    a = torch.randn(10, generator=g)
    weight = a[:, None, None, None] * v  # (D=10, C=3, P=4, P=4): every filter is a multiple of v
    comps, ratio = embedding_components(weight, k=5)
    assert comps.shape == (5, 3, 4, 4) and ratio.shape == (5,)
    u = v / v.norm()
    u = u * u.flatten()[u.abs().argmax()].sign()  # the documented sign convention
    torch.testing.assert_close(comps[0], u, atol=1e-5, rtol=0)
    assert ratio[0] == pytest.approx(1, abs=1e-6) and ratio[1:].sum() < 1e-6
    comps, ratio = embedding_components(torch.randn(40, 3, 4, 4, generator=g), k=28)
    flat = comps.reshape(28, -1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(28), atol=1e-5, rtol=0)  # orthonormal
    assert torch.all(ratio[:-1] >= ratio[1:]) and ratio.sum() <= 1 + 1e-6
    assert torch.all(flat.gather(1, flat.abs().argmax(1, keepdim=True)) > 0)  # the sign convention


def test_token_norms_and_cosine_to_final(tiny_vit):
    states = [torch.tensor([[[3.0, 4.0], [0.0, 1.0]]]), torch.tensor([[[0.0, 2.0], [1.0, 0.0]]]),
              torch.tensor([[[-1.0, 0.0], [1.0, 1.0]]])]  # z0, z1, z2 with B=1, T=2, D=2
    torch.testing.assert_close(token_norms(states), torch.tensor([[[5.0, 1.0]], [[2.0, 1.0]], [[1.0, math.sqrt(2)]]]))
    cos = cosine_to_final(states, token=0)
    torch.testing.assert_close(cos["to_final"], torch.tensor([[-0.6], [0.0], [1.0]]))
    torch.testing.assert_close(cos["to_previous"], torch.tensor([[0.8], [0.0]]))
    trace = tiny_vit.trace(torch.randn(2, 3, 32, 32))
    assert token_norms(trace.hidden_states).shape == (3, 2, 17)
    assert cosine_to_final(trace.hidden_states)["to_final"].shape == (3, 2)


def test_analyses_run_on_a_real_trace(tiny_vit):
    trace = tiny_vit.trace(torch.randn(2, 3, 32, 32))  # inference-mode tensors
    joint = attention_rollout(trace.attentions, discard_ratio=0.3)
    torch.testing.assert_close(joint.sum(-1), torch.ones(2, 17))
    assert rollout_to_grid(joint, trace.grid).shape == (2, 4, 4)
    dist = mean_attention_distance(trace.attentions, trace.grid, trace.patch_size)
    assert dist.shape == (2, 2, 2) and (dist > 0).all() and (dist <= math.hypot(24, 24)).all()


def step5_trace(distilled: bool):
    """A small random ViT on a non-square 3×5 grid (DeiT-like with two prefix tokens when `distilled`) and its
    trace on two different images, so a readout that read image 1 instead of image 0 would show."""
    torch.manual_seed(3)
    cfg = ViTConfig(image_size=(24, 40), patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_dim=64,
                    num_classes=5, distilled=distilled)
    return ViT(cfg).eval().trace(torch.randn(2, 3, 24, 40))


@pytest.mark.parametrize("distilled", [False, True], ids=["vit", "deit"])
def test_attention_readout_is_the_traced_attention_of_the_query_written_out(distilled):
    tr = step5_trace(distilled)
    p, (h, w) = tr.num_prefix_tokens, tr.grid
    layer, head, (r, c) = 1, 2, (2, 3)
    out = analysis.attention_readout(tr, layer, head, (r, c))
    query = p + r * w + c
    assert out.query == query
    A = tr.attentions[layer][0]  # (heads, T, T) of image 0
    torch.testing.assert_close(out.query_map, A[head, query, p:].reshape(h, w))
    torch.testing.assert_close(out.cls_map, A[head, 0, p:].reshape(h, w))
    assert out.prefix_share == pytest.approx(float(A[head, query, :p].sum()))
    assert out.prefix_share + float(out.query_map.sum()) == pytest.approx(1, abs=1e-5)
    q, k = tr.layers[layer].q[0, head], tr.layers[layer].k[0, head]  # (T, d)
    scores = torch.stack([q[query] @ k[j] for j in range(k.shape[0])]) / math.sqrt(q.shape[-1])  # one key at a time
    torch.testing.assert_close(out.scores, scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.weights, scores.exp() / scores.exp().sum(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.weights, A[head, query], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.q_row, q[query][None])
    assert out.total == pytest.approx(1, abs=1e-5) and out.diff < 1e-5
    order = sorted(range(len(scores)), key=lambda j: -float(A[head, query, j]))[:8]
    assert out.top == order and len(out.top) == 8
    torch.testing.assert_close(out.top_scores, out.scores[order])
    torch.testing.assert_close(out.top_weights, out.weights[order])
    for name, m in zip("QKV", (tr.layers[layer].q, tr.layers[layer].k, tr.layers[layer].v)):
        torch.testing.assert_close(out.qkv[name], m[0, head])
    assert out.heads.shape == (4, h, w)
    for i in range(4):
        torch.testing.assert_close(out.heads[i], A[i, query, p:].reshape(h, w))
    assert len(analysis.attention_readout(tr, layer, head, (r, c), top=100).top) == p + h * w  # at most T keys
    # the check compares with the model's own attention: a trace whose attention were not softmax(qkᵀ/√d) fails it
    flat = [replace(lt, attention=torch.full_like(lt.attention, 1 / lt.attention.shape[-1])) for lt in tr.layers]
    assert analysis.attention_readout(replace(tr, layers=flat), layer, head, (r, c)).diff > 1e-3


@pytest.mark.parametrize("distilled", [False, True], ids=["vit", "deit"])
def test_residual_stream_is_the_stream_differenced_by_hand(distilled):
    tr = step5_trace(distilled)
    p, L = tr.num_prefix_tokens, len(tr.layers)
    out = analysis.residual_stream(tr)
    z = [state[0] for state in tr.hidden_states]  # z_0 … z_L of image 0, (T, D) each
    norms = torch.stack([torch.sqrt((zl ** 2).sum(-1)) for zl in z])  # (L+1, T)
    torch.testing.assert_close(out.norms, norms)
    torch.testing.assert_close(out.cls, norms[:, 0])
    torch.testing.assert_close(out.patches, norms[:, p:].mean(-1))
    mid = [lt.after_attn[0] for lt in tr.layers]  # z'_l
    attn = torch.stack([(mid[i] - z[i]).norm(dim=-1) for i in range(L)])  # what attention added, (L, T)
    mlp = torch.stack([(z[i + 1] - mid[i]).norm(dim=-1) for i in range(L)])  # what the MLP added
    for got, want in ((out.attention_cls, attn[:, 0]), (out.attention_patches, attn[:, p:].mean(-1)),
                      (out.mlp_cls, mlp[:, 0]), (out.mlp_patches, mlp[:, p:].mean(-1))):
        assert got.shape == (L,)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_erfs_of_one_forward_pass_equal_the_erfs_one_layer_at_a_time():
    from vit_core.cnn import SmallCNN
    torch.manual_seed(0)
    vit = ViT(ViTConfig(image_size=16, patch_size=4, in_chans=1, embed_dim=16, depth=3, num_heads=2,
                        mlp_dim=32, num_classes=3)).eval()
    x = torch.rand(2, 1, 16, 16)
    many = analysis.vit_erfs(vit, x, (1, 3), token=5)
    for n, layer in enumerate((1, 3)):
        torch.testing.assert_close(many[n], analysis.vit_erf(vit, x, layer, 5), rtol=1e-5, atol=1e-7)
    cnn = SmallCNN({"in_chans": 1, "num_classes": 3, "widths": (4, 8), "convs_per_stage": 2}).eval()
    names = [name for name, _ in cnn.features(x)]
    cells = {names[-1]: (1, 2), names[0]: (7, 3)}  # any order: the result follows `cells`
    many = analysis.cnn_erfs(cnn, x, cells)
    for n, (name, cell) in enumerate(cells.items()):
        torch.testing.assert_close(many[n], analysis.cnn_erf(cnn, x, name, cell), rtol=1e-5, atol=1e-7)
    assert many[1].abs().sum() > 0 and not torch.equal(many[0], many[1])


# ----------------------------------------------------------------------------- the CNN page's results

def _fmnist_like_pair():
    """A random 1-channel 28×20 ViT (P = 4: a 7×5 grid, 4 blocks), the project's CNN on that input, their cards."""
    from vit_core.card import ModelCard, Preprocess
    from vit_core.cnn import DEFAULT_CONFIG, build_cnn

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=(28, 20), patch_size=4, in_chans=1, embed_dim=16, depth=4, num_heads=2, mlp_dim=32,
                    num_classes=10)
    cnn_cfg = {**DEFAULT_CONFIG, "image_size": [28, 20]}
    gray = Preprocess(size=(28, 20), resize="fit_pad", crop_pct=1.0, mean=(0.5,), std=(0.5,), channels="L")
    vit_card = ModelCard("vit", "vit", cfg, gray, [f"c{i}" for i in range(10)])
    cnn_card = ModelCard("cnn", "cnn", cnn_cfg, gray, [f"c{i}" for i in range(10)])
    return ViT(cfg).eval(), build_cnn(cnn_cfg).eval(), vit_card, cnn_card


def test_reach_networks_and_the_field_under_a_patch():
    from PIL import Image
    from vit_core.cnn import layer_specs
    from vit_core.viz import reach as vz

    _, _, _, cnn_card = _fmnist_like_pair()
    image = Image.new("RGB", (200, 150), (255, 0, 51))  # one colour: every view shows it everywhere
    nets = analysis.reach_networks(image)
    assert list(nets) == ["resnet", "vgg"]
    assert nets["vgg"].names == [name for name, *_ in VGG16_LAYERS] and nets["resnet"].default == "layer2.3.conv3"
    assert nets["vgg"].view.shape == (224, 224, 3) and nets["vgg"].side == 224
    assert torch.from_numpy(nets["vgg"].view).reshape(-1, 3).unique(dim=0).tolist() == [pytest.approx([1, 0, 0.2])]
    nets = analysis.reach_networks(image, cnn_card)
    assert len(layer_specs(cnn_card.config)) == 8 and nets["cnn"].default == "stage2.conv2"  # the middle one
    gray = torch.from_numpy(nets["cnn"].view)  # the CNN's own input: one channel, shown as three equal ones
    assert gray.shape == (28, 20, 3) and nets["cnn"].side == 28 and (gray == gray[..., :1]).all()

    # VGG-16 pool5 (212 px, units 32 px apart, centres at 16 + 32 i) under patch (0, 3) of a 7×7 grid
    at = analysis.field_on_image(nets["vgg"], "pool5", (0, 3), (7, 7))
    assert (at.index, at.field.rf, at.field.jump, at.size) == (17, 212, 32, (224, 224))
    assert at.span_y == (16.0, 0.0, 122.0) and at.span_x == (112.0, 6.0, 218.0)  # clipped at the top only
    assert at.patch_box == ((0.0, 32.0), (96.0, 128.0))
    assert (at.previous.rf, at.previous.jump, at.kernel, at.dilation) == (196, 16, 2, 1)  # conv5_3, then a 2×2 pool
    assert at.rfs[:3] == [3, 5, 6] and at.rfs[-1] == 212 and at.cover == pytest.approx(212 / 224)
    assert vz.rf_formula("VGG-16", at).endswith(r"\text{VGG-16}:\ r = 196 + (2 - 1) \cdot 1 \cdot 16 = 212")
    first = analysis.field_on_image(nets["resnet"], "conv1", (3, 3), (7, 7))
    assert first.previous == analysis.RF("input", 1, 1, 0.5) and first.field.rf == 7 and first.span_y[0] == 112.5
    assert analysis.field_on_image(nets["resnet"], "layer4.2.conv3", (3, 3), (7, 7)).cover == 1.0  # 427 px > 224


def test_attention_reach_reads_the_distances_of_a_real_trace(tiny_vit):
    from itertools import product

    trace = tiny_vit.trace(torch.randn(1, 3, 32, 32))  # a 4×4 grid of 8 px patches, 2 layers × 2 heads
    centres = torch.tensor(list(product(range(4), range(4))), dtype=torch.float64) * 8
    dist = (centres[:, None] - centres[None]).norm(dim=-1)  # (16, 16) pixels between patch centres
    by_hand = []
    for a in trace.attentions:
        a = a[0, :, 1:, 1:].double()
        a = a / a.sum(-1, keepdim=True)  # the attention that went to the image, per patch query
        by_hand.append((a * dist).sum(-1).mean(-1))  # (heads,)
    by_hand = torch.stack(by_hand).float().numpy()  # (L, heads)
    ar = analysis.attention_reach(trace)
    assert ar.average is None and ar.measured is ar.current
    assert ar.current == pytest.approx(by_hand, abs=1e-4)
    assert ar.ceiling == pytest.approx(dist.mean().item())
    assert ar.first == pytest.approx((by_hand[0].min(), by_hand[0].max()), abs=1e-4)
    assert ar.last == pytest.approx((by_hand[-1].min(), by_hand[-1].max()), abs=1e-4)
    assert ar.first_share == pytest.approx((by_hand[0].min() / ar.ceiling, by_hand[0].max() / ar.ceiling), abs=1e-5)
    samples = torch.stack([torch.full((2, 2), 10.0), torch.tensor([[20.0, 30.0], [40.0, 50.0]])])  # (S, L, heads)
    ar = analysis.attention_reach(trace, samples)  # the sample set's average speaks for the model
    assert ar.average.tolist() == [[15.0, 20.0], [25.0, 30.0]] and ar.measured is ar.average
    assert (ar.first, ar.last, ar.first_mean, ar.last_mean) == ((15.0, 20.0), (25.0, 30.0), 17.5, 27.5)
    assert ar.trend == "up"  # 27.5 - 17.5 = 10 px > 5 % of the ceiling
    for step, trend in [(0.06, "up"), (0.04, "flat"), (-0.06, "down")]:  # a change of more than 5 % of the ceiling
        moved = torch.tensor([[[20.0, 20.0], [20.0 + step * ar.ceiling] * 2]])  # (S = 1, L, heads)
        assert analysis.attention_reach(trace, moved).trend == trend, step


@pytest.mark.parametrize("order, trend", [("local_first", "up"), ("global_first", "down"), ("same", "flat")])
def test_attention_reach_trend_from_identity_and_uniform_attention(order, trend):
    from types import SimpleNamespace

    T = 1 + 3 * 4
    local, wide = torch.eye(T)[None, None], torch.full((1, 1, T, T), 1 / T)  # distance 0, and the ceiling
    layers = {"local_first": [local, wide], "global_first": [wide, local], "same": [wide, wide]}[order]
    trace = SimpleNamespace(attentions=layers, grid=(3, 4), patch_size=16, num_prefix_tokens=1)
    ar = analysis.attention_reach(trace)
    assert ar.trend == trend
    ceiling = uniform_attention_distance((3, 4), 16)
    assert ar.ceiling == ceiling and max(ar.first_mean, ar.last_mean) == pytest.approx(ceiling)


def test_erf_plan_and_reach_pair_the_vit_with_the_cnn_at_the_same_depth():
    from vit_core.cnn import layer_specs

    vit, cnn, vit_card, cnn_card = _fmnist_like_pair()
    pixels = torch.randn(1, 1, 28, 20)
    shapes = vit.trace(pixels).shapes
    assert analysis.same_input(vit_card, cnn_card) and not analysis.same_input(vit_card, None)
    for other in ({"in_chans": 3}, {"image_size": [28, 28]}):  # another input: no gradients side by side
        card = type(cnn_card)(**{**vars(cnn_card), "config": {**cnn_card.config, **other}})
        assert not analysis.same_input(vit_card, card), other

    plan = analysis.erf_plan(shapes, 0, (2, 3), vit_card=vit_card, cnn_card=cnn_card)
    assert (plan.block, plan.depth, plan.token, plan.blocks) == (1, 4, 1 + 2 * 5 + 3, (1, 2, 3, 4))
    assert plan.centre == (2.5 / 7, 3.5 / 5) and plan.patch_box == ((8, 12), (12, 16))
    maps = torch.stack([analysis.normalise_peak(m)[0] for m in analysis.vit_erfs(vit, pixels, plan.blocks, plan.token)])
    ce = analysis.cnn_erf_layers(cnn, layer_specs(cnn_card.config), pixels, plan.centre)
    reach = analysis.erf_reach(plan, maps.numpy(), ce)
    one = analysis.erf_fraction(analysis.vit_erf(vit, pixels, 1, plan.token)).item()  # block 1 alone
    assert reach.fraction == pytest.approx(one) and reach.fractions[0] == pytest.approx(one)
    assert reach.map.tolist() == maps[0].tolist() and reach.map.max() == 1.0
    assert reach.cnn_index == 1  # block 1 of 4 -> 1.5 of 6 conv layers, rounded: the 2nd
    fields = {f.name: f for f in receptive_field(layer_specs(cnn_card.config))}
    for k, name in enumerate(ce.names):  # each CNN layer's share, from the unit under the patch centre
        cell = (analysis.nearest_unit(10.0, fields[name], 28)[0], analysis.nearest_unit(14.0, fields[name], 20)[0])
        by_hand = analysis.erf_fraction(analysis.cnn_erf(cnn, pixels, name, cell)).item()
        assert reach.cnn_fractions[k] == pytest.approx(by_hand), name
    assert reach.cnn_map.tolist() == ce.maps[1].tolist()
    last = analysis.erf_plan(shapes, 3, (2, 3), vit_card=vit_card, cnn_card=cnn_card)
    top = analysis.erf_reach(last, maps.numpy(), ce)
    assert top.cnn_index == 5 and top.fraction == pytest.approx(reach.fractions[3])

    alone = analysis.erf_plan(shapes, 1, (6, 0), vit_card=vit_card)  # no CNN beside: only the block shown
    assert (alone.blocks, alone.centre, alone.token) == ((2,), None, 1 + 6 * 5)
    reach = analysis.erf_reach(alone, analysis.normalise_peak(analysis.vit_erf(vit, pixels, 2, alone.token)).numpy())
    assert reach.cnn is None and reach.cnn_map is None and reach.cnn_index is None
    assert reach.fraction == pytest.approx(analysis.erf_fraction(analysis.vit_erf(vit, pixels, 2, alone.token)).item())
