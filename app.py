"""ViT Explorer: `streamlit run app.py`. Navigation and the shared sidebar (language, model, image)."""

import logging
from pathlib import Path

import streamlit as st

import ui
from vit_core import hub, zoo

st.set_page_config(page_title="ViT Explorer", page_icon="🔍", layout="wide")
ui.init_state()
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
    ("pages/exp_position.py", "exp.nav.position"),
    ("pages/exp_logit_lens.py", "exp.nav.lens"),
    ("pages/exp_occlusion.py", "exp.nav.occlusion"),
    ("pages/exp_windows.py", "exp.nav.windows"),
    ("pages/exp_finetune.py", "exp.nav.finetune"),
]
pages = {path: st.Page(path, title=t(key), url_path=Path(path).stem, default=path == "pages/home.py")
         for path, key in PAGES}
sections = {
    t("app.nav.section.start"): [pages["pages/home.py"]],
    t("app.nav.section.steps"): [pages[p] for p, *_ in PAGES[1:7]],
    t("app.nav.section.labs"): [pages[p] for p, *_ in PAGES[7:9]],
    t("exp.nav.section"): [pages[p] for p, *_ in PAGES[9:]],
}
current = st.navigation(sections, expanded=True)  # every page listed: no "View more" fold


def language_picker():
    names = {"en": "English", "zh": "简体中文"}
    st.segmented_control("🌐", list(names), format_func=names.get, key="vx.lang", label_visibility="collapsed")
    if not st.session_state["vx.lang"]:  # clicking the selected option again clears it: keep a language
        st.session_state["vx.lang"] = "en"


def model_picker():
    entries = {e.id: e for e in zoo.list_models() if e.id not in zoo.NOT_VIT}  # the CNN has its own page
    active = st.session_state["vx.model"]
    if active not in entries:  # a checkpoint named by path (VIT_EXPLORER_MODEL) outside the listed folders
        entries[active] = zoo.ModelEntry(active, Path(active).name, "local", True, source=active)

    titles = {i: t(f"app.model.title.{i}") if e.kind == "embedded" else e.title for i, e in entries.items()}
    labels = {i: t("app.model.hub_label", title=titles[i], mb=e.size_mb) if e.kind == "hub" and not e.cached
              else t(f"app.model.kind.{e.kind}", title=titles[i]) for i, e in entries.items()}
    # format_func is a lookup made in this run (not a function of session state read later)
    choice = st.selectbox(t("app.model.label"), list(entries), index=list(entries).index(active),
                          format_func=labels.get, key="vx.model_choice")
    entry = entries[choice]
    if choice != active and not (entry.kind == "hub" and not entry.cached):
        ui.switch_model(choice)
    elif choice != active:
        st.info(t("app.model.needs_download", title=entry.title, mb=entry.size_mb))
        if st.button(t("app.model.download"), key="vx.download", type="primary"):
            download(entry)
    current, card = st.session_state["vx.model"], ui.current_model()[1]  # the new one if the switch worked
    c = card.config
    details = (t("app.model.vit_shape", P=c.patch_size, h=c.grid[0], w=c.grid[1], D=c.embed_dim, L=c.depth,
                 H=c.num_heads) if card.arch == "vit" else
               t("app.model.cnn_shape", stages=len(c["widths"]), convs=c["convs_per_stage"],
                 widths="/".join(map(str, c["widths"]))))
    title = titles[current] if entries[current].kind == "embedded" else card.title or card.name
    st.caption(t("app.model.caption", title=title, details=details, device=zoo.device_name()))


def download(entry):
    bar = st.progress(0.0, text=t("app.model.downloading", title=entry.title))

    def progress(done, total):
        bar.progress(min(1.0, done / total) if total else 0.0,
                     text=t("app.model.progress", title=entry.title, done=done / 2**20, total=total / 2**20))

    try:
        hub.download(entry.id, progress=progress)
    except Exception as err:  # noqa: BLE001 - offline, disk full, bad repo: a message, the old model stays
        bar.empty()
        ui.show_error(err)
        return
    bar.empty()
    if ui.switch_model(entry.id):
        st.rerun()


def image_picker():
    sources = {s: t(f"app.image.{s}") for s in ("sample", "upload", "camera")}
    source = st.segmented_control(t("app.image.source"), list(sources), format_func=sources.get,
                                  key="vx.image_source", default="sample")
    if source == "upload":
        st.file_uploader(t("app.image.upload_label"), type=["png", "jpg", "jpeg", "gif", "webp", "bmp", "tif", "tiff"],
                         key="vx.upload", on_change=on_upload, args=("vx.upload",), max_upload_size=ui.UPLOAD_MB,
                         help=t("app.image.upload_help", mb=ui.UPLOAD_MB))
    elif source == "camera":
        st.camera_input(t("app.image.camera_label"), key="vx.camera", on_change=on_upload, args=("vx.camera",))
    else:
        names = {p.name: ui.sample_label(p) for p in ui.sample_files()}
        now = st.session_state["vx.image"]["name"]
        st.selectbox(t("app.image.sample_label"), list(names), index=list(names).index(now) if now in names else None,
                     format_func=names.get, key="vx.sample", on_change=on_sample,
                     placeholder=t("app.image.own_image"))
    show_notice()
    st.image(ui.current_image(), caption=st.session_state["vx.image"]["name"], width="stretch")


def on_upload(key):
    file = st.session_state.get(key)
    if file is not None:
        ui.use_image(file.getvalue(), file.name)


def on_sample():
    name = st.session_state.get("vx.sample")
    if name:
        ui.use_image((ui.SAMPLES / name).read_bytes(), name)


def show_notice():
    notice = st.session_state.get("vx.notice")
    if notice:
        kind, key, params = notice
        getattr(st, kind)(t(key, **params))
        st.session_state["vx.notice"] = None


with st.sidebar:
    language_picker()
    model_picker()
    image_picker()

st.session_state["vx.via_app"] = True  # see ui._through_app
try:
    current.run()
except Exception as err:  # noqa: BLE001 - the last net: a page failure is a message, never a traceback
    # (st.rerun / st.stop / st.switch_page raise BaseException subclasses and pass through)
    logging.getLogger("vit_explorer").exception("page %s failed", current.url_path)
    ui.show_error(err)
