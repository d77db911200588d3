"""Step 2 · Flatten + project: one patch becomes P²·C numbers, one shared matrix E maps them to D (ViT Eq. 1)."""

import streamlit as st

import ui
from vit_core import analysis
from vit_core.viz.shared import common as viz, steps as vz

t = ui.t
lv = ui.page("step2")
tr = lv.trace
s = tr.shapes
P, N, D, PPC = s.P, s.N, s.D, s.P * s.P * s.C
pj = analysis.patch_projection(lv.model, tr)
weight, E = pj.weight, pj.E  # (D, C, P, P) the conv the model runs; (P²C, D) the same numbers as E


st.latex(vz.projection_formula(PPC, D, N))

left, right = st.columns([2, 3], gap="large")
with left:
    r, c = ui.patch_picker(tr)
    ui.clickable_chart(viz.image_grid(lv.display, tr.grid, P, selected=(r, c), hover=t("step2.grid.hover"),
                                      height=400), key="step2.grid", grid=tr.grid)
k = r * s.w + c  # row-major: the patch's place in the sequence
with right:
    st.subheader(t("step2.flat.title", r=r, c=c, PPC=PPC))
    st.markdown(t("step2.flat.order", C=s.C, P=P, PP=P * P))
    ui.plot(vz.vector_strip(tr.patches[0, k].numpy(), colorbar_title=t("step2.value"),
                            x_title=t("step2.flat.axis"), hover=t("step2.flat.hover")), key="step2.flat")
    ui.show_tensor(t("step2.tensor.patch", r=r, c=c), tr.patches[0, k])
    st.subheader(t("step2.embed.title", D=D))
    ui.plot(vz.vector_strip(tr.patch_embeddings[0, k].numpy(), colorbar_title=t("step2.value"),
                            x_title=t("step2.embed.axis"), hover=t("step2.embed.hover")), key="step2.embed")
    ui.show_tensor(t("step2.tensor.embed", r=r, c=c), tr.patch_embeddings[0, k])

st.subheader(t("step2.E.title", PPC=PPC, D=D))
fig, (rows, cols) = vz.projection_matrix(E.numpy(), colorbar_title=t("step2.weight"), x_title=t("step2.E.x", D=D),
                                   y_title=t("step2.E.y", PPC=PPC))
ui.plot(fig, key="step2.E")
cut = (rows, cols) != (PPC, D)
st.caption(ui.join(t("step2.E.caption"), t("step2.E.cut", rows=rows, cols=cols, R=PPC, C=D) if cut else ""))
ui.show_tensor("E", E)

st.subheader(t("step2.check.title"))
ui.note_metric(t("step2.check.metric"), f"{pj.diff:.2e}", t("step2.check.relative", rel=pj.relative))
(st.success if pj.ok else st.warning)(t(f"step2.check.{'ok' if pj.ok else 'bad'}", N=N, D=D, P=P))
if pj.tf32:
    st.caption(t("step2.check.tf32"))

st.subheader(t("step2.pca.title"))
comps, ratio = ui.embedding_components(lv, weight)
n = len(ratio)
st.markdown(ui.join(t("step2.pca.intro", k=n, PPC=PPC, D=D), t("step2.pca.few", k=n) if n < 28 else ""))
pc, curve = st.columns([3, 2], gap="large")
with pc:
    labels = [t("step2.pca.label", i=i + 1, p=float(v)) for i, v in enumerate(ratio)]
    ui.plot(vz.components_mosaic(comps.numpy(), labels, cols=-(-n // 4), colorbar_title=t("step2.pca.colorbar")),
            key="step2.pca")
    st.caption(t(f"step2.pca.caption.{'rgb' if s.C == 3 else 'gray'}"))
with curve:
    shares = {t("step2.pca.each"): ratio.numpy(), t("step2.pca.total"): ratio.cumsum(0).numpy()}
    ui.plot(viz.lines(range(1, n + 1), shares, x_title=t("step2.pca.x"), y_title=t("step2.pca.y"), y_range=[0, 1.02], height=380),
            key="step2.pca.curve")
    st.caption(t("step2.pca.sum", k=n, p=float(ratio.sum()), p3=float(ratio[:3].sum())))
