"""The agent-side client: in-memory reads, hot reload, version pinning, last known good.

::

    from configsync import Client

    with Client(redis="redis://127.0.0.1:6379/0", namespace="default",
                cache_path="/var/cache/myagent/configs.json") as client:
        snap = client.get("support")          # a dictionary read: never waits on the network
        client.on_change(lambda agent_id, snap: print(agent_id, snap and snap.version))
        pinned = client.get("support", version=snap.version)   # a conversation keeps its version

A background thread subscribes to the namespace's change channel, re-reads ``state`` and
``current`` after every (re)connect and every ``check_interval`` seconds (so a lost pub/sub
message never leaves a stale config), writes every change to ``cache_path`` atomically, and
reports the instance under ``configsync:{ns}:client:<id>``. With Redis down it serves what it
holds (or the cache file) and reconnects with capped backoff (DESIGN.md invariants 6 and 7).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, TypeVar

import redis

from .backoff import Backoff
from .holdings import (
    Change,
    ClientClosedError,
    Holdings,
    Snapshot,
    VersionNotFoundError,
    typed,
)
from .logs import client_logger as logger
from .logs import kv
from .redis_url import from_url
from .snapshot import Record
from .store import Keys

__all__ = ["Client", "ClientStatus"]


Callback = Callable[[str, Snapshot | None], Any]
R = TypeVar("R")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """What a client knows about itself, for health checks and dashboards (attributes, or
    ``status["connected"]``, or :meth:`as_dict` for JSON)."""

    instance_id: str
    connected: bool
    stale: bool
    stale_since: str | None
    last_event_at: str | None
    last_sync_at: str | None
    epoch: str | None
    revision: int
    commit: str
    versions: dict[str, int]
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def __getitem__(self, name: str) -> Any:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)


class ClientCore(Generic[R]):
    """Everything Client and AsyncClient share that does no I/O, the constructor included
    (``R`` is the redis-py client class: sync or asyncio)."""

    def __init__(self, *, redis: str | R, namespace: str = "default",
                 cache_path: str | os.PathLike[str] | None = None, check_interval: float = 30.0,
                 report_interval: float = 10.0, instance_id: str | None = None,
                 on_disconnect: Callable[[BaseException], Any] | None = None,
                 on_reconnect: Callable[[], Any] | None = None,
                 socket_timeout: float = 5.0) -> None:
        self._owns_redis = isinstance(redis, str)
        self._redis: R = self._connect(redis, socket_timeout) if isinstance(redis, str) \
            else redis
        self.keys = Keys(namespace)
        self.namespace = namespace
        self.cache_path = cache_path
        self.check_interval = check_interval
        self.report_interval = report_interval
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}-" \
                                          f"{uuid.uuid4().hex[:6]}"
        self.on_disconnect_hook = on_disconnect
        self.on_reconnect_hook = on_reconnect
        self.holdings = Holdings(namespace)
        self.callbacks: list[tuple[str | None, Callback]] = []
        self.callbacks_lock = threading.Lock()
        self.connected = False
        self.ever_connected = False
        self.stale_since: str | None = _now()
        self.last_event_at: str | None = None
        self.last_sync_at: str | None = None
        self.last_error: str | None = None
        self.started = False
        self.closed = False
        if cache_path is not None:
            self.holdings.load(cache_path)
        self._init_runtime()

    def _connect(self, url: str, socket_timeout: float) -> R:
        raise NotImplementedError

    def _init_runtime(self) -> None:
        """The subclass's own background machinery (thread or task)."""

    # -- reading ------------------------------------------------------------------------------

    def check_open(self) -> None:
        if self.closed:
            raise ClientClosedError(
                "this configsync client was stopped; create a new one instead of reusing it")

    @property
    def stale(self) -> bool:
        """True until a non-empty state has been read from Redis, and while disconnected."""
        return self.stale_since is not None

    def on_change(self, callback: Callback, agent_id: str | None = None) -> Callable[[], None]:
        """Call ``callback(agent_id, snapshot)`` once per new version (``None`` on delete),
        after the cache is updated; for one agent, or all. Returns a function that removes it."""
        entry = (agent_id, callback)
        with self.callbacks_lock:
            self.callbacks.append(entry)

        def remove() -> None:
            with self.callbacks_lock:
                if entry in self.callbacks:
                    self.callbacks.remove(entry)

        return remove

    def status(self) -> ClientStatus:
        summary = self.holdings.summary()
        return ClientStatus(self.instance_id, self.connected, self.stale, self.stale_since,
                            self.last_event_at, self.last_sync_at, summary["epoch"],
                            summary["revision"], summary["commit"], summary["versions"],
                            self.last_error)

    # -- applying -----------------------------------------------------------------------------

    def take_version(self, agent_id: str, version: int, raw: Any, kept: Any) -> Snapshot:
        """The reply to ``HGET history version`` + ``HKEYS history``, as a kept Snapshot."""
        if raw is None:
            raise VersionNotFoundError(agent_id, version, sorted(int(v) for v in kept))
        snapshot = typed(Record.from_json(raw), self.holdings.model)
        self.holdings.remember(snapshot)
        return snapshot

    def due_callbacks(self, changes: list[Change]) -> list[tuple[Callback, Change]]:
        with self.callbacks_lock:
            registered = list(self.callbacks)
        return [(callback, change) for change in changes for agent_id, callback in registered
                if agent_id is None or agent_id == change.agent_id]

    def after_changes(self, changes: list[Change]) -> None:
        if changes and self.cache_path is not None:
            try:
                self.holdings.save(self.cache_path)
            except OSError as exc:
                logger.warning(kv("cache_write_failed", path=self.cache_path, error=str(exc)))
        for change in changes:
            snap = change.snapshot
            logger.info(kv("updated" if snap else "deleted", agent=change.agent_id,
                           version=snap.version if snap else None))

    def take_full(self, state: Mapping[str, str], raw: Mapping[Any, Any]) -> list[Change]:
        """A full read of ``state`` and ``current``; a missing state keeps what is held."""
        if "seen" not in state:
            return []
        self.last_error = state.get("last_error") or None
        records = {text(k): Record.from_json(v) for k, v in raw.items()}
        changes = self.holdings.replace_all(state, records)
        self.last_sync_at = _now()
        return changes

    def fresh(self, state_read: bool) -> None:
        """Connected and a non-empty state read: no longer stale."""
        if state_read and self.connected:
            self.stale_since = None

    def unchanged(self, state: Mapping[str, str]) -> bool:
        """Whether ``state`` says nothing was applied since the last full read."""
        held = self.holdings
        if state.get("epoch") != held.epoch or int(state.get("revision") or 0) != held.revision:
            return False
        self.last_error = state.get("last_error") or None
        self.last_sync_at = _now()
        return True

    def plan(self, event: dict[str, Any] | None) -> tuple[str, Any]:
        """What an event asks for: ("full", None) re-read everything, ("fetch", agent id) read
        one record, ("changes", [...]) deliver these, ("none", None) nothing."""
        held = self.holdings
        if event is None or event.get("epoch") != held.epoch or event["type"] == "rebuilt":
            return "full", None
        kind, agent_id, version = event["type"], event.get("agent_id"), event.get("version")
        if kind == "rejected":
            self.last_error = event.get("error")
            return "none", None
        if not isinstance(agent_id, str) or not isinstance(version, int):
            return "none", None
        if kind == "deleted":  # its version is the last one: it deletes that or older
            return "changes", held.apply_delete(agent_id, version, event["epoch"],
                                                int(event.get("revision") or 0))
        current = held.current.get(agent_id)
        if current is not None and current.version >= version:
            return "none", None  # duplicated or late: never move back
        return "fetch", agent_id

    def set_connected(self) -> None:
        if not self.connected:
            if self.ever_connected:
                logger.warning(kv("reconnected", namespace=self.namespace))
                self._hook(self.on_reconnect_hook)
            self.connected = self.ever_connected = True

    def set_disconnected(self, exc: BaseException) -> None:
        if self.connected or (not self.ever_connected and self.last_error != str(exc)):
            logger.warning(kv("disconnected", namespace=self.namespace, error=str(exc),
                              serving="what is held"))
            self.last_error = str(exc)
            if self.connected:
                self._hook(self.on_disconnect_hook, exc)
        self.connected = False
        if self.stale_since is None:
            self.stale_since = _now()

    @staticmethod
    def _hook(hook: Callable[..., Any] | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            logger.exception(kv("hook_failed"))

    def report(self) -> str:
        """This instance's fleet report (JSON)."""
        summary = self.holdings.summary()
        return json.dumps({"instance_id": self.instance_id, "host": socket.gethostname(),
                           "pid": os.getpid(), "namespace": self.namespace,
                           "epoch": summary["epoch"], "revision": summary["revision"],
                           "versions": summary["versions"], "stale": self.stale,
                           "seen_at": _now()}, separators=(",", ":"))

    @property
    def report_ttl(self) -> int:
        return max(1, int(self.report_interval * 3 + 0.999))


def text(value: bytes | str) -> str:
    """A Redis reply as text, whether or not the connection decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def texts(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


def parse_event(data: bytes | str) -> dict[str, Any] | None:
    try:
        event = json.loads(data)
    except (ValueError, TypeError):
        return None
    return event if isinstance(event, dict) and "type" in event else None


class Client(ClientCore[redis.Redis]):
    """A thread-backed client (see the module docstring). Use as a context manager, or call
    :meth:`start` and :meth:`stop`."""

    def _connect(self, url: str, socket_timeout: float) -> redis.Redis:
        client: redis.Redis = from_url(redis.Redis, url, "redis", socket_timeout=socket_timeout,
                                       socket_connect_timeout=socket_timeout)
        return client

    def _init_runtime(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._resync = threading.Event()

    def __enter__(self) -> Client:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Client:
        """Load every current config in one round trip (or serve the cache file when Redis is
        down), then follow changes in a background thread."""
        self.check_open()
        if self.started:
            return self
        self.started = True
        try:
            state_read = self._full_check()
            self.set_connected()
            self.fresh(state_read)
        except (redis.RedisError, OSError) as exc:
            self.set_disconnected(exc)
        self._thread = threading.Thread(target=self._run, name="configsync-client",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following; a stopped client cannot be started again."""
        if self.closed:
            return
        self.closed = True
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self._redis.delete(self.keys.client(self.instance_id))
        except (redis.RedisError, OSError):
            pass
        if self._owns_redis:
            self._redis.close()

    def get(self, agent_id: str, version: int | None = None) -> Snapshot:
        """The agent's current snapshot, from memory. With ``version``, that exact version
        (fetched once from the history hash if not held, then kept: versions are immutable)."""
        if self.closed:
            self.check_open()
        if version is None:
            return self.holdings.get(agent_id)
        held = self.holdings.pinned(agent_id, version)
        if held is not None:
            return held
        key = self.keys.history(agent_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(key, str(version))
        pipe.hkeys(key)
        return self.take_version(agent_id, version, *pipe.execute())

    # -- the background thread ---------------------------------------------------------------

    def _full_check(self) -> bool:
        """Re-read ``state`` (and ``current`` when anything was applied since the last read;
        the first read takes both in one round trip); True when Redis has a non-empty state."""
        if self.last_sync_at is not None:
            state_raw: Mapping[bytes, bytes] = self._redis.hgetall(  # type: ignore[assignment]
                self.keys.state)
            state = texts(state_raw)
            if "seen" not in state:
                return False  # no data yet: keep the last known good
            if self.unchanged(state):
                return True
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(self.keys.state)
        pipe.hgetall(self.keys.current)
        state_raw, current = pipe.execute()
        state = texts(state_raw)
        self._deliver(self.take_full(state, current))
        return "seen" in state

    def _deliver(self, changes: list[Change]) -> None:
        self.after_changes(changes)
        for callback, change in self.due_callbacks(changes):  # no lock is held here
            try:
                callback(change.agent_id, change.snapshot)
            except BaseException:  # SystemExit too: a callback must never end this thread
                logger.exception(kv("callback_failed", agent=change.agent_id))

    def _run(self) -> None:
        backoff = Backoff(0.2, 30.0)
        while not self._stopping.is_set():
            try:
                self._follow()
                backoff.reset()
            except (redis.RedisError, OSError) as exc:
                self.set_disconnected(exc)
                self._stopping.wait(backoff.next())
            except Exception:  # a bug must not kill the thread that keeps configs fresh
                logger.exception(kv("client_error", namespace=self.namespace))
                self._stopping.wait(backoff.next())

    def _follow(self) -> None:
        client: Any = self._redis
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.keys.changes)
            # redis-py may reconnect a pub/sub connection by itself: re-read after that too
            pubsub.connection.register_connect_callback(self._on_pubsub_connect)
            state_read = self._full_check()
            self._resync.clear()
            self.set_connected()
            self.fresh(state_read)
            next_check = time.monotonic() + self.check_interval
            next_report = time.monotonic()
            while not self._stopping.is_set():
                message = pubsub.get_message(timeout=0.25)
                if message is not None and message.get("type") == "message":
                    self.last_event_at = _now()
                    self._on_event(parse_event(message["data"]))
                now = time.monotonic()
                if self._resync.is_set() or now >= next_check:
                    self._resync.clear()
                    self.fresh(self._full_check())
                    next_check = now + self.check_interval
                if now >= next_report:
                    self._redis.set(self.keys.client(self.instance_id), self.report(),
                                    ex=self.report_ttl)
                    next_report = now + self.report_interval
        finally:
            pubsub.close()

    def _on_pubsub_connect(self, connection: Any) -> None:
        self._resync.set()

    def _on_event(self, event: dict[str, Any] | None) -> None:
        action, arg = self.plan(event)
        if action == "changes":
            self._deliver(arg)
        elif action == "full":
            self._full_check()
        elif action == "fetch" and event is not None:
            raw = self._redis.hget(self.keys.current, arg)
            if raw is None:
                self._full_check()
                return
            self._deliver(self.holdings.apply_record(
                Record.from_json(raw), event["epoch"], int(event.get("revision") or 0)))

