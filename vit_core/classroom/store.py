"""A class's shared state: the teacher's view, the roster, the question in play and its answers.

`ClassStore` holds every rule (codes, the teacher's token, caps, rate limits, expiry); it talks to a
backend of six small operations, so the same rules run over an in-process dict (one server) and over
Redis (several replicas, `REDIS_URL`). Every key of a class expires with the class; nothing a student
types is stored except a display name, cut to NAME_CHARS.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import unicodedata
from dataclasses import dataclass

from vit_core.i18n import TranslatableError

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: read aloud and typed without mistakes
CODE_CHARS = 6  # 31⁶ ≈ 8.9e8 codes
LIFETIME_S = 4 * 3600  # a class and everything in it is deleted this long after it starts
MAX_STUDENTS = 200  # joins per class, so also answers per question
NAME_CHARS = 24
MAX_VIEW_BYTES = 4096
MAX_ANSWER_BYTES = 256
MAX_QUESTION_BYTES = 16384
MAX_UPLOAD_BYTES = 20 * 2**20  # the app's own upload cap
MAX_UPLOADS = 4  # photos a teacher shares per class
MAX_QUESTIONS = 100  # questions a teacher asks per class
# (tries, seconds): joins one session may try, and wrong codes one session / one address may type
JOINS, SESSION_FAILURES, ADDRESS_FAILURES = (10, 60.0), (5, 60.0), (50, 60.0)


class ClassroomError(TranslatableError):
    """A refused classroom action, as a message id and its blanks (shown translated by the app)."""

    def __init__(self, key: str, **params):
        super().__init__(key, None, params)

    def __str__(self) -> str:
        return self.key  # logs name the refusal; the UI shows explain(err, lang)


@dataclass(frozen=True)
class Teacher:
    code: str  # what students type
    token: str  # the teacher's secret: every teacher action needs it
    expires_at: float


@dataclass(frozen=True)
class Asked:
    id: str
    question: dict  # a questions.Question as plain JSON
    revealed: bool


@dataclass(frozen=True)
class ClassState:
    """What a student polls, in one round trip."""

    open: bool  # False once the class ended or expired
    view_id: str | None  # changes whenever the teacher's view does
    view: dict | None
    asked: Asked | None


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))


def normalise_code(text: str) -> str:
    """What a student typed, as a code: case and separators ignored."""
    return "".join(ch for ch in str(text).upper() if ch.isalnum())[:CODE_CHARS * 2]


def clean_name(text: str) -> str:
    """A display name: printable characters only (no control or format characters), NAME_CHARS at most."""
    text = unicodedata.normalize("NFC", str(text))
    kept = "".join(ch for ch in text if unicodedata.category(ch)[0] not in "CZ" or ch == " ")
    return " ".join(kept.split())[:NAME_CHARS]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _dumps(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


class ClassStore:
    def __init__(self, backend, clock=time.time):
        self.backend, self.clock = backend, clock

    @staticmethod
    def _key(code: str, part: str = "") -> str:
        return f"vx:class:{code}" + (f":{part}" if part else "")

    def _meta(self, code: str) -> dict:
        raw = self.backend.get(self._key(code))
        if raw is None:
            raise ClassroomError("classroom.error.unknown_code")
        return json.loads(raw)

    def _teacher(self, code: str, token: str) -> float:
        """The class's expiry, once `token` proves the caller is its teacher."""
        meta = self._meta(code)
        if not hmac.compare_digest(meta["token"], _hash(str(token))):
            raise ClassroomError("classroom.error.not_teacher")
        return meta["expires"]

    def _limit(self, client: str | None, kind: str, limit: tuple[int, float]) -> None:
        """At most `limit` = (tries, seconds) per client, counted from its first try of the window."""
        if client is None:
            return
        count, window = limit
        key = f"vx:limit:{kind}:{hashlib.sha256(client.encode()).hexdigest()[:24]}"
        if self.backend.incr(key, self.clock() + window) > count:
            raise ClassroomError("classroom.error.too_many", seconds=int(window))

    # --- the teacher
    def create(self, lifetime_s: float = LIFETIME_S) -> Teacher:
        token, expires = secrets.token_urlsafe(24), self.clock() + lifetime_s
        meta = _dumps({"token": _hash(token), "expires": expires})
        while True:  # a code in use is drawn again (at 8.9e8 codes, almost never)
            code = new_code()
            if self.backend.put(self._key(code), meta, expires, only_new=True):
                return Teacher(code, token, expires)

    def resume(self, code: str, token: str) -> Teacher:
        """The class again for its teacher (a reload, another tab), once the token matches."""
        code = normalise_code(code)
        return Teacher(code, str(token), self._teacher(code, token))

    def publish(self, code: str, token: str, view: dict) -> str:
        """Broadcast the teacher's view; returns its id (a digest: the same view, the same id)."""
        expires = self._teacher(code, token)
        body = _dumps(view)
        if len(body) > MAX_VIEW_BYTES:
            raise ClassroomError("classroom.error.too_large")
        view_id = hashlib.sha256(body).hexdigest()[:16]
        self.backend.put(self._key(code, "view"), _dumps({"id": view_id, "view": view}), expires)
        return view_id

    def share_upload(self, code: str, token: str, data: bytes) -> str:
        """Keep the teacher's own photo for the class, keyed by its sha256 (what the view names)."""
        expires = self._teacher(code, token)
        if len(data) > MAX_UPLOAD_BYTES:
            raise ClassroomError("classroom.error.too_large")
        digest = hashlib.sha256(data).hexdigest()
        if not self.backend.hput(self._key(code, "uploads"), digest, b"1", expires, MAX_UPLOADS):
            raise ClassroomError("classroom.error.too_many_uploads", n=MAX_UPLOADS)
        self.backend.put(self._key(code, f"upload:{digest}"), data, expires)
        return digest

    def ask(self, code: str, token: str, question: dict) -> str:
        expires = self._teacher(code, token)
        body = _dumps(question)
        if len(body) > MAX_QUESTION_BYTES:
            raise ClassroomError("classroom.error.too_large")
        qid = secrets.token_hex(4)
        if not self.backend.hput(self._key(code, "asked"), qid, b"1", expires, MAX_QUESTIONS):
            raise ClassroomError("classroom.error.too_many_questions", n=MAX_QUESTIONS)
        self.backend.put(self._key(code, "question"), _dumps({"id": qid, "question": question, "revealed": False}),
                         expires)
        return qid

    def reveal(self, code: str, token: str) -> None:
        expires = self._teacher(code, token)
        asked = self.state(code).asked
        if asked is not None:
            self.backend.put(self._key(code, "question"),
                             _dumps({"id": asked.id, "question": asked.question, "revealed": True}), expires)

    def answers(self, code: str, qid: str) -> list:
        """Every answer to question `qid` (one per student), in no particular order."""
        return [json.loads(v) for v in self.backend.hgetall(self._key(code, f"answers:{qid}")).values()]

    def close(self, code: str, token: str) -> None:
        self._teacher(code, token)
        uploads, asked = (self.backend.hgetall(self._key(code, part)) for part in ("uploads", "asked"))
        self.backend.delete(self._key(code), *(self._key(code, p) for p in ("view", "question", "roster", "uploads", "asked")),
                            *(self._key(code, f"upload:{d}") for d in uploads),
                            *(self._key(code, f"answers:{q}") for q in asked))

    # --- the students
    def join(self, code: str, name: str, session: str, address: str | None = None) -> str:
        """A new student id, or ClassroomError: unknown code, class full, too many tries from this
        session (or, for wrong codes, from this address: guessing codes does not pay)."""
        self._limit(session, "join", JOINS)
        code = normalise_code(code)
        try:
            expires = self._meta(code)["expires"]
        except ClassroomError:
            self._limit(session, "fail", SESSION_FAILURES)
            self._limit(address, "fail-address", ADDRESS_FAILURES)
            raise
        student = secrets.token_hex(8)
        if not self.backend.hput(self._key(code, "roster"), student, clean_name(name).encode(), expires, MAX_STUDENTS):
            raise ClassroomError("classroom.error.full", n=MAX_STUDENTS)
        return student

    def roster(self, code: str) -> list[str]:
        return sorted(v.decode() for v in self.backend.hgetall(self._key(code, "roster")).values())

    def state(self, code: str) -> ClassState:
        meta, view, asked = self.backend.get_many([self._key(code, p) for p in ("", "view", "question")])
        view, asked = (json.loads(x) if x is not None else None for x in (view, asked))
        return ClassState(meta is not None, view and view["id"], view and view["view"],
                          asked and Asked(asked["id"], asked["question"], asked["revealed"]))

    def upload(self, code: str, digest: str) -> bytes | None:
        return self.backend.get(self._key(code, f"upload:{digest}"))

    def answer(self, code: str, student: str, qid: str, value) -> bool:
        """Record (or replace) one student's answer to the open question `qid` (True once stored). The
        caller checks the value against the question (questions.Question.check)."""
        expires = self._meta(code)["expires"]
        if student not in self.backend.hgetall(self._key(code, "roster")):
            raise ClassroomError("classroom.error.unknown_code")
        asked = self.state(code).asked
        if asked is None or asked.id != qid or asked.revealed:
            raise ClassroomError("classroom.error.closed")
        body = _dumps(value)
        if len(body) > MAX_ANSWER_BYTES:
            raise ClassroomError("classroom.error.too_large")
        return self.backend.hput(self._key(code, f"answers:{qid}"), student, body, expires, MAX_STUDENTS)


