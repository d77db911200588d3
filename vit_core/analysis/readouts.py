"""The per-step readouts of the six steps' pages: patch geometry, the projection, position embeddings,
the token sequence, attention per query, the residual stream and the classification head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from vit_core.analysis.common import _check_grid, _per_layer
from vit_core.model import resample_pos_embed

# ----------------------------------------------------------------------------- embeddings and the residual stream

def pos_embed_similarity(pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 1) -> torch.Tensor:
    """Cosine similarity of every patch position embedding with every other: (h, w, h, w) (Fig. 7 centre).

    `pos_embed` is (1, T, D) or (T, D); [i, j] is the map for the patch at row i, column j.
    """
    e = pos_embed.reshape(-1, pos_embed.shape[-1])[num_prefix_tokens:].float()  # (N, D)
    _check_grid(e.shape[0], grid)
    e = F.normalize(e, dim=-1)
    return (e @ e.T).reshape(*grid, *grid)  # (h, w, h, w)


def embedding_components(weight: torch.Tensor, k: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal components of the patch-embedding filters E (ViT paper Fig. 7 left).

    `weight` is the patch_embed conv weight (D, C, P, P): D filters, each one C·P·P image. PCA of
    these D rows (centred on the mean filter) via SVD. Returns (components (k, C, P, P), the
    explained-variance ratio of each (k,)). A component's sign is arbitrary; we flip each so its
    largest-magnitude entry is positive, so the pictures do not flicker between runs.
    """
    D, C, P, Q = weight.shape
    X = weight.detach().reshape(D, C * P * Q).double()
    X = X - X.mean(0, keepdim=True)
    _, S, Vh = torch.linalg.svd(X, full_matrices=False)  # Vh: (min(D, CPP), CPP)
    k = min(k, Vh.shape[0])
    comps = Vh[:k]
    sign = comps.gather(1, comps.abs().argmax(1, keepdim=True)).sign()  # (k, 1)
    ratio = S**2 / (S**2).sum().clamp_min(torch.finfo(S.dtype).tiny)
    return (comps * sign).reshape(k, C, P, Q).to(weight.dtype), ratio[:k].to(weight.dtype)


def _stack_states(hidden_states) -> torch.Tensor:
    return hidden_states if isinstance(hidden_states, torch.Tensor) else torch.stack(list(hidden_states))


def token_norms(hidden_states) -> torch.Tensor:
    """L2 norm of every token in every residual-stream state: L+1 × (B, T, D) -> (L+1, B, T)."""
    return _stack_states(hidden_states).float().norm(dim=-1)


def cosine_to_final(hidden_states, token: int = 0) -> dict[str, torch.Tensor]:
    """How one token (0 = CLS) turns through the layers, from z0 ... zL (L+1 × (B, T, D)).

    Returns {"to_final": (L+1, B) cosine of z_l with z_L, "to_previous": (L, B) cosine of z_{l+1} with z_l}.
    """
    t = _stack_states(hidden_states)[:, :, token].float()  # (L+1, B, D)
    return {"to_final": F.cosine_similarity(t, t[-1:], dim=-1),
            "to_previous": F.cosine_similarity(t[1:], t[:-1], dim=-1)}


# --- steps 4-6 pages (CLS token, encoder, classify)

def prefix_attention_maps(attentions, grid: tuple[int, int], num_prefix_tokens: int = 1,
                          token: int = 0) -> torch.Tensor:
    """Where one prefix token (0 = CLS) looks in every layer, averaged over heads: (L, B, h, w).

    Only the patch keys are kept and not renormalised, so a map sums to the share of attention that
    went to the image (the rest went to the prefix tokens).
    """
    rows = torch.stack([a[:, :, token, num_prefix_tokens:].float().mean(1) for a in _per_layer(attentions)])  # (L, B, N)
    _check_grid(rows.shape[-1], grid)
    return rows.reshape(*rows.shape[:2], *grid)  # (L, B, h, w)


def query_attention(q: torch.Tensor, k: torch.Tensor, query: int) -> dict[str, torch.Tensor]:
    """softmax(q kᵀ / √d) for one query token, written out (paper App. A, Eq. 5-6).

    q, k: (..., T, d) for one head or (B, heads, T, d) for many. Returns {"scores": (..., T) the
    scaled dot products q_query · k_j / √d, "weights": (..., T) their softmax over the keys j}.
    """
    q_i = q[..., query, :].float()  # (..., d)
    scores = (k.float() @ q_i[..., None])[..., 0] * q.shape[-1] ** -0.5  # (..., T)
    return {"scores": scores, "weights": scores.softmax(-1)}


