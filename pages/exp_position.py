"""Experiment · Does position matter? Shuffle the patches with E_pos and with zeros in its place."""

import streamlit as st

import ui
from vit_core import data, experiments as ex
from vit_core.viz.shared import experiments as vz

t = ui.t
lv = ui.page("exp.position", vit_only=True)
tr = lv.trace
s = tr.shapes
names = lv.class_names()


# --- the learner's shuffle
modes = {"random": t("exp.position.mode.random"), "swap": t("exp.position.mode.swap")}
mode = ui.choice(st.radio, t("exp.position.mode"), modes, modes, key="exp.position.mode", default="random",
                 horizontal=True)
if mode == "random":
    seed = st.number_input(t("exp.position.seed"), 0, 9999, key=ui.setting("exp.position.seed", 1))
    perm = ex.random_perms(s.N, 1, seed=int(seed))[0]
    first, r2, c2 = (0, 0), 0, 0
else:
    first = ui.patch_picker(tr)
    st.caption(t("exp.position.swap_with"))
    c = st.columns(2)
    r2 = c[0].number_input(t("exp.position.swap_row", h=s.h - 1), 0, s.h - 1, key=ui.setting("exp.position.r2", 0))
    c2 = c[1].number_input(t("exp.position.swap_col", w=s.w - 1), 0, s.w - 1, key=ui.setting("exp.position.c2", 0))
    perm = ex.swap_perm(s.N, first[0] * s.w + first[1], int(r2) * s.w + int(c2))
res = ui.position_shuffles(lv, perm)  # the learner's shuffle and seeded ones, with E_pos and without

left, right = st.columns(2)
with left:
    swap = dict(grid=tr.grid, patch=s.P, marks=[first, (int(r2), int(c2))]) if mode == "swap" else {}
    ui.clickable_chart(vz.picture(lv.display, title=t("exp.position.fig.original"), **swap), key="exp.position.original",
                       grid=tr.grid)
with right:
    ui.plot(vz.picture(lv.card.preprocess.to_display(res.shuffled), title=t("exp.position.fig.shuffled", n=res.moved)),
            key="exp.position.shuffled")

# --- what the model predicts, four ways
top = res.top_classes(5)
series = {t("exp.position.series.pos_orig"): res.probs_pos[0, top], t("exp.position.series.pos_shuf"): res.probs_pos[1, top],
          t("exp.position.series.nopos_orig"): res.probs_nopos[0, top],
          t("exp.position.series.nopos_shuf"): res.probs_nopos[1, top]}
ui.plot(vz.grouped_bars([names[i] for i in top], series, x_title=t("exp.position.prob"),
                        title=t("exp.position.fig.probs")), key="exp.position.probs")
for col, label in zip(st.columns(2), ("with", "without")):
    before, after = res.answers(label == "with")
    ui.note_metric(t(f"exp.position.{label}_shuffled"), names[after],
                   t("exp.position.was", name=names[before]) if before != after else t("exp.position.same"), col)

# --- the proof: without E_pos the CLS output does not move under any shuffle
st.subheader(t("exp.position.proof.title"))
st.markdown(t("exp.position.proof.body", k=len(res.perms), k_more=len(res.perms) - 1, N=s.N))
ui.plot(vz.proof_figure(res.delta_pos.numpy(), res.delta_nopos.numpy(),
                        names=(t("exp.position.with"), t("exp.position.without")), x_title=t("exp.position.proof.x"),
                        y_title=t("exp.position.proof.y"), title=t("exp.position.proof.fig")), key="exp.position.proof")
st.success(t("exp.position.proof.result", k=len(res.perms), pos=f"{res.max_delta_pos:.3g}",
             nopos=f"{res.max_delta_nopos:.1e}"))
with st.expander(t("exp.position.why_equal.title")):
    st.markdown(t("exp.position.why_equal.body"))

# --- the model's own E_pos taken away, on a set of images
st.subheader(t("exp.position.ablation.title"))
on_dataset = ex.reads_fashion_mnist(lv.card) and data.is_available()
with st.spinner(t("exp.position.ablation.spinner")):
    files, ab = ui.position_ablation(lv, on_dataset)
if on_dataset:
    c = st.columns(3)
    c[0].metric(t("exp.position.ablation.acc_with", n=ui.ABLATION_IMAGES), f"{ab.accuracy(True):.1%}")
    c[1].metric(t("exp.position.ablation.acc_without", n=ui.ABLATION_IMAGES), f"{ab.accuracy(False):.1%}",
                t("exp.position.ablation.points", v=f"{100 * (ab.accuracy(False) - ab.accuracy(True)):+.1f}"))
    c[2].metric(t("exp.position.ablation.agree"), f"{ab.agreement:.1%}")
else:
    ui.table({t("exp.position.ablation.image"): [ui.sample_label(ui.SAMPLES / f) for f in files],
              t("exp.position.with"): [names[i] for i in ab.pred_pos.tolist()],
              t("exp.position.without"): [names[i] for i in ab.pred_nopos.tolist()]})
    st.caption(t("exp.position.ablation.agree_caption", agree=f"{ab.agreement:.0%}", n=len(files)))
st.info(t("exp.position.ablation.honest", none=f"{ex.VIT_TABLE8['none']:.1%}", learned=f"{ex.VIT_TABLE8['1d']:.1%}",
          drop=f"{100 * (ex.VIT_TABLE8['1d'] - ex.VIT_TABLE8['none']):.1f}"))
st.page_link("pages/step3_position.py", label=t("exp.position.ablation.link"), icon=":material/monitoring:")
