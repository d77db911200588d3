"""How far a model reaches: attention distance, CNN receptive fields (theoretical), effective receptive
fields (gradients) of a ViT token and a CNN unit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from vit_core.analysis.common import _check_grid, _normalise_rows, _per_layer
from vit_core.card import Preprocess
from vit_core.cnn import layer_specs

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


# ----------------------------------------------------------------------------- the CNN page's sections, one result each

REFERENCE_VIEW = Preprocess(size=(224, 224), resize="shorter_crop", crop_pct=1.0)  # what ResNet-50 / VGG-16 see


def patch_centre(patch: tuple[int, int], grid: tuple[int, int]) -> tuple[float, float]:
    """The centre of patch (r, c) of an h×w grid, as fractions of the image height and width."""
    return (patch[0] + 0.5) / grid[0], (patch[1] + 0.5) / grid[1]


@dataclass
class Network:
    """A network of the receptive-field section, with the picture at its own input size."""

    key: str  # "resnet", "vgg", "cnn" (the project's CNN): the page's widget and figure ids
    name: str  # "ResNet-50", "VGG-16"; "" for the project's CNN, whose name is translated
    layers: list[tuple]  # (name, kernel, stride, dilation[, padding]) as receptive_field reads them
    default: str  # the layer shown first
    view: np.ndarray  # (H, W, 3) in [0, 1]: the picture as this network sees it

    @property
    def names(self) -> list[str]:
        return [layer[0] for layer in self.layers]

    @property
    def side(self) -> int:
        return max(self.view.shape[:2])


def reach_networks(image, cnn_card=None) -> dict[str, Network]:
    """ResNet-50 and VGG-16 on a 224×224 view of `image` (PIL), and, when its card is given, the project's CNN
    on its own input (its middle layer shown first): the networks the CNN page compares, by key."""
    view224 = np.asarray(REFERENCE_VIEW.image(image), dtype=np.float32) / 255.0
    nets = {"resnet": Network("resnet", "ResNet-50", RESNET50_LAYERS, "layer2.3.conv3", view224),
            "vgg": Network("vgg", "VGG-16", VGG16_LAYERS, "pool3", view224)}
    if cnn_card:
        specs = layer_specs(cnn_card.config)
        view = cnn_card.preprocess.to_display(cnn_card.preprocess(image))
        nets["cnn"] = Network("cnn", "", specs, specs[len(specs) // 2][0], view)
    return nets


@dataclass
class FieldOnImage:
    """One network's chosen layer: the receptive field of its unit nearest the centre of the chosen ViT patch."""

    index: int  # the layer's place in the network (0 = first)
    field: RF  # its receptive field
    previous: RF  # the layer before (for the first: the input pixel, r = j = 1)
    kernel: int  # the layer's kernel and dilation (the recurrence's k_l and d_l)
    dilation: int
    size: tuple[int, int]  # (H, W) of the network's input
    span_y: tuple[float, float, float]  # (centre, low, high) of the unit's field down the image (rf_span)
    span_x: tuple[float, float, float]  # ... and across
    patch_box: tuple[tuple[float, float], tuple[float, float]]  # the ViT patch on this input: (rows, cols)
    rfs: list[int]  # every layer's receptive field, in order (the curve by depth)

    @property
    def side(self) -> int:
        return max(self.size)

    @property
    def cover(self) -> float:
        """The share of the longer input side the field spans, at most 1."""
        return min(1.0, self.field.rf / self.side)


def field_on_image(net: Network, layer: str, patch: tuple[int, int], grid: tuple[int, int]) -> FieldOnImage:
    """Layer `layer` of `net`, for the unit under the centre of patch (r, c) of a ViT's h×w grid."""
    fields = receptive_field(net.layers)
    k = net.names.index(layer)
    (r, c), (h, w), (H, W) = patch, grid, net.view.shape[:2]
    fy, fx = patch_centre(patch, grid)
    f = fields[k]
    box = ((r / h * H, (r + 1) / h * H), (c / w * W, (c + 1) / w * W))
    previous = fields[k - 1] if k else RF("input", 1, 1, 0.5)
    return FieldOnImage(index=k, field=f, previous=previous, kernel=net.layers[k][1], dilation=net.layers[k][3],
                        size=(H, W), span_y=rf_span(fy * H, f, H), span_x=rf_span(fx * W, f, W), patch_box=box,
                        rfs=[x.rf for x in fields])


@dataclass
class AttentionReach:
    """How far the ViT's heads look, in pixels (the CNN page, section 2). The numbers the text reads come
    from `measured`: the sample set's average when there is one (it speaks for the model), else this image."""

    current: np.ndarray  # (L, heads) mean attention distance on the current image
    average: np.ndarray | None  # (L, heads) the mean over a set of sample images; None without one
    ceiling: float  # what uniform attention reaches on this grid
    first: tuple[float, float]  # the nearest- and farthest-looking heads of the first layer
    last: tuple[float, float]  # ... and of the last
    first_share: tuple[float, float]  # `first` as shares of the ceiling
    first_mean: float  # the mean over the heads of the first layer
    last_mean: float  # ... and of the last
    trend: str  # "up", "down" or "flat": the last layer's mean against the first's, 5 % of the ceiling apart

    @property
    def measured(self) -> np.ndarray:
        return self.average if self.average is not None else self.current


