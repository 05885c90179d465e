"""Logs are key=value and never carry credentials."""

from __future__ import annotations

import pytest

from configsync.logs import kv, redact_text, redact_url


@pytest.mark.parametrize(("url", "clean"), [
    ("https://user:tok@github.com/org/repo.git", "https://github.com/org/repo.git"),
    ("https://tok@host:8443/r", "https://host:8443/r"),
    ("redis://:secret@127.0.0.1:6380/0", "redis://127.0.0.1:6380/0"),
    ("https://github.com/org/repo.git", "https://github.com/org/repo.git"),
    ("/srv/git/configs.git", "/srv/git/configs.git"),
    ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
])
def test_redact_url(url: str, clean: str) -> None:
    assert redact_url(url) == clean


def test_kv_quotes_and_redacts() -> None:
    assert kv("applied", commit="abc", message="fix the prompt", empty="", skipped=None) == (
        'event=applied commit=abc message="fix the prompt" empty=""')
    assert "pw" not in kv("x", error="fatal: https://u:pw@host/r not found")
    assert redact_text("see https://u:pw@h/r and redis://:p@h:1") == "see https://h/r and redis://h:1"


@pytest.mark.parametrize(("value", "shown"), [
    ("two\nlines", '"two\\nlines"'),
    ("x\nts=2099-01-01T00:00:00Z level=info event=applied",
     '"x\\nts=2099-01-01T00:00:00Z level=info event=applied"'),
    ("cr\rtab\tnul\x00", '"cr\\rtab\\tnul\\u0000"'),
    ("nel\x85ls\u2028ps\u2029", '"nel\\u0085ls\\u2028ps\\u2029"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("café", "café"),
])
def test_kv_values_never_break_the_line(value: str, shown: str) -> None:
    line = kv("x", v=value)
    assert line == f"event=x v={shown}"
    assert len(line.splitlines()) == 1


@pytest.mark.parametrize(("value", "shown"), [
    ("abc\u202edef", '"abc\\u202edef"'),  # Trojan Source: bidi controls reorder the line
    ("x\u2066y\u2069\u200f\u061c", '"x\\u2066y\\u2069\\u200f\\u061c"'),
    ("zero\u200bwidth\ufeff", '"zero\\u200bwidth\\ufeff"'),
    ("esc\x1b[2Jdel\x7f", '"esc\\u001b[2Jdel\\u007f"'),
])
def test_kv_values_escape_bidi_and_format_characters(value: str, shown: str) -> None:
    assert kv("x", v=value) == f"event=x v={shown}"


def test_both_formats_escape_any_message() -> None:
    """A message not written by kv (a library's) and a kv field, in both formats."""
    import logging

    from configsync.logs import LOG_FORMATS

    for text in ("plain \u202eevil\nts=forged", kv("x", v="a\u202eb")):
        record = logging.LogRecord("configsync", logging.INFO, "f", 1, text, None, None)
        for name, formatter in LOG_FORMATS.items():
            line = formatter().format(record)
            assert "\u202e" not in line and "\n" not in line, name
