"""A Vision Transformer that shows its work.

Dosovitskiy et al., "An Image is Worth 16x16 Words" (arXiv 2010.11929), §3.1:

    z0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos        Eq. 1  (patchify, project, prepend, add)
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                     Eq. 2  (attention sub-block)
    z_l  = MLP(LN(z'_l)) + z'_l                           Eq. 3  (MLP sub-block)
    y    = LN(z_L^0)                                      Eq. 4  (the class token's final state)

Parameter names are timm's, so a timm checkpoint loads with strict=True and every other layout
converts to this one (see vit_core/weights/layouts.py). Attention is computed explicitly as softmax(q kᵀ / √d):
fused kernels never return the weights the app must show.

`forward()` returns logits and keeps no intermediate tensor it does not need (autograd keeps what a
backward pass needs); `trace()` returns a ViTTrace (vit_core.trace) with every intermediate tensor. Nothing
is recorded with hooks and nothing on the module changes at run time, so one loaded model can
serve many sessions (threads) at once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from vit_core.trace import LayerTrace, Shapes, ViTTrace  # noqa: F401 - public names, also importable from here


@dataclass(frozen=True)
class ViTConfig:
    image_size: tuple[int, int] = (224, 224)  # (H, W) the position embeddings were trained for
    patch_size: int = 16  # P: each patch is P×P pixels
    in_chans: int = 3  # C: 3 for RGB, 1 for grayscale
    embed_dim: int = 768  # D: width of every token
    depth: int = 12  # L: number of encoder blocks
    num_heads: int = 12  # heads per block; head dim = D / heads
    mlp_dim: int = 3072  # hidden width of each MLP (4·D in every paper variant)
    num_classes: int = 1000  # outputs of the head; 0 means no head (features only)
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6  # timm / torchvision / JAX; transformers' default is 1e-12
    distilled: bool = False  # DeiT: a second prefix token (dist_token) with its own head

    def __post_init__(self):
        size = self.image_size
        object.__setattr__(self, "image_size", (size, size) if isinstance(size, int) else tuple(size))
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def grid(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return 2 if self.distilled else 1

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @classmethod
    def variant(cls, name: str, **overrides) -> "ViTConfig":
        """`ViTConfig.variant("B/16")`: the paper's Table 1 widths with a patch size."""
        width, patch = name.split("/")
        dim, depth, heads = VARIANTS[width]
        return cls(**{"patch_size": int(patch), "embed_dim": dim, "depth": depth, "num_heads": heads,
                      "mlp_dim": 4 * dim, **overrides})

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "ViTConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def with_(self, **changes) -> "ViTConfig":
        return replace(self, **changes)


