"""Classroom: a teacher starts a class and drives the view; students join by code, follow, and answer
questions whose answers the model gives (vit_core.classroom); the teacher sees the class's answers live."""

import time

import streamlit as st

import ui
from vit_core.classroom import questions
from vit_core.classroom.store import CODE_CHARS, NAME_CHARS
from vit_core.viz.shared import common as viz

t = ui.t
ui.page_header("classroom")
ui.resume_class()
c = ui.my_class()

# --- not in a class yet: start one, or join one (a link with ?class= fills the code in)
if c is None:
    start, join = st.columns(2, gap="large")
    with start.container(border=True):
        st.subheader(t("classroom.start.title"))
        st.markdown(t("classroom.start.intro"))
        if st.button(t("classroom.start.button"), type="primary", key="classroom.start"):
            ui.start_class()
            st.rerun()
        lv = ui.live()  # the view a new class starts from
        st.caption(t("classroom.start.preview", name=lv.image_name))
        ui.plot(viz.image_grid(lv.display, lv.trace.grid, lv.trace.shapes.P, height=320), key="classroom.preview")
    with join.container(border=True):
        st.subheader(t("classroom.join.title"))
        with st.form("classroom.join", border=False):
            code = st.text_input(t("classroom.join.code"), st.query_params.get("class", ""), max_chars=2 * CODE_CHARS,
                                 placeholder="ABC234", key="classroom.code")
            name = st.text_input(t("classroom.join.name"), max_chars=NAME_CHARS, key="classroom.name",
                                 help=t("classroom.join.name_help"))
            if st.form_submit_button(t("classroom.join.button"), type="primary"):
                ui.join_class(code, name)
                if ui.my_class():
                    st.rerun()
    st.stop()

state = ui.class_state()
if state is None or ui.my_class() is None:  # the class ended (the store said so, and the call left it)
    st.stop()
asked = state.asked
q = questions.Question.from_json(asked.question) if asked else None

# --- the teacher: the code, the link and QR code, sharing, the question and the class's answers
if c["role"] == "teacher":
    if not ui.class_shared():
        st.warning(t("classroom.teacher.in_process"))
    link = ui.class_link(c["code"])
    left, right = st.columns([3, 1], gap="large")
    with left:
        st.markdown(t("classroom.teacher.code", code=c["code"]))
        st.code(link, language=None)
        st.caption(t("classroom.teacher.expires", minutes=max(0, int((c["expires"] - time.time()) / 60))))
        st.toggle(t("classroom.teacher.share"), key=ui.persist("vx.class.share"), help=t("classroom.teacher.share_help"))
        with st.expander(t("classroom.teacher.own_link")):
            st.caption(t("classroom.teacher.own_link_help"))
            st.code(ui.class_link(c["code"], c["token"]), language=None)
    right.image(ui.qr_png(link), caption=t("classroom.teacher.qr"), width=220)

    st.subheader(t("classroom.ask.title"))
    ids = list(questions.templates())
    prompts = {i: questions.title(i, ui.lang()) for i in ids}
    pick, go = st.columns([4, 1], vertical_alignment="bottom")
    chosen = ui.choice(pick.selectbox, t("classroom.ask.pick"), ids, prompts, key="classroom.template", default=ids[0])
    if go.button(t("classroom.ask.button"), type="primary", key="classroom.ask"):
        ui.ask(chosen)
        st.rerun()
    if q:
        st.markdown(f"**{t('classroom.ask.now')}** {q.text('prompt', ui.lang())}")
        if asked.revealed:
            st.success(q.text("reveal", ui.lang()))
        elif st.button(t("classroom.ask.reveal"), key="classroom.reveal"):
            ui.reveal()
            st.rerun()
    ui.live_answers(asked and asked.question, asked and asked.id, bool(asked and asked.revealed))
    st.divider()
    if st.button(t("classroom.teacher.end"), key="classroom.end", help=t("classroom.teacher.end_help")):
        ui.end_class()
        st.rerun()
    st.stop()

# --- a student: where they are, the question (answer until the reveal), then the class's answers
st.markdown(t("classroom.student.in", code=c["code"]))
st.text(t("classroom.student.as", name=c["name"] or t("classroom.student.anonymous")))  # their own text: plain
if q is None:
    st.info(t("classroom.student.wait"))
else:
    lv = ui.live()
    st.subheader(q.text("prompt", ui.lang()))
    mine = ui.my_answer(asked.id)
    if asked.revealed:
        st.success(q.text("reveal", ui.lang()))
        if mine is not None:
            verdict = "right" if q.correct(mine) else "wrong"
            st.markdown(t(f"classroom.student.{verdict}", answer=q.label(mine, ui.lang())))
        ui.show_tally(q, ui.class_answers(asked.id), True, lv)
    else:
        ui.answer_form(q, asked.id, lv)
        if mine is not None:
            st.caption(t("classroom.student.sent", answer=q.label(mine, ui.lang())))
if st.button(t("classroom.student.leave"), key="classroom.leave"):
    ui.leave_class()
    st.rerun()
