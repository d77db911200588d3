"""Classroom mode in AppTest: one teacher and two students, each its own session, against one store
(this process's memory, then a real Redis). A teacher run stands for the teacher's 0.5 s broadcast tick,
a student run for the student's 1 s poll."""

import re

import pytest

from apptest import assert_clean, choice, open_app
from vit_core.classroom import questions
from vit_core.i18n import translate

CJK = re.compile(r"[\u4e00-\u9fff]")
pytestmark = pytest.mark.slow


@pytest.fixture(params=[("memory", "en"), ("redis", "zh")], ids=["memory-en", "redis-zh"])
def store_lang(request, monkeypatch):
    kind, lang = request.param
    if kind == "redis":
        monkeypatch.setenv("REDIS_URL", request.getfixturevalue("redis_url"))
    else:
        monkeypatch.delenv("REDIS_URL", raising=False)
    return kind, lang


@pytest.fixture
def state_warnings(monkeypatch) -> list[str]:
    """Streamlit's "widget ... created with a default value but also had its value set via the Session
    State API" warnings, as logged (once per process: the flag is reset, so this test sees its own)."""
    from streamlit.elements.lib import policies

    seen = []
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", lambda msg, *args, **kwargs: seen.append(msg % args))
    return seen


def start_class(lang: str):
    teacher = open_app(lang, "pages/classroom.py")
    assert_clean(teacher)
    teacher.button(key="classroom.start").click().run()
    assert_clean(teacher)
    return teacher, teacher.session_state["vx.class"]


def join(code: str, name: str, lang: str):
    student = goto(open_app(lang), "pages/classroom.py")
    student.text_input(key="classroom.code").input(code)
    student.text_input(key="classroom.name").input(name)
    student.form_submit_button[0].click().run()
    assert_clean(student)
    assert student.session_state["vx.class"]["role"] == "student"
    return student


def goto(at, page: str):
    """Open `page`, then let later runs stay on the page each run ends on, as a browser does when the
    script calls st.switch_page (AppTest would otherwise request the page it chose here every time)."""
    at.switch_page(page).run()
    at._page_hash = ""
    return at


def shown(at) -> str:
    return " ".join(str(e.value) for kind in ("title", "subheader", "markdown", "caption", "text", "success", "info",
                                              "warning", "code") for e in getattr(at, kind))


def test_the_class_follows_the_teacher_and_answers(store_lang, state_warnings):
    kind, lang = store_lang
    teacher, c = start_class(lang)
    assert bool(teacher.warning) == (kind == "memory"), "the in-process warning, only without Redis"
    assert c["code"] in shown(teacher)
    holders = [e for e in teacher.code if c["token"] in e.value]
    assert len(holders) == 1 and holders[0] in teacher.expander[0].code, "the token: only in the collapsed own link"
    ada = join(c["code"].lower(), "Ada *bold* <b>x</b>", "zh")
    bo = join(f"{c['code'][:3]}-{c['code'][3:]}", "Bo", "en")
    assert any("Ada *bold* <b>x</b>" in t.value for t in ada.text), "a student's name is shown as plain text"
    for s in (ada, bo):
        assert c["token"] not in shown(s) and "token" not in s.session_state["vx.class"]

    # the teacher picks another sample, goes to the encoder and picks layer 3, head 2, patch (1, 5)
    choice(teacher, "selectbox", "vx.sample").select("fmnist_bag.png").run()
    teacher.switch_page("pages/step5_encoder.py").run()
    teacher.slider(key="vx.enc.layer").set_value(3).run()
    teacher.slider(key="vx.enc.head").set_value(2).run()
    teacher.number_input(key="vx.pick.row").set_value(1).run()
    teacher.number_input(key="vx.pick.col").set_value(5).run()
    teacher.run()  # the broadcast tick
    assert_clean(teacher)
    for s, s_lang in ((ada, "zh"), (bo, "en")):
        s.run()
        assert_clean(s)
        assert s.title[0].value == translate("step5.title", s_lang), "followed to the teacher's page, in its own language"
        assert (s.session_state["vx.layer"], s.session_state["vx.head"], s.session_state["vx.patch"]) == (2, 1, (1, 5))
        assert s.slider(key="vx.enc.layer").value == 3 and s.slider(key="vx.enc.head").value == 2
        assert s.session_state["vx.image"]["name"] == "fmnist_bag.png"
        assert s.session_state["vx.lang"] == s_lang

    # Bo explores: his own changes stay his, and the teacher's next change passes him by
    bo.sidebar.toggle(key="vx.class.follow").set_value(False).run()
    bo.slider(key="vx.enc.layer").set_value(6).run()
    teacher.run()
    assert teacher.session_state["vx.layer"] == 2, "a student never changes the teacher's view"
    teacher.slider(key="vx.enc.layer").set_value(1).run()
    teacher.run()
    ada.run()
    bo.run()
    assert ada.session_state["vx.layer"] == 0 and bo.session_state["vx.layer"] == 5
    assert ada.slider(key="vx.enc.layer").value == 1
    assert state_warnings == [], "a view taken on the page moves its sliders without a value= fighting it"

    # the teacher asks on the classroom page: Ada follows there, Bo goes there himself
    teacher.switch_page("pages/classroom.py").run()
    choice(teacher, "selectbox", "classroom.template").select("predict").run()
    teacher.button(key="classroom.ask").click().run()
    teacher.run()
    assert_clean(teacher)
    ada.run()
    goto(bo, "pages/classroom.py")
    for s in (ada, bo):
        assert_clean(s)
    from ui import class_store  # the question as the store holds it

    state = class_store().state(c["code"])
    q = questions.Question.from_json(state.asked.question)
    assert ada.subheader[-1].value == q.text("prompt", "zh") and bo.subheader[-1].value == q.text("prompt", "en")
    wrong = next(o for o in q.options if o != q.answer)
    send = f"classroom.answer.{state.asked.id}"
    choice(ada, "radio", send).set_value(q.answer).run()
    ada.button(key=f"{send}.send").click().run()
    choice(bo, "radio", send).set_value(wrong).run()
    bo.button(key=f"{send}.send").click().run()
    for s in (ada, bo):
        assert_clean(s)
    teacher.run()
    metrics = {m.label: m.value for m in teacher.metric}
    assert metrics[translate("classroom.tally.answers", lang)] == "2"
    assert translate("classroom.tally.correct", lang) not in metrics, "the share correct waits for the reveal"

    teacher.button(key="classroom.reveal").click().run()
    assert_clean(teacher)
    metrics = {m.label: m.value for m in teacher.metric}
    assert metrics[translate("classroom.tally.correct", lang)] == "50%"
    assert q.text("reveal", lang) in [s.value for s in teacher.success]
    ada.run()
    bo.run()
    assert translate("classroom.student.right", "zh", answer=q.label(q.answer, "zh")) in shown(ada)
    assert translate("classroom.student.wrong", "en", answer=q.label(wrong, "en")) in shown(bo)

    # a number question: the answer (197 tokens for ViT-B/16 at 224) is computed, and a typed one is counted
    choice(teacher, "selectbox", "classroom.template").select("tokens_b16").run()
    teacher.button(key="classroom.ask").click().run()
    ada.run()
    send = f"classroom.answer.{class_store().state(c['code']).asked.id}"
    ada.number_input(key=send).set_value(197)
    ada.button(key=f"{send}.send").click().run()
    assert_clean(ada)
    teacher.button(key="classroom.reveal").click().run()
    assert {m.label: m.value for m in teacher.metric}[translate("classroom.tally.correct", lang)] == "100%"

    # the roster lists names as table cells (never rendered as Markdown or HTML)
    names = teacher.dataframe[0].value.iloc[:, 0].tolist()
    assert sorted(names) == sorted(["Ada *bold* <b>x</b>", "Bo"])

    # the teacher ends the class: every key is gone, and the students are told
    teacher.button(key="classroom.end").click().run()
    assert "vx.class" not in teacher.session_state
    assert class_store().backend.count(f"vx:class:{c['code']}") == 0
    for s, s_lang in ((ada, "zh"), (bo, "en")):
        s.run()
        assert "vx.class" not in s.session_state
        assert translate("classroom.ended", s_lang) in [i.value for i in s.sidebar.info]


