"""The translation table: complete in both languages, and every key the code asks for exists."""

import re
from pathlib import Path

import pytest

from vit_core.i18n import LANGS, placeholders, table, translate

ROOT = Path(__file__).resolve().parent.parent
CJK = re.compile(r"[\u4e00-\u9fff]")
SOURCES = [ROOT / "app.py", ROOT / "ui.py", *sorted((ROOT / "pages").glob("*.py"))]
# t("key") / ui.t("key") / translate("key", ...) with a literal or an f-string key
CALL = re.compile(r"""\b(?:t|translate)\(\s*(f?)(["'])([a-z0-9_.{}\[\]'" ]+?)\2""")


def test_every_entry_has_both_languages_with_the_same_blanks():
    for key, texts in table().items():
        assert set(texts) == set(LANGS), key
        assert all(texts[lang].strip() for lang in LANGS), key
        assert placeholders(texts["en"]) == placeholders(texts["zh"]), key


def test_chinese_texts_are_chinese():
    # names of models, files and formulas may stay Latin; everything else must be written in Chinese
    latin_ok = {k for k, v in table().items() if not re.search(r"[A-Za-z]{4,}\s+[A-Za-z]{4,}\s+[A-Za-z]{4,}", v["en"])}
    for key, texts in table().items():
        if key not in latin_ok:
            assert CJK.search(texts["zh"]), f"{key} has no Chinese: {texts['zh']!r}"


def test_the_six_steps_are_titled_alike():
    for n in range(1, 7):
        texts = table()[f"step{n}.title"]
        assert texts["en"].startswith(f"Step {n} · ") and texts["zh"].startswith(f"第 {n} 步 · "), texts


BLANKS = re.compile(r"%?\{[^{}]*\}|`[^`]*`|<br>")  # placeholders, code and markup are not prose
CHINESE_TYPOGRAPHY = {  # rule -> what breaks it, in a Chinese string
    "full-width ，；：？！ next to Chinese": re.compile(r"[\u4e00-\u9fff][,;:?!]|[,;:?!] ?[\u4e00-\u9fff]"),
    "full-width （） around Chinese": re.compile(r"\([^()]*[\u4e00-\u9fff][^()]*\)"),
    "“ ” quotes, not ASCII ones": re.compile(r'"'),
    "a trailing …… (two), with no space before it": re.compile(r"(?<!…)…$| ……$"),
}


@pytest.mark.parametrize("rule", CHINESE_TYPOGRAPHY)
def test_chinese_strings_use_full_width_punctuation(rule):
    bad = [(k, v["zh"]) for k, v in table().items() if CHINESE_TYPOGRAPHY[rule].search(BLANKS.sub("X", v["zh"]))]
    assert not bad, f"{rule}: " + "; ".join(f"{k}: {zh!r}" for k, zh in bad)


def test_english_strings_have_no_chinese_punctuation():
    assert not [k for k, v in table().items() if re.search(r"[\u3000-\u303f\uff00-\uffef\u4e00-\u9fff]", v["en"])]


def used_keys():
    for path in SOURCES:
        for is_f, _, key in CALL.findall(path.read_text(encoding="utf-8")):
            yield path.name, key, bool(is_f)


def test_every_key_the_app_uses_exists():
    keys = set(table())
    used = list(used_keys())
    assert len(used) > 50
    for name, key, is_f in used:
        if is_f and "{" in key:
            pattern = re.compile("^" + re.sub(r"\\\{[^}]*\\\}", r"[a-z0-9_.-]+", re.escape(key)) + "$")
            assert any(pattern.match(k) for k in keys), f"{name}: no key matches {key}"
        elif key.endswith("."):  # t("area.verdict." + outcome): some key must complete it
            assert any(k.startswith(key) for k in keys), f"{name}: no key starts with {key}"
        else:
            assert key in keys, f"{name}: {key} is not in assets/i18n"


def test_every_listed_model_has_a_translated_title():
    from vit_core import hub, zoo

    assert all(f"app.model.title.{name}" in table() for name in [*zoo.EMBEDDED, *(e.id for e in hub.CATALOGUE)])


def test_every_error_the_engine_raises_has_a_message_and_details_in_both_languages():
    from vit_core.images import ImageError

    engine = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "vit_core").glob("*.py"))
    raised = set(ImageError.KEYS) | set(re.findall(r'"((?:checkpoint|hub|zoo)\.[a-z_.]+[a-z])"', engine))
    assert {k for k in raised if ".detail." in k} and not raised - set(table()), sorted(raised - set(table()))


def engine_errors():
    """Real failures from the engine: a missing file, an unknown layout, an unknown name, offline hub."""
    from vit_core import hub, zoo
    from vit_core.weights import detect_layout, load_checkpoint

    for fail in (lambda: load_checkpoint(ROOT / "no-such-model.safetensors"), lambda: detect_layout(["a.b"]),
                 lambda: zoo.load_model("no-such-model"), lambda: hub.download("deit-tiny")):  # conftest: offline
        with pytest.raises(Exception) as e:
            fail()
        yield e.value


def test_engine_errors_are_told_in_the_reader_s_language_details_included():
    import pickle

    from vit_core.i18n import explain

    errors = list(engine_errors())
    assert len(errors) == 4
    for err in errors:
        en, zh = explain(err, "en"), explain(err, "zh")
        assert str(err) in en  # the English detail is the whole str(), for logs
        assert CJK.search(zh) and not re.search(r"[A-Za-z]{3,} [A-Za-z]{3,} [A-Za-z]{3,}", zh), zh
        copy = pickle.loads(pickle.dumps(err))
        assert (type(copy), copy.key, explain(copy, "zh")) == (type(err), err.key, zh)
    assert explain(ValueError("boom"), "zh") is None  # not an engine error: the UI's generic message


@pytest.mark.parametrize("lang", LANGS)
def test_translate_fills_blanks_and_survives_missing_values(lang):
    assert "20" in translate("image.too_large", lang, size_mb=25.3, limit_mb=20)
    assert translate("image.decompression_bomb", lang, megapixels=None, limit_megapixels=40.0)
    assert translate("no.such.key", lang) == "no.such.key"
