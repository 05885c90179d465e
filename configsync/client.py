"""The agent-side client: in-memory reads, hot reload, version pinning, last known good.

::

    from configsync import Client

    with Client(redis="redis://127.0.0.1:6379/0", namespace="default",
                cache_path="/var/cache/myagent/configs.json") as client:
        snap = client.get("support")          # a dictionary read: never waits on the network
        client.on_change(lambda agent_id, snap: print(agent_id, snap and snap.version))
        pinned = client.get("support", version=snap.version)   # a conversation keeps its version

A background thread subscribes to the namespace's change channel. Each commit is one event
listing the agents it changed; the thread reads those in one ``HMGET``. A gap in the
revisions (a lost pub/sub message), a reconnect, and every ``check_interval`` seconds re-read
``state`` (and ``current`` when it says something was missed), so no change is lost. The
cache file is written atomically once per burst of commits; callbacks run in order on their
own thread (``configsync-callbacks``), so a slow one delays only the callbacks after it. The
instance reports itself under ``configsync:{ns}:client:<id>`` when it may write there.
With Redis down it serves what it holds (or the cache file) and reconnects with capped
backoff (DESIGN.md invariants 6 and 7). ``status().daemon_alive`` says when the daemon's
heartbeat went silent (invariant "A silent daemon is said"); a process forked after
:meth:`Client.start` follows again in the child ("A fork never leaves a client silently
stale").
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, TypeVar

import redis

from . import heartbeat
from .backoff import Backoff
from .errors import CorruptDataError, UsageError
from .escape import quoted
from .holdings import (
    Change,
    ClientClosedError,
    Holdings,
    Plan,
    Snapshot,
    UnknownAgentError,
    VersionNotFoundError,
    typed,
)
from .logs import client_logger as logger
from .logs import kv, one_line
from .messages import error_summary
from .model import AgentConfig, namespace_problem
from .redis_url import from_url
from .redis_values import last_error
from .redis_values import parse_event as parse_event_json
from .snapshot import Record
from .store import Keys

__all__ = ["Client", "ClientForkedError", "ClientStatus"]


Callback = Callable[[str, Snapshot | None], Any]
RejectCallback = Callable[[str, str], Any]
R = TypeVar("R")
SAVE_DELAY = 1.0
"""Seconds a burst of changes may go unsaved at most: the cache file is written when the
channel goes quiet, or after this long, whichever comes first."""
MISSING: Any = object()
LOGGED_CHANGES = 20
"""More changes than this at once are logged as one line (counts), not one line each."""


class ClientForkedError(ClientClosedError):
    """A client used in a process forked from the one that started it, where it cannot
    follow: an :class:`~configsync.AsyncClient` (an event loop, its tasks and its connections
    do not survive ``fork()``), or a :class:`Client` forked by a ``fork()`` that ran no Python
    at-fork hook. Create and start the client in the child (a ``cache_path`` gives it the
    configs at once)."""


PERMISSION_HINT = ("the Redis user lacks a permission this client needs: it reads the "
                   "namespace's keys and SUBSCRIBEs to {channel} (README's ACL lines: "
                   "+subscribe and the channel)")
REFUSED_WAIT = 5.0
SUBSCRIBE_REPLY_WAIT = 5.0
"""Seconds the follower waits for SUBSCRIBE's reply (a refusal shows there) before it goes on."""
"""Seconds at least between tries after Redis refused a command (ACL): not a network blip."""


def refused(exc: BaseException) -> bool:
    """Whether Redis refused a command for the user's permissions (``NOPERM``), as opposed to
    a connection that failed."""
    return isinstance(exc, redis.exceptions.NoPermissionError) or (
        isinstance(exc, redis.ResponseError) and "no permissions" in str(exc))


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
    last_error: dict[str, Any] | None  # the daemon's last rejected commit (state.last_error)
    connection_error: str | None  # why Redis could not be read, while it cannot
    model_errors: dict[str, str]  # agent id -> why model= refused its config (the held one serves)
    state_age: float | None = None
    """Seconds since this client last read a (non-empty) ``state`` from Redis: at least every
    ``check_interval`` while connected, so an age well beyond it means the configs held may
    be old. None before the first read."""
    heartbeat_at: str | None = None
    """The daemon's last ``state.heartbeat_at``, as this client last read it."""
    heartbeat_age: float | None = None
    """Seconds since that heartbeat (the daemon's clock against this one's), growing between
    reads; None before the first read."""
    daemon_alive: bool | None = None
    """False when the heartbeat is older than :func:`configsync.heartbeat.silence_limit`
    (``3 × state.heartbeat_every + 10`` s: 40 s with the daemon's default interval): no
    daemon is writing the namespace, so the configs held may be behind git (issue 17 item
    12). None while it cannot tell: nothing read yet, disconnected, or stopped; and for a
    namespace ``configsync dev`` writes (no daemon beats there)."""

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def __getitem__(self, name: str) -> Any:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)


