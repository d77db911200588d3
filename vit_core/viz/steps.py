"""Figures for steps 1-3 (patchify, flatten + project, position embedding): pure functions, no streamlit.

Built on vit_core.viz.common so every page looks the same. Every label comes in translated.
Big inputs are cut down here (every k-th row of E, every k-th query of the similarity grid) and the
caller is told by how much, so the page can say so.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vit_core.viz.common import (DIVERGING, HIGHLIGHT, SEQUENTIAL, _picture, _pixel_axes, colorbar, heatmap,
                                 stride_for, style)


def mosaic(tiles: np.ndarray, cols: int, *, gap: int = 1, fill: float = np.nan) -> np.ndarray:
    """Lay n tiles (n, h, w[, c]) out row-major in `cols` columns as one array, `gap` cells of `fill` between.

    Tile i sits at rows (i // cols)·(h+gap) ..., columns (i % cols)·(w+gap) ...; unused slots are `fill`.
    """
    tiles = np.asarray(tiles, dtype=float)
    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *tiles.shape[3:]), fill)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return out


def _fit_height(rows: int, cols: int, width: int, extra: int = 90) -> int:
    """A height that suits a square-celled map of rows × cols drawn about `width` pixels wide."""
    return int(min(1.1 * width, max(240, width * rows / cols + extra)))


# ----------------------------------------------------------------------------- step 1

def patch_pixels(values: np.ndarray, *, channel_titles: list[str], colorbar_title: str,
                 value_range: tuple[float, float], hover: str, height: int | None = None) -> go.Figure:
    """The P×P values of one patch, one panel per channel on one shared scale `value_range` (numbers written when
    they fit)."""
    zmin, zmax = value_range
    values = np.asarray(values, dtype=float)  # (C, P, P)
    C, P, _ = values.shape
    fig = make_subplots(1, C, subplot_titles=channel_titles if C > 1 else None, horizontal_spacing=0.04)
    for ch in range(C):
        fig.add_trace(go.Heatmap(z=values[ch], coloraxis="coloraxis", hovertemplate=hover + "<extra></extra>",
                                 texttemplate="%{z:.2f}" if P <= 8 and C == 1 else None,
                                 textfont=dict(size=13)), 1, ch + 1)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", showticklabels=P <= 8)
    for ch in range(C):
        fig.update_yaxes(scaleanchor=f"x{ch + 1 if ch else ''}", row=1, col=ch + 1)
    fig.update_xaxes(constrain="domain", showticklabels=P <= 8, side="bottom")
    fig.update_layout(coloraxis=dict(colorscale=SEQUENTIAL, cmin=zmin, cmax=zmax, colorbar=colorbar(colorbar_title)))
    return style(fig, height=height or (340 if C == 1 else 250))


# ----------------------------------------------------------------------------- step 2

def vector_strip(values: np.ndarray, *, colorbar_title: str, x_title: str, hover: str = "%{x}: %{z:.3f}",
                 height: int = 200) -> go.Figure:
    """A vector as one row of coloured cells (signed: diverging scale centred on zero)."""
    values = np.asarray(values, dtype=float).reshape(1, -1)
    fig = heatmap(values, colorbar_title=colorbar_title, diverging=True, x_title=x_title, hover=hover, height=height)
    fig.update_traces(colorbar=dict(len=1.1, nticks=5))  # a short figure: fewer ticks, so they do not collide
    fig.update_yaxes(showticklabels=False)
    return fig


def projection_matrix(E: np.ndarray, *, colorbar_title: str, x_title: str, y_title: str, max_side: int = 256,
                      height: int = 460) -> tuple[go.Figure, tuple[int, int]]:
    """E (P²C × D) as a heatmap; a big one is drawn with evenly spaced rows / columns (real indices kept).

    At most max_side rows and columns reach the browser (ViT-B/16: 256 of 768 each, not 590k cells).
    Returns (figure, (rows drawn, columns drawn)).
    """
    E = np.asarray(E, dtype=float)
    kr, kc = stride_for(E.shape[0], max_side), stride_for(E.shape[1], max_side)
    rows, cols = np.arange(0, E.shape[0], kr), np.arange(0, E.shape[1], kc)
    fig = heatmap(E[::kr, ::kc], colorbar_title=colorbar_title, diverging=True, x=cols, y=rows, x_title=x_title,
                  y_title=y_title, hover="E[%{y}, %{x}] = %{z:.4f}", height=height)
    return fig, (len(rows), len(cols))


def components_mosaic(components: np.ndarray, labels: list[str], *, cols: int, colorbar_title: str,
                      height: int = 420) -> go.Figure:
    """Principal components of E as small pictures, row-major, one hover label each (paper Fig. 7 left).

    RGB filters (k, 3, P, P) become colour images, each stretched to its own min..max (a component's
    scale and sign carry no meaning). One-channel filters (k, 1, P, P) use the diverging scale, each
    divided by its own largest |value|, so ±1 is the strongest weight of that component.
    """
    comps = np.asarray(components, dtype=float)
    k, C, P, _ = comps.shape
    gap = max(1, P // 8)
    if C == 3:
        lo = comps.min(axis=(1, 2, 3), keepdims=True)
        hi = comps.max(axis=(1, 2, 3), keepdims=True)
        tiles = ((comps - lo) / np.maximum(hi - lo, 1e-12)).transpose(0, 2, 3, 1)  # (k, P, P, 3) in [0, 1]
        fig = _picture(mosaic(tiles, cols, gap=gap, fill=1.0))
    else:
        tiles = comps.mean(1) / np.maximum(np.abs(comps).max(axis=(1, 2, 3))[:, None, None], 1e-12)  # (k, P, P)
        grid = mosaic(tiles, cols, gap=gap)
        fig = go.Figure(go.Heatmap(z=grid, colorscale=DIVERGING, zmin=-1, zmax=1, zmid=0, hoverinfo="skip",
                                   colorbar=colorbar(colorbar_title)))
        _pixel_axes(fig, *grid.shape)
    idx = np.arange(k)
    fig.add_trace(go.Scatter(x=(idx % cols) * (P + gap) + (P - 1) / 2, y=(idx // cols) * (P + gap) + (P - 1) / 2,
                             mode="markers", marker=dict(size=14, color="rgba(0,0,0,0)"), text=labels,
                             hovertemplate="%{text}<extra></extra>", showlegend=False))
    return style(fig, height=height)


# ----------------------------------------------------------------------------- step 3

def grid_map(values: np.ndarray, *, colorbar_title: str, hover: str, selected: tuple[int, int] | None = None,
             zmin: float = -1, zmax: float = 1, title: str | None = None, height: int | None = None,
             width: int = 460) -> go.Figure:
    """An (h, w) map with a marker on every cell centre (customdata = row, col, value), so a click picks a cell.

    The heatmap itself takes no hover; the markers carry it, so a click always lands on a marker.
    """
    values = np.asarray(values, dtype=float)
    h, w = values.shape
    fig = heatmap(values, colorbar_title=colorbar_title, diverging=True, zmin=zmin, zmax=zmax, square=True,
                  marks=[selected] if selected is not None else (), title=title,
                  height=height or _fit_height(h, w, width, extra=90 if title else 50))
    fig.update_traces(hoverinfo="skip", hovertemplate=None, selector=dict(type="heatmap"))
    rows, cols = np.divmod(np.arange(h * w), w)
    fig.add_trace(go.Scatter(x=cols, y=rows, mode="markers", customdata=np.stack([rows, cols, values.ravel()], 1),
                             marker=dict(size=max(8, min(40, 360 // max(h, w))), color="rgba(0,0,0,0)",
                                         symbol="square"),
                             hovertemplate=hover + "<extra></extra>", showlegend=False))
    fig.update_xaxes(range=[-0.5, w - 0.5], showgrid=False, zeroline=False)
    fig.update_yaxes(range=[h - 0.5, -0.5], showgrid=False, zeroline=False, autorange=None)
    return fig


def similarity_mosaic(sim: np.ndarray, *, colorbar_title: str, selected: tuple[int, int] | None = None,
                      max_side: int = 16, width: int = 640) -> tuple[go.Figure, int]:
    """The whole (h, w, h, w) similarity table as ONE heatmap: tile (i, j) is the map of position (i, j).

    Tiles are h×w maps laid out on the h×w grid with one blank cell between them (paper Fig. 7 centre).
    For grids wider than `max_side` only every k-th query row and column gets a tile. Returns (figure, k).
    """
    sim = np.asarray(sim, dtype=float)
    h, w = sim.shape[:2]
    k = max(stride_for(h, max_side), stride_for(w, max_side))
    shown = sim[::k, ::k]  # (h', w', h, w)
    rows, cols = shown.shape[:2]
    z = mosaic(shown.reshape(rows * cols, h, w), cols)
    fig = go.Figure(go.Heatmap(z=z, colorscale=DIVERGING, zmin=-1, zmax=1, zmid=0, colorbar=colorbar(colorbar_title),
                               hovertemplate="%{z:.2f}<extra></extra>"))
    if selected is not None and selected[0] % k == 0 and selected[1] % k == 0:
        r, c = selected[0] // k, selected[1] // k
        fig.add_shape(type="rect", x0=c * (w + 1) - 1, x1=c * (w + 1) + w, y0=r * (h + 1) - 1, y1=r * (h + 1) + h,
                      line=dict(color=HIGHLIGHT, width=3))
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(autorange="reversed", showticklabels=False, showgrid=False, zeroline=False, scaleanchor="x",
                     constrain="domain")
    return style(fig, height=_fit_height(*z.shape, width, extra=30)), k


def patch_count_formula(H: int, W: int, P: int, grid: tuple[int, int], patch_dim: int) -> str:
    """LaTeX: N = HW/P² with this image's numbers, and the shape of the flattened patches."""
    N = grid[0] * grid[1]
    return (rf"N = \frac{{H \cdot W}}{{P^2}} = \frac{{{H} \cdot {W}}}{{{P}^2}} = {grid[0]} \times {grid[1]} = {N}"
            rf"\qquad x_p \in \mathbb{{R}}^{{N \times (P^2 \cdot C)}} = \mathbb{{R}}^{{{N} \times {patch_dim}}}")


def position_formula(prefix: int, grid: tuple[int, int], dim: int) -> str:
    """LaTeX: z_0 = [prefix tokens; the N projected patches] + E_pos, and E_pos's shape with these numbers."""
    (h, w), x = grid, r"\times"
    lead = r"x_{\mathrm{cls}};\, x_{\mathrm{dist}}" if prefix == 2 else r"x_{\mathrm{cls}}"  # DeiT: two prefix tokens
    return (rf"z_0 = [\,{lead};\, x_p^1 E;\, \dots;\, x_p^{{{h * w}}} E\,] + E_{{pos}}, \qquad "
            rf"E_{{pos}} \in \mathbb{{R}}^{{T {x} D}} = \mathbb{{R}}^{{({prefix} + {h}\cdot{w}) {x} {dim}}}"
            rf" = \mathbb{{R}}^{{{prefix + h * w} {x} {dim}}}")


def projection_formula(patch_dim: int, dim: int, patches: int) -> str:
    """LaTeX: Eq. 1's projection for one patch and for all N, with their shapes."""
    x, PPC, D, N = r"\times", patch_dim, dim, patches
    return (rf"\underbrace{{x_p}}_{{1 {x} {PPC}}} \; \underbrace{{E}}_{{{PPC} {x} {D}}} + \underbrace{{b}}_{{{D}}}"
            rf" = \underbrace{{x_p E + b}}_{{1 {x} {D}}} \qquad "
            rf"\underbrace{{X_p}}_{{{N} {x} {PPC}}} \, E + b = \underbrace{{Z}}_{{{N} {x} {D}}}")


def sequence_formula(prefix: int, patches: int, dim: int) -> str:
    """LaTeX: step 4's z_0 = [prefix tokens; the N projected patches] + E_pos, each part with its shape."""
    x, p, N, D = r"\times", prefix, patches, dim
    lead = r"x_\text{class};\, x_\text{dist}" if p == 2 else r"x_\text{class}"
    return (rf"z_0 = [\,\underbrace{{{lead}}}_{{{p}{x}{D}}};\ \underbrace{{x_p^1 E;\, \dots;\, x_p^{{{N}}} E}}_{{{N}{x}{D}}}\,]"
            rf" + \underbrace{{E_\text{{pos}}}}_{{{p + N}{x}{D}}} \;\in\; \mathbb{{R}}^{{{p + N}{x}{D}}}")
