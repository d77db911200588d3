"""Checkpoint readers: every layout becomes timm's names, then one strict load.

    load_checkpoint(path) -> (model, ModelCard)      a file or a directory of any layout below
    save_checkpoint(model, card, "assets/models/x")  our own pair: x.safetensors (timm names) + x.json (card)
    export_checkpoint(model, card, path, layout)     write the same weights as another layout would

Layouts (the card's `layout` says which reader was used):
    timm          state dict / safetensors with timm's names (also behind `model.` / `module.`); timm hub
                  directories: model.safetensors + config.json with `pretrained_cfg`
    transformers  ViTForImageClassification (`vit.*`, `classifier`), ViTModel (no prefix, no head),
                  DeiTForImageClassification(WithTeacher) (`deit.*`, `cls_classifier`, `distillation_classifier`);
                  a directory with config.json (+ preprocessor_config.json) or a bare state dict
    torchvision   `vit_*` state dicts (`class_token`, `conv_proj`, `encoder.layers.encoder_layer_{i}`, `heads.head`)
    jax           the original google-research/vision_transformer and AugReg `.npz` files

Each foreign layout is a rename table kept as data, plus small named helpers for the tensors that
change shape (`fuse_qkv`, `split_qkv`, `jax_kernel_to_linear`, ...). Tables run both ways, so every
layout can also be written (`to_layout`), which is how the tests prove the round trips.

Numeric traps, written down where they bite:
- LayerNorm eps is 1e-6 in timm, torchvision and JAX, but transformers' default is 1e-12 (its ViT
  checkpoints on the hub say 1e-12 in config.json even when converted from timm/JAX). A bare
  transformers state dict carries no config, so it gets 1e-12; a directory gets what its config says.
- GELU: the JAX code uses flax's `nn.gelu`, whose default is the tanh approximation; every PyTorch
  port (timm, transformers, torchvision, this model) runs the exact erf GELU on those weights. The
  logits move by about 1e-3 relative, far below anything a learner can see, so we do the same.

Only safe readers are used: safetensors, `np.load(allow_pickle=False)`, `torch.load(weights_only=True)`.
A pickle that asks to run code is refused with a CheckpointError before anything in it runs.
"""

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
from vit_core.i18n import TranslatableError
from vit_core.model import VARIANTS, ViT, ViTConfig

ROOT = Path(__file__).resolve().parent.parent
WEIGHT_SUFFIXES = (".safetensors", ".npz", ".bin", ".pt", ".pth", ".ckpt")
HEADS_BY_WIDTH = {dim: heads for dim, _, heads in VARIANTS.values()}  # 192→3, 384→6, 768→12, 1024→16, 1280→16


class CheckpointError(TranslatableError):
    """One clear error per unreadable checkpoint: `key` ("checkpoint.missing_keys") and `detail`
    ("checkpoint.detail.strict") are message ids the UI translates, `params` their blanks; the weights
    at fault are listed in `missing`, `unexpected` and `mismatched`, which fill the blanks of those names."""

    def __init__(self, key: str, detail: str, params: dict | None = None, *, missing=(), unexpected=(),
                 mismatched=(), **blanks):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        names = {k: _names(v) or "—" for k, v in
                 (("missing", self.missing), ("unexpected", self.unexpected), ("mismatched", self.mismatched))}
        super().__init__(key, detail, names | (params or {}) | blanks)


# ---------------------------------------------------------------------------------------------
# Rename tables: (foreign name, timm name). {i} is the block index, {p} is weight|bias.
# Reading tries every row; writing uses the first row that produces a timm name.