class ClientCore(Generic[R]):
    """Everything Client and AsyncClient share that does no I/O, the constructor included
    (``R`` is the redis-py client class: sync or asyncio).

    ``model`` types every config (a subclass of AgentConfig, the class the repository's
    ``schema:`` names); without it configs are AgentConfig, extra fields kept as they came.
    The state's ``schema`` is only compared with it: Redis never decides what code an agent
    process imports."""

    def __init__(self, *, redis: str | R, namespace: str = "default",
                 cache_path: str | os.PathLike[str] | None = None, check_interval: float = 30.0,
                 report_interval: float = 10.0, instance_id: str | None = None,
                 on_disconnect: Callable[[BaseException], Any] | None = None,
                 on_reconnect: Callable[[], Any] | None = None,
                 socket_timeout: float = 5.0,
                 model: type[AgentConfig] | None = None) -> None:
        problem = namespace_problem(namespace)
        if problem is not None:  # what the daemon would refuse to write, said at once
            raise UsageError(f"namespace={one_line(repr(namespace[:120]))} {problem}")
        self._owns_redis = isinstance(redis, str)
        self._url = redis if isinstance(redis, str) else None  # (a child connects anew)
        self._socket_timeout = socket_timeout
        self.pid = os.getpid()  # the process this client follows Redis in (see after_fork)
        self.forked_from: int | None = None
        self.forked_error: str | None = None  # set in a fork this client cannot follow in
        self._redis: R = self._connect(redis, socket_timeout) if isinstance(redis, str) \
            else redis
        self.keys = Keys(namespace)
        self.namespace = namespace
        self.cache_path = cache_path
        self.check_interval = check_interval
        self.report_interval = report_interval
        self._given_id = instance_id
        self.instance_id = instance_id or _instance_id()
        self.disconnect_hooks: list[Callable[[BaseException], Any]] = \
            [] if on_disconnect is None else [on_disconnect]
        self.reconnect_hooks: list[Callable[[], Any]] = \
            [] if on_reconnect is None else [on_reconnect]
        self.told_down = False  # on_disconnect was called, on_reconnect not yet since
        self.holdings = Holdings(namespace, model)
        self.callbacks: list[tuple[str | None, Callback]] = []
        self.replayed: dict[int, dict[str, Snapshot]] = {}  # id(entry) -> what on_change replayed
        self.pending_replay: list[tuple[str | None, Callback]] = []  # registered before start
        self.reject_callbacks: list[RejectCallback] = []
        self.callbacks_lock = threading.RLock()
        self.connected = False
        self.ever_connected = False
        self.stale_since: str | None = _now()
        self.last_event_at: str | None = None
        self.last_sync_at: str | None = None
        self.last_error: dict[str, Any] | None = None
        self.state_read_at: float | None = None  # time.monotonic() of the last state read
        self.heartbeat_at: str | None = None  # the state's heartbeat_at, when last read
        self.heartbeat_read: tuple[float, float] | None = None  # (its age then, monotonic)
        self.silence_limit = heartbeat.DEFAULT_EVERY  # (set from each state read)
        self.judged = True  # False for a namespace no daemon beats for (configsync dev)
        self.connection_error: str | None = None
        self.rejected_commit: str | None = None  # the last rejection callbacks were told of
        self.dirty_since: float | None = None  # changes the cache file does not have yet
        self.reporting = True
        self.said_empty = False
        self.last_client_error = ""  # (client_error: a repeat is one line)
        self.started = False
        self.closed = False
        if cache_path is not None:
            self.holdings.load(cache_path)
        self._init_runtime()

    def _connect(self, url: str, socket_timeout: float) -> R:
        raise NotImplementedError

    def _init_runtime(self) -> None:
        """The subclass's own background machinery (thread or task)."""

    # -- fork ---------------------------------------------------------------------------------

    def check_process(self, *, hooked: bool = False) -> None:
        """Take a ``fork()`` into account when this process is not the one that started the
        client: the at-fork hook does it at once (``hooked``); this pid check (``status()``,
        ``stop()`` and reads that go to Redis) is for forks that run no Python hook."""
        if self.started and not self.closed and self.pid != os.getpid():
            with _fork_lock:
                if self.pid != os.getpid():
                    self.after_fork(hooked=hooked)

    def check_forked(self) -> None:
        """Raise :class:`ClientForkedError` in a process forked from the one that started
        this client when the client cannot follow there (DESIGN.md invariant "A fork never
        leaves a client silently stale")."""
        self.check_process()
        if self.forked_error is not None:
            raise ClientForkedError(self.forked_error)

    def after_fork(self, *, hooked: bool = True) -> None:
        """In a process forked from the one that started this client (gunicorn ``--preload``,
        uWSGI, Celery prefork, ``multiprocessing``): the parent's threads or tasks do not run
        here and its sockets are the parent's, so the configs held would never change again.
        Keep them (last known good), count as disconnected and stale until this process has
        read Redis itself, take an instance id of its own, and let the subclass follow again
        (:class:`Client`) or refuse (:class:`~configsync.AsyncClient`)."""
        parent, self.pid = self.pid, os.getpid()
        self.forked_from = parent
        self.callbacks_lock = threading.RLock()  # (a parent's thread may have held them)
        self.holdings.lock = threading.RLock()
        self.instance_id = _instance_id() if self._given_id is None \
            else f"{self._given_id}-{self.pid}"
        self.connected = self.ever_connected = False
        if self.stale_since is None:
            self.stale_since = _now()
        self.connection_error = f"forked from process {parent}: not read from Redis in " \
                                "this process yet"
        if hooked:
            self._restart_after_fork(parent)
            return
        # A fork that ran no at-fork hook (a C library's own fork(); os.fork, multiprocessing,
        # gunicorn and uWSGI all run them) left the interpreter as the forking thread saw it:
        # starting a thread there can hang for good. Refuse, loudly, and start nothing.
        self.forked_error = (
            f"this client was started in process {parent} and this process ({self.pid}) was "
            "forked from it by a fork() that ran no Python at-fork hook, so it cannot follow "
            "here (the configs held stay readable); create and start a client in this process")
        self.connection_error = self.forked_error
        logger.error(kv("forked", namespace=self.namespace, parent=parent, pid=self.pid,
                        error=self.forked_error))

    def _restart_after_fork(self, parent: int) -> None:
        raise NotImplementedError

    # -- reading ------------------------------------------------------------------------------

    def check_open(self) -> None:
        if self.closed:
            raise ClientClosedError(
                "this configsync client was stopped; create a new one instead of reusing it")

    def current(self, agent_id: str, default: Any) -> Any:
        """The current snapshot, or ``default`` (when given) for an unknown or deleted
        agent."""
        if default is MISSING:
            return self.holdings.get(agent_id)
        try:
            return self.holdings.get(agent_id)
        except UnknownAgentError:
            return default

    @property
    def stale(self) -> bool:
        """True until a non-empty state has been read from Redis, and while disconnected."""
        return self.stale_since is not None

    def on_change(self, callback: Callback, agent_id: str | None = None, *,
                  replay: bool = True) -> Callable[[], None]:
        """Call ``callback(agent_id, snapshot)`` once per new version (``None`` on delete);
        for one agent, or all. Callbacks run in order on the client's callback thread (the
        event loop, for AsyncClient), never on the thread that follows Redis, so a slow one
        delays only the callbacks after it. Returns a function that removes it.

        Registered on a started client (``with Client(...) as client: client.on_change(cb)``),
        the callback first hears of every agent the client holds now, once each (in agent id
        order, the current snapshot), then of each change; registered before :meth:`start`,
        of the agents the cache file gave, then of what the first read brings (issue 17).
        ``replay=False``: only what changes after it is registered."""
        entry = (agent_id, callback)
        with self.callbacks_lock:
            remove = self._register(self.callbacks, entry)
            if replay and self.started and not self.closed:
                self._replay(entry)
            elif replay and not self.started:
                self.pending_replay.append(entry)

        def remove_replayed() -> None:
            remove()
            with self.callbacks_lock:
                self.replayed.pop(id(entry), None)

        return remove_replayed

    def _replay(self, entry: tuple[str | None, Callback]) -> None:
        """Queue the agents held now for a callback (under ``callbacks_lock``), noting them
        so that a change that raced in is not told twice (:meth:`due_callbacks`)."""
        agent_id, callback = entry
        held = self.holdings.current  # (replaced whole, never changed in place)
        told = self.replayed[id(entry)] = {
            a: held[a] for a in sorted(held) if agent_id in (None, a)}
        for agent, snapshot in told.items():
            self._queue_call(callback, (agent, snapshot), agent)

    def replay_pending(self) -> None:
        """At start, before the first read: callbacks registered before :meth:`start` hear
        of the agents the cache file gave (the first read then tells what changed since), so
        they hear what one registered after start hears."""
        with self.callbacks_lock:
            for entry in self.pending_replay:
                if entry in self.callbacks:
                    self._replay(entry)
            self.pending_replay.clear()

    def on_disconnect(self, callback: Callable[[BaseException], Any]) -> Callable[[], None]:
        """Call ``callback(exc)`` when Redis cannot be read: when a connection that worked
        fails, and at a start that finds Redis unreachable (the client then serves its cache
        file, or nothing). Once per outage; runs like :meth:`on_change` callbacks. Same as the
        ``on_disconnect=`` argument. Returns a function that removes it."""
        return self._register(self.disconnect_hooks, callback)

    def on_reconnect(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call ``callback()`` when Redis is read again after :meth:`on_disconnect`'s
        callbacks were called: after an outage, and at the first successful connection after
        a start that found Redis unreachable. Same as the ``on_reconnect=`` argument.
        Returns a function that removes it."""
        return self._register(self.reconnect_hooks, callback)

    def on_reject(self, callback: RejectCallback) -> Callable[[], None]:
        """Call ``callback(commit, error)`` when the daemon rejects a commit (``error`` is the
        one-line summary, ``file:line:col: message``); the last good configs keep serving.
        Runs like :meth:`on_change` callbacks. Returns a function that removes it."""
        return self._register(self.reject_callbacks, callback)

    def _register(self, registry: list[Any], entry: Any) -> Callable[[], None]:
        with self.callbacks_lock:  # (an RLock: on_change holds it already)
            registry.append(entry)

        def remove() -> None:
            with self.callbacks_lock:
                if entry in registry:
                    registry.remove(entry)

        return remove

    def status(self) -> ClientStatus:
        self.check_process()
        summary = self.holdings.summary()
        return ClientStatus(self.instance_id, self.connected, self.stale, self.stale_since,
                            self.last_event_at, self.last_sync_at, summary["epoch"],
                            summary["revision"], summary["commit"], summary["versions"],
                            self.last_error, self.connection_error, summary["model_errors"],
                            self.state_age, self.heartbeat_at, self.heartbeat_age,
                            self.daemon_alive)

    @property
    def state_age(self) -> float | None:
        """Seconds since the last read of a non-empty ``state`` (None before any)."""
        read_at = self.state_read_at
        return None if read_at is None else max(0.0, time.monotonic() - read_at)

    @property
    def heartbeat_age(self) -> float | None:
        """Seconds since the daemon's last heartbeat, as last read (None before any)."""
        if self.heartbeat_read is None:
            return None
        age, read_at = self.heartbeat_read
        return round(age + time.monotonic() - read_at, 3)

    @property
    def daemon_alive(self) -> bool | None:
        """The heartbeat verdict (see :class:`ClientStatus`); None when it cannot tell."""
        if not self.connected or self.closed or not self.judged:
            return None
        return heartbeat.alive(self.heartbeat_age, self.silence_limit)

    def note_heartbeat(self, state: Mapping[str, str]) -> None:
        """After reading a non-empty state: its heartbeat and how long it may go silent."""
        self.heartbeat_at = state.get("heartbeat_at") or None
        self.silence_limit = heartbeat.silence_limit(state)
        self.judged = heartbeat.beats(state)
        age = heartbeat.age(self.heartbeat_at, datetime.now(UTC))
        self.heartbeat_read = None if age is None else (max(0.0, age), time.monotonic())

    def next_check(self, now: float) -> float:
        """When (``time.monotonic()``) to re-read the state: after ``check_interval``, or
        sooner, when the heartbeat held would pass the silence limit before that (so that
        ``daemon_alive`` turns False on a fresh read, not on an old one)."""
        due = now + self.check_interval
        if self.heartbeat_read is not None and self.judged:
            age, read_at = self.heartbeat_read
            crossing = read_at + self.silence_limit - age + 0.05
            if now < crossing < due:
                return crossing
        return due

    # -- applying -----------------------------------------------------------------------------

    def take_version(self, agent_id: str, version: int, raw: Any, kept: Any) -> Snapshot:
        """The reply to ``HGET history version`` + ``HKEYS history``, as a kept Snapshot.
        Raises VersionNotFoundError when it is not kept, :class:`CorruptDataError` when the
        entry is not that version's snapshot (not JSON, the wrong shape, agent or version,
        a checksum that is not its config's), pydantic's ValidationError when the model
        refuses it."""
        if raw is None:
            raise VersionNotFoundError(agent_id, version, sorted(
                int(v) for v in map(text, kept) if v.isascii() and v.isdigit()))
        try:
            record = Record.from_json(raw).verify()
            if (record.agent_id, record.version) != (agent_id, version):
                raise CorruptDataError(f"the snapshot is agent {record.agent_id[:60]!r} "
                                       f"version {record.version}")
        except CorruptDataError as exc:
            raise CorruptDataError(f"{self.keys.history(agent_id)} field {version}: "
                                   f"{exc}") from None
        snapshot = typed(record, self.holdings.model, text(raw))
        self.holdings.remember(snapshot, from_history=True)
        return snapshot

    def due_callbacks(self, changes: list[Change]) -> list[tuple[Callback, Change]]:
        """Who hears of what; a change a callback was already told of when it was registered
        (:meth:`on_change`'s replay raced the change in) is not told twice."""
        due = []
        with self.callbacks_lock:
            for change in changes:
                for entry in self.callbacks:
                    agent_id, callback = entry
                    if agent_id is not None and agent_id != change.agent_id:
                        continue
                    told = self.replayed.get(id(entry))
                    replayed = told.pop(change.agent_id, None) if told else None
                    if replayed is not None and replayed is change.snapshot:
                        continue  # (popped either way: no old version is kept alive here)
                    due.append((callback, change))
        return due

    def after_changes(self, changes: list[Change]) -> None:
        """Log the changes and mark the cache file behind (it is written per burst)."""
        if changes and self.cache_path is not None and self.dirty_since is None:
            self.dirty_since = time.monotonic()
        if not changes or not logger.isEnabledFor(logging.INFO):
            return
        if len(changes) > LOGGED_CHANGES:  # one line for a big commit, not thousands
            deleted = sum(change.snapshot is None for change in changes)
            logger.info(kv("updated", agents=len(changes) - deleted, deleted=deleted,
                           revision=self.holdings.revision))
            return
        for change in changes:
            snap = change.snapshot
            logger.info(kv("updated" if snap else "deleted", agent=change.agent_id,
                           version=snap.version if snap else None))

    def save_due(self, quiet: bool, now: float) -> bool:
        """Whether to write the cache file now: changes are waiting and the channel went quiet
        (or they have waited SAVE_DELAY)."""
        return self.dirty_since is not None and (quiet or now - self.dirty_since >= SAVE_DELAY)

    def save_cache(self) -> None:
        """Write the cache file (atomic, fsynced); a failure is a warning, retried with the
        next change."""
        self.dirty_since = None
        if self.cache_path is None:
            return
        try:
            self.holdings.save(self.cache_path)
        except OSError as exc:
            logger.warning(kv("cache_write_failed", path=self.cache_path, error=str(exc)))

    def take_full(self, state: Mapping[str, str], raw: Mapping[Any, Any]) -> list[Change]:
        """A full read of ``state`` and then ``current``; a missing state keeps what is
        held."""
        if "seen" not in state:
            return []
        jsons = {text(k): text(v) for k, v in raw.items()}  # (str: json.loads skips sniffing)
        changes = self.holdings.replace_all(state, jsons)
        self.last_sync_at = _now()
        return changes or []

    def take_state(self, state: Mapping[str, str]) -> list[tuple[str, str]]:
        """Note the state's ``last_error``; the rejection it names, if callbacks were not told
        of it yet (none at the first read: that one is history)."""
        try:
            self.last_error = last_error(state)
        except CorruptDataError as exc:  # (issue 17.2): logged once, read as none
            self.holdings.event_refused(str(exc), "bad_state", "last_error")
            self.last_error = None
        commit = str(self.last_error.get("commit", "")) if self.last_error else ""
        first, told = self.last_sync_at is None, self.rejected_commit
        if commit:
            self.rejected_commit = commit
        if not commit or first or commit == told:
            return []
        assert self.last_error is not None
        return [(commit, error_summary(self.last_error))]

    def due_rejections(self, rejections: list[tuple[str, str]]
                       ) -> list[tuple[RejectCallback, tuple[str, str]]]:
        with self.callbacks_lock:
            registered = list(self.reject_callbacks)
        return [(callback, rejection) for rejection in rejections for callback in registered]

    def after_state(self, state: Mapping[str, str]) -> bool | str | None:
        """After a check's ``HGETALL state``: False (no data yet: keep the last known good),
        True (nothing this client lacks), None (read ``current`` too), or ``"verify"``:
        ``HMGET`` the agents :attr:`Holdings.unconfirmed` names and pass the reply to
        :meth:`after_verify` (events gave them since the last full read)."""
        if "seen" not in state:
            return False
        self.state_read_at = time.monotonic()
        self.note_heartbeat(state)
        self._reject(self.take_state(state))
        confirmed = self.holdings.confirm(state)
        if confirmed is not False:
            self.last_sync_at = _now()
        return True if confirmed else "verify" if confirmed is None else None

    def after_verify(self, agents: list[str], values: list[Any]) -> bool | None:
        """After ``HMGET current`` of the unconfirmed ``agents``: True when Redis still holds
        what events gave, else None (read ``current`` in full: Redis decides)."""
        return True if self.holdings.verify(dict(zip(agents, values, strict=True))) else None

    def state_texts(self, raw: Mapping[Any, Any]) -> dict[str, str]:
        """The state hash as text; a field that is no UTF-8 (nothing configsync writes) is
        left out, logged once (``event=bad_state``; red team's item 1): a ``seen`` left out
        reads as no state, and what is held keeps serving."""
        state = {}
        for key, value in raw.items():
            try:
                state[text(key)] = text(value)
            except UnicodeDecodeError:
                name = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
                self.holdings.event_refused(f"state field {quoted(name[:60])} is not UTF-8 text",
                                            "bad_state", name[:60])
        return state

    def client_error(self, exc: Exception) -> None:
        """Log an unexpected error of the follow loop: with its traceback the first time,
        as one line while the same error repeats at each retry (red team of issue 17, item 5:
        seven tracebacks in ten seconds said nothing the first did not)."""
        said = f"{type(exc).__name__}: {exc}"[:300]
        if said == self.last_client_error:
            logger.error(kv("client_error", namespace=self.namespace, error=said,
                            repeated=True))
            return
        self.last_client_error = said
        logger.error(kv("client_error", namespace=self.namespace, error=said), exc_info=exc)

    def after_full_read(self, reply: list[Any]) -> bool:
        """After :func:`full_read_pipeline`'s reply: take it; True when there is a state."""
        state = self.state_texts(reply[0])
        if "seen" not in state and not self.said_empty:
            self.said_empty = True  # a namespace the daemon does not write is a typo, often
            logger.warning(kv("no_state", namespace=self.namespace,
                              hint="nothing synced here yet: is the daemon writing another "
                                   "namespace? (its started line says namespace=...)"))
        rejections = self.take_state(state) if "seen" in state else []
        if "seen" in state:
            self.state_read_at = time.monotonic()
            self.note_heartbeat(state)
        self._deliver(self.take_full(state, reply[1]))
        self._reject(rejections)
        return "seen" in state

    def _deliver(self, changes: list[Change]) -> None:
        self.after_changes(changes)
        for callback, change in self.due_callbacks(changes):
            self._queue_call(callback, (change.agent_id, change.snapshot), change.agent_id)

    def _reject(self, rejections: list[tuple[str, str]]) -> None:
        for callback, args in self.due_rejections(rejections):
            self._queue_call(callback, args, "")

    def fresh(self, state_read: bool) -> None:
        """Connected and a non-empty state read: no longer stale."""
        if state_read and self.connected:
            self.stale_since = None

    def plan(self, event: dict[str, Any] | None) -> Plan:
        """What an event asks for (see :meth:`Holdings.plan`); a ``rejected`` one asks for a
        check, which reads the state's ``last_error`` and tells ``on_reject`` callbacks."""
        return self.holdings.plan(event)

    def set_connected(self) -> None:
        """Redis was read: ``on_reconnect`` when ``on_disconnect`` was told of an outage
        (a start that found Redis down too: issue 17, red team finding 3)."""
        self.connection_error = None
        if not self.connected:
            if self.ever_connected or self.told_down:
                logger.warning(kv("reconnected", namespace=self.namespace))
            if self.told_down:
                self.told_down = False
                self._hook(self.reconnect_hooks)
            self.connected = self.ever_connected = True

    def set_disconnected(self, exc: BaseException) -> None:
        """Redis could not be read: ``on_disconnect`` once an outage, the first one at start
        included (an agent serving its cache file from the start needs the alert)."""
        if refused(exc):  # a NOPERM is no network blip: say the cause once, as an error
            if self.connection_error != str(exc):
                logger.error(kv("refused", namespace=self.namespace, error=str(exc),
                                serving="what is held", hint=PERMISSION_HINT.format(
                                    channel=self.keys.changes)))
        elif self.connected or (not self.ever_connected and self.connection_error != str(exc)):
            logger.warning(kv("disconnected", namespace=self.namespace, error=str(exc),
                              serving="what is held"))
        if not self.told_down:
            self.told_down = True
            self._hook(self.disconnect_hooks, exc)
        self.connection_error = str(exc)
        self.connected = False
        if self.stale_since is None:
            self.stale_since = _now()

    def report_failed(self, exc: BaseException) -> None:
        """Redis refused the fleet report (an ACL without write access, say): log it once
        and stop reporting. Reading never depends on it."""
        self.reporting = False
        logger.warning(kv("report_failed", namespace=self.namespace, error=str(exc),
                          reporting="off for this client; reads are unaffected"))

    def _hook(self, hooks: list[Callable[..., Any]], *args: Any) -> None:
        """``on_disconnect``/``on_reconnect``: run like callbacks, never on the thread (or
        task) that follows Redis, so a hook that hangs cannot hold up a config."""
        with self.callbacks_lock:
            registered = list(hooks)
        for hook in registered:
            self._queue_call(hook, args, "")

    def _queue_call(self, callback: Callable[..., Any], args: tuple[Any, ...],
                    agent: str) -> None:
        raise NotImplementedError

    def report(self) -> str:
        """This instance's fleet report (JSON)."""
        summary = self.holdings.summary()
        return json.dumps({"instance_id": self.instance_id, "host": socket.gethostname(),
                           "pid": os.getpid(), "namespace": self.namespace,
                           "epoch": summary["epoch"], "revision": summary["revision"],
                           "commit": summary["commit"], "versions": summary["versions"],
                           "stale": self.stale, "seen_at": _now()}, separators=(",", ":"))

    @property
    def report_ttl(self) -> int:
        return max(1, int(self.report_interval * 3 + 0.999))


def text(value: bytes | str) -> str:
    """A Redis reply as text, whether or not the connection decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def texts(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


def parse_event(data: bytes | str, holdings: Holdings | None = None) -> dict[str, Any] | None:
    """A pub/sub message as an event; None (a check: Redis decides) when it is none, logged
    once through ``holdings`` (:func:`configsync.store.parse_event` says what is wrong)."""
    try:
        return parse_event_json(data)
    except CorruptDataError as exc:
        if holdings is not None:
            holdings.event_refused(f"event on the changes channel: {exc}")
        return None


FULL_READ_TRIES = 5


def is_wrong_type(exc: BaseException) -> bool:
    """Redis refused a command for a key holding another kind of value (``WRONGTYPE``)."""
    return isinstance(exc, redis.ResponseError) and "WRONGTYPE" in str(exc)


def wrong_type(key: str, kind: Any, expected: str = "hash") -> CorruptDataError:
    """A key of the wrong type is corrupt data (issue 17, red team 6): one line naming it."""
    found = text(kind) if kind else "another kind of value"
    return CorruptDataError(f"{key} holds a {found}, not the {expected} configsync writes "
                            "there (Redis: WRONGTYPE): corrupt data")


def full_read_pipeline(pipe: Any, keys: Keys) -> None:
    """Queue a full read: ``state``, then ``current``, then the state's epoch again. No
    MULTI (a reader needs no write or transaction permission): ``current`` read after
    ``state`` is at least as new as its revision, and the second epoch tells whether a
    rebuild came in between (then read again)."""
    pipe.hgetall(keys.state)
    pipe.hgetall(keys.current)
    pipe.hget(keys.state, "epoch")


def consistent(reply: list[Any]) -> bool:
    state_raw, _, epoch = reply
    return text(state_raw.get(b"epoch", state_raw.get("epoch", b""))) == text(epoch or b"")


class _Callbacks:
    """The callback thread: runs queued calls in order, so no callback stalls the client."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], str] | None] \
            = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="configsync-callbacks",
                                       daemon=True)
        self.thread.start()

    def put(self, callback: Callable[..., Any], args: tuple[Any, ...], agent: str) -> None:
        self.queue.put((callback, args, agent))

    def close(self, timeout: float) -> None:
        """Run what is queued, then end; wait ``timeout`` seconds at most (the thread is a
        daemon thread: a callback still running after that is abandoned with it)."""
        self.queue.put(None)
        if timeout > 0:
            self.thread.join(timeout)

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            callback, args, agent = item
            try:
                callback(*args)
            except BaseException:  # SystemExit too: a callback must never end this thread
                logger.exception(kv("callback_failed", agent=agent))


