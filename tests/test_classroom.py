"""Classroom engine: codes, the teacher's token, caps, rate limits and expiry, the same for the
in-process store and for a real Redis; the questions' answers read off live tensors; the tally."""

import json
import re
import threading
import time
import uuid

import pytest

from vit_core import analysis
from vit_core.classroom import questions, store
from vit_core.classroom.store import ClassroomError, ClassStore, MemoryBackend, RedisBackend
from vit_core.i18n import placeholders

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(params=["memory", "redis"])
def cs(request) -> ClassStore:
    """A class store over each backend (Redis: a real server, see conftest.redis_url)."""
    if request.param == "memory":
        return ClassStore(MemoryBackend())
    return ClassStore(RedisBackend(request.getfixturevalue("redis_url")))


def session() -> str:  # a fresh client id, so the rate limits of one test never touch another
    return uuid.uuid4().hex


def refused(key: str):
    return pytest.raises(ClassroomError, match=re.escape(key))


def keys_of(cs: ClassStore, code: str) -> int:
    return cs.backend.count(f"vx:class:{code}")


# ----------------------------------------------------------------------------- codes

def test_codes_are_long_unambiguous_and_not_repeated():
    codes = {store.new_code() for _ in range(20000)}
    # 31⁶ ≈ 8.9e8 possibilities: 20k draws repeat a code 0.22 times on average (n²/2N); five or more
    # repeats have p ≈ 2e-5 for a uniform draw, and would mean a far smaller space
    assert len(codes) >= 20000 - 4
    assert all(len(c) >= 6 and set(c) <= set(store.ALPHABET) for c in codes)
    assert not set("01OIL") & set(store.ALPHABET) and len(store.ALPHABET) >= 30
    assert store.normalise_code(" abc-23x ") == "ABC23X"


def test_names_are_printable_and_short():
    assert store.clean_name("  Ada\u202e\u0000 \n Lovelace\u200b ") == "Ada Lovelace"
    assert store.clean_name("小明") == "小明"
    assert len(store.clean_name("x" * 500)) == store.NAME_CHARS


# ----------------------------------------------------------------------------- both stores, one contract

def test_a_class_round_trip(cs):
    teacher = cs.create()
    assert cs.state(teacher.code).open and cs.state(teacher.code).view is None
    ada = cs.join(teacher.code.lower(), "Ada", session())
    bo = cs.join(f" {teacher.code[:3]}-{teacher.code[3:]} ", "<b>Bo</b>", session())
    assert ada != bo and cs.roster(teacher.code) == ["<b>Bo</b>", "Ada"]  # stored as typed; the app shows it as text

    view = {"page": "step5_encoder", "layer": 2, "patch": [1, 3]}
    view_id = cs.publish(teacher.code, teacher.token, view)
    state = cs.state(teacher.code)
    assert (state.view_id, state.view) == (view_id, view)
    assert cs.publish(teacher.code, teacher.token, dict(view)) == view_id, "the same view keeps its id"
    assert cs.publish(teacher.code, teacher.token, {**view, "layer": 3}) != view_id

    qid = cs.ask(teacher.code, teacher.token, {"template": "predict"})
    assert cs.state(teacher.code).asked.id == qid
    assert cs.answer(teacher.code, ada, qid, 3) and cs.answer(teacher.code, bo, qid, 4)
    assert cs.answer(teacher.code, ada, qid, 5), "a student may change their answer..."
    assert sorted(cs.answers(teacher.code, qid)) == [4, 5], "...but has only one"
    cs.reveal(teacher.code, teacher.token)
    assert cs.state(teacher.code).asked.revealed
    with refused("classroom.error.closed"):
        cs.answer(teacher.code, bo, qid, 3)

    photo = b"\x89PNG fake bytes"
    digest = cs.share_upload(teacher.code, teacher.token, photo)
    assert cs.upload(teacher.code, digest) == photo and cs.upload(teacher.code, "0" * 64) is None
    assert cs.resume(teacher.code.lower(), teacher.token).code == teacher.code

    cs.close(teacher.code, teacher.token)
    assert keys_of(cs, teacher.code) == 0, "ending a class deletes every key of it"
    assert not cs.state(teacher.code).open


def test_every_teacher_action_needs_the_token(cs):
    teacher = cs.create()
    student = cs.join(teacher.code, "Ada", session())
    qid = cs.ask(teacher.code, teacher.token, {"q": 1})
    for wrong in ("", "x", student, teacher.code, teacher.token[:-1]):
        for action, args in [(cs.publish, ({"page": "home"},)), (cs.ask, ({"q": 2},)), (cs.reveal, ()),
                             (cs.share_upload, (b"x",)), (cs.close, ()), (cs.resume, ())]:
            with refused("classroom.error.not_teacher"):
                action(teacher.code, wrong, *args)
    assert cs.state(teacher.code).view is None and cs.state(teacher.code).asked.id == qid
    assert not cs.state(teacher.code).asked.revealed