# width: (D, depth, heads). Ti and S come from DeiT; B, L, H from the ViT paper, Table 1.
VARIANTS = {"Ti": (192, 12, 3), "S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "H": (1280, 32, 16)}


class Attention(nn.Module):
    """Multi-head self-attention (paper App. A, Eq. 5-8), written out so the weights can be returned."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def forward(self, x):
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, D // self.num_heads)  # (B, T, 3, heads, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 × (B, heads, T, hd)
        scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, heads, T, T)
        attn = scores.softmax(dim=-1)  # each row: how much this query takes from every token
        out = (attn @ v).transpose(1, 2).reshape(B, T, D)  # heads side by side again: (B, T, D)
        return self.proj(out), q, k, v, attn


class MLP(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.mlp_dim)
        self.act = nn.GELU()  # exact erf GELU, as in the paper's JAX code and timm
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.embed_dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """One encoder layer: pre-norm attention and MLP, each added back to the residual stream."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x):
        a, q, k, v, attn = self.attn(self.norm1(x))
        x = x + a  # Eq. 2
        mid = x
        x = x + self.mlp(self.norm2(x))  # Eq. 3
        return x, LayerTrace(q=q, k=k, v=v, attention=attn, attn_out=a, after_attn=mid, after_mlp=x)


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int],
                       num_prefix_tokens: int = 1) -> torch.Tensor:
    """Resize learned position embeddings (1, prefix + h·w, D) to another patch grid.

    The prefix slots (CLS, distillation) have no place on the grid, so they are kept as they are;
    only the h×w grid part is treated as a D-channel image and resized with bicubic interpolation
    (align_corners=False, no antialias: the same as transformers' interpolate_pos_encoding, and timm's
    resample_abs_pos_embed when enlarging). Works for non-square grids in both directions.
    """
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    D = grid.shape[-1]
    grid = grid.reshape(1, *old_grid, D).permute(0, 3, 1, 2)  # (1, D, h, w)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, D).to(pos_embed.dtype)  # (1, h'·w', D)
    return torch.cat([prefix, grid], dim=1)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        # A conv with kernel = stride = P is one linear map applied to every patch; it stays a conv so
        # checkpoints load as they are. trace() shows the same thing as unfold + matmul.
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, N, D)


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_prefix_tokens + cfg.grid[0] * cfg.grid[1], D))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.head_dist = nn.Linear(D, cfg.num_classes) if cfg.distilled and cfg.num_classes else None
        self.reset_parameters()

    def reset_parameters(self):
        """Initialisation for training from scratch (truncated normal, as in timm)."""
        for p in (self.pos_embed, self.cls_token, self.dist_token):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:  # qkv has no bias in some checkpoints (qkv_bias=False)
                    nn.init.zeros_(m.bias)

    @property
    def device(self) -> torch.device:
        return self.cls_token.device

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        P = self.cfg.patch_size
        if height % P or width % P:
            raise ValueError(f"input {height}×{width} is not a multiple of the patch size {P}")
        return height // P, width // P

    def patchify(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, C·P·P): each patch flattened in (C, P, P) order, like the conv weight."""
        P = self.cfg.patch_size
        return F.unfold(pixels, kernel_size=P, stride=P).transpose(1, 2)  # (B, C·P·P, N) -> (B, N, C·P·P)

    def _run(self, pixels: torch.Tensor, flat_patches: bool, keep: bool = True) -> ViTTrace:
        """The pass of Eq. 1-4. `keep=False` drops every layer's record as soon as the next block runs
        (the returned trace then has no layers: forward() reads its logits only)."""
        B, _, H, W = pixels.shape
        grid = self.grid_for(H, W)
        x = self.patch_embed(pixels)  # (B, N, D), Eq. 1: x_p E
        prefix = [self.cls_token, self.dist_token] if self.dist_token is not None else [self.cls_token]
        prefix = torch.cat(prefix, dim=1).expand(B, -1, -1)  # (B, prefix, D)
        pos = resample_pos_embed(self.pos_embed, grid, self.cfg.grid, self.cfg.num_prefix_tokens)  # (1, T, D)
        patch_embeddings = x
        x = tokens = torch.cat([prefix, x], dim=1) + pos  # (B, T, D), Eq. 1: z0
        layers = []
        for block in self.blocks:
            x, layer = block(x)
            if keep:
                layers.append(layer)
            del layer
        final = self.norm(x)  # Eq. 4 (applied to every token; the head reads the prefix only)
        head_logits = [self.head(final[:, 0])]
        if self.head_dist is not None:
            head_logits.append(self.head_dist(final[:, 1]))
        # DeiT at inference averages its two heads; a plain ViT has one.
        logits = head_logits[0] if len(head_logits) == 1 else (head_logits[0] + head_logits[1]) / 2
        return ViTTrace(
            pixels=pixels, patches=self.patchify(pixels) if flat_patches else pixels.new_empty(0),
            patch_embeddings=patch_embeddings, prefix_tokens=prefix, pos_embed=pos, tokens=tokens, layers=layers,
            final=final, logits=logits, grid=grid, patch_size=self.cfg.patch_size,
            num_prefix_tokens=self.cfg.num_prefix_tokens, head_logits=head_logits, mlp_dim=self.cfg.mlp_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> logits (B, classes). Differentiable; used for training."""
        return self._run(pixels, flat_patches=False, keep=False).logits

    def trace(self, pixels: torch.Tensor) -> ViTTrace:
        """Run once without gradients and return every intermediate tensor (on the model's device)."""
        with torch.inference_mode():
            return self._run(pixels.to(self.device, torch.float32), flat_patches=True)

    def trace_with_grad(self, pixels: torch.Tensor) -> ViTTrace:
        """Like trace(), but differentiable: for gradient rollout and effective receptive fields."""
        with torch.enable_grad():
            return self._run(pixels.to(self.device, torch.float32), flat_patches=True)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
