"""The one escaping rule for every text configsync prints that a config repository or Redis
controls (a file name, a commit subject, an author, an agent id, a value, a prompt, a client's
report, an event), on every output path: text, JSON, YAML, markdown and logs (issue 17,
item 13; DESIGN.md, invariant 8).

:data:`UNSAFE` finds the characters no such text may put on a terminal, a log or a pull
request comment raw: C0 and C1 controls and DEL (terminal escapes, a newline that forges a line
of its own), the line and paragraph separators, and every Unicode *format* character (general
category Cf): the bidi controls that reorder what a reader sees ("Trojan Source",
CVE-2021-42574: U+202A–U+202E, U+2066–U+2069, U+200E/U+200F, U+061C), zero-width spaces and
joiners, the word joiner, the byte-order mark, soft hyphen, tag characters; every other
default-ignorable code point, shown as nothing (the Hangul fillers U+3164, U+115F, U+1160,
U+FFA0, the combining grapheme joiner, variation selectors, the whole tag block); every
unassigned code point (it may render as anything later); U+2800, a braille blank that looks
like a space; and lone surrogates (an undecodable file name), which would crash the write
instead. Everything else,
including every printable non-ASCII letter and emoji, is left as it is. (The zero-width joiner
is a format character too: an emoji sequence joined by it shows its parts with ``\u200d``
between them. Seeing what a reviewer would not is the point; a backslash is left as it is, so
a literal ``\n`` in a name reads like an escaped one, but it cannot start a line.)

:func:`one_line` is the function every text output calls; :func:`json_text` and
:func:`yaml_text` apply the same rule inside JSON strings and YAML scalars (as those formats'
own escapes, so the output still parses to the same values), and :func:`text_lines` joins
rendered lines, each through :func:`one_line`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import yaml

from .unsafe_chars import ASTRAL, BMP

__all__ = ["UNSAFE", "json_body", "json_safe", "json_text", "one_line", "quoted", "text_lines",
           "yaml_text"]

UNSAFE = re.compile(f"[{BMP}]|(?=[\U00010000-\U0010ffff])[{ASTRAL}]")
"""The characters escaped on output: categories Cc, Cf, Cs, Zl, Zp and Cn (unassigned) of
Unicode 14, every Default_Ignorable_Code_Point (Hangul fillers, variation selectors, tags) and
U+2800 (:mod:`configsync.unsafe_chars`; ``tests/test_escape.py`` checks it against
``unicodedata``)."""

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    code = ord(char)
    return _SHORT.get(char) or (f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")


def one_line(text: str) -> str:
    """``text`` with every :data:`UNSAFE` character written as an escape (``\\n``, ``\\t``,
    ``\\u202e``, ``\\U000e0041``): untrusted text printed on a line of output can never start
    a line of its own, move the cursor, colour the terminal or reorder what is shown.
    Idempotent (an escape is printable ASCII); backslashes are left as they are."""
    return UNSAFE.sub(lambda m: _escaped(m.group()), text)


def text_lines(lines: Iterable[str]) -> str:
    """Rendered ``lines`` as text output: each through :func:`one_line`, each ending in
    ``\\n``; so no value inside a line can break it, whichever field it came from."""
    return "".join(one_line(line) + "\n" for line in lines)


def _json_escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON has no \U: a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_text(data: Any, *, indent: int | None = 2,
              separators: tuple[str, str] | None = None) -> str:
    """``data`` as JSON text and a newline: non-ASCII letters as they are, but every
    :data:`UNSAFE` character as a ``\\uXXXX`` escape (JSON writers leave U+2028, C1 controls
    and bidi controls raw); ``json.loads`` gives back the same values. Raises
    ``ValueError`` for NaN or an infinity (no JSON: ``allow_nan=False``)."""
    text = json.dumps(data, indent=indent, separators=separators, ensure_ascii=False,
                      allow_nan=False)
    return json_safe(text) + "\n"


def json_safe(text: str) -> str:
    """JSON ``text`` (valid JSON, as :func:`json.dumps` or configsync's snapshots write it)
    with every :data:`UNSAFE` character but its whitespace written as a ``\\uXXXX`` escape:
    it parses to the same values (so checksums and ETags still hold), and no reader sees a
    raw bidi control or line separator. Valid because in valid JSON such a character can
    only stand inside a string, where its escape means the same; raw tab, line feed and
    carriage return (the only ones allowed outside strings, and never inside one) are left.
    One regex substitution: cheap enough for every HTTP answer (red team's item 3)."""
    return UNSAFE.sub(_json_kept, text)


def _json_kept(match: re.Match[str]) -> str:
    return match.group() if match.group() in "\t\n\r" else _json_escaped(match)


def json_body(data: Any) -> str:
    """``data`` as compact JSON for an HTTP body (aiohttp's ``dumps=``): :func:`json_safe`
    applied, NaN and infinities refused (``ValueError``)."""
    return json_safe(json.dumps(data, ensure_ascii=False, allow_nan=False))


def quoted(text: object) -> str:
    """``text`` quoted as ``repr`` quotes a string (single quotes, or double when it holds
    a single quote and no double one; backslash and the quote escaped), but with
    :func:`one_line`'s escapes for every :data:`UNSAFE` character (``'json\\u202e:Foo\\u001b[2J'``,
    where ``repr`` writes ``\\x1b`` beside ``\\u202e``): the one way a message quotes untrusted
    text (red team's item 6). Printable text reads exactly as its ``repr``; any other value
    is quoted as its ``str``."""
    text = text if isinstance(text, str) else str(text)
    quote = '"' if "'" in text and '"' not in text else "'"
    inner = text.replace("\\", "\\\\")
    if quote == "'":
        inner = inner.replace("'", "\\'")
    return quote + one_line(inner) + quote


class _Dumper(yaml.SafeDumper):
    """A SafeDumper that writes a scalar holding an :data:`UNSAFE` character double-quoted,
    with YAML's escapes for everything outside printable ASCII in it (PyYAML counts bidi
    controls and U+2028 as printable and would write them raw)."""

    def analyze_scalar(self, scalar: str) -> Any:
        analysis = super().analyze_scalar(scalar)
        if UNSAFE.search(scalar):
            analysis.allow_flow_plain = analysis.allow_block_plain = False
            analysis.allow_single_quoted = analysis.allow_block = False
        return analysis

    def write_double_quoted(self, text: str, split: bool = True) -> None:
        if not UNSAFE.search(text):
            return super().write_double_quoted(text, split)
        keep, self.allow_unicode = self.allow_unicode, False
        try:
            super().write_double_quoted(text, split)
        finally:
            self.allow_unicode = keep


def yaml_text(data: Any) -> str:
    """``data`` as block YAML (keys in the given order, letters as they are), every scalar
    holding an :data:`UNSAFE` character double-quoted with YAML escapes; ``yaml.safe_load``
    gives back the same values."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
