"""Structured logs (``key=value``) that never carry credentials."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["configure", "kv", "logger", "redact_url"]

logger = logging.getLogger("configsync")

_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


def redact_url(url: str) -> str:
    """``url`` without user and password: ``https://tok@host/r`` → ``https://host/r``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub("", url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def redact_text(text: str) -> str:
    """Every ``scheme://user:pass@`` in free text (a git error message) without its userinfo."""
    return _USERINFO.sub("", text)


_NEEDS_QUOTES = re.compile('[\\s"=\\\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
_STILL_RAW = re.compile("[\x7f-\x9f\u2028\u2029]")  # line breaks to some readers; JSON keeps them


def _value(value: Any) -> str:
    """A value as it is, or JSON-quoted when it holds a space, a quote, ``=``, a backslash or
    any control or line-breaking character, so that untrusted text (a commit message, a git
    error) can never start a line of its own."""
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    quoted = json.dumps(text, ensure_ascii=False)
    return _STILL_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def kv(event: str, **fields: Any) -> str:
    """``event=NAME key=value ...``, quoting values with spaces, credentials stripped."""
    parts = [f"event={event}"]
    parts += [f"{key}={_value(redact_text(str(value)))}" for key, value in fields.items()
              if value is not None]
    return " ".join(parts)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        return f"ts={ts}Z level={record.levelname.lower()} {record.getMessage()}"


def configure(level: int = logging.INFO) -> None:
    """Send configsync's logs to stderr, one ``key=value`` line each (UTC timestamps)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = _Formatter()
    formatter.converter = __import__("time").gmtime
    handler.setFormatter(formatter)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
