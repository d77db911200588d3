"""A Streamlit client that speaks the browser's own protocol, for load tests and deployment checks.

What a browser tab does, read from Streamlit's server side (runtime/app_session.py,
web/server/starlette/*) and its proto files:
- GET the page, then /_stcore/health (which sets the `_streamlit_xsrf` cookie) and /_stcore/host-config;
- open a WebSocket on /_stcore/stream whose Sec-WebSocket-Protocol values are "streamlit", the XSRF
  cookie and, on a reconnect, the previous session id; every frame is a binary protobuf
  (BackMsg up, ForwardMsg down);
- each run starts with BackMsg(rerun_script=ClientState(query_string, widget_states, page_script_hash
  or page_name, fragment_id, cached_message_hashes, context_info)) and ends at a script_finished that
  is not FINISHED_EARLY_FOR_RERUN (st.rerun, st.switch_page start another run);
- widget values go back as ClientState.widget_states, keyed by the ids of the elements the server sent
  ("$$ID-<hash>-<user key>"), in the value type each widget registers (slider: double_array_value,
  selectbox/radio: the shown label as string_value, ...); a widget inside a fragment reruns only it;
- a page change sends the page's hash from the Navigation message; a first load of a deep link
  sends its URL path as page_name; the query string comes from the URL (the server changes it with
  page_info_changed, a widget bound to a query parameter changes it in the browser);
- big elements are cached by the browser: their hashes go up in cached_message_hashes and the server
  sends a ref_hash instead of the element;
- an upload is a BackMsg file_urls_request, then an HTTP PUT (multipart, field "file") to the URL the
  server answers with, carrying the XSRF cookie's value as X-Xsrftoken, then the widget's
  file_uploader_state_value;
- images are fetched from /media/... over HTTP, once per URL (the browser cache);
- a fragment with run_every sends ForwardMsg auto_rerun (its id and interval) each time a full run draws
  it; the browser then reruns that fragment on a timer (ClientState.is_auto_rerun), one timer per
  fragment, all cleared when a full run starts or the page changes (frontend App.handleAutoRerun):
  autorun() is that timer, so a server-driven view (a classroom's follow mode) arrives as it does in a tab.

Only loopback addresses are accepted: this is a test instrument, not a crawler.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests
from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState, ContextInfo
from streamlit.proto.Common_pb2 import (
    DoubleArray,
    FileUploaderState,
    FileURLs,
    StringArray,
    UploadedFileInfo,
)
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

XSRF_COOKIE = "_streamlit_xsrf"
REPLICA_HEADER = "X-Vx-Replica"  # set by deploy/nginx.conf.template: which replica answered
DONE = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR,
        ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
CACHE_RUNS = 4  # a cached element not seen for this many runs is dropped (the browser's cache ages too)
WIDGET_KINDS = {"slider", "number_input", "selectbox", "radio", "button_group", "checkbox", "button",
                "file_uploader", "camera_input", "text_input", "multiselect"}


class Disconnected(Exception):
    """The WebSocket closed under a run (the replica went away)."""


@dataclass
class Widget:
    id: str
    kind: str  # the Element field: "slider", "number_input", ...
    proto: Any  # that element's message (min, max, options, query_param_key, ...)
    fragment_id: str

    @property
    def key(self) -> str:
        """The user key without the language: "$$ID-<hash>-vx.sample@zh" -> "vx.sample" (ui.choice keys
        a translated widget per language; the stable id is the part before the "@")."""
        return self.id.split("-", 2)[-1].split("@")[0]

    @property
    def options(self) -> list[str]:
        opts = getattr(self.proto, "options", [])
        return [getattr(o, "content", o) for o in opts]

    def drawn(self):
        """The value the server drew the widget with: set_value (from session state or the URL) or
        its default; choices as their labels. The browser shows it unless the student changed it."""
        p, labels = self.proto, self.options
        if self.kind == "slider":
            if labels:
                return tuple(p.raw_value) if p.set_value else tuple(labels[int(i)] for i in p.default)
            return tuple(p.value) if p.set_value else tuple(p.default)
        if self.kind == "number_input":
            return p.value if p.HasField("value") else p.default
        if self.kind in ("selectbox", "radio"):
            if p.set_value and p.HasField("raw_value"):
                return p.raw_value
            return labels[p.default] if p.HasField("default") and labels else None
        if self.kind == "button_group":
            return tuple(p.raw_values) if p.set_value else tuple(labels[i] for i in p.default)
        if self.kind == "checkbox":
            return p.value if p.set_value else p.default
        return None


def state_value(state: WidgetState):
    """What a WidgetState holds, in the form Widget.drawn() gives."""
    v = getattr(state, state.WhichOneof("value"))
    return tuple(v.data) if hasattr(v, "data") else v


@dataclass
class Run:
    """One click as the student saw it: from the BackMsg to the run's end (and its new images)."""

    page: str
    seconds: float
    bytes: int  # WebSocket payload (decompressed) + media fetched for this run
    errors: list[str]
    outcome: str = "ok"  # "ok" | "timeout" | "disconnected"
    replica: str | None = None


