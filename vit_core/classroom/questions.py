"""Questions a teacher asks the class, with answers read off the live tensors, and their tally.

The templates (kind, parameters, the prompt and the reveal in both languages) live in
assets/classroom/questions.json; each names one function below that computes the correct answer
from the trace the teacher is looking at. Nothing is typed in: change the model or the picture and
the answer changes with it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from vit_core import analysis
from vit_core.classroom.store import ClassroomError
from vit_core.i18n import translate

TEMPLATES = Path(__file__).resolve().parents[2] / "assets" / "classroom" / "questions.json"
KINDS = ("patch", "choice", "number", "rank")
MAX_NUMBER = 10**6


@dataclass(frozen=True)
class Template:
    id: str
    kind: str  # how students answer: click a patch, pick one option, type a number, order options
    compute: str  # the function of COMPUTE that reads the answer off the trace
    params: dict  # its settings (a layer, an image size, ...); they also fill the texts' blanks
    title: dict  # {"en": ..., "zh": ...}: the teacher's short name for it (its blanks: params only)
    prompt: dict  # the question as the class reads it
    reveal: dict  # the same, said once the model's answer is shown: its blanks also take {answer}


@lru_cache(maxsize=1)
def templates() -> dict[str, Template]:
    items = [Template(**t) for t in json.loads(TEMPLATES.read_text(encoding="utf-8"))]
    for t in items:
        if t.kind not in KINDS or t.compute not in COMPUTE:
            raise ValueError(f"{TEMPLATES.name}: {t.id} has kind {t.kind!r} / compute {t.compute!r}")
    return {t.id: t for t in items}


def title(template_id: str, lang: str) -> str:
    t = templates()[template_id]
    return t.title[lang].format(**t.params)


@dataclass(frozen=True)
class Question:
    """One question as the class sees it, with the model's answer. Plain JSON (to_json), so the store
    carries it to the students' sessions."""

    template: str
    kind: str
    answer: object  # patch: [r, c]; choice: a class index; number: an int; rank: head numbers in order
    params: dict = field(default_factory=dict)  # the texts' blanks
    options: list = field(default_factory=list)  # choice: class indices; rank: head numbers (1-based)
    labels: dict = field(default_factory=dict)  # choice: {"en": [names of options], "zh": [...]}
    grid: list = field(default_factory=list)  # patch: (h, w)
    truth: list = field(default_factory=list)  # patch: the model's map, row-major (h·w values)
    model: str = ""  # what the answer was computed on
    digest: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Question":
        return cls(**d)

    def text(self, part: str, lang: str) -> str:
        """The prompt ("prompt") or the reveal ("reveal") in `lang`."""
        return getattr(templates()[self.template], part)[lang].format(**self.params, answer=self.label(self.answer, lang))

    def label(self, value, lang: str) -> str:
        if self.kind == "choice":
            return self.labels[lang][self.options.index(value)]
        if self.kind == "rank":
            return " → ".join(translate("classroom.head", lang, h=h) for h in value)
        if self.kind == "patch":
            return f"({value[0]}, {value[1]})"
        return str(value)

    def check(self, value):
        """A student's answer in its one canonical form, or ClassroomError if it cannot be one."""
        try:
            if self.kind == "patch":
                r, c = (int(v) for v in value)
                if 0 <= r < self.grid[0] and 0 <= c < self.grid[1]:
                    return [r, c]
            elif self.kind == "choice" and int(value) in self.options:
                return int(value)
            elif self.kind == "number" and 0 <= int(value) <= MAX_NUMBER:
                return int(value)
            elif self.kind == "rank" and sorted(int(v) for v in value) == sorted(self.options):
                return [int(v) for v in value]
        except (TypeError, ValueError):
            pass
        raise ClassroomError("classroom.error.bad_answer")

    def correct(self, value) -> bool:
        return value == self.answer


def make(template_id: str, trace, card, *, model_id: str = "", digest: str = "") -> Question:
    """The question `template_id` about this trace (a ViTTrace) of the model with this card."""
    t = templates()[template_id]
    return Question(template=t.id, kind=t.kind, model=model_id, digest=digest,
                    **COMPUTE[t.compute](trace, card, dict(t.params)))


# ----------------------------------------------------------------------------- answers from the tensors