# ----------------------------------------------------------------------------- backends

class MemoryBackend:
    """One process: a dict guarded by a lock; expired keys vanish on read and in a sweep every SWEEP_S."""

    SWEEP_S = 5.0

    def __init__(self, clock=time.time):
        self.clock, self._lock, self._data, self._swept = clock, threading.Lock(), {}, 0.0

    def _live(self, key: str):
        item = self._data.get(key)
        if item is not None and item[1] <= self.clock():
            del self._data[key]
            return None
        return item

    def _sweep(self) -> None:
        now = self.clock()
        if now - self._swept >= self.SWEEP_S:
            self._data = {k: v for k, v in self._data.items() if v[1] > now}
            self._swept = now

    def count(self, prefix: str = "vx:") -> int:
        """Live keys under `prefix` (what the tests check is gone at expiry)."""
        with self._lock:
            return sum(1 for k in list(self._data) if k.startswith(prefix) and self._live(k))

    def put(self, key: str, value: bytes, expires_at: float, only_new: bool = False) -> bool:
        with self._lock:
            self._sweep()
            if only_new and self._live(key):
                return False
            self._data[key] = (bytes(value), expires_at)
            return True

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._live(key)
            return item[0] if item and isinstance(item[0], bytes) else None

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self.get(k) for k in keys]

    def hput(self, key: str, field: str, value: bytes, expires_at: float, cap: int) -> bool:
        """Set one field of a hash unless that would take it past `cap` fields."""
        with self._lock:
            self._sweep()
            item = self._live(key)
            fields = dict(item[0]) if item else {}
            if field not in fields and len(fields) >= cap:
                return False
            fields[field] = bytes(value)
            self._data[key] = (fields, expires_at)
            return True

    def hgetall(self, key: str) -> dict[str, bytes]:
        with self._lock:
            item = self._live(key)
            return dict(item[0]) if item and isinstance(item[0], dict) else {}

    def incr(self, key: str, expires_at: float) -> int:
        with self._lock:
            self._sweep()
            item = self._live(key)
            n = int(item[0]) + 1 if item else 1
            self._data[key] = (str(n).encode(), item[1] if item else expires_at)
            return n

    def delete(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._data.pop(k, None)


class RedisBackend:
    """Several replicas: the same operations on Redis, every key with an absolute expiry (PEXPIREAT)."""

    _HPUT = """if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) redis.call('PEXPIREAT', KEYS[1], ARGV[4]) return 1 end
return 0"""
    _INCR = """local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIREAT', KEYS[1], ARGV[1]) end
return n"""

    def __init__(self, url: str):
        import redis  # only a replicated deployment needs it

        self.redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._hput, self._incr = self.redis.register_script(self._HPUT), self.redis.register_script(self._INCR)

    def put(self, key: str, value: bytes, expires_at: float, only_new: bool = False) -> bool:
        return bool(self.redis.set(key, value, pxat=int(expires_at * 1000), nx=only_new))

    def get(self, key: str) -> bytes | None:
        return self.redis.get(key)

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        return self.redis.mget(keys)

    def hput(self, key: str, field: str, value: bytes, expires_at: float, cap: int) -> bool:
        return bool(self._hput(keys=[key], args=[field, value, cap, int(expires_at * 1000)]))

    def hgetall(self, key: str) -> dict[str, bytes]:
        return {k.decode(): v for k, v in self.redis.hgetall(key).items()}

    def incr(self, key: str, expires_at: float) -> int:
        return int(self._incr(keys=[key], args=[int(expires_at * 1000)]))

    def delete(self, *keys: str) -> None:
        if keys:
            self.redis.delete(*keys)

    def count(self, prefix: str = "vx:") -> int:
        return sum(1 for _ in self.redis.scan_iter(match=prefix + "*", count=1000))


def open_store(redis_url: str | None = None) -> ClassStore:
    """Redis when a URL is given (REDIS_URL), else one process's memory."""
    return ClassStore(RedisBackend(redis_url) if redis_url else MemoryBackend())