def sublayer_norms(layers) -> dict[str, torch.Tensor]:
    """How much each sub-block writes into the residual stream, per layer and token.

    `layers` are LayerTrace-like (attn_out, after_attn, after_mlp: (B, T, D) each). Attention adds
    attn_out (Eq. 2); the MLP adds z_l − z'_l (Eq. 3). Returns {"attention", "mlp"}: (L, B, T) L2 norms.
    """
    return {"attention": torch.stack([layer.attn_out.float().norm(dim=-1) for layer in layers]),
            "mlp": torch.stack([(layer.after_mlp.float() - layer.after_attn.float()).norm(dim=-1) for layer in layers])}


@dataclass
class AttentionCost:
    """What global attention costs for one image (step 5): every token scores every token in every head."""

    per_head: int  # T² attention weights in one head of one layer
    per_layer: int  # heads·T²
    total: int  # depth·heads·T²
    mult_adds: int  # q kᵀ and A·v: T²·d_head each per head, so 2·T²·D per layer, times depth


def attention_cost(num_tokens: int, num_heads: int, depth: int, embed_dim: int) -> AttentionCost:
    """The attention weights and multiply-adds of one pass. All grow with T², i.e. with N²."""
    per_head = num_tokens ** 2
    return AttentionCost(per_head=per_head, per_layer=per_head * num_heads, total=per_head * num_heads * depth,
                         mult_adds=2 * per_head * embed_dim * depth)


@dataclass
class AttentionReadout:
    """Step 5 for one layer, head and query patch of image 0: where the query and the CLS token look,
    softmax(q kᵀ/√d) written out and checked against the model's own weights, this head's Q, K and V,
    and the same query in every head of the layer."""

    query: int  # the query patch's token index: prefix + r·w + c
    query_map: torch.Tensor  # (h, w) its attention on the patch keys (the rest went to the prefix tokens)
    cls_map: torch.Tensor  # (h, w) the CLS token's attention on the patch keys
    prefix_share: float  # the query's attention on the prefix tokens
    q_row: torch.Tensor  # (1, d) the query's q vector, as one row
    scores: torch.Tensor  # (T,) q · k_j / √d for every key j
    weights: torch.Tensor  # (T,) their softmax
    top: list[int]  # the (up to) 8 most attended keys, most attended first
    top_scores: torch.Tensor  # (len(top),) their scores
    top_weights: torch.Tensor  # (len(top),) their weights
    total: float  # the weights' sum (1 up to rounding)
    diff: float  # max |weights - the trace's attention row|
    Q: torch.Tensor  # (T, d) this head's queries, keys and values
    K: torch.Tensor
    V: torch.Tensor
    heads: torch.Tensor  # (heads, h, w) the query's patch-key attention in every head of the layer

    @property
    def qkv(self) -> dict[str, torch.Tensor]:  # named as the figure and the tensors are titled
        return {"Q": self.Q, "K": self.K, "V": self.V}


def attention_readout(trace, layer: int, head: int, patch: tuple[int, int], top: int = 8) -> AttentionReadout:
    """The step-5 numbers of `trace` (image 0) for `layer` and `head` (0-based) and the query at `patch` (r, c)."""
    p, (h, w) = trace.num_prefix_tokens, trace.grid
    query = p + patch[0] * w + patch[1]
    lt, A = trace.layers[layer], trace.attentions[layer][0]  # A: (heads, T, T)
    qa = query_attention(lt.q[0, head], lt.k[0, head], query)
    scores, weights = qa["scores"], qa["weights"]
    keys = weights.topk(min(top, weights.shape[-1])).indices
    return AttentionReadout(
        query=query, query_map=A[head, query, p:].reshape(h, w), cls_map=A[head, 0, p:].reshape(h, w),
        prefix_share=float(A[head, query, :p].sum()), q_row=lt.q[0, head, query][None], scores=scores,
        weights=weights, top=keys.tolist(), top_scores=scores[keys], top_weights=weights[keys],
        total=float(weights.sum()), diff=float((weights - A[head, query]).abs().max()),
        Q=lt.q[0, head], K=lt.k[0, head], V=lt.v[0, head], heads=A[:, query, p:].reshape(-1, h, w))