def test_a_wrong_code_is_a_translated_message(store_lang):
    _, lang = store_lang
    student = open_app(lang, "pages/classroom.py")
    student.text_input(key="classroom.code").input("ZZZZZZ")
    student.form_submit_button[0].click().run()
    assert not student.exception
    assert [e.value for e in student.error] == [translate("classroom.error.unknown_code", lang)]
    assert "vx.class" not in student.session_state


def test_the_teacher_link_reopens_the_class_and_leaves_the_address_bar(store_lang):
    _, lang = store_lang
    _, c = start_class(lang)
    again = open_app(lang)
    again.query_params["class"], again.query_params["teacher"] = c["code"], c["token"]
    again.switch_page("pages/classroom.py").run()
    assert_clean(again)
    assert again.session_state["vx.class"]["role"] == "teacher"
    assert "teacher" not in again.query_params
    forged = open_app(lang)
    forged.query_params["class"], forged.query_params["teacher"] = c["code"], "guess"
    forged.switch_page("pages/classroom.py").run()
    assert [e.value for e in forged.error] == [translate("classroom.error.not_teacher", lang)]
    assert "vx.class" not in forged.session_state


def test_switching_the_language_keeps_the_question_and_the_picked_answer(monkeypatch):
    """ui.choice in the classroom: the teacher's question picker and a student's picked option are ids, so
    a language switch (whose next message carries the old language's label) keeps them both."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    teacher, c = start_class("en")
    choice(teacher, "selectbox", "classroom.template").select("predict").run()
    teacher.sidebar.button_group(key="vx.lang").set_value("zh").run()
    assert choice(teacher, "selectbox", "classroom.template").value == "predict"
    teacher.button(key="classroom.ask").click().run()
    assert_clean(teacher)
    student = join(c["code"], "Cy", "en")
    from ui import class_store

    asked = class_store().state(c["code"]).asked
    q, key = questions.Question.from_json(asked.question), f"classroom.answer.{asked.id}"
    wrong = next(o for o in q.options if o != q.answer)
    choice(student, "radio", key).set_value(wrong).run()
    student.sidebar.button_group(key="vx.lang").set_value("zh").run()
    assert_clean(student)
    assert choice(student, "radio", key).value == wrong, "the picked option survives the switch"
    student.button(key=f"{key}.send").click().run()
    assert translate("classroom.student.sent", "zh", answer=q.label(wrong, "zh")) in shown(student)
    teacher.run()
    assert {m.label: m.value for m in teacher.metric}[translate("classroom.tally.answers", "zh")] == "1"


def test_a_follower_gets_the_teacher_s_lab_settings(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    teacher, c = start_class("en")
    student = join(c["code"], "Di", "zh")
    teacher.switch_page("pages/rollout_lab.py").run()
    choice(teacher, "radio", "rollout.fusion").set_value("max").run()
    teacher.slider(key="rollout.discard").set_value(0.3).run()
    teacher.run()  # the broadcast tick
    assert_clean(teacher)
    student.run()
    assert_clean(student)
    assert student.title[0].value == translate("rollout.title", "zh")
    assert choice(student, "radio", "rollout.fusion").value == "max"
    assert student.slider(key="rollout.discard").value == 0.3