@dataclass
class _Pending:
    started: float
    done: asyncio.Future
    fragment: bool
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    widgets: dict[str, Widget] = field(default_factory=dict)
    media: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    metrics: dict[str, str] = field(default_factory=dict)

    def restart(self, fragment: bool):
        """A new script run inside this click (st.rerun, st.switch_page): its elements replace the last run's."""
        self.fragment = fragment
        self.widgets, self.media, self.captions, self.notes, self.texts, self.metrics = {}, [], [], [], [], {}


def wait_healthy(url: str, *, proc=None, seconds: float = 180):
    """Until GET /_stcore/health answers 200 (`proc`: the server process, which must not exit meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server at {url} exited with {proc.returncode}")
        try:
            if requests.get(check_loopback(url) + "/_stcore/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not become healthy in {seconds:.0f} s")


def free_ports(n: int, first: int | None = None, last: int | None = None) -> list[int]:
    """`n` loopback ports in first..last that nothing listens on; by default in $VX_TEST_PORTS
    ("8750-8799" unless set: machines shared by several people give each a range)."""
    import os
    import socket

    if first is None or last is None:
        first, last = map(int, os.environ.get("VX_TEST_PORTS", "8750-8799").split("-"))

    held = []
    try:
        for port in range(first, last + 1):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
            if len(held) == n:
                return [h.getsockname()[1] for h in held]
    finally:
        for h in held:
            h.close()
    raise RuntimeError(f"fewer than {n} free ports in {first}..{last}")


def check_loopback(url: str) -> str:
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"only loopback servers may be targeted, not {host!r}")
    return url.rstrip("/")


class Session:
    """One browser tab on a Streamlit app."""

    def __init__(self, base: str, *, locale: str = "en-US", timeout: float = 120.0, fetch_media: bool = True):
        self.base = check_loopback(base)
        self.locale, self.timeout, self.fetch_media = locale, timeout, fetch_media
        self.http = requests.Session()
        self.http.trust_env = False  # never through a proxy
        self.ws = None
        self.session_id = ""
        self.page_hash = ""  # the page the server ran last
        self.pages: dict[str, str] = {}  # url path -> page_script_hash, from Navigation
        self.query = ""  # the URL's query string
        self.widgets: dict[str, Widget] = {}  # id -> widget drawn in the last run
        self.captions: list[str] = []  # the image captions of the last run
        self.notes: list[str] = []  # the st.info / st.warning texts of the last run
        self.texts: list[str] = []  # markdown, st.text and st.code bodies of the last run
        self.metrics: dict[str, str] = {}  # st.metric label -> value, last run
        self.auto_reruns: dict[str, tuple[float, float]] = {}  # fragment id -> (interval s, next tick, monotonic)
        self.last_run_end = 0.0  # when the last run this tab saw ended (time.monotonic)
        self.states: dict[str, WidgetState] = {}  # id -> the value this tab sends back
        self.values: dict[str, object] = {}  # id -> the value this tab shows (drawn, or set by the student)
        self.replica: str | None = None  # who answered the WebSocket handshake (through nginx)
        self.replicas_seen: list[str] = []  # every replica that answered this tab, in order
        self.affinity_breaks: list[str] = []  # HTTP requests answered by another replica than the WebSocket's
        self.pinned: dict[str, int] = {}  # "upload" / "media" / "other" -> HTTP requests answered by the WebSocket's replica
        self._cache: dict[str, tuple[ForwardMsg, int]] = {}  # hash -> (message, run it was last used in)
        self._media_seen: set[str] = set()
        self._runs = 0
        self._pending: _Pending | None = None
        self._files: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one run at a time: clicks and auto_rerun ticks take turns
        self.closed = asyncio.Event()  # set when the server closed the WebSocket
        self.closed_at = 0.0

    # ------------------------------------------------------------------ connecting

    async def open(self, path: str = "", query: str = "") -> Run:
        """Load the page at `path` ("" or a page's url path) with `query`, as a fresh tab does."""
        self.query = query
        await self._http("GET", f"/{path}" + (f"?{query}" if query else ""))
        await self._connect()
        return await self._rerun(page_name=path)

    async def reconnect(self, *, wait: float = 30.0) -> Run:
        """After the WebSocket dropped: wait for a healthy server, reconnect, rerun the same view."""
        await self._drop()
        deadline = time.monotonic() + wait
        while True:
            try:
                if (await self._http("GET", "/_stcore/health", check=False)).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("no healthy server to reconnect to")
            await asyncio.sleep(0.5)
        await self._connect(resume=True)
        return await self._rerun(page_hash=self.page_hash)

    async def _connect(self, resume: bool = False):
        await self._http("GET", "/_stcore/health")
        await self._http("GET", "/_stcore/host-config")
        protocols = ["streamlit", self.http.cookies.get(XSRF_COOKIE) or ""]
        if resume and self.session_id:
            protocols.append(self.session_id)
        url = "ws" + self.base[4:] + "/_stcore/stream"
        cookie = "; ".join(f"{c.name}={c.value}" for c in self.http.cookies)
        self.ws = await connect(url, subprotocols=protocols, origin=self.base, proxy=None, max_size=None,
                                additional_headers={"Cookie": cookie} if cookie else None, open_timeout=30,
                                ping_interval=None, max_queue=None)
        headers = self.ws.response.headers
        self.replica = headers.get(REPLICA_HEADER)
        self._note_replica(self.replica)
        for value in headers.get_all("Set-Cookie"):  # nginx may pin the route in the handshake's answer
            name, _, rest = value.partition("=")
            self.http.cookies.set(name.strip(), rest.split(";")[0], domain="", path="/")
        self.closed.clear()
        self._reader = asyncio.create_task(self._read())

    async def _drop(self):
        if self._reader:
            self._reader.cancel()
        if self.ws is not None:
            try:
                await self.ws.close()
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.ws = None

    async def close(self):
        await self._drop()
        self.http.close()

    def _note_replica(self, replica: str | None):
        if replica and (not self.replicas_seen or self.replicas_seen[-1] != replica):
            self.replicas_seen.append(replica)

    # ------------------------------------------------------------------ what a student does

    def page(self) -> str:
        return next((p for p, h in self.pages.items() if h == self.page_hash), "")

    def widget(self, key: str) -> Widget | None:
        return next((w for w in self.widgets.values() if w.key == key), None)

    async def goto(self, url_path: str) -> Run:
        """Click a page in the navigation."""
        async with self._lock:  # (a timed rerun in flight ends first: it may have switched the page)
            target = self.pages[url_path]
            self.auto_reruns.clear()  # the browser stops every fragment timer on a page change
            if target != self.page_hash:  # the browser keeps only query params bound to widgets on a page change
                bound = {w.proto.query_param_key for w in self.widgets.values()
                         if getattr(w.proto, "query_param_key", "")}
                self.query = urlencode([(k, v) for k, v in parse_qsl(self.query, keep_blank_values=True) if k in bound])
            return await self._rerun_now(page_hash=target)

    async def set(self, key: str, value) -> Run:
        """Change the widget with user key `key` to `value` (python value; a choice widget takes the
        shown label or the option's index) and rerun, as the browser does on a change."""
        async with self._lock:  # the state is set once no other run can end and clear a click
            w = self.widget(key)
            if w is None:
                raise KeyError(f"no widget {key!r} on page {self.page()!r}")
            self.states[w.id] = encode(w, value)
            self.values[w.id] = state_value(self.states[w.id])
            self._bind(w, value)
            return await self._rerun_now(fragment_id=w.fragment_id, page_hash=self.page_hash)

    def fill(self, key: str, value) -> None:
        """Type into a widget of a form (no rerun: the form's submit button sends it)."""
        w = self.widget(key)
        if w is None:
            raise KeyError(f"no widget {key!r} on page {self.page()!r}")
        self.states[w.id] = encode(w, value)
        self.values[w.id] = state_value(self.states[w.id])

    async def submit(self, form: str) -> Run:
        """Click the submit button of the form `form` (st.form's key): the form's values go with it."""
        async with self._lock:
            w = next((w for w in self.widgets.values() if w.kind == "button" and w.proto.is_form_submitter
                      and w.proto.form_id == form), None)
            if w is None:
                raise KeyError(f"no form {form!r} on page {self.page()!r}")
            self.states[w.id] = encode(w, True)
            return await self._rerun_now(fragment_id=w.fragment_id, page_hash=self.page_hash)

    async def autorun(self, stop: asyncio.Event | None = None) -> Run | None:
        """The next rerun a browser's timer sends for an st.fragment(run_every=...): wait until one is due,
        run it (a click in progress goes first) and return it; None once `stop` is set or the connection closed."""
        while not (stop and stop.is_set()) and not self.closed.is_set():
            now = time.monotonic()
            due = min(self.auto_reruns.items(), key=lambda item: item[1][1], default=None)
            if due is None or due[1][1] > now:
                await asyncio.sleep(0.1 if due is None else min(0.1, due[1][1] - now))
                continue
            fragment, (interval, at) = due
            self.auto_reruns[fragment] = (interval, max(at + interval, now))  # setInterval: missed ticks are not sent twice
            return await self._rerun(fragment_id=fragment, page_hash=self.page_hash, auto=True)
        return None

    async def upload(self, key: str, name: str, data: bytes, mime: str = "image/jpeg") -> Run:
        """Pick a file in the uploader `key`: ask for URLs, PUT the file, send the widget state."""
        w = self.widget(key)
        if w is None:
            raise KeyError(f"no uploader {key!r} on page {self.page()!r}")
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        answer = self._files[request_id] = asyncio.get_running_loop().create_future()
        await self._send(BackMsg(file_urls_request={"request_id": request_id, "file_names": [name],
                                                    "session_id": self.session_id}))
        urls = (await asyncio.wait_for(answer, self.timeout)).file_urls[0]
        r = await self._http("PUT", urls.upload_url, files={"file": (name, data, mime)},
                             headers={"X-Xsrftoken": self.http.cookies.get(XSRF_COOKIE) or ""}, check=False)
        if r.status_code >= 300:
            return Run(self.page(), time.monotonic() - started, 0, [f"upload HTTP {r.status_code}: {r.text[:200]}"])
        info = UploadedFileInfo(file_id=urls.file_id, name=name, size=len(data),
                                file_urls=FileURLs(file_id=urls.file_id, upload_url=urls.upload_url,
                                                   delete_url=urls.delete_url))
        async with self._lock:
            self.states[w.id] = WidgetState(id=w.id, file_uploader_state_value=FileUploaderState(uploaded_file_info=[info]))
            run = await self._rerun_now(fragment_id=w.fragment_id, page_hash=self.page_hash)
        run.seconds = time.monotonic() - started
        return run

    def view(self) -> dict:
        """The view as the student sees it: the page and every keyed widget's shown value."""
        shown = {w.key: self.values.get(w.id) for w in self.widgets.values()
                 if w.kind not in ("file_uploader", "camera_input", "button") and not w.key.startswith("None")}
        return {"page": self.page(), **shown}

    def _bind(self, w: Widget, value):
        """A widget bound to a query parameter writes its value into the URL (the browser does this)."""
        param = getattr(w.proto, "query_param_key", "")
        if param:
            pairs = [(k, v) for k, v in parse_qsl(self.query, keep_blank_values=True) if k != param]
            values = value if isinstance(value, (list, tuple)) else [value]
            self.query = urlencode(pairs + [(param, str(v)) for v in values])

    # ------------------------------------------------------------------ the protocol

    async def _send(self, msg: BackMsg):
        if self.ws is None:
            raise Disconnected("not connected")
        try:
            await self.ws.send(msg.SerializeToString())
        except ConnectionClosed as err:
            raise Disconnected(str(err)) from err

    async def _rerun(self, *, page_hash: str = "", page_name: str = "", fragment_id: str = "", auto: bool = False) -> Run:
        async with self._lock:
            return await self._rerun_now(page_hash=page_hash, page_name=page_name, fragment_id=fragment_id, auto=auto)

    async def _rerun_now(self, *, page_hash: str = "", page_name: str = "", fragment_id: str = "",
                         auto: bool = False) -> Run:
        """One run; the caller holds self._lock."""
        loop = asyncio.get_running_loop()
        pending = self._pending = _Pending(time.monotonic(), loop.create_future(), bool(fragment_id))
        self._runs += 1
        self._cache = {h: (m, r) for h, (m, r) in self._cache.items() if self._runs - r <= CACHE_RUNS}
        live = {i: s for i, s in self.states.items() if i in self.widgets}
        state = ClientState(query_string=self.query, page_script_hash=page_hash, page_name=page_name,
                            fragment_id=fragment_id, is_auto_rerun=auto, cached_message_hashes=list(self._cache),
                            widget_states=WidgetStates(widgets=list(live.values())),
                            context_info=ContextInfo(timezone="UTC", locale=self.locale, url=self.base + "/"))
        outcome = "ok"
        try:
            await self._send(BackMsg(rerun_script=state))
            await asyncio.wait_for(asyncio.shield(pending.done), self.timeout)
        except asyncio.TimeoutError:
            outcome = "timeout"
        except Disconnected:
            outcome = "disconnected"
        self._pending = None
        for s in self.states.values():  # a button's click counts once
            if s.WhichOneof("value") == "trigger_value":
                s.trigger_value = False
        if outcome == "ok":
            self.widgets = (self.widgets | pending.widgets) if pending.fragment else pending.widgets
            self.captions = (self.captions + pending.captions) if pending.fragment else pending.captions
            self.notes = (self.notes + pending.notes) if pending.fragment else pending.notes
            self.texts = (self.texts + pending.texts) if pending.fragment else pending.texts
            self.metrics = (self.metrics | pending.metrics) if pending.fragment else pending.metrics
            self.states = {i: s for i, s in self.states.items() if i in self.widgets}
            for i, w in pending.widgets.items():  # the browser takes a value the server sets, keeps its own otherwise
                if getattr(w.proto, "set_value", False) or i not in self.values:
                    self.values[i] = w.drawn()
            self.values = {i: v for i, v in self.values.items() if i in self.widgets}
            pending.bytes += await self._fetch_media(pending)
        self.last_run_end = time.monotonic()
        return Run(self.page(), time.monotonic() - pending.started, pending.bytes, pending.errors, outcome,
                   self.replica)

    async def _fetch_media(self, pending: _Pending) -> int:
        new = [u for u in dict.fromkeys(pending.media) if u not in self._media_seen]
        if not self.fetch_media or not new:
            return 0
        self._media_seen.update(new)
        total = 0
        for r in await asyncio.gather(*(self._http("GET", u, check=False) for u in new)):
            if r.status_code != 200:
                pending.errors.append(f"media HTTP {r.status_code}: {r.url}")
            total += len(r.content)
        return total

    async def _read(self):
        try:
            async for frame in self.ws:
                msg = ForwardMsg()
                msg.ParseFromString(frame)
                if self._pending:
                    self._pending.bytes += len(frame)
                self._handle(msg)
        except ConnectionClosed:
            pass
        self.closed_at = time.monotonic()
        self.closed.set()
        if self._pending and not self._pending.done.done():
            self._pending.done.set_exception(Disconnected("the server closed the WebSocket"))
            self._pending.done.exception()  # retrieved: no "never retrieved" warning if nobody awaits it

    def _handle(self, msg: ForwardMsg):
        kind = msg.WhichOneof("type")
        p = self._pending
        if kind == "ref_hash":  # an element this tab has cached: the server sent only its hash
            cached = self._cache.get(msg.ref_hash)
            if cached is None:
                if p:
                    p.errors.append(f"ref_hash {msg.ref_hash} not in the client cache")
                return
            self._cache[msg.ref_hash] = (cached[0], self._runs)
            msg = cached[0]
            kind = "delta"
        elif msg.metadata.cacheable:
            self._cache[msg.hash] = (msg, self._runs)
        if kind == "new_session":
            self.session_id = msg.new_session.initialize.session_id
            self.page_hash = msg.new_session.page_script_hash
            fragments = bool(msg.metadata.run.fragment_ids)
            if not fragments:
                self.auto_reruns.clear()  # a full run draws its timed fragments again
            if p and not p.done.done():
                p.restart(fragments)  # a run starts (again, within one click after st.rerun or st.switch_page)
        elif kind == "auto_rerun":
            fragment, interval = msg.auto_rerun.fragment_id, msg.auto_rerun.interval
            if fragment and self.auto_reruns.get(fragment, (None,))[0] != interval:
                self.auto_reruns[fragment] = (interval, time.monotonic() + interval)
        elif kind == "stop_auto_rerun":
            for fragment in msg.stop_auto_rerun.fragment_ids:
                self.auto_reruns.pop(fragment, None)
        elif kind == "navigation":
            self.pages = {pg.url_pathname: pg.page_script_hash for pg in msg.navigation.app_pages}
            self.page_hash = msg.navigation.page_script_hash or self.page_hash
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif kind == "file_urls_response":
            answer = self._files.pop(msg.file_urls_response.response_id, None)
            if answer and not answer.done():
                answer.set_result(msg.file_urls_response)
        elif p is None:
            return
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            self._element(msg.delta.new_element, msg.delta.fragment_id, p)
        elif kind == "page_not_found":
            p.errors.append(f"page not found: {msg.page_not_found.page_name!r}")
        elif kind == "script_finished" and msg.script_finished in DONE and not p.done.done():
            if msg.script_finished == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                p.errors.append("the script did not compile")
            p.done.set_result(True)

    def _element(self, el, fragment_id: str, p: _Pending):
        kind = el.WhichOneof("type")
        if kind == "exception":
            p.errors.append(f"exception: {el.exception.type}: {el.exception.message[:300]}")
        elif kind == "alert" and el.alert.format == Alert.ERROR:
            p.errors.append(f"st.error: {el.alert.body[:300]}")
        elif kind == "alert" and el.alert.format in (Alert.INFO, Alert.WARNING):
            p.notes.append(el.alert.body)
        elif kind == "imgs":
            p.media += [img.url for img in el.imgs.imgs if img.url.startswith("/media/")]
            p.captions += [img.caption for img in el.imgs.imgs]
        elif kind == "markdown":
            p.texts.append(el.markdown.body)
        elif kind in ("text", "code"):
            p.texts.append(el.text.body if kind == "text" else el.code.code_text)
        elif kind == "metric":
            p.metrics[el.metric.label] = el.metric.body
        elif kind in WIDGET_KINDS:
            sub = getattr(el, kind)
            if sub.id:
                p.widgets[sub.id] = Widget(sub.id, kind, sub, fragment_id)

    async def _http(self, method: str, path: str, *, check: bool = True, **kwargs) -> requests.Response:
        url = path if path.startswith("http") else self.base + path
        r = await asyncio.to_thread(self.http.request, method, check_loopback(url), timeout=self.timeout, **kwargs)
        replica, where = r.headers.get(REPLICA_HEADER), urlsplit(url).path
        if replica and self.replica and self.ws is not None:
            if replica != self.replica:
                self.affinity_breaks.append(f"{method} {where} answered by {replica}, session on {self.replica}")
            else:
                kind = "upload" if "/upload_file/" in where else "media" if where.startswith("/media/") else "other"
                self.pinned[kind] = self.pinned.get(kind, 0) + 1
        if check:
            r.raise_for_status()
        return r


def encode(w: Widget, value) -> WidgetState:
    """`value` in the wire type the widget registered (streamlit/elements/widgets/*.py: value_type=)."""
    s = WidgetState(id=w.id)
    labels = w.options
    if isinstance(value, int) and not isinstance(value, bool) and labels and w.kind != "slider":
        value = labels[value]  # a choice widget: the option's index -> the label the browser sends
    if w.kind == "slider" and labels:  # select_slider: labels
        values = value if isinstance(value, (list, tuple)) else [value]
        s.string_array_value.CopyFrom(StringArray(data=[labels[v] if isinstance(v, int) else v for v in values]))
    elif w.kind == "slider":
        s.double_array_value.CopyFrom(DoubleArray(data=list(value) if isinstance(value, (list, tuple)) else [value]))
    elif w.kind == "number_input":
        s.double_value = float(value)
    elif w.kind in ("selectbox", "radio", "text_input"):
        s.string_value = value
    elif w.kind in ("button_group", "multiselect"):
        s.string_array_value.CopyFrom(StringArray(data=value if isinstance(value, (list, tuple)) else [value]))
    elif w.kind == "checkbox":
        s.bool_value = bool(value)
    elif w.kind == "button":
        s.trigger_value = True
    else:
        raise ValueError(f"cannot set a {w.kind} widget")
    return s

