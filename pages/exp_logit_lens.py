"""Experiment · Logit lens: the final LayerNorm and the head read off the residual stream after every block."""

import streamlit as st

import ui
from vit_core import experiments as ex
from vit_core.viz.shared import experiments as vz

t = ui.t
lv = ui.page("exp.lens", vit_only=True)
tr = lv.trace
s = tr.shapes
names = lv.class_names()
lens = ex.logit_lens(lv.model, tr)
final = lens.final_class
st.warning(t("exp.lens.caveat"))

# --- the CLS token, depth by depth
top = lens.top_classes(5)
probs = {names[i]: lens.cls_probs[:, i].numpy() for i in top}
rank = lens.final_rank.numpy() + 1  # 1 = top
known = lens.settled_depth
left, right = st.columns(2)
with left:
    ui.plot(vz.depth_lines(probs, x_title=t("exp.lens.depth"), y_title=t("exp.lens.prob"),
                           title=t("exp.lens.fig.probs")), key="exp.lens.probs")
with right:
    ui.plot(vz.depth_lines({names[final]: rank}, x_title=t("exp.lens.depth"), y_title=t("exp.lens.rank"),
                           title=t("exp.lens.fig.rank", name=names[final]), percent=False, reversed_y=True),
            key="exp.lens.rank")
st.caption(t("exp.lens.depth_caption", L=s.L))
m = st.columns(3)
ui.note_metric(t("exp.lens.final"), names[final], f"{float(lens.cls_probs[-1, final]):.1%}", m[0])
m[1].metric(t("exp.lens.known"), str(known), help=t("exp.lens.known_help"))
m[2].metric(t("exp.lens.first_rank"), f"{int(rank[0])} / {len(names)}")
st.success(t("exp.lens.check", L=s.L, diff=f"{lens.final_diff(tr):.1e}"))

# --- every patch token read through the same head, at one depth
st.subheader(t("exp.lens.patches.title"))
st.markdown(t("exp.lens.patches.body", name=names[final]))
depth = st.slider(t("exp.lens.depth"), 0, s.L, key=ui.setting(f"exp.lens.depth.{s.L}", s.L // 2))
left, right = st.columns([3, 2])
with left:
    ui.plot(vz.map_over(lv.display, lens.patch_prob[depth].numpy(), s.P, colorbar_title=t("exp.lens.prob_short"),
                        zmin=0, zmax=1, text=lens.patch_names(depth, names), hover=t("exp.lens.patch_hover"),
                        title=t("exp.lens.fig.patches", d=depth, name=names[final])), key="exp.lens.patches")
with right:
    st.metric(t("exp.lens.patch_agree"), f"{lens.patch_agreement(depth, final):.0%}")
    st.markdown("\n".join(t("exp.lens.patch_class", name=names[c], count=n, N=s.N) for c, n in lens.patch_votes(depth)))
st.caption(t("exp.lens.patches.caption"))
