"""The translation table: every user-facing string, in English and Simplified Chinese.

Strings live in `assets/i18n/<area>.json` as {"<area>.<name>": {"en": ..., "zh": ...}}: one file per
page or area, so the two languages sit side by side and a missing translation is easy to spot.
Placeholders use str.format: "{n} patches". Engine errors carry message keys, not sentences
(`TranslatableError`), so the UI says every failure, its details included, in the reader's language.
The vocabulary every string keeps to is `glossary.toml` beside the tables (not a table itself).
"""

from __future__ import annotations

import json
import re
import string
from functools import lru_cache
from pathlib import Path

LANGS = ("en", "zh")
I18N_DIR = Path(__file__).resolve().parent.parent / "assets" / "i18n"


@lru_cache(maxsize=1)
def table() -> dict[str, dict[str, str]]:
    merged: dict[str, dict[str, str]] = {}
    for path in sorted(I18N_DIR.glob("*.json")):
        for key, texts in json.loads(path.read_text(encoding="utf-8")).items():
            if not key.startswith(path.stem + "."):
                raise ValueError(f"{path.name}: key {key!r} must start with {path.stem + '.'!r}")
            merged[key] = texts
    return merged


def translate(key: str, lang: str = "en", **params) -> str:
    """The text for `key` in `lang` (English when a translation is missing; the key itself if unknown)."""
    entry = table().get(key)
    if entry is None:
        return key
    text = entry.get(lang) or entry["en"]
    if not params:
        return text
    try:
        return text.format_map(_Params(params))
    except (ValueError, TypeError, IndexError, AttributeError):  # e.g. {mb:.1f} given None: drop the format specs
        plain = {k: "?" if v is None else v for k, v in params.items()}
        return re.sub(r"\{(\w+)[:!][^{}]*\}", r"{\1}", text).format_map(_Params(plain))


class _Params(dict):
    def __missing__(self, name):  # a placeholder nobody filled shows as itself, never raises
        return "{" + name + "}"


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


class TranslatableError(Exception):
    """Base of every user-facing error (CheckpointError, HubError, ImageError, ClassroomError): `key` names
    the sentence the user reads, `detail` (a key too, optional) what exactly went wrong, which fills that
    sentence's {detail} blank; `params` fill both. str() is the English detail (or sentence), for logs and
    tests; `explain(err, lang)` is what the UI shows."""

    def __init__(self, key: str, detail: str | None = None, params: dict | None = None):
        super().__init__(key, detail, params)  # args = (key, detail, params): pickles and reconstructs
        self.key, self.detail, self.params = key, detail, dict(params or {})

    def __str__(self) -> str:
        return translate(self.detail or self.key, "en", **self.params)

    def __reduce__(self):  # subclasses take other arguments: rebuild from the state, not through __init__
        return _restore, (type(self), self.__dict__)


def _restore(cls, state: dict) -> TranslatableError:
    err = cls.__new__(cls)
    Exception.__init__(err, state["key"], state["detail"], state["params"])
    err.__dict__.update(state)
    return err


def explain(err: Exception, lang: str) -> str | None:
    """The user's sentence for an engine error (anything with a message `key`: TranslatableError,
    ImageError), its details in `lang` too; None for any other exception."""
    key = getattr(err, "key", None)
    if not key:
        return None
    params = dict(getattr(err, "params", None) or {})
    if getattr(err, "detail", None):
        params["detail"] = translate(err.detail, lang, **params)
    return translate(key, lang, **params)
