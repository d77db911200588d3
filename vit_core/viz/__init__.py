"""Pure figure builders (plotly), shared by every page; no streamlit here."""

from vit_core.viz.common import (DIVERGING, HIGHLIGHT, PALETTE, SEQUENTIAL, bars, colorbar, heatmap, image_grid,
                                 lines, overlay, ranges, style)

__all__ = ["DIVERGING", "HIGHLIGHT", "PALETTE", "SEQUENTIAL", "bars", "colorbar", "heatmap", "image_grid", "lines",
           "overlay", "ranges", "style"]
