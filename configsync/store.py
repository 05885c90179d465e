"""The Redis contract: every key name, and every write, for one namespace.

Keys (``ns`` is the namespace; the ``{ns}`` hash tag keeps a namespace in one cluster slot):

    configsync:{ns}:state               hash: commit, seen, revision, epoch, branch, source,
                                        applied_at, heartbeat_at, last_error, schema, contract
                                        (and heartbeat_every, from a polling daemon)
    configsync:{ns}:current             hash: agent id -> snapshot JSON
    configsync:{ns}:history:<agent id>  hash: version -> snapshot JSON (the last N kept)
    configsync:{ns}:agents              hash: agent id -> last version written (deleted too)
    configsync:{ns}:events              stream, field ``event`` -> event JSON (capped)
    configsync:{ns}:changes             pub/sub channel, event JSON
    configsync:{ns}:client:<instance>   string with expiry: a running client's report

Every commit's writes go through :meth:`Store.commit_transaction`: one MULTI/EXEC guarded by a
compare-and-set on ``state.seen`` (WATCH), so a reader never sees half a commit and two daemons
never both write the same step (DESIGN.md invariants 1 and 4). A rebuild first writes the
history, which is immutable, in bounded pipelines (:meth:`Store.write_history`), so its
transaction holds only ``state``, ``current``, ``agents`` and the event. The ``agents`` index
names every history hash: no key is ever found by SCAN, whose glob a namespace could match
beyond itself. Reads work on either kind of connection (``decode_responses`` or not).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from .errors import CorruptDataError
from .escape import quoted
from .redis_values import (
    is_version,
    record_at,
    report_ok,
    state_int,
    stream_event,
    version_field,
)
from .snapshot import Record, canonical_json, parse_json

__all__ = ["CONTRACT_VERSION", "EVENTS_MAXLEN", "EVENT_CHANGES_MAX", "AgentChange", "Event",
           "Keys", "Store", "namespaces"]

EVENTS_MAXLEN = 10_000
EVENT_CHANGES_MAX = 1_000
"""An ``applied`` event lists at most this many agents (about 60 bytes each); a bigger commit
sends ``changes: null``, so no event (or stream entry) grows with the size of the repository."""

CONTRACT_VERSION = "2"
"""``state.contract``: the version of what the keys hold. 2: one ``applied`` event per commit,
checksums are sha256 of RFC 8785 (JCS) bytes, and no config holds NaN, an infinity or an
integer beyond ±(2^53-1). 1 (a state without the field): per-agent events, sha256 of Python's
``json.dumps`` text. A daemon that finds another version at start rebuilds the namespace (a
new epoch)."""


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of one namespace. Nothing else in configsync spells them."""

    namespace: str

    @property
    def prefix(self) -> str:
        return f"configsync:{{{self.namespace}}}:"

    @property
    def state(self) -> str:
        return self.prefix + "state"

    @property
    def current(self) -> str:
        return self.prefix + "current"

    def history(self, agent_id: str) -> str:
        return self.prefix + "history:" + agent_id

    @property
    def agents(self) -> str:
        return self.prefix + "agents"

    @property
    def history_pattern(self) -> str:
        """SCAN pattern for the history hashes (glob characters escaped): only to index a
        namespace written before the ``agents`` index existed."""
        return re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + "history:*"

    @property
    def events(self) -> str:
        return self.prefix + "events"

    @property
    def changes(self) -> str:
        return self.prefix + "changes"

    def client(self, instance_id: str) -> str:
        return self.prefix + "client:" + instance_id

    @property
    def client_pattern(self) -> str:
        """SCAN pattern for the clients' reports (glob characters escaped)."""
        return re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + "client:*"


@dataclass(frozen=True, slots=True)
class AgentChange:
    """One agent a commit changed: its new version, or its last one when ``deleted``."""

    agent_id: str
    version: int
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    """A change event, as published and appended to the stream: one per applied commit
    (``applied``, listing every agent it changed), rejected commit or rebuild.

    Within an epoch, ``applied`` events carry consecutive revisions, so a reader that holds
    revision R and receives R + 2 knows it missed one (DESIGN.md invariant 6). A commit that
    changes more than EVENT_CHANGES_MAX agents lists none (``changes`` is null, ``count``
    says how many): its readers re-read ``current``."""

    type: str  # applied, rejected, rebuilt
    commit: str
    revision: int
    epoch: str
    changes: Sequence[AgentChange] = ()
    error: str | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {"type": self.type, "commit": self.commit,
                                "revision": self.revision, "epoch": self.epoch}
        if self.type == "applied":
            listed = sorted(self.changes, key=lambda c: c.agent_id)
            data["count"] = len(listed)
            data["changes"] = None if len(listed) > EVENT_CHANGES_MAX else [
                {"agent_id": c.agent_id, "version": c.version, "deleted": c.deleted}
                for c in listed]
        if self.error is not None:
            data["error"] = self.error
        return canonical_json(data)


