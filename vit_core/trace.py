"""What one pass of the ViT returns (ViTTrace, LayerTrace, Shapes), and the cache that shares traces.

A trace is made under torch.inference_mode, so its tensors are inference tensors: changing one in
place outside inference mode raises. That makes a trace safe to hand to many sessions at once without
a copy: TraceCache keeps each trace once per key, bounded by the bytes the traces hold.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Hashable, NamedTuple

import torch


@dataclass
class LayerTrace:
    q: torch.Tensor  # (B, heads, T, hd)
    k: torch.Tensor  # (B, heads, T, hd)
    v: torch.Tensor  # (B, heads, T, hd)
    attention: torch.Tensor  # (B, heads, T, T) softmax(q kᵀ/√hd), rows sum to 1
    attn_out: torch.Tensor  # (B, T, D) what attention adds to the residual stream
    after_attn: torch.Tensor  # (B, T, D) z'_l
    after_mlp: torch.Tensor  # (B, T, D) z_l


class Shapes(NamedTuple):
    """The sizes a learner reads off a trace, by the paper's letters."""

    B: int  # images in the batch
    C: int  # channels
    H: int  # input height in pixels
    W: int  # input width in pixels
    P: int  # patch size
    h: int  # patches down
    w: int  # patches across
    N: int  # patches, h·w = HW/P²
    prefix: int  # prefix tokens (CLS; DeiT adds a distillation token)
    T: int  # tokens, prefix + N
    D: int  # width of every token
    L: int  # encoder blocks
    heads: int  # attention heads per block
    mlp: int  # hidden width of each block's MLP (D -> mlp -> D)


@dataclass
class ViTTrace:
    """Every tensor of one pass, in the order the paper builds them. T = prefix + N tokens."""

    pixels: torch.Tensor  # (B, C, H, W) the preprocessed input
    patches: torch.Tensor  # (B, N, P·P·C) flattened patches, (C, P, P) order, row-major over the grid
    patch_embeddings: torch.Tensor  # (B, N, D) x_p E (+ bias)
    prefix_tokens: torch.Tensor  # (B, prefix, D) CLS (and DeiT's distillation token) before E_pos
    pos_embed: torch.Tensor  # (1, T, D) the position embeddings actually added (resampled if needed)
    tokens: torch.Tensor  # (B, T, D) z0 = [prefix; x_p E] + E_pos, the encoder input
    layers: list[LayerTrace]  # one per encoder block
    final: torch.Tensor  # (B, T, D) after the final LayerNorm
    logits: torch.Tensor  # (B, classes)
    grid: tuple[int, int]  # (h, w) patches down and across; N = h·w
    patch_size: int
    num_prefix_tokens: int
    head_logits: list[torch.Tensor] = field(default_factory=list)  # per head (CLS; DeiT also dist)
    mlp_dim: int = 0  # hidden width of each block's MLP (its activations are not kept)

    @property
    def shapes(self) -> Shapes:
        B, C, H, W = self.pixels.shape
        (h, w), p = self.grid, self.num_prefix_tokens
        return Shapes(B=B, C=C, H=H, W=W, P=self.patch_size, h=h, w=w, N=h * w, prefix=p, T=h * w + p,
                      D=self.tokens.shape[-1], L=len(self.layers), heads=self.layers[0].attention.shape[1],
                      mlp=self.mlp_dim)

    @property
    def hidden_states(self) -> list[torch.Tensor]:  # L+1 tensors (B, T, D): z0, z1, ..., zL
        return [self.tokens] + [layer.after_mlp for layer in self.layers]

    @property
    def attentions(self) -> list[torch.Tensor]:  # L tensors (B, heads, T, T)
        return [layer.attention for layer in self.layers]

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.softmax(-1)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the trace holds (a tensor named twice, e.g. pixels of a model without a resize,
        counts once in nbytes)."""
        own = [getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)]
        return own + self.head_logits + [getattr(t, f.name) for t in self.layers for f in fields(LayerTrace)]

    @property
    def nbytes(self) -> int:
        unique = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in self.tensors()}
        return sum(unique.values())

    def to(self, device) -> "ViTTrace":
        move = lambda v: v.to(device) if isinstance(v, torch.Tensor) else v  # noqa: E731
        layers = [LayerTrace(**{f.name: move(getattr(t, f.name)) for f in fields(LayerTrace)}) for t in self.layers]
        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self) if f.name not in ("layers", "head_logits")},
                       layers=layers, head_logits=[move(h) for h in self.head_logits])


class TraceCache:
    """A process-wide map key -> trace, least recently used dropped first once the traces held exceed
    `max_bytes` (the newest is always kept). Thread-safe; a key asked for by several threads at once is
    computed by the first and waited for by the others, so a class opening the same image computes one
    trace. `compute` must return a value with an `nbytes` attribute.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._running: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], object]):
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
                done = self._running.get(key)
                if done is None:
                    self._running[key] = done = threading.Event()
                    break
            done.wait()  # another thread computes it; if that failed, the loop computes it here
        try:
            value = compute()
            with self._lock:
                self._items[key] = value
                while len(self._items) > 1 and self.nbytes > self.max_bytes:
                    self._items.popitem(last=False)
            return value
        finally:
            with self._lock:
                del self._running[key]
            done.set()

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self._items.values())

    def __len__(self) -> int:
        return len(self._items)
