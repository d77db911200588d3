"""Writing checkpoints: our own pair (weights + card), the weights alone, and any other layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vit_core.card import RESAMPLE, ModelCard, Preprocess
from vit_core.model import ViT, ViTConfig
from vit_core.weights.layouts import to_layout

# ---------------------------------------------------------------------------------------------
# Writing.

def save_checkpoint(model: nn.Module, card: ModelCard, path_without_ext: str | Path) -> tuple[Path, Path]:
    """Our own format: <path>.safetensors (timm names for a ViT) + <path>.json (the card), read back exactly."""
    base = Path(path_without_ext)
    if card.arch == "vit" and model.cfg != card.config:
        raise ValueError(f"the card's config does not describe this model: {card.config} ≠ {model.cfg}")
    card_path = base.with_name(base.name + ".json")
    weights = save_weights(model, base)
    card.save(card_path)
    return weights, card_path


def save_weights(model: nn.Module, path_without_ext: str | Path) -> Path:
    """The weights half of save_checkpoint: <path>.safetensors, naming <path>.json as its card."""
    from safetensors.torch import save_file
    base = Path(path_without_ext)
    base.parent.mkdir(parents=True, exist_ok=True)
    weights = base.with_name(base.name + ".safetensors")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, weights,
              metadata={"format": "pt", "card": base.name + ".json"})
    return weights


def export_checkpoint(model: ViT, card: ModelCard, path: str | Path, layout: str) -> Path:
    """Write the model as `layout` stores it: timm/torchvision -> .safetensors or .pth, JAX -> .npz,
    transformers -> a directory (config.json, model.safetensors, preprocessor_config.json)."""
    from safetensors.torch import save_file
    path, cfg = Path(path), model.cfg
    sd = to_layout({k: v.detach().cpu() for k, v in model.state_dict().items()}, cfg, layout)
    if layout == "jax":
        np.savez(path, **sd)
        return path
    sd = {k: v.contiguous() for k, v in sd.items()}
    if layout in ("timm", "torchvision"):
        if path.suffix in (".pth", ".pt", ".bin"):
            torch.save(sd, path)
        else:
            save_file(sd, path)
        return path
    path.mkdir(parents=True, exist_ok=True)
    save_file(sd, path / "model.safetensors", metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(transformers_config(cfg, card.class_names), indent=2))
    (path / "preprocessor_config.json").write_text(json.dumps(transformers_preprocessor(card.preprocess), indent=2))
    return path


def transformers_config(cfg: ViTConfig, names: list[str]) -> dict:
    H, W = cfg.image_size
    arch = "DeiTForImageClassificationWithTeacher" if cfg.distilled else "ViTForImageClassification"
    return {"architectures": [arch], "model_type": "deit" if cfg.distilled else "vit", "hidden_size": cfg.embed_dim,
            "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.mlp_dim,
            "hidden_act": "gelu", "layer_norm_eps": cfg.layer_norm_eps, "image_size": H if H == W else [H, W],
            "patch_size": cfg.patch_size, "num_channels": cfg.in_chans, "qkv_bias": cfg.qkv_bias,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def transformers_preprocessor(pp: Preprocess) -> dict:
    H, W = pp.size
    resize = {"height": round(H / pp.crop_pct), "width": round(W / pp.crop_pct)}
    return {"image_processor_type": "DeiTImageProcessor", "do_resize": True, "size": resize,
            "do_center_crop": pp.crop_pct < 1, "crop_size": {"height": H, "width": W},
            "resample": int(RESAMPLE[pp.interpolation]), "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(pp.mean), "image_std": list(pp.std)}
