"""``escape.py``: the one escaping rule, its character class against ``unicodedata``, and the
JSON and YAML forms that still parse to the same values."""

from __future__ import annotations

import json
import sys
import unicodedata

import pytest
import yaml

from configsync import unsafe_chars
from configsync.escape import (
    UNSAFE,
    json_body,
    json_safe,
    json_text,
    one_line,
    quoted,
    text_lines,
    yaml_text,
)

ESCAPED = ("Cc", "Cf", "Cs", "Zl", "Zp", "Cn")
# Default_Ignorable_Code_Point, from Unicode's DerivedCoreProperties.txt (red team's item 4)
IGNORABLE = [(0xAD, 0xAD), (0x34F, 0x34F), (0x61C, 0x61C), (0x115F, 0x1160), (0x17B4, 0x17B5),
             (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F),
             (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0),
             (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF)]


def unsafe_codes() -> set[int]:
    """What UNSAFE must hold, from ``unicodedata``: the categories, the ignorables, U+2800."""
    codes = {c for c in range(sys.maxunicode + 1)
             if unicodedata.category(chr(c)) in ESCAPED}
    codes.update(c for low, high in IGNORABLE for c in range(low, high + 1))
    return codes | {0x2800}


def generated_class(codes: set[int], astral: bool) -> str:
    """unsafe_chars.py's BMP or ASTRAL class of ``codes`` (how it was generated)."""
    ranges: list[list[int]] = []
    for code in sorted(c for c in codes if (c > 0xFFFF) == astral):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(chr(a) if a == b else chr(a) + chr(b) if b == a + 1 else f"{chr(a)}-{chr(b)}"
                   for a, b in ranges)
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


@pytest.mark.slow
def test_unsafe_holds_every_control_format_separator_ignorable_and_unassigned_character(
        ) -> None:
    wanted = unsafe_codes()
    missing = [f"U+{c:04X}" for c in sorted(wanted) if not UNSAFE.match(chr(c))]
    assert missing == []
    if unicodedata.unidata_version == "14.0.0":  # a newer Unicode assigns some of Cn
        assert unsafe_chars.BMP == generated_class(wanted, False)
        assert unsafe_chars.ASTRAL == generated_class(wanted, True)
        extra = [f"U+{c:04X}" for c in range(sys.maxunicode + 1)
                 if c not in wanted and UNSAFE.match(chr(c))]
        assert extra == []


@pytest.mark.parametrize("char", [
    "ㅤ", "ᅟ", "ᅠ", "ﾠ", "͏", "️", "󠄀", "⁥",
    "󠀂", "￰", "᠏", "឴", "⠀", "􏿿", "﷐"])
def test_the_red_teams_invisible_characters_are_escaped_everywhere(char: str) -> None:
    text = f"a{char}b"
    assert char not in one_line(text) and one_line(text).startswith("a\\")
    for output in (json_text({"k": text}), json_body({"k": text})):
        assert char not in output and json.loads(output) == {"k": text}
    assert char not in quoted(text)
    assert char not in yaml_text({"k": text}) and yaml.safe_load(yaml_text({"k": text})) == {
        "k": text}


@pytest.mark.parametrize("text", ["héllo wörld", "日本語", "مرحبا", "🙂", "a b\\n", "~`'\"{}[]",
                                  "\u00a0nbsp", "\u3000"])
def test_printable_text_is_left_as_it_is(text: str) -> None:
    assert one_line(text) == text
    assert json.loads(json_text(text)) == text and json_text(text) == json.dumps(
        text, ensure_ascii=False) + "\n"


@pytest.mark.parametrize(("text", "shown"), [
    ("a\nb", "a\\nb"), ("a\r\tb", "a\\r\\tb"), ("\x1b[31m", "\\u001b[31m"), ("\x7f", "\\u007f"),
    ("\x85\x9b", "\\u0085\\u009b"), ("\u2028\u2029", "\\u2028\\u2029"),
    ("abc\u202edef", "abc\\u202edef"), ("\u200b\ufeff\xad", "\\u200b\\ufeff\\u00ad"),
    ("\U000e0041", "\\U000e0041"), ("\udc80", "\\udc80"),
])
def test_one_line_escapes(text: str, shown: str) -> None:
    assert one_line(text) == shown
    assert one_line(shown) == shown  # idempotent


@pytest.mark.parametrize("char", list(BIDI))
def test_every_bidi_control_is_escaped_everywhere(char: str) -> None:
    text = f"x{char}y"
    assert char not in one_line(text)
    assert char not in json_text({"k": text}) and json.loads(json_text({"k": text})) == {"k": text}
    assert char not in yaml_text({"k": text}) and yaml.safe_load(yaml_text({"k": text})) == {
        "k": text}


def test_text_lines_escapes_each_line() -> None:
    assert text_lines(["v1 abc", "    x\nv9 deadbeef Mallory"]) == (
        "v1 abc\n    x\\nv9 deadbeef Mallory\n")


def test_json_text_keeps_its_own_line_breaks_and_pairs_astral_escapes() -> None:
    data = {"a\u2028": ["\U000e0041", "\x1b", "é"]}
    text = json_text(data)
    assert text == '{\n  "a\\u2028": [\n    "\\udb40\\udc41",\n    "\\u001b",\n    "é"\n  ]\n}\n'
    assert json.loads(text) == data
    assert json_text(data, indent=None, separators=(",", ":")) == (
        '{"a\\u2028":["\\udb40\\udc41","\\u001b","é"]}\n')


def test_yaml_text_quotes_only_hostile_scalars() -> None:
    data = {"plain": "héllo", "evil\u202e": "a\x1b[2J\u2028b", "n": 1}
    text = yaml_text(data)
    assert text == 'plain: héllo\n"evil\\u202E": "a\\e[2J\\Lb"\nn: 1\n'
    assert yaml.safe_load(text) == data


def test_json_safe_escapes_only_inside_strings_and_parses_to_the_same_values() -> None:
    raw = '{"a":"x\u202ey\u2028\x85\u200b","b":[1,2]}'
    safe = json_safe(raw)
    assert safe == '{"a":"x\\u202ey\\u2028\\u0085\\u200b","b":[1,2]}'
    assert json.loads(safe) == json.loads(raw) and json_safe(safe) == safe
    spaced = '{\n\t"a": "\U000e0041"\r\n}'  # JSON's own whitespace is left
    assert json_safe(spaced) == '{\n\t"a": "\\udb40\\udc41"\r\n}'
    assert json.loads(json_safe(spaced)) == json.loads(spaced)


def test_json_writers_refuse_nan_and_infinities() -> None:
    for value in (float("nan"), float("inf"), -float("inf")):
        for write in (json_text, json_body):
            with pytest.raises(ValueError):
                write({"v": value})


@pytest.mark.parametrize(("value", "shown"), [
    ("json\u202e:Foo\x1b[2J\u2028x", "'json\\u202e:Foo\\u001b[2J\\u2028x'"),
    ("\x85\n\U000e0041", "'\\u0085\\n\\U000e0041'"), (None, "'None'"),
])
def test_quoted_is_one_style_for_every_untrusted_text(value: object, shown: str) -> None:
    assert quoted(value) == shown


@pytest.mark.parametrize("text", ["abc", "it's", "a\"b'c", "x\\y", "é 日本", ""])
def test_quoted_printable_text_reads_as_its_repr(text: str) -> None:
    assert quoted(text) == repr(text)
