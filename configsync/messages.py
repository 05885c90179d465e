"""Messages for people: pydantic errors in plain words, hints, and the credential scan."""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from .escape import quoted

__all__ = [
    "SECRETS",
    "SECRET_HINT_BYTES",
    "ambiguity_message",
    "describe",
    "did_you_mean",
    "dotted",
    "error_summary",
    "fields_at",
    "find_secret",
    "has_visible_text",
    "plural",
    "portability_message",
    "secret_message",
    "settings_shape_hint",
    "show",
]

SECRETS = re.compile(
    r"(?P<openai>\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,})"
    r"|(?P<aws>\b(?:AKIA|ASIA)[0-9A-Z]{16}\b)"
    r"|(?P<github>\bgh[pousr]_[A-Za-z0-9]{36,}|\bgithub_pat_[A-Za-z0-9_]{22,})"
    r"|(?P<slack>\bxox[abposr]-[A-Za-z0-9-]{10,})"
    r"|(?P<pem>-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)")
# One cheap literal scan of a whole file before the full patterns run on its values (hot path).
_SECRET_HINT = "sk-|AKIA|ASIA|gh[pousr]_|github_pat_|xox|-----BEGIN"  # noqa: S105
_SECRET_HINT_STR = re.compile(_SECRET_HINT)
SECRET_HINT_BYTES = re.compile(_SECRET_HINT.encode())
_SECRET_NAMES = {"openai": "an API key (sk-…)", "aws": "an AWS access key id",
                 "github": "a GitHub token", "slack": "a Slack token",
                 "pem": "a PEM private key"}


def find_secret(text: str) -> re.Match[str] | None:
    if _SECRET_HINT_STR.search(text):
        return SECRETS.search(text)
    return None


def secret_message(match: re.Match[str]) -> str:
    kind = _SECRET_NAMES[match.lastgroup or "pem"]
    return f"looks like {kind}; keep credentials out of git and rotate this one"


def portability_message(value: float | int, *, made_by: str | None = None,
                        source: str | None = None) -> str:
    """Why a number cannot be stored (NaN, an infinity, an integer beyond ±(2^53-1)), and the
    fix: quote it in the file or, when a model (``made_by``) made it, change the model.
    ``source``: the value as written (``.NaN``, ``1e400``), quoted instead of the number."""
    if isinstance(value, float):
        what = ".nan" if value != value else (".inf" if value > 0 else "-.inf")
        if source and source.lower() != what:
            what = f"{source} (read as {what})"
        elif source:
            what = source
        why = f"{what} has no JSON form: JSON readers in other languages cannot represent it"
    else:
        why = (f"{source or value} is outside ±(2^53-1): JSON readers in other languages "
               "(JavaScript, "
               "Go's float64) cannot represent it exactly")
    if made_by is not None:
        return f"{why}; {made_by} made it: change its default or validator"
    return f"{why}; quote it to keep it as text"


def dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``, did you mean `x`?`` for the closest of ``choices``, or nothing. Among thousands of
    choices only those of about the same length are compared (difflib's cost is per choice, and
    a hint is asked for each of possibly thousands of errors)."""
    pool = list(choices)
    if len(pool) > 200:
        pool = [c for c in pool if abs(len(c) - len(word)) <= 2][:200]
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    return f", did you mean `{close[0]}`?" if close else ""


def plural(count: int, word: str) -> str:
    """``1 file``, ``0 files``, ``2 files``: a count and its noun, in every message."""
    return f"{count} {word}{'s' * (count != 1)}"


def has_visible_text(text: str) -> bool:
    """Whether ``text`` has a character a reader would see (``NOT_BLANK``): not only
    whitespace, byte-order marks and zero-width spaces. One rule for every prompt, written
    inline or in a file, and the JSON Schema's (issue 10: a BOM-only prompt file passed, a
    blank one did not)."""
    from .model import NOT_BLANK  # (model imports this module)
    return re.search(NOT_BLANK, text) is not None


_SETTINGS_SHAPES = {
    "tools": "`tools: {search: {description: Web search}}`, one key for each tool",
    "limits": "`limits: {max_file_bytes: 262144}`",
}


def settings_shape_hint(loc: Sequence[str | int], value: Any) -> str:
    """For a mapping in ``configsync.yaml`` written as something else: an example of the
    right shape, using the names the user wrote when they listed tools (`tools: [search]`)."""
    if len(loc) != 1 or loc[0] not in _SETTINGS_SHAPES:
        return ""
    names = [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
    if loc[0] == "tools" and names:
        shown = ", ".join(f"{name}: {{}}" for name in names[:3])
        more = ", …" if len(names) > 3 else ""
        return (f"; write one key for each tool: `tools: {{{shown}{more}}}` (each may have a "
                "`description:`)")
    return f"; for example {_SETTINGS_SHAPES[str(loc[0])]}"


def fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The field names (as written in YAML) of the model found at ``loc`` under ``model``."""
    annotation: Any = model
    for part in loc:
        annotation = _step(annotation, part)
    found = _model_in(annotation)
    return [info.alias or name for name, info in found.model_fields.items()] if found else []


