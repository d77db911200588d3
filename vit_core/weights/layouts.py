"""Checkpoint layouts as data: the rename tables of timm / transformers / torchvision / JAX, the small
named helpers for tensors that change shape, the converters to timm's names and back, and layout
detection. Also the one error every checkpoint problem becomes (CheckpointError)."""

from __future__ import annotations

import re
from functools import lru_cache

import torch

from vit_core.i18n import TranslatableError
from vit_core.model import ViTConfig



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



def _names(keys, limit: int = 12) -> str:
    keys = list(keys)
    return ", ".join(keys[:limit]) + (f" … and {len(keys) - limit} more" if len(keys) > limit else "")



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
