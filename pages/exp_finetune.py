"""Experiment · Teach it new classes: a linear head on the backbone's CLS features, against the small ViT
trained from scratch on the same few images."""

import streamlit as st

import ui
from vit_core import data, experiments as ex, viz
from vit_core.viz import experiments as vz

t = ui.t
SCRATCH_STEPS = 100
lv = ui.page("exp.finetune", vit_only=True)
if not data.is_available():
    st.info(t("exp.finetune.no_data", hint=data.INSTALL_HINT))
    st.stop()
labels = data.CLASSES_ZH if ui.lang() == "zh" else data.CLASSES
held_out = ex.held_out_per_class(lv.model)


@st.cache_data(show_spinner=False, max_entries=32)
def task(classes: tuple, shots: int, seed: int, held_out: int) -> ex.FewShotSet:
    split = ui.fashion_mnist()
    return ex.few_shot_set({k: v[0] for k, v in split.items()}, {k: v[1] for k, v in split.items()}, list(classes),
                           shots, held_out, seed)


def with_progress(text: str, work):
    """Run work(progress) under a progress bar that is gone when it ends (also when a cache replays it)."""
    bar = st.progress(0.0, text=text)
    try:
        return work(lambda f: bar.progress(min(1.0, f), text=text))
    finally:
        bar.empty()


@st.cache_data(show_spinner=False, max_entries=32)
def probe(model_id: str, inputs: tuple, _text: str) -> ex.ProbeResult:
    model, card = ui.load_model(model_id)
    return with_progress(_text, lambda f: ex.probe_task(model, card.preprocess, task(*inputs), seed=inputs[2],
                                                        progress=f))


@st.cache_data(show_spinner=False, max_entries=32)
def scratch(inputs: tuple, _text: str) -> ex.ScratchResult:
    return with_progress(_text, lambda f: ex.train_from_scratch(task(*inputs), steps=SCRATCH_STEPS, seed=inputs[2],
                                                                progress=f))


st.info(t("exp.finetune.embedded_note" if ex.reads_fashion_mnist(lv.card) else "exp.finetune.other_note"))

# --- the task: 2-5 classes, a few images each
c = st.columns([3, 2, 1])
classes = ui.choices(c[0].multiselect, t("exp.finetune.classes"), range(10), dict(enumerate(labels)),
                     key="exp.finetune.classes", default=[5, 7, 9], max_selections=5)
shots = c[1].select_slider(t("exp.finetune.shots"), [1, 2, 5, 10, 20], key=ui.setting("exp.finetune.shots", 5))
seed = c[2].number_input(t("exp.finetune.seed"), 0, 999, key=ui.setting("exp.finetune.seed", 0))
if len(classes) < 2:
    st.warning(t("exp.finetune.too_few"))
    st.stop()
inputs = (tuple(classes), int(shots), int(seed), held_out)
ds = task(*inputs)
k = len(classes)
montage = vz.examples_montage(ds.train_images.numpy(), ds.train_labels.numpy(), k, min(shots, 10))
st.image(montage, width=montage.shape[1], caption=t("exp.finetune.montage", rows=t("exp.finetune.sep").join(labels[i] for i in classes), shots=shots, held=held_out))

# --- a linear head on the frozen backbone
st.subheader(t("exp.finetune.probe.title"))
res = probe(lv.model_id, inputs, t("exp.finetune.probe.progress", n=k * (shots + held_out)))
m = st.columns(3)
m[0].metric(t("exp.finetune.train_acc", n=k * shots), f"{res.train_accuracy:.1%}")
m[1].metric(t("exp.finetune.test_acc", n=k * held_out), f"{res.test_accuracy:.1%}")
m[2].metric(t("exp.finetune.time"), t("exp.finetune.seconds", features=res.feature_seconds, fit=res.probe.seconds),
            help=t("exp.finetune.time_help", n=res.images))
st.caption(t("exp.finetune.probe.caption", D=lv.trace.shapes.D, k=k, steps=len(res.probe.losses)))

# --- the learner's own image, classified by the new head
st.subheader(t("exp.finetune.new.title"))
probs = res.probe.classify(lv.trace)
left, right = st.columns([1, 2])
left.image(lv.display, caption=ui.image_label(), width=180)
with right:
    ui.plot(viz.bars([labels[i] for i in classes], probs.numpy(), highlight=int(probs.argmax()),
                     x_title=t("exp.finetune.prob"), range_=(0, 1.1)), key="exp.finetune.new")
st.caption(t("exp.finetune.new.caption"))

# --- the same few images, a small ViT from scratch
st.subheader(t("exp.finetune.scratch.title"))
st.markdown(t("exp.finetune.scratch.body", steps=SCRATCH_STEPS, n=k * shots))
if st.button(t("exp.finetune.scratch.run"), key="exp.finetune.scratch.run"):
    st.session_state["exp.finetune.scratch_for"] = inputs
if st.session_state.get("exp.finetune.scratch_for") == inputs:
    sc = scratch(inputs, t("exp.finetune.scratch.progress", steps=SCRATCH_STEPS))
    ui.plot(vz.grouped_bars([t("exp.finetune.set.train", n=k * shots), t("exp.finetune.set.test", n=k * held_out)],
                            {t("exp.finetune.series.probe"): [res.train_accuracy, res.test_accuracy],
                             t("exp.finetune.series.scratch"): [sc.train_accuracy, sc.test_accuracy]},
                            x_title=t("exp.finetune.accuracy"), title=t("exp.finetune.fig.compare")),
            key="exp.finetune.compare")
    st.caption(t("exp.finetune.scratch.measured", params=f"{sc.parameters:,}", steps=sc.steps, batch=sc.batch_size,
                 s=sc.seconds, seed=int(seed)))
st.markdown(t("exp.finetune.lesson"))
