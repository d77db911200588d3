"""Classroom mode in a real browser: `streamlit run app.py`, one teacher page and two student pages in
Debian's Chromium (three sessions). The students follow the teacher's page and patch, answer a question
by clicking a patch, and the teacher's screen shows their answers and then the model's. Screenshots
of every screen go to test-artifacts/browser/classroom_*.png; the follow latencies are printed."""

import os
import re
import socket
import sys
import time

import pytest

from test_browser import ARTIFACTS, CLICK_POINT, ROOT, assert_no_failure, browser, streamlit_server  # noqa: F401
from vit_core.i18n import translate

pytestmark = [pytest.mark.slow, pytest.mark.browser]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def class_port() -> int:
    """VX_BROWSER_PORT, else the first free port of the classroom's range, 8850-8899."""
    if os.environ.get("VX_BROWSER_PORT"):
        return int(os.environ["VX_BROWSER_PORT"])
    for port in range(8850, 8900):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    pytest.fail("no free port in 8850-8899; set VX_BROWSER_PORT")


@pytest.fixture(scope="module", params=[("memory", "en"), ("redis", "zh")], ids=["memory-en", "redis-zh"])
def server(request):
    """The app on one server: classes in its memory (REDIS_URL unset), or in a real Redis (conftest's
    redis_url: $REDIS_URL, else a redis-server of the test's own on 6390-6399). Yields (url, store, lang)."""
    kind, lang = request.param
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for name in ("VIT_EXPLORER_MODEL", "REDIS_URL"):
        env.pop(name, None)
    if kind == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    with streamlit_server(env, class_port()) as url:
        yield url, kind, lang


def open_page(browser, url: str):
    page = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
    page.goto(url)
    page.wait_for_selector(IDLE, timeout=180_000)
    return page


def heading(page, text: str, timeout: float = 60_000):
    page.wait_for_selector(f'[data-testid="stMain"] h1:has-text("{text}")', timeout=timeout)


def nav(page, key: str, lang: str):
    page.locator('[data-testid="stSidebarNav"]').get_by_text(translate(key, lang), exact=True).click()


def shot(page, name: str):
    page.wait_for_selector(IDLE, timeout=60_000)
    time.sleep(0.8)  # plotly finishes drawing
    page.screenshot(path=str(ARTIFACTS / f"classroom_{name}.png"), full_page=True)


