"""Figures of the "CNN vs ViT reach" page: receptive fields, attention distances, ERFs, data efficiency.

Pure functions from arrays to plotly figures, built on `vit_core.viz.common`; every label arrives
translated. Coordinates are input pixels, pixel i spanning [i, i+1) as in `analysis.receptive_field`;
plotly's image puts pixel i's centre at i, so a span [lo, hi) is drawn from lo - 0.5 to hi - 0.5.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from vit_core.viz.common import HIGHLIGHT, PALETTE, image_grid, overlay, style


def _box(fig: go.Figure, ys: tuple[float, float], xs: tuple[float, float], *, color: str = HIGHLIGHT,
         dash: str = "solid", width: int = 3, name: str | None = None) -> None:
    fig.add_shape(type="rect", x0=xs[0] - 0.5, x1=xs[1] - 0.5, y0=ys[0] - 0.5, y1=ys[1] - 0.5, name=name,
                  line=dict(color=color, width=width, dash=dash))


def _ring(fig: go.Figure, ys, k: int | None, *, size: int) -> None:
    """A hollow ring around point k of a by-layer curve (layer k + 1): the selected layer; none when k is None."""
    if k is not None:
        fig.add_trace(go.Scatter(x=[k + 1], y=[ys[k]], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker=dict(size=size, color="rgba(0,0,0,0)", line=dict(color=HIGHLIGHT, width=3))))


def rf_on_image(img: np.ndarray, span_y: tuple[float, float, float], span_x: tuple[float, float, float], *,
                title: str, hover: str, patch_box: tuple[tuple[float, float], tuple[float, float]] | None = None,
                height: int = 360) -> go.Figure:
    """The image with one unit's receptive field: `span_*` = (centre, low, high) from `analysis.rf_span`.

    The orange square is the field clipped to the image; the dot is the unit's centre; `patch_box`
    ((y0, y1), (x0, x1)) outlines the selected ViT patch, so the two scales can be compared.
    """
    fig = image_grid(img, height=height, title=title)
    if patch_box is not None:
        _box(fig, *patch_box, color="white", dash="dot", width=2, name="patch")
    _box(fig, span_y[1:], span_x[1:], name="rf")
    fig.add_trace(go.Scatter(x=[span_x[0] - 0.5], y=[span_y[0] - 0.5], mode="markers", showlegend=False,
                             marker=dict(color=HIGHLIGHT, size=10, line=dict(color="black", width=1)),
                             hovertemplate=hover + "<extra></extra>"))
    return fig


def rf_by_depth(curves: dict[str, tuple[list[str], list[int]]], *, references: dict[str, float],
                selected: dict[str, int], title: str, x_title: str, y_title: str,
                hover: str = "%{customdata}: %{y} px", height: int = 420) -> go.Figure:
    """Receptive field (log scale) against layer number, one curve per network, the selected layer of each
    ringed, and dashed reference lines (the input sides) so "the field covers the image" is visible.
    `hover` is the translated text after the network's name (%{customdata} the layer, %{y} its field)."""
    fig = go.Figure()
    for i, (name, (layers, rfs)) in enumerate(curves.items()):
        x = np.arange(1, len(rfs) + 1)
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=x, y=rfs, name=name, mode="lines+markers", customdata=layers,
                                 line=dict(color=color), marker=dict(size=5),
                                 hovertemplate=f"{name} · {hover}<extra></extra>"))
        _ring(fig, rfs, selected.get(name), size=16)
    longest = max(len(rfs) for _, rfs in curves.values())
    for j, (label, value) in enumerate(references.items()):  # traces, not add_hline: shapes on a log axis want log10(y)
        fig.add_trace(go.Scatter(x=[1, longest], y=[value, value], mode="lines+text", name=label,
                                 text=["", label], textposition="top left", textfont=dict(size=14, color="#444"),
                                 line=dict(color="#555", dash="dash" if j == 0 else "dot", width=2),
                                 hovertemplate=label + "<extra></extra>", showlegend=False))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title, type="log", tickvals=[1, 3, 10, 30, 100, 300, 1000])
    return style(fig, title=title, height=height, legend=dict(orientation="h", y=-0.25))


