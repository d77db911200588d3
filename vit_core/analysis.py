"""Analyses of a ViT's tensors: where it looks, how far it reaches, and whether the map is faithful.

Every function takes tensors (or, where it must differentiate, a callable) and returns tensors:
no hooks, no streamlit, nothing on a model changes. The patch grid (h, w) is always passed in,
never guessed from sqrt(N), so non-square grids work. Token order is the model's:
[prefix tokens (CLS, DeiT's distillation token); h·w patches, row-major].

Shapes: B batch, L layers, H heads, T = prefix + N tokens, N = h·w patches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

def _per_layer(attentions) -> list[torch.Tensor]:
    """L tensors (B, H, T, T) from a list of them or from one stacked (B, L, H, T, T) tensor."""
    if isinstance(attentions, torch.Tensor):
        if attentions.dim() != 5:
            raise ValueError(f"expected (B, L, heads, T, T), got {tuple(attentions.shape)}")
        return list(attentions.unbind(1))
    return list(attentions)


def _normalise_rows(a: torch.Tensor) -> torch.Tensor:
    # keepdim so each row is divided by its own sum; a row that is all zeros stays zeros.
    return a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)


def _check_grid(num_patches: int, grid: tuple[int, int]):
    if grid[0] * grid[1] != num_patches:
        raise ValueError(f"grid {tuple(grid)} has {grid[0] * grid[1]} cells but there are {num_patches} patch tokens")


# ----------------------------------------------------------------------------- attention rollout

def fuse_heads(attention: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """(B, H, T, T) -> (B, T, T) by the mean, max or min over heads."""
    if head_fusion == "mean":
        return attention.mean(1)
    if head_fusion == "max":
        return attention.amax(1)
    if head_fusion == "min":
        return attention.amin(1)
    raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', not {head_fusion!r}")


def discard_lowest(a: torch.Tensor, ratio: float, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Zero the lowest `ratio` fraction of the entries of each (T, T) matrix in a (B, T, T) batch.

    Our choice follows jacobgil/vit-explain: the ranking is over the whole flattened matrix (not per
    row), and entries that are never dropped are kept out of the ranking: there vit-explain protects
    only index 0 (CLS->CLS); we protect every prefix token's self-entry, so the row a map is read
    from (CLS, or DeiT's distillation token) always keeps weight. k = int(ratio · T²) entries go.
    """
    B, T, _ = a.shape
    k = int(ratio * T * T)
    if k <= 0:
        return a
    flat = a.reshape(B, T * T)  # (B, T²)
    protected = torch.arange(num_prefix_tokens, device=a.device) * (T + 1)  # flat index of (i, i)
    ranked = flat.clone()
    ranked[:, protected] = float("inf")  # never among the lowest
    lowest = ranked.topk(min(k, T * T - num_prefix_tokens), dim=-1, largest=False).indices
    return flat.scatter(1, lowest, 0.0).reshape(B, T, T)