def answer_of_cls_patch():
    """The model's own answer to the first question, computed here from vit_core (the test's oracle)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from apptest import live_trace
    from vit_core.classroom import questions

    _, card, trace = live_trace()
    return questions.make("cls_patch", trace, card).answer, trace.grid


def test_students_follow_the_teacher_and_the_teacher_sees_their_answers(server, browser):
    server, kind, lang = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    other = "zh" if lang == "en" else "en"
    teacher = open_page(browser, f"{server}/classroom?lang={lang}")
    teacher.get_by_role("button", name=translate("classroom.start.button", lang), exact=True).last.click()
    link = teacher.locator('[data-testid="stMain"] [data-testid="stCode"]').first
    link.wait_for(timeout=60_000)
    code = re.search(r"class=([A-Z0-9]+)", link.inner_text())[1]
    assert teacher.get_by_text(translate("classroom.teacher.in_process", lang)).count() == (kind == "memory")
    assert teacher.locator('[data-testid="stMain"] img').count() >= 1, "the QR code"

    students = []
    for s_lang, url in ((other, f"{server}/classroom?class={code}&lang={other}"), (lang, f"{server}/classroom?lang={lang}")):
        s = open_page(browser, url)
        box = s.get_by_role("textbox", name=translate("classroom.join.code", s_lang))
        if not box.input_value():  # the second student types the code, in lower case
            box.fill(code.lower())
        s.get_by_role("textbox", name=translate("classroom.join.name", s_lang)).fill(f"<b>{s_lang}</b> *student*")
        s.get_by_role("button", name=translate("classroom.join.button", s_lang), exact=True).click()
        s.locator('[data-testid="stSidebar"]').get_by_text(translate("classroom.bar.follow", s_lang), exact=True) \
            .wait_for(timeout=60_000)
        s.get_by_text(f"<b>{s_lang}</b> *student*").wait_for(timeout=60_000)  # the typed name, shown as typed
        students.append((s, s_lang))
    shot(students[0][0], f"{lang}_student_{other}_joined")

    # the teacher opens step 1 and clicks a patch: both students follow, page and patch
    latencies = []
    started = time.perf_counter()
    nav(teacher, "app.nav.step1", lang)
    for s, s_lang in students:
        heading(s, translate("step1.title", s_lang))
    latencies.append(time.perf_counter() - started)
    heading(teacher, translate("step1.title", lang))
    teacher.wait_for_selector('[data-testid="stMain"] .js-plotly-plot', timeout=60_000)
    teacher.wait_for_selector(IDLE, timeout=60_000)
    x, y = teacher.evaluate(CLICK_POINT, [1, 5])
    started = time.perf_counter()
    teacher.mouse.click(x, y)
    picked = """() => { const i = document.querySelectorAll('[data-testid="stMain"] [data-testid="stNumberInput"] input');
                        return i.length >= 2 && i[0].value === '1' && i[1].value === '5'; }"""
    for s, _ in students:
        s.wait_for_function(picked, timeout=60_000)
    latencies.append(time.perf_counter() - started)
    shot(teacher, f"{lang}_teacher_step1")
    for s, s_lang in students:
        assert_no_failure(s, f"student ({s_lang}) on step 1")
        shot(s, f"{lang}_student_{s_lang}_step1")

    # back to the classroom: the teacher asks where CLS looks in layer 1; the students answer by clicking
    started = time.perf_counter()
    nav(teacher, "classroom.nav", lang)
    for s, s_lang in students:
        heading(s, translate("classroom.title", s_lang))
    latencies.append(time.perf_counter() - started)
    teacher.get_by_role("button", name=translate("classroom.ask.button", lang), exact=True).click()
    (r, c), (h, w) = answer_of_cls_patch()
    wrong = (0, 0) if (r, c) != (0, 0) else (h - 1, w - 1)
    for (s, s_lang), (rr, cc) in zip(students, [(r, c), wrong]):
        s.wait_for_selector('[data-testid="stMain"] .js-plotly-plot', timeout=60_000)
        s.wait_for_selector(IDLE, timeout=60_000)
        time.sleep(0.5)
        x, y = s.evaluate(CLICK_POINT, [rr, cc])
        s.mouse.click(x, y)
        s.get_by_text(translate("classroom.student.sent", s_lang, answer=f"({rr}, {cc})")).wait_for(timeout=60_000)
        shot(s, f"{lang}_student_{s_lang}_answered")
    answers = teacher.locator('[data-testid="stMetric"]').filter(has_text=translate("classroom.tally.answers", lang))
    answers.filter(has_text="2").wait_for(timeout=60_000)  # the teacher's live count (every second)
    shot(teacher, f"{lang}_teacher_answers")

    teacher.get_by_role("button", name=translate("classroom.ask.reveal", lang), exact=True).click()
    correct = teacher.locator('[data-testid="stMetric"]').filter(has_text=translate("classroom.tally.correct", lang))
    correct.filter(has_text="50%").wait_for(timeout=60_000)
    teacher.locator('[data-testid="stMain"] .js-plotly-plot').nth(1).wait_for(timeout=60_000)  # the model's map beside the clicks
    assert_no_failure(teacher, "teacher after the reveal")
    shot(teacher, f"{lang}_teacher_revealed")
    for (s, s_lang), (rr, cc), verdict in zip(students, [(r, c), wrong], ["right", "wrong"]):
        s.get_by_text(translate(f"classroom.student.{verdict}", s_lang, answer=f"({rr}, {cc})")).wait_for(timeout=60_000)
        assert_no_failure(s, f"student ({s_lang}) after the reveal")
        shot(s, f"{lang}_student_{s_lang}_revealed")
    load = os.getloadavg()[0] / (os.cpu_count() or 1)  # runnable processes per core, the last minute
    print(f"follow latency ({lang}): page {latencies[0]:.2f} s, patch {latencies[1]:.2f} s, "
          f"back to the classroom {latencies[2]:.2f} s (load {load:.1f} per core)")
    # The server side takes ~0.1-1 s (the students' 1 s poll, then one run); the rest is three Chromium
    # pages drawing their charts on one machine: 0.5-2 s when it is idle, 5-20 s seen on a 2-core box
    # shared at 5-8 runnable processes per core. So the bound (VX_FOLLOW_MAX_S, 10 s) grows with the load.
    limit = float(os.environ.get("VX_FOLLOW_MAX_S", 10)) * max(1.0, load)
    assert max(latencies) < limit, (latencies, load)
    for page in [teacher] + [s for s, _ in students]:
        page.context.close()