@dataclass
class Write:
    """Everything one step writes: applied in one transaction, or not at all."""

    state: dict[str, str]
    upserts: list[Record] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    history: Mapping[str, Sequence[Record]] = field(default_factory=dict)
    trim: Mapping[str, int] = field(default_factory=dict)  # agent -> delete versions <= this
    replace_all: bool = False  # a rebuild: drop current, state and the index first
    index: Mapping[str, int] = field(default_factory=dict)  # agent -> last version (rebuild)


def namespaces(client: Any) -> list[str]:
    """The namespaces that have a state in the Redis ``client`` reaches, sorted. One SCAN:
    for hints and tools (which namespace did the daemon write?), never for correctness."""
    found = set()
    for key in client.scan_iter("configsync:{*}:state", count=1000):
        name = _text(key) or ""
        found.add(name[len("configsync:{"):-len("}:state")])
    return sorted(found)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class Store:
    """Reads and writes one namespace. Takes a connected ``redis.Redis``; never makes one."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.redis = client
        self.keys = Keys(namespace)
        self.heartbeat_every: float | None = None  # seconds between beats (heartbeat.py)

    # -- reads ------------------------------------------------------------------------------

    def state(self) -> dict[str, str]:
        """The state hash (empty when missing). Raises :class:`CorruptDataError` when
        ``revision`` is not a number: nothing configsync writes."""
        raw: Mapping[Any, Any] = self.redis.hgetall(self.keys.state)
        try:
            state = {_str(k): _str(v) for k, v in raw.items()}
        except UnicodeDecodeError:  # (red team's item 1): no text configsync wrote
            bad = next(k for k, v in raw.items() if not _utf8(k) or not _utf8(v))
            raise CorruptDataError(
                f"{self.keys.state} field {quoted(bad.decode('utf-8', 'replace'))} is not "
                f"UTF-8 text: not written by configsync (deleting {self.keys.state} makes the "
                "daemon rebuild it from git)") from None
        state_int(state, "revision", self.keys.state)
        return state

    def current(self) -> dict[str, Record]:
        """Agent id -> its current snapshot. Raises :class:`CorruptDataError` naming the
        first entry that is not one (:meth:`record` for one agent only)."""
        raw: Mapping[Any, Any] = self.redis.hgetall(self.keys.current)
        return {_str(k): record_at(self.keys.current, _str(k), v) for k, v in raw.items()}

    def record(self, agent_id: str) -> Record | None:
        """One agent's current snapshot (None when it has none); raises
        :class:`CorruptDataError` when its entry is not one (its checksum compared too)."""
        raw = self.redis.hget(self.keys.current, agent_id)
        return None if raw is None else record_at(self.keys.current, agent_id, raw, verify=True)

    def agent_ids(self) -> list[str]:
        """The agents ``current`` holds, sorted (their snapshots unread)."""
        raw: Sequence[Any] = self.redis.hkeys(self.keys.current)
        return sorted(_str(k) for k in raw)

    def history(self, agent_id: str) -> dict[int, Record]:
        key = self.keys.history(agent_id)
        raw: Mapping[Any, Any] = self.redis.hgetall(key)
        return {version_field(key, k): record_at(key, agent_id, v, version_field(key, k))
                for k, v in raw.items()}

    def history_keys(self) -> list[str]:
        """The namespace's history hashes, from the ``agents`` index."""
        return [self.keys.history(agent_id) for agent_id in sorted(self.last_versions())]

    def last_versions(self) -> dict[str, int]:
        """Agent id -> highest version ever written, deleted agents included (the ``agents``
        index; built once from the history hashes for a namespace written without one)."""
        raw: Mapping[Any, Any] = self.redis.hgetall(self.keys.agents)
        if raw:
            return {_str(k): version_field(self.keys.agents, v, _str(k)) for k, v in raw.items()}
        found: dict[str, int] = {}
        prefix = len(self.keys.history(""))
        keys = [_str(k) for k in self.redis.scan_iter(self.keys.history_pattern, count=1000)]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hkeys(key)
        for key, versions in zip(keys, pipe.execute(), strict=True):
            if versions:
                found[key[prefix:]] = max(version_field(key, v) for v in versions)
        return found

    def events(self, count: int = EVENTS_MAXLEN) -> list[dict[str, Any]]:
        """The stream's events, oldest first (an entry that is not one is left out)."""
        client: Any = self.redis
        entries = client.xrange(self.keys.events, count=count)
        return [e for _, e in (stream_event(i, f) for i, f in entries) if isinstance(e, dict)]

    def version(self, agent_id: str, version: int) -> Record | None:
        """One version of one agent from its history hash, or None when it is not kept;
        raises :class:`CorruptDataError` when the entry is not that version's snapshot."""
        key = self.keys.history(agent_id)
        raw = self.redis.hget(key, str(version))
        return None if raw is None else record_at(key, agent_id, raw, version, verify=True)

    def kept_versions(self, agent_id: str) -> list[int]:
        """The versions the agent's history hash holds, oldest first (a field that is no
        version number is none)."""
        raw: Sequence[Any] = self.redis.hkeys(self.keys.history(agent_id))
        return sorted(int(v) for v in map(_str, raw) if is_version(v))

    def last_event_id(self) -> str:
        """The id of the stream's newest entry (``0-0`` when it is empty): where "only new
        events" begins, fixed once so that nothing between two reads is missed."""
        client: Any = self.redis
        newest = client.xrevrange(self.keys.events, count=1)
        return _str(newest[0][0]) if newest else "0-0"

    def read_events(self, after: str, *, block_ms: int | None = None, count: int = 100
                    ) -> list[tuple[str, dict[str, Any] | CorruptDataError]]:
        """Up to ``count`` events after stream id ``after``, oldest first, as (id, event);
        with ``block_ms`` wait that long for one when there are none (XREAD BLOCK). An entry
        that is not an event (:func:`parse_event`) comes as (id, the error saying why): the
        caller skips it and reads on."""
        client: Any = self.redis
        found = client.xread({self.keys.events: after}, count=count, block=block_ms)
        if not found:
            return []
        entries = found[0][1]
        return [stream_event(entry_id, fields) for entry_id, fields in entries]

    def client_reports(self) -> list[dict[str, Any]]:
        """The running clients' fleet reports (written by the client library, expiring),
        sorted by instance id. One SCAN with the namespace's prefix escaped, as
        :func:`namespaces` does: a diagnostic, never for correctness. A report that vanished
        meanwhile, does not parse, or is not of the client's shape (``versions`` a mapping
        of agent id to int, ``revision`` an int) is left out."""
        found = self.redis.scan_iter(self.keys.client_pattern, count=1000)
        keys = sorted(_str(k) for k in found)
        if not keys:
            return []
        client: Any = self.redis
        reports: list[dict[str, Any]] = []
        for value in client.mget(keys):
            try:
                report = parse_json(value) if value is not None else None
            except ValueError:
                continue
            if report_ok(report):
                assert isinstance(report, dict)
                reports.append(report)
        return sorted(reports, key=lambda r: str(r.get("instance_id", "")))

    # -- writes -----------------------------------------------------------------------------

    def agent_count(self) -> int:
        """How many agents ``current`` holds (HLEN: nothing parsed)."""
        client: Any = self.redis
        return int(client.hlen(self.keys.current))

    def heartbeat(self, at: str) -> None:
        """Stamp ``heartbeat_at`` (and ``heartbeat_every``, when the daemon set it: what
        :mod:`.heartbeat` reads) when the state exists (never create a partial state)."""
        client: Any = self.redis
        every = "" if self.heartbeat_every is None else f"{self.heartbeat_every:g}"
        client.eval(_HEARTBEAT, 1, self.keys.state, at, every)

    def commit_transaction(self, write: Write, *, expected_seen: str | None) -> bool:
        """Apply ``write`` atomically if ``state.seen`` still equals ``expected_seen`` (None: the
        state must be missing). False when another writer got there first."""
        keys = self.keys
        pipe: Any
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.state)
                if _text(pipe.hget(keys.state, "seen")) != expected_seen:
                    pipe.unwatch()
                    return False
                pipe.multi()
                if write.replace_all:
                    pipe.delete(keys.current, keys.state, keys.agents)
                self._queue(pipe, write)
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    def _queue(self, pipe: Any, write: Write) -> None:
        keys = self.keys
        encoded: dict[int, str] = {}  # a record goes to current and history: encode it once

        def text(record: Record) -> str:
            found = encoded.get(id(record))
            if found is None:
                found = encoded[id(record)] = record.to_json()
            return found

        if write.upserts:
            pipe.hset(keys.current, mapping={s.agent_id: text(s) for s in write.upserts})
            pipe.hset(keys.agents, mapping={s.agent_id: str(s.version) for s in write.upserts})
        if write.index:
            pipe.hset(keys.agents, mapping={a: str(v) for a, v in write.index.items()})
        if write.deletes:
            pipe.hdel(keys.current, *write.deletes)
        for agent_id, records in write.history.items():
            if records:
                pipe.hset(keys.history(agent_id),
                          mapping={str(s.version): text(s) for s in records})
        for agent_id, upto in write.trim.items():
            if upto > 0:  # every version at or below the cutoff: --keep may have been lowered
                pipe.eval(_TRIM, 1, keys.history(agent_id), upto + 1, 0)
        pipe.hset(keys.state, mapping=write.state)
        for event in write.events:
            message = event.to_json()
            pipe.xadd(keys.events, {"event": message}, maxlen=EVENTS_MAXLEN, approximate=True)
            pipe.publish(keys.changes, message)


    def trim_history(self, cutoffs: Mapping[str, int]) -> None:
        """Delete every version at or below ``cutoffs[agent]`` from each agent's history, in
        one pipeline (outside any transaction: versions are immutable; trimming only forgets
        old ones)."""
        if not cutoffs:
            return
        pipe: Any = self.redis.pipeline(transaction=False)
        for agent_id, upto in cutoffs.items():
            pipe.eval(_TRIM, 1, self.keys.history(agent_id), upto + 1, 0)
        pipe.execute()

    def write_history(self, history: Mapping[str, Sequence[Record]], *,
                      chunk_bytes: int = 1 << 20) -> None:
        """Before a rebuild's transaction: each agent's history hash holds exactly
        ``history[agent]`` (older and newer versions removed), and the hashes of agents not in
        it (but in the old index) are gone. Written in pipelines of about ``chunk_bytes``, so
        no single command blocks the server for long (invariant 1 holds: versions are
        immutable, and no reader is told of them before the transaction names them)."""
        keys = self.keys
        indexed = [_str(a) for a in self.redis.hkeys(keys.agents)] or self.last_versions()
        gone = [a for a in indexed if a not in history]  # (the index's values unread)
        pipe: Any = self.redis.pipeline(transaction=False)
        size = 0
        for agent_id in gone:
            pipe.delete(keys.history(agent_id))
            size += 64
        for agent_id, records in history.items():
            key = keys.history(agent_id)
            for record in records:
                text = record.to_json()
                pipe.hset(key, str(record.version), text)
                size += len(text)
                if size >= chunk_bytes:
                    pipe.execute()
                    size = 0
            if records:
                pipe.eval(_TRIM, 1, key, records[0].version, records[-1].version)
        pipe.execute()


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _utf8(value: Any) -> bool:
    try:
        _str(value)
    except UnicodeDecodeError:
        return False
    return True


_TRIM = """
-- KEYS[1]: a history hash. Keep the versions from ARGV[1] to ARGV[2] (0: no upper bound).
local low, high = tonumber(ARGV[1]), tonumber(ARGV[2])
local gone = {}
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local v = tonumber(field)
  if v == nil or v < low or (high > 0 and v > high) then gone[#gone + 1] = field end
  if #gone == 1000 then redis.call('HDEL', KEYS[1], unpack(gone)); gone = {} end
end
if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
return 0
"""

_HEARTBEAT = """
if redis.call('HEXISTS', KEYS[1], 'seen') == 1 then
  redis.call('HSET', KEYS[1], 'heartbeat_at', ARGV[1])
  if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'heartbeat_every', ARGV[2]) end
end
return 0
"""