def _step(annotation: Any, part: str | int) -> Any:
    """The type one step (a field, a mapping key or a list index) inside ``annotation``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _step(args[0], part)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        info = annotation.model_fields.get(str(part)) or next(
            (f for f in annotation.model_fields.values() if f.alias == part), None)
        return info.annotation if info is not None else None
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping) and args:
        return args[-1]
    if origin is not None and isinstance(origin, type) and issubclass(origin, Sequence) and args:
        return args[0]
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _model_in(args[0])
    return None


def show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):  # one escape style with the rest of the line (issue 17)
        return quoted(value if len(value) <= 40 else value[:37] + "...")
    return "a list" if isinstance(value, list) else "a mapping"


_MESSAGES = {
    "missing": "is required",
    "float_type": "must be a number (got {input})",
    "float_parsing": "must be a number (got {input})",
    "int_type": "must be a whole number (got {input})",
    "int_parsing": "must be a whole number (got {input})",
    "int_from_float": "must be a whole number (got {input})",
    "string_type": "must be a string (got {input})",
    "bool_type": "must be true or false (got {input})",
    "bool_parsing": "must be true or false (got {input})",
    "list_type": "must be a list (got {input})",
    "dict_type": "must be a mapping (got {input})",
    "model_type": "must be a mapping (got {input})",
    "model_attributes_type": "must be a mapping (got {input})",
    "less_than_equal": "must be at most {le} (got {input})",
    "greater_than_equal": "must be at least {ge} (got {input})",
    "less_than": "must be less than {lt} (got {input})",
    "greater_than": "must be greater than {gt} (got {input})",
    "string_pattern_mismatch": "must match {pattern} (got {input})",
}


def _reads_as(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number" if isinstance(value, int | float) else "text"


def ambiguity_message(item: Any) -> str:
    """Why a plain scalar is ambiguous (a loader ``Ambiguity``: ``text`` as written, ``value``
    its YAML 1.2 reading, ``yaml11`` the other) and the way out, quoting it, in one line."""
    text, value, other = item.text, item.value, item.yaml11
    quote = f'quote it: "{text}"'
    if isinstance(other, bool):
        return (f"{text} is the text \"{text}\" in YAML 1.2 (editors, JSON Schema, "
                f"configsync) but {show(other)} in YAML 1.1 readers; write {show(other)} "
                f"for a boolean, or {quote}")
    if isinstance(value, int) and not isinstance(value, bool):
        if isinstance(other, int):  # a leading zero: octal in YAML 1.1
            digits = text.lstrip("+-").lstrip("0")
            return (f"{text} is {value} in YAML 1.2 but {other} (octal) in YAML 1.1 readers; "
                    f"write {value}, or 0o{digits} for octal, or {quote}")
        return (f"{text} is {value} in YAML 1.2 but text in YAML 1.1 readers; write {value}, "
                f"or {quote}")
    return (f"{text} is text in YAML 1.2 but the number {show(other)} in YAML 1.1 readers; "
            f"write {show(other)} for the number, or {quote}")


def describe(err: ErrorDetails, fields: Sequence[str] = (), source: str | None = None) -> str:
    """A short, plain message for one pydantic error (without the field name). ``source`` is
    the value's text as written, when it was a plain scalar: the message quotes that (``got
    1.10``, not ``got 1.1``), and where text was wanted, says how to get it."""
    kind = err["type"]
    ctx = dict(err.get("ctx") or {})
    if kind == "extra_forbidden":
        key = str(err["loc"][-1]) if err["loc"] else ""
        return "unknown key" + did_you_mean(key, fields)
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    template = _MESSAGES.get(kind)
    if template is None:
        return err["msg"].removeprefix("Value error, ")
    shown = {k: show(v) if isinstance(v, int | float) else v for k, v in ctx.items()}
    given = show(err.get("input")) if source is None else source
    if source is not None and kind == "string_type":
        given = f'{source}, which YAML reads as {_reads_as(err.get("input"))}; quote it: "{source}"'
    return template.format(input=given, **shown)


def error_summary(err: Mapping[str, Any]) -> str:
    """One line for a rejection (``state.last_error``'s JSON): ``file:line:col: message``."""
    more = f" (+{err['errors'] - 1} more)" if err.get("errors", 1) > 1 else ""
    where = f"{err['file']}:{err['line']}:{err['column']}: " if err.get("file") else ""
    return f"{where}{err.get('message', '')}{more}"
