"""The model: named variants, the patchify identity, position-embedding resampling, thread safety."""

import threading

import pytest
import torch
import torch.nn.functional as F

from vit_core import ViT, ViTConfig
from vit_core.model import count_parameters, resample_pos_embed

TINY = ViTConfig(image_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, mlp_dim=64, num_classes=5)


def tiny(cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return ViT(cfg).eval()


# Known counts with a 1000-class head (timm vit_*_patch*_224, DeiT-Ti/S).
@pytest.mark.parametrize("name, params", [
    ("Ti/16", 5_717_416), ("S/16", 22_050_664), ("B/16", 86_567_656), ("B/32", 88_224_232),
    ("L/16", 304_326_632), ("L/32", 306_535_400),
])
def test_variant_parameter_counts(name, params):
    with torch.device("meta"):  # shapes only: no memory, no time
        model = ViT(ViTConfig.variant(name))
    assert count_parameters(model) == params


def test_distilled_variant_adds_token_and_head():
    with torch.device("meta"):
        model = ViT(ViTConfig.variant("Ti/16", distilled=True))
    assert count_parameters(model) == 5_717_416 + 192 + 192 + 192 * 1000 + 1000  # dist token, its pos, head_dist


def test_trace_shapes():
    x = torch.randn(2, 3, 32, 32)
    t = tiny().trace(x)
    B, N, T, D = 2, 16, 17, 32
    assert t.grid == (4, 4) and t.patch_size == 8 and t.num_prefix_tokens == 1
    assert t.patches.shape == (B, N, 8 * 8 * 3)
    assert t.patch_embeddings.shape == (B, N, D) and t.tokens.shape == (B, T, D)
    assert len(t.attentions) == 2 and t.attentions[0].shape == (B, 4, T, T)
    assert len(t.hidden_states) == 3 and all(h.shape == (B, T, D) for h in t.hidden_states)
    assert t.layers[0].q.shape == (B, 4, T, 8)
    torch.testing.assert_close(t.attentions[1].sum(-1), torch.ones(B, 4, T))
    assert t.shapes == (B, 3, 32, 32, 8, 4, 4, N, 1, T, D, 2, 4, 64)


def test_unfold_then_matmul_equals_the_conv():
    model, x = tiny(), torch.randn(2, 3, 32, 32)
    t = model.trace(x)
    E = model.patch_embed.proj.weight.flatten(1)  # (D, C·P·P), the same (C, P, P) order as unfold
    torch.testing.assert_close(t.patches @ E.T + model.patch_embed.proj.bias, t.patch_embeddings)
    # and patch (row 1, col 2) really is that square of pixels, channel-major
    torch.testing.assert_close(t.patches[:, 1 * 4 + 2], x[:, :, 8:16, 16:24].flatten(1))


def test_trace_matches_forward_and_is_not_differentiable():
    model, x = tiny(), torch.randn(1, 3, 32, 32)
    t = model.trace(x)
    torch.testing.assert_close(t.logits, model(x))
    assert not t.logits.requires_grad
    assert model.trace_with_grad(x).attentions[0].requires_grad


def test_deit_averages_its_two_heads():
    model = tiny(TINY.with_(distilled=True))
    t = model.trace(torch.randn(1, 3, 32, 32))
    assert t.num_prefix_tokens == 2 and t.tokens.shape[1] == 18
    with torch.inference_mode():
        expected = (model.head(t.final[:, 0]) + model.head_dist(t.final[:, 1])) / 2
    torch.testing.assert_close(t.logits, expected)


def test_resample_keeps_prefix_and_matches_bicubic_on_the_grid():
    pos = torch.randn(1, 1 + 4 * 4, 8)
    out = resample_pos_embed(pos, (2, 6), (4, 4), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 12, 8)
    torch.testing.assert_close(out[:, :1], pos[:, :1])  # the CLS slot has no place on the grid: kept
    grid = pos[:, 1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(2, 6), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 12, 8)
    torch.testing.assert_close(out[:, 1:], expected)
    assert resample_pos_embed(pos, (4, 4), (4, 4)) is pos


def test_other_input_sizes_use_a_resampled_grid():
    t = tiny().trace(torch.randn(1, 3, 16, 48))
    assert t.grid == (2, 6) and t.pos_embed.shape == (1, 13, 32) and t.logits.shape == (1, 5)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny().trace(torch.randn(1, 3, 30, 32))


def test_config_round_trip_and_square_sizes():
    cfg = ViTConfig.variant("S/16", image_size=(224, 320), num_classes=10)
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.grid == (14, 20) and ViTConfig(image_size=384).image_size == (384, 384)


def test_concurrent_traces_are_identical():
    """One shared model, many sessions: traces from several threads at once equal a lone trace."""
    model = tiny()
    inputs = [torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    expected = [model.trace(x) for x in inputs]
    results, errors = {}, []

    def work(worker):
        try:
            for rep in range(25):
                i = (worker + rep) % len(inputs)
                results[worker, rep] = (i, model.trace(inputs[i]))
        except Exception as e:  # surfaced below; a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and len(results) == 8 * 25
    for i, t in results.values():
        assert torch.equal(t.logits, expected[i].logits)
        assert all(torch.equal(a, b) for a, b in zip(t.attentions, expected[i].attentions))
    assert all(p.grad is None for p in model.parameters())  # nothing was left on the shared model
