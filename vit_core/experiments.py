"""Experiments that show why each part of a ViT is there, run live on the learner's image.

    position_experiment   shuffle the patches, with and without E_pos: without it the CLS output cannot change
    logit_lens            read the final LayerNorm + head off the CLS (and every patch) token after each block
    compare_maps          occlusion sensitivity beside attention rollout and gradient rollout (with the rollout lab's
                          settings), how well they agree, and how faithful each is against random patch orders
    stride_geometry       overlapping patches (stride < P): N, P²·C and the T×T cost of the cut
    window_stats          Swin-style w×w windows laid on the model's own attention: what they would cut, and the cost
    window_whatif         the same seen from one query patch, layer and head, beside the windowed model's answer
    fit_linear_probe      "teach it new classes": a linear head on the backbone's CLS features (Fashion-MNIST
                          classes or the learner's own pictures, own_set), against
    train_from_scratch    the small ViT trained on the same few images

Every what-if (E_pos taken away, attention kept inside windows) runs the model's own modules on a
changed input or with a changed sum; nothing on the shared model is set or hooked. Results are small
dataclasses of CPU tensors; work is batched on the model's device. No streamlit here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from vit_core import analysis
from vit_core.model import ViT, ViTTrace, count_parameters, resample_pos_embed

# The ViT paper (Dosovitskiy et al. 2020), Appendix D.4, Table 8: ViT-B/16, ImageNet 5-shot linear accuracy
# of the pretrained model's features, position embedding added once at the input ("default/stem" column).
VIT_TABLE8 = {"none": 0.61382, "1d": 0.64206, "2d": 0.64001, "relative": 0.64032}


# ----------------------------------------------------------------------------- running the model's own modules

def _readout(model: ViT, z: torch.Tensor) -> torch.Tensor:
    """Logits from a residual state z (B, T, D): final LayerNorm, then each prefix token's head (DeiT: mean)."""
    heads = [(model.head.weight, model.head.bias)]
    if model.head_dist is not None:
        heads.append((model.head_dist.weight, model.head_dist.bias))
    return analysis.classify_readout(z, (model.norm.weight, model.norm.bias, model.norm.eps), heads)["logits"]


def encoder_input(model: ViT, pixels: torch.Tensor, *, pos_embed: bool = True) -> torch.Tensor:
    """z0 (B, T, D) as in Eq. 1; with pos_embed=False zeros are added instead of E_pos (the what-if)."""
    x = model.patch_embed(pixels)  # (B, N, D)
    prefix = [model.cls_token] + ([model.dist_token] if model.dist_token is not None else [])
    z = torch.cat([torch.cat(prefix, 1).expand(len(x), -1, -1), x], 1)  # (B, T, D)
    if not pos_embed:
        return z
    grid = model.grid_for(*pixels.shape[-2:])
    return z + resample_pos_embed(model.pos_embed, grid, model.cfg.grid, model.cfg.num_prefix_tokens)


