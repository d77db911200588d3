"""Reading checkpoints: safe file readers, config inference from the weights, the strict load, class
names and preprocessing from whatever a checkpoint folder holds (every file in it is untrusted), and
`load_checkpoint` for a file or a directory of any layout."""

from __future__ import annotations

import json
import math
import pickle  # for its exception type: torch.load(weights_only=True) unpickles with an allow-list
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vit_core.card import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD, RESAMPLE, ModelCard, Preprocess
from vit_core.model import VARIANTS, ViT, ViTConfig
from vit_core.weights.layouts import CONVERTERS, CheckpointError, detect_layout

ROOT = Path(__file__).resolve().parent.parent.parent
WEIGHT_SUFFIXES = (".safetensors", ".npz", ".bin", ".pt", ".pth", ".ckpt")
HEADS_BY_WIDTH = {dim: heads for dim, _, heads in VARIANTS.values()}  # 192→3, 384→6, 768→12, 1024→16, 1280→16


# ---------------------------------------------------------------------------------------------
# Safe readers.

def strip_prefixes(sd: dict) -> dict:
    """Unwrap {"model": sd} / {"state_dict": sd} and drop `module.` (DDP) and `model.` (wrappers) prefixes."""
    for wrapper in ("model", "state_dict", "model_state"):
        if isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}  # drop "epoch" and the like
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """One weights file (or a sharded *.index.json) -> tensors, with safe readers only."""
    path = Path(path)
    name = path.name
    if name.endswith(".index.json"):  # sharded: {"weight_map": {key: shard file}}
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        return {k: v for s in shards for k, v in read_weights(path.parent / s).items()}
    try:
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(path)
        elif name.endswith(".npz"):
            with np.load(path, allow_pickle=False) as f:  # object arrays (pickles) raise here
                sd = {k: torch.from_numpy(np.array(f[k])) for k in f.files}
        elif name.endswith((".bin", ".pt", ".pth", ".ckpt")):
            sd = torch.load(path, map_location="cpu", weights_only=True)  # refuses to build arbitrary objects
        else:
            raise CheckpointError("checkpoint.unsupported_file", "checkpoint.detail.suffix", name=name,
                                  suffixes=", ".join(WEIGHT_SUFFIXES))
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - turned into one clear message
        text = str(e)
        if isinstance(e, pickle.UnpicklingError) or "allow_pickle" in text:  # torch's / numpy's refusal
            raise CheckpointError("checkpoint.unsafe_pickle", "checkpoint.detail.pickle", name=name) from e
        raise CheckpointError("checkpoint.unreadable", "checkpoint.detail.unreadable", name=name,
                              reason=(text.splitlines() or [type(e).__name__])[0]) from e
    if not isinstance(sd, dict):
        raise CheckpointError("checkpoint.unreadable", "checkpoint.detail.not_a_dict", name=name,
                              kind=type(sd).__name__)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in strip_prefixes(sd).items()}


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# ---------------------------------------------------------------------------------------------
# Config from shapes, strict load.