def attention_distance(current: np.ndarray, average: np.ndarray | None, ceiling: float, *, names: dict[str, str],
                       title: str, x_title: str, y_title: str, height: int = 420) -> go.Figure:
    """Mean attention distance of every head at every layer (ViT paper Fig. 7 right).

    `current` and `average` are (L, heads) in pixels: the current image (filled dots) and the mean over
    a sample set (hollow diamonds, with their mean over heads as a line). `names` has the legend and
    hover labels: current, average, mean, ceiling, head, and unit (the word for pixels; "px" if absent).
    """
    L, H = current.shape
    layers = np.repeat(np.arange(1, L + 1), H)  # (L·H,) layer of each point
    heads = np.tile(np.arange(1, H + 1), L)
    hover = f"{names['head']} %{{customdata}} · %{{y:.1f}} {names.get('unit', 'px')}<extra></extra>"
    fig = go.Figure()
    if average is not None:
        fig.add_trace(go.Scatter(x=layers + 0.15, y=average.reshape(-1), customdata=heads, mode="markers",
                                 name=names["average"], hovertemplate=names["average"] + " · " + hover,
                                 marker=dict(symbol="diamond-open", size=10, color=PALETTE[1], line=dict(width=2))))
        fig.add_trace(go.Scatter(x=np.arange(1, L + 1), y=average.mean(1), mode="lines", name=names["mean"],
                                 line=dict(color=PALETTE[1], width=2), hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=layers - 0.15, y=current.reshape(-1), customdata=heads, mode="markers",
                             name=names["current"], hovertemplate=names["current"] + " · " + hover,
                             marker=dict(size=9, color=PALETTE[0], opacity=0.85)))
    fig.add_hline(y=ceiling, line=dict(color="#555", dash="dash", width=2), annotation_text=names["ceiling"],
                  annotation_position="bottom right", annotation_font_size=14)
    top = max(ceiling, float(current.max()), float(average.max()) if average is not None else 0.0)
    fig.update_xaxes(title=x_title, tickmode="linear", dtick=1)
    fig.update_yaxes(title=y_title, range=[0, top * 1.12])
    return style(fig, title=title, height=height, legend=dict(orientation="h", y=-0.25))


def erf_map(img: np.ndarray, erf: np.ndarray, *, title: str, colorbar_title: str, hover: str,
            patch_box: tuple[tuple[float, float], tuple[float, float]] | None = None,
            rf_box: tuple[tuple[float, float], tuple[float, float]] | None = None, height: int = 380) -> go.Figure:
    """An ERF (H, W), already divided by its max, over the input on the fixed 0..1 scale.

    As in `rf_on_image`, so that a colour means one thing on the page: `rf_box` is the theoretical
    receptive field (orange), which the gradient never leaves; `patch_box` the chosen patch (white, dotted).
    """
    fig = overlay(img, erf, 1, colorbar_title=colorbar_title, title=title, zmin=0.0, zmax=1.0, opacity=0.7,
                  hover=hover, height=height)
    if rf_box is not None:
        _box(fig, *rf_box, name="rf")
    if patch_box is not None:
        _box(fig, *patch_box, color="white", dash="dot", width=2, name="patch")
    return fig


def erf_by_depth(series: dict[str, np.ndarray], *, selected: dict[str, int], title: str, x_title: str,
                 y_title: str, hover: str = "%{x}: %{y:.1f}%", height: int = 380) -> go.Figure:
    """Share of the image each model's gradient reaches (%) against layer number, selected layers ringed.
    `hover` is the translated text after the model's name (%{x} the layer, %{y} the share)."""
    fig = go.Figure()
    for i, (name, ys) in enumerate(series.items()):
        x = np.arange(1, len(ys) + 1)
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=x, y=ys, name=name, mode="lines+markers", line=dict(color=color, width=3),
                                 hovertemplate=f"{name} · {hover}<extra></extra>"))
        _ring(fig, ys, selected.get(name), size=18)
    fig.update_xaxes(title=x_title, tickmode="linear", dtick=1)
    fig.update_yaxes(title=y_title, range=[0, 105], ticksuffix="%")
    return style(fig, title=title, height=height, legend=dict(orientation="h", y=-0.25))


def data_efficiency(runs: list[dict], summary: dict, *, names: dict[str, str], title: str, x_title: str,
                    y_title: str, height: int = 440) -> go.Figure:
    """Test accuracy against training-set size (log x): every seed as a point, the mean as a line.

    `runs` and `summary` are `assets/data_efficiency.json`'s; `names` maps a model key ("vit", "cnn")
    to its label, and has "seed" and "mean", the hover texts after a label (%{customdata} the seed, %{y} the
    accuracy in %). Each trace's legendgroup is the model key.
    """
    fig = go.Figure()
    for i, (model, label) in enumerate((k, v) for k, v in names.items() if k in summary):
        color = PALETTE[i % len(PALETTE)]
        mine = [r for r in runs if r["model"] == model]
        seed_hover = f"{label} · {names['seed']}<extra></extra>"
        fig.add_trace(go.Scatter(x=[r["train_size"] for r in mine], y=[100 * r["test_accuracy"] for r in mine],
                                 customdata=[r["seed"] for r in mine], mode="markers", name=label,
                                 legendgroup=model, showlegend=False, marker=dict(color=color, size=9, opacity=0.55),
                                 hovertemplate=seed_hover))
        sizes = sorted(summary[model], key=int)
        cells = [summary[model][s] for s in sizes]
        fig.add_trace(go.Scatter(x=[int(s) for s in sizes], y=[100 * c["mean"] for c in cells],
                                 error_y=dict(type="data", symmetric=False, array=[100 * (c["max"] - c["mean"]) for c in cells],
                                              arrayminus=[100 * (c["mean"] - c["min"]) for c in cells], width=6),
                                 mode="lines+markers", name=label, legendgroup=model,
                                 line=dict(color=color, width=3), marker=dict(size=7, symbol="square"),
                                 hovertemplate=f"{label} · {names['mean']}<extra></extra>"))
    # ticks at the measured sizes, written out in full ("10,000", not plotly's "10k") in either language
    fig.update_xaxes(title=x_title, type="log", tickvals=sorted({r["train_size"] for r in runs}), tickformat=",")
    fig.update_yaxes(title=y_title, ticksuffix="%")
    return style(fig, title=title, height=height, legend=dict(orientation="h", y=-0.25))