@dataclass
class ResidualStream:
    """Step 5's residual stream of image 0: how long the tokens are after each layer, and how much each
    sub-block writes into the stream (attention: Eq. 2, the MLP: Eq. 3)."""

    norms: torch.Tensor  # (L+1, T) the L2 norm of every token in z_0 … z_L
    cls: torch.Tensor  # (L+1,) the CLS token's norm
    patches: torch.Tensor  # (L+1,) the mean of the patch tokens' norms
    attention_cls: torch.Tensor  # (L,) the norm of what attention adds to the CLS token
    attention_patches: torch.Tensor  # (L,) ... to the patch tokens (mean of the norms)
    mlp_cls: torch.Tensor  # (L,) the norm of what the MLP adds to the CLS token
    mlp_patches: torch.Tensor  # (L,) ... to the patch tokens (mean of the norms)


def residual_stream(trace) -> ResidualStream:
    p = trace.num_prefix_tokens
    norms = token_norms(trace.hidden_states)[:, 0]  # (L+1, T)
    added = sublayer_norms(trace.layers)
    attention, mlp = added["attention"], added["mlp"]  # (L, B, T) each
    return ResidualStream(norms=norms, cls=norms[:, 0], patches=norms[:, p:].mean(-1),
                          attention_cls=attention[:, 0, 0], attention_patches=attention[:, 0, p:].mean(-1),
                          mlp_cls=mlp[:, 0, 0], mlp_patches=mlp[:, 0, p:].mean(-1))


def classify_readout(z_last: torch.Tensor, norm: tuple, heads: Sequence[tuple]) -> dict:
    """Eq. 4 and the head, recomputed from the last residual state z_L (B, T, D).

    norm = (weight, bias, eps) of the final LayerNorm; heads = [(W (classes, D), b (classes,)), ...],
    one per prefix token in order (CLS; DeiT's distillation token). Prefix token i feeds head i:
    y_i = LN(z_L^i), logits_i = y_i Wᵀ + b. With two heads the logits are their mean (DeiT at
    inference). Returns {"y": (B, heads, D), "head_logits": [(B, classes)], "logits", "probs"}.
    """
    weight, bias, eps = norm
    z = z_last[:, :len(heads)].float()  # (B, heads, D): the prefix tokens only
    y = F.layer_norm(z, z.shape[-1:], weight.float(), bias.float(), eps)
    head_logits = [F.linear(y[:, i], W.float(), b.float()) for i, (W, b) in enumerate(heads)]
    logits = torch.stack(head_logits).mean(0)  # (B, classes)
    return {"y": y, "head_logits": head_logits, "logits": logits, "probs": logits.softmax(-1)}


@dataclass
class HeadReadout:
    """Step 6 from the model's own weights (all on the CPU), and how far it is from the trace."""

    heads: list[tuple[torch.Tensor, torch.Tensor]]  # (W (classes, D), b (classes,)) per prefix token
    y: torch.Tensor  # (B, heads, D) LN(z_L) of the prefix tokens
    logits: torch.Tensor  # (B, classes)
    ln_diff: float  # max |y - trace.final| over the prefix tokens
    head_diff: float  # max |logits - trace.logits|


def head_readout(model, trace) -> HeadReadout | None:
    """classify_readout with the model's final LayerNorm and head(s); None for a model whose head is not
    a linear layer (num_classes = 0: a feature extractor has nothing to classify)."""
    if not isinstance(model.head, torch.nn.Linear):
        return None
    cpu = lambda x: x.detach().cpu()  # noqa: E731 - the model may sit on a GPU; the trace is on the CPU
    heads = [(cpu(model.head.weight), cpu(model.head.bias))]
    if len(trace.head_logits) == 2:  # DeiT: the distillation token has its own head
        heads.append((cpu(model.head_dist.weight), cpu(model.head_dist.bias)))
    norm = (cpu(model.norm.weight), cpu(model.norm.bias), model.norm.eps)
    out = classify_readout(trace.hidden_states[-1], norm, heads)
    return HeadReadout(heads=heads, y=out["y"], logits=out["logits"],
                       ln_diff=float((out["y"][0] - trace.final[0, :len(heads)]).abs().max()),
                       head_diff=float((out["logits"][0] - trace.logits[0]).abs().max()))


