"""Step 3 · Position embedding: the learned E_pos, how alike its positions are (ViT Fig. 7 centre), and resampling."""

import streamlit as st

import ui
from vit_core import analysis, claims
from vit_core.experiments import VIT_TABLE8
from vit_core.viz.shared import common as viz, steps as vz

t = ui.t
lv = ui.page("step3")
tr = lv.trace
s = tr.shapes
P, h, w, prefix, T, D = s.P, s.h, s.w, s.prefix, s.T, s.D
pos = tr.pos_embed  # (1, T, D): prefix slots first, then the h·w grid row by row

st.latex(vz.position_formula(prefix, tr.grid, D))

r, c = ui.patch_picker(tr)
ref = ui.position_reference(tr, (r, c))  # the picked patch (r, c), or a prefix slot's index
on_grid = isinstance(ref, tuple)
token = prefix + r * w + c if on_grid else ref
name = t("step3.ref.patch", r=r, c=c) if on_grid else ui.slot_name(token)
pre_sims, sims = analysis.pos_embed_row(pos, token, tr.grid, prefix)

left, right = st.columns([2, 3], gap="large")
with left:
    st.subheader(t("step3.map.title", name=name))
    fig = vz.grid_map(sims.numpy(), colorbar_title=t("step3.cosine"), hover=t("step3.map.hover"),
                      selected=ref if on_grid else None)
    ui.clickable_chart(fig, key="step3.map", grid=tr.grid)
    st.caption(t("step3.map.prefix", sims=t("step3.map.sep").join(t("step3.map.item", slot=ui.slot_name(i), v=float(v))
                                                                   for i, v in enumerate(pre_sims))))
    if not on_grid:
        st.caption(t("step3.map.offgrid"))
with right:
    st.subheader(t("step3.all.title", h=h, w=w))
    fig, k = vz.similarity_mosaic(analysis.pos_embed_similarity(pos, tr.grid, prefix).numpy(),
                                  colorbar_title=t("step3.cosine"), selected=(r, c))
    ui.plot(fig, key="step3.all")
    st.caption(ui.join(t("step3.all.caption", h=h, w=w), t("step3.all.cut", k=k) if k > 1 else ""))
ui.show_tensor("E_pos", pos[0])

st.subheader(t("step3.resample.title"))
st.markdown(t("step3.resample.intro", H=s.H, W=s.W, h=h, w=w))
size = ui.grid_size_sliders(tr)
new = analysis.resampled_positions(pos, tr.grid, (size[0] // P, size[1] // P), prefix, ref)
grid_col, numbers = st.columns([3, 2], gap="large")
with grid_col:
    at = t("step3.ref.patch", r=new.cell[0], c=new.cell[1]) if on_grid else name
    ui.plot(vz.grid_map(new.sims.numpy(), colorbar_title=t("step3.cosine"), hover=t("step3.map.hover"),
                        selected=new.cell, title=t("step3.resample.map", H=size[0], W=size[1], name=at)),
            key="step3.resampled")
with numbers:
    st.metric(t("step3.resample.grid"), f"{new.grid[0]} × {new.grid[1]}")
    ui.note_metric(t("step3.resample.n"), f"{new.grid[0] * new.grid[1]:,}", t("step3.resample.was", v=h * w))
    ui.note_metric(t("step3.resample.t"), f"{new.tokens:,}", t("step3.resample.was", v=T))
    st.markdown(t("step3.resample.cls", prefix=prefix, diff=new.prefix_change))
st.info(t("step3.paper"))

# --- trained without them: the position-embedding study
st.subheader(t("step3.ablation.title"))
st.markdown(t("step3.ablation.lead", epochs=claims.SHORT_EPOCHS, n=claims.SIZES[-1]))
ab = claims.ablation("position_embeddings", "position_embeddings")
kinds = [k for k in ("learned", "none", "sincos2d") if k in ab.cells]
if kinds:
    c = [ab.cells[k] for k in kinds]
    names = [t(f"step3.ablation.kind.{k}") for k in kinds]
    ui.plot(viz.ranges(names, [x.mean for x in c], [x.lo for x in c], [x.hi for x in c], title=t("step3.ablation.fig"),
                       x_title=t("step3.ablation.acc")), key="step3.ablation")
    columns = {"kind": names} | claims.variant_table(ab, kinds)
    ui.table({t(f"step3.ablation.col.{k}"): v for k, v in columns.items()})
else:
    st.info(t("step3.ablation.none_yet"))
ui.bullets(claims.position_sentences(ab, VIT_TABLE8["1d"] - VIT_TABLE8["none"], ui.lang()))