TRANSFORMERS_NAMES = [
    ("embeddings.cls_token", "cls_token"),
    ("embeddings.distillation_token", "dist_token"),
    ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.patch_embeddings.projection.{p}", "patch_embed.proj.{p}"),
    ("encoder.layer.{i}.layernorm_before.{p}", "blocks.{i}.norm1.{p}"),
    ("encoder.layer.{i}.attention.attention.query.{p}", "blocks.{i}.attn.q.{p}"),  # q, k, v: see fuse_qkv
    ("encoder.layer.{i}.attention.attention.key.{p}", "blocks.{i}.attn.k.{p}"),
    ("encoder.layer.{i}.attention.attention.value.{p}", "blocks.{i}.attn.v.{p}"),
    ("encoder.layer.{i}.attention.output.dense.{p}", "blocks.{i}.attn.proj.{p}"),
    ("encoder.layer.{i}.layernorm_after.{p}", "blocks.{i}.norm2.{p}"),
    ("encoder.layer.{i}.intermediate.dense.{p}", "blocks.{i}.mlp.fc1.{p}"),
    ("encoder.layer.{i}.output.dense.{p}", "blocks.{i}.mlp.fc2.{p}"),
    ("layernorm.{p}", "norm.{p}"),
    # transformers >= 5 renames modules in memory (`model.state_dict()`); its files keep the names above.
    ("layers.{i}.layernorm_before.{p}", "blocks.{i}.norm1.{p}"),
    ("layers.{i}.attention.q_proj.{p}", "blocks.{i}.attn.q.{p}"),
    ("layers.{i}.attention.k_proj.{p}", "blocks.{i}.attn.k.{p}"),
    ("layers.{i}.attention.v_proj.{p}", "blocks.{i}.attn.v.{p}"),
    ("layers.{i}.attention.o_proj.{p}", "blocks.{i}.attn.proj.{p}"),
    ("layers.{i}.layernorm_after.{p}", "blocks.{i}.norm2.{p}"),
    ("layers.{i}.mlp.fc1.{p}", "blocks.{i}.mlp.fc1.{p}"),
    ("layers.{i}.mlp.fc2.{p}", "blocks.{i}.mlp.fc2.{p}"),
]
TRANSFORMERS_HEADS = [  # the heads sit outside the `vit.` / `deit.` base model
    ("classifier.{p}", "head.{p}"),  # ViTForImageClassification, DeiTForImageClassification
    ("cls_classifier.{p}", "head.{p}"),  # DeiTForImageClassificationWithTeacher
    ("distillation_classifier.{p}", "head_dist.{p}"),
]

TORCHVISION_NAMES = [
    ("class_token", "cls_token"),
    ("conv_proj.{p}", "patch_embed.proj.{p}"),
    ("encoder.pos_embedding", "pos_embed"),
    ("encoder.layers.encoder_layer_{i}.ln_1.{p}", "blocks.{i}.norm1.{p}"),
    ("encoder.layers.encoder_layer_{i}.self_attention.in_proj_weight", "blocks.{i}.attn.qkv.weight"),  # [q; k; v]
    ("encoder.layers.encoder_layer_{i}.self_attention.in_proj_bias", "blocks.{i}.attn.qkv.bias"),
    ("encoder.layers.encoder_layer_{i}.self_attention.out_proj.{p}", "blocks.{i}.attn.proj.{p}"),
    ("encoder.layers.encoder_layer_{i}.ln_2.{p}", "blocks.{i}.norm2.{p}"),
    ("encoder.layers.encoder_layer_{i}.mlp.0.{p}", "blocks.{i}.mlp.fc1.{p}"),
    ("encoder.layers.encoder_layer_{i}.mlp.3.{p}", "blocks.{i}.mlp.fc2.{p}"),
    ("encoder.layers.encoder_layer_{i}.mlp.linear_1.{p}", "blocks.{i}.mlp.fc1.{p}"),  # torchvision < 0.13
    ("encoder.layers.encoder_layer_{i}.mlp.linear_2.{p}", "blocks.{i}.mlp.fc2.{p}"),
    ("encoder.ln.{p}", "norm.{p}"),
    ("heads.head.{p}", "head.{p}"),
]


