"""Figures for steps 4-6 (CLS token, encoder, classify): pure functions from arrays to plotly figures.

Built on vit_core.viz.common so they look like every other page. Callers pass every label already
translated. Where maps are compared (layers, heads) they share one colour scale and one colorbar.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vit_core.viz.common import DIVERGING, HIGHLIGHT, PALETTE, SEQUENTIAL, colorbar, stride_for, style

PREFIX_COLOR = PALETTE[2]  # bluish green: prefix tokens (CLS, distillation), apart from the orange HIGHLIGHT
PATCH_COLOR = PALETTE[0]


def _token_ticks(labels: list[str], prefix_rows: int, plot_px: float, max_ticks: int) -> tuple[list, list]:
    """Tick positions and texts for a tall token axis: labels at least ~16 px apart, prefix first."""
    T = len(labels)
    gap = -(-16 * T // max(int(plot_px), 1))  # rows per 16 px, rounded up
    step = max(gap, -(-(T - prefix_rows) // max_ticks))
    if gap > 1 and prefix_rows > 1:  # rows too thin to name CLS and DIST apart: one tick for both
        vals, texts = [0], [" · ".join(labels[:prefix_rows])]
    else:
        vals, texts = list(range(prefix_rows)), labels[:prefix_rows]
    patches = [i for i in range(prefix_rows, T, step) if not prefix_rows or i >= prefix_rows - 1 + gap]
    return vals + patches, texts + [labels[i] for i in patches]


def _token_axis(fig: go.Figure, labels: list[str], prefix_rows: int, height: int, max_ticks: int, **kw) -> None:
    # a category axis (one category per token label) so hover shows the row's name without a T×D text array
    vals, texts = _token_ticks(labels, prefix_rows, height - 130, max_ticks)
    fig.update_yaxes(type="category", autorange="reversed", tickvals=[labels[i] for i in vals], ticktext=texts, **kw)


TOKEN_COLUMNS = 256  # features of a token map that reach the browser


def _row_boxes(fig: go.Figure, D: int, prefix_rows: int, mark_row: int | None, **where) -> None:
    if prefix_rows:
        fig.add_shape(type="rect", x0=-0.5, x1=D - 0.5, y0=-0.5, y1=prefix_rows - 0.5,
                      line=dict(color=PREFIX_COLOR, width=3), **where)
    if mark_row is not None:
        fig.add_shape(type="rect", x0=-0.5, x1=D - 0.5, y0=mark_row - 0.5, y1=mark_row + 0.5,
                      line=dict(color=HIGHLIGHT, width=3), **where)


def token_heatmap(values: np.ndarray, labels: list[str], *, colorbar_title: str, x_title: str, y_title: str,
                  hover: str, zmax: float | None = None, prefix_rows: int = 0, mark_row: int | None = None,
                  max_ticks: int = 16, title: str | None = None, height: int | None = None,
                  max_cols: int = TOKEN_COLUMNS) -> go.Figure:
    """A (tokens × features) matrix, one row per token, rows named by `labels`.

    At most `max_cols` evenly spaced features reach the browser (ViT-B/16: every 3rd of 768), each at
    its own index, so the hover names the real dimension.

    Diverging scale centred on zero (±zmax; pass the same zmax to compare figures). Tick labels: the
    prefix rows plus patch rows spaced to stay readable (197 rows fit); hover names every row.
    The first `prefix_rows` rows get a box (the prepended tokens); `mark_row` gets the highlight box.
    `hover` may use %{y} (the row label), %{x} (the column) and %{z} (the value).
    """
    values = np.asarray(values, dtype=np.float32)  # float32 halves what a 197×768 map sends to the browser
    T, D = values.shape
    zmax = zmax or float(np.abs(values).max()) or 1.0
    height = height or max(320, min(560, 120 + 6 * T))
    k = stride_for(D, max_cols)
    fig = go.Figure(go.Heatmap(z=values[:, ::k], x=np.arange(0, D, k), y=labels, colorscale=DIVERGING, zmin=-zmax, zmax=zmax,
                               zmid=0, colorbar=colorbar(colorbar_title), hovertemplate=hover + "<extra></extra>"))
    _token_axis(fig, labels, prefix_rows, height, max_ticks, title=y_title)
    fig.update_xaxes(title=x_title)
    _row_boxes(fig, D, prefix_rows, mark_row)
    return style(fig, title=title, height=height)


def qkv_heatmaps(mats: dict[str, np.ndarray], labels: list[str], *, colorbar_title: str, x_title: str, hover: str,
                 prefix_rows: int = 0, mark_row: int | None = None, max_ticks: int = 16,
                 height: int | None = None) -> go.Figure:
    """Q, K and V of one head side by side: (T × d_head) each, one shared token axis and ONE colour scale."""
    mats = {name: np.asarray(m, dtype=np.float32) for name, m in mats.items()}
    T, d = next(iter(mats.values())).shape
    zmax = max(float(np.abs(m).max()) for m in mats.values()) or 1.0
    height = height or max(320, min(600, 120 + 6 * T))
    fig = make_subplots(rows=1, cols=len(mats), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[f"{name} ({T}×{d})" for name in mats])
    for i, m in enumerate(mats.values()):
        fig.add_trace(go.Heatmap(z=m, y=labels, colorscale=DIVERGING, zmin=-zmax, zmax=zmax, zmid=0,
                                 showscale=i == 0, colorbar=colorbar(colorbar_title),
                                 hovertemplate=hover + "<extra></extra>"), row=1, col=i + 1)
        fig.update_xaxes(title=x_title, row=1, col=i + 1)
        _row_boxes(fig, d, prefix_rows, mark_row, row=1, col=i + 1)
    _token_axis(fig, labels, prefix_rows, height, max_ticks)
    fig.update_annotations(font=dict(size=15))
    style(fig, height=height)
    return fig.update_layout(margin=dict(t=40))


def map_grid(maps: np.ndarray, titles: list[str], *, colorbar_title: str, zmax: float | None = None,
             cols: int = 6, mark: tuple[int, int] | None = None, hover: str = "%{z:.3f}",
             cell_height: int = 170, title: str | None = None) -> go.Figure:
    """Small multiples of K per-patch maps (K, h, w) on ONE colour scale [0, zmax] with one colorbar,
    so the panels can be compared by eye. `mark` outlines one patch (row, col) in every panel."""
    maps = np.asarray(maps, dtype=float)
    K, h, w = maps.shape
    zmax = zmax or float(maps.max()) or 1.0
    cols = min(cols, K)
    rows = -(-K // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=0.12 / rows)
    for i, m in enumerate(maps):
        r, c = divmod(i, cols)
        fig.add_trace(go.Heatmap(z=m, colorscale=SEQUENTIAL, zmin=0, zmax=zmax, showscale=i == 0,
                                 colorbar=colorbar(colorbar_title), hovertemplate=hover + "<extra></extra>"),
                      row=r + 1, col=c + 1)
        if mark is not None:
            fig.add_shape(type="rect", x0=mark[1] - 0.5, x1=mark[1] + 0.5, y0=mark[0] - 0.5, y1=mark[0] + 0.5,
                          line=dict(color=HIGHLIGHT, width=2), row=r + 1, col=c + 1)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed", constrain="domain")
    for i in range(K):  # each panel keeps the grid's aspect ratio (non-square grids too)
        fig.update_yaxes(scaleanchor=f"x{i + 1 if i else ''}", row=i // cols + 1, col=i % cols + 1)
    fig.update_annotations(font=dict(size=14))
    style(fig, title=title, height=60 + rows * cell_height + (40 if title else 0))
    return fig.update_layout(margin=dict(t=80 if title else 40))  # room for the panel titles


def key_bars(values: np.ndarray, labels: list[str], *, y_title: str, x_title: str, hover: str,
             prefix: int = 0, mark: int | None = None, title: str | None = None, height: int = 260) -> go.Figure:
    """One bar per key token (vertical, in token order): prefix keys in their own colour, `mark` highlighted.
    `hover` may use %{text} (the key's label) and %{y} (the value)."""
    values = np.asarray(values, dtype=float)
    colors = [HIGHLIGHT if i == mark else PREFIX_COLOR if i < prefix else PATCH_COLOR for i in range(len(values))]
    fig = go.Figure(go.Bar(x=np.arange(len(values)), y=values, text=labels, textposition="none",
                           marker_color=colors, hovertemplate=hover + "<extra></extra>"))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title)
    return style(fig, title=title, height=height, bargap=0.05)


