"""The zoo: what the app lists, and every listed model loads, on device(), frozen, in eval mode."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vit_core import ViT, ViTConfig, hub, zoo
from vit_core.card import ModelCard, Preprocess
from vit_core.weights import CheckpointError, export_checkpoint, save_checkpoint, to_layout

CFG = ViTConfig(image_size=32, patch_size=8, embed_dim=192, depth=1, num_heads=3, mlp_dim=384, num_classes=4)


def tiny():
    torch.manual_seed(0)
    return ViT(CFG).eval()


def card(m):
    return ModelCard(name="mine", arch="vit", config=m.cfg, preprocess=Preprocess(size=32),
                     class_names=list("abcd"), title="Mine")


@pytest.fixture
def local_folder(tmp_path, monkeypatch):
    """A folder named by VIT_EXPLORER_MODELS with one checkpoint of every kind, plus things to skip."""
    m = tiny()
    folder = tmp_path / "models"
    folder.mkdir()
    save_file(m.state_dict(), folder / "timm_vit.safetensors")
    np.savez(folder / "jax_vit.npz", **to_layout(m.state_dict(), m.cfg, "jax"))
    export_checkpoint(m, card(m), folder / "hf_vit", "transformers")
    save_checkpoint(m, card(m), folder / "pair")  # pair.safetensors + pair.json: listed once
    (folder / "README.md").write_text("not a model")
    (folder / "empty_dir").mkdir()
    monkeypatch.setenv(zoo.ENV_DIR, str(folder))
    return folder, m


def test_lists_embedded_hub_and_local_models(local_folder, tmp_path):
    folder, _ = local_folder
    entries = zoo.list_models(cache_dir=tmp_path / "empty-cache")
    by_kind = {k: [e for e in entries if e.kind == k] for k in ("embedded", "hub", "local")}
    assert [e.id for e in by_kind["embedded"]] == ["fmnist-vit", "fmnist-cnn"]
    assert [e.id for e in by_kind["hub"]] == [e.id for e in hub.CATALOGUE]
    assert not any(e.cached for e in by_kind["hub"]) and all(e.size_mb for e in by_kind["hub"])
    local = sorted(e.id for e in by_kind["local"] if e.id.startswith(str(folder)))
    assert local == sorted(str(folder / n) for n in ("timm_vit.safetensors", "jax_vit.npz", "hf_vit",
                                                      "pair.safetensors"))


def test_every_listed_local_model_loads(local_folder, tmp_path):
    folder, m = local_folder
    x = torch.randn(1, 3, 32, 32)
    expected = m.trace(x).logits
    for entry in zoo.list_models(cache_dir=tmp_path / "empty-cache"):
        if entry.kind != "local" or not entry.id.startswith(str(folder)):
            continue
        model, c = zoo.load_model(entry.id)
        assert model.device.type == zoo.device().type and not model.training
        assert not any(p.requires_grad for p in model.parameters())
        torch.testing.assert_close(model.trace(x).logits.cpu(), expected, atol=1e-4, rtol=0)
    assert zoo.load_model(folder / "pair.safetensors")[1].title == "Mine"  # the card read back as saved


def test_frozen_model_still_gives_input_gradients(local_folder):
    model, _ = zoo.load_model(local_folder[0] / "pair.safetensors")
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    model.trace_with_grad(x).logits[0, 1].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_name_is_a_clear_error():
    with pytest.raises(CheckpointError) as e:
        zoo.load_model("no-such-model")
    assert e.value.key == "zoo.unknown_model" and "fmnist-vit" in str(e.value)


def test_hub_id_loads_from_the_cache(tmp_path, monkeypatch):
    from tests.test_hub import ENTRY, make_hf_cache, tiny_deit_files
    make_hf_cache(tmp_path / "cache", ENTRY.repo, tiny_deit_files(tmp_path / "files"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert next(e for e in zoo.list_models() if e.id == ENTRY.id).cached
    model, c = zoo.load_model(ENTRY.id)
    assert c.name == ENTRY.id and model.cfg.distilled


@pytest.mark.parametrize("name", ["fmnist-vit", "fmnist-cnn"])
def test_embedded_models_load(name):
    if not zoo.embedded_path(name).is_file():
        pytest.skip(f"{zoo.embedded_path(name)} is not trained yet")
    model, c = zoo.load_model(None if name == "fmnist-vit" else name)
    assert c.name == name and c.arch == name.split("-")[1] and not model.training
    shape = (1, c.preprocess.channels == "RGB" and 3 or 1, *c.preprocess.size)
    with torch.no_grad():
        assert model(torch.zeros(shape, device=zoo.device())).shape == (1, len(c.class_names))


def test_the_allocator_tweak_applies_exactly_on_glibc():
    import platform

    assert zoo.keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