def gap_by_size(sizes: list[int], mean: list[float], lo: list[float], hi: list[float], *, title: str, x_title: str,
                y_title: str, hover: str, height: int = 340) -> go.Figure:
    """One difference (in points) per training-set size, with bars from its lowest to its highest seed."""
    fig = go.Figure(go.Scatter(x=sizes, y=mean, mode="lines+markers", marker=dict(size=9, color=PALETTE[3]),
                               line=dict(color=PALETTE[3], width=2), hovertemplate=hover + "<extra></extra>",
                               error_y=dict(type="data", symmetric=False, array=[h - m for h, m in zip(hi, mean)],
                                            arrayminus=[m - lo_ for m, lo_ in zip(mean, lo)], width=6)))
    fig.add_hline(y=0, line=dict(color="#888", width=1, dash="dot"))
    fig.update_xaxes(title=x_title, type="log", tickvals=sizes, tickformat=",")
    fig.update_yaxes(title=y_title, zeroline=False)
    return style(fig, title=title, height=height)


def compute_by_size(sizes: list[int], cpu_s: dict[str, list[tuple[float, ...]]], *, title: str, x_title: str,
                    y_title: str, hover: str, height: int = 340) -> go.Figure:
    """CPU minutes of one training run per training-set size (log-log), a line per model: `cpu_s` maps a model's
    label to its runs' CPU seconds at each size; the mean over its seeds, bars from the cheapest to the dearest."""
    fig, every = go.Figure(), []
    for i, (label, row) in enumerate(cpu_s.items()):
        minutes = [[s / 60 for s in runs] for runs in row]
        every += [m for runs in minutes for m in runs]
        mean = [sum(m) / len(m) for m in minutes]
        fig.add_trace(go.Scatter(x=sizes, y=mean, mode="lines+markers", name=label, line=dict(color=PALETTE[i], width=2),
                                 marker=dict(size=8), hovertemplate=f"{label} · {hover}<extra></extra>",
                                 error_y=dict(type="data", symmetric=False, width=6,
                                              array=[max(m) - a for m, a in zip(minutes, mean)],
                                              arrayminus=[a - min(m) for m, a in zip(minutes, mean)])))
    fig.update_xaxes(title=x_title, type="log", tickvals=sizes, tickformat=",")
    ticks = [m * 10 ** e for e in range(-2, 6) for m in (1, 2, 5)]  # 1-2-5 steps, written out in full: a label
    ticks = [v for v in ticks if min(every) / 2 <= v <= 2 * max(every)]  # "5" between 10 and 100 reads as five
    fig.update_yaxes(title=y_title, type="log", tickvals=ticks, ticktext=[f"{v:,g}" for v in ticks])
    return style(fig, title=title, height=height, legend=dict(orientation="h", y=-0.3))


# ----------------------------------------------------------------------------- the formulas beside the figures (LaTeX)

X = r"\times"


def rf_formula(network: str, at) -> str:
    """The receptive-field recurrence with the numbers of one network's chosen layer filled in
    (`at`: analysis.FieldOnImage); `network` is the network's name as shown."""
    prev = at.previous
    return (r"r_l = r_{l-1} + (k_l - 1)\, d_l\, j_{l-1}, \quad j_l = j_{l-1}\, s_l \qquad \text{" + network
            + r"}:\ r = " + f"{prev.rf} + ({at.kernel} - 1) \\cdot {at.dilation} \\cdot {prev.jump} = {at.field.rf}")


def distance_formula(grid: tuple[int, int], patch: str, uniform: str, ceiling: str) -> str:
    """Mean attention distance as a sum, with this grid's N; `patch` and `ceiling` are the patch size and
    uniform attention's distance as shown (with their unit), `uniform` the word under the ceiling's d."""
    h, w = grid
    return (r"\bar d_{l,h} = \frac{1}{N} \sum_{q=1}^{N} \sum_{k=1}^{N} a^{l,h}_{qk}\, \lVert p_q - p_k \rVert"
            + rf"\qquad N = {h}{X}{w} = {h * w},\ P = \text{{{patch}}},\ "
            + rf"\bar d_{{\text{{{uniform}}}}} = \text{{{ceiling}}}")


def erf_formula(height: int, width: int) -> str:
    """The effective receptive field as a gradient, with the input's H × W."""
    return (r"\mathrm{ERF}(x, y) = \sum_{c} \left| \frac{\partial\, \textstyle\sum_{d} z_{d}(\text{pos})}{\partial\, "
            + r"\mathrm{pixel}_{c}(x, y)} \right|" + rf"\qquad H {X} W = {height}{X}{width}")


__all__ = ["attention_distance", "data_efficiency", "distance_formula", "gap_by_size", "erf_by_depth", "erf_formula",
           "erf_map", "rf_by_depth", "rf_formula", "rf_on_image"]
