"""Parity with transformers (random weights, no download): the same logits and every attention map.

The oracle is transformers' own eager ViT / DeiT with `output_attentions=True`. Our model reads the
`save_pretrained` directory, and the same weights converted to the torchvision, JAX and timm layouts,
so a wrong rename, transpose or head split anywhere shows up as a number here.
"""

import pytest
import torch
from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher
from transformers import ViTConfig as HFViTConfig
from transformers import ViTForImageClassification

from vit_core.weights import export_checkpoint, load_checkpoint

SMALL = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128, patch_size=8,
             num_labels=7, layer_norm_eps=1e-6)  # eps as in timm/JAX, so every layout reads the same model


def randomize(model, seed=0):
    """transformers initialises LayerNorms to (1, 0) and biases to 0; make every number count."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if "layernorm" in name and name.endswith("weight") else 0.2 * noise)
    return model.eval()


def hf_vit(image_size=32, **kw):
    cfg = HFViTConfig(image_size=image_size, attn_implementation="eager", **(SMALL | kw))
    return randomize(ViTForImageClassification(cfg))


def assert_same_pass(ours, hf_out, x=None):
    """logits within 1e-4, every attention map (B, heads, T, T) within 1e-5."""
    assert len(ours.attentions) == len(hf_out.attentions)
    torch.testing.assert_close(ours.logits, hf_out.logits, atol=1e-4, rtol=0)
    for a, b in zip(ours.attentions, hf_out.attentions):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.fixture(params=[32, (32, 48)], ids=["square", "non-square"])
def hf_dir(request, tmp_path):
    hf = hf_vit(image_size=request.param)
    hf.save_pretrained(tmp_path / "hf")
    return hf, tmp_path / "hf", request.param


def hf_pass(hf, seed=1):
    """Two random images at the model's size, and transformers' own pass over them: the oracle."""
    H, W = hf.config.image_size if isinstance(hf.config.image_size, (list, tuple)) else [hf.config.image_size] * 2
    x = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, hf(x, output_attentions=True)


def test_transformers_directory(hf_dir):
    hf, path, _ = hf_dir
    model, card = load_checkpoint(path)
    assert card.layout == "transformers" and card.config.num_heads == 4 and card.config.layer_norm_eps == 1e-6
    x, expected = hf_pass(hf)
    assert_same_pass(model.trace(x), expected)


@pytest.mark.parametrize("layout, filename", [
    ("timm", "w.safetensors"), ("torchvision", "w.pth"), ("jax", "w.npz"), ("transformers", "tf")])
def test_every_layout_holds_the_same_model(hf_dir, tmp_path, layout, filename):
    hf, path, image_size = hf_dir
    model, card = load_checkpoint(path)
    exported = export_checkpoint(model, card, tmp_path / filename, layout)
    # A bare timm/torchvision file cannot say its head count (qkv is fused) nor a non-square grid.
    hints = {} if layout in ("jax", "transformers") else {"num_heads": 4}
    if image_size != 32 and layout != "transformers":
        hints["image_size"] = image_size
    again, card2 = load_checkpoint(exported, **hints)
    assert card2.layout == layout and again.cfg == model.cfg
    x, expected = hf_pass(hf)
    assert_same_pass(again.trace(x), expected)


def test_transformers_reads_our_transformers_export(tmp_path):
    """The export is not only self-consistent: transformers itself loads it to the same numbers."""
    hf = hf_vit()
    hf.save_pretrained(tmp_path / "hf")
    model, card = load_checkpoint(tmp_path / "hf")
    export_checkpoint(model, card, tmp_path / "out", "transformers")
    hf2 = ViTForImageClassification.from_pretrained(tmp_path / "out", attn_implementation="eager").eval()
    x, expected = hf_pass(hf)
    with torch.no_grad():
        assert_same_pass(hf2(x, output_attentions=True), expected)


def test_deit_distilled(tmp_path):
    cfg = DeiTConfig(image_size=32, attn_implementation="eager", **SMALL)
    hf = randomize(DeiTForImageClassificationWithTeacher(cfg))
    hf.save_pretrained(tmp_path / "deit")
    model, card = load_checkpoint(tmp_path / "deit")
    assert card.config.distilled and card.config.num_prefix_tokens == 2
    x, expected = hf_pass(hf)
    ours = model.trace(x)
    assert_same_pass(ours, expected)  # logits: the mean of the two heads, as DeiT does at inference
    torch.testing.assert_close(ours.head_logits[0], expected.cls_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.head_logits[1], expected.distillation_logits, atol=1e-4, rtol=0)
    # and through timm's names (dist_token, head_dist) and back
    again, card2 = load_checkpoint(export_checkpoint(model, card, tmp_path / "deit.safetensors", "timm"), num_heads=4)
    assert card2.layout == "timm" and again.cfg.distilled
    assert_same_pass(again.trace(x), expected)


def test_interpolated_position_embeddings_match_transformers(tmp_path):
    """At another resolution transformers resamples E_pos with interpolate_pos_encoding=True; we do too."""
    hf = hf_vit(image_size=32)
    hf.save_pretrained(tmp_path / "hf")
    model, _ = load_checkpoint(tmp_path / "hf")
    x = torch.randn(1, 3, 48, 40, generator=torch.Generator().manual_seed(3))  # grid 4×4 -> 6×5
    with torch.no_grad():
        expected = hf(x, output_attentions=True, interpolate_pos_encoding=True)
    ours = model.trace(x)
    assert ours.grid == (6, 5)
    assert_same_pass(ours, expected)
