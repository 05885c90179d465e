"""Canonical JSON, checksums, and the snapshot of one agent version as stored in Redis."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import rfc8785

__all__ = ["MAX_SAFE_INTEGER", "Record", "canonical_json", "checksum", "jcs", "non_portable"]

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
        data = json.loads(text)
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


_FIELDS = tuple(f.name for f in fields(Record))
