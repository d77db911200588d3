"""Where the CLS token's input comes from: attention rollout (Abnar & Zuidema 2020), gradient rollout,
and the deletion / insertion check of whether a map is faithful."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import torch

from vit_core.analysis.common import _check_grid, _normalise_rows, _per_layer

if TYPE_CHECKING:
    from vit_core.trace import ViTTrace

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


# --- rollout page (attention rollout lab)

def top_patches(values: torch.Tensor, k: int = 5) -> list[tuple[int, int, float]]:
    """The k largest cells of a map (h, w) as (row, col, value), largest first."""
    h, w = values.shape
    top = values.reshape(-1).float().topk(min(k, h * w))
    return [(int(i) // w, int(i) % w, float(v)) for v, i in zip(top.values, top.indices)]


@dataclass(frozen=True)
class RolloutSettings:
    """The lab's rollout settings as attention_rollout takes them; the layers are a slice [start_layer, end_layer)."""

    residual: bool = True
    head_fusion: str = "mean"
    discard_ratio: float = 0.0
    start_layer: int = 0
    end_layer: int | None = None

    def kwargs(self) -> dict:
        return asdict(self)


@dataclass
class RolloutMap:
    values: torch.Tensor  # (h, w) the CLS row of the rollout R over the patch tokens
    total: float  # the CLS row's sum over every token: 1 (rows are normalised) unless discarding emptied it
    patches: float  # its sum over the patch tokens alone; the rest stayed in the prefix tokens
    layers: int  # how many layers were chained
    top: list[tuple[int, int, float]]  # the largest cells as (row, col, value), largest first


def rollout_map(trace: ViTTrace, settings: RolloutSettings, top: int = 5) -> RolloutMap:
    """Attention rollout of a trace's first image with these settings, read from the CLS token's row."""
    p = trace.num_prefix_tokens
    joint = attention_rollout(trace.attentions, num_prefix_tokens=p, **settings.kwargs())  # (B, T, T)
    row = joint[0, 0]  # (T,) how much of each token ended up in CLS
    values = rollout_to_grid(joint, trace.grid, p)[0]  # (h, w)
    layers = len(trace.attentions[settings.start_layer:settings.end_layer])
    return RolloutMap(values, float(row.sum()), float(row[p:].sum()), layers, top_patches(values, top))


def cls_attention(trace: ViTTrace, layer: int, head: int) -> torch.Tensor:
    """(h, w) one head's raw attention from the CLS token to the patches (keys), in layer `layer` (from 0)."""
    return trace.attentions[layer][0, head, 0, trace.num_prefix_tokens:].reshape(trace.grid)


def gradient_rollout_map(trace: ViTTrace, gradients, settings: RolloutSettings) -> torch.Tensor:
    """(h, w) gradient rollout of the trace's first image over the settings' layers, read from the CLS row.
    `gradients` are d logit / d attention per layer for one class (attention_gradients)."""
    R = gradient_rollout(trace.attentions, gradients, start_layer=settings.start_layer,
                         end_layer=settings.end_layer)  # (B, T, T)
    return rollout_to_grid(R, trace.grid, trace.num_prefix_tokens)[0]
