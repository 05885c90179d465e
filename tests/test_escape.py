"""``escape.py``: the one escaping rule, its character class against ``unicodedata``, and the
JSON and YAML forms that still parse to the same values."""

from __future__ import annotations

import json
import sys
import unicodedata

import pytest
import yaml

from configsync.escape import UNSAFE, json_text, one_line, text_lines, yaml_text

ESCAPED = ("Cc", "Cf", "Cs", "Zl", "Zp")
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


def test_unsafe_holds_every_control_format_and_separator_character() -> None:
    missing = [f"U+{c:04X}" for c in range(sys.maxunicode + 1)
               if unicodedata.category(chr(c)) in ESCAPED and not UNSAFE.match(chr(c))]
    assert missing == []


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