def attention_reach(trace, samples=None) -> AttentionReach:
    """Mean attention distance of `trace` by layer and head, beside `samples` (S, L, heads) from
    sample_attention_distances (None: no sample set), and the numbers that describe it."""
    current = mean_attention_distance(trace.attentions, trace.grid, trace.patch_size,
                                      num_prefix_tokens=trace.num_prefix_tokens)[0].cpu().numpy()
    average = None if samples is None else np.asarray(samples).mean(0)
    ceiling = uniform_attention_distance(trace.grid, trace.patch_size)
    d = average if average is not None else current
    m0, m1 = float(d[0].mean()), float(d[-1].mean())
    trend = "up" if m1 - m0 > 0.05 * ceiling else "down" if m0 - m1 > 0.05 * ceiling else "flat"
    first, last = (float(d[0].min()), float(d[0].max())), (float(d[-1].min()), float(d[-1].max()))
    return AttentionReach(current=current, average=average, ceiling=ceiling, first=first, last=last,
                          first_share=(first[0] / ceiling, first[1] / ceiling), first_mean=m0, last_mean=m1,
                          trend=trend)


def same_input(vit_card, cnn_card) -> bool:
    """Whether the CNN reads what the ViT reads (channels and input size): only then are their gradients
    put side by side, like with like. False without a CNN card."""
    if not cnn_card:
        return False
    vit, cnn = vit_card.config, cnn_card.config
    return (vit.in_chans, tuple(vit.image_size)) == (cnn["in_chans"], tuple(cnn["image_size"]))


@dataclass(frozen=True)
class ErfPlan:
    """Which gradients the ERF section needs: one ViT token at some blocks, and the CNN at one point."""

    block: int  # the ViT block shown, 1..L
    depth: int  # L
    token: int  # the chosen patch's token (prefix tokens count)
    blocks: tuple[int, ...]  # the blocks measured: all L beside the CNN (its curve by depth), else `block`
    centre: tuple[float, float] | None  # the patch centre (fractions of H, W) the CNN's units sit at; None: no CNN
    patch_box: tuple[tuple[int, int], tuple[int, int]]  # the chosen patch in input pixels: (rows, cols)


def erf_plan(shapes, layer: int, patch: tuple[int, int], *, vit_card, cnn_card=None) -> ErfPlan:
    """The plan for block layer + 1 (`layer` counts from 0, as the layer slider's state) and patch (r, c),
    from the trace's `shapes`; the CNN takes part only when it reads the same input (same_input)."""
    (r, c), P = patch, shapes.P
    beside = same_input(vit_card, cnn_card)
    return ErfPlan(block=layer + 1, depth=shapes.L, token=shapes.prefix + r * shapes.w + c,
                   blocks=tuple(range(1, shapes.L + 1)) if beside else (layer + 1,),
                   centre=patch_centre(patch, (shapes.h, shapes.w)) if beside else None,
                   patch_box=((r * P, (r + 1) * P), (c * P, (c + 1) * P)))


@dataclass
class ErfReach:
    """The ViT's ERF at the chosen block and, beside it, the CNN's at the same relative depth (section 3)."""

    plan: ErfPlan
    maps: np.ndarray  # (len(plan.blocks), H, W) the ViT's ERF at each measured block, each divided by its peak
    fractions: np.ndarray  # (len(plan.blocks),) the share of the pixels each reaches (erf_fraction)
    cnn: CnnErfs | None  # the CNN's at every conv layer; None when it does not read the same input
    cnn_fractions: np.ndarray | None  # (n,) the share each CNN layer's map reaches
    cnn_index: int | None  # the CNN layer at the chosen block's relative depth

    @property
    def map(self) -> np.ndarray:
        return self.maps[self.plan.blocks.index(self.plan.block)]

    @property
    def fraction(self) -> float:
        return float(self.fractions[self.plan.blocks.index(self.plan.block)])

    @property
    def cnn_map(self) -> np.ndarray | None:
        return None if self.cnn is None else self.cnn.maps[self.cnn_index].numpy()


def erf_reach(plan: ErfPlan, maps, cnn: CnnErfs | None = None) -> ErfReach:
    """The plan's ViT maps (len(plan.blocks), H, W; vit_erfs divided by their peaks) and the CNN's (cnn_erf_layers
    at plan.centre), with the shares they reach, the CNN layer paired to block b of L being the
    round(b·n / L)-th of its n (at least the first)."""
    maps = np.asarray(maps)
    fractions = erf_fraction(maps).numpy()
    if cnn is None:
        return ErfReach(plan, maps, fractions, None, None, None)
    n = len(cnn.names)
    k = min(n, max(1, round(plan.block * n / plan.depth))) - 1
    return ErfReach(plan, maps, fractions, cnn, erf_fraction(cnn.maps).numpy(), k)
