"""A class on one server: N students do a lesson over Streamlit's own WebSocket protocol.

    .venv/bin/python benchmarks/classroom.py [--scenario lesson|same-page|upload|follow] [--students 30]
        [--url http://127.0.0.1:PORT | --app-dir DIR [--app-dir DIR2 ...]] [--model PATH]
        [--think 2 6] [--stagger 30] [--seed 0] [--timeout 120] [--max-seconds 900] [--json OUT]
        [--replicas N [--replicas M ...] [--kill-after S]] [--reconnect] [--laps K] [--quick]
        [--store memory|redis [--store ...]] [--redis-url URL] [--catch-up 30] [--no-question]

Each student (benchmarks/stclient.py: what a browser tab sends and receives) opens the overview,
walks the six steps and the two labs, changes a few widgets on the way (patch row/column, layer and
head sliders, top-k, the rollout discard ratio, the CNN page's layer) and thinks 2-6 s between clicks
(seeded). Scenarios:
- lesson: students arrive spread over --stagger seconds and go at their own pace;
- same-page: the teacher says "now step N": everyone clicks the same page at the same moment, and
  the next page comes when the slowest is done (plus a think time);
- upload: the lesson, each student first uploading their own photo (a different crop of
  assets/samples/photo_*.jpg, so no two share a trace);
- follow (issue 12): one teacher and N students in classroom mode. The teacher opens the classroom
  page and clicks "start a class" (the code is read off the link the page shows); the students open
  that link, type a name and join (the form's submit button), and follow. The teacher then changes the
  view (FOLLOW: pages, the patch, layer and head sliders, another sample picture, top-k), --think s
  apart, each change waiting until every student shows it or --catch-up s passed; at the end the
  teacher asks a question (QUESTION) and every student answers. Nobody sleeps to follow: both sides run
  the timed fragments the server asks for (the teacher's 0.5 s broadcast and 1 s count of answers, the
  student's 1 s tick), as a browser's timers do. The follow latency of a change is from the teacher's
  click (the BackMsg of the change) to the end of the first run of the student's session after which
  its page and address (query parameters but lang) are the teacher's. It includes the teacher's own
  run, the wait for the broadcast (at the top of the click's run for a page or the sidebar's picture;
  on the next 0.5 s tick for a widget inside a page section, whose rerun does not reach the sidebar)
  and the wait for the student's next 1 s tick. With a redis-server of its own the benchmark also
  clocks it from the store write (keyspace notifications on the view key). Reported: p50/p95/max per
  change and over all, students who never caught up, the question shown / answered / counted, and
  with --store redis the Redis load from INFO (commands per s from commandstats before and after,
  commands inside Lua scripts counted too, the benchmark's own left out; instantaneous_ops_per_sec and
  used_memory sampled each second). Each --store gets a server of its own (and, for redis without
  --redis-url, a redis-server of its own on a free port of 6390-6399).
`--model PATH` starts the server with that default model (benchmarks/make_vit_b16.py makes a
ViT-B/16-sized one). A latency is one click: from the BackMsg to the run's script_finished and the
new images fetched. Every number is printed as the same table; --json writes them.

Without --url it starts `streamlit run app.py` from each --app-dir (default: this checkout) on
127.0.0.1, one after the other with the same seed, so two versions of the code are measured side by
side in one run. Errors are exception elements, st.error alerts, failed uploads or media, compile
errors and pages not found; a hung session is a click with no script_finished within --timeout.

`--replicas N` runs the class through deploy/local.py instead (nginx and N warmed replicas; repeat it
to measure 1 against 2 replicas in one run) and reports the sessions per replica and every HTTP
request (uploads, pictures) answered by another replica than its session's. `--kill-after S` kills
replica r0 S seconds in: its students reconnect through nginx as a browser does, and the report says
how many came back, how fast, on which replica, whether the rest noticed, and whether each got its
view back (VIEW_PARAMS below: the page, every query parameter, every widget's shown value, and an
uploaded photo asked for again).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl


sys.path.insert(0, str(Path(__file__).resolve().parent))
from stclient import Run, Session, check_loopback, free_ports, wait_healthy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PHOTOS = sorted((ROOT / "assets" / "samples").glob("photo_*.jpg"))
HOME = "home"

# The lesson: ("page", url path) or ("set", widget key, fraction of its range / option index).
# A widget the page does not draw (another model, a renamed key) is counted as skipped, not failed.
LESSON = [
    ("page", ""), ("page", "step1_patchify"), ("set", "vx.pick.row", 0.25), ("set", "vx.pick.col", 0.75),
    ("page", "step2_project"), ("page", "step3_position"), ("page", "step4_cls"),
    ("page", "step5_encoder"), ("set", "vx.enc.layer", 1.0), ("set", "vx.enc.head", 0.5),
    ("page", "step6_classify"), ("set", "step6.topk", 1.0),
    ("page", "rollout_lab"), ("set", "rollout.discard", 0.5),
    ("page", "cnn_vs_vit"), ("set", "vx.cnn.layer", 0.5),
]
QUICK_LESSON = [step for step in LESSON if step[0] == "page" or step[1] == "vx.enc.layer"]  # the test suite's


# ---------------------------------------------------------------- one student

@dataclass
class Click:
    label: str  # the page, or "page · widget"
    seconds: float
    bytes: int
    outcome: str
    errors: list[str]
    replica: str | None


# The view a reconnect must give back (issue 10). What a browser keeps across a reconnect is its URL:
# the page's path and the query string, which it sends again in ClientState (with the values of the
# widgets it shows; a new replica has none of the session state behind them). So the view survives a
# failover exactly when the app keeps it in the URL, as ui.view_to_url does after every run (the
# server sends page_info_changed, the browser puts it in its address bar) and ui.view_from_url reads
# it back on a session's first run. These are its parameters (ui.URL_KEYS; lab settings come as
# further JSON-valued parameters, compared like the rest).
VIEW_PARAMS = ("lang", "model", "image", "patch", "layer", "head")


@dataclass
class Recovery:
    """One reconnect after the WebSocket dropped, compared with the view just before the drop."""

    seconds: float  # from the WebSocket's close to the end of the rerun on the new connection
    ok: bool  # that rerun ended cleanly
    page_kept: bool  # the same page
    url_view: list[str]  # which VIEW_PARAMS the URL held before the drop
    query_lost: list[str]  # query parameters whose value the reconnect changed or dropped
    widgets_lost: list[str]  # keyed widgets drawn with another value (the photo's own widgets aside)
    photo: str | None  # a student with an uploaded photo: "kept" (still shown), "offered" (the uploader is
    # drawn again with a note saying why), "silent" (the uploader without a note), "dropped" (neither);
    # None for the others
    replica: str | None
    error: str | None = None  # why no reconnect was possible

    @property
    def view_kept(self) -> bool:
        return self.ok and self.page_kept and not self.query_lost and not self.widgets_lost


@dataclass
class StudentResult:
    name: str
    clicks: list[Click] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    replicas: list[str] = field(default_factory=list)
    affinity_breaks: list[str] = field(default_factory=list)
    pinned: dict[str, int] = field(default_factory=dict)  # HTTP requests answered by the session's replica
    upload_shown: bool | None = None  # upload scenario: the app shows the uploaded photo's name
    unfinished: bool = False  # stopped by --max-seconds, a hang or a lost connection
    ended: float = 0.0  # when the session closed (time.monotonic)


def photo_for(rng: random.Random, name: str) -> tuple[str, bytes]:
    """The student's own photo: a random crop of a sample photo, so no two students send the same bytes."""
    from PIL import Image

    img = Image.open(rng.choice(PHOTOS)).convert("RGB")
    w, h = img.size
    cw, ch = int(w * rng.uniform(0.6, 0.95)), int(h * rng.uniform(0.6, 0.95))
    x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
    buf = io.BytesIO()
    img.crop((x, y, x + cw, y + ch)).save(buf, "JPEG", quality=rng.randrange(80, 95))
    return f"{name}.jpg", buf.getvalue()


