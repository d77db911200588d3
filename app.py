"""ViT Explorer: `streamlit run app.py`. Navigation and the shared sidebar (language, model, image)."""

import logging
from pathlib import Path

import streamlit as st

import ui

st.set_page_config(page_title="ViT Explorer", page_icon="🔍", layout="wide")
ui.init_state()
ui.view_from_url()  # a reload, a reconnect or a shared link reopens the view its address names
t = ui.t

# (file, title key). Each URL is the file's stem (/step5_encoder): Streamlit resolves a deep link
# opened right after a server start the old pages/-folder way, and these URLs work both ways.
PAGES = [
    ("pages/home.py", "app.nav.home"),
    ("pages/step1_patchify.py", "app.nav.step1"),
    ("pages/step2_project.py", "app.nav.step2"),
    ("pages/step3_position.py", "app.nav.step3"),
    ("pages/step4_cls.py", "app.nav.step4"),
    ("pages/step5_encoder.py", "app.nav.step5"),
    ("pages/step6_classify.py", "app.nav.step6"),
    ("pages/rollout_lab.py", "app.nav.rollout"),
    ("pages/cnn_vs_vit.py", "app.nav.cnn"),
    ("pages/classroom.py", "classroom.nav"),
    ("pages/exp_position.py", "exp.nav.position"),
    ("pages/exp_logit_lens.py", "exp.nav.lens"),
    ("pages/exp_finetune.py", "exp.nav.finetune"),
]
pages = {path: st.Page(path, title=t(key), url_path=Path(path).stem, default=path == "pages/home.py")
         for path, key in PAGES}
sections = {
    t("app.nav.section.start"): [pages["pages/home.py"]],
    t("app.nav.section.steps"): [pages[p] for p, *_ in PAGES[1:7]],
    t("app.nav.section.labs"): [pages[p] for p, *_ in PAGES[7:10]],
    t("exp.nav.section"): [pages[p] for p, *_ in PAGES[10:]],
}
current = st.navigation(sections, expanded=True)  # every page listed: no "View more" fold


def language_picker():
    names = {"en": "English", "zh": "简体中文"}
    st.segmented_control("🌐", list(names), format_func=names.get, key="vx.lang", label_visibility="collapsed")
    if not st.session_state["vx.lang"]:  # clicking the selected option again clears it: keep a language
        st.session_state["vx.lang"] = "en"


def model_picker():
    entries = ui.vit_models()
    active = st.session_state["vx.model"]

    titles = {i: e.title if e.kind == "local" else t(f"app.model.title.{i}") for i, e in entries.items()}
    labels = {i: t("app.model.hub_label", title=titles[i], mb=e.size_mb) if e.kind == "hub" and not e.cached
              else t(f"app.model.kind.{e.kind}", title=titles[i]) for i, e in entries.items()}
    choice = ui.choice(st.selectbox, t("app.model.label"), entries, labels, key="vx.model_choice", default=active)
    entry = entries[choice]
    if choice != active and not (entry.kind == "hub" and not entry.cached):
        if not ui.switch_model(choice):
            st.session_state["vx.model_choice"] = active  # the list shows the model still in use
    elif choice != active:
        st.info(t("app.model.needs_download", title=titles[choice], mb=entry.size_mb))
        if st.button(t("app.model.download"), key="vx.download", type="primary"):
            download(entry, titles[choice])
    current, card = st.session_state["vx.model"], ui.current_model()[1]  # the new one if the switch worked
    c = card.config
    details = (t("app.model.vit_shape", P=c.patch_size, h=c.grid[0], w=c.grid[1], D=c.embed_dim, L=c.depth,
                 H=c.num_heads) if card.arch == "vit" else
               t("app.model.cnn_shape", stages=len(c["widths"]), convs=c["convs_per_stage"],
                 widths="/".join(map(str, c["widths"]))))
    title = card.title or card.name if entries[current].kind == "local" else titles[current]
    st.caption(t("app.model.caption", title=title, details=details, device=ui.device_name()))


def download(entry, title: str):
    bar = st.progress(0.0, text=t("app.model.downloading", title=title))

    def progress(done, total):
        bar.progress(min(1.0, done / total) if total else 0.0,
                     text=t("app.model.progress", title=title, done=done / 2**20, total=total / 2**20))

    try:
        ui.download(entry.id, progress)
    except Exception as err:  # noqa: BLE001 - offline, disk full, bad repo: a message, the old model stays
        bar.empty()
        ui.show_error(err)
        return
    bar.empty()
    if ui.switch_model(entry.id):
        st.rerun()


def image_picker():
    sources = {s: t(f"app.image.{s}") for s in ("sample", "upload", "camera")}
    source = ui.choice(st.segmented_control, t("app.image.source"), sources, sources, key="vx.image_source",
                       default="sample")
    if source == "upload":
        st.file_uploader(t("app.image.upload_label"), type=ui.IMAGE_TYPES,
                         key="vx.upload", on_change=on_upload, args=("vx.upload",), max_upload_size=ui.UPLOAD_MB,
                         help=t("app.image.upload_help", mb=ui.UPLOAD_MB))
    elif source == "camera":
        st.camera_input(t("app.image.camera_label"), key="vx.camera", on_change=on_upload, args=("vx.camera",))
    else:
        names = {p.name: ui.sample_label(p) for p in ui.sample_files()}
        img = st.session_state["vx.image"]
        st.session_state["vx.sample"] = img["name"] if img.get("sample") else None  # None: the reader's own image
        ui.choice(st.selectbox, t("app.image.sample_label"), names, names, key="vx.sample", index=None,
                  on_change=on_sample, placeholder=t("app.image.own_image"))
    show_notice()
    st.image(ui.current_thumbnail(), caption=ui.image_label(), width="stretch")


def on_upload(key):
    file = st.session_state.get(key)
    if file is not None:
        ui.use_image(file.getvalue(), file.name)


def on_sample(name: str):
    ui.use_image((ui.SAMPLES / name).read_bytes(), name, sample=True)  # `name` is one of the listed files (ui.choice)


def show_notice():
    notice = st.session_state.get("vx.notice")
    if notice:
        kind, key, params = notice
        getattr(st, kind)(t(key, **params))
        st.session_state["vx.notice"] = None


with st.sidebar:
    ui.class_bar()  # in a class: the teacher's view goes out, a following student takes it (before any widget)
    language_picker()
    model_picker()
    image_picker()

st.session_state["vx.via_app"] = True  # see ui._through_app
st.session_state["vx.full_run"] = True  # the address is written once, below (ui.section skips it)
try:
    current.run()
except Exception as err:  # noqa: BLE001 - the last net: a page failure is a message, never a traceback
    # (st.rerun / st.stop / st.switch_page raise BaseException subclasses and pass through)
    logging.getLogger("vit_explorer").exception("page %s failed", current.url_path)
    ui.show_error(err)
finally:
    st.session_state.pop("vx.full_run", None)
    ui.view_to_url()
