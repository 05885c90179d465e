"""The Redis contract: every key name, and every write, for one namespace.

Keys (``ns`` is the namespace; the ``{ns}`` hash tag keeps a namespace in one cluster slot):

    configsync:{ns}:state               hash: commit, seen, revision, epoch, branch, source,
                                        applied_at, heartbeat_at, last_error, schema
    configsync:{ns}:current             hash: agent id -> snapshot JSON
    configsync:{ns}:history:<agent id>  hash: version -> snapshot JSON (the last N kept)
    configsync:{ns}:events              stream, field ``event`` -> event JSON (capped)
    configsync:{ns}:changes             pub/sub channel, event JSON
    configsync:{ns}:client:<instance>   string with expiry: a running client's report

Every commit's writes go through :meth:`Store.commit_transaction`: one MULTI/EXEC guarded by a
compare-and-set on ``state.seen`` (WATCH), so a reader never sees half a commit and two daemons
never both write the same step (DESIGN.md invariants 1 and 4).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from .snapshot import Record, canonical_json

__all__ = ["EVENTS_MAXLEN", "Event", "Keys", "Store", "namespaces"]

EVENTS_MAXLEN = 10_000


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
    def history_pattern(self) -> str:
        return self.prefix + "history:*"

    @property
    def events(self) -> str:
        return self.prefix + "events"

    @property
    def changes(self) -> str:
        return self.prefix + "changes"

    def client(self, instance_id: str) -> str:
        return self.prefix + "client:" + instance_id


@dataclass(frozen=True, slots=True)
class Event:
    """A change event, as published and appended to the stream."""

    type: str  # updated, deleted, rejected, rebuilt
    commit: str
    revision: int
    epoch: str
    agent_id: str | None = None
    version: int | None = None
    checksum: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        data = {"type": self.type, "agent_id": self.agent_id, "version": self.version,
                "checksum": self.checksum, "commit": self.commit, "revision": self.revision,
                "epoch": self.epoch}
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
    replace_all: bool = False  # a rebuild: drop current and every history hash first


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

    # -- reads ------------------------------------------------------------------------------

    def state(self) -> dict[str, str]:
        """The state hash (empty when missing)."""
        raw: Mapping[bytes, bytes] = self.redis.hgetall(self.keys.state)  # type: ignore[assignment]
        return {k.decode(): v.decode() for k, v in raw.items()}

    def current(self) -> dict[str, Record]:
        raw: Mapping[bytes, bytes] = self.redis.hgetall(self.keys.current)  # type: ignore[assignment]
        return {k.decode(): Record.from_json(v) for k, v in raw.items()}

    def history(self, agent_id: str) -> dict[int, Record]:
        raw: Mapping[bytes, bytes] = self.redis.hgetall(  # type: ignore[assignment]
            self.keys.history(agent_id))
        return {int(k): Record.from_json(v) for k, v in raw.items()}

    def history_keys(self) -> list[str]:
        return [_text(k) or "" for k in self.redis.scan_iter(self.keys.history_pattern,
                                                               count=1000)]

    def last_versions(self) -> dict[str, int]:
        """Agent id -> highest version ever written, deleted agents included."""
        found: dict[str, int] = {}
        prefix = len(self.keys.history(""))
        keys = self.history_keys()
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hkeys(key)
        for key, versions in zip(keys, pipe.execute(), strict=True):
            if versions:
                found[key[prefix:]] = max(int(v) for v in versions)
        return found

    def events(self, count: int = EVENTS_MAXLEN) -> list[dict[str, Any]]:
        """The stream's events, oldest first."""
        client: Any = self.redis
        entries = client.xrange(self.keys.events, count=count)
        return [json.loads(fields[b"event"]) for _, fields in entries]

    # -- writes -----------------------------------------------------------------------------

    def heartbeat(self, at: str) -> None:
        """Stamp ``heartbeat_at`` when the state exists (never create a partial state)."""
        client: Any = self.redis
        client.eval(_HEARTBEAT, 1, self.keys.state, at)

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
                stale = self.history_keys() if write.replace_all else []
                pipe.multi()
                if write.replace_all:
                    pipe.delete(keys.current, keys.state, *stale)
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
        if write.deletes:
            pipe.hdel(keys.current, *write.deletes)
        for agent_id, records in write.history.items():
            if records:
                pipe.hset(keys.history(agent_id),
                          mapping={str(s.version): text(s) for s in records})
        for agent_id, upto in write.trim.items():
            if upto > 0:
                pipe.hdel(keys.history(agent_id), str(upto))
        pipe.hset(keys.state, mapping=write.state)
        for event in write.events:
            message = event.to_json()
            pipe.xadd(keys.events, {"event": message}, maxlen=EVENTS_MAXLEN, approximate=True)
            pipe.publish(keys.changes, message)


_HEARTBEAT = """
if redis.call('HEXISTS', KEYS[1], 'seen') == 1 then
  redis.call('HSET', KEYS[1], 'heartbeat_at', ARGV[1])
end
return 0
"""