class Student:
    def __init__(self, base: str, name: str, rng: random.Random, *, think: tuple[float, float], timeout: float,
                 deadline: float, reconnect: bool, locale: str = "en-US"):
        self.s = Session(base, locale=locale, timeout=timeout)
        self.name, self.rng, self.think_range, self.deadline = name, rng, think, deadline
        self.reconnect = reconnect
        self.result = StudentResult(name)
        self.lost = False
        self.photo: str | None = None  # the name of the photo this student uploaded, while the app shows it

    def record(self, label: str, run: Run) -> Run:
        self.result.clicks.append(Click(label, run.seconds, run.bytes, run.outcome, run.errors, run.replica))
        return run

    async def act(self, label: str, action, page: str | None = None) -> Run | None:
        """One click (towards `page`, default: this one); a dropped connection is recovered (new
        WebSocket, the same view) when --reconnect."""
        view = self.s.view() | {"page": self.s.page() if page is None else page}
        run = self.record(label, await action())
        if run.outcome == "disconnected" and self.reconnect:
            await self.recover(view)
        elif run.outcome != "ok":
            self.lost = True
        return run

    async def recover(self, view: dict):
        query = parse_qs(self.s.query)
        try:
            run = await self.s.reconnect()
        except Exception as err:  # noqa: BLE001 - no server left to take it: this session is lost
            self.result.recoveries.append(Recovery(time.monotonic() - self.s.closed_at, False, False, [], [], [],
                                                   None, None, error=f"{type(err).__name__}: {err}"))
            self.lost = True
            return
        now, query_now = self.s.view(), parse_qs(self.s.query)
        photo = None
        if self.photo:
            uploader = self.s.widget("vx.upload") is not None
            photo = ("kept" if self.photo in self.s.captions else "dropped" if not uploader else
                     "offered" if self.s.notes else "silent")
            self.photo = self.photo if photo == "kept" else None
        self.result.recoveries.append(Recovery(
            time.monotonic() - self.s.closed_at, run.outcome == "ok" and not run.errors,
            page_kept=now["page"] == view["page"], url_view=[k for k in VIEW_PARAMS if k in query],
            # the URL names an own photo only as "image=upload": in its place the app shows a sample
            query_lost=[k for k in query if query_now.get(k) != query[k] and not (k == "image" and photo != "kept")],
            # a widget the page no longer draws is not lost: it shows again when the student goes back
            widgets_lost=[k for k in view if k != "page" and k in now and view[k] != now[k]],
            photo=photo, replica=run.replica))
        if run.errors or run.outcome != "ok":
            self.record(f"{self.s.page() or HOME} · reconnect", run)

    async def think(self):
        """Read the page for 2-6 s; if the server drops the connection meanwhile, reconnect at once
        (the browser does that in the background)."""
        pause = self.rng.uniform(*self.think_range)
        try:
            await asyncio.wait_for(self.s.closed.wait(), pause)
        except asyncio.TimeoutError:
            return
        if self.reconnect:
            await self.recover(self.s.view())
        else:
            self.lost = True

    async def step(self, step, lap: int = 1):
        kind, target, *arg = step
        again = f" (lap {lap})" if lap > 1 else ""
        if kind == "page":
            if target not in self.s.pages:
                self.result.skipped.append(f"page {target}")
                return
            await self.act((target or HOME) + again, lambda: self.s.goto(target), page=target)
            return
        w = self.s.widget(target)
        if w is None:
            self.result.skipped.append(f"{self.s.page() or HOME} · {target}")
            return
        value = pick(w, arg[0] if lap == 1 else 1 - arg[0])  # another value on a second lap: a real change
        await self.act(f"{self.s.page() or HOME} · {target}{again}", lambda: self.s.set(target, value))

    async def upload_photo(self):
        src = self.s.widget("vx.image_source")
        if src is None or len(src.options) < 2:
            self.result.skipped.append("upload: no image source control")
            return
        await self.act(f"{HOME} · upload source", lambda: self.s.set("vx.image_source", 1))
        name, data = photo_for(self.rng, self.name)
        await self.act(f"{HOME} · upload", lambda: self.s.upload("vx.upload", name, data))
        self.result.upload_shown = name in self.s.captions
        self.photo = name if self.result.upload_shown else None

    async def open(self):
        await self.act(HOME, self.s.open)

    async def lesson(self, steps, *, upload: bool = False, laps: int = 1):
        try:
            await self.open()
            if upload and not self.lost:
                await self.think()
                await self.upload_photo()
            plan = [(1, step) for step in steps[1:]] + [(lap, step) for lap in range(2, laps + 1) for step in steps]
            for lap, step in plan:
                if self.lost or time.monotonic() > self.deadline:
                    self.result.unfinished = True
                    break
                await self.think()
                await self.step(step, lap)
        finally:
            await self.done()

    async def tick(self, stop: asyncio.Event, label: str) -> bool:
        """One run of the session's timed fragments, when the browser's timer sends it (recorded as `label`);
        False once `stop` is set or the session is lost."""
        run = await self.s.autorun(stop)
        if run is not None:
            self.record(label, run)
            self.lost |= run.outcome != "ok"
        return run is not None and not self.lost

    async def done(self):
        self.result.unfinished |= self.lost
        self.result.replicas = self.s.replicas_seen
        self.result.affinity_breaks = self.s.affinity_breaks
        self.result.pinned = self.s.pinned
        self.result.ended = time.monotonic()
        await self.s.close()