def _layer(trace, params: dict) -> int:
    return min(max(int(params["layer"]), 1), len(trace.attentions))  # 1-based, within the model


def cls_top_patch(trace, card, params: dict) -> dict:
    """The patch the CLS token attends to most in one layer, averaged over its heads."""
    layer = params["layer"] = _layer(trace, params)
    heat = analysis.prefix_attention_maps(trace.attentions, trace.grid, trace.num_prefix_tokens)[layer - 1, 0]
    r, c, share = analysis.top_patches(heat, k=1)[0]
    params.update(heads=trace.attentions[0].shape[1], share=share)
    return dict(answer=[r, c], params=params, grid=list(trace.grid), truth=heat.flatten().tolist())


def predicted_class(trace, card, params: dict) -> dict:
    """The model's top-1 class; the options are every class, or the model's top few when there are many."""
    probs = trace.probs[0].float()
    top = int(probs.argmax())
    k = probs.numel()
    options = list(range(k)) if k <= params["options"] else sorted(probs.topk(params["options"]).indices.tolist())
    labels = {lang: [card.names(lang)[i] for i in options] for lang in ("en", "zh")}
    params.update(p=float(probs[top]))
    return dict(answer=top, params=params, options=options, labels=labels)


def token_count(trace, card, params: dict) -> dict:
    """T = N + 1 for a named ViT (patch geometry of an image size and a patch size), not the model in use."""
    geo = analysis.patch_geometry((params["size"], params["size"]), params["patch"], params["channels"])
    params.update(N=geo.num_patches, h=geo.grid[0], w=geo.grid[1])
    return dict(answer=geo.tokens, params=params)


def live_token_count(trace, card, params: dict) -> dict:
    """T for the model and picture in use: its patches plus its prefix tokens (CLS, DeiT's distillation token)."""
    s = trace.shapes
    params.update(N=s.N, h=s.h, w=s.w, P=s.P, prefix=s.prefix, H=s.H, W=s.W)
    return dict(answer=s.T, params=params)


def heads_by_distance(trace, card, params: dict) -> dict:
    """A few heads of one layer, ranked by mean attention distance (local first; paper Fig. 7 right)."""
    layer = params["layer"] = _layer(trace, params)
    dist = analysis.mean_attention_distance(trace.attentions, trace.grid, trace.shapes.P,
                                            num_prefix_tokens=trace.num_prefix_tokens)[0, layer - 1]  # (heads,)
    order = dist.argsort().tolist()  # local → global
    picks = sorted({order[int(i)] for i in np.linspace(0, len(order) - 1, min(params["count"], len(order))).round()})
    ranked = sorted(picks, key=lambda h: float(dist[h]))
    params.update(distances=", ".join(f"{float(dist[h]):.1f}" for h in ranked))
    return dict(answer=[h + 1 for h in ranked], params=params, options=[h + 1 for h in picks])


COMPUTE = {f.__name__: f for f in (cls_top_patch, predicted_class, token_count, live_token_count, heads_by_distance)}


# ----------------------------------------------------------------------------- the class's answers

@dataclass(frozen=True)
class Tally:
    n: int  # answers counted
    correct: int
    bars: list  # [(answer, count)] in the order a histogram shows them
    clicks: np.ndarray | None = None  # patch questions: (h, w) how many students clicked each patch

    @property
    def share(self) -> float:
        return self.correct / self.n if self.n else 0.0


def tally(question: Question, answers: list, max_bars: int = 10) -> Tally:
    """Count the answers (anything that is not a valid answer is left out)."""
    valid = []
    for a in answers:
        try:
            valid.append(question.check(a))
        except ClassroomError:
            continue
    counts = Counter(json.dumps(a) for a in valid)
    if question.kind == "choice":
        bars = [(o, counts.get(json.dumps(o), 0)) for o in question.options]
    elif question.kind == "number":
        bars = sorted((json.loads(k), n) for k, n in counts.items())
    else:
        bars = [(json.loads(k), n) for k, n in counts.most_common(max_bars)]
    clicks = None
    if question.kind == "patch":
        clicks = np.zeros(question.grid, dtype=int)
        for r, c in valid:
            clicks[r, c] += 1
    return Tally(len(valid), sum(question.correct(a) for a in valid), bars, clicks)
