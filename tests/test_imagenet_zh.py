"""Simplified Chinese ImageNet-1k names: one per class, aligned with the English list, unique."""

import json
import re
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EN = json.loads((ASSETS / "imagenet_classes.json").read_text(encoding="utf-8"))
ZH = json.loads((ASSETS / "imagenet_classes_zh.json").read_text(encoding="utf-8"))

# CJK Unified Ideographs plus Extension A (e.g. 䴕 in 鹟䴕, jacamar).
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
# Classes whose usual Chinese name is a Latin brand or abbreviation, with no CJK in it.
LATIN_OK = {605: "iPod"}
# Traditional forms of characters that recur in these names; simplified text never has them.
TRADITIONAL = set("貓鳥魚龜雞鴨鵝鷹蟲龍馬車機電腦鐘錶書門頭紅綠藍黃麵燈鏡盤壺傘網蝦鱷蠍蝸蠔獅貝殼鬥螞蟻")


def test_one_name_per_class_in_index_order():
    assert len(EN) == 1000
    assert isinstance(ZH, list) and len(ZH) == len(EN)
    assert all(isinstance(z, str) and z == z.strip() and z for z in ZH)


def test_every_name_is_chinese_or_a_known_latin_name():
    latin = {i: z for i, z in enumerate(ZH) if not CJK.search(z)}
    assert latin == LATIN_OK


def test_names_are_simplified_not_traditional():
    bad = {i: z for i, z in enumerate(ZH) if TRADITIONAL & set(z)}
    assert not bad


def test_names_are_unique():
    seen = {}
    dups = [(seen[z], i, z) for i, z in enumerate(ZH) if seen.setdefault(z, i) != i]
    assert not dups


def test_repeated_english_names_get_their_own_sense():
    # The short English list repeats a word where WordNet has two synsets; the index picks the sense.
    assert (EN[134], ZH[134]) == ("crane", "鹤")  # n02012849, the bird
    assert (EN[517], ZH[517]) == ("crane", "起重机")  # n03126707, the machine
    assert (EN[638], ZH[638]) == ("maillot", "紧身衣（舞蹈/体操）")  # n03710637, dancer's tights
    assert (EN[639], ZH[639]) == ("maillot", "连体泳衣")  # n03710721, tank suit
    assert (EN[264], EN[474]) == ("Cardigan", "cardigan")
    assert (ZH[264], ZH[474]) == ("卡迪根柯基犬", "开襟毛衫")  # the corgi and the sweater


@pytest.mark.parametrize("index, english, chinese", [
    (0, "tench", "丁鲹"),
    (1, "goldfish", "金鱼"),
    (2, "great white shark", "大白鲨"),
    (151, "Chihuahua", "吉娃娃"),
    (207, "golden retriever", "金毛寻回犬"),
    (235, "German shepherd", "德国牧羊犬"),
    (281, "tabby", "虎斑猫"),
    (285, "Egyptian cat", "埃及猫"),
    (291, "lion", "狮子"),
    (388, "giant panda", "大熊猫"),
    (409, "analog clock", "指针式时钟"),
    (504, "coffee mug", "咖啡杯"),
    (605, "iPod", "iPod"),
    (817, "sports car", "跑车"),
    (948, "Granny Smith", "青苹果"),
    (954, "banana", "香蕉"),
    (999, "toilet tissue", "卫生纸"),
])
def test_well_known_classes(index, english, chinese):
    # Checking the English side too catches a shift in either list, not just a wrong word.
    assert (EN[index], ZH[index]) == (english, chinese)
