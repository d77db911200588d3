"""Figures and exports of the attention rollout lab: pure functions of arrays, no streamlit.

Maps are drawn on a 0..max scale (zero means "none of the CLS token's input came from here"), so a
colour never suggests a negative or a floor that is not there. The PNG export carries no text:
server fonts lack CJK, and a picture without labels reads the same in both languages.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from matplotlib import colormaps
from PIL import Image

from vit_core.viz.common import lines, overlay


def map_overlay(display: np.ndarray, values, patch: int, *, colorbar_title: str, title: str | None = None,
                hover: str = "%{z:.4f}", height: int | None = None) -> go.Figure:
    """A per-patch map (h, w) over the picture, coloured from 0 to the map's own maximum."""
    values = np.asarray(values, dtype=float)
    top = float(values.max()) if values.size and values.max() > 0 else 1.0
    return overlay(display, values, patch, colorbar_title=colorbar_title, title=title, zmin=0.0, zmax=top,
                   hover=hover, height=height)


def curve_figure(fractions, curve, random_curve, *, names: tuple[str, str], title: str, x_title: str,
                 y_title: str, height: int | None = None) -> go.Figure:
    """One faithfulness curve of the map (shaded: the shaded area is its AUC) against a random order (dashed)."""
    fig = lines(fractions, {names[0]: curve, names[1]: random_curve}, title=title, x_title=x_title,
                y_title=y_title, height=height, y_range=[0, 1.02], dash={names[1]: "dash"},
                markers=len(fractions) <= 21)  # dots help on a coarse curve, clutter a fine one
    fig.data[0].update(fill="tozeroy", fillcolor="rgba(0,114,178,0.18)")  # PALETTE[0], translucent
    fig.update_xaxes(range=[0, 1], tickvals=[0, 0.25, 0.5, 0.75, 1], tickformat=".0%", ticklabeloverflow="allow")
    fig.update_layout(margin=dict(r=30))  # room for the "100%" label at the right edge
    return fig


def rollout_formula(*, residual: bool, fusion: str, discard: float, first: int, last: int, heads: int, tokens: int,
                    patches: int, grid: tuple[int, int]) -> tuple[str, str]:
    """Two LaTeX lines: rollout as these settings compute it (layers first..last, counted from 1), and its shapes."""
    x, fused = r"\times", rf"\operatorname{{{fusion}}}_{{h}}\,W_{{\mathrm{{att}},l}}"
    if discard > 0:
        fused = rf"\operatorname{{drop}}_{{{discard:.0%}}}\big({fused}\big)".replace("%", r"\%")
    mixed = rf"0.5\,{fused} + 0.5\,I" if residual else fused
    chain = rf"\tilde A_{{{last}}} \cdots \tilde A_{{{first}}}" if last > first else rf"\tilde A_{{{first}}}"
    return (rf"\tilde A_l = \operatorname{{rownorm}}\big({mixed}\big), \qquad R = {chain}",
            rf"W_{{\mathrm{{att}},l}} \in \mathbb{{R}}^{{{heads}{x}{tokens}{x}{tokens}}}, \quad"
            rf" \tilde A_l,\ R \in \mathbb{{R}}^{{{tokens}{x}{tokens}}}, \quad"
            rf" R_{{\mathrm{{CLS}},\,\mathrm{{patches}}}} \in \mathbb{{R}}^{{{patches}}} \to {grid[0]}{x}{grid[1]}")


