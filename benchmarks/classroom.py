"""A class on one server: N students do a lesson over Streamlit's own WebSocket protocol.

    .venv/bin/python benchmarks/classroom.py [--scenario lesson|same-page|upload] [--students 30]
        [--url http://127.0.0.1:PORT | --app-dir DIR [--app-dir DIR2 ...]] [--model PATH]
        [--think 2 6] [--stagger 30] [--seed 0] [--timeout 120] [--max-seconds 900] [--json OUT]
        [--replicas N [--replicas M ...] [--kill-after S]] [--reconnect] [--laps K] [--quick]

Each student (benchmarks/stclient.py: what a browser tab sends and receives) opens the overview,
walks the six steps and the two labs, changes a few widgets on the way (patch row/column, layer and
head sliders, top-k, the rollout discard ratio, the CNN page's layer) and thinks 2-6 s between clicks
(seeded). Scenarios:
- lesson: students arrive spread over --stagger seconds and go at their own pace;
- same-page: the teacher says "now step N": everyone clicks the same page at the same moment, and
  the next page comes when the slowest is done (plus a think time);
- upload: the lesson, each student first uploading their own photo (a different crop of
  assets/samples/photo_*.jpg, so no two share a trace).
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
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable
from pathlib import Path
from urllib.parse import parse_qs

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stclient import Run, Session, check_loopback, wait_healthy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
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
    out += [f"  error: {e[:200]}" for e in s["errors"][:8]]
    out += [f"  skipped: {k}" for k in s["skipped"][:8]]
    return "\n".join(out)


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
    ap.add_argument("--scenario", choices=["lesson", "same-page", "upload"], default="lesson")
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
    ap.add_argument("--json", type=Path, help="write the numbers here")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if not 1 <= args.students <= 200:
        raise SystemExit("--students must be 1..200")
    summaries = []
    if args.url:
        summaries.append(asyncio.run(measure(check_loopback(args.url), args.pid, args, label=args.url)))
    for i, n in enumerate(args.replicas or []):
        summaries.append(through_nginx(n, args, args.port + 10 * i))
    for i, app_dir in enumerate([] if args.replicas else args.app_dir or ([] if args.url else [ROOT])):
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
    return 0 if all(not s["errors"] and not s["hung"] for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