def attention_rollout(attentions, *, residual: bool = True, head_fusion: str = "mean", discard_ratio: float = 0.0,
                      start_layer: int = 0, end_layer: int | None = None, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", §3).

    For each layer in attentions[start_layer:end_layer] (start inclusive, end exclusive, like a slice):
    fuse heads -> (B, T, T); optionally drop the lowest entries (`discard_lowest`); with `residual`,
    A = 0.5·W + 0.5·I (the paper's account of the skip connection); renormalise every row to sum 1;
    then joint = A_l · joint, so joint = A_end-1 ··· A_start.

    `attentions` is L × (B, H, T, T) or one (B, L, H, T, T). Returns joint (B, T, T): row i says how
    much of each input token ended up in token i at the top. Every row sums to 1 (with residual off, a
    row that discarding emptied stays 0).
    """
    layers = _per_layer(attentions)[start_layer:end_layer]
    if not layers:
        raise ValueError("no layers to roll out: check start_layer / end_layer")
    B, _, T, _ = layers[0].shape
    eye = torch.eye(T, device=layers[0].device)
    joint = eye.expand(B, T, T)
    for attention in layers:
        a = fuse_heads(attention.float(), head_fusion)  # (B, T, T)
        if discard_ratio > 0:
            a = discard_lowest(a, discard_ratio, num_prefix_tokens)
        if residual:
            a = 0.5 * a + 0.5 * eye
        joint = _normalise_rows(a) @ joint
    return joint


def rollout_to_grid(joint: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 1,
                    query: int = 0) -> torch.Tensor:
    """(B, T, T) -> (B, h, w): the row of token `query` (0 = CLS) over the patch tokens, on the grid.

    Values are not rescaled; what the viewer shows (e.g. divided by the max) is the figure's choice.
    """
    row = joint[:, query, num_prefix_tokens:]  # (B, N)
    _check_grid(row.shape[-1], grid)
    return row.reshape(-1, *grid)  # (B, h, w), row-major like the patches


# ----------------------------------------------------------------------------- gradient rollout

def gradient_rollout(attentions, gradients, *, start_layer: int = 0, end_layer: int | None = None,
                     num_prefix_tokens: int = 1) -> torch.Tensor:
    """Class-specific rollout: attention weighted by its gradient for one class.

    The variant of Chefer, Gur & Wolf, "Generic Attention-model Explainability for Interpreting
    Bi-Modal and Encoder-Decoder Transformers" (ICCV 2021), Eq. 5-6, a simplification of their CVPR 2021
    "Transformer Interpretability Beyond Attention Visualization" (which weights LRP relevance instead
    of the raw attention): per layer Ā = mean over heads of (∇A ⊙ A)⁺, then R ← R + Ā·R from R = I,
    i.e. R = (I + Ā_end-1) ··· (I + Ā_start). As in their code, rows are not renormalised; the result is
    non-negative. `num_prefix_tokens` is accepted so both rollouts take the same keywords; the maths
    does not use it.
    """
    layers = _per_layer(attentions)[start_layer:end_layer]
    grads = _per_layer(gradients)[start_layer:end_layer]
    if not layers or len(layers) != len(grads):
        raise ValueError(f"need as many attention as gradient layers (and some): {len(layers)} vs {len(grads)}")
    B, _, T, _ = layers[0].shape
    eye = torch.eye(T, device=layers[0].device)
    R = eye.expand(B, T, T)
    for a, g in zip(layers, grads):
        cam = (g.float() * a.float()).clamp_min(0).mean(1)  # (B, T, T)
        R = R + cam @ R
    return R


def attention_gradients(model, pixels: torch.Tensor, class_index) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Attention maps and d logit[class_index] / d attention for every layer: L × (B, H, T, T) each.

    Uses `model.trace_with_grad` and `torch.autograd.grad`: no hooks, no retain_grad, and no `.grad`
    is written on any parameter, so a shared model stays untouched. The input is a fresh leaf that
    requires grad, so a graph exists even if the caller froze the parameters. `class_index` is an int
    or one per image (B,). The logit (not the softmax) is differentiated, as in Chefer et al.'s code.
    """
    x = pixels.detach().clone().requires_grad_(True)
    trace = model.trace_with_grad(x)
    logits = trace.logits  # (B, classes)
    idx = torch.as_tensor(class_index, device=logits.device).reshape(-1).expand(logits.shape[0])  # (B,)
    target = logits.gather(1, idx[:, None]).sum()  # images are independent, so one backward serves all
    gradients = torch.autograd.grad(target, trace.attentions)
    return [a.detach() for a in trace.attentions], [g.detach() for g in gradients]


# ----------------------------------------------------------------------------- how far attention reaches

def patch_distances(grid: tuple[int, int], patch_size: int, device=None) -> torch.Tensor:
    """(N, N) Euclidean distance in pixels between patch centres, patches in row-major order."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=1).double() * patch_size  # (N, 2)
    return torch.cdist(centres, centres).float().to(device)


def mean_attention_distance(attentions, grid: tuple[int, int], patch_size: int, *,
                            num_prefix_tokens: int = 1) -> torch.Tensor:
    """Per layer and head, how far (in pixels) a patch looks on average (ViT paper App. D.7, Fig. 7 right).

    For each patch query: Σ_k a_qk · dist(q, k) over patch keys, then the mean over patch queries.
    Our choice for prefix tokens: prefix queries are left out (they have no place on the image), and
    prefix keys are left out with each row renormalised over the patch keys, so the number is the
    distance of the attention that went to the image. (Slicing without renormalising would count the
    CLS share as distance 0 and give smaller numbers.) Returns (B, L, heads).
    """
    p = num_prefix_tokens
    dist = None
    out = []
    for a in _per_layer(attentions):
        a = _normalise_rows(a[..., p:, p:].float())  # (B, H, N, N) patch queries × patch keys
        if dist is None:
            _check_grid(a.shape[-1], grid)
            dist = patch_distances(grid, patch_size, a.device)
        out.append(torch.einsum("bhqk,qk->bhq", a, dist).mean(-1))  # (B, H)
    return torch.stack(out, dim=1)  # (B, L, H)


def uniform_attention_distance(grid: tuple[int, int], patch_size: int) -> float:
    """The distance a head reaches by attending to every patch equally: the mean over all N² patch pairs
    (self pairs included, as a uniform row gives 1/N to itself). 14×14 patches of 16 px: 116.49 px."""
    return patch_distances(grid, patch_size).double().mean().item()


# ----------------------------------------------------------------------------- CNN receptive fields

class RF(NamedTuple):
    name: str
    rf: int  # receptive field, in input pixels, after this layer
    jump: int  # distance in input pixels between neighbouring outputs (product of strides)
    start: float  # input coordinate of the centre of output (0, 0); pixel i spans [i, i+1)


def receptive_field(layers: Sequence[tuple]) -> list[RF]:
    """Theoretical receptive field of a stack of convs/pools, layer by layer.

    Each layer is (name, kernel, stride, dilation[, padding]); padding defaults to (k-1)·d // 2.
    With k' = (k-1)·d + 1 (the dilated kernel), starting from r = j = 1, start = 0.5:
        r_l = r_{l-1} + (k'-1)·j_{l-1},   j_l = j_{l-1}·s,   start_l = start_{l-1} + ((k'-1)/2 - p)·j_{l-1}
    (Araujo et al., "Computing Receptive Fields of CNNs", Distill 2019). List only the main path:
    a 1×1 shortcut does not enlarge the field.
    """
    rf, jump, start = 1, 1, 0.5
    out = []
    for name, k, s, d, *pad in layers:
        span = (k - 1) * d  # k' - 1
        p = pad[0] if pad else span // 2
        rf, start, jump = rf + span * jump, start + (span / 2 - p) * jump, jump * s
        out.append(RF(name, rf, jump, start))
    return out


def _vgg16_layers() -> list[tuple]:
    layers = []
    for stage, convs in enumerate([2, 2, 3, 3, 3], start=1):
        layers += [(f"conv{stage}_{i}", 3, 1, 1) for i in range(1, convs + 1)]
        layers.append((f"pool{stage}", 2, 2, 1))
    return layers


def _resnet50_layers() -> list[tuple]:
    # torchvision's ResNet-50 (v1.5): the stride sits on the 3×3 conv (conv2) of a stage's first block.
    layers = [("conv1", 7, 2, 1), ("maxpool", 3, 2, 1)]
    for stage, (blocks, stride) in enumerate([(3, 1), (4, 2), (6, 2), (3, 2)], start=1):
        for b in range(blocks):
            layers += [(f"layer{stage}.{b}.conv1", 1, 1, 1),
                       (f"layer{stage}.{b}.conv2", 3, stride if b == 0 else 1, 1),
                       (f"layer{stage}.{b}.conv3", 1, 1, 1)]
    return layers


VGG16_LAYERS = _vgg16_layers()  # conv1_1 ... pool5 (Simonyan & Zisserman 2015, config D)
RESNET50_LAYERS = _resnet50_layers()  # conv1, maxpool, layer{1-4}.{block}.conv{1-3}
# The layer that ends each stage, by the stage's name: pick these out of receptive_field(RESNET50_LAYERS).
RESNET50_MILESTONES = {"conv1": "conv1", "maxpool": "maxpool", "layer1": "layer1.2.conv3",
                       "layer2": "layer2.3.conv3", "layer3": "layer3.5.conv3", "layer4": "layer4.2.conv3"}
VGG16_MILESTONES = {f"pool{i}": f"pool{i}" for i in range(1, 6)}


def milestones(fields: Sequence[RF], names: dict[str, str]) -> dict[str, RF]:
    """{"layer1": RF(...), ...} from receptive_field()'s output and a milestone table."""
    by_name = {f.name: f for f in fields}
    return {label: by_name[name] for label, name in names.items()}


# ----------------------------------------------------------------------------- effective receptive field

def effective_receptive_field(fn: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor,
                              position) -> torch.Tensor:
    """|∂ out[position] / ∂ input| summed over input channels: (B, H, W) (Luo et al. 2016, NeurIPS).

    `fn` maps pixels to a feature map (B, C, h, w), with position = (i, j) a cell, or to tokens
    (B, T, D), with position = a token index (prefix tokens count: patch k is token prefix + k).
    As in Luo et al., the gradient signal is 1 on every channel of that one output and 0 elsewhere
    (one backward pass of the channel sum), so channels' gradients can partly cancel.
    Gradients are taken with autograd.grad w.r.t. a copy of the input, so no parameter's
    requires_grad or .grad is touched.
    """
    x = pixels.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x)
        if out.dim() == 4:
            i, j = position
            target = out[:, :, i, j]  # (B, C)
        elif out.dim() == 3:
            target = out[:, int(position)]  # (B, D)
        else:
            raise ValueError(f"fn must return (B, C, h, w) or (B, T, D), got {tuple(out.shape)}")
        (grad,) = torch.autograd.grad(target.sum(), x)
    return grad.abs().sum(1)  # (B, H, W)