def overlay_image(display: np.ndarray, values, patch: int, *, vmax: float | None = None, alpha: float = 0.55,
                  min_side: int = 448) -> np.ndarray:
    """The map in viridis blended over the picture: (H·k, W·k, 3) uint8, enlarged k× so 28 px inputs are visible.

    `display` is (H, W, 3) or (H, W) in [0, 1]; `values` (h, w) with h·P = H, w·P = W; colours run
    from 0 to `vmax` (default: the map's maximum), as in the page's figure.
    """
    img = np.asarray(display, dtype=float)
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    values = np.asarray(values, dtype=float)
    cells = np.kron(values, np.ones((patch, patch)))  # (h, w) -> (H, W): one value per P×P patch
    if cells.shape != img.shape[:2]:
        raise ValueError(f"a {values.shape} map of {patch} px patches does not cover a {img.shape[:2]} picture")
    vmax = float(values.max()) if vmax is None else float(vmax)
    colours = colormaps["viridis"](np.clip(cells / (vmax if vmax > 0 else 1.0), 0, 1))[..., :3]  # (H, W, 3)
    blend = (1 - alpha) * np.clip(img, 0, 1) + alpha * colours
    k = max(1, -(-min_side // min(img.shape[:2])))  # ceil: the shorter side reaches min_side
    blend = blend.repeat(k, axis=0).repeat(k, axis=1)  # hard pixel edges, like the figures
    return (blend * 255).round().astype(np.uint8)


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def map_csv(values, meta: dict) -> str:
    """The map as an h×w grid of numbers, after `# key: value` lines (values JSON-quoted, so a file
    name cannot break a line). Read it back with np.loadtxt(..., delimiter=",", comments="#")."""
    head = [f"# {key}: {json.dumps(value, ensure_ascii=False)}" for key, value in meta.items()]
    rows = [",".join(f"{v:.9g}" for v in row) for row in np.asarray(values, dtype=float)]
    return "\n".join(head + rows) + "\n"


CURVE_COLUMNS = ("fractions", "deletion", "insertion", "random_deletion", "random_insertion")


def curves_table(result: dict) -> dict:
    """The curves and AUCs of experiments.MapComparison.curves as plain lists and floats (for JSON)."""
    table = {name: [float(v) for v in result[name]] for name in CURVE_COLUMNS}
    table.update({name: float(result[name]) for name in result if name.endswith("_auc")})
    return table


def curves_csv(result: dict) -> str:
    """One row per point: fraction of patches changed, then the probability on each curve."""
    cols = [np.asarray(result[name], dtype=float) for name in CURVE_COLUMNS]
    rows = [",".join(f"{v:.9g}" for v in row) for row in zip(*cols)]
    return "\n".join([",".join(CURVE_COLUMNS)] + rows) + "\n"


def export_json(values, meta: dict, curves: dict | None = None) -> str:
    """Settings, the map (a list of h rows) and, when computed, the faithfulness curves."""
    record = dict(meta, map=np.asarray(values, dtype=float).tolist())
    if curves is not None:
        record["faithfulness"] = curves_table(curves)
    return json.dumps(record, ensure_ascii=False, indent=1)


@dataclass
class MapExport:
    values: object  # (h, w) the map the files hold, as shown
    meta: dict  # the files' header: model, image, which map, grid, layers (from 1), class; rollout's own settings
    curves: dict | None  # its faithfulness curves beside random's (MapComparison.curves), when the check ran


def map_export(card, image: str, trace, settings, name: str, values, class_index: int, class_name: str,
               curves: dict | None = None) -> MapExport:
    """What the rollout lab's downloads write for map `name` (occlusion, rollout or gradient) of one class,
    with the lab's settings (analysis.RolloutSettings): the rollout map also records its residual, head
    fusion and discard ratio."""
    end = len(trace.layers) if settings.end_layer is None else settings.end_layer
    meta = {"model": card.title or card.name, "image": image, "map": name, "query_token": "CLS",
            "grid": list(trace.grid), "patch_size": trace.patch_size, "start_layer": settings.start_layer + 1,
            "end_layer": end, "class_index": class_index, "class_name": class_name}
    if name == "rollout":
        meta |= {"residual": settings.residual, "head_fusion": settings.head_fusion,
                 "discard_ratio": round(settings.discard_ratio, 4)}
    return MapExport(values, meta, curves)