@dataclass
class Projection:
    """Step 2: the patch embedding's conv as the matrix E of Eq. 1, and the check that it is the same map."""

    weight: torch.Tensor  # (D, C, P, P) the conv the model runs, float32 on the CPU
    bias: torch.Tensor | None  # (D,)
    E: torch.Tensor  # (P²C, D): row i multiplies entry i of a flattened patch
    diff: float  # max |X_p E + b - the trace's patch embeddings|
    tf32: bool  # the model's conv ran in TF32 on a GPU (about 3 significant digits)
    scale: float  # max |patch embedding|: what the difference is measured against

    @property
    def relative(self) -> float:
        return self.diff / max(self.scale, 1e-12)

    @property
    def ok(self) -> bool:
        """float32 rounding is ~1e-6 of the output's size; a GPU conv in TF32 (PyTorch's default for cuDNN)
        keeps only ~3 significant digits, so there the bar is 1e-2 of the size (the page says why)."""
        return self.diff < (1e-2 if self.tf32 else 1e-4) * max(1.0, self.scale)


def patch_projection(model, trace) -> Projection:
    proj = model.patch_embed.proj
    weight = proj.weight.detach().cpu().float()
    bias = proj.bias.detach().cpu().float() if proj.bias is not None else None
    diff = (linear_patch_embed(trace.pixels, weight, bias) - trace.patch_embeddings).abs().max().item()
    return Projection(weight=weight, bias=bias, E=weight.reshape(weight.shape[0], -1).T, diff=diff,
                      tf32=proj.weight.is_cuda and torch.backends.cudnn.allow_tf32  # TF32: Ampere (8.x) and newer
                      and torch.cuda.get_device_capability(proj.weight.device)[0] >= 8,
                      scale=float(trace.patch_embeddings.abs().max()))


@dataclass
class TokenSequence:
    """Step 4: the encoder input z0 built from its parts (Eq. 1), and the CLS vector along the way."""

    sequence: torch.Tensor  # (T, D) [CLS; (DIST;) x_p E] before E_pos
    pos: torch.Tensor  # (T, D) E_pos as added
    z0: torch.Tensor  # (T, D) sequence + E_pos
    zmax: float  # the largest |value| of the three: one colour scale for all
    build_diff: float  # max |sequence + E_pos - z0|
    cls_rows: torch.Tensor  # (3, D) the CLS token as it enters, in z0, and after the last block
    cls_diff: float  # max |the CLS token in the trace - the model's learned x_class|


def token_sequence(model, trace) -> TokenSequence:
    """Step 4's numbers for image 0 of `trace`, the CLS parameter read from `model` (on the CPU)."""
    sequence = torch.cat([trace.prefix_tokens[0], trace.patch_embeddings[0]])
    pos, z0 = trace.pos_embed[0], trace.tokens[0]
    cls_in = trace.prefix_tokens[0, 0]
    return TokenSequence(sequence=sequence, pos=pos, z0=z0,
                         zmax=float(max(sequence.abs().max(), pos.abs().max(), z0.abs().max())),
                         build_diff=float((sequence + pos - z0).abs().max()),
                         cls_rows=torch.stack([cls_in, z0[0], trace.hidden_states[-1][0, 0]]),
                         cls_diff=float((cls_in - model.cls_token.detach().cpu()[0, 0]).abs().max()))


# --- steps 1-3 pages (patchify, flatten + project, position embedding)

class PatchGeometry(NamedTuple):
    patch_size: int  # P
    grid: tuple[int, int]  # (h, w) = (H/P, W/P)
    num_patches: int  # N = HW/P²
    patch_dim: int  # P²·C numbers in one flattened patch
    tokens: int  # T = prefix + N
    attention_entries: int  # T²: the weights in one head's attention matrix of one layer


