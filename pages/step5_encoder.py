"""Step 5: the encoder. Per layer and head: who a patch attends to, softmax(qkᵀ/√d) in numbers, Q/K/V,
all heads at once, Swin-style windows laid on that attention, and what each sub-block adds to the residual stream."""

import streamlit as st

import ui
from vit_core import analysis, experiments as ex
from vit_core.viz.shared import common as viz, encoder as vz

t = ui.t
lv = ui.page("step5", vit_only=True)
tr = lv.trace
s = tr.shapes
p, P, T, L, H, hd = s.prefix, s.P, s.T, s.L, s.heads, s.D // s.heads
labels = ui.token_labels(tr)
att = t("step5.attention")  # the colour bar of every attention map

for formula in vz.encoder_formulas(tokens=T, dim=s.D, depth=L, heads=H, mlp=s.mlp):
    st.latex(formula)
st.info(t("step5.cost", T=T, H=H, L=L, **vars(analysis.attention_cost(T, H, L, s.D))))


@ui.section
def attention():  # layer, head and query patch: changing one reruns this section alone
    layer, head = ui.layer_head_picker(L, H, key="enc")
    r, c = ui.patch_picker(tr)
    a = analysis.attention_readout(tr, layer, head, (r, c))
    where = dict(l=layer + 1, h=head + 1)

    # --- where the query patch and the CLS token look, in this layer and head
    left, right = st.columns(2)
    with left:
        ui.clickable_chart(viz.overlay(lv.display, a.query_map, P, colorbar_title=att, zmin=0, selected=(r, c),
                                       clickable=True, title=t("step5.fig.query", r=r, c=c, **where)),
                           key="step5.query", grid=tr.grid)
        st.caption(t("step5.query.caption", prefix=a.prefix_share))
    with right:
        ui.plot(viz.overlay(lv.display, a.cls_map, P, colorbar_title=att, zmin=0, title=t("step5.fig.cls", **where)),
                key="step5.cls")

    # --- softmax(q·k/√d) for the selected query, in numbers, checked against the model's own weights
    st.subheader(t("step5.softmax.title"))
    st.latex(vz.softmax_formula(tokens=T, head_dim=hd))
    ui.plot(viz.heatmap(a.q_row, colorbar_title=t("step5.value"), diverging=True, height=200, y=["q"],
                        title=t("step5.fig.q", hd=hd, label=labels[a.query]), x_title=t("step5.axis.hd")),
            key="step5.q")
    bars = dict(labels=labels, x_title=t("step5.axis.key", last=T - 1), prefix=p, mark=a.query)
    for col, name, values in zip(st.columns(2), ("score", "weight"), (a.scores, a.weights)):
        with col:  # the scores, then their softmax: one bar per key
            ui.plot(vz.key_bars(values, y_title=t(f"step5.axis.{name}"), hover=t(f"step5.hover.{name}"),
                                title=t(f"step5.fig.{name}s"), **bars), key=f"step5.{name}s")
    ui.table({t("step5.col.key"): [labels[j] for j in a.top], t("step5.col.score"): a.top_scores,
              t("step5.col.weight"): a.top_weights})
    st.success(t("step5.softmax.check", total=f"{a.total:.6f}", diff=f"{a.diff:.1e}"))

    # --- Q, K, V of this head; then every head of the layer at a glance, one colour scale
    st.subheader(t("step5.qkv.title", T=T, hd=hd, **where))
    ui.plot(vz.qkv_heatmaps(a.qkv, labels, prefix_rows=p, mark_row=a.query, colorbar_title=t("step5.value"),
                            x_title=t("step5.axis.hd"), hover=t("step5.hover.token")), key="step5.qkv")
    for col, (name, m) in zip(st.columns(3), a.qkv.items()):
        with col:
            ui.show_tensor(name, m)
    st.subheader(t("step5.heads.title", H=H, l=layer + 1))
    ui.plot(vz.map_grid(a.heads, [t("step5.heads.panel", h=i + 1) for i in range(H)], cols=6, mark=(r, c),
                        colorbar_title=att, hover=t("step5.hover.map")), key="step5.heads")

    # --- Swin-style windows laid on this layer's attention, and the model made to keep to them
    win, shift = ui.window_controls(tr.grid)
    ui.window_panel(lv, ex.window_whatif(tr, win, shift, layer, head, (r, c), ui.windowed_probs(lv, win, shift)))


attention()

# --- the residual stream: what attention and the MLP write into it, layer by layer
st.subheader(t("step5.residual.title"))
rs = analysis.residual_stream(tr)
ui.residual_panel(rs)
st.caption(t("step5.residual.caption"))
ui.show_tensor(t("step5.tensor.norms"), rs.norms)