def _masked_block(block, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """One encoder layer (Eq. 2-3) with the block's own weights, each query attending only where `allowed`
    (T, T) is True: scores elsewhere are -inf before the softmax."""
    B, T, D = x.shape
    attn = block.attn
    qkv = attn.qkv(block.norm1(x)).reshape(B, T, 3, attn.num_heads, D // attn.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 × (B, heads, T, hd)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, heads, T, T)
    a = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    x = x + attn.proj((a @ v).transpose(1, 2).reshape(B, T, D))
    return x + block.mlp(block.norm2(x))


@torch.inference_mode()
def run_encoder(model: ViT, z0: torch.Tensor, *, allowed: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The residual stream z0 ... zL (L+1 × (B, T, D)) from any encoder input, optionally with an attention
    mask `allowed` (T, T) of the pairs a query may look at."""
    states = [z0]
    for block in model.blocks:
        states.append(block(states[-1])[0] if allowed is None else _masked_block(block, states[-1], allowed))
    return states


def _batches(pixels: torch.Tensor, size: int):
    for i in range(0, len(pixels), size):
        yield pixels[i:i + size]


# ----------------------------------------------------------------------------- 1. position matters

def shuffle_patches(pixels: torch.Tensor, perm: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Move the patches of (B, C, H, W): patch k of the result is patch perm[k] of the input (row-major)."""
    P, (H, W) = patch_size, pixels.shape[-2:]
    cols = F.unfold(pixels, P, stride=P)  # (B, C·P·P, N)
    return F.fold(cols[:, :, perm.to(pixels.device)], (H, W), P, stride=P)


def random_perms(num_patches: int, count: int, seed: int) -> torch.Tensor:
    """(count, N) seeded random permutations of the patch order."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(num_patches, generator=g) for _ in range(count)])


def swap_perm(num_patches: int, a: int, b: int) -> torch.Tensor:
    """The permutation that swaps patches a and b and keeps every other one."""
    perm = torch.arange(num_patches)
    perm[[a, b]] = perm[[b, a]]
    return perm


@dataclass
class PositionResult:
    perms: torch.Tensor  # (K, N) the shuffles; row 0 is the learner's
    shuffled: torch.Tensor  # (1, C, H, W) the image under perms[0]
    probs_pos: torch.Tensor  # (K+1, classes) with E_pos: the image as it is, then each shuffle
    probs_nopos: torch.Tensor  # (K+1, classes) the same with zeros instead of E_pos
    delta_pos: torch.Tensor  # (K,) max |CLS output of a shuffle − of the image as it is|, with E_pos
    delta_nopos: torch.Tensor  # (K,) the same without E_pos: rounding only (permutation invariance)

    @property
    def max_delta_pos(self) -> float:
        return float(self.delta_pos.max())

    @property
    def max_delta_nopos(self) -> float:
        return float(self.delta_nopos.max())

    @property
    def moved(self) -> int:
        """How many patches the learner's shuffle (perms[0]) puts somewhere else."""
        return int((self.perms[0] != torch.arange(self.perms.shape[1])).sum())

    def top_classes(self, k: int = 5) -> list[int]:
        """The k classes the model with E_pos finds most probable on the image as it is."""
        return self.probs_pos[0].topk(min(k, self.probs_pos.shape[1])).indices.tolist()

    def answers(self, with_pos: bool) -> tuple[int, int]:
        """(top class of the image as it is, top class under the learner's shuffle), with E_pos or without."""
        probs = self.probs_pos if with_pos else self.probs_nopos
        before, after = probs[:2].argmax(-1).tolist()
        return before, after


@torch.inference_mode()
def position_experiment(model: ViT, pixels: torch.Tensor, perms: torch.Tensor) -> PositionResult:
    """Run the image and each patch shuffle (K, N) with E_pos and with zeros instead, in one batch each.

    Without position embeddings every layer treats the patch tokens as a set: attention is a weighted
    sum over all tokens and the MLP, LayerNorms and residuals act per token, so shuffling the patches
    shuffles the patch outputs and leaves the CLS output as it was (up to float rounding). "CLS output"
    is the final LayerNorm of every prefix token, i.e. what the heads read.
    """
    x = pixels.to(model.device, torch.float32)
    batch = torch.cat([x] + [shuffle_patches(x, p, model.cfg.patch_size) for p in perms])  # (K+1, C, H, W)
    p = model.cfg.num_prefix_tokens
    out = {}
    for use_pos in (True, False):
        z = run_encoder(model, encoder_input(model, batch, pos_embed=use_pos))[-1]
        y = model.norm(z[:, :p])  # (K+1, prefix, D)
        out[use_pos] = (_readout(model, z).softmax(-1).cpu(), (y[1:] - y[:1]).abs().flatten(1).amax(1).cpu())
    return PositionResult(perms=perms.cpu(), shuffled=batch[1:2].cpu(), probs_pos=out[True][0],
                          probs_nopos=out[False][0], delta_pos=out[True][1], delta_nopos=out[False][1])


@dataclass
class PosAblation:
    pred_pos: torch.Tensor  # (B,) top-1 class with E_pos
    pred_nopos: torch.Tensor  # (B,) top-1 class with E_pos taken away (zeros added)
    prob_pos: torch.Tensor  # (B,) probability of that class
    prob_nopos: torch.Tensor  # (B,)
    labels: torch.Tensor | None  # (B,) true classes, when known

    @property
    def agreement(self) -> float:  # how often taking E_pos away leaves the top-1 class as it was
        return float((self.pred_pos == self.pred_nopos).float().mean())

    def accuracy(self, with_pos: bool) -> float | None:
        if self.labels is None:
            return None
        return float(((self.pred_pos if with_pos else self.pred_nopos) == self.labels).float().mean())


@torch.inference_mode()
def pos_ablation(model: ViT, pixels: torch.Tensor, labels: torch.Tensor | None = None, *,
                 batch_size: int = 64) -> PosAblation:
    """The model's prediction on a set of images (B, C, H, W) with its own E_pos and with it taken away.
    A model trained without E_pos would be a different model; this only removes it from this one."""
    cols = {True: [], False: []}
    for chunk in _batches(pixels.to(model.device, torch.float32), batch_size):
        for use_pos in cols:
            cols[use_pos].append(_readout(model, run_encoder(model, encoder_input(model, chunk, pos_embed=use_pos))[-1])
                                 .softmax(-1).max(-1))
    (prob_pos, pred_pos), (prob_nopos, pred_nopos) = [
        [torch.cat([getattr(m, f) for m in cols[u]]).cpu() for f in ("values", "indices")] for u in (True, False)]
    return PosAblation(pred_pos=pred_pos, pred_nopos=pred_nopos, prob_pos=prob_pos, prob_nopos=prob_nopos,
                       labels=labels)


# ----------------------------------------------------------------------------- 2. logit lens

@dataclass
class LogitLens:
    cls_probs: torch.Tensor  # (L+1, classes) softmax of the head read off z_l (l = 0 is the encoder input)
    final_class: int  # the model's own top-1 class
    final_rank: torch.Tensor  # (L+1,) rank of final_class at each depth (0 = top)
    patch_prob: torch.Tensor  # (L+1, h, w) probability of final_class read off each patch token
    patch_top: torch.Tensor  # (L+1, h, w) the top class read off each patch token
    logits: torch.Tensor  # (L+1, classes) before the softmax; logits[-1] is the model's own output

    def top_classes(self, k: int = 5) -> list[int]:
        """The k classes that reach the highest probability at any depth, final class first."""
        best = self.cls_probs.amax(0)
        best[self.final_class] = float("inf")
        return best.topk(min(k, len(best))).indices.tolist()

    @property
    def settled_depth(self) -> int:
        """The first depth from which the final class stays top-1 up to depth L (0: from the input on)."""
        depth = len(self.final_rank)
        while depth > 0 and self.final_rank[depth - 1] == 0:
            depth -= 1
        return depth

    def final_diff(self, trace: ViTTrace) -> float:
        """max |the lens's logits at the last layer − the model's own logits|: 0 up to rounding, the check."""
        return float((self.logits[-1] - trace.logits[0]).abs().max())

    def patch_names(self, depth: int, names: list[str]) -> list[list[str]]:
        """(h, w) the name of each patch token's top class at `depth`."""
        return [[names[i] for i in row] for row in self.patch_top[depth].tolist()]

    def patch_agreement(self, depth: int, final: int) -> float:
        """The share of patch tokens whose top class at `depth` is `final`."""
        return float((self.patch_top[depth] == final).float().mean())

    def patch_votes(self, depth: int, k: int = 5) -> list[tuple[int, int]]:
        """The k classes most patch tokens read as top-1 at `depth`: (class, patches), most first."""
        counts = self.patch_top[depth].flatten().bincount(minlength=self.cls_probs.shape[1])
        top = counts.topk(min(k, len(counts)))
        return [(int(c), int(n)) for n, c in zip(top.values, top.indices) if n > 0]


@torch.inference_mode()
def logit_lens(model: ViT, trace: ViTTrace) -> LogitLens:
    """Apply the final LayerNorm and the head to the residual stream after every block (nostalgebraist 2020).

    The prefix tokens are read exactly as the model reads its last layer (DeiT: the mean of its two
    heads), so depth L gives the model's logits. Each patch token is read through the CLS head. The
    intermediate layers were never trained to be read this way: an early "wrong" answer says how far
    the stream is from the head's space, not what the layer "thinks".
    """
    p, (h, w) = trace.num_prefix_tokens, trace.grid
    states = torch.stack(trace.hidden_states)[:, 0].to(model.device, torch.float32)  # (L+1, T, D)
    logits = _readout(model, states)  # (L+1, classes)
    patches = model.head(model.norm(states[:, p:])).softmax(-1)  # (L+1, N, classes)
    final = int(logits[-1].argmax())
    rank = (logits > logits[:, final:final + 1]).sum(-1)  # (L+1,) classes scored above the final one
    return LogitLens(cls_probs=logits.softmax(-1).cpu(), final_class=final, final_rank=rank.cpu(),
                     patch_prob=patches[..., final].reshape(-1, h, w).cpu(),
                     patch_top=patches.argmax(-1).reshape(-1, h, w).cpu(), logits=logits.cpu())


# ----------------------------------------------------------------------------- 3. occlusion beside attention

def predictor(model: ViT) -> Callable[[torch.Tensor], torch.Tensor]:
    """pixels (n, C, H, W) -> class probabilities (n, classes) on the CPU, run on the model's device."""
    def predict(batch):
        with torch.inference_mode():
            return model(batch.to(model.device, torch.float32)).softmax(-1).cpu()
    return predict


@torch.inference_mode()
def occlusion_map(predict: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor, grid: tuple[int, int],
                  patch_size: int, class_index: int, *, baseline: float = 0.0, batch_size: int = 32) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus 2014) per patch: p(class | image) − p(class | that patch set to
    `baseline`), one patch at a time, `batch_size` occluded copies per call. `baseline` 0 is the mean colour
    of the model's normalisation (as in analysis.deletion_insertion). Returns (h, w); negative where
    hiding the patch raises the probability."""
    x = pixels if pixels.dim() == 4 else pixels[None]  # (1, C, H, W)
    h, w = grid
    cells = torch.eye(h * w, device=x.device).reshape(h * w, 1, h, w)  # patch k on in mask k
    masks = cells.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)  # (N, 1, H, W)
    base = float(predict(x)[0, class_index])
    drops = [base - predict(x * (1 - m) + baseline * m)[:, class_index].float() for m in masks.split(batch_size)]
    return torch.cat(drops).reshape(h, w)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two maps (ties get their mean rank)."""
    def ranks(x):
        x = x.reshape(-1).double()
        r = torch.empty_like(x)
        r[x.argsort(stable=True)] = torch.arange(len(x), dtype=torch.float64)
        for v in x.unique()[x.unique(return_counts=True)[1] > 1]:  # ties: the mean of their ranks
            r[x == v] = r[x == v].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return float((ra @ rb) / denom) if denom > 0 else 0.0


@dataclass
class Faithfulness:
    deletion_auc: float  # lower is better: the probability falls fast when the top patches go
    insertion_auc: float  # higher is better: it rises fast when they come back
    deletion: torch.Tensor  # (steps+1,) the curves
    insertion: torch.Tensor


MAPS = ("occlusion", "rollout", "gradient")


AUTO_MACS = 2e10  # a comparison cheaper than this (about a second on a CPU) may run without a click
MARGIN = 0.01  # how much lower (deletion) or higher (insertion) an AUC must be than random's to count as beating it


@dataclass
class AucTable:
    maps: tuple[str, ...]  # MAPS, then "random"
    deletion_auc: list[float]  # per map, lower is better
    insertion_auc: list[float]  # per map, higher is better
    verdicts: list[str | None]  # per map MapComparison.verdict ("both", "some", "none"); None for random itself


@dataclass
class MapComparison:
    maps: dict[str, torch.Tensor]  # MAPS -> (h, w)
    correlation: dict[tuple[str, str], float]  # Spearman rank correlation of each pair of maps
    faithfulness: dict[str, Faithfulness]  # MAPS and "random"
    fractions: torch.Tensor  # (steps+1,) share of patches changed at each point of the curves
    base_prob: float  # p(class) on the image as it is
    occlusion_s: float  # seconds the occlusion map took
    forward_passes: int  # images the comparison ran through the model
    device_kind: str = "cpu"  # the kind of device it ran on ("cpu", "cuda", ...): what occlusion_s was measured on

    def beats(self, name: str, margin: float = MARGIN) -> tuple[bool, bool]:
        """(deletion, insertion): whether map `name` beats the random order on each curve by more than
        `margin` in AUC, so that a random model's noise does not read as a faithful map."""
        f, r = self.faithfulness[name], self.faithfulness["random"]
        return f.deletion_auc < r.deletion_auc - margin, f.insertion_auc > r.insertion_auc + margin

    def verdict(self, name: str, margin: float = MARGIN) -> str:
        """"both", "some" or "none": on how many of the two curves map `name` beats random by the margin."""
        good = self.beats(name, margin)
        return "both" if all(good) else "some" if any(good) else "none"

    def auc_table(self) -> AucTable:
        """The faithfulness table: every map of MAPS, then the random order, with both AUCs and each map's verdict."""
        names = MAPS + ("random",)
        return AucTable(names, [self.faithfulness[m].deletion_auc for m in names],
                        [self.faithfulness[m].insertion_auc for m in names], [self.verdict(m) for m in MAPS] + [None])

    def curves(self, name: str) -> dict:
        """Map `name`'s curves and AUCs beside the random order's, as plain keys (deletion, random_deletion,
        deletion_auc, random_deletion_auc, ... and fractions): what the exports write."""
        f, r = self.faithfulness[name], self.faithfulness["random"]
        out = {"fractions": self.fractions}
        for kind in ("deletion", "insertion"):
            out |= {kind: getattr(f, kind), f"random_{kind}": getattr(r, kind),
                    f"{kind}_auc": getattr(f, f"{kind}_auc"), f"random_{kind}_auc": getattr(r, f"{kind}_auc")}
        return out


def comparison_passes(num_patches: int, steps: int, random_orders: int) -> int:
    """Images compare_maps runs through the model: occlusion (N + 1), one pass with gradients for gradient
    rollout, then deletion and insertion (2 · (steps + 1)) for each of the three maps and each random order."""
    return num_patches + 2 + 2 * (steps + 1) * (len(MAPS) + random_orders)


def forward_macs(model: ViT, tokens: int) -> int:
    """About how many multiply-adds one image of `tokens` tokens costs: every weight is used once per token
    (attention's own T² products are left out; they are small beside the weights below a few hundred tokens)."""
    return count_parameters(model) * tokens


def is_cheap(model: ViT, tokens: int, passes: int) -> bool:
    """Whether `passes` images of `tokens` tokens cost less than AUTO_MACS, so they may run unasked."""
    return passes * forward_macs(model, tokens) <= AUTO_MACS


def compare_maps(model: ViT, trace: ViTTrace, class_index: int, *, residual: bool = True, head_fusion: str = "mean",
                 discard_ratio: float = 0.0, start_layer: int = 0, end_layer: int | None = None,
                 steps: int | None = None, random_orders: int = 2, seed: int = 0,
                 batch_size: int = 32) -> MapComparison:
    """Occlusion, attention rollout and gradient rollout for one class, their rank correlations, and the
    deletion/insertion AUC of each against `random_orders` seeded random patch orders (their mean curve).

    Rollout takes analysis.attention_rollout's settings; both rollouts chain the layers
    [start_layer, end_layer) (a slice, as there). `steps` + 1 points per curve (default: one per patch)."""
    predict = predictor(model)
    pixels, grid, P, p = trace.pixels.cpu(), trace.grid, trace.patch_size, trace.num_prefix_tokens
    started = time.perf_counter()
    occlusion = occlusion_map(predict, pixels, grid, P, class_index, batch_size=batch_size)
    occlusion_s = time.perf_counter() - started
    layers = dict(start_layer=start_layer, end_layer=end_layer)
    joint = analysis.attention_rollout(trace.attentions, residual=residual, head_fusion=head_fusion,
                                       discard_ratio=discard_ratio, num_prefix_tokens=p, **layers)
    attentions, grads = analysis.attention_gradients(model, trace.pixels.to(model.device), class_index)
    gradient = analysis.rollout_to_grid(analysis.gradient_rollout(attentions, grads, **layers), grid, p)[0]
    maps = {"occlusion": occlusion, "rollout": analysis.rollout_to_grid(joint, grid, p)[0].cpu(),
            "gradient": gradient.cpu()}
    steps = grid[0] * grid[1] if steps is None else steps
    run = lambda s: analysis.deletion_insertion(predict, pixels, s, grid, P, class_index,  # noqa: E731
                                                steps=steps, batch_size=batch_size)
    curves = {name: run(m) for name, m in maps.items()}
    g = torch.Generator().manual_seed(seed)
    randoms = [run(analysis.random_scores(grid, g)) for _ in range(random_orders)]
    curves["random"] = {k: torch.stack([r[k] for r in randoms]).mean(0) for k in ("deletion", "insertion")}
    fractions = randoms[0]["fractions"]
    faith = {name: Faithfulness(deletion_auc=torch.trapezoid(c["deletion"], fractions).item(),
                                insertion_auc=torch.trapezoid(c["insertion"], fractions).item(),
                                deletion=c["deletion"], insertion=c["insertion"]) for name, c in curves.items()}
    pairs = [(a, b) for i, a in enumerate(MAPS) for b in MAPS[i + 1:]]
    return MapComparison(maps=maps, correlation={(a, b): spearman(maps[a], maps[b]) for a, b in pairs},
                         faithfulness=faith, fractions=fractions, base_prob=float(faith["occlusion"].deletion[0]),
                         occlusion_s=occlusion_s,
                         forward_passes=comparison_passes(grid[0] * grid[1], steps, random_orders),
                         device_kind=model.device.type)


# ----------------------------------------------------------------------------- 4. stride and windows

@dataclass
class StrideGeometry:
    patch_size: int  # P
    stride: int  # S: how far the next patch starts; S = P is ViT's cut, S < P overlaps
    grid: tuple[int, int]  # patches down and across: floor((H − P) / S) + 1
    num_patches: int  # N
    patch_dim: int  # P²·C numbers per patch
    tokens: int  # T = prefix + N
    attention_entries: int  # T² per head and layer
    used: tuple[int, int]  # pixels down and across that some patch covers (the rest is cut off)
    overlap: int  # P − S pixels two neighbouring patches share (0 when S ≥ P)


def stride_geometry(image_size: tuple[int, int], patch_size: int, stride: int, in_chans: int,
                    num_prefix_tokens: int = 1) -> StrideGeometry:
    """What cutting H×W×C into P×P patches every S pixels gives (an unfold with kernel P and stride S)."""
    H, W = image_size
    P, S = patch_size, stride
    if not (1 <= P <= min(H, W)) or S < 1:
        raise ValueError(f"patch size {P} and stride {S} do not fit a {H}×{W} image")
    grid = ((H - P) // S + 1, (W - P) // S + 1)
    N = grid[0] * grid[1]
    T = N + num_prefix_tokens
    return StrideGeometry(P, S, grid, N, P * P * in_chans, T, T * T,
                          ((grid[0] - 1) * S + P, (grid[1] - 1) * S + P), max(0, P - S))


def stride_counts(cut: StrideGeometry, base) -> list[tuple[str, int, int]]:
    """(what, this cut's count, the model's own cut's count) for N, P²·C, T and T²; `base` is the model's
    `analysis.patch_geometry` (or another StrideGeometry)."""
    fields = (("n", "num_patches"), ("ppc", "patch_dim"), ("t", "tokens"), ("att", "attention_entries"))
    return [(name, getattr(cut, f), getattr(base, f)) for name, f in fields]


def window_offset(window: int, shift: bool = False) -> int:
    """Patches the first window is cut short by. Swin's shifted partition (Liu et al. 2021, §3.2) moves the
    windows ⌊w/2⌋ patches down and right: its cyclic shift by −⌊w/2⌋ plus the attention mask leave window
    borders at ⌊w/2⌋ + k·w, so windows start at k·w − (w − ⌊w/2⌋). Unshifted: borders at k·w."""
    return window - window // 2 if shift else 0


def window_ids(grid: tuple[int, int], window: int, shift: bool = False) -> torch.Tensor:
    """(N,) the window each patch falls in, patches row-major; windows are window×window patches, and those
    cut by the image's edge are partial (as Swin's padding and mask make them)."""
    h, w = grid
    off = window_offset(window, shift)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    per_row = (w - 1 + off) // window + 1  # window columns
    return (((rows + off) // window) * per_row + (cols + off) // window).flatten()


def window_mask(grid: tuple[int, int], window: int, shift: bool = False) -> torch.Tensor:
    """(N, N) True where patch i and patch j share a window: the pairs a windowed layer can link."""
    ids = window_ids(grid, window, shift)
    return ids[:, None] == ids[None, :]


@dataclass
class WindowStats:
    window: int
    shift: bool
    windows: int  # windows that hold at least one patch
    allowed_pairs: int  # (query, key) patch pairs inside a window: Σ |window|²
    total_pairs: int  # N² for global attention
    outside: torch.Tensor  # (L, heads) mean share of a patch query's attention on patches outside its window
    prefix: torch.Tensor  # (L, heads) mean share on the prefix tokens (CLS; Swin has none)

    @property
    def cost_ratio(self) -> float:
        return self.allowed_pairs / self.total_pairs


def window_stats(attentions, grid: tuple[int, int], window: int, shift: bool = False,
                 num_prefix_tokens: int = 1) -> WindowStats:
    """Lay the window partition on the model's own attention (L × (B, heads, T, T), image 0): per layer
    and head, how much of a patch's attention goes to patches a windowed model could not reach."""
    mask = window_mask(grid, window, shift)
    p = num_prefix_tokens
    outside, prefix = [], []
    for a in attentions:
        a = a[0].float()  # (heads, T, T)
        keys = a[:, p:, p:]  # patch queries × patch keys
        outside.append((keys * ~mask.to(a.device)).sum(-1).mean(-1).cpu())
        prefix.append(a[:, p:, :p].sum(-1).mean(-1).cpu())
    counts = window_ids(grid, window, shift).bincount()
    counts = counts[counts > 0]
    N = grid[0] * grid[1]
    return WindowStats(window, shift, len(counts), int((counts ** 2).sum()), N * N,
                       torch.stack(outside), torch.stack(prefix))


def query_window(attentions, grid: tuple[int, int], window: int, shift: bool, layer: int, head: int,
                 patch: tuple[int, int], num_prefix_tokens: int = 1) -> tuple[torch.Tensor, float]:
    """One patch query's attention over the patch keys (h, w) in one layer and head (image 0), and the share
    of its attention that lands on patches outside its window."""
    q = num_prefix_tokens + patch[0] * grid[1] + patch[1]
    row = attentions[layer][0, head, q, num_prefix_tokens:].float().cpu()  # (N,)
    inside = window_mask(grid, window, shift)[q - num_prefix_tokens]
    return row.reshape(grid), float(row[~inside].sum())


@torch.inference_mode()
def windowed_probs(model: ViT, pixels: torch.Tensor, window: int, shift: bool = False) -> torch.Tensor:
    """What-if: the model's probabilities (1, classes) when every layer's patch queries may attend only
    inside their window (and to the prefix tokens); prefix tokens still see everything. The model was
    never trained this way. With `shift` the layers alternate plain and shifted windows, as in Swin."""
    x = pixels.to(model.device, torch.float32)
    grid, p = model.grid_for(*x.shape[-2:]), model.cfg.num_prefix_tokens
    z = encoder_input(model, x)
    T = z.shape[1]

    def allowed(shifted):
        a = torch.ones(T, T, dtype=torch.bool, device=z.device)
        a[p:, p:] = window_mask(grid, window, shifted).to(z.device)
        return a

    masks = [allowed(False), allowed(True) if shift else allowed(False)]
    for i, block in enumerate(model.blocks):
        z = _masked_block(block, z, masks[i % 2])
    return _readout(model, z).softmax(-1).cpu()


@dataclass
class WindowWhatIf:
    """Step 5's Swin-style windows laid on the model's attention, seen from one layer, head and query patch."""

    layer: int  # 0-based, as are head and the patch's (row, column)
    head: int
    patch: tuple[int, int]
    stats: WindowStats  # every layer and head
    offset: int  # window_offset: windows start at k·window − offset patches
    attention: torch.Tensor  # (h, w) the query's attention on the patch keys in this layer and head
    lost: float  # its share on patches outside the query's window
    outside: torch.Tensor  # (L,) stats.outside, mean of the heads
    outside_head: torch.Tensor  # (L,) stats.outside of this head
    prefix: torch.Tensor  # (L,) stats.prefix, mean of the heads
    own: tuple[int, float]  # the model's top class and its probability
    windowed: tuple[int, float]  # the same with attention kept in windows (the `windowed_probs` given)


def window_whatif(trace: ViTTrace, window: int, shift: bool, layer: int, head: int, patch: tuple[int, int],
                  windowed: torch.Tensor) -> WindowWhatIf:
    """window_stats and query_window of `trace` (image 0) for one layer, head (0-based) and query patch (r, c),
    with the top class of the trace and of `windowed` ((classes,) from windowed_probs, computed apart because
    it runs the model)."""
    p = trace.num_prefix_tokens
    stats = window_stats(trace.attentions, trace.grid, window, shift, p)
    attention, lost = query_window(trace.attentions, trace.grid, window, shift, layer, head, patch, p)
    top = lambda probs: (int(probs.argmax()), float(probs.max()))  # noqa: E731
    return WindowWhatIf(layer=layer, head=head, patch=tuple(patch), stats=stats, offset=window_offset(window, shift),
                        attention=attention, lost=lost, outside=stats.outside.mean(1),
                        outside_head=stats.outside[:, head], prefix=stats.prefix.mean(1), own=top(trace.probs[0]),
                        windowed=top(windowed))


# ----------------------------------------------------------------------------- 5. teach it new classes

@dataclass
class FewShotSet:
    classes: list[int]  # dataset labels of the chosen classes; class i of the task is classes[i]
    train_images: torch.Tensor  # (n, 28, 28) uint8, light on black (Fashion-MNIST as stored)
    train_labels: torch.Tensor  # (n,) task labels 0..k-1
    test_images: torch.Tensor  # (m, 28, 28)
    test_labels: torch.Tensor  # (m,)


def few_shot_set(images: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], classes: list[int], shots: int,
                 held_out: int, seed: int = 0) -> FewShotSet:
    """`shots` training images per class from the "train" split (seeded), and the first `held_out` test
    images of each class from the "test" split: a fixed held-out set whatever the seed."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for task, c in enumerate(classes):
        idx = torch.nonzero(labels["train"] == c).flatten()
        train.append((idx[torch.randperm(len(idx), generator=g)[:shots]], task))
        test.append((torch.nonzero(labels["test"] == c).flatten()[:held_out], task))

    def gather(split, picks):
        return (torch.cat([images[split][i] for i, _ in picks]),
                torch.cat([torch.full((len(i),), task) for i, task in picks]))

    return FewShotSet(list(classes), *gather("train", train), *gather("test", test))


@dataclass
class OwnSet:
    classes: list[str]  # the learner's class names; class i of the task is classes[i]
    train_images: list[Image.Image]
    train_labels: torch.Tensor  # (n,) task labels 0..k-1
    test_images: list[Image.Image]  # the held-out pictures, never trained on
    test_labels: torch.Tensor  # (m,)
    held_out: list[int | None]  # per class: which of its pictures (by upload order) is held out, None if none


MIN_OWN, HOLD_FROM = 2, 3  # pictures a class needs; from this many on, one of them is held out


def own_set(names: list[str], pictures: list[list[Image.Image]], seed: int = 0) -> OwnSet:
    """A task from the learner's own pictures (`pictures[i]` of class `names[i]`, at least MIN_OWN each).
    A class with HOLD_FROM or more pictures gives one of them, drawn with `seed`, to the held-out set;
    a class with fewer trains on all of them."""
    if len(names) != len(pictures) or len(names) < 2 or min(map(len, pictures)) < MIN_OWN:
        raise ValueError(f"need 2 or more classes of {MIN_OWN}+ pictures each, got {list(map(len, pictures))}")
    g = torch.Generator().manual_seed(seed)
    train, test, held = [], [], []
    for task, pics in enumerate(pictures):
        out = int(torch.randint(len(pics), (1,), generator=g)) if len(pics) >= HOLD_FROM else None
        held.append(out)
        train += [(img, task) for i, img in enumerate(pics) if i != out]
        test += [(pics[out], task)] if out is not None else []
    labels = lambda pairs: torch.tensor([task for _, task in pairs], dtype=torch.long)  # noqa: E731
    return OwnSet(list(names), [img for img, _ in train], labels(train), [img for img, _ in test], labels(test), held)


def to_pixels(preprocess, images) -> torch.Tensor:
    """Pictures through a model card's preprocessing: (n, C, H, W). `images` are PIL images, or uint8
    Fashion-MNIST arrays (28, 28) as stored (light on black), or a mix, or one (n, 28, 28) tensor."""
    return torch.cat([preprocess(Image.fromarray(img.numpy()) if isinstance(img, torch.Tensor) else img)
                      for img in images])


def reads_fashion_mnist(card) -> bool:
    """Whether a model was trained on Fashion-MNIST (its card says so), so its labels are the dataset's."""
    return str(card.extra.get("dataset", "")).startswith("Fashion-MNIST") and len(card.class_names) == 10


@torch.inference_mode()
def cls_features(model: ViT, pixels: torch.Tensor, *, batch_size: int = 64, progress=None) -> torch.Tensor:
    """y = LN(z_L^0) (B, D): the CLS token's final state, the vector the model's own head reads (Eq. 4)."""
    out = []
    for i, chunk in enumerate(_batches(pixels, batch_size)):
        out.append(model.norm(run_encoder(model, encoder_input(model, chunk.to(model.device, torch.float32)))[-1][:, 0])
                   .cpu())
        if progress:
            progress(min(1.0, (i + 1) * batch_size / len(pixels)))
    return torch.cat(out)


@dataclass
class LinearProbe:
    weight: torch.Tensor  # (k, D) on standardised features
    bias: torch.Tensor  # (k,)
    mean: torch.Tensor  # (D,) feature standardisation, from the training features
    std: torch.Tensor  # (D,)
    losses: list[float]  # training loss per step
    seconds: float

    def probs(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear((features.float() - self.mean) / self.std, self.weight, self.bias).softmax(-1)

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.probs(features).argmax(-1) == labels).float().mean())

    def classify(self, trace: ViTTrace) -> torch.Tensor:
        """(k,) the task classes' probabilities for the traced image (its CLS feature is trace.final[:, 0])."""
        return self.probs(trace.final[:, 0].cpu())[0]


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, steps: int = 300,
                     lr: float = 0.05, weight_decay: float = 1e-3, seed: int = 0, progress=None) -> LinearProbe:
    """Multinomial logistic regression on frozen features (B, D): full-batch Adam on standardised features,
    cross-entropy plus weight decay, from a seeded small random start. The backbone is not touched."""
    started = time.perf_counter()
    x = features.detach().float().cpu()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    x = (x - mean) / std
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(num_classes, x.shape[1], generator=g) * 0.01).requires_grad_(True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr)
    losses = []
    with torch.enable_grad():
        for step in range(steps):
            loss = F.cross_entropy(F.linear(x, W, b), labels) + weight_decay * (W ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if progress and (step + 1) % max(1, steps // 20) == 0:
                progress((step + 1) / steps)
    return LinearProbe(W.detach(), b.detach(), mean, std, losses, time.perf_counter() - started)


@dataclass
class ProbeResult:
    probe: LinearProbe
    train_accuracy: float
    test_accuracy: float | None  # None when nothing was held out
    feature_seconds: float  # the backbone's forward passes over every train and held-out image
    images: int  # how many images went through the backbone


def probe_task(model: ViT, preprocess, data: FewShotSet | OwnSet, *, seed: int = 0, progress=None) -> ProbeResult:
    """Features of the task's images (Fashion-MNIST arrays or the learner's pictures, through `preprocess`)
    from the frozen backbone, a linear head fitted on the training ones, and its accuracy on both sets.
    `progress(fraction)`: features take the first half, the fit the second."""
    report = (lambda lo: (lambda f: progress(lo + 0.5 * f))) if progress else (lambda lo: None)
    started = time.perf_counter()
    images = [*data.train_images, *data.test_images]
    features = cls_features(model, to_pixels(preprocess, images), progress=report(0.0))
    seconds = time.perf_counter() - started
    n = len(data.train_labels)
    train, test = features[:n], features[n:]
    probe = fit_linear_probe(train, data.train_labels, len(data.classes), seed=seed, progress=report(0.5))
    held = probe.accuracy(test, data.test_labels) if len(data.test_labels) else None
    return ProbeResult(probe, probe.accuracy(train, data.train_labels), held, seconds, len(images))


@dataclass
class ProbeReadout:
    features: int  # D: the size of the CLS feature the new head reads
    classes: int  # k: the task's classes
    steps: int  # optimiser steps of the fit
    probs: torch.Tensor  # (k,) the new head's probabilities for the traced image
    top: int  # the class it picks for that image


def probe_readout(result: ProbeResult, trace: ViTTrace) -> ProbeReadout:
    """A fitted probe's size, and its answer for the traced image (its CLS feature, trace.final[:, 0])."""
    probe = result.probe
    probs = probe.classify(trace)
    return ProbeReadout(probe.weight.shape[1], len(probe.bias), len(probe.losses), probs, int(probs.argmax()))


@dataclass
class ScratchResult:
    train_accuracy: float
    test_accuracy: float
    steps: int
    batch_size: int
    parameters: int
    seconds: float  # wall time of the training itself
    losses: list[float]


def train_from_scratch(data: FewShotSet, *, steps: int = 100, batch_size: int = 32, seed: int = 0,
                       progress=None) -> ScratchResult:
    """The small ViT of the embedded model (vit_core.train's config and recipe: AdamW, warmup + cosine,
    label smoothing, crop + flip), randomly initialised with `seed` and trained on the same few 28×28
    images for `steps` steps of up to `batch_size` images; accuracy on both sets."""
    from vit_core import train  # training code stays out of the app's import path until it is asked for

    cfg = train.VIT_DEFAULT.with_(num_classes=len(data.classes))
    mean, std = train.pixel_stats(data.train_images)
    with torch.random.fork_rng(devices=[]):  # seed the new weights without moving the caller's RNG
        torch.manual_seed(seed)
        model = train.build_model("vit", cfg)
    batch = min(batch_size, len(data.train_images))
    recipe = {k: v for k, v in train.RECIPE.items() if k != "batch_size"}
    on_pass = (lambda step, loss, s, snapshot: progress(step / steps)) if progress else None
    result = train.fit(model, data.train_images, data.train_labels, steps=steps, seed=seed, mean=mean, std=std,
                       batch_size=batch, progress=False, on_epoch=on_pass, **recipe)
    acc = lambda x, y: train.evaluate(model, x, y, mean, std)[0]  # noqa: E731
    return ScratchResult(acc(data.train_images, data.train_labels), acc(data.test_images, data.test_labels), steps,
                         batch, count_parameters(model), result["wall_s"], result["losses"])


def held_out_per_class(model: ViT) -> int:
    """How many held-out images per class the panel scores: 100 for a small backbone, 20 for a big one
    (each costs one forward pass on a classroom server's CPU)."""
    return 100 if count_parameters(model) < 5_000_000 else 20
