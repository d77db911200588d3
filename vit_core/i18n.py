"""The translation table: every user-facing string, in English and Simplified Chinese.

Strings live in `assets/i18n/<area>.json` as {"<area>.<name>": {"en": ..., "zh": ...}}: one file per
page or area, so the two languages sit side by side and a missing translation is easy to spot.
Placeholders use str.format: "{n} patches".
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