def pick(w, arg):
    """A value for widget `w`: `arg` is a fraction of a numeric range, or an option index for a choice."""
    if w.options:
        return min(int(arg * (len(w.options) - 1)), len(w.options) - 1) if isinstance(arg, float) else arg
    p = w.proto
    lo, hi = float(p.min), float(p.max)
    step = float(p.step) or 1.0
    value = lo + round(arg * (hi - lo) / step) * step
    if w.kind == "slider" and len(p.default) == 2:  # a range slider: keep the lower end
        return [lo, value]
    return value


# ---------------------------------------------------------------- scenarios

@dataclass
class Kill:
    """The failover check: `kill()` ends replica `replica` `after` seconds into the class (a crash);
    the students reconnect when their connection drops."""

    replica: str
    after: float
    kill: Callable[[], None]
    at: float = 0.0  # when it happened (time.monotonic)

    async def run(self, started: float):
        await asyncio.sleep(max(0.0, started + self.after - time.monotonic()))
        self.kill()
        self.at = time.monotonic()


async def run_class(base: str, args, *, kill: Kill | None = None) -> list[StudentResult]:
    """All students of one scenario; with `kill`, a replica dies under them and they reconnect."""
    reconnect = kill is not None or args.reconnect
    steps = QUICK_LESSON if args.quick else LESSON
    deadline = time.monotonic() + args.max_seconds
    students = [Student(base, f"student{i:02d}", random.Random(f"{args.seed}-{i}"), think=tuple(args.think),
                        timeout=args.timeout, deadline=deadline, reconnect=reconnect,
                        locale="zh-CN" if i % 3 == 2 else "en-US")
                for i in range(args.students)]
    side = asyncio.create_task(kill.run(time.monotonic())) if kill else None
    if args.scenario == "same-page":
        await same_page(students, steps, args)
    else:
        async def one(st: Student, offset: float):
            await asyncio.sleep(offset)
            await st.lesson(steps, upload=args.scenario == "upload", laps=args.laps)

        rng = random.Random(args.seed)
        await asyncio.gather(*(one(st, rng.uniform(0, args.stagger)) for st in students))
    if side:
        await side
    return [st.result for st in students]


async def same_page(students: list[Student], steps, args):
    """The teacher's pace: everyone opens the app, then all click the same page (or widget) at once;
    the next click comes when the slowest student is done, after a think time."""
    rng = random.Random(args.seed)
    try:
        await asyncio.gather(*(st.open() for st in students))
        for step in steps[1:]:
            await asyncio.sleep(rng.uniform(*args.think))
            await asyncio.gather(*(st.step(step) for st in students if not st.lost))
    finally:
        await asyncio.gather(*(st.done() for st in students))


# ---------------------------------------------------------------- follow: one teacher, the class follows

# What the teacher changes, one at a time, as LESSON's steps; ("sample",) picks another sample picture in
# the sidebar. Each change must change the teacher's address (page or query), which is how it is detected.
FOLLOW = [("page", "step1_patchify"), ("set", "vx.pick.row", 0.25), ("set", "vx.pick.col", 0.75),
          ("page", "step5_encoder"), ("set", "vx.enc.layer", 1.0), ("set", "vx.enc.head", 0.5), ("sample",),
          ("page", "step6_classify"), ("set", "step6.topk", 0.3), ("page", "classroom")]
QUICK_FOLLOW = [("page", "step1_patchify"), ("set", "vx.pick.row", 0.25), ("page", "step5_encoder"),
                ("set", "vx.enc.layer", 1.0), ("sample",), ("page", "classroom")]
QUESTION = "predict"  # asked at the end (a choice: students pick one class)
NOT_FOLLOWED = ("lang", "class", "teacher")  # query parameters a student need not share: each keeps their language


@dataclass
class Change:
    """One change of the teacher's view and who caught up with it. Clocks (time.monotonic): `clicked`,
    the teacher's click (its BackMsg); `at`, the end of the teacher's run (script_finished: the teacher's
    screen shows it); `stored`, the store write that carried it (Redis only, from keyspace
    notifications). The teacher's broadcast (a fragment in the sidebar, every 0.5 s and at the top of
    each full run) writes it at the start of the click's run (a page, the sidebar's picture) or on the
    next tick (a widget inside a page section: that rerun does not reach the sidebar)."""

    label: str
    clicked: float
    at: float
    page_hash: str
    params: dict  # the teacher's query parameters after it, but NOT_FOLLOWED
    caught: dict = field(default_factory=dict)  # student -> when the run that first showed it ended
    stored: float | None = None

    @property
    def teacher_s(self) -> float:
        return self.at - self.clicked

    def shown_by(self, s: Session) -> bool:
        q = dict(parse_qsl(s.query, keep_blank_values=True))
        return s.page_hash == self.page_hash and all(q.get(k) == v for k, v in self.params.items())


