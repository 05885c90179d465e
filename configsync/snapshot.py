"""Canonical JSON, checksums, and the snapshot of one agent version as stored in Redis."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["Record", "canonical_json", "checksum"]


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 as is: the same config always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def checksum(config: Any) -> str:
    """sha256 (hex) of the canonical JSON of ``config``."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


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
