"""The classroom benchmark's short version: 5 students on a real server, over Streamlit's own protocol;
and a teacher with 4 following students through a real Redis.

Asserts what must hold at any speed (no errors, no hung session, every page and widget reached, the
uploads shown, every student caught up with every change of the teacher's view, every answer counted),
never timings; and that the client really sees failures: an exception element, an st.error from the
app, a page that does not exist.
"""

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import classroom  # noqa: E402
from stclient import Session, free_ports  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app_server():
    server = classroom.Server(ROOT, free_ports(1)[0])
    yield server
    server.stop()


def test_five_students_upload_and_walk_every_page_without_errors(app_server):
    args = classroom.parser().parse_args(["--scenario", "upload", "--students", "5", "--quick", "--think", "0.3", "0.8",
                                          "--stagger", "2", "--timeout", "90", "--max-seconds", "120"])
    s = asyncio.run(classroom.measure(app_server.url, [app_server.pid], args, label="test"))
    print(classroom.table(s))
    assert s["errors"] == [] and s["hung"] == 0 and s["disconnected"] == 0 and s["unfinished"] == 0
    assert s["skipped"] == [], "the lesson names a page or widget the app no longer has: update classroom.LESSON"
    assert s["uploads_shown"] == [True] * 5
    pages = [target or classroom.HOME for kind, target, *_ in classroom.QUICK_LESSON if kind == "page"]
    assert all(s["pages"][p]["runs"] == 5 for p in pages)
    assert s["procs"]["peak_rss_mb_total"] > 100  # the watch really read the server's memory


def test_four_students_follow_the_teacher_through_redis(redis_url):
    """The follow scenario, short: the teacher starts a class on the classroom page, 4 students join by
    code and follow while the teacher changes page, patch, layer and picture, then asks a question."""
    args = classroom.parser().parse_args(["--scenario", "follow", "--students", "4", "--quick", "--think", "0.3", "0.6",
                                          "--stagger", "1", "--timeout", "60", "--catch-up", "20", "--max-seconds", "120"])
    server = classroom.Server(ROOT, free_ports(1)[0], env={"REDIS_URL": redis_url})
    try:
        s = asyncio.run(classroom.measure_follow(server.url, [server.pid], args, label="test", redis_url=redis_url))
    finally:
        server.stop()
    print(classroom.table(s))
    f = s["follow"]
    assert s["errors"] == [] and s["hung"] == 0 and s["disconnected"] == 0 and s["unfinished"] == 0
    assert s["skipped"] == [], "the plan names a page or widget the app no longer has: update classroom.QUICK_FOLLOW"
    assert f["joined"] == 4 and len(f["changes"]) == len(classroom.QUICK_FOLLOW)
    assert [c["caught"] for c in f["changes"]] == [4] * len(classroom.QUICK_FOLLOW) and f["all_caught_up"]
    assert f["question"]["shown"] == f["question"]["answered"] == 4 and f["question"]["counted_s"] is not None
    assert s["redis"]["calls"].get("mget", 0) > 0  # the students' ticks really read the class from this Redis


def test_client_sees_an_st_error_the_app_shows(app_server):
    async def go():
        s = Session(app_server.url)
        try:
            assert (await s.open()).errors == []
            await s.set("vx.image_source", 1)
            bad = await s.upload("vx.upload", "broken.png", b"not a picture" * 100, "image/png")
            missing = await s.open("no_such_page")
            return bad, missing
        finally:
            await s.close()

    bad, missing = asyncio.run(go())
    assert bad.outcome == "ok" and len(bad.errors) == 1 and bad.errors[0].startswith("st.error: ")
    assert any("page not found" in e for e in missing.errors)


FAILING_APP = """
    import streamlit as st

    n = st.slider("n", 0, 10, 0, key="n")
    if n > 5:
        raise ValueError(f"n = {n} is too big")
    if st.button("complain", key="complain"):
        st.error("something went wrong")
    st.write("fine")
"""


def test_client_sees_an_exception_element(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent(FAILING_APP))
    server = classroom.Server(tmp_path, free_ports(1)[0])

    async def go():
        s = Session(server.url)
        try:
            runs = [await s.open(), await s.set("n", 3), await s.set("n", 8), await s.set("n", 1),
                    await s.set("complain", True), await s.set("n", 2)]
            return runs
        finally:
            await s.close()

    try:
        ok, fine, broken, again, complained, after = asyncio.run(go())
    finally:
        server.stop()
    assert ok.errors == fine.errors == again.errors == after.errors == []
    assert broken.errors == ["exception: ValueError: n = 8 is too big"]
    assert complained.errors == ["st.error: something went wrong"]
    assert all(r.outcome == "ok" for r in (ok, fine, broken, again, complained, after))
