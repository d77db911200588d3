"""Figures of the experiment pages: pure functions of arrays, no streamlit.

Pictures reach the browser as one compressed image (PNG for small inputs enlarged with hard pixel
edges, JPEG for photos), and per-patch maps as an h×w heatmap over it: a few kB, not an upsampled
array of numbers. Built on vit_core.viz.common, so these pages look like the others. Every label
comes in translated.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from vit_core.viz.common import (DIVERGING, HIGHLIGHT, PALETTE, SEQUENTIAL, _mark_patch, _patch_centres, _pixel_axes,
                                 _to_uint8, colorbar, image_grid, lines, style)


# ----------------------------------------------------------------------------- pictures as images

def image_uri(img: np.ndarray, min_side: int = 224) -> tuple[str, int]:
    """(data URI, k): the picture (H, W[, 3]) enlarged k× with hard pixel edges until its shorter side reaches
    `min_side` (PNG), or as it is when it is already that big (JPEG, a photo)."""
    img = _to_uint8(img)
    k = max(1, -(-min_side // min(img.shape[:2])))
    buf = io.BytesIO()
    if k > 1:
        Image.fromarray(img.repeat(k, 0).repeat(k, 1)).save(buf, format="PNG", optimize=True)
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), k
    Image.fromarray(img).save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), 1


def picture(img: np.ndarray, *, title: str | None = None, height: int | None = None,
            grid: tuple[int, int] | None = None, patch: int | None = None, marks: list[tuple[int, int]] = (),
            hover: str = "(%{customdata[0]}, %{customdata[1]})") -> go.Figure:
    """The picture on pixel axes: pixel (i, j) centred at x = j, y = i, y pointing down (as viz.common).
    With `grid` and `patch`: clickable patch centres (customdata = row, col) and the patches in `marks` outlined."""
    uri, k = image_uri(img)
    fig = go.Figure(go.Image(source=uri, x0=0.5 / k - 0.5, dx=1 / k, y0=0.5 / k - 0.5, dy=1 / k, hoverinfo="skip"))
    _pixel_axes(fig, *np.asarray(img).shape[:2])
    if grid:
        fig.add_trace(_patch_centres(grid, patch, hover))
    for rc in marks:
        _mark_patch(fig, rc, patch)
    return style(fig, title=title, height=height)


def map_over(img: np.ndarray, values, patch: int, *, colorbar_title: str, title: str | None = None,
             diverging: bool = False, zmin: float | None = None, zmax: float | None = None, hover: str = "%{z:.3f}",
             text=None, opacity: float = 0.6, height: int | None = None, clickable: bool = False) -> go.Figure:
    """A per-patch map (h, w) over the picture, each value covering its P×P patch. Signed maps (occlusion)
    use the diverging scale centred on zero; `text` (h, w) strings may be named in `hover` as %{text}.
    `clickable` adds patch-centre markers (customdata = row, col) for ui.clickable_chart."""
    values = np.asarray(values, dtype=float)
    if diverging and zmin is None and zmax is None:
        zmax = float(np.abs(values).max()) or 1.0
        zmin = -zmax
    fig = picture(img, title=title, height=height)
    fig.add_trace(go.Heatmap(z=values, x0=(patch - 1) / 2, dx=patch, y0=(patch - 1) / 2, dy=patch, text=text,
                             colorscale=DIVERGING if diverging else SEQUENTIAL, zmin=zmin, zmax=zmax,
                             zmid=0 if diverging else None, opacity=opacity, colorbar=colorbar(colorbar_title),
                             hovertemplate=hover + "<extra></extra>"))
    if clickable:
        fig.add_trace(_patch_centres(values.shape, patch, hover="(%{customdata[0]}, %{customdata[1]})"))
    return fig


def _box(fig: go.Figure, r0: float, c0: float, size_r: float, size_c: float, color: str, width: float = 3,
         dash: str = "solid") -> None:
    fig.add_shape(type="rect", x0=c0 - 0.5, x1=c0 + size_c - 0.5, y0=r0 - 0.5, y1=r0 + size_r - 0.5,
                  line=dict(color=color, width=width, dash=dash))


# ----------------------------------------------------------------------------- 1. position

def grouped_bars(labels: list[str], series: dict[str, np.ndarray], *, x_title: str, title: str | None = None,
                 height: int | None = None) -> go.Figure:
    """Horizontal bars, one group per label (first at the top), one colour per series, values as percentages."""
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        values = np.asarray(values, dtype=float)
        fig.add_trace(go.Bar(x=values, y=labels, name=name, orientation="h", marker_color=PALETTE[i % len(PALETTE)],
                             text=[f"{v:.1%}" for v in values], textposition="outside", cliponaxis=False,
                             hovertemplate=name + " · %{y}: %{x:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title=x_title, range=[0, 1.15], tickformat=".0%")
    fig = style(fig, title=title, height=height or 150 + 26 * len(labels) * len(series), barmode="group",
                legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom"))  # above the bars, clear of the axis title
    fig.update_layout(margin=dict(t=90 if title else 40))
    return fig


def proof_figure(with_pos: np.ndarray, without_pos: np.ndarray, *, names: tuple[str, str], x_title: str,
                 y_title: str, title: str | None = None, height: int = 340) -> go.Figure:
    """The largest change of the CLS output under each shuffle, with and without E_pos, on a log scale:
    about 1 against float rounding (1e-7)."""
    x = np.arange(1, len(with_pos) + 1)
    fig = go.Figure()
    for i, (name, values) in enumerate(zip(names, (with_pos, without_pos))):
        values = np.maximum(np.asarray(values, dtype=float), 1e-12)  # an exact 0 cannot sit on a log axis
        fig.add_trace(go.Bar(x=x, y=values, name=name, marker_color=PALETTE[i],
                             hovertemplate=name + " · %{x}: %{y:.2e}<extra></extra>"))
    fig.update_yaxes(type="log", title=y_title, exponentformat="power")
    fig.update_xaxes(title=x_title, dtick=1)
    return style(fig, title=title, height=height, barmode="group", legend=dict(orientation="h", y=-0.3))


# ----------------------------------------------------------------------------- 2. logit lens

def depth_lines(series: dict[str, np.ndarray], *, x_title: str, y_title: str, title: str | None = None,
                percent: bool = True, reversed_y: bool = False, height: int = 380) -> go.Figure:
    """Values by depth 0..L (0 = the encoder input), one line per name."""
    depth = np.arange(len(next(iter(series.values()))))
    fig = lines(depth, series, title=title, x_title=x_title, y_title=y_title, height=height,
                y_range=[0, 1.02] if percent else None)
    fig.update_xaxes(dtick=1)
    if percent:
        fig.update_yaxes(tickformat=".0%")
    if reversed_y:  # ranks: whole numbers, 1 at the top
        worst = max(float(np.max(v)) for v in series.values())
        fig.update_yaxes(range=[worst + 0.5, 0.5], dtick=1 if worst <= 12 else None, tickformat="d")
    fig.update_layout(legend=dict(orientation="h", y=-0.3))  # below the axis title
    return fig


# ----------------------------------------------------------------------------- 4. stride and windows

def stride_figure(img: np.ndarray, patch: int, stride: int, grid: tuple[int, int], around: tuple[int, int], *,
                  title: str | None = None, height: int | None = None) -> go.Figure:
    """The picture with the patch at `around` (row, col of the strided grid) and its neighbours outlined in
    different colours, so overlaps (stride < P) show; the dashed box is the area the cut uses."""
    fig = picture(img, title=title, height=height)
    r0, c0 = around
    neighbours = [(r, c) for r in (r0 - 1, r0, r0 + 1) for c in (c0 - 1, c0, c0 + 1)
                  if 0 <= r < grid[0] and 0 <= c < grid[1] and (r, c) != around]
    for i, (r, c) in enumerate(neighbours):
        _box(fig, r * stride, c * stride, patch, patch, PALETTE[i % 6], width=2)
    _box(fig, r0 * stride, c0 * stride, patch, patch, HIGHLIGHT, width=4)
    used = ((grid[0] - 1) * stride + patch, (grid[1] - 1) * stride + patch)
    _box(fig, 0, 0, used[0], used[1], "white", width=1.5, dash="dash")
    return fig


def window_figure(img: np.ndarray, attention, patch: int, window: int, offset: int, query: tuple[int, int], *,
                  colorbar_title: str, title: str | None = None, hover: str = "%{z:.3f}",
                  height: int | None = None) -> go.Figure:
    """A query patch's attention (h, w) over the picture, the window partition drawn on it (white) and the
    query's own window in orange: attention outside the orange box is what a windowed layer cannot give.
    Windows start at k·window − offset patches (experiments.window_offset)."""
    values = np.asarray(attention, dtype=float)
    h, w = values.shape
    fig = map_over(img, values, patch, colorbar_title=colorbar_title, title=title, zmin=0, hover=hover,
                   height=height, clickable=True)
    for r in range(-offset, h, window):
        for c in range(-offset, w, window):
            top, left = max(r, 0), max(c, 0)
            rows, cols = min(r + window, h) - top, min(c + window, w) - left
            if rows > 0 and cols > 0:
                is_query = top <= query[0] < top + rows and left <= query[1] < left + cols
                _box(fig, top * patch, left * patch, rows * patch, cols * patch, HIGHLIGHT if is_query else "white",
                     width=4 if is_query else 1.5)
    _box(fig, query[0] * patch, query[1] * patch, patch, patch, HIGHLIGHT, width=2, dash="dot")
    return fig


def layer_lines(series: dict[str, np.ndarray], *, x_title: str, y_title: str, title: str | None = None,
                height: int = 360) -> go.Figure:
    """Shares by layer 1..L, one line per name, on a 0–100% axis."""
    layers = np.arange(1, len(next(iter(series.values()))) + 1)
    fig = lines(layers, series, title=title, x_title=x_title, y_title=y_title, height=height, y_range=[0, 1.02])
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(tickformat=".0%")
    return fig


# ----------------------------------------------------------------------------- 5. teach it new classes

def examples_montage(images: np.ndarray, labels: np.ndarray, classes: int, per_class: int = 10,
                     gap: int = 2, scale: int = 2) -> np.ndarray:
    """Up to `per_class` images (n, h, w) of each task class on one row each: an (H, W) uint8 picture,
    dark on white as a person draws clothes (the dataset stores them light on black), enlarged `scale`×
    with hard pixel edges."""
    images = np.asarray(images)
    n, h, w = images.shape
    out = np.full((classes * (h + gap) - gap, per_class * (w + gap) - gap), 255, dtype=np.uint8)
    for k in range(classes):
        for j, img in enumerate(images[np.asarray(labels) == k][:per_class]):
            out[k * (h + gap): k * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = 255 - img
    return out.repeat(scale, 0).repeat(scale, 1)


def stride_formula(image_size: tuple[int, int], patch: int, stride: int, num_patches: int) -> str:
    """LaTeX: how many P×P patches a stride S cuts from H×W, with the numbers filled in."""
    (H, W), P, S = image_size, patch, stride
    side = lambda n: rf"\Big(\Big\lfloor\tfrac{{{n}-{P}}}{{{S}}}\Big\rfloor+1\Big)"  # noqa: E731
    return rf"N = {side(H)}{side(W)} = {num_patches}"


def cut_figure(img: np.ndarray, patch: int, stride: int, grid: tuple[int, int], *, title: str | None = None,
               height: int | None = None) -> go.Figure:
    """The picture cut every `stride` pixels into `patch`-sized patches: ViT's plain grid when they tile
    (stride = patch), else the strided cut around the middle patch (`stride_figure`)."""
    if stride == patch:
        return image_grid(img, grid, patch, height=height)
    return stride_figure(img, patch, stride, grid, (grid[0] // 2, grid[1] // 2), title=title, height=height)