@dataclass
class Board:
    """What the benchmark knows of the class: the code, who joined, the teacher's changes, the question."""

    students: int
    code: str | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    joined: set = field(default_factory=set)
    tried: int = 0  # students done joining (in or not)
    changes: list = field(default_factory=list)
    everyone: asyncio.Event = field(default_factory=asyncio.Event)  # every joined student shows the last change
    asked_at: float | None = None
    shown: dict = field(default_factory=dict)  # student -> s from the ask to the run that drew the question
    answered: dict = field(default_factory=dict)  # student -> when the answer was stored (monotonic)
    counted_s: float | None = None  # the last answer stored -> the teacher's count shows every answer

    def seen(self, st: "Student") -> None:
        """After each of a student's runs: does it now show the teacher's last change (or the question)?"""
        c = self.changes[-1] if self.changes else None
        if c is not None and st.name not in c.caught and st.name in self.joined and c.shown_by(st.s):
            c.caught[st.name] = st.s.last_run_end
            if len(c.caught) >= len(self.joined):
                self.everyone.set()
        if self.asked_at is not None and st.name not in self.shown and question_widgets(st.s):
            self.shown[st.name] = max(0.0, st.s.last_run_end - self.asked_at)

    def begin(self, c: Change, students: list["Student"]) -> None:
        self.changes.append(c)
        self.everyone.clear()
        if not self.joined:
            self.everyone.set()
        for st in students:  # a student between runs may show it already
            if not st.s._lock.locked():
                self.seen(st)

    def summary(self, writes: list[float] | None = None) -> dict:
        """`writes`: when the class's view was written to the store (Redis keyspace notifications)."""
        for c in self.changes:  # the write that carried it: the last one between the click and the first catch-up
            first = min(c.caught.values(), default=float("inf"))
            c.stored = max((w for w in writes or [] if c.clicked <= w <= first), default=None)
        late = [self.students - len(c.caught) for c in self.changes]
        secs = [t - c.clicked for c in self.changes for t in c.caught.values()]
        stored = [t - c.stored for c in self.changes if c.stored is not None for t in c.caught.values()]
        shown = list(self.shown.values())
        return {"changes": [{"label": c.label, "teacher_s": c.teacher_s, "caught": len(c.caught),
                             "stored_s": None if c.stored is None else c.stored - c.clicked,
                             **row_s([t - c.clicked for t in c.caught.values()])} for c in self.changes],
                "joined": len(self.joined), "latency": row_s(secs), "from_store": row_s(stored) if stored else None,
                "never_caught_up": sum(late),
                "students_behind": len({n for n in self.joined for c in self.changes if n not in c.caught}),
                "all_caught_up": bool(self.changes) and all(len(c.caught) == self.students for c in self.changes),
                "question": None if self.asked_at is None else {
                    "shown": len(shown), **{f"shown_{k}": v for k, v in row_s(shown).items()},
                    "answered": len(self.answered), "counted_s": self.counted_s}}


def row_s(secs: list[float]) -> dict:
    return {"p50_s": pct(secs, 0.5), "p95_s": pct(secs, 0.95), "max_s": max(secs, default=float("nan"))}


def question_widgets(s: Session):
    """The answer form of a choice question: (the radio, its send button), or None."""
    radio = next((w for w in s.widgets.values() if w.kind == "radio" and w.key.startswith("classroom.answer.")), None)
    send = radio and s.widget(radio.key + ".send")
    return (radio, send) if radio and send else None


class Follower(Student):
    """A student who joins by code from the teacher's link and follows: what they see changes only
    through their session's 1 s tick (the browser's auto-rerun timer), which takes the teacher's view."""

    async def follow(self, board: Board, stop: asyncio.Event, offset: float):
        try:
            await asyncio.sleep(offset)
            await board.started.wait()
            if board.code and await self.join(board):
                board.joined.add(self.name)
                board.seen(self)
            board.tried += 1
            while not (stop.is_set() or self.lost) and await self.tick(stop, "follow tick"):
                board.seen(self)
                if board.asked_at is not None and self.name not in board.answered and question_widgets(self.s):
                    await self.answer(board)
        finally:
            await self.done()

    async def join(self, board: Board) -> bool:
        await self.act("classroom (the class link)", lambda: self.s.open("classroom", f"class={board.code}"))
        if self.lost or self.s.widget("classroom.name") is None:
            self.result.skipped.append("classroom: no join form")
            return False
        self.s.fill("classroom.name", self.name)
        await self.act("classroom · join", lambda: self.s.submit("classroom.join"))
        return not self.lost and any(board.code in t for t in self.s.texts)

    async def answer(self, board: Board):
        await self.think()
        radio, _ = question_widgets(self.s) or (None, None)
        if radio is None or self.lost:
            return
        await self.act("classroom · pick an answer", lambda: self.s.set(radio.key, self.rng.randrange(len(radio.options))))
        found = question_widgets(self.s)
        if found and not self.lost:
            await self.act("classroom · send the answer", lambda: self.s.set(found[1].key, True))
            if not self.lost:
                board.answered[self.name] = self.s.last_run_end


class Lead(Student):
    """The teacher: starts the class on the classroom page, changes the view, asks a question. Their
    session's own timed fragments (the 0.5 s broadcast, the 1 s count of answers) run meanwhile."""

    async def ticks(self, stop: asyncio.Event):
        while not (stop.is_set() or self.lost) and await self.tick(stop, "teacher tick"):
            pass

    async def start(self) -> str | None:
        await self.act("teacher: open the classroom page", lambda: self.s.open("classroom"))
        if self.lost or self.s.widget("classroom.start") is None:
            self.result.skipped.append("classroom: no start button")
            return None
        await self.act("teacher: start a class", lambda: self.s.set("classroom.start", True))
        return next((m[1] for t in self.s.texts if (m := re.search(r"[?&]class=([0-9A-Z]+)", t))), None)

    async def change(self, step) -> Change | None:
        kind, *rest = step
        before = (self.s.page_hash, self.params())
        if kind == "page":
            if rest[0] not in self.s.pages:
                self.result.skipped.append(f"page {rest[0]}")
                return None
            label, run = rest[0], await self.act(f"teacher: {rest[0]}", lambda: self.s.goto(rest[0]), page=rest[0])
        else:
            key = "vx.sample" if kind == "sample" else rest[0]
            w = self.s.widget(key)
            if w is None:
                self.result.skipped.append(f"{self.s.page() or HOME} · {key}")
                return None
            value = (next(i for i, o in enumerate(w.options) if o != self.s.values.get(w.id)) if kind == "sample"
                     else pick(w, rest[1]))
            label = f"{self.s.page() or HOME} · {key}"
            run = await self.act(f"teacher: {label}", lambda: self.s.set(key, value))
        if self.lost:
            return None
        if (self.s.page_hash, self.params()) == before:
            self.result.skipped.append(f"{label}: the view did not change")
            return None
        return Change(label, self.s.last_run_end - run.seconds, self.s.last_run_end, self.s.page_hash, self.params())

    def params(self) -> dict:
        return {k: v for k, v in parse_qsl(self.s.query, keep_blank_values=True) if k not in NOT_FOLLOWED}

    async def ask(self, board: Board, template: str, timeout: float):
        """Ask `template`; wait until every student's answer is in the teacher's count."""
        from vit_core.classroom import questions
        from vit_core.i18n import translate

        ids = list(questions.templates())
        if self.s.widget("classroom.template") is None or template not in ids:
            self.result.skipped.append("classroom: no question picker")
            return
        await self.act("teacher: pick a question", lambda: self.s.set("classroom.template", ids.index(template)))
        run = await self.act("teacher: ask", lambda: self.s.set("classroom.ask", True))
        if self.lost:
            return
        board.asked_at = self.s.last_run_end - run.seconds  # the click
        label, deadline = translate("classroom.tally.answers", "en"), time.monotonic() + timeout
        while time.monotonic() < deadline and not self.lost:
            everyone = len(board.answered) >= len(board.joined)
            if everyone and self.s.metrics.get(label) == str(len(board.joined)):
                board.counted_s = max(0.0, self.s.last_run_end - max(board.answered.values()))
                return
            await asyncio.sleep(0.05)


