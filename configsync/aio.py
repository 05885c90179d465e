"""AsyncClient: the Client's behaviour for asyncio runtimes (redis.asyncio, one background task).

::

    async with AsyncClient(redis="redis://127.0.0.1:6379/0", cache_path="configs.json") as c:
        snap = c.get("support")                          # in memory, no await
        pinned = await c.get_version("support", snap.version)

Callbacks may be plain functions or coroutine functions; they run in a task of their own.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Callable, Collection, Mapping
from types import TracebackType
from typing import Any

import redis
import redis.asyncio as aioredis

from .backoff import Backoff
from .client import (
    _STARTED,
    FULL_READ_TRIES,
    MISSING,
    REFUSED_WAIT,
    SUBSCRIBE_REPLY_WAIT,
    ClientCore,
    _now,
    consistent,
    full_read_pipeline,
    is_wrong_type,
    parse_event,
    refused,
    text,
    wrong_type,
)
from .errors import CorruptDataError
from .holdings import Snapshot
from .logs import client_logger as logger
from .logs import kv
from .redis_url import from_url

__all__ = ["AsyncClient"]



class AsyncClient(ClientCore[aioredis.Redis]):
    """An asyncio client (see :class:`configsync.Client` for the behaviour). Callbacks run in
    order in a task of their own on the client's event loop (coroutine functions are
    awaited there), so a slow one never stalls the task that follows Redis."""

    def _connect(self, url: str, socket_timeout: float) -> aioredis.Redis:
        client: aioredis.Redis = from_url(aioredis.Redis, url, "redis",
                                          socket_timeout=socket_timeout,
                                          socket_connect_timeout=socket_timeout, holds=1)
        return client

    def _init_runtime(self) -> None:
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._callback_task: asyncio.Task[None] | None = None
        self._calls: asyncio.Queue[tuple[Callable[..., Any], tuple[Any, ...], str] | None] \
            = asyncio.Queue()
        self._resync = False

    async def __aenter__(self) -> AsyncClient:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> AsyncClient:
        """Load every current config in one round trip (or serve the cache file when Redis is
        down), then follow changes in a background task. A start that raises (or is
        cancelled) stops everything it started first: tasks, and the connections it owns;
        the client is then stopped."""
        self.check_open()
        self.check_forked()
        if self.started:
            return self
        try:
            self.started = True
            self.pid = os.getpid()
            _STARTED.add(self)
            self._callback_task = asyncio.create_task(self._run_callbacks(),
                                                      name="configsync-callbacks")
            self.replay_pending()
            try:
                state_read = await self._check()
                self.set_connected()
                self.fresh(state_read)
            except (redis.RedisError, OSError, CorruptDataError) as exc:
                self.set_disconnected(exc)
            self._task = asyncio.create_task(self._run(), name="configsync-client")
        except BaseException:  # (`async with` never calls __aexit__ then): stop it all
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop following; a stopped client cannot be started again. Cancelling the task
        that awaits this still cancels it (the client's own tasks are cancelled too)."""
        if self.closed:
            return
        self.check_process()
        self.closed = True
        _STARTED.discard(self)
        if self.forked_error is not None:
            return  # the tasks, the loop and the sockets are the parent's: leave them alone
        self._stopping.set()
        try:
            await _finish(self._task, 10)
            if self.dirty_since is not None:
                await asyncio.to_thread(self.save_cache)
            self._calls.put_nowait(None)
            if asyncio.current_task() is not self._callback_task:  # (a callback may stop it)
                await _finish(self._callback_task, 5)
            try:
                if self.reporting:
                    await self._redis.delete(self.keys.client(self.instance_id))
            except (redis.RedisError, OSError):
                pass
        finally:
            for task in (self._task, self._callback_task):
                if task is not None and not task.done() and task is not asyncio.current_task():
                    task.cancel()
            if self._owns_redis:
                await self._redis.aclose()

    def get(self, agent_id: str, version: int | None = None, default: Any = MISSING) -> Any:
        """The agent's current snapshot (or a held ``version``), from memory; no await.
        ``default``, when given, is returned for an unknown or deleted agent. Use
        :meth:`get_version` for a version that may have to be fetched."""
        if self.closed:
            self.check_open()
        if self.forked_error is not None:  # (set by the at-fork hook; status() checks the pid)
            self.check_forked()
        if version is None:
            return self.current(agent_id, default)
        held = self.holdings.pinned(agent_id, version)
        if held is None:
            raise KeyError(f"version {version} of {agent_id!r} is not held yet; "
                           f"`await client.get_version({agent_id!r}, {version})` fetches it")
        return held

    async def get_version(self, agent_id: str, version: int) -> Snapshot:
        """That exact version: held, or fetched once from the history hash and then kept.
        Raises :class:`~configsync.VersionNotFoundError` when it is not kept, and
        :class:`~configsync.errors.CorruptDataError` when the entry, or the history key, is
        not what configsync writes."""
        self.check_open()
        self.check_forked()
        held = self.holdings.pinned(agent_id, version)
        if held is not None:
            return held
        key = self.keys.history(agent_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(key, str(version))
            pipe.hkeys(key)
            try:
                reply = await pipe.execute()
            except redis.ResponseError as exc:
                if not is_wrong_type(exc):
                    raise
                raise wrong_type(key, await self._redis.type(key)) from None
        return self.take_version(agent_id, version, *reply)

    async def wait_for_change(self, agent_id: str, unlike: Collection[str], *,
                              timeout: float) -> bool:
        """Wait until ``agent_id``'s current checksum is none of ``unlike`` (an agent not held,
        or deleted, has none), at most ``timeout`` seconds: True when it is, False at the
        timeout. For long polls (``configsync sync --listen``'s read API): the change is seen
        through :meth:`on_change`, registered before the first look, so none is missed."""
        self.check_open()
        self.check_forked()
        changed = asyncio.Event()
        remove = self.on_change(lambda _agent, _snap: changed.set(), agent_id=agent_id,
                                replay=False)

        def differs() -> bool:
            held = self.holdings.current.get(agent_id)
            return held is None or held.checksum not in unlike

        try:
            async with asyncio.timeout(timeout):
                while not differs():
                    await changed.wait()
                    changed.clear()
        except TimeoutError:
            return differs()
        finally:
            remove()
        return True

    # -- fork ------------------------------------------------------------------------------

    def _restart_after_fork(self, parent: int) -> None:
        """An event loop, its tasks and its connections do not survive ``fork()``: refuse,
        loudly (an error log line now; ``status()`` stale and disconnected, saying why;
        reads raise :class:`ClientForkedError`)."""
        self.forked_error = (
            f"this AsyncClient was started in process {parent} and this process ({self.pid}) "
            "is a fork of it: an event loop does not survive fork(), so it would never see a "
            "change again; create and start an AsyncClient in this process (after the fork: "
            "a gunicorn/uvicorn worker's startup, not the module a --preload master imports)")
        self.connection_error = self.forked_error
        logger.error(kv("forked", namespace=self.namespace, parent=parent, pid=self.pid,
                        error=self.forked_error))

    # -- the background task ---------------------------------------------------------------

    async def _check(self) -> bool:
        """See :meth:`configsync.Client._check` (a key of the wrong type too)."""
        try:
            return await self._read()
        except redis.ResponseError as exc:
            if not is_wrong_type(exc):
                raise
            for key in (self.keys.state, self.keys.current):
                kind = await self._redis.type(key)
                if text(kind) not in ("hash", "none"):
                    raise wrong_type(key, kind) from None
            raise

    async def _read(self) -> bool:
        if self.last_sync_at is not None:  # the first read takes both in one round trip
            client: Any = self._redis
            raw: Mapping[bytes, bytes] = await client.hgetall(self.keys.state)
            known = self.after_state(self.state_texts(raw))
            if known == "verify":
                agents = sorted(self.holdings.unconfirmed)
                known = self.after_verify(agents, await client.hmget(self.keys.current, agents))
            if known is not None:
                return bool(known)
        for _ in range(FULL_READ_TRIES):
            async with self._redis.pipeline(transaction=False) as pipe:
                full_read_pipeline(pipe, self.keys)
                reply = await pipe.execute()
            if consistent(reply):
                break
        return self.after_full_read(reply)

    def _queue_call(self, callback: Callable[..., Any], args: tuple[Any, ...],
                    agent: str) -> None:
        self._calls.put_nowait((callback, args, agent))

    async def _run_callbacks(self) -> None:
        while (item := await self._calls.get()) is not None:
            callback, args, agent = item
            try:
                result = callback(*args)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:  # raised by the callback, not sent to this task:
                task = asyncio.current_task()  # it must not end the callbacks that follow
                if task is not None and task.cancelling():
                    raise  # the client itself is being stopped
                logger.exception(kv("callback_failed", agent=agent))
            except Exception:  # (Ctrl-C and SystemExit on the event loop's thread are real)
                logger.exception(kv("callback_failed", agent=agent))

    async def _run(self) -> None:
        backoff = Backoff(0.2, 30.0)
        while not self._stopping.is_set():
            try:
                await self._follow()
                backoff.reset()
            except (redis.RedisError, OSError, CorruptDataError) as exc:
                self.set_disconnected(exc)
                await self._sleep(max(backoff.next(), REFUSED_WAIT if refused(exc) else 0))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.client_error(exc)
                await self._sleep(backoff.next())

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _follow(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.keys.changes)
            # its reply (or a NOPERM) before "connected": a refusal is never a reconnect
            try:
                await pubsub.get_message(timeout=SUBSCRIBE_REPLY_WAIT)
            except redis.ResponseError as exc:
                if refused(exc):  # still read what Redis holds: stale, re-read at each retry
                    await self._check()
                raise
            if pubsub.connection is not None:
                pubsub.connection.register_connect_callback(self._on_pubsub_connect)
            state_read = await self._check()
            self._resync = False
            self.set_connected()
            self.fresh(state_read)
            loop = asyncio.get_running_loop()
            next_check = self.next_check(time.monotonic())
            next_report = loop.time()
            while not self._stopping.is_set():
                wait = 0.25 if self.dirty_since is None else 0.02
                message = await pubsub.get_message(timeout=wait)
                if message is not None and message.get("type") == "message":
                    self.last_event_at = _now()
                    await self._on_event(parse_event(message["data"], self.holdings))
                now = loop.time()
                if self._resync or time.monotonic() >= next_check:
                    self._resync = False
                    self.fresh(await self._check())
                    next_check = self.next_check(time.monotonic())
                if self.save_due(message is None, time.monotonic()):
                    await asyncio.to_thread(self.save_cache)
                if self.reporting and now >= next_report:
                    next_report = now + self.report_interval
                    try:
                        await self._redis.set(self.keys.client(self.instance_id),
                                              self.report(), ex=self.report_ttl)
                    except redis.ResponseError as exc:  # NOPERM: a read-only user
                        self.report_failed(exc)
        finally:
            # untyped in older redis-py (as low as pyproject allows), typed in newer ones
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    def _on_pubsub_connect(self, connection: Any) -> None:
        self._resync = True

    async def _on_event(self, event: dict[str, Any] | None) -> None:
        plan = self.plan(event)
        if plan.action == "check":
            self.fresh(await self._check())
        elif plan.action == "fetch" and event is not None:
            values = await self._redis.hmget(self.keys.current, plan.agents) \
                if plan.agents else []
            changes = self.holdings.apply_event(event, dict(zip(plan.agents, values,
                                                                strict=True)))
            if changes is None:
                self.fresh(await self._check())
            else:
                self.last_error = None  # an applied commit clears the last rejection
                self._deliver(changes)
                if self.holdings.take_recheck():
                    self._resync = True


async def _finish(task: asyncio.Task[None] | None, timeout: float) -> None:
    """Wait for ``task`` to end (cancel it after ``timeout``), without catching the caller's
    own cancellation: ``asyncio.wait`` never raises what the task raised."""
    if task is None or task.done():
        return
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=1)
