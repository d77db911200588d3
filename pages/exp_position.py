"""Experiment · Does position matter? Shuffle the patches with E_pos and with zeros in its place."""

import streamlit as st

import ui
from vit_core import data, experiments as ex
from vit_core.images import load_image
from vit_core.viz.shared import experiments as vz

t = ui.t
PROOF_SHUFFLES = 7  # seeded shuffles checked beside the learner's
SLICE = 1000  # Fashion-MNIST test images for the ablation
lv = ui.page("exp.position", vit_only=True)
tr = lv.trace
s = tr.shapes
names = lv.class_names()


@st.cache_data(show_spinner=False, max_entries=32)
def shuffled(model_id: str, digest: str, perm: tuple, _pixels) -> ex.PositionResult:
    perms = ex.random_perms(len(perm), PROOF_SHUFFLES + 1, seed=0)
    perms[0] = perms.new_tensor(perm)
    return ex.position_experiment(ui.load_model(model_id)[0], _pixels, perms)


@st.cache_data(show_spinner=False, max_entries=8)
def ablation(model_id: str, on_dataset: bool) -> tuple[list[str], ex.PosAblation]:
    model, card = ui.load_model(model_id)
    if on_dataset:
        images, labels = ui.fashion_mnist()["test"]
        return [], ex.pos_ablation(model, ex.to_pixels(card.preprocess, images[:SLICE]), labels[:SLICE])
    files = ui.sample_files()
    pictures = [load_image(p.read_bytes()) for p in files]
    return [p.name for p in files], ex.pos_ablation(model, ex.to_pixels(card.preprocess, pictures))


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
res = shuffled(lv.model_id, lv.digest, tuple(perm.tolist()), tr.pixels)
moved = int((res.perms[0] != res.perms[0].sort().values).sum())

left, right = st.columns(2)
with left:
    swap = dict(grid=tr.grid, patch=s.P, marks=[first, (int(r2), int(c2))]) if mode == "swap" else {}
    ui.clickable_chart(vz.picture(lv.display, title=t("exp.position.fig.original"), **swap), key="exp.position.original",
                       grid=tr.grid)
with right:
    ui.plot(vz.picture(lv.card.preprocess.to_display(res.shuffled), title=t("exp.position.fig.shuffled", n=moved)),
            key="exp.position.shuffled")

# --- what the model predicts, four ways
top = res.probs_pos[0].topk(min(5, len(names))).indices.tolist()
series = {t("exp.position.series.pos_orig"): res.probs_pos[0, top], t("exp.position.series.pos_shuf"): res.probs_pos[1, top],
          t("exp.position.series.nopos_orig"): res.probs_nopos[0, top],
          t("exp.position.series.nopos_shuf"): res.probs_nopos[1, top]}
ui.plot(vz.grouped_bars([names[i] for i in top], series, x_title=t("exp.position.prob"),
                        title=t("exp.position.fig.probs")), key="exp.position.probs")
p0, p1 = res.probs_pos[:2].argmax(-1).tolist()
q0, q1 = res.probs_nopos[:2].argmax(-1).tolist()
m = st.columns(2)
for col, label, before, after in [(m[0], "with", p0, p1), (m[1], "without", q0, q1)]:
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
    files, ab = ablation(lv.model_id, on_dataset)
if on_dataset:
    c = st.columns(3)
    c[0].metric(t("exp.position.ablation.acc_with", n=SLICE), f"{ab.accuracy(True):.1%}")
    c[1].metric(t("exp.position.ablation.acc_without", n=SLICE), f"{ab.accuracy(False):.1%}",
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