async def follow_class(base: str, args) -> tuple[list[StudentResult], Board]:
    """The teacher starts a class; the students join by code and follow; the teacher changes the view
    (FOLLOW), waiting after each change until every student shows it (at most --catch-up s) and then a
    think time; at the end the teacher asks QUESTION and every student answers."""
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.max_seconds
    teacher = Lead(base, "teacher", random.Random(f"{args.seed}-teacher"), think=tuple(args.think),
                   timeout=args.timeout, deadline=deadline, reconnect=False)
    students = [Follower(base, f"student{i:02d}", random.Random(f"{args.seed}-{i}"), think=tuple(args.think),
                         timeout=args.timeout, deadline=deadline, reconnect=False,
                         locale="zh-CN" if i % 3 == 2 else "en-US") for i in range(args.students)]
    board, stop = Board(args.students), asyncio.Event()
    followers = [asyncio.create_task(st.follow(board, stop, rng.uniform(0, args.stagger))) for st in students]
    ticks = None
    try:
        board.code = await teacher.start()
        board.started.set()
        if board.code is None:
            return [teacher.result] + [st.result for st in students], board
        ticks = asyncio.create_task(teacher.ticks(stop))
        while board.tried < args.students and time.monotonic() < deadline and not teacher.lost:
            await asyncio.sleep(0.1)
        for step in QUICK_FOLLOW if args.quick else FOLLOW:
            if teacher.lost or time.monotonic() > deadline:
                teacher.result.unfinished = True
                break
            await asyncio.sleep(rng.uniform(*args.think))
            c = await teacher.change(step)
            if c is None:
                continue
            board.begin(c, students)
            try:
                await asyncio.wait_for(board.everyone.wait(), args.catch_up)
            except asyncio.TimeoutError:
                pass
        if not teacher.lost and teacher.s.page() == "classroom" and not args.no_question:
            await teacher.ask(board, QUESTION, args.catch_up + 2 * args.think[1])
    finally:
        board.started.set()
        stop.set()
        await asyncio.gather(*followers, *([ticks] if ticks else []))
        await teacher.done()
    return [teacher.result] + [st.result for st in students], board


class RedisServer:
    """A redis-server of our own on a free loopback port (6390-6399), no persistence; tests/conftest.py
    starts the tests' one with it."""

    def __init__(self, port: int | None = None):
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not installed (apt-get install -y redis-server), or pass --redis-url")
        self.port = port or free_ports(1, 6390, 6399)[0]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class RedisWatch:
    """The class's load on Redis, from INFO: commands (the benchmark's own left out) and memory before,
    during (instantaneous_ops_per_sec and used_memory, sampled each second) and after. With `notify`
    (a Redis of our own) it also turns on keyspace notifications for string writes and timestamps every
    write of a class's view (`writes`): the store-write clock of the follow latency."""

    OWN = ("info", "config|set", "config", "psubscribe", "punsubscribe")  # the watch's commands, not the app's

    def __init__(self, url: str, *, notify: bool = False):
        import redis

        self.r = redis.Redis.from_url(url)
        self.writes: list[float] = []
        self.listener = None
        if notify:
            self.r.config_set("notify-keyspace-events", "K$")
            db = self.r.connection_pool.connection_kwargs.get("db", 0)
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe(**{f"__keyspace@{db}__:vx:class:*:view": self._written})
            self.listener = pubsub.run_in_thread(sleep_time=0.005, daemon=True)
        self.t0, self.before = time.monotonic(), self.info()
        self.ops, self.memory = [], []

    def _written(self, message):
        if message.get("data") in (b"set", "set"):
            self.writes.append(time.monotonic())

    def info(self) -> dict:
        stats, memory = self.r.info("commandstats"), self.r.info("memory")
        calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()
                 if k.removeprefix("cmdstat_") not in self.OWN}
        return {"calls": calls, "used_memory": memory["used_memory"]}

    async def sample(self, stop: asyncio.Event):
        while not stop.is_set():
            info = await asyncio.to_thread(self.r.info, "stats")
            mem = await asyncio.to_thread(self.r.info, "memory")
            self.ops.append(info["instantaneous_ops_per_sec"])
            self.memory.append(mem["used_memory"])
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    def summary(self) -> dict:
        if self.listener:
            self.listener.stop()
        after, wall = self.info(), time.monotonic() - self.t0
        calls = {k: n - self.before["calls"].get(k, 0) for k, n in after["calls"].items()}
        calls = {k: n for k, n in sorted(calls.items(), key=lambda kv: -kv[1]) if n}
        total = sum(calls.values())
        return {"commands": total, "commands_per_s": total / wall if wall else 0.0, "calls": calls,
                "ops_per_s_samples_max": max(self.ops, default=0), "ops_per_s_samples_median":
                statistics.median(self.ops) if self.ops else 0, "used_memory_before": self.before["used_memory"],
                "used_memory_after": after["used_memory"], "used_memory_max": max(self.memory + [after["used_memory"]])}