def jax_names(mha: int = 1, mlp: int = 3, ln2: int = 2) -> list[tuple[str, str, str]]:
    """(jax name, timm name, tensor helper). Sub-module numbers are (1, 3, 2) in the original ViT code
    and AugReg, (0, 0, 1) in big_vision."""
    blk, att = "Transformer/encoderblock_{i}/", f"Transformer/encoderblock_{{i}}/MultiHeadDotProductAttention_{mha}/"
    return [
        ("cls", "cls_token", "same"),
        ("embedding/kernel", "patch_embed.proj.weight", "conv"),
        ("embedding/bias", "patch_embed.proj.bias", "same"),
        ("Transformer/posembed_input/pos_embedding", "pos_embed", "same"),
        (blk + "LayerNorm_0/scale", "blocks.{i}.norm1.weight", "same"),
        (blk + "LayerNorm_0/bias", "blocks.{i}.norm1.bias", "same"),
        *[(att + f"{n}/kernel", f"blocks.{{i}}.attn.{n[0]}.weight", "heads_in") for n in ("query", "key", "value")],
        *[(att + f"{n}/bias", f"blocks.{{i}}.attn.{n[0]}.bias", "heads_bias") for n in ("query", "key", "value")],
        (att + "out/kernel", "blocks.{i}.attn.proj.weight", "heads_out"),
        (att + "out/bias", "blocks.{i}.attn.proj.bias", "same"),
        (blk + f"LayerNorm_{ln2}/scale", "blocks.{i}.norm2.weight", "same"),
        (blk + f"LayerNorm_{ln2}/bias", "blocks.{i}.norm2.bias", "same"),
        (blk + f"MlpBlock_{mlp}/Dense_0/kernel", "blocks.{i}.mlp.fc1.weight", "linear"),
        (blk + f"MlpBlock_{mlp}/Dense_0/bias", "blocks.{i}.mlp.fc1.bias", "same"),
        (blk + f"MlpBlock_{mlp}/Dense_1/kernel", "blocks.{i}.mlp.fc2.weight", "linear"),
        (blk + f"MlpBlock_{mlp}/Dense_1/bias", "blocks.{i}.mlp.fc2.bias", "same"),
        ("Transformer/encoder_norm/scale", "norm.weight", "same"),
        ("Transformer/encoder_norm/bias", "norm.bias", "same"),
        ("head/kernel", "head.weight", "linear"),
        ("head/bias", "head.bias", "same"),
    ]


# ---------------------------------------------------------------------------------------------
# Tensor helpers. JAX computes y = x @ kernel with kernel (in, out); a torch Linear holds (out, in).

def jax_kernel_to_linear(k):  # (in, out) -> (out, in)
    return k.T


def linear_to_jax_kernel(w, heads=None):
    return w.T


def jax_conv_to_torch(k):  # (P, P, C, D) -> (D, C, P, P)
    return k.permute(3, 2, 0, 1)


def torch_conv_to_jax(w, heads=None):  # (D, C, P, P) -> (P, P, C, D)
    return w.permute(2, 3, 1, 0)


def jax_heads_to_linear(k):  # q/k/v kernel (D, heads, hd) -> (heads·hd, D)
    return k.flatten(1).T


def linear_to_jax_heads(w, heads):  # (heads·hd, D) -> (D, heads, hd)
    return w.T.reshape(w.shape[1], heads, -1)


def jax_heads_bias_to_linear(b):  # (heads, hd) -> (heads·hd,)
    return b.flatten()


def linear_to_jax_heads_bias(b, heads):
    return b.reshape(heads, -1)


def jax_out_to_linear(k):  # out kernel (heads, hd, D) -> (D, heads·hd)
    return k.flatten(0, 1).T


def linear_to_jax_out(w, heads):  # (D, heads·hd) -> (heads, hd, D)
    return w.T.reshape(heads, -1, w.shape[0])


def same(x, heads=None):
    return x


JAX_HELPERS = {  # name in jax_names(): (JAX -> torch, torch -> JAX)
    "same": (same, same),
    "linear": (jax_kernel_to_linear, linear_to_jax_kernel),
    "conv": (jax_conv_to_torch, torch_conv_to_jax),
    "heads_in": (jax_heads_to_linear, linear_to_jax_heads),
    "heads_bias": (jax_heads_bias_to_linear, linear_to_jax_heads_bias),
    "heads_out": (jax_out_to_linear, linear_to_jax_out),
}


def fuse_qkv(sd: dict) -> dict:
    """blocks.{i}.attn.q/k/v -> blocks.{i}.attn.qkv, stacked [q; k; v] along the output rows as timm does."""
    out = dict(sd)
    for key in [k for k in sd if re.fullmatch(r"blocks\.\d+\.attn\.q\.(weight|bias)", k)]:
        parts = [key.replace(".attn.q.", f".attn.{n}.") for n in "qkv"]
        if all(p in out for p in parts):
            out[key.replace(".attn.q.", ".attn.qkv.")] = torch.cat([out.pop(p) for p in parts], dim=0)
    return out


def split_qkv(sd: dict) -> dict:
    """The inverse of fuse_qkv: blocks.{i}.attn.qkv -> attn.q, attn.k, attn.v."""
    out = dict(sd)
    for key in [k for k in sd if ".attn.qkv." in k]:
        for name, part in zip("qkv", out.pop(key).chunk(3, dim=0)):
            out[key.replace(".attn.qkv.", f".attn.{name}.")] = part
    return out


@lru_cache(maxsize=None)
def _template(t: str) -> re.Pattern:
    t = re.escape(t).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(t)


