"""Canonical JSON, checksums, and the snapshot of one agent version as stored in Redis."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import rfc8785

from .errors import CorruptDataError
from .model import AGENT_ID

__all__ = ["MAX_SAFE_INTEGER", "Record", "canonical_json", "checksum", "jcs", "non_portable",
           "parse_json"]

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer every JSON reader holds exactly (JavaScript's Number.MAX_SAFE_INTEGER,
a 64-bit float elsewhere); a config holds none outside ±MAX_SAFE_INTEGER (RFC 8785 3.2.2.3)."""


def canonical_json(value: Any) -> str:
    """Compact JSON for storage: sorted keys, no spaces, UTF-8 as is, NaN and infinities
    refused (``ValueError``). Fast (the C encoder); it is *not* the checksum's form, which is
    RFC 8785 (:func:`jcs`): Python writes ``1.0`` and ``1e-05`` where JCS writes ``1`` and
    ``0.00001``, and sorts keys by code point, not UTF-16. Any JSON reader parses either."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _refused(text: str) -> float:
    raise ValueError(f"{text} is no JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf or nan: "1e999" overflows
        raise ValueError(f"{text[:40]} is out of a 64-bit float's range")
    return value


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` as every reader of Redis calls it (issue 17, red team's item 2): Python's
    extensions ``NaN``, ``Infinity`` and ``-Infinity`` and a number too big for a float
    (``1e999``) raise ``ValueError`` like any other text that is no JSON (RFC 8259 section 6
    has no such numbers, and no JSON writer may then print them), and so does text nested too
    deeply for Python's parser (``[[[[…``: its ``RecursionError`` stopped clients, the daemon
    and the CLIs). Raises ``ValueError`` (and ``UnicodeDecodeError``, one) for anything that
    is not JSON."""
    try:
        return json.loads(text, parse_constant=_refused, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply: not JSON configsync wrote") from None


def jcs(value: Any) -> bytes:
    """The RFC 8785 (JSON Canonicalization Scheme) bytes of ``value``: what any language's
    JCS library makes of the same JSON. Raises ``rfc8785.CanonicalizationError`` (a
    ``ValueError``) for NaN, infinities and integers outside ±MAX_SAFE_INTEGER."""
    return rfc8785.dumps(value)


def checksum(config: Any) -> str:
    """sha256 (hex) of the RFC 8785 bytes of ``config`` (contract 2; contract 1 hashed
    :func:`canonical_json`, which other languages cannot reproduce)."""
    return hashlib.sha256(jcs(config)).hexdigest()


def non_portable(value: Any) -> Iterator[tuple[list[str | int], float | int]]:
    """Where ``value`` (plain data) holds a number JSON cannot carry to every reader: NaN,
    an infinity, or an integer outside ±MAX_SAFE_INTEGER. Yields (path, number)."""
    stack: list[tuple[list[str | int], Any]] = [([], value)]
    while stack:
        path, item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key, child in item.items():
                if type(child) in _SCALARS:
                    continue
                stack.append(([*path, key], child))
        elif kind is list:
            for index, child in enumerate(item):
                if type(child) in _SCALARS:
                    continue
                stack.append(([*path, index], child))
        elif kind is float:
            if not math.isfinite(item):
                yield path, item
        elif isinstance(item, int) and not isinstance(item, bool):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                yield path, item


_SCALARS = frozenset([str, bool, type(None)])  # nothing to look at (ints and floats are)


@dataclass(frozen=True, slots=True)
class Record:
    """One version of one agent as stored in Redis (its JSON is the contract's snapshot JSON):
    the fully resolved config as plain data, and the commit that made it."""

    agent_id: str
    version: int
    checksum: str
    config: dict[str, Any]
    commit: str
    author: str
    committed_at: str
    message: str
    synced_at: str

    def to_json(self) -> str:
        # not dataclasses.asdict: it deep-copies the config, a third of a 10k-agent rebuild
        return canonical_json({name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def from_json(cls, text: str | bytes) -> Record:
        """Parse the contract's snapshot JSON. Raises :class:`CorruptDataError` (one line:
        what is wrong) for anything else: not JSON, not an object, a field missing or of
        the wrong type (``version`` a positive int, ``config`` an object, the rest
        strings). The checksum is not compared here (:meth:`verify`)."""
        try:
            data = parse_json(text)
        except (ValueError, UnicodeDecodeError) as exc:  # (JSONDecodeError is a ValueError)
            raise CorruptDataError(f"not JSON ({exc})") from None
        if type(data) is not dict:
            raise CorruptDataError(f"not a snapshot: a JSON {_kind(data)}, not an object")
        for name, kind in _TYPES.items():
            value = data.get(name, _ABSENT)
            if value is _ABSENT:
                raise CorruptDataError(f"not a snapshot: no {name!r} field")
            if type(value) is not kind or (type(value) is int and value < 1):
                shown = f" ({value})" if type(value) is int else ""
                raise CorruptDataError(f"not a snapshot: {name!r} is a JSON {_kind(value)}"
                                       f"{shown}, not {_WANTED[kind]}")
        # (what the contract allows no daemon to write: an id no agent file can have, a
        # version no JSON reader holds exactly)
        if not AGENT_ID.fullmatch(data["agent_id"]):
            raise CorruptDataError("not a snapshot: 'agent_id' is no agent id (the path under "
                                   "agents/ without .yaml)")
        if data["version"] > MAX_SAFE_INTEGER:
            raise CorruptDataError(f"not a snapshot: 'version' ({data['version']}) is over "
                                   "2^53 - 1")
        return cls(**{name: data[name] for name in _FIELDS})

    def verify(self) -> Record:
        """``self`` when its checksum is its config's (:func:`checksum`); else raises
        :class:`CorruptDataError`. Costs one RFC 8785 encoding: readers call it once for a
        version they had not held."""
        try:
            actual = checksum(self.config)
        except ValueError as exc:
            raise CorruptDataError(f"config has no checksum ({exc})") from None
        if actual != self.checksum:
            raise CorruptDataError(f"checksum {self.checksum[:16]!r} is not its config's "
                                   f"({actual[:16]}...)")
        return self


_FIELDS = tuple(f.name for f in fields(Record))
_TYPES: dict[str, type] = {f.name: {"version": int, "config": dict}.get(f.name, str)
                           for f in fields(Record)}
_WANTED = {int: "a positive integer", dict: "an object", str: "a string"}
_ABSENT = object()


def _kind(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)