def test_answers_only_from_the_roster_and_to_the_open_question(cs):
    teacher = cs.create()
    ada = cs.join(teacher.code, "Ada", session())
    first = cs.ask(teacher.code, teacher.token, {"q": 1})
    with refused("classroom.error.unknown_code"):
        cs.answer(teacher.code, "not-a-student", first, 1)
    with refused("classroom.error.unknown_code"):
        cs.answer("ZZZZZZ", ada, first, 1)
    cs.ask(teacher.code, teacher.token, {"q": 2})
    with refused("classroom.error.closed"):
        cs.answer(teacher.code, ada, first, 1)
    with refused("classroom.error.too_large"):
        cs.answer(teacher.code, ada, cs.state(teacher.code).asked.id, "x" * 1000)


def test_writes_are_bounded(cs, monkeypatch):
    monkeypatch.setattr(store, "MAX_STUDENTS", 3)
    monkeypatch.setattr(store, "MAX_UPLOADS", 2)
    monkeypatch.setattr(store, "MAX_UPLOAD_BYTES", 100)
    teacher = cs.create()
    students = [cs.join(teacher.code, f"s{i}", session()) for i in range(3)]
    with refused("classroom.error.full"):
        cs.join(teacher.code, "one too many", session())
    with refused("classroom.error.too_large"):
        cs.publish(teacher.code, teacher.token, {"lab": "x" * store.MAX_VIEW_BYTES})
    with refused("classroom.error.too_large"):
        cs.ask(teacher.code, teacher.token, {"truth": [0.5] * 5000})
    with refused("classroom.error.too_large"):
        cs.share_upload(teacher.code, teacher.token, b"x" * 101)
    cs.share_upload(teacher.code, teacher.token, b"one")
    cs.share_upload(teacher.code, teacher.token, b"two")
    cs.share_upload(teacher.code, teacher.token, b"one")  # the same photo again is no new upload
    with refused("classroom.error.too_many_uploads"):
        cs.share_upload(teacher.code, teacher.token, b"three")
    qid = cs.ask(teacher.code, teacher.token, {"q": 1})
    for s in students * 3:
        cs.answer(teacher.code, s, qid, 1)
    assert len(cs.answers(teacher.code, qid)) == 3


def test_joins_are_rate_limited(cs):
    teacher = cs.create()
    guesser, address = session(), session()
    for _ in range(store.SESSION_FAILURES[0]):
        with refused("classroom.error.unknown_code"):
            cs.join("AAAAAA", "x", guesser, address)
    with refused("classroom.error.too_many"):
        cs.join("AAAAAB", "x", guesser, address)
    # one address (a classroom behind one router) may mistype more, across sessions, but not without end
    tries = store.ADDRESS_FAILURES[0] - store.SESSION_FAILURES[0]
    for _ in range(tries):
        with refused("classroom.error.unknown_code"):
            cs.join("AAAAAA", "x", session(), address)
    with refused("classroom.error.too_many"):
        cs.join("AAAAAA", "x", session(), address)
    assert cs.join(teacher.code, "right code, same address", session(), address), "right codes are not blocked"
    patient = session()
    for _ in range(store.JOINS[0]):
        cs.join(teacher.code, "again", patient)
    with refused("classroom.error.too_many"):
        cs.join(teacher.code, "again", patient)