# ----------------------------------------------------------------------------- faithfulness

def _patch_mask(order: torch.Tensor, count: int, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """(1, 1, H, W) float mask that is 1 on the first `count` patches of `order`."""
    cells = torch.zeros(grid[0] * grid[1], device=order.device)
    cells[order[:count]] = 1.0
    cells = cells.reshape(1, 1, *grid)  # (1, 1, h, w)
    return cells.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)  # (1, 1, H, W)


@torch.no_grad()
def deletion_insertion(predict: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor, scores: torch.Tensor,
                       grid: tuple[int, int], patch_size: int, class_index: int, *, steps: int | None = None,
                       baseline: torch.Tensor | float | None = None, batch_size: int = 16) -> dict:
    """Deletion and insertion curves of a saliency map (Petsiuk et al. 2018, "RISE", §4.1), patch by patch.

    Patches are ranked by `scores` (h, w), highest first. Deletion replaces the top patches of the image
    with the baseline; insertion starts from the baseline and reveals the top patches. At each of
    `steps` + 1 points (default: one per patch) the image is re-scored with `predict(pixels) -> probs
    (B, classes)` and the probability of `class_index` is recorded. A good map makes deletion fall fast
    (low AUC) and insertion rise fast (high AUC). AUC is the trapezoid over the fraction in [0, 1].

    Baseline (our choice): zeros in the model's normalised input space, i.e. the dataset mean colour, for
    both curves (RISE inserts into a blurred copy; pass that as `baseline` to follow it). `pixels` is one
    image (1, C, H, W) or (C, H, W).
    """
    x = pixels if pixels.dim() == 4 else pixels[None]  # (1, C, H, W)
    N = grid[0] * grid[1]
    if x.shape[0] != 1 or x.shape[-2:] != (grid[0] * patch_size, grid[1] * patch_size):
        raise ValueError(f"expected one image of {grid[0] * patch_size}×{grid[1] * patch_size}, got {tuple(x.shape)}")
    _check_grid(scores.numel(), grid)
    base = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    base = base.expand_as(x)  # a scalar, (C, 1, 1), (C, H, W) or (1, C, H, W)
    order = torch.argsort(scores.reshape(-1).to(x.device), descending=True, stable=True)  # (N,) best first
    steps = N if steps is None else steps
    counts = torch.linspace(0, N, steps + 1).round().long()  # patches changed at each point

    def curve(start, end):
        probs = []
        for chunk in counts.split(batch_size):
            masks = torch.cat([_patch_mask(order, int(c), grid, patch_size) for c in chunk])  # (b, 1, H, W)
            batch = start * (1 - masks) + end * masks  # (b, C, H, W)
            probs.append(predict(batch)[:, class_index].float().cpu())
        return torch.cat(probs)

    fractions = counts.float() / N
    deletion, insertion = curve(x, base), curve(base, x)
    return {"fractions": fractions, "deletion": deletion, "insertion": insertion,
            "deletion_auc": torch.trapezoid(deletion, fractions).item(),
            "insertion_auc": torch.trapezoid(insertion, fractions).item()}