class Client(ClientCore[redis.Redis]):
    """A thread-backed client (see the module docstring). Use as a context manager, or call
    :meth:`start` and :meth:`stop`."""

    def _connect(self, url: str, socket_timeout: float) -> redis.Redis:
        client: redis.Redis = from_url(redis.Redis, url, "redis", socket_timeout=socket_timeout,
                                       socket_connect_timeout=socket_timeout, holds=1)
        return client

    def _init_runtime(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._resync = threading.Event()
        self._callbacks: _Callbacks | None = None

    def __enter__(self) -> Client:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Client:
        """Load every current config in one round trip (or serve the cache file when Redis is
        down), then follow changes in a background thread. A start that raises (a ``model``
        whose validator raises what pydantic does not wrap, say) stops everything it started
        first: threads, and the connections it owns; the client is then stopped."""
        self.check_open()
        if self.started:
            return self
        try:
            self._callbacks = _Callbacks()
            self.started = True  # (after: on_change's replay may queue from now on)
            self.pid = os.getpid()
            _STARTED.add(self)
            self.replay_pending()
            try:
                state_read = self._check()
                self.set_connected()
                self.fresh(state_read)
            except (redis.RedisError, OSError, CorruptDataError) as exc:
                self.set_disconnected(exc)
            self._thread = threading.Thread(target=self._run, name="configsync-client",
                                            daemon=True)
            self._thread.start()
        except BaseException:  # (`with` never calls __exit__ then): stop what was started
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop following (the cache file gets what is held); a stopped client cannot be
        started again."""
        if self.closed:
            return
        self.check_process()
        self.closed = True
        _STARTED.discard(self)
        if self.forked_error is not None:
            return  # the threads and the sockets are the parent's: leave them alone
        self._stopping.set()
        here = threading.current_thread()
        if self._thread is not None and self._thread.is_alive() and self._thread is not here:
            self._thread.join(timeout=10)
        if self.dirty_since is not None:
            self.save_cache()
        if self._callbacks is not None:  # (from a callback itself: it cannot wait for itself)
            self._callbacks.close(timeout=0 if self._callbacks.thread is here else 5)
        try:
            if self.reporting:
                self._redis.delete(self.keys.client(self.instance_id))
        except (redis.RedisError, OSError):
            pass
        if self._owns_redis:
            self._redis.close()

    def get(self, agent_id: str, version: int | None = None, default: Any = MISSING) -> Any:
        """The agent's current snapshot, from memory (no I/O). ``default``, when given, is
        returned for an agent that is unknown or was deleted, instead of raising
        :class:`UnknownAgentError`. With ``version``, that exact version (fetched once from
        the history hash if not held, then kept: versions are immutable; raises
        :class:`VersionNotFoundError` when it was trimmed or never existed,
        :class:`CorruptDataError` when the history entry, or the history key, is not what
        configsync writes)."""
        if self.closed:
            self.check_open()
        if version is None:  # (no pid check here: os.getpid() is a system call, dearer
            return self.current(agent_id, default)  # than this read; the at-fork hook is it)
        held = self.holdings.pinned(agent_id, version)
        if held is not None:
            return held
        self.check_forked()
        key = self.keys.history(agent_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hget(key, str(version))
        pipe.hkeys(key)
        try:
            reply = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            if self.closed:  # stop() closed the connections under this read
                self.check_open()
            if is_wrong_type(exc):
                raise wrong_type(key, self._redis.type(key)) from None
            raise exc
        return self.take_version(agent_id, version, *reply)

    # -- the background thread ---------------------------------------------------------------

    def _check(self) -> bool:
        """Re-read ``state``, and ``current`` when the state shows anything this client does
        not hold (the first read takes both in one round trip); True when Redis has a
        non-empty state. Raises :class:`CorruptDataError` naming ``state`` or ``current``
        when one is not a hash."""
        try:
            return self._read()
        except redis.ResponseError as exc:
            if not is_wrong_type(exc):
                raise
            for key in (self.keys.state, self.keys.current):
                kind = self._redis.type(key)
                if text(kind) not in ("hash", "none"):
                    raise wrong_type(key, kind) from None
            raise

    def _read(self) -> bool:
        if self.last_sync_at is not None:
            known = self.after_state(self.state_texts(self._redis.hgetall(self.keys.state)))
            if known == "verify":
                agents = sorted(self.holdings.unconfirmed)
                known = self.after_verify(agents, self._redis.hmget(self.keys.current, agents))
            if known is not None:
                return bool(known)
        for _ in range(FULL_READ_TRIES):
            pipe = self._redis.pipeline(transaction=False)
            full_read_pipeline(pipe, self.keys)
            reply = pipe.execute()
            if consistent(reply):
                break
        return self.after_full_read(reply)

    def _restart_after_fork(self, parent: int) -> None:
        """Follow again in this process: new connections (never the parent's sockets: a URL
        gives a new connection pool; a redis-py client passed in resets its own pool in a new
        process), a new callback thread and a new following thread (DESIGN.md invariant "A
        fork never leaves a client silently stale")."""
        if self._owns_redis and self._url is not None:
            self._redis = self._connect(self._url, self._socket_timeout)
        self._stopping = threading.Event()
        self._resync = threading.Event()
        self._callbacks = _Callbacks()
        self._thread = threading.Thread(target=self._run, name="configsync-client",
                                        daemon=True)
        self._thread.start()
        logger.warning(kv("forked", namespace=self.namespace, parent=parent, pid=self.pid,
                          following="again in this process"))

    def _queue_call(self, callback: Callable[..., Any], args: tuple[Any, ...],
                    agent: str) -> None:
        assert self._callbacks is not None
        self._callbacks.put(callback, args, agent)

    def _run(self) -> None:
        backoff = Backoff(0.2, 30.0)
        while not self._stopping.is_set():
            try:
                self._follow()
                backoff.reset()
            except (redis.RedisError, OSError, CorruptDataError) as exc:
                self.set_disconnected(exc)
                self._stopping.wait(max(backoff.next(), REFUSED_WAIT if refused(exc) else 0))
            except Exception as exc:  # a bug must not kill the thread that keeps configs fresh
                self.client_error(exc)
                self._stopping.wait(backoff.next())

    def _follow(self) -> None:
        client: Any = self._redis
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.keys.changes)
            # its reply (or a NOPERM) before "connected": a refusal is never a reconnect
            try:
                pubsub.get_message(timeout=SUBSCRIBE_REPLY_WAIT)
            except redis.ResponseError as exc:
                if refused(exc):  # still read what Redis holds: stale, re-read at each retry
                    self._check()
                raise
            # redis-py may reconnect a pub/sub connection by itself: re-read after that too
            pubsub.connection.register_connect_callback(self._on_pubsub_connect)
            state_read = self._check()
            self._resync.clear()
            self.set_connected()
            self.fresh(state_read)
            next_check = self.next_check(time.monotonic())
            next_report = time.monotonic()
            while not self._stopping.is_set():
                wait = 0.25 if self.dirty_since is None else 0.02
                message = pubsub.get_message(timeout=wait)
                if message is not None and message.get("type") == "message":
                    self.last_event_at = _now()
                    self._on_event(parse_event(message["data"], self.holdings))
                now = time.monotonic()
                if self._resync.is_set() or now >= next_check:
                    self._resync.clear()
                    self.fresh(self._check())
                    next_check = self.next_check(now)
                if self.save_due(message is None, now):
                    self.save_cache()
                if self.reporting and now >= next_report:
                    next_report = now + self.report_interval
                    try:
                        self._redis.set(self.keys.client(self.instance_id), self.report(),
                                        ex=self.report_ttl)
                    except redis.ResponseError as exc:  # NOPERM: a read-only user
                        self.report_failed(exc)
        finally:
            pubsub.close()

    def _on_pubsub_connect(self, connection: Any) -> None:
        self._resync.set()

    def _on_event(self, event: dict[str, Any] | None) -> None:
        plan = self.plan(event)
        if plan.action == "check":
            self.fresh(self._check())
        elif plan.action == "fetch" and event is not None:
            fetched = dict(zip(plan.agents, self._redis.hmget(self.keys.current, plan.agents),
                               strict=True)) if plan.agents else {}
            changes = self.holdings.apply_event(event, fetched)
            if changes is None:
                self.fresh(self._check())
            else:
                self.last_error = None  # an applied commit clears the last rejection
                self._deliver(changes)
                if self.holdings.take_recheck():
                    self._resync.set()


def _instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


_STARTED: weakref.WeakSet[ClientCore[Any]] = weakref.WeakSet()
"""The clients started (and not stopped) in this process, for the at-fork hook."""
_fork_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: every started client takes the fork into
    account at once (:meth:`ClientCore.after_fork`). Runs after the threading module's own
    hook, so a new thread may start here (as OpenTelemetry's span processor does)."""
    global _fork_lock
    _fork_lock = threading.Lock()  # (a parent's thread may have held it)
    for client in list(_STARTED):
        try:
            client.check_process(hooked=True)
        except Exception:  # a hook that raises is only printed by Python: log it as ours
            logger.exception(kv("fork_restart_failed", namespace=client.namespace))


if hasattr(os, "register_at_fork"):  # (POSIX; Windows has no fork)
    os.register_at_fork(after_in_child=_after_fork_in_child)