def grouped_bars(labels: list[str], series: dict[str, np.ndarray], *, x_title: str, title: str | None = None,
                 text_format: str = "{:.2f}", height: int | None = None) -> go.Figure:
    """Horizontal bars, several named values per label (DeiT: CLS head, distillation head, their mean)."""
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        values = np.asarray(values, dtype=float)
        fig.add_trace(go.Bar(x=values, y=labels, name=name, orientation="h", marker_color=PALETTE[i % len(PALETTE)],
                             text=[text_format.format(v) for v in values], textposition="auto",
                             hovertemplate=name + " · %{y} · %{x:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title=x_title)
    return style(fig, title=title, height=height or 90 + 24 * len(series) * len(labels), barmode="group",
                 legend=dict(orientation="h", y=-0.15))


def encoder_formulas(*, tokens: int, dim: int, depth: int, heads: int, mlp: int) -> tuple[str, str]:
    """Two LaTeX lines with this model's sizes: one encoder block (Eq. 2-3) over its layers, and multi-head
    attention (shapes of Q_h, K_hᵀ and A_h) with the MLP's widths."""
    T, D, L, H, hd, x = tokens, dim, depth, heads, dim // heads, r"\times"
    z_in = rf"\underbrace{{z_{{\ell-1}}}}_{{{T}{x}{D}}}"
    block = (rf"z'_\ell = \mathrm{{MSA}}(\mathrm{{LN}}({z_in})) + z_{{\ell-1}}, \qquad"
             rf" z_\ell = \mathrm{{MLP}}(\mathrm{{LN}}(z'_\ell)) + z'_\ell, \qquad \ell = 1 \dots {L}")
    qk = rf"\overbrace{{Q_h}}^{{{T}{x}{hd}}}\,\overbrace{{K_h^\top}}^{{{hd}{x}{T}}}"
    attention = (rf"A_h = \mathrm{{softmax}}\Big(\frac{{{qk}}}{{\sqrt{{{hd}}}}}\Big) \in \mathbb{{R}}^{{{T}{x}{T}}},"
                 rf" \qquad \mathrm{{MSA}} = [A_1 V_1; \dots; A_{{{H}}} V_{{{H}}}]\, W_O, \qquad"
                 rf" \mathrm{{MLP}}: {D} \to {mlp} \xrightarrow{{\mathrm{{GELU}}}} {D}")
    return block, attention


def softmax_formula(*, tokens: int, head_dim: int) -> str:
    """softmax(q·k/√d) for one query over the T keys, in LaTeX with this model's T and d."""
    return (rf"a_j = \frac{{\exp(s_j)}}{{\sum_{{j'=1}}^{{{tokens}}} \exp(s_{{j'}})}}, \qquad"
            rf" s_j = \frac{{q \cdot k_j}}{{\sqrt{{{head_dim}}}}}, \qquad q, k_j \in \mathbb{{R}}^{{{head_dim}}}")
