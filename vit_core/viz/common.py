"""Figure builders shared by every page: pure functions from arrays to plotly figures.

One look everywhere: viridis (colour-blind safe, readable in grayscale) for magnitudes, RdBu for
signed values centred on zero, a titled colorbar on the right, fixed scales where the caller compares
layers. Text is drawn by the browser (plotly), so Chinese labels need no server fonts. Callers pass
every label already translated; nothing here knows the language.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"
HIGHLIGHT = "#ff7f0e"  # the selected patch / query: orange reads against viridis and photos
FONT = dict(family="'Source Sans Pro', 'Noto Sans CJK SC', 'PingFang SC', 'Microsoft YaHei', sans-serif", size=15)


def style(fig: go.Figure, *, title: str | None = None, height: int | None = None, **layout) -> go.Figure:
    """The one place figure layout is set: font, margins, title."""
    fig.update_layout(font=FONT, margin=dict(l=10, r=10, t=50 if title else 10, b=10),
                      title=dict(text=title, x=0, xanchor="left", font=dict(size=17)) if title else None,
                      height=height, **layout)
    return fig


def colorbar(title: str) -> dict:
    return dict(title=dict(text=title, side="right"), thickness=14, len=0.9)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def image_uri(img: np.ndarray) -> str:
    """The picture as a data URI the browser decodes itself: kilobytes instead of a JSON number per
    pixel. Lossless PNG for small or flat pictures (Fashion-MNIST, mosaics), WebP at quality 90 for
    photos, whichever is smaller."""
    pil = Image.fromarray(_to_uint8(img))
    best = None
    for fmt, options in (("PNG", dict(optimize=True)), ("WEBP", dict(quality=90, method=4))):
        buf = io.BytesIO()
        pil.save(buf, fmt, **options)
        if best is None or buf.tell() < len(best[1]):
            best = (fmt.lower(), buf.getvalue())
    return f"data:image/{best[0]};base64," + base64.b64encode(best[1]).decode("ascii")


def _image_trace(img: np.ndarray) -> go.Image:
    """An image trace in pixel coordinates (pixel (i, j) centred at x = j, y = i). The browser enlarges
    it with hard pixel edges (plotly's zsmooth=False), so a 28×28 input stays crisp without upsampling."""
    return go.Image(source=image_uri(img), x0=0, dx=1, y0=0, dy=1, hoverinfo="skip")


def _pixel_axes(fig: go.Figure, H: int, W: int) -> None:
    fig.update_xaxes(range=[-0.5, W - 0.5], showgrid=False, zeroline=False, showticklabels=False, constrain="domain")
    fig.update_yaxes(range=[H - 0.5, -0.5], showgrid=False, zeroline=False, showticklabels=False,
                     scaleanchor="x", constrain="domain")


def _picture(img: np.ndarray) -> go.Figure:
    """A figure of the picture on its own pixel axes: pixel (i, j) centred at x = j, y = i, y pointing down."""
    fig = go.Figure(_image_trace(img))
    _pixel_axes(fig, *np.asarray(img).shape[:2])
    return fig


def _grid_lines(fig: go.Figure, grid: tuple[int, int], patch: int, color: str = "rgba(255,255,255,0.75)") -> None:
    h, w = grid
    for r in range(h + 1):
        fig.add_shape(type="line", x0=-0.5, x1=w * patch - 0.5, y0=r * patch - 0.5, y1=r * patch - 0.5,
                      line=dict(color=color, width=1))
    for c in range(w + 1):
        fig.add_shape(type="line", y0=-0.5, y1=h * patch - 0.5, x0=c * patch - 0.5, x1=c * patch - 0.5,
                      line=dict(color=color, width=1))


def _mark_patch(fig: go.Figure, rc: tuple[int, int], patch: int) -> None:
    r, c = rc
    fig.add_shape(type="rect", x0=c * patch - 0.5, x1=(c + 1) * patch - 0.5, y0=r * patch - 0.5,
                  y1=(r + 1) * patch - 0.5, line=dict(color=HIGHLIGHT, width=3))


def _patch_centres(grid: tuple[int, int], patch: int, hover: str) -> go.Scatter:
    """Invisible markers on every patch centre: clicking one selects that patch (customdata = row, col)."""
    h, w = grid
    rows, cols = np.divmod(np.arange(h * w), w)
    return go.Scatter(x=cols * patch + (patch - 1) / 2, y=rows * patch + (patch - 1) / 2, mode="markers",
                      marker=dict(size=max(8, min(40, 400 // max(h, w))), color="rgba(0,0,0,0)", symbol="square"),
                      customdata=np.stack([rows, cols], 1), hovertemplate=hover + "<extra></extra>",
                      showlegend=False)


def image_grid(img: np.ndarray, grid: tuple[int, int] | None = None, patch: int | None = None, *,
               selected: tuple[int, int] | None = None, hover: str = "(%{customdata[0]}, %{customdata[1]})",
               title: str | None = None, height: int | None = None) -> go.Figure:
    """The picture in model pixels, with the P×P grid, the selected patch, and clickable patch centres."""
    fig = _picture(img)
    if grid:
        _grid_lines(fig, grid, patch)
        fig.add_trace(_patch_centres(grid, patch, hover))
        if selected is not None:
            _mark_patch(fig, selected, patch)
    return style(fig, title=title, height=height)


def overlay(img: np.ndarray, values: np.ndarray, patch: int, *, colorbar_title: str, title: str | None = None,
            zmin: float | None = None, zmax: float | None = None, opacity: float = 0.6,
            selected: tuple[int, int] | None = None, hover: str = "%{z:.3f}", height: int | None = None,
            clickable: bool = False) -> go.Figure:
    """A per-patch map (h, w) drawn over the picture, each value covering its P×P patch."""
    values = np.asarray(values, dtype=float)
    fig = _picture(img)
    fig.add_trace(go.Heatmap(z=values, x0=(patch - 1) / 2, dx=patch, y0=(patch - 1) / 2, dy=patch,
                             colorscale=SEQUENTIAL, zmin=zmin, zmax=zmax, opacity=opacity,
                             colorbar=colorbar(colorbar_title), hovertemplate=hover + "<extra></extra>"))
    if clickable:
        fig.add_trace(_patch_centres(values.shape, patch, hover="(%{customdata[0]}, %{customdata[1]})"))
    if selected is not None:
        _mark_patch(fig, selected, patch)
    return style(fig, title=title, height=height)


def heatmap(values: np.ndarray, *, colorbar_title: str, title: str | None = None, diverging: bool = False,
            zmin: float | None = None, zmax: float | None = None, x_title: str | None = None,
            y_title: str | None = None, x: list | None = None, y: list | None = None, hover: str = "%{z:.3f}",
            square: bool = False, height: int | None = None, marks: list[tuple[int, int]] = (),
            max_side: int | None = None) -> go.Figure:
    """A matrix as a heatmap (row 0 at the top). Signed data gets a diverging scale centred on zero.

    Values go to the browser as float32. `max_side` draws at most that many evenly spaced rows and
    columns, labelled with their real indices (a preview of a 197×768 map needs no 151k cells)."""
    values = np.asarray(values, dtype=np.float32)
    if diverging and zmin is None and zmax is None:
        zmax = float(np.abs(values).max()) or 1.0
        zmin = -zmax
    if max_side and max(values.shape) > max_side and x is None and y is None:
        kr, kc = (-(-n // max_side) for n in values.shape)  # ceil: the stride that fits
        y, x = np.arange(0, values.shape[0], kr), np.arange(0, values.shape[1], kc)
        values = values[::kr, ::kc]
    fig = go.Figure(go.Heatmap(z=values, x=x, y=y, colorscale=DIVERGING if diverging else SEQUENTIAL,
                               zmin=zmin, zmax=zmax, zmid=0 if diverging else None,
                               colorbar=colorbar(colorbar_title), hovertemplate=hover + "<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title=y_title)
    fig.update_xaxes(title=x_title, side="bottom")
    if square:
        fig.update_yaxes(scaleanchor="x", constrain="domain")
        fig.update_xaxes(constrain="domain")
    for r, c in marks:
        fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5, line=dict(color=HIGHLIGHT, width=3))
    return style(fig, title=title, height=height)


def stride_for(n: int, max_n: int) -> int:
    """The step k that keeps at most `max_n` of `n` evenly spaced rows or columns (every k-th one)."""
    return max(1, -(-n // max_n))


def bars(labels: list[str], values, *, title: str | None = None, x_title: str | None = None,
         highlight: int | None = None, text_format: str = "{:.1%}", height: int | None = None,
         range_: tuple[float, float] | None = None) -> go.Figure:
    """Horizontal bars, the first label at the top (ranked lists: top-k classes)."""
    values = np.asarray(values, dtype=float)
    colors = [HIGHLIGHT if i == highlight else "#31688e" for i in range(len(values))]
    fig = go.Figure(go.Bar(x=values, y=labels, orientation="h", marker_color=colors,
                           text=[text_format.format(v) for v in values], textposition="auto",
                           hovertemplate="%{y} · %{x:.4f}<extra></extra>"))  # "·": no colon to pick per language
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title=x_title, range=range_)
    return style(fig, title=title, height=height or 60 + 34 * len(labels))


def ranges(labels: list[str], mean, lo, hi, *, title: str | None = None, x_title: str | None = None,
           text_format: str = "{:.2%}", tick_format: str = ".0%", height: int | None = None) -> go.Figure:
    """One dot per label at its mean, with a bar from its lowest to its highest value (seeds), the first
    label at the top. Unlike bars, the axis may start anywhere: only the dots' positions carry meaning."""
    mean, lo, hi = (np.asarray(v, dtype=float) for v in (mean, lo, hi))
    fig = go.Figure(go.Scatter(x=mean, y=labels, mode="markers+text", marker=dict(size=12, color="#31688e"),
                               text=[text_format.format(v) for v in mean], textposition="top center",
                               error_x=dict(type="data", symmetric=False, array=hi - mean, arrayminus=mean - lo, width=8),
                               hovertemplate="%{y} · %{x:.4f}<extra></extra>"))
    fig.update_yaxes(range=[len(labels) - 0.5, -0.8])  # the first label at the top, room above it for its number
    pad = max(0.01, 0.25 * float(hi.max() - lo.min()))  # the dots' neighbourhood, not the axis from zero
    fig.update_xaxes(title=x_title, tickformat=tick_format, range=[float(lo.min()) - pad, float(hi.max()) + pad])
    return style(fig, title=title, height=height or 110 + 60 * len(labels))


def lines(x, series: dict[str, np.ndarray], *, title: str | None = None, x_title: str | None = None,
          y_title: str | None = None, height: int | None = None, y_range=None, dash: dict[str, str] | None = None,
          markers: bool = True, legend_y: float = -0.2) -> go.Figure:
    """Several named curves over the same x (one colour each from a colour-blind safe cycle)."""
    fig = go.Figure()
    for i, (name, ys) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(x), y=np.asarray(ys, dtype=float), name=name,
                                 mode="lines+markers" if markers else "lines",
                                 line=dict(color=PALETTE[i % len(PALETTE)], dash=(dash or {}).get(name, "solid"))))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title, range=y_range)
    return style(fig, title=title, height=height, legend=dict(orientation="h", y=legend_y))


# Okabe & Ito (2008): eight colours distinguishable with every common colour-vision deficiency.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
