"""Structured logs (``key=value``) that never carry credentials."""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from typing import Any

from .escape import UNSAFE, json_text, one_line

__all__ = ["LOG_FORMATS", "client_logger", "configure", "kv", "logger", "one_line", "redact_text",
           "redact_url"]

logger = logging.getLogger("configsync")

# Everything from "://" to the last "@" of the same word: a password with an unencoded "/",
# "?" or "#" (which URL parsers take for the end of the host) is still all removed. The price:
# an "@" later in a path (https://host/repo@v1) takes the path with it, in logs only.
_USERINFO = re.compile(r"(?<=://)[^\s'\"]*@")


def redact_url(url: str) -> str:
    """``url`` without user and password: ``https://tok@host/r`` → ``https://host/r``."""
    return _USERINFO.sub("", url)


def redact_text(text: str) -> str:
    """Every ``scheme://user:pass@`` in free text (a git error message) without its userinfo."""
    return _USERINFO.sub("", text)


# a value is quoted when it holds a space, a quote, "=", a backslash or anything UNSAFE
_NEEDS_QUOTES = re.compile(f'[\\s"=\\\\]|{UNSAFE.pattern}')


def _value(value: Any) -> str:
    """A value as it is, or JSON-quoted when it holds a space, a quote, ``=``, a backslash or
    any control, line-breaking, bidi or other format character (escaped: ``one_line``'s
    rule), so that untrusted text (a commit message, a git error) can never start a line of
    its own."""
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return json_text(text, indent=None)[:-1]


class _Line(str):
    """A log message as ``kv`` writes it, still holding its event and fields (for JSON)."""

    __slots__ = ("event", "fields")
    event: str
    fields: dict[str, Any]


def kv(event: str, **fields: Any) -> str:
    """``event=NAME key=value ...``, quoting values with spaces, credentials stripped. The
    result is a ``str`` that also keeps ``event`` and the fields, for ``--log-format json``."""
    kept = {key: value for key, value in fields.items() if value is not None}
    parts = [f"event={event}"]
    parts += [f"{key}={_value(redact_text(str(value)))}" for key, value in kept.items()]
    line = _Line(" ".join(parts))
    line.event, line.fields = event, kept
    return line


class _Formatter(logging.Formatter):
    """``ts=<UTC> level=<level> event=...``; a traceback (a bug in a callback) follows on its
    own lines, each indented."""

    converter = time.gmtime  # type: ignore[assignment]  # (typeshed's overloads)

    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        # a kv() line is escaped already; any other message (a library's) is escaped here
        line = f"ts={ts}Z level={record.levelname.lower()} {one_line(record.getMessage())}"
        if record.exc_info:  # indented, so that no text in it can pass for a line of ours
            trace = self.formatException(record.exc_info)
            line += "".join(f"\n    {one_line(part)}" for part in trace.splitlines())
        return line


class _JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``event`` and the fields ``kv`` was given
    (numbers and booleans as JSON has them, everything else as text, credentials stripped);
    a traceback is the ``traceback`` field. What JSON leaves raw (U+2028, U+2029, C1 and bidi
    controls) is escaped too (``json_text``), so no text in a value can start a line of its
    own or reorder it."""

    converter = time.gmtime  # type: ignore[assignment]  # (typeshed's overloads)

    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + "Z"
        data: dict[str, Any] = {"ts": ts, "level": record.levelname.lower()}
        message = record.getMessage()
        if isinstance(record.msg, _Line) and not record.args:
            data["event"] = record.msg.event
            for key, value in record.msg.fields.items():
                if key in ("ts", "level", "event"):
                    key = f"field_{key}"
                plain = isinstance(value, bool | int | float) and not (
                    isinstance(value, float) and not math.isfinite(value))
                data[key] = value if plain else redact_text(str(value))
        else:  # not written by kv(): the text as it is, credentials stripped
            data["event"] = "message"
            data["message"] = redact_text(message)
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json_text(data, indent=None)[:-1]


LOG_FORMATS = {"kv": _Formatter, "json": _JsonFormatter}
"""``configsync sync --log-format``: key=value lines (the default) or JSON lines."""


class _Fallback(logging.StreamHandler):  # type: ignore[type-arg]
    """The client's lines in the daemon's format on stderr, but only while the application has
    configured no logging of its own (no handler on the way to the root), like Python's
    ``lastResort`` (WARNING and up, unless the application lowers the logger's level)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # the stderr of the moment, as lastResort does
        if not _handled_elsewhere(client_logger, self):
            super().emit(record)


def _handled_elsewhere(start: logging.Logger, own: logging.Handler) -> bool:
    node: logging.Logger | None = start
    while node is not None:
        if any(handler is not own for handler in node.handlers):
            return True
        if not node.propagate:
            return False
        node = node.parent
    return False


client_logger = logging.getLogger("configsync.client")
"""The client library's logger (``Client``, ``AsyncClient``): ``key=value`` messages."""
client_logger.addHandler(_Fallback())


def configure(level: int = logging.INFO, log_format: str = "kv") -> None:
    """Send configsync's logs to stderr, one line each (UTC timestamps): ``key=value``, or
    ``log_format="json"`` for one JSON object a line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LOG_FORMATS[log_format]())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
