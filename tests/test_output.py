"""Diagnostic formatters."""

from __future__ import annotations

import json

from configsync.output import render
from configsync.validate import Diagnostic

DIAGS = [Diagnostic("agents/a.yaml", 3, 14, "error", "temperature: must be at most 2 (got 3.5)"),
         Diagnostic("agents/a,b:c.yaml", 1, 1, "warning", "50% sure\nsecond line")]


def test_text() -> None:
    """One line a diagnostic: a line break in a message or a file name (a file may be called
    anything) is escaped, so no value can print a diagnostic of its own."""
    forged = Diagnostic("agents/x\nagents/y.yaml:1:1: error: forged.yaml", 2, 3, "error",
                        "bad key `a\u2028b`")
    assert render([*DIAGS, forged], "text") == (
        "agents/a.yaml:3:14: error: temperature: must be at most 2 (got 3.5)\n"
        "agents/a,b:c.yaml:1:1: warning: 50% sure\\nsecond line\n"
        "agents/x\\nagents/y.yaml:1:1: error: forged.yaml:2:3: error: bad key `a\\u2028b`\n")


def test_json() -> None:
    assert json.loads(render(DIAGS, "json"))[0] == {
        "path": "agents/a.yaml", "line": 3, "column": 14, "severity": "error",
        "message": "temperature: must be at most 2 (got 3.5)"}
    assert render([], "json") == "[]\n"


def test_github_escapes_workflow_commands() -> None:
    assert render(DIAGS, "github") == (
        "::error file=agents/a.yaml,line=3,col=14::temperature: must be at most 2 (got 3.5)\n"
        "::warning file=agents/a%2Cb%3Ac.yaml,line=1,col=1::50%25 sure%0Asecond line\n")


def test_every_format_escapes_controls_and_bidi_characters() -> None:
    """Issue 17: a file name or message from the repository cannot reorder or colour an
    annotation, a line or a JSON reader's terminal (JSON leaves U+202E and C1 raw)."""
    hostile = Diagnostic("prompts/a\u202e\x1b[31m.md", 1, 1, "error", "got 'x\u2066\x85y'")
    assert render([hostile], "text") == (
        "prompts/a\\u202e\\u001b[31m.md:1:1: error: got 'x\\u2066\\u0085y'\n")
    text = render([hostile], "json")
    assert "\u202e" not in text and "\u2066" not in text and "\x85" not in text
    assert json.loads(text)[0]["path"] == hostile.path
    assert render([hostile], "github") == (
        "::error file=prompts/a\\u202e\\u001b[31m.md,line=1,col=1::got 'x\\u2066\\u0085y'\n")