def rename(sd: dict, table, *, reverse: bool = False, heads: int | None = None) -> tuple[dict, list[str]]:
    """Rename keys with a table of (source, target[, JAX helper]) templates; reverse=True writes the
    source layout back. Returns (renamed, names no row matched or that repeat a name). Rows are tried
    in order, so when writing, the first row that fits gives the name."""
    out, left = {}, []
    for key, value in sd.items():
        for src, dst, *helper in table:
            src, dst = (dst, src) if reverse else (src, dst)
            if m := _template(src).fullmatch(key):
                if helper:
                    to_torch, to_jax = JAX_HELPERS[helper[0]]
                    value = to_jax(value, heads) if reverse else to_torch(value)
                name = dst.format(**m.groupdict())
                if name in out:  # two names for one tensor (e.g. mlp.0 and mlp.linear_1): report, don't pick
                    left.append(key)
                else:
                    out[name] = value
                break
        else:
            left.append(key)
    return out, left


# ---------------------------------------------------------------------------------------------
# One converter per layout: its state dict -> (timm-named state dict, names no table row knows).

def from_timm(sd):
    return dict(sd), []


def from_transformers(sd):
    base = {k.split(".", 1)[1] if k.startswith(("vit.", "deit.")) else k: v for k, v in sd.items()}
    # ViTModel's pooler (a tanh layer) never feeds a transformers classifier: it has no place here.
    base = {k: v for k, v in base.items() if not k.startswith("pooler.")}
    out, left = rename(base, TRANSFORMERS_NAMES + TRANSFORMERS_HEADS)
    return fuse_qkv(out), left


def from_torchvision(sd):
    return rename(sd, TORCHVISION_NAMES)


def from_jax(sd):
    sd = {k.removeprefix("opt/target/").removeprefix("params/"): v for k, v in sd.items()}
    # big_vision's scanned layout stacks the blocks along a leading axis: unstack it first.
    for key in [k for k in sd if k.startswith("Transformer/encoderblock/")]:
        for i, x in enumerate(sd.pop(key)):
            sd[key.replace("encoderblock/", f"encoderblock_{i}/")] = x
    big_vision = any("MultiHeadDotProductAttention_0/" in k for k in sd)
    out, left = rename(sd, jax_names(0, 0, 1) if big_vision else jax_names())
    return fuse_qkv(out), left


CONVERTERS = {"timm": from_timm, "transformers": from_transformers, "torchvision": from_torchvision, "jax": from_jax}
LAYOUTS = tuple(CONVERTERS)


def to_layout(sd: dict, cfg: ViTConfig, layout: str) -> dict:
    """A timm-named state dict -> the same weights as `layout` names them (JAX: numpy arrays)."""
    if layout == "timm":
        return dict(sd)
    if layout == "torchvision":
        return rename(sd, TORCHVISION_NAMES, reverse=True)[0]
    if layout == "jax":
        out = rename(split_qkv(sd), jax_names(), reverse=True, heads=cfg.num_heads)[0]
        return {k: v.numpy() for k, v in out.items()}
    if layout == "transformers":
        base = {k: v for k, v in split_qkv(sd).items() if not k.startswith("head")}
        heads = {k: v for k, v in sd.items() if k.startswith("head")}
        prefix, head_rows = ("deit.", TRANSFORMERS_HEADS[1:]) if cfg.distilled else ("vit.", TRANSFORMERS_HEADS[:1])
        out = {prefix + k: v for k, v in rename(base, TRANSFORMERS_NAMES, reverse=True)[0].items()}
        return out | rename(heads, head_rows, reverse=True)[0]
    raise ValueError(f"unknown layout {layout!r}")


def detect_layout(keys) -> str:
    keys = set(keys)
    if any(k.endswith("embedding/kernel") for k in keys):
        return "jax"
    if "class_token" in keys and "conv_proj.weight" in keys:
        return "torchvision"
    if any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in keys):
        return "transformers"
    if "patch_embed.proj.weight" in keys:
        return "timm"
    raise CheckpointError("checkpoint.unknown_layout", "checkpoint.detail.layout", keys=", ".join(sorted(keys)[:6]))


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


def _names(keys, limit: int = 12) -> str:
    keys = list(keys)
    return ", ".join(keys[:limit]) + (f" … and {len(keys) - limit} more" if len(keys) > limit else "")


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
    return [f"class {i}" for i in range(n)]


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
