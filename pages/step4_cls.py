"""Step 4: prepend the CLS token, add the position embeddings, and follow the CLS token up the layers."""

import streamlit as st

import ui
from vit_core import analysis
from vit_core.viz.shared import common as viz, encoder as vz, steps as vs

t = ui.t
lv = ui.page("step4", vit_only=True)
tr = lv.trace
s = tr.shapes
p, N, T, D, L = s.prefix, s.N, s.T, s.D, s.L
labels = ui.token_labels(tr)

st.latex(vs.sequence_formula(p, N, D))
if p == 2:
    st.info(t("step4.deit"))

# --- the sequence, built in three steps on one colour scale
seq = analysis.token_sequence(lv.model, tr)
patches, sequence, pos, z0, zmax = tr.patch_embeddings[0], seq.sequence, seq.pos, seq.z0, seq.zmax  # (·, D) each
st.subheader(t("step4.build.title"))
stages = {s: t(f"step4.stage.{s}") for s in (1, 2, 3)}
stage = ui.choice(st.segmented_control, t("step4.stage.label"), stages, stages, key="step4.stage", default=1)
heat = dict(colorbar_title=t("step4.value"), x_title=t("step4.axis.dim", D=D), y_title=t("step4.axis.token"),
            hover=t("step4.hover.token"), zmax=zmax)
if (k := viz.stride_for(D, vz.TOKEN_COLUMNS)) > 1:
    st.caption(t("step4.every", k=k, D=D, n=len(range(0, D, k))))
if stage == 1:
    st.caption(t("step4.stage.1.caption", N=N, D=D))
    ui.plot(vz.token_heatmap(patches, labels[p:], title=t("step4.fig.patches", N=N, D=D), **heat), key="step4.seq")
    ui.show_tensor(t("step4.tensor.patches"), patches)
elif stage == 2:
    st.caption(t("step4.stage.2.caption", T=T, D=D, p=p))
    ui.plot(vz.token_heatmap(sequence, labels, prefix_rows=p, title=t("step4.fig.prepended", T=T, D=D), **heat),
            key="step4.seq")
    ui.show_tensor(t("step4.tensor.sequence"), sequence)
else:
    st.caption(t("step4.stage.3.caption", T=T, D=D, diff=seq.build_diff))
    left, right = st.columns(2)
    with left:
        ui.plot(vz.token_heatmap(pos, labels, prefix_rows=p, title=t("step4.fig.pos", T=T, D=D), **heat), key="step4.pos")
    with right:
        ui.plot(vz.token_heatmap(z0, labels, prefix_rows=p, title=t("step4.fig.z0", T=T, D=D), **heat), key="step4.seq")
    ui.show_tensor(t("step4.tensor.z0"), z0)

# --- the CLS vector itself: learned, the same for every image, until attention mixes the image in
st.subheader(t("step4.cls.title", D=D))
st.markdown(t("step4.cls.text", diff=seq.cls_diff))
ui.plot(viz.heatmap(seq.cls_rows, colorbar_title=t("step4.value"), diverging=True, x_title=t("step4.axis.dim", D=D),
                    y=[t("step4.cls.row.param"), t("step4.cls.row.z0"), t("step4.cls.row.final", L=L)],
                    hover=t("step4.hover.vector"), height=260), key="step4.cls")
ui.show_tensor(t("step4.tensor.cls"), seq.cls_rows[0])

# --- how the CLS token changes through the layers
st.subheader(t("step4.layers.title"))
cj = analysis.cls_journey(tr)
depth = list(range(L + 1))
left, right = st.columns(2)
with left:
    ui.plot(viz.lines(depth, {t("step4.series.cls"): cj.cls_norm, t("step4.series.patch"): cj.patch_norm},
                      title=t("step4.fig.norm"), x_title=t("step4.axis.layer"), y_title=t("step4.axis.norm"), height=340),
            key="step4.norm")
with right:
    ui.plot(viz.lines(depth, {t("step4.series.final"): cj.to_final, t("step4.series.previous"): cj.to_previous},
                      title=t("step4.fig.cos"), x_title=t("step4.axis.layer"), y_title=t("step4.axis.cos"),
                      height=340, y_range=[-1.05, 1.05]), key="step4.cos")
st.caption(t("step4.layers.caption"))

st.markdown(t("step4.attn.text"))
ui.plot(vz.map_grid(cj.attention, [t("step4.attn.panel", l=i + 1, share=float(m.sum()))
                                     for i, m in enumerate(cj.attention)],
                    colorbar_title=t("step4.attention"), cols=4, hover=t("step4.hover.map")), key="step4.attn")
ui.show_tensor(t("step4.attn.tensor"), cj.attention)