def infer_config(sd: dict, **known) -> ViTConfig:
    """A ViTConfig from a timm-named state dict. `known` (num_heads, image_size, layer_norm_eps) wins
    where a file says more than its shapes: heads are not visible in a fused qkv, and a non-square
    grid cannot be told from the number of positions alone."""
    try:
        D, C, P, _ = sd["patch_embed.proj.weight"].shape  # (D, C, P, P)
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        mlp_dim = sd["blocks.0.mlp.fc1.weight"].shape[0]
        positions = sd["pos_embed"].shape[1]
    except (KeyError, ValueError) as e:
        missing = [k for k in ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight") if k not in sd]
        missing += [] if any(k.startswith("blocks.") for k in sd) else ["blocks.*"]
        raise CheckpointError("checkpoint.missing_keys", "checkpoint.detail.no_shape",
                              missing=missing or [str(e)]) from e
    distilled = "dist_token" in sd
    n = positions - (2 if distilled else 1)
    patch = known.pop("patch_size", P)
    if isinstance(patch, (list, tuple)):
        if len(set(patch)) != 1:
            raise CheckpointError("checkpoint.unsupported", "checkpoint.detail.nonsquare_patch", patch=tuple(patch))
        patch = patch[0]
    if patch != P:
        raise CheckpointError("checkpoint.shape_mismatch", "checkpoint.detail.patch_conflict", config=patch, weights=P,
                              mismatched=[f"patch_embed.proj.weight {(D, C, P, P)} ≠ patch {patch}"])
    image_size = known.pop("image_size", None)
    if image_size is None:
        side = math.isqrt(n)
        if side * side != n:
            raise CheckpointError("checkpoint.grid", "checkpoint.detail.grid", n=n)
        image_size = (side * P, side * P)
    image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    cfg = ViTConfig(
        image_size=image_size, patch_size=P, in_chans=C, embed_dim=D, depth=depth,
        num_heads=known.pop("num_heads", None) or HEADS_BY_WIDTH.get(D, max(1, D // 64)),
        mlp_dim=mlp_dim, num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
        qkv_bias="blocks.0.attn.qkv.bias" in sd, layer_norm_eps=known.pop("layer_norm_eps", 1e-6),
        distilled=distilled)
    return cfg.with_(**known)




def strict_load(build, sd: dict, what: str = "checkpoint") -> nn.Module:
    """Build a module on the meta device (no init, no memory) and load `sd` into it with strict=True.
    Every problem is reported at once, by name: missing keys, unexpected keys, shape mismatches."""
    with torch.device("meta"):
        model = build()
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [f"{k} {tuple(sd[k].shape)} ≠ {tuple(v.shape)}" for k, v in expected.items()
                  if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or mismatched:
        key = ("checkpoint.missing_keys" if missing else
               "checkpoint.unexpected_keys" if unexpected else "checkpoint.shape_mismatch")
        raise CheckpointError(key, "checkpoint.detail.strict", what=what, missing=missing, unexpected=unexpected,
                              mismatched=mismatched)
    model.load_state_dict({k: v.contiguous() for k, v in sd.items()}, strict=True, assign=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Cards: class names and preprocessing travel with the weights.

@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    return tuple(json.loads((ROOT / "assets" / "imagenet_classes.json").read_text(encoding="utf-8")))


GENERIC_CLASS = "class {}"  # the name of class i when a checkpoint names none (the UI translates it)


def class_names(n: int, names=None) -> list[str]:
    """The file's own names when they say something; ImageNet-1k's for 1000 classes; else "class i"."""
    if isinstance(names, dict):  # id2label {"0": ...}
        names = [names.get(str(i), names.get(i)) for i in range(n)]
    names = list(names or [])
    generic = all(re.fullmatch(r"LABEL_\d+|n\d{8}", str(x)) for x in names)
    if n == 1000 and (generic or str(names[0]).lower().startswith("tench")):
        return list(imagenet_classes())  # the same classes; our short names ("tench, Tinca tinca" -> "tench")
    if len(names) == n and not generic and all(names):
        return [str(x) for x in names]
    return [GENERIC_CLASS.format(i) for i in range(n)]


@lru_cache(maxsize=1)
def imagenet_classes_zh() -> tuple[str, ...]:
    return tuple(json.loads((ROOT / "assets" / "imagenet_classes_zh.json").read_text(encoding="utf-8")))


def class_names_zh(names: list[str]) -> list[str] | None:
    """Chinese names where we have them: the ImageNet-1k classes (assets/imagenet_classes_zh.json)."""
    return list(imagenet_classes_zh()) if tuple(names) == imagenet_classes() else None


# What each layout's own evaluation code does when the file says nothing.
DEFAULT_PREPROCESS = {
    "timm": dict(crop_pct=0.875, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD),  # timm / DeiT
    "torchvision": dict(crop_pct=224 / 256, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "jax": dict(crop_pct=0.875, interpolation="bilinear", mean=INCEPTION_MEAN, std=INCEPTION_STD),
    "transformers": dict(crop_pct=1.0, interpolation="bilinear", mean=INCEPTION_MEAN, std=INCEPTION_STD),
}
PIL_RESAMPLE = {int(v): k for k, v in RESAMPLE.items()}  # transformers stores PIL's number: 2 -> "bilinear"


def _hw(size) -> tuple[int, int] | None:
    if isinstance(size, dict):
        size = (size["height"], size["width"]) if "height" in size else size.get("shortest_edge")
    if size is None:
        return None
    return (size, size) if isinstance(size, int) else tuple(size)


def _preprocess(cfg: ViTConfig, layout: str, **given) -> Preprocess:
    p = DEFAULT_PREPROCESS[layout] | {k: v for k, v in given.items() if v is not None}
    return Preprocess(size=cfg.image_size, channels="RGB" if cfg.in_chans == 3 else "L", **p)


def hf_preprocess(pp: dict) -> dict:
    """transformers' preprocessor_config.json -> Preprocess fields (resize shorter side, centre crop)."""
    if not pp:
        return {}
    size, crop = _hw(pp.get("size")), _hw(pp.get("crop_size")) if pp.get("do_center_crop") else None
    return dict(crop_pct=min(crop) / min(size) if crop and size else 1.0,
                interpolation=PIL_RESAMPLE.get(pp.get("resample"), None),
                mean=pp.get("image_mean"), std=pp.get("image_std"))


def timm_preprocess(pretrained: dict) -> dict:
    return dict(crop_pct=pretrained.get("crop_pct"), interpolation=pretrained.get("interpolation"),
                mean=pretrained.get("mean"), std=pretrained.get("std"))


# ---------------------------------------------------------------------------------------------
# Reading.

def from_state_dict(sd: dict, *, layout: str | None = None, source: str = "", name: str = "",
                    hints: dict | None = None, preprocess: dict | None = None, labels=None,
                    extra: dict | None = None, **overrides) -> tuple[ViT, ModelCard]:
    """A state dict of any layout -> (ViT in eval mode on the CPU, ModelCard).

    `hints` is what the file's metadata says (num_heads, image_size, layer_norm_eps); `overrides` are
    the caller's and win over everything (num_heads for a bare file of an unusual width, say)."""
    layout = layout or detect_layout(sd)
    if any("pre_logits" in k for k in sd):
        raise CheckpointError("checkpoint.pre_logits", "checkpoint.detail.pre_logits", source=source or "state_dict")
    # JAX keeps the heads as an axis, query/kernel (D, heads, hd): read it before the conversion flattens it
    kernels = [v for k, v in sd.items() if k.endswith("query/kernel")] if layout == "jax" else []
    heads = {"num_heads": kernels[0].shape[-2]} if kernels else {}
    timm_sd, left = CONVERTERS[layout](sd)
    eps = 1e-12 if layout == "transformers" else 1e-6  # see "Numeric traps" at the top
    known = {"layer_norm_eps": eps} | heads | {k: v for k, v in (hints or {}).items() if v is not None} | overrides
    cfg = infer_config(timm_sd, **known)
    what = f"{source or 'state_dict'} ({layout})"
    # Names no table row knows stay as the file spells them, so the error names them as the user sees them.
    model = strict_load(lambda: ViT(cfg), timm_sd | {k: sd[k] for k in left}, what=what)
    name = name or Path(source).stem or layout
    names = class_names(cfg.num_classes, labels)
    card = ModelCard(name=name, arch="vit", config=cfg, preprocess=_preprocess(cfg, layout, **(preprocess or {})),
                     class_names=names, class_names_zh=class_names_zh(names), title=f"{name} ({layout})",
                     source=str(source), layout=layout, extra=dict(extra or {}))
    return model, card


def load_checkpoint(path: str | Path, **overrides) -> tuple[nn.Module, ModelCard]:
    """A checkpoint file or directory of any supported layout -> (model in eval mode on the CPU, card).

    `overrides` (num_heads=, image_size=(H, W), layer_norm_eps=) fill in what a bare file cannot say."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError("checkpoint.not_found", "checkpoint.detail.no_file", path=str(path))
    if path.is_dir():
        return _load_dir(path, overrides)
    if (card_path := _card_next_to(path)) is not None:
        return _load_pair(card_path)
    sd = read_weights(path)
    layout = detect_layout(sd)
    if layout != "jax":
        return from_state_dict(sd, layout=layout, source=str(path), name=path.stem, **overrides)
    augreg = "-i21k-" in path.name or "augreg" in path.name.lower()  # AugReg evaluates with crop 0.9
    return from_state_dict(sd, layout=layout, source=str(path), name=path.stem,
                           preprocess={"crop_pct": 0.9 if augreg else None},
                           extra={"note": "trained with tanh-approximate GELU, run with exact GELU (as timm does)"},
                           **overrides)


def _card_next_to(path: Path) -> Path | None:
    """Our own pair: <name>.safetensors with a ModelCard <name>.json beside it."""
    card = path if path.suffix == ".json" else path.with_suffix(".json")
    if path.suffix in (".json", ".safetensors") and card.is_file() and {"arch", "preprocess"} <= _json(card).keys():
        return card
    return None


def _load_pair(card_path: Path) -> tuple[nn.Module, ModelCard]:
    card = ModelCard.load(card_path)
    card.class_names_zh = card.class_names_zh or class_names_zh(card.class_names)  # a card saved without them
    weights = card_path.with_suffix(".safetensors")
    sd = read_weights(weights)
    if card.arch == "cnn":
        from vit_core.cnn import build_cnn  # lazy: only the CNN page needs it
        return strict_load(lambda: build_cnn(card.config), sd, what=str(weights)), card
    return strict_load(lambda: ViT(card.config), sd, what=str(weights)), card


def _load_dir(path: Path, overrides: dict) -> tuple[nn.Module, ModelCard]:
    """A transformers or timm hub directory (config.json + weights), or a folder holding one checkpoint."""
    config = _json(path / "config.json")
    weights = next((path / f for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                        "pytorch_model.bin.index.json") if (path / f).is_file()), None)
    if weights is None:
        found = [p for p in sorted(path.iterdir()) if p.name.endswith(WEIGHT_SUFFIXES)]
        if len(found) != 1:
            raise CheckpointError("checkpoint.not_found", "checkpoint.detail.dir", path=str(path),
                                  suffixes=", ".join(WEIGHT_SUFFIXES), n=len(found))
        return load_checkpoint(found[0], **overrides)
    sd = read_weights(weights)
    layout = detect_layout(sd)
    kw = dict(layout=layout, source=str(path), name=path.name)
    if layout == "transformers" and config:
        if config.get("hidden_act", "gelu") != "gelu":
            raise CheckpointError("checkpoint.unsupported", "checkpoint.detail.activation", path=str(path),
                                  act=repr(config["hidden_act"]))
        # The config wins over the shapes; the strict load then checks every tensor against it.
        hints = dict(num_heads=config.get("num_attention_heads"), layer_norm_eps=config.get("layer_norm_eps"),
                     image_size=config.get("image_size"), patch_size=config.get("patch_size"),
                     in_chans=config.get("num_channels"), embed_dim=config.get("hidden_size"),
                     depth=config.get("num_hidden_layers"), mlp_dim=config.get("intermediate_size"),
                     qkv_bias=config.get("qkv_bias"))
        pp = hf_preprocess(_json(path / "preprocessor_config.json"))
        if not pp and config.get("model_type") == "deit":  # DeiT evaluates like timm
            pp = DEFAULT_PREPROCESS["timm"]
        return from_state_dict(sd, **kw, hints=hints, preprocess=pp, labels=config.get("id2label"), **overrides)
    if layout == "timm" and config:
        pretrained = config.get("pretrained_cfg", config)  # older timm hub configs are one flat dict
        args = config.get("model_args", {})
        if config.get("global_pool", "token") not in ("token", "", None) or args.get("class_token") is False:
            raise CheckpointError("checkpoint.unsupported", "checkpoint.detail.pool", path=str(path),
                                  pool=repr(config.get("global_pool")))
        size = pretrained.get("input_size")  # (C, H, W)
        hints = dict(num_heads=args.get("num_heads"), image_size=args.get("img_size") or (size[1:] if size else None),
                     patch_size=args.get("patch_size"), embed_dim=args.get("embed_dim"), depth=args.get("depth"),
                     qkv_bias=args.get("qkv_bias"))
        labels = next((d[k] for k in ("label_descriptions", "label_names") for d in (config, pretrained) if d.get(k)),
                      None)
        return from_state_dict(sd, **kw, hints=hints, preprocess=timm_preprocess(pretrained), labels=labels,
                               **overrides)
    return from_state_dict(sd, **kw, **overrides)
