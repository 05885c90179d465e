"""What a client holds, and the rules for changing it; no I/O, shared by Client and AsyncClient.

Readers call :meth:`Holdings.get` from any thread without a lock: the current mapping is
replaced, never mutated (copy-on-write), and rebinding a reference is atomic. Writers (the one
background task) serialise on a lock, compute what changed, and the caller runs callbacks after
the lock is released (DESIGN.md invariants 6 and 7). What a check reads overrules what events,
earlier reads or the cache file gave, and a value that is no snapshot is skipped, named and
logged once (invariants 6, 7 and 11, issue 17 items 1 and 2).
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

from pydantic import ConfigDict, ValidationError

from .errors import ConfigsyncError, CorruptDataError
from .logs import client_logger as logger
from .logs import kv
from .model import AgentConfig
from .redis_values import state_int
from .snapshot import Record
from .store import Keys

__all__ = [
    "ClientClosedError",
    "Holdings",
    "Plan",
    "Snapshot",
    "UnknownAgentError",
    "VersionNotFoundError",
]


CACHE_FORMAT = 1
KEEP_VERSIONS = 16
FULL_CHECK_EVERY = 10
"""Every this many checks read ``current`` in full even when ``state`` says nothing changed:
a snapshot forged in ``current`` and then restored, taken by a full read meanwhile (a start),
is served for at most this many ``check_interval`` s (DESIGN.md invariant 6). The versions
pinned reads fetched from a history hash are dropped then too (a later pinned read fetches
them again), so a forged history entry, once restored, outlives it by as long at most."""
OLDER_READS_BELIEVED = 2
"""A full read whose ``state.revision`` is lower than the last check's, in the same epoch, is
taken as a lagging replica's and ignored, until this many reads in a row say so: then Redis
went back (a restored forgery, a failover that lost writes) and its word is taken."""


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
        span = (f"versions {self.kept[0]}-{self.kept[-1]}" if len(self.kept) > 1
                else f"version {self.kept[0]}" if self.kept else "no versions")
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
    raw: str = field(default="", repr=False, compare=False)  # the JSON as read from Redis


def model_name(model: type[AgentConfig]) -> str:
    """``module:QualName``, as ``schema:`` in configsync.yaml spells a class."""
    return f"{model.__module__}:{model.__qualname__}"


def typed(record: Record, model: type[AgentConfig], raw: str = "") -> Snapshot:
    """``record`` as a Snapshot whose config is ``model``; raises pydantic's
    ``ValidationError`` when the model refuses it."""
    config = model.model_validate(record.config)
    return Snapshot(record.agent_id, record.version, record.checksum, record.commit,
                    record.author, record.committed_at, record.message, record.synced_at,
                    config, record, raw)


@dataclass(frozen=True, slots=True)
class Change:
    """An agent whose current config changed: its new snapshot, or None when deleted."""

    agent_id: str
    snapshot: Snapshot | None


@dataclass(frozen=True, slots=True)
class Plan:
    """What an event asks of the client (:meth:`Holdings.plan`): ``none``; ``fetch`` the
    ``agents`` listed (one HMGET of ``current``) and then :meth:`Holdings.apply_event`;
    or ``check``: re-read ``state``, then ``current`` if anything was applied."""

    action: str
    agents: tuple[str, ...] = ()


NOTHING, CHECK = Plan("none"), Plan("check")


def _well_formed(changes: Any) -> bool:
    """An ``applied`` event's ``changes``: a list of ``{agent_id: str, version: int,
    deleted: bool}`` (contract 2); anything else asks for a check."""
    return isinstance(changes, list) and all(
        isinstance(c, dict) and type(c.get("agent_id")) is str
        and type(c.get("version")) is int and type(c.get("deleted")) is bool for c in changes)


class Holdings:
    """The client's configs: current ones, every version seen, and where they came from.

    ``revision`` is only ever claimed when every change up to it is held (invariant 6): from
    a full read, or from an ``applied`` event whose revision is exactly the next one. A gap,
    an event listing no agents, or anything unexpected asks for a check instead.
    """

    def __init__(self, namespace: str, model: type[AgentConfig] | None = None) -> None:
        self.namespace = namespace
        self.current: Mapping[str, Snapshot] = {}
        self.versions: dict[tuple[str, int], Snapshot] = {}
        self._kept: dict[str, list[int]] = {}
        # versions pinned reads took from a history hash (never from `current`): dropped at
        # each periodic full check, so a restored forgery is fetched again (invariant 6)
        self.from_history: set[tuple[str, int]] = set()
        self.epoch: str | None = None
        self.revision = -1
        self.commit = ""
        self.schema = ""
        self.user_model = model
        self.model: type[AgentConfig] = model or AgentConfig
        self.model_errors: dict[str, str] = {}  # agent id -> why its config is not served
        self.lock = threading.RLock()
        # what the last check confirmed (invariant 6): the revision a full read or a state
        # read saw in this epoch (-1: none yet, or only a cache file), and the agents taken
        # from events since, which the next check compares with Redis
        self.checked = -1
        self.unconfirmed: set[str] = set()
        self.older_reads = 0
        self.checks = 0
        self.recheck = False  # an event said less than is held: check at once (red team 4)
        self.refused: dict[str, str] = {}  # kind of value (bad_event...) -> last logged
        self.source = "Redis"  # where the snapshots replace_all takes come from (red team 7)

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

    def remember(self, snapshot: Snapshot, *, from_history: bool = False) -> None:
        """Keep a version for pinned reads (the last :data:`KEEP_VERSIONS` of each agent: a
        conversation that pins an older one holds its Snapshot itself). Any thread.
        ``from_history``: a pinned read fetched it from the history hash; it is kept until
        the next periodic full check only (:data:`FULL_CHECK_EVERY`, issue 17, red team 1)."""
        with self.lock:
            self._remember(snapshot)
            if from_history and self.current.get(snapshot.agent_id) is not snapshot:
                self.from_history.add((snapshot.agent_id, snapshot.version))

    def drop_fetched(self) -> None:
        """Forget the versions pinned reads fetched from history (under the lock): a later
        pinned read fetches them again, so a forged entry restored meanwhile is gone."""
        for agent_id, version in self.from_history:
            if self.versions.pop((agent_id, version), None) is not None:
                held = self._kept.get(agent_id, [])
                if version in held:
                    held.remove(version)
        self.from_history = set()

    def _remember(self, snapshot: Snapshot) -> None:
        key = (snapshot.agent_id, snapshot.version)
        self.from_history.discard(key)  # (taken from `current` now: checked as current is)
        self.versions[key] = snapshot
        held = self._kept.setdefault(snapshot.agent_id, [])
        if snapshot.version not in held:
            held.append(snapshot.version)
            held.sort()
            while len(held) > KEEP_VERSIONS:
                self.versions.pop((snapshot.agent_id, held.pop(0)), None)

    def _set_schema(self, schema: str) -> None:
        """The state's ``schema`` is only compared, never imported: Redis must not choose
        what code an agent process runs. Configs are typed with the caller's ``model``, else
        with AgentConfig (extra fields kept as they came when the repository declares a
        subclass)."""
        if schema == self.schema and self.epoch is not None:
            return
        self.schema = schema
        if self.user_model is not None:
            if schema and schema != model_name(self.user_model):
                logger.warning(kv("schema_mismatch", schema=schema,
                                  model=model_name(self.user_model),
                                  using=model_name(self.user_model)))
            return
        self.model = _Lenient if schema else AgentConfig
        if schema:
            logger.info(kv("schema_not_imported", schema=schema,
                           hint=f"pass model= (Client(..., model={schema.split(':')[-1]})) "
                                f"to type configs with it"))

    def _typed(self, record: Record, raw: str) -> Snapshot | None:
        """``record`` typed with the model; None (logged once a version, and kept in
        :attr:`model_errors`) when the model refuses it: the agent keeps what it held, and no
        other agent waits for it."""
        try:
            snapshot = typed(record.verify(), self.model, raw)
        except CorruptDataError as exc:
            self._refuse(record.agent_id, f"version {record.version} in {self.source}: {exc}")
            return None
        except ValidationError as exc:
            message = f"{model_name(self.model)} refuses version {record.version}: " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(config)'}: {e['msg']}" for e in exc.errors())
            if self.model_errors.get(record.agent_id) != message:
                logger.error(kv("config_refused_by_model", agent=record.agent_id,
                                version=record.version, error=message,
                                serving="the version held, if any"))
            self.model_errors[record.agent_id] = message
            return None
        self.model_errors.pop(record.agent_id, None)
        return snapshot

    def _refuse(self, agent_id: str, message: str) -> None:
        """Note why ``agent_id``'s entry in Redis is not served (logged once a message)."""
        if self.model_errors.get(agent_id) != message:
            logger.error(kv("bad_snapshot", agent=agent_id, error=message,
                            serving="the version held, if any"))
        self.model_errors[agent_id] = message

    def _record(self, agent_id: str, text: str) -> Record | None:
        """The snapshot an entry of ``current`` holds, or None (logged once, and kept in
        :attr:`model_errors`) when it is none: not JSON, the wrong shape, another agent's."""
        try:
            record = Record.from_json(text)
        except CorruptDataError as exc:
            self._refuse(agent_id, f"{self._entry()}: {exc}")
            return None
        if record.agent_id != agent_id:
            self._refuse(agent_id, f"{self._entry()} is agent "
                                   f"{record.agent_id[:60]!r}'s snapshot")
            return None
        return record

    def _entry(self) -> str:
        return "current entry in Redis" if self.source == "Redis" else \
            f"snapshot in {self.source}"

    def revision_of(self, state: Mapping[str, str]) -> int | None:
        """The state's ``revision``; None (logged once) when it is not a number."""
        try:
            return state_int(state, "revision", Keys(self.namespace).state)
        except CorruptDataError as exc:
            self.event_refused(str(exc), "bad_state", "revision")
            return None

    def event_refused(self, problem: str, what: str = "bad_event", field: str = "") -> None:
        """Log a value from Redis that is skipped (an event, a state ``field``), once while
        it stays the same."""
        if self.refused.get(f"{what}:{field}") != problem:
            self.refused[f"{what}:{field}"] = problem
            logger.error(kv(what, namespace=self.namespace, error=problem,
                            doing="skipped it; checking what Redis holds"))

    def replace_all(self, state: Mapping[str, str], raw: Mapping[str, str]
                    ) -> list[Change] | None:
        """Take a full read of ``state`` and then ``current`` (agent id -> snapshot JSON):
        Redis is the truth (DESIGN.md invariant 6). The revision and commit become the
        state's, and every agent the version ``current`` has, a lower one too: whatever
        events, a cache file or an earlier forged read said. Two exceptions: a read older
        than the last check (same epoch, lower ``state.revision``: a lagging replica) is not
        taken (None) until :data:`OLDER_READS_BELIEVED` in a row say so; and an entry that
        is no valid snapshot, or that the model refuses, keeps what is held for that agent
        (logged once, in :attr:`model_errors`)."""
        with self.lock:
            epoch = state.get("epoch", "")
            revision = self.revision_of(state)
            new_epoch = epoch != self.epoch
            if not new_epoch and revision is not None and revision < self.checked:
                self.older_reads += 1
                if self.older_reads < OLDER_READS_BELIEVED:
                    logger.warning(kv("state_behind", revision=revision, checked=self.checked,
                                      serving="what is held until the next check agrees"))
                    return None
                logger.warning(kv("state_went_back", revision=revision, checked=self.checked,
                                  serving="what Redis serves"))
            self.older_reads = 0
            self._set_schema(state.get("schema", ""))
            old = self.current
            fresh: dict[str, Snapshot] = {}
            changes = []
            for agent_id, text in raw.items():
                held = old.get(agent_id)
                if held is not None and held.raw == text:  # (no parse: most of a big read)
                    fresh[agent_id] = held
                    self.model_errors.pop(agent_id, None)
                    continue
                record = self._record(agent_id, text)
                if held is not None and record is not None and (
                        held.version == record.version and held.checksum == record.checksum):
                    fresh[agent_id] = held
                    self.model_errors.pop(agent_id, None)
                    continue
                snapshot = None if record is None else self._typed(record, text)
                if snapshot is None:
                    if held is not None and (record is None or not new_epoch):
                        fresh[agent_id] = held
                    continue
                if held is not None and not new_epoch and held.version > snapshot.version:
                    logger.warning(kv("overruled", agent=agent_id, held=held.version,
                                      redis=snapshot.version, why="Redis serves this version"))
                    self._forget_above(agent_id, snapshot.version)
                fresh[agent_id] = snapshot
                self._remember(snapshot)
                changes.append(Change(agent_id, snapshot))
            for agent_id in old:
                if agent_id not in fresh:
                    changes.append(Change(agent_id, None))
            for agent_id in [a for a in self.model_errors if a not in raw]:
                del self.model_errors[agent_id]
            if new_epoch:
                self.versions = {k: v for k, v in self.versions.items()
                                 if fresh.get(k[0]) is v}
                self._kept = {a: [v] for a, v in self.versions}
                self.from_history &= set(self.versions)
            self.current = fresh
            self.epoch, self.commit = epoch, state.get("commit", "")
            self.revision = self.checked = -1 if revision is None else revision
            self.unconfirmed = set()
        return changes

    def _forget_above(self, agent_id: str, version: int) -> None:
        """Drop the kept versions of ``agent_id`` above ``version``: Redis overruled them
        (a forgery taken earlier), so a pinned read must not find them either."""
        held = self._kept.get(agent_id, [])
        for gone in [v for v in held if v > version]:
            held.remove(gone)
            self.versions.pop((agent_id, gone), None)

    def confirm(self, state: Mapping[str, str]) -> bool | None:
        """After a check's state read: True when it says nothing was applied since what is
        held (its revision is then the checked one), False when it does (read ``current``),
        None when it does not but agents taken from events since the last full read must be
        compared with ``current`` first (:meth:`verify`). Every :data:`FULL_CHECK_EVERY`
        checks say False anyway."""
        with self.lock:
            self.checks += 1
            if self.checks % FULL_CHECK_EVERY == 0:
                self.drop_fetched()
            revision = self.revision_of(state)
            if revision is None or (state.get("epoch"), revision, state.get("commit", "")) != (
                    self.epoch, self.revision, self.commit) or revision < self.checked:
                return False  # behind, or told something Redis does not say: read it all
            if self.checks % FULL_CHECK_EVERY == 0:
                return False
            self.checked = revision
            return None if self.unconfirmed else True

    def verify(self, fetched: Mapping[str, str | bytes | None]) -> bool:
        """Whether the agents taken from events since the last full read are still what
        ``current`` holds (``fetched``: their entries now). True clears them."""
        with self.lock:
            for agent_id, raw in fetched.items():
                held = self.current.get(agent_id)
                text = raw.decode() if isinstance(raw, bytes) else raw
                if (held is None) != (text is None) or (held is not None and held.raw != text):
                    return False
            self.unconfirmed -= set(fetched)
            return not self.unconfirmed

    def plan(self, event: Mapping[str, Any] | None) -> Plan:
        """What an ``applied`` event asks for (DESIGN.md invariant 6). Revision R + 1 in the
        held epoch: fetch every agent it lists (deletions too: Redis confirms them). Older
        than R: nothing (a duplicate or a late one). Anything else, R itself included (the
        commit served, applied again: the state's ``last_error`` may have cleared), or an
        event of any other shape: a check."""
        if event is None or event.get("type") != "applied" or event.get("epoch") != self.epoch:
            return CHECK
        revision, changes = event.get("revision"), event.get("changes")
        if type(revision) is not int:
            return CHECK
        if revision < self.revision:
            return NOTHING
        if revision != self.revision + 1 or not _well_formed(changes):
            return CHECK  # a gap, a commit too big to list, or nonsense: read what is there
        return Plan("fetch", tuple(c["agent_id"] for c in changes or ()))

    def apply_event(self, event: Mapping[str, Any], fetched: Mapping[str, str | bytes | None]
                    ) -> list[Change] | None:
        """Apply a planned ``applied`` event with every listed agent's ``current`` record
        (None: not in ``current``). What Redis holds decides, never the event alone: a listed
        deletion of an agent Redis still serves is not applied. None when the held revision
        moved meanwhile: the caller checks instead."""
        with self.lock:
            if event["epoch"] != self.epoch or event["revision"] != self.revision + 1:
                return None
            current = dict(self.current)
            changes = []
            for change in event["changes"]:
                agent_id = change["agent_id"]
                held = current.get(agent_id)
                raw = fetched.get(agent_id)
                if raw is None:  # deleted (by this commit, or a later one)
                    if held is not None:
                        del current[agent_id]
                        changes.append(Change(agent_id, None))
                    continue
                text = raw.decode() if isinstance(raw, bytes) else raw
                record = self._record(agent_id, text)
                if record is None:
                    continue
                if held is not None and held.version >= record.version:
                    if held.raw != text:  # Redis serves less than is held (a forgery read
                        self.unconfirmed.add(agent_id)  # whole earlier?): the check
                        self.recheck = True  # right after this event decides (red team 4)
                    continue  # never move back on an event's word
                snapshot = self._typed(record, text)
                if snapshot is None:
                    continue
                self._remember(snapshot)
                current[agent_id] = snapshot
                self.unconfirmed.add(agent_id)  # the next check compares it with Redis
                changes.append(Change(agent_id, snapshot))
            self.current = current
            self.revision, self.commit = event["revision"], str(event.get("commit") or "")
        return changes

    def take_recheck(self) -> bool:
        """Whether the last event asks for a check at once (and forget that it did): it named
        an agent that ``current`` holds at a version no higher than the one held, yet other
        than it (DESIGN.md invariant 6, issue 17, red team finding 4)."""
        with self.lock:
            recheck, self.recheck = self.recheck, False
        return recheck

    # -- the last-known-good file ------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write what is held atomically: temp file, fsync, rename. The lock is held only to
        take a consistent view; the file is written from the JSON as read from Redis, so a
        10,000-agent save costs one join and one write."""
        with self.lock:
            current, epoch, revision = self.current, self.epoch, self.revision
            commit, schema = self.commit, self.schema
        head = json.dumps({"format": CACHE_FORMAT, "namespace": self.namespace, "epoch": epoch,
                           "revision": revision, "commit": commit, "schema": schema},
                          separators=(",", ":"))
        body = ",".join(s.raw or s.record.to_json() for s in current.values())
        text = head[:-1] + ',"snapshots":[' + body + "]}"
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
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
        error (an entry that is no snapshot is skipped, logged). True when something was
        loaded. What it holds serves only until Redis is read: it never outranks a
        reachable Redis (the first full read replaces it, lower versions too)."""
        target = Path(path)
        if not target.exists():
            return False
        try:
            data = json.loads(target.read_text("utf-8"))
            if data.get("format") != CACHE_FORMAT or data.get("namespace") != self.namespace:
                raise ValueError("written for another format or namespace")
            if type(data.get("revision")) is not int:  # (never a Redis state's problem)
                raise ValueError(f"its revision is {str(data.get('revision'))[:40]!r}, "
                                 "not a number")
            raw = {str(r.get("agent_id")): json.dumps(r, separators=(",", ":"),
                                                      ensure_ascii=False)
                   for r in data["snapshots"] if isinstance(r, dict)}
            state = {"epoch": str(data["epoch"] or ""), "revision": str(data["revision"]),
                     "commit": str(data["commit"]), "schema": str(data.get("schema", ""))}
            self.source = f"the cache file {target}"  # (its problems are not Redis's: red team 7)
            try:
                self.replace_all(state, raw)
            finally:
                self.source = "Redis"
            self.checked = -1  # (a cache file confirms nothing: the first read decides)
        except Exception as exc:  # unreadable, truncated, or configs that no longer validate
            logger.warning(kv("cache_unreadable", path=target, error=str(exc),
                              using="nothing: starting without it"))
            return False
        return True

    def summary(self) -> dict[str, Any]:
        current = self.current
        return {"epoch": self.epoch, "revision": self.revision, "commit": self.commit,
                "versions": {a: s.version for a, s in sorted(current.items())},
                "model_errors": dict(sorted(self.model_errors.items()))}
