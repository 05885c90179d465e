"""Strict parsing of what Redis holds (issue 17 item 2): every value a reader takes from the
namespace's keys is checked here before it is used, and anything configsync would not have
written raises :class:`CorruptDataError`, one line naming the key and field. :mod:`store`
reads the keys; the client's rules (``holdings.py``) and the CLI take its verdicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import CorruptDataError
from .escape import quoted
from .model import AGENT_ID
from .snapshot import Record, parse_json
from .snapshot import _kind as json_kind

__all__ = ["event_problem", "is_version", "last_error", "parse_event", "record_at", "report_ok",
           "state_int", "stream_event", "version_field"]


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_VERSION = re.compile(r"[1-9][0-9]{0,17}")
_INTEGER = re.compile(r"0|[1-9][0-9]{0,17}")


def is_version(text: str) -> bool:
    """Whether ``text`` is a version number as history hashes file them (1, 2, ...)."""
    return _VERSION.fullmatch(text) is not None


def state_int(state: Mapping[str, str], name: str, key: str = "state") -> int | None:
    """A state field that holds a count (``revision``) as an int; None when absent. Raises
    :class:`CorruptDataError` naming ``key`` and the field when it is anything else."""
    value = state.get(name)
    if value is None:
        return None
    if not _INTEGER.fullmatch(value):
        raise CorruptDataError(f"{key} field {name!r} is {quoted(value[:40])}, not a number: "
                               f"not written by configsync (deleting {key} makes the daemon "
                               "rebuild it from git)")
    return int(value)


_LAST_ERROR = {"commit": str, "file": str, "line": int, "column": int, "message": str,
               "errors": int}


def last_error(state: Mapping[str, str], key: str = "state") -> dict[str, Any] | None:
    """The state's ``last_error`` (the daemon's last rejected commit: ``commit``, ``file``,
    ``line``, ``column``, ``message``, ``errors``), None when there is none. Raises
    :class:`CorruptDataError` naming the field when it is not that object."""
    text = state.get("last_error")
    if not text:
        return None
    try:
        error = parse_json(text)
    except ValueError:
        error = _ABSENT
    if type(error) is not dict or any(
            name in error and type(error[name]) is not kind
            for name, kind in _LAST_ERROR.items()):
        raise CorruptDataError(f"{key} field 'last_error' is not a rejection's JSON object")
    return error


_ABSENT = object()


def record_at(key: str, agent_id: str, raw: bytes | str, version: int | None = None, *,
            verify: bool = False) -> Record:
    """The snapshot an entry of ``current`` or of a history hash holds, or a
    :class:`CorruptDataError` naming the key and field: the entry's own agent id and version
    must be where it is filed; with ``verify``, its checksum its config's."""
    try:
        record = Record.from_json(raw)
        if verify:
            record.verify()
    except CorruptDataError as exc:
        where = quoted(agent_id) if version is None else version
        raise CorruptDataError(f"{key} field {where}: {exc}") from None
    if record.agent_id != agent_id:
        raise CorruptDataError(f"{key} field {quoted(agent_id)}: the snapshot is agent "
                               f"{quoted(record.agent_id[:60])}'s")
    if version is not None and record.version != version:
        raise CorruptDataError(f"{key} field {version}: the snapshot is version "
                               f"{record.version}")
    return record


def version_field(key: str, value: bytes | str, field: str | None = None) -> int:
    """A version number: a history hash's field name (``field`` None), or the value of
    ``field`` (the ``agents`` index); else :class:`CorruptDataError` naming it."""
    name = as_text(value)
    if not _VERSION.fullmatch(name):
        raise CorruptDataError(f"{key} field {quoted(name[:40])} is not a version number"
                               if field is None else f"{key} field {quoted(field[:60])} is "
                               f"{quoted(name[:40])}, not a version number")
    return int(name)


def report_ok(report: Any) -> bool:
    """Whether a client report has the shape the client library writes (``report()``)."""
    if type(report) is not dict:
        return False
    versions = report.get("versions", {})
    return (type(report.get("revision", 0)) is int and type(versions) is dict
            and all(type(v) is int for v in versions.values())
            and all(type(report.get(name, "")) in (str, int, type(None))
                    for name in ("instance_id", "host", "pid", "epoch", "commit")))


def event_problem(event: Any) -> str | None:
    """What makes ``event`` (parsed JSON) no event of the contract, or None: an object whose
    ``type`` is a string; an ``applied`` one has an int ``revision`` and ``changes`` null or
    a list of ``{agent_id: str, version: int, deleted: bool}``."""
    if type(event) is not dict:
        return f"a JSON {json_kind(event)}, not an object"
    if type(event.get("type")) is not str:
        return "no string 'type'"
    if event["type"] not in ("applied", "rejected", "rebuilt"):
        return None  # (a type of a later contract: its reader's to judge)
    revision = event.get("revision")
    if type(revision) is not int or revision < 0:
        return "'revision' is not a count of applied commits"
    for name in ("commit", "epoch", "error"):  # (a rejection's error is its one-line text)
        if (name in event or (name == "error" and event["type"] == "rejected")) \
                and type(event.get(name)) is not str:
            return f"{name!r} is not a string"
    if event["type"] != "applied":
        return None
    changes = event.get("changes")
    if changes is not None and not (isinstance(changes, list) and all(
            type(c) is dict and type(c.get("agent_id")) is str
            and AGENT_ID.fullmatch(c["agent_id"]) is not None
            and type(c.get("version")) is int and c["version"] >= 1
            and type(c.get("deleted")) is bool
            for c in changes)):
        return "'changes' is not a list of {agent_id, version, deleted}"
    return None


def parse_event(data: bytes | str) -> dict[str, Any]:
    """An event's JSON as a dict; raises :class:`CorruptDataError` saying why it is none
    (:func:`event_problem`)."""
    try:
        event = parse_json(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptDataError(f"not JSON ({exc})") from None
    problem = event_problem(event)
    if problem is not None:
        raise CorruptDataError(f"not an event: {problem}")
    assert isinstance(event, dict)
    return event


def stream_event(entry_id: bytes | str, fields: Mapping[Any, Any]
                  ) -> tuple[str, dict[str, Any] | CorruptDataError]:
    data = fields.get(b"event", fields.get("event"))
    try:
        if data is None:
            raise CorruptDataError("not an event: no 'event' field")
        return as_text(entry_id), parse_event(data)
    except CorruptDataError as exc:
        return as_text(entry_id), exc
