"""Experiment · Teach it new classes: a linear head on the backbone's CLS features, for Fashion-MNIST classes
(against the small ViT trained from scratch on the same few images) or for classes of the learner's own pictures."""

import html

import streamlit as st

import ui
from vit_core import data, experiments as ex
from vit_core.viz.shared import common as viz, experiments as vz

t = ui.t
SCRATCH_STEPS = 100
lv = ui.page("exp.finetune", vit_only=True)
modes = {m: t(f"exp.finetune.mode.{m}") for m in ("builtin", "own")}
mode = ui.choice(st.segmented_control, t("exp.finetune.mode"), modes, modes, key="exp.finetune.mode",
                 default="builtin")


def probe_metrics(res: ex.ProbeResult, names: list[str], train: int, held: int, split: str | None = None):
    st.subheader(t("exp.finetune.probe.title"))
    m = st.columns(3)
    m[0].metric(t("exp.finetune.train_acc", n=train), f"{res.train_accuracy:.1%}")
    m[1].metric(t("exp.finetune.test_acc", n=held), "—" if res.test_accuracy is None else f"{res.test_accuracy:.1%}")
    m[2].metric(t("exp.finetune.time"), t("exp.finetune.seconds", features=res.feature_seconds, fit=res.probe.seconds),
                help=t("exp.finetune.time_help", n=res.images))
    if split:  # how the reader's pictures were split (the built-in split is told under its montage)
        st.caption(split)
    answer = ex.probe_readout(res, lv.trace)  # the probe's size, and the new head's answer for the learner's image
    st.caption(t("exp.finetune.probe.caption", D=answer.features, k=answer.classes, steps=answer.steps))

    # --- the learner's own image, classified by the new head
    st.subheader(t("exp.finetune.new.title"))
    left, right = st.columns([1, 2])
    left.image(lv.display, caption=ui.image_label(), width=180)
    with right:  # class names may be the reader's own text: escaped, so plotly shows them as typed
        ui.plot(viz.bars([html.escape(n) for n in names], answer.probs, highlight=answer.top,
                         x_title=t("exp.finetune.prob"), range_=(0, 1.1)), key="exp.finetune.new")
    st.caption(t("exp.finetune.new.caption"))


if mode == "own":  # --- 2-5 classes of the reader's own pictures: uploads or the camera
    st.markdown(t("exp.finetune.own.lead", min=ex.MIN_OWN, hold=ex.HOLD_FROM))
    c = st.columns([3, 1])
    k = c[0].slider(t("exp.finetune.own.k"), 2, 5, key=ui.setting("exp.finetune.own.k", 2))
    seed = int(c[1].number_input(t("exp.finetune.seed"), 0, 999, key=ui.setting("exp.finetune.own.seed", 0)))
    names, pictures = [], []
    for i, col in enumerate((st.columns(min(k, 3)) + (st.columns(3) if k > 3 else []))[:k]):
        with col.container(border=True):
            default = t("exp.finetune.own.default", i=i + 1)
            names.append(st.text_input(t("exp.finetune.own.name"), key=ui.setting(f"exp.finetune.own.name.{i}", ""),
                                       max_chars=40, placeholder=default).strip() or default)
            files = st.file_uploader(t("exp.finetune.own.files"), type=ui.IMAGE_TYPES, accept_multiple_files=True,
                                     key=f"exp.finetune.own.files.{i}", max_upload_size=ui.UPLOAD_MB)
            if st.toggle(t("exp.finetune.own.camera_on"), key=f"exp.finetune.own.camera_on.{i}"):
                files = [*files, st.camera_input(t("exp.finetune.own.camera"), key=f"exp.finetune.own.camera.{i}")]
            good, bad = ui.pictures(files)
            for name, err in bad:
                st.warning(t("exp.finetune.own.bad", name=ui.literal(name), why=ui.error_text(err)))
            if good:
                st.image([lv.card.preprocess.image(img) for _, img in good], width=56)
            st.caption(t("exp.finetune.own.count", n=len(good), min=ex.MIN_OWN))
        pictures.append(good)
    if min(map(len, pictures)) < ex.MIN_OWN:
        st.info(t("exp.finetune.own.need", min=ex.MIN_OWN))
        st.stop()
    own, res = ui.own_probe(lv, names, pictures, seed)
    probe_metrics(res, names, len(own.train_labels), len(own.test_labels), t(
        "exp.finetune.own.split", train=len(own.train_labels), held=len(own.test_labels), seed=seed, hold=ex.HOLD_FROM))
    st.stop()

# --- built-in: 2-5 Fashion-MNIST classes, a few images each
if not data.is_available():
    st.info(t("exp.finetune.no_data", hint=data.INSTALL_HINT))
    st.stop()
labels = data.CLASSES_ZH if ui.lang() == "zh" else data.CLASSES
held_out = ex.held_out_per_class(lv.model)
st.info(t("exp.finetune.embedded_note" if ex.reads_fashion_mnist(lv.card) else "exp.finetune.other_note"))
c = st.columns([3, 2, 1])
classes = ui.choices(c[0].multiselect, t("exp.finetune.classes"), range(10), dict(enumerate(labels)),
                     key="exp.finetune.classes", default=[5, 7, 9], max_selections=5)
shots = c[1].select_slider(t("exp.finetune.shots"), [1, 2, 5, 10, 20], key=ui.setting("exp.finetune.shots", 5))
seed = c[2].number_input(t("exp.finetune.seed"), 0, 999, key=ui.setting("exp.finetune.seed", 0))
if len(classes) < 2:
    st.warning(t("exp.finetune.too_few"))
    st.stop()
inputs = (tuple(classes), int(shots), int(seed), held_out)
ds = ui.few_shot_task(*inputs)
k = len(classes)
names = [labels[i] for i in classes]
montage = vz.examples_montage(ds.train_images, ds.train_labels, k, min(shots, 10))
st.image(montage, width=montage.shape[1], caption=t("exp.finetune.montage", rows=t("exp.finetune.sep").join(names),
                                                    shots=shots, held=held_out))
res = ui.linear_probe(lv.model_id, inputs, int(seed), ds, t("exp.finetune.probe.progress", n=k * (shots + held_out)))
probe_metrics(res, names, k * shots, k * held_out)

# --- the same few images, a small ViT from scratch
st.subheader(t("exp.finetune.scratch.title"))
st.markdown(t("exp.finetune.scratch.body", steps=SCRATCH_STEPS, n=k * shots))
if st.button(t("exp.finetune.scratch.run"), key="exp.finetune.scratch.run"):
    st.session_state["exp.finetune.scratch_for"] = inputs
if st.session_state.get("exp.finetune.scratch_for") == inputs:
    sc = ui.scratch_run(inputs, SCRATCH_STEPS, t("exp.finetune.scratch.progress", steps=SCRATCH_STEPS))
    ui.plot(vz.grouped_bars([t("exp.finetune.set.train", n=k * shots), t("exp.finetune.set.test", n=k * held_out)],
                            {t("exp.finetune.series.probe"): [res.train_accuracy, res.test_accuracy],
                             t("exp.finetune.series.scratch"): [sc.train_accuracy, sc.test_accuracy]},
                            x_title=t("exp.finetune.accuracy"), title=t("exp.finetune.fig.compare")),
            key="exp.finetune.compare")
    st.caption(t("exp.finetune.scratch.measured", params=f"{sc.parameters:,}", steps=sc.steps, batch=sc.batch_size,
                 s=sc.seconds, seed=int(seed)))
st.markdown(t("exp.finetune.lesson"))
