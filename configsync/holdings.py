"""What a client holds, and the rules for changing it; no I/O, shared by Client and AsyncClient.

Readers call :meth:`Holdings.get` from any thread without a lock: the current mapping is
replaced, never mutated (copy-on-write), and rebinding a reference is atomic. Writers (the one
background task) serialise on a lock, compute what changed, and the caller runs callbacks after
the lock is released (DESIGN.md invariants 6 and 7).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict

from .errors import ConfigsyncError, SchemaImportError
from .logs import client_logger as logger
from .logs import kv
from .model import AgentConfig
from .schema import load_agent_model
from .snapshot import Record

__all__ = [
    "ClientClosedError",
    "Holdings",
    "Snapshot",
    "UnknownAgentError",
    "VersionNotFoundError",
]


CACHE_FORMAT = 1
KEEP_VERSIONS = 16


class UnknownAgentError(KeyError, ConfigsyncError):
    """``get()`` was asked for an agent the client does not hold."""

    def __init__(self, agent_id: str, known: list[str]) -> None:
        super().__init__(agent_id)
        self.agent_id = agent_id
        self.known = known

    def __str__(self) -> str:
        shown = ", ".join(self.known[:20]) + (" ..." if len(self.known) > 20 else "")
        return (f"unknown agent {self.agent_id!r}; known agents: {shown}" if self.known
                else f"unknown agent {self.agent_id!r}; no configs are loaded yet")


class VersionNotFoundError(KeyError, ConfigsyncError):
    """A pinned version is not in the agent's history (trimmed, or never existed)."""

    def __init__(self, agent_id: str, version: int, kept: list[int]) -> None:
        super().__init__(agent_id, version)
        self.agent_id, self.version, self.kept = agent_id, version, kept

    def __str__(self) -> str:
        span = f"versions {self.kept[0]}-{self.kept[-1]}" if self.kept else "no versions"
        return (f"agent {self.agent_id!r} version {self.version} is not in history (it keeps "
                f"{span}); it was trimmed or never existed (`configsync sync --keep` keeps more)")


class ClientClosedError(ConfigsyncError):
    """A stopped client was used again."""


class _Lenient(AgentConfig):
    """The fallback model when the repo's schema class is not importable here: the declared
    fields typed, extra fields kept as they came."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One version of one agent's config, as the agent runtime reads it. Immutable: keep it (or
    its version) to pin a conversation to it."""

    agent_id: str
    version: int
    checksum: str
    commit: str
    author: str
    committed_at: str
    message: str
    synced_at: str
    config: AgentConfig
    record: Record = field(repr=False, compare=False)


def model_for(schema: str | None) -> type[AgentConfig]:
    """The repo's declared subclass when importable, else a lenient AgentConfig."""
    if not schema:
        return AgentConfig
    try:
        return load_agent_model(schema, hide_cwd=False)
    except SchemaImportError as exc:
        logger.warning(kv("schema_unavailable", schema=schema, error=str(exc),
                          using="a lenient AgentConfig"))
        return _Lenient


def typed(record: Record, model: type[AgentConfig]) -> Snapshot:
    config = model.model_validate(record.config)
    return Snapshot(record.agent_id, record.version, record.checksum, record.commit,
                    record.author, record.committed_at, record.message, record.synced_at,
                    config, record)


@dataclass(frozen=True, slots=True)
class Change:
    """An agent whose current config changed: its new snapshot, or None when deleted."""

    agent_id: str
    snapshot: Snapshot | None