async def measure_follow(base: str, pids: list[int], args, *, label: str, redis_url: str | None,
                         notify: bool = False) -> dict:
    """The follow scenario against a running server; `notify`: the Redis at `redis_url` is ours, so its
    keyspace notifications may be turned on (the store-write clock)."""
    watch, redis_watch = ProcWatch(pids), RedisWatch(redis_url, notify=notify) if redis_url else None
    stop = asyncio.Event()
    samplers = [asyncio.create_task(watch.sample(stop))] + ([asyncio.create_task(redis_watch.sample(stop))]
                                                             if redis_watch else [])
    results, board = await follow_class(base, args)
    stop.set()
    await asyncio.gather(*samplers)
    s = summarise(results, watch.summary(), label=label, args=args)
    return s | {"follow": board.summary(redis_watch and redis_watch.writes),
                "redis": redis_watch.summary() if redis_watch else None,
                "store": "redis" if redis_url else "memory"}


# ---------------------------------------------------------------- the server and its processes

class Server:
    """`streamlit run app.py` from `app_dir` on 127.0.0.1:port, as a classroom server runs it."""

    def __init__(self, app_dir: Path, port: int, *, model: str | None = None, env: dict | None = None):
        self.app_dir, self.port = Path(app_dir).resolve(), port
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        if model:
            env["VIT_EXPLORER_MODEL"] = str(Path(model).resolve())
        else:
            env.pop("VIT_EXPLORER_MODEL", None)
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"classroom-server-{port}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=self.app_dir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_healthy(self.url, proc=self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class ProcWatch:
    """Peak RSS and CPU time of server processes, read from /proc (sampled; VmHWM catches peaks)."""

    def __init__(self, pids: list[int]):
        self.pids = list(pids)
        self.cpu0 = {p: cpu_seconds(p) for p in self.pids}
        self.cpu_last = dict(self.cpu0)  # a process killed mid-run keeps what it had used
        self.peak = {p: 0 for p in self.pids}
        self.t0, self.load0 = time.monotonic(), os.getloadavg()[0]
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)

    async def sample(self, stop: asyncio.Event):
        while not stop.is_set():
            for p in self.pids:
                self.peak[p] = max(self.peak[p], rss_mb(p, "VmRSS"), rss_mb(p, "VmHWM"))
                self.cpu_last[p] = max(self.cpu_last[p], cpu_seconds(p))
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    def summary(self) -> dict:
        wall = time.monotonic() - self.t0
        cpu = {p: max(self.cpu_last[p], cpu_seconds(p)) - self.cpu0[p] for p in self.pids}
        me = resource.getrusage(resource.RUSAGE_SELF)
        return {"wall_s": wall, "peak_rss_mb": dict(self.peak), "peak_rss_mb_total": sum(self.peak.values()),
                "cpu_s": cpu, "cpu_cores_avg": sum(cpu.values()) / wall if wall else 0.0,
                "client_cpu_s": (me.ru_utime + me.ru_stime) - (self.self0.ru_utime + self.self0.ru_stime),
                "load_before": self.load0, "load_after": os.getloadavg()[0], "cpus": os.cpu_count()}