def patch_geometry(image_size: tuple[int, int], patch_size: int, in_chans: int,
                   num_prefix_tokens: int = 1) -> PatchGeometry:
    """What cutting an H×W×C image into P×P patches gives: the grid, N, P²·C, T and T²."""
    H, W = image_size
    P = patch_size
    if P < 1 or H % P or W % P:
        raise ValueError(f"patch size {P} does not tile a {H}×{W} image")
    grid = (H // P, W // P)
    N = grid[0] * grid[1]
    T = N + num_prefix_tokens
    return PatchGeometry(P, grid, N, P * P * in_chans, T, T * T)


VIT_B16 = patch_geometry((224, 224), 16, 3)  # the paper's ViT-B/16 at 224×224, for comparison


def patch_size_options(image_size: tuple[int, int], patch_size: int | None = None) -> list[int]:
    """Patch sizes that tile H×W exactly and leave at least 2 patches along the shorter side:
    the common divisors of H and W from 2 to min(H, W)/2, plus the model's own `patch_size`."""
    H, W = image_size
    options = {p for p in range(2, min(H, W) // 2 + 1) if H % p == 0 and W % p == 0}
    return sorted(options | ({patch_size} if patch_size else set()))


def linear_patch_embed(pixels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x_p E + b for every patch, written as unfold + one matmul: (B, C, H, W) -> (B, N, D).

    `weight` is the patch_embed conv weight (D, C, P, P). Flattening each of its D filters gives the rows
    of Eᵀ in (C, P, P) order, the same order unfold lays out a patch, so E = weight.reshape(D, C·P·P)ᵀ.
    A conv with kernel = stride = P computes exactly this; the step-2 page checks it on live tensors.
    """
    D, _, P, _ = weight.shape
    patches = F.unfold(pixels, kernel_size=P, stride=P).transpose(1, 2)  # (B, C·P·P, N) -> (B, N, C·P·P)
    E = weight.reshape(D, -1).T  # (C·P·P, D)
    out = patches @ E  # (B, N, D)
    return out + bias if bias is not None else out


def pos_embed_row(pos_embed: torch.Tensor, token: int, grid: tuple[int, int],
                  num_prefix_tokens: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of one position embedding with every slot, split where the slots live.

    `token` indexes the model's sequence [prefix slots; h·w patches] (0 = CLS; patch (i, j) is
    prefix + i·w + j). Prefix slots have no place on the grid, so they come back apart:
    returns (prefix similarities (prefix,), patch similarities (h, w)).
    """
    e = F.normalize(pos_embed.reshape(-1, pos_embed.shape[-1]).float(), dim=-1)  # (T, D)
    _check_grid(e.shape[0] - num_prefix_tokens, grid)
    sims = e @ e[token]  # (T,)
    return sims[:num_prefix_tokens], sims[num_prefix_tokens:].reshape(grid)


def corresponding_cell(cell: tuple[int, int], old_grid: tuple[int, int], new_grid: tuple[int, int]) -> tuple[int, int]:
    """The cell of `new_grid` whose area holds the centre of `cell` of `old_grid` (same relative place)."""
    return tuple(min(n - 1, int((i + 0.5) * n / o)) for i, o, n in zip(cell, old_grid, new_grid))


@dataclass(frozen=True)
class PatchCut:
    """One patch as step 1 shows it: its picture and the numbers the model receives."""
    picture: object  # (P, P[, 3]) the display crop (numpy, as `display`)
    values: torch.Tensor  # (C, P, P) the normalised pixels of the patch
    value_range: tuple[float, float]  # the range any normalised pixel can take: one fixed scale for every patch
    mean: str  # the normalisation's per-channel mean and std, as written: "0.5, 0.5, 0.5"
    std: str


def patch_cut(trace, display, preprocess, cell: tuple[int, int]) -> PatchCut:
    """Patch `cell` = (row, col) of `trace`'s grid: the crop of `display` and the model's input numbers."""
    P, (r, c) = trace.patch_size, cell
    rows, cols = slice(r * P, (r + 1) * P), slice(c * P, (c + 1) * P)
    lo = min((0 - m) / sd for m, sd in zip(preprocess.mean, preprocess.std))  # a pixel 0..1, normalised
    hi = max((1 - m) / sd for m, sd in zip(preprocess.mean, preprocess.std))
    written = lambda xs: ", ".join(f"{x:g}" for x in xs)  # noqa: E731
    return PatchCut(display[rows, cols], trace.pixels[0, :, rows, cols], (lo, hi), written(preprocess.mean),
                    written(preprocess.std))


@dataclass(frozen=True)
class Resampled:
    """The position embeddings resampled to another grid, as step 3 shows them for one reference slot."""
    grid: tuple[int, int]  # (h', w')
    tokens: int  # T' = prefix + h'·w'
    cell: tuple[int, int] | None  # where the reference patch lands on the new grid (None: a prefix slot)
    sims: torch.Tensor  # (h', w') cosine similarity of the reference slot with every new patch slot
    prefix_change: float  # max |change| of the prefix slots: 0, they are kept as they are


def resampled_positions(pos_embed: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int],
                        num_prefix_tokens: int, reference: tuple[int, int] | int) -> Resampled:
    """Resample `pos_embed` (1, prefix + h·w, D) from `grid` to `new_grid` (bicubic, the prefix kept) and
    read the similarity map of `reference`: a patch (row, col) of the old grid, followed to the cell of the
    new grid at the same relative place, or a prefix slot index."""
    p = num_prefix_tokens
    new = resample_pos_embed(pos_embed, new_grid, grid, p)  # (1, prefix + h'·w', D)
    cell = corresponding_cell(reference, grid, new_grid) if isinstance(reference, tuple) else None
    token = p + cell[0] * new_grid[1] + cell[1] if cell else reference
    _, sims = pos_embed_row(new, token, new_grid, p)
    return Resampled(new_grid, new.shape[1], cell, sims, float((new[0, :p] - pos_embed[0, :p]).abs().max()))


@dataclass(frozen=True)
class ClsJourney:
    """Step 4: the CLS token of image 0 through the residual stream, z_0 … z_L."""
    cls_norm: torch.Tensor  # (L+1,) |CLS|
    patch_norm: torch.Tensor  # (L+1,) mean |patch token|
    to_final: torch.Tensor  # (L+1,) cosine of CLS in z_l with CLS in z_L
    to_previous: torch.Tensor  # (L+1,) cosine with CLS in z_{l-1}; NaN at z_0, which has no previous state
    attention: torch.Tensor  # (L, h, w) where CLS looks in each layer, mean over heads, patch keys only


def cls_journey(trace) -> ClsJourney:
    norms = token_norms(trace.hidden_states)[:, 0]  # (L+1, T)
    p = trace.num_prefix_tokens
    cos = cosine_to_final(trace.hidden_states, token=0)
    return ClsJourney(norms[:, 0], norms[:, p:].mean(-1), cos["to_final"][:, 0],
                      torch.cat([torch.tensor([float("nan")]), cos["to_previous"][:, 0]]),
                      prefix_attention_maps(trace.attentions, trace.grid, p)[:, 0])


@dataclass(frozen=True)
class Overview:
    """The overview page's one glance at each step, for image 0."""
    top: list[tuple[int, float]]  # the (up to) five most probable classes, most probable first
    cls_attention: torch.Tensor  # (h, w) where CLS looks in the last layer, mean over heads, patch keys only
    centre: tuple[int, int]  # the grid's middle patch
    similarity: torch.Tensor  # (h, w) cosine of the middle patch's position embedding with every patch's


def top_classes(trace, k: int = 5) -> list[tuple[int, float]]:
    """The k most probable classes of the trace's first image as (class index, probability), most probable first."""
    probs = trace.probs[0]
    top = probs.topk(min(k, probs.shape[-1]))
    return [(int(i), float(v)) for v, i in zip(top.values, top.indices)]


def overview(trace) -> Overview:
    (h, w), p = trace.grid, trace.num_prefix_tokens
    centre = (h // 2, w // 2)
    return Overview(top_classes(trace, 5), prefix_attention_maps(trace.attentions[-1:], trace.grid, p)[0, 0], centre,
                    pos_embed_similarity(trace.pos_embed, trace.grid, p)[centre])


@dataclass(frozen=True)
class FinalNorm:
    """Step 6's first two stages for image 0: the CLS token's last state z_L and the same after the final
    LayerNorm, with their mean and (population) standard deviation, -0.0 printed as 0."""
    z: torch.Tensor  # (D,)
    y: torch.Tensor  # (D,)
    z_mean: float
    z_std: float
    y_mean: float
    y_std: float


def final_norm(trace) -> FinalNorm:
    z, y = trace.hidden_states[-1][0, 0], trace.final[0, 0]
    zero = lambda v: round(float(v), 3) + 0.0  # noqa: E731 - 0.000, not -0.000
    return FinalNorm(z, y, zero(z.mean()), zero(z.std(unbiased=False)), zero(y.mean()), zero(y.std(unbiased=False)))


@dataclass(frozen=True)
class TopK:
    """Step 6's last stages: the k most probable classes of image 0 with their logits and probabilities."""
    indices: list[int]  # most probable first
    logits: torch.Tensor  # (k,)
    probs: torch.Tensor  # (k,)
    rest: float  # the probability left to the other classes
    head_logits: list[torch.Tensor]  # (k,) per head (DeiT: CLS and distillation), the logits are their mean


def top_k(trace, k: int) -> TopK:
    probs = trace.probs[0]
    top = probs.topk(k).indices
    return TopK(top.tolist(), trace.logits[0, top], probs[top], float(1 - probs[top].sum()),
                [h[0, top] for h in trace.head_logits])