def test_the_cap_holds_under_concurrent_joins(cs, monkeypatch):
    monkeypatch.setattr(store, "MAX_STUDENTS", 25)
    teacher = cs.create()
    results = []

    def join_many():
        for _ in range(10):
            try:
                results.append(cs.join(teacher.code, "s", session()))
            except ClassroomError as err:
                results.append(err.key)

    threads = [threading.Thread(target=join_many) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(r != "classroom.error.full" for r in results) == 25
    assert len(cs.roster(teacher.code)) == 25


def test_everything_is_deleted_at_expiry(cs):
    teacher = cs.create(lifetime_s=1.0)
    student = cs.join(teacher.code, "Ada", session())
    cs.publish(teacher.code, teacher.token, {"page": "home"})
    qid = cs.ask(teacher.code, teacher.token, {"q": 1})
    cs.answer(teacher.code, student, qid, 1)
    cs.share_upload(teacher.code, teacher.token, b"photo")
    assert keys_of(cs, teacher.code) == 8  # meta, roster, view, asked, question, answers, uploads, the photo
    time.sleep(1.2)
    assert keys_of(cs, teacher.code) == 0
    assert not cs.state(teacher.code).open
    with refused("classroom.error.unknown_code"):
        cs.join(teacher.code, "late", session())


def test_the_memory_store_sweeps_expired_classes():
    now = [1000.0]
    backend = MemoryBackend(clock=lambda: now[0])
    cs = ClassStore(backend, clock=lambda: now[0])
    for _ in range(5):
        teacher = cs.create(lifetime_s=60)
        cs.join(teacher.code, "Ada", session())
    assert len(backend._data) > 10
    now[0] += 61 + backend.SWEEP_S
    cs.create(lifetime_s=60)  # any write sweeps
    assert len(backend._data) == 1, "only the new class is left in memory"


# ----------------------------------------------------------------------------- questions on live tensors

@pytest.fixture(scope="module")
def live(fmnist_model):
    from apptest import live_trace

    _, card, trace = live_trace(fmnist_model)
    return trace, card


def test_templates_are_complete_in_both_languages():
    templates = questions.templates()
    assert {"cls_patch", "predict", "tokens_b16", "heads_rank"} <= set(templates)
    raw = json.loads(questions.TEMPLATES.read_text(encoding="utf-8"))
    assert all("answer" not in t["params"] for t in raw), "answers are computed, never written in the file"
    for t in templates.values():
        for part in (t.title, t.prompt, t.reveal):
            assert set(part) == {"en", "zh"} and CJK.search(part["zh"]), t.id
            assert placeholders(part["en"]) == placeholders(part["zh"]), t.id
        for lang in ("en", "zh"):  # a title says what it asks before any trace: its blanks are the settings
            assert "{" not in questions.title(t.id, lang) and bool(CJK.search(questions.title(t.id, lang))) == (lang == "zh")


def test_templates_keep_to_the_glossary():
    from test_glossary import violations

    texts = {f"questions.{t.id}.{part}": getattr(t, part) for t in questions.templates().values()
             for part in ("title", "prompt", "reveal")}
    assert not violations(texts), violations(texts)


def test_answers_come_from_the_trace(live):
    trace, card = live
    p = trace.num_prefix_tokens
    q = questions.make("cls_patch", trace, card)
    cls_row = trace.attentions[0][0, :, 0, p:].mean(0)  # layer 1, CLS query, every patch key, mean over heads
    assert q.answer == [int(cls_row.argmax()) // trace.grid[1], int(cls_row.argmax()) % trace.grid[1]]
    assert q.grid == list(trace.grid) and len(q.truth) == trace.grid[0] * trace.grid[1]

    q = questions.make("predict", trace, card)
    assert q.answer == int(trace.logits[0].argmax()) and q.answer in q.options
    assert q.labels["zh"][q.options.index(q.answer)] == card.names("zh")[q.answer]

    assert questions.make("tokens_b16", trace, card).answer == 14 * 14 + 1  # ViT-B/16 at 224: 196 patches + CLS
    assert questions.make("tokens_live", trace, card).answer == trace.tokens.shape[1]

    q = questions.make("heads_rank", trace, card)
    dist = analysis.mean_attention_distance(trace.attentions, trace.grid, trace.shapes.P, num_prefix_tokens=p)[0, 0]
    assert [float(dist[h - 1]) for h in q.answer] == sorted(float(dist[h - 1]) for h in q.options)
    assert sorted(q.answer) == q.options


def test_questions_for_a_deit_with_two_prefix_tokens(deit_model):
    from apptest import live_trace

    _, card, trace = live_trace(deit_model)
    q = questions.make("cls_patch", trace, card)
    cls_row = trace.attentions[0][0, :, 0, 2:].mean(0)
    assert q.answer == [int(cls_row.argmax()) // trace.grid[1], int(cls_row.argmax()) % trace.grid[1]]
    q = questions.make("predict", trace, card)
    assert len(q.options) == 10 and q.answer in q.options, "1000 classes: the model's top 10 are offered"
    assert questions.make("tokens_live", trace, card).answer == trace.grid[0] * trace.grid[1] + 2


def test_texts_fill_in_both_languages(live):
    trace, card = live
    for tid in questions.templates():
        q = questions.Question.from_json(json.loads(json.dumps(questions.make(tid, trace, card).to_json())))
        for lang in ("en", "zh"):
            for part in ("prompt", "reveal"):
                text = q.text(part, lang)
                assert "{" not in text and "classroom." not in text, (tid, lang, text)
                assert bool(CJK.search(text)) == (lang == "zh"), (tid, lang, text)
        assert q.label(q.answer, "en") in q.text("reveal", "en") or q.kind == "number"


def test_answers_are_checked_and_tallied(live):
    trace, card = live
    q = questions.make("cls_patch", trace, card)
    h, w = trace.grid
    for bad in (None, "x", [h, 0], [0, -1], [1], {"r": 1}):
        with refused("classroom.error.bad_answer"):
            q.check(bad)
    answers = [q.answer, q.answer, [0, 0], "junk"]
    tl = questions.tally(q, answers)
    assert (tl.n, tl.correct, tl.share) == (3, 2, 2 / 3)
    assert tl.clicks[tuple(q.answer)] == 2 + (q.answer == [0, 0]) and tl.clicks.sum() == 3

    q = questions.make("predict", trace, card)
    tl = questions.tally(q, [q.answer, q.options[0], q.options[0], 99999])
    assert [n for _, n in tl.bars] == [(o == q.options[0]) * 2 + (o == q.answer) for o in q.options]

    q = questions.make("heads_rank", trace, card)
    with refused("classroom.error.bad_answer"):
        q.check(q.answer[:-1])
    assert questions.tally(q, [q.answer, list(reversed(q.answer))]).share == 0.5