class Holdings:
    """The client's configs: current ones, every version seen, and where they came from."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.current: Mapping[str, Snapshot] = {}
        self.versions: dict[tuple[str, int], Snapshot] = {}
        self._kept: dict[str, list[int]] = {}
        self.epoch: str | None = None
        self.revision = -1
        self.commit = ""
        self.schema = ""
        self.model: type[AgentConfig] = AgentConfig
        self.lock = threading.Lock()

    def get(self, agent_id: str) -> Snapshot:
        """Lock-free in-memory read of the current snapshot."""
        snapshot = self.current.get(agent_id)
        if snapshot is None:
            raise UnknownAgentError(agent_id, sorted(self.current))
        return snapshot

    def pinned(self, agent_id: str, version: int) -> Snapshot | None:
        """That version if it is held (current, or seen before), else None."""
        snapshot = self.current.get(agent_id)
        if snapshot is not None and snapshot.version == version:
            return snapshot
        return self.versions.get((agent_id, version))

    def remember(self, snapshot: Snapshot) -> None:
        """Keep a version for pinned reads (the last :data:`KEEP_VERSIONS` of each agent: a
        conversation that pins an older one holds its Snapshot itself)."""
        key = (snapshot.agent_id, snapshot.version)
        self.versions[key] = snapshot
        held = self._kept.setdefault(snapshot.agent_id, [])
        if snapshot.version not in held:
            held.append(snapshot.version)
            held.sort()
            while len(held) > KEEP_VERSIONS:
                self.versions.pop((snapshot.agent_id, held.pop(0)), None)

    def _set_schema(self, schema: str) -> None:
        if schema != self.schema or self.epoch is None:
            self.schema = schema
            self.model = model_for(schema)

    def replace_all(self, state: Mapping[str, str], records: Mapping[str, Record]) -> list[Change]:
        """Take a full read of ``state`` and ``current`` (level-triggered check). Within one
        epoch an agent never moves to a lower version; a new epoch replaces everything."""
        with self.lock:
            epoch = state.get("epoch", "")
            revision = int(state.get("revision", "0") or 0)
            new_epoch = epoch != self.epoch
            if not new_epoch and revision < self.revision:
                return []  # an older read raced a newer one: never go back
            self._set_schema(state.get("schema", ""))
            old = self.current
            fresh: dict[str, Snapshot] = {}
            changes = []
            for agent_id, record in records.items():
                held = old.get(agent_id)
                if held is not None and (
                        (held.version == record.version and held.checksum == record.checksum)
                        or (not new_epoch and held.version > record.version)):
                    fresh[agent_id] = held  # the same, or newer in this epoch: never go back
                    continue
                snapshot = typed(record, self.model)
                fresh[agent_id] = snapshot
                self.remember(snapshot)
                changes.append(Change(agent_id, snapshot))
            for agent_id in old:
                if agent_id not in records:
                    changes.append(Change(agent_id, None))
            if new_epoch:
                self.versions = {k: v for k, v in self.versions.items()
                                 if fresh.get(k[0]) is v}
                self._kept = {a: [v] for a, v in self.versions}
            self.current = fresh
            self.epoch, self.revision, self.commit = epoch, revision, state.get("commit", "")
        return changes

    def apply_record(self, record: Record, epoch: str, revision: int) -> list[Change]:
        """One ``updated`` event's record (read from Redis after the event)."""
        with self.lock:
            if epoch != self.epoch:
                return []  # the caller re-reads everything for a new epoch
            held = self.current.get(record.agent_id)
            if held is not None and held.version >= record.version:
                return []  # duplicated or out-of-order: never move back
            snapshot = typed(record, self.model)
            self.remember(snapshot)
            self.current = {**self.current, record.agent_id: snapshot}
            self.revision = max(self.revision, revision)
        return [Change(record.agent_id, snapshot)]

    def apply_delete(self, agent_id: str, version: int, epoch: str,
                     revision: int) -> list[Change]:
        with self.lock:
            held = self.current.get(agent_id)
            if epoch != self.epoch or held is None or held.version > version:
                return []
            self.current = {k: v for k, v in self.current.items() if k != agent_id}
            self.revision = max(self.revision, revision)
        return [Change(agent_id, None)]

    # -- the last-known-good file ------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write what is held atomically: temp file, fsync, rename."""
        with self.lock:
            data = {"format": CACHE_FORMAT, "namespace": self.namespace, "epoch": self.epoch,
                    "revision": self.revision, "commit": self.commit, "schema": self.schema,
                    "snapshots": [json.loads(s.record.to_json()) for s in self.current.values()]}
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, separators=(",", ":"))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass

    def load(self, path: str | os.PathLike[str]) -> bool:
        """Start from the file at ``path``; a missing or corrupt file is a warning, not an
        error. True when something was loaded."""
        target = Path(path)
        if not target.exists():
            return False
        try:
            data = json.loads(target.read_text("utf-8"))
            if data.get("format") != CACHE_FORMAT or data.get("namespace") != self.namespace:
                raise ValueError("written for another format or namespace")
            records = {r["agent_id"]: Record.from_json(json.dumps(r)) for r in data["snapshots"]}
            state = {"epoch": str(data["epoch"] or ""), "revision": str(data["revision"]),
                     "commit": str(data["commit"]), "schema": str(data.get("schema", ""))}
            self.replace_all(state, records)
        except Exception as exc:  # unreadable, truncated, or configs that no longer validate
            logger.warning(kv("cache_unreadable", path=target, error=str(exc),
                              using="nothing: starting without it"))
            return False
        return True

    def summary(self) -> dict[str, Any]:
        current = self.current
        return {"epoch": self.epoch, "revision": self.revision, "commit": self.commit,
                "versions": {a: s.version for a, s in sorted(current.items())}}