def rss_mb(pid: int, field_name: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except OSError:
        return 0.0


# ---------------------------------------------------------------- the report

def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def failover(results: list[StudentResult], killed: str, at: float) -> dict:
    """Sessions open on the killed replica at `at` against the rest: who was cut, who came back with
    the view, who noticed."""
    open_ = [r for r in results if r.replicas and r.ended > at]
    hit = [r for r in open_ if r.replicas[0] == killed]
    rest = [r for r in open_ if r.replicas[0] != killed]
    recs = [rc for r in hit for rc in r.recoveries]
    photos = [rc.photo for rc in recs if rc.photo]
    return {"killed": killed, "sessions_on_killed": len(hit),
            "recovered": sum(bool(r.recoveries) and all(rc.ok for rc in r.recoveries) for r in hit),
            "recovered_in_5s": sum(bool(r.recoveries) and all(rc.ok and rc.seconds <= 5 for rc in r.recoveries)
                                   for r in hit),
            "page_kept": sum(bool(r.recoveries) and all(rc.page_kept for rc in r.recoveries) for r in hit),
            "view_kept": sum(bool(r.recoveries) and all(rc.view_kept for rc in r.recoveries) for r in hit),
            "lost": sum(not r.recoveries or not all(rc.ok for rc in r.recoveries) for r in hit),
            "recovery_max_s": max((rc.seconds for rc in recs), default=0.0),
            "url_view": sorted({k for rc in recs for k in rc.url_view}),
            "query_lost": sorted({k for rc in recs for k in rc.query_lost}),
            "widgets_lost": sorted({k for rc in recs for k in rc.widgets_lost}),
            "photos": {k: photos.count(k) for k in ("kept", "offered", "silent", "dropped") if k in photos},
            "moved_to": sorted({r.replicas[-1] for r in hit if len(r.replicas) > 1}),
            "others": len(rest), "others_errors": sum(len(c.errors) for r in rest for c in r.clicks),
            "others_disconnected": sum(bool(r.recoveries) or any(c.outcome != "ok" for c in r.clicks) for r in rest)}


def summarise(results: list[StudentResult], procs: dict, *, label: str, args, kill: Kill | None = None) -> dict:
    clicks = [c for r in results for c in r.clicks]
    done = [c for c in clicks if c.outcome == "ok"]
    pages = {}
    for c in done:
        pages.setdefault(c.label, []).append(c)
    rows = {name: row(cs) for name, cs in pages.items()}
    errors = [f"{r.name} {c.label}: {e}" for r in results for c in r.clicks for e in c.errors]
    replicas = {}
    for r in results:
        if r.replicas:
            replicas[r.replicas[0]] = replicas.get(r.replicas[0], 0) + 1
    recoveries = [rc for r in results for rc in r.recoveries]
    return {
        "label": label, "scenario": args.scenario, "students": args.students, "seed": args.seed,
        "model": args.model, "think": args.think, "pages": rows, "all": row(done),
        "errors": errors, "hung": sum(c.outcome == "timeout" for c in clicks),
        "disconnected": sum(c.outcome == "disconnected" for c in clicks),
        "unfinished": sum(r.unfinished for r in results),
        "skipped": sorted({s for r in results for s in r.skipped}),
        "uploads_shown": [r.upload_shown for r in results if r.upload_shown is not None],
        "sessions_per_replica": replicas,
        "sessions_on_two_replicas": sum(len(set(r.replicas)) > 1 and not r.recoveries for r in results),
        "affinity_breaks": [b for r in results for b in r.affinity_breaks],
        "pinned_requests": {k: sum(r.pinned.get(k, 0) for r in results) for k in ("upload", "media", "other")},
        "recoveries": [asdict(rc) | {"view_kept": rc.view_kept} for rc in recoveries],
        "reruns_per_s": len(done) / procs["wall_s"] if procs.get("wall_s") else 0.0,
        "procs": procs,
        "failover": failover(results, kill.replica, kill.at) if kill else None,
        "students_detail": [{"name": r.name, "replicas": r.replicas, "errors": sum(len(c.errors) for c in r.clicks),
                             "recoveries": len(r.recoveries)} for r in results],
    }


def row(clicks: list[Click]) -> dict:
    secs, kb = [c.seconds for c in clicks], [c.bytes / 1000 for c in clicks]
    return {"runs": len(clicks), "p50_s": pct(secs, 0.5), "p95_s": pct(secs, 0.95), "max_s": max(secs, default=0.0),
            "kb_median": statistics.median(kb) if kb else 0.0, "kb_max": max(kb, default=0.0),
            "mb_total": sum(kb) / 1000}


def table(s: dict) -> str:
    out = [f"classroom · {s['label']} · scenario {s['scenario']} · {s['students']} students · seed {s['seed']}"
           f" · model {s['model'] or 'embedded default'} · think {s['think'][0]:g}-{s['think'][1]:g} s",
           f"{'click':<34}{'runs':>6}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'kB med':>9}{'kB max':>9}"]
    for name, r in [*s["pages"].items(), ("ALL", s["all"])]:
        out.append(f"{name[:33]:<34}{r['runs']:>6}{r['p50_s']:>8.2f}{r['p95_s']:>8.2f}{r['max_s']:>8.2f}"
                   f"{r['kb_median']:>9.0f}{r['kb_max']:>9.0f}")
    p = s["procs"]
    out.append(f"errors {len(s['errors'])} · hung {s['hung']} · disconnected {s['disconnected']} · unfinished "
               f"{s['unfinished']} · skipped {len(s['skipped'])} · affinity breaks {len(s['affinity_breaks'])}"
               f" · sent {s['all']['mb_total']:.0f} MB · {s['reruns_per_s']:.2f} reruns/s")
    out.append(f"server: peak RSS {p['peak_rss_mb_total']:.0f} MB ({', '.join(f'{v:.0f}' for v in p['peak_rss_mb'].values())})"
               f" · CPU {p['cpu_cores_avg']:.2f} cores avg over {p['wall_s']:.0f} s"
               f" ({', '.join(f'{v:.0f}' for v in p['cpu_s'].values())} CPU s) · client CPU {p['client_cpu_s']:.0f} s"
               f" · load {p['load_before']:.1f} -> {p['load_after']:.1f} on {p['cpus']} CPUs")
    if s["sessions_per_replica"]:
        out.append("replicas: " + ", ".join(f"{k} {v} sessions" for k, v in sorted(s["sessions_per_replica"].items()))
                   + f" · sessions on two replicas without a failover {s['sessions_on_two_replicas']}")
        n = s["pinned_requests"]
        out.append(f"affinity: {sum(n.values())} HTTP requests answered by the session's own replica ({n['upload']} "
                   f"uploads, {n['media']} media, {n['other']} other), {len(s['affinity_breaks'])} by another")
    if s["recoveries"]:
        rec = s["recoveries"]
        secs = [r["seconds"] for r in rec]
        out.append(f"failover: {len(rec)} reconnects, {sum(r['ok'] for r in rec)} ran cleanly, "
                   f"{sum(r['view_kept'] for r in rec)} kept their view; recovery p50 {pct(secs, .5):.2f} s, "
                   f"max {max(secs):.2f} s")
    if s["failover"]:
        f = s["failover"]
        out.append(f"killed {f['killed']}: {f['sessions_on_killed']} sessions on it, {f['recovered']} recovered on "
                   f"{', '.join(f['moved_to']) or '-'} ({f['recovered_in_5s']} within 5 s, slowest "
                   f"{f['recovery_max_s']:.1f} s), {f['lost']} lost; the other {f['others']} sessions: "
                   f"{f['others_errors']} errors, {f['others_disconnected']} disconnected")
        photos = ", ".join(f"{v} {k}" for k, v in f["photos"].items()) or "-"
        out.append(f"view after the reconnect: page kept {f['page_kept']}/{f['sessions_on_killed']}, whole view kept "
                   f"{f['view_kept']}/{f['sessions_on_killed']}; in the URL: {', '.join(f['url_view']) or 'nothing'} "
                   f"(of {', '.join(VIEW_PARAMS)}); changed: {', '.join(f['query_lost'] + f['widgets_lost']) or '-'}"
                   f"; uploaded photos: {photos}")
    if s["uploads_shown"]:
        out.append(f"uploads shown by the app: {sum(s['uploads_shown'])}/{len(s['uploads_shown'])}")
    if s.get("follow"):
        out += follow_table(s)
    out += [f"  error: {e[:200]}" for e in s["errors"][:8]]
    out += [f"  skipped: {k}" for k in s["skipped"][:8]]
    return "\n".join(out)


def follow_table(s: dict) -> list[str]:
    f, n = s["follow"], s["students"]
    lat = f["latency"]
    store = f["from_store"]
    out = [f"follow ({s['store']} store): {f['joined']}/{n} joined · {len(f['changes'])} changes of the teacher's view"
           f" · follow latency from the teacher's click p50 {lat['p50_s']:.2f} s, p95 {lat['p95_s']:.2f} s, max "
           f"{lat['max_s']:.2f} s" + (f"; from the store write p50 {store['p50_s']:.2f} s, p95 {store['p95_s']:.2f} s, "
                                      f"max {store['max_s']:.2f} s" if store else "")
           + f" · never caught up {f['never_caught_up']} (of {n * len(f['changes'])}; students behind at least"
           f" once {f['students_behind']})",
           f"  {'change (seconds from the teacher click)':<40}{'teacher':>8}{'stored':>8}{'caught':>8}{'p50':>7}"
           f"{'p95':>7}{'max':>7}"]
    for c in f["changes"]:
        stored = "-" if c["stored_s"] is None else f"{c['stored_s']:.2f}"
        out.append(f"  {c['label'][:39]:<40}{c['teacher_s']:>8.2f}{stored:>8}{c['caught']:>5}/{n:<2}{c['p50_s']:>7.2f}"
                   f"{c['p95_s']:>7.2f}{c['max_s']:>7.2f}")
    q = f["question"]
    if q:
        counted = "never" if q["counted_s"] is None else f"{q['counted_s']:.2f} s after the last answer"
        out.append(f"question: shown to {q['shown']}/{n} (after the ask: p50 {q['shown_p50_s']:.2f} s, p95 "
                   f"{q['shown_p95_s']:.2f} s, max {q['shown_max_s']:.2f} s), answered by {q['answered']}/{n}; "
                   f"the teacher's count showed every answer {counted}")
    r = s.get("redis")
    if r:
        top = ", ".join(f"{k} {v}" for k, v in list(r["calls"].items())[:6])
        out.append(f"redis: {r['commands']} commands, {r['commands_per_s']:.1f}/s over the run (instantaneous_ops_per_sec"
                   f" median {r['ops_per_s_samples_median']}, max {r['ops_per_s_samples_max']}); used_memory "
                   f"{r['used_memory_before'] / 2**20:.2f} -> {r['used_memory_after'] / 2**20:.2f} MiB (max "
                   f"{r['used_memory_max'] / 2**20:.2f}); {top}")
    return out


async def measure(base: str, pids: list[int], args, *, label: str, kill: Kill | None = None) -> dict:
    watch = ProcWatch(pids)
    stop = asyncio.Event()
    sampler = asyncio.create_task(watch.sample(stop))
    results = await run_class(base, args, kill=kill)
    stop.set()
    await sampler
    return summarise(results, watch.summary(), label=label, args=args, kill=kill)


def through_nginx(replicas: int, args, port: int) -> dict:
    """The same class through deploy/local.py: nginx and `replicas` warmed replicas; with --kill-after,
    replica r0 is killed that many seconds in and its sessions reconnect through nginx."""
    sys.path.insert(0, str(ROOT / "deploy"))
    from local import Cluster

    with Cluster(replicas, port=port, app_dir=args.app_dir[0] if args.app_dir else ROOT, model=args.model) as c:
        kill = Kill("r0", args.kill_after, lambda: c.kill(0)) if args.kill_after is not None else None
        return asyncio.run(measure(c.url, c.pids(), args, label=f"nginx + {replicas} replicas", kill=kill))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", choices=["lesson", "same-page", "upload", "follow"], default="lesson")
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--url", help="a running server (127.0.0.1 only); else one is started per --app-dir")
    ap.add_argument("--app-dir", action="append", type=Path, help="a checkout to serve (repeatable: measured in turn)")
    ap.add_argument("--pid", action="append", type=int, default=[], help="with --url: server processes to watch")
    ap.add_argument("--model", help="the server's default model (a checkpoint path; started servers only)")
    ap.add_argument("--port", type=int, default=8620, help="first port for started servers")
    ap.add_argument("--think", type=float, nargs=2, default=(2.0, 6.0), metavar=("MIN", "MAX"))
    ap.add_argument("--stagger", type=float, default=30.0, help="lesson/upload: students arrive over this many s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=120.0, help="a click with no answer after this is hung")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="no new click after this")
    ap.add_argument("--replicas", type=int, action="append", help="through nginx with N replicas (deploy/local.py); "
                    "repeatable (--replicas 1 --replicas 2: measured in turn)")
    ap.add_argument("--kill-after", type=float, help="with --replicas: kill replica r0 this many s into the run")
    ap.add_argument("--reconnect", action="store_true", help="a dropped connection reconnects (a replica behind "
                    "--url died; implied by --kill-after) instead of ending the session")
    ap.add_argument("--laps", type=int, default=1, help="go through the lesson this many times (later laps: warm)")
    ap.add_argument("--quick", action="store_true", help="pages only (plus one slider): the test-suite version")
    ap.add_argument("--store", action="append", choices=["memory", "redis"], help="follow: the class store of the "
                    "started server (repeatable: --store memory --store redis are measured in turn; default memory)")
    ap.add_argument("--redis-url", help="follow with --store redis: a running Redis (else a redis-server is started "
                    "on a free port of 6390-6399 and stopped after)")
    ap.add_argument("--catch-up", type=float, default=30.0, help="follow: the teacher's next change comes when every "
                    "student shows the last one, or after this many s")
    ap.add_argument("--no-question", action="store_true", help="follow: no question at the end")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if not 1 <= args.students <= 200:
        raise SystemExit("--students must be 1..200")
    summaries = []
    if args.scenario == "follow":
        if args.url or args.replicas:
            raise SystemExit("--scenario follow starts its own server (--app-dir): no --url, no --replicas")
        for i, store in enumerate(args.store or ["memory"]):
            summaries.append(follow_run(args, store, args.port + i))
    elif args.url:
        summaries.append(asyncio.run(measure(check_loopback(args.url), args.pid, args, label=args.url)))
    for i, n in enumerate(args.replicas or []):
        summaries.append(through_nginx(n, args, args.port + 10 * i))
    for i, app_dir in enumerate([] if args.replicas or args.scenario == "follow" else
                                args.app_dir or ([] if args.url else [ROOT])):
        server = Server(app_dir, args.port + i, model=args.model)
        try:
            summaries.append(asyncio.run(measure(server.url, [server.pid], args, label=str(app_dir))))
        finally:
            server.stop()
    for s in summaries:
        print(table(s), end="\n\n", flush=True)
    if len(summaries) > 1:
        a, b = summaries[0]["all"], summaries[-1]["all"]
        print(f"{summaries[0]['label']} / {summaries[-1]['label']}: p50 x{a['p50_s'] / b['p50_s']:.2f}, "
              f"p95 x{a['p95_s'] / b['p95_s']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=1, default=str))
    return 0 if all(not s["errors"] and not s["hung"] and (not s.get("follow") or s["follow"]["all_caught_up"])
                    for s in summaries) else 1


def follow_run(args, store: str, port: int) -> dict:
    """The follow scenario on a server of its own, its classes in its memory or in Redis."""
    redis = RedisServer() if store == "redis" and not args.redis_url else None
    url = (args.redis_url or redis.url) if store == "redis" else ""
    app_dir = args.app_dir[0] if args.app_dir else ROOT
    try:
        server = Server(app_dir, port, model=args.model, env={"REDIS_URL": url})  # "": this process's memory
        try:
            return asyncio.run(measure_follow(server.url, [server.pid], args, label=f"{app_dir} · {store} store",
                                              redis_url=url or None, notify=redis is not None))
        finally:
            server.stop()
    finally:
        if redis:
            redis.stop()


if __name__ == "__main__":
    sys.exit(main())
