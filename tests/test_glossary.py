"""One vocabulary: no string in either language uses a variant the glossary forbids.

The glossary is assets/i18n/glossary.toml: for each English term the one Chinese term, and the
variants (regular expressions) that must not appear, with the few keys allowed to name a variant once.
"""

import re
import tomllib

import pytest

from vit_core.i18n import I18N_DIR, LANGS, table

TERMS = tomllib.loads((I18N_DIR / "glossary.toml").read_text(encoding="utf-8"))["term"]
BLANK = re.compile(r"%?\{[^{}]*\}")  # {name} and plotly's %{y}: filled in later, not words
RULES = [(term, lang, re.compile(p)) for term in TERMS for lang in LANGS for p in term.get(f"forbid_{lang}", [])]


def test_the_glossary_is_well_formed():
    assert len(TERMS) >= 20 and len(RULES) >= 30
    for term in TERMS:
        assert term["en"].strip() and term["zh"].strip(), term
        assert set(term) <= {"en", "zh", "forbid_zh", "forbid_en", "allow", "note"}, term
        assert not set(term.get("allow", [])) - set(table()), term  # allowed keys exist
    for term, lang, rule in RULES:
        assert not rule.search(term[lang]), f"{term['en']}: the chosen term matches its own forbidden {rule.pattern}"


def violations(texts: dict[str, dict[str, str]]) -> list[str]:
    found = []
    for key, entry in texts.items():
        for term, lang, rule in RULES:
            if key not in term.get("allow", []) and (m := rule.search(BLANK.sub("…", entry[lang]))):
                found.append(f"{key} [{lang}] {m.group(0)!r}: write {term[lang]!r} ({term['en']})")
    return found


def test_no_string_uses_a_forbidden_variant():
    found = violations(table())
    assert not found, f"{len(found)} strings break the glossary:\n" + "\n".join(found)


@pytest.mark.parametrize("lang, text, culprit", [
    ("zh", "加上位置编码", "位置编码"),
    ("zh", "注意力 rollout 实验室", "rollout"),
    ("zh", "第 3 个编码块", "编码块"),
    ("zh", "这张图可信吗", "这张图"),
    ("en", "after block 3", "block"),
])
def test_the_check_catches_a_variant(lang, text, culprit):
    entry = {"en": "x", "zh": "x"} | {lang: text}
    assert any(culprit in v for v in violations({"probe.key": entry}))