def random_scores(grid: tuple[int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    """(h, w) i.i.d. uniform scores: a random patch order, the baseline any saliency map should beat."""
    return torch.rand(tuple(grid), generator=generator)


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


def attention_cost(num_tokens: int, num_heads: int, depth: int, embed_dim: int) -> dict[str, int]:
    """What global attention costs for one image: every token scores every token in every head.

    T² weights per head, heads·T² per layer, depth·heads·T² in all; multiply-adds for q kᵀ and for
    A·v are T²·d_head per head each, so 2·T²·D per layer. All grow with T², i.e. with N².
    """
    per_head = num_tokens ** 2
    return {"per_head": per_head, "per_layer": per_head * num_heads, "total": per_head * num_heads * depth,
            "mult_adds": 2 * per_head * embed_dim * depth}


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


def patch_projection(model, trace) -> Projection:
    proj = model.patch_embed.proj
    weight = proj.weight.detach().cpu().float()
    bias = proj.bias.detach().cpu().float() if proj.bias is not None else None
    diff = (linear_patch_embed(trace.pixels, weight, bias) - trace.patch_embeddings).abs().max().item()
    return Projection(weight=weight, bias=bias, E=weight.reshape(weight.shape[0], -1).T, diff=diff,
                      tf32=proj.weight.is_cuda and torch.backends.cudnn.allow_tf32)


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


# --- rollout page (attention rollout lab)

def top_patches(values: torch.Tensor, k: int = 5) -> list[tuple[int, int, float]]:
    """The k largest cells of a map (h, w) as (row, col, value), largest first."""
    h, w = values.shape
    top = values.reshape(-1).float().topk(min(k, h * w))
    return [(int(i) // w, int(i) % w, float(v)) for v, i in zip(top.values, top.indices)]


# --- cnn page (CNN vs ViT reach)

def nearest_unit(coord: float, field: RF, size: int) -> tuple[int, float]:
    """Along one axis: the output unit of a layer whose centre is nearest to input coordinate `coord`,
    and that centre. Units sit at start + i·jump (RF.start, RF.jump); the "same"-padded layers here
    (ResNet-50, VGG-16, our CNN) keep ceil(size / jump) of them, so i is clamped to that range."""
    count = -(-size // field.jump)  # ceil
    i = int((coord - field.start + field.jump / 2) // field.jump)  # round to the nearest centre
    i = min(max(i, 0), count - 1)
    return i, field.start + i * field.jump


def rf_span(coord: float, field: RF, size: int) -> tuple[float, float, float]:
    """(centre, low, high) along one axis: the receptive field of the unit nearest `coord`, clipped to
    the image [0, size] (the part that falls on padding sees nothing)."""
    _, centre = nearest_unit(coord, field, size)
    return centre, max(0.0, centre - field.rf / 2), min(float(size), centre + field.rf / 2)


def normalise_peak(erf: torch.Tensor) -> torch.Tensor:
    """Each map of (B, H, W) divided by its own maximum, so two networks share one 0..1 colour scale."""
    peak = erf.flatten(1).amax(1).clamp_min(torch.finfo(erf.dtype).tiny)  # (B,)
    return erf / peak[:, None, None]


ERF_THRESHOLD = 0.01  # a pixel "is reached" when its gradient is above this share of the map's peak


def erf_fraction(erf, threshold: float = ERF_THRESHOLD) -> torch.Tensor:
    """Fraction of the input pixels whose gradient is above `threshold` × the map's max: (B, H, W) -> (B,).
    An all-zero map reaches nothing (0). `erf`: a tensor or an array."""
    return (normalise_peak(torch.as_tensor(erf)) > threshold).flatten(1).float().mean(1)


def vit_erf(model, pixels: torch.Tensor, layer: int, token: int) -> torch.Tensor:
    """ERF (B, H, W) of token `token` (prefix tokens count) in z_layer, the output of block `layer` (1..L)."""
    return effective_receptive_field(lambda x: model.trace_with_grad(x).hidden_states[layer], pixels, token)


def cnn_erf(cnn, pixels: torch.Tensor, layer: str, cell: tuple[int, int]) -> torch.Tensor:
    """ERF (B, H, W) of the feature map cell (i, j) after CNN layer `layer` (a `SmallCNN.features()` name)."""
    return effective_receptive_field(lambda x: dict(cnn.features(x))[layer], pixels, cell)


def _erfs(outputs: Callable[[torch.Tensor], list[torch.Tensor]], pixels: torch.Tensor,
          pick: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """ERFs of several outputs of one forward pass: (n, B, H, W), the n-th of `pick(n, outputs[n])`.

    One forward and one gradient call per output, the graph kept in between: the numbers of
    effective_receptive_field output by output, for about the cost of one of them plus n backward passes.
    """
    x = pixels.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        outs = outputs(x)
        grads = [torch.autograd.grad(pick(n, out).sum(), x, retain_graph=n < len(outs) - 1)[0]
                 for n, out in enumerate(outs)]
    return torch.stack([g.abs().sum(1) for g in grads])


def vit_erfs(model, pixels: torch.Tensor, layers: Sequence[int], token: int) -> torch.Tensor:
    """vit_erf for every layer in `layers` (1..L) from one forward pass: (len(layers), B, H, W)."""
    return _erfs(lambda x: [model.trace_with_grad(x).hidden_states[layer] for layer in layers], pixels,
                 lambda n, out: out[:, token])


def cnn_erfs(cnn, pixels: torch.Tensor, cells: dict[str, tuple[int, int]]) -> torch.Tensor:
    """cnn_erf for every (layer name -> cell) in `cells`, in that order, from one forward pass: (n, B, H, W)."""
    names = list(cells)

    def outputs(x):
        maps = dict(cnn.features(x))
        return [maps[name] for name in names]

    return _erfs(outputs, pixels, lambda n, out: out[:, :, cells[names[n]][0], cells[names[n]][1]])


def sample_attention_distances(model, preprocess, images: Sequence) -> torch.Tensor:
    """Mean attention distance (S, L, heads) of `model` over S images (PIL), one trace at a time."""
    out = []
    for image in images:
        tr = model.trace(preprocess(image))
        out.append(mean_attention_distance(tr.attentions, tr.grid, tr.patch_size,
                                           num_prefix_tokens=tr.num_prefix_tokens)[0].cpu())
    return torch.stack(out)


@dataclass
class CnnErfs:
    """The CNN's ERF at every conv layer for the unit nearest one image point (the CNN page, section 3)."""

    names: list[str]  # the conv layers, in order
    maps: torch.Tensor  # (n, H, W) each divided by its own maximum
    cells: list[tuple[int, int]]  # the unit (i, j) of each layer's feature map nearest the point
    boxes: list[tuple[tuple[int, int], tuple[int, int]]]  # its theoretical receptive field, clipped: (rows, cols)


def cnn_erf_layers(cnn, specs: Sequence[tuple], pixels: torch.Tensor, centre: tuple[float, float]) -> CnnErfs:
    """For the point `centre` (fractions of height and width): at every conv layer the nearest unit, its
    theoretical field (from `specs`, cnn.layer_specs) and its ERF, all from one forward pass."""
    pixels = pixels.to(next(cnn.parameters()).device)
    H, W = pixels.shape[-2:]
    fields = {f.name: f for f in receptive_field(specs)}
    y, x = centre[0] * H, centre[1] * W

    def cell(name: str) -> tuple[int, int]:
        return nearest_unit(y, fields[name], H)[0], nearest_unit(x, fields[name], W)[0]

    features = []  # (name, map) of the one forward pass: the layers are named by what it returns

    def outputs(px):
        features[:] = cnn.features(px)
        return [f for _, f in features]

    def pick(n: int, out: torch.Tensor) -> torch.Tensor:
        i, j = cell(features[n][0])
        return out[:, :, i, j]

    grads = _erfs(outputs, pixels, pick)
    names = [name for name, _ in features]
    boxes = [(rf_span(y, fields[n], H)[1:], rf_span(x, fields[n], W)[1:]) for n in names]
    maps = torch.stack([normalise_peak(m)[0] for m in grads.cpu()])
    return CnnErfs(names=names, maps=maps, cells=[cell(n) for n in names], boxes=boxes)


def compare_data_efficiency(summary: dict, a: str = "vit", b: str = "cnn") -> list[dict]:
    """Model `a` against model `b` at every training-set size both ran, from `claims.DataEfficiency.summary()`.

    One row per size, smallest first: {"size", "a", "b" (mean test accuracy), "diff" (a - b),
    "leader" (a, b, or None for equal means), "seeds" (the fewer of the two seed counts),
    "clear" (the seeds' min-max ranges do not overlap, so every seed agrees on the leader)}.
    """
    rows = []
    for size in sorted(set(summary.get(a, {})) & set(summary.get(b, {})), key=int):
        ca, cb = summary[a][size], summary[b][size]
        diff = ca["mean"] - cb["mean"]
        leader = a if diff > 0 else b if diff < 0 else None
        clear = ca["min"] > cb["max"] if diff > 0 else cb["min"] > ca["max"] if diff < 0 else False
        rows.append({"size": int(size), "a": ca["mean"], "b": cb["mean"], "diff": diff, "leader": leader,
                     "seeds": min(len(ca["accuracies"]), len(cb["accuracies"])), "clear": clear})
    return rows
