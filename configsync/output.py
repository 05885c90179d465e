"""Formatters for diagnostics: text for people, json for scripts, github for PR annotations."""

from __future__ import annotations

from collections.abc import Sequence

from .escape import json_text, one_line
from .validate import Diagnostic

__all__ = ["FORMATS", "render"]


def _text(diagnostics: Sequence[Diagnostic]) -> str:
    # one line each, whatever a file name or a quoted value holds (one_line escapes breaks)
    return "".join(f"{one_line(d.path)}:{d.line}:{d.column}: {d.severity}: "
                   f"{one_line(d.message)}\n" for d in diagnostics)


def _json(diagnostics: Sequence[Diagnostic]) -> str:
    return json_text([d.as_dict() for d in diagnostics])


def _escape_data(value: str) -> str:
    # no control or bidi character reaches an annotation raw; a line break is GitHub's %0A
    value = "\n".join(one_line(part) for part in value.split("\n"))
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def _github(diagnostics: Sequence[Diagnostic]) -> str:
    # https://docs.github.com/actions/reference/workflow-commands-for-github-actions
    return "".join(
        f"::{d.severity} file={_escape_property(d.path)},line={d.line},col={d.column}"
        f"::{_escape_data(d.message)}\n" for d in diagnostics)


FORMATS = {"text": _text, "json": _json, "github": _github}


def render(diagnostics: Sequence[Diagnostic], fmt: str) -> str:
    """All ``diagnostics`` in format ``fmt`` (one of :data:`FORMATS`)."""
    return FORMATS[fmt](diagnostics)
