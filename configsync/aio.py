"""AsyncClient: the Client's behaviour for asyncio runtimes (redis.asyncio, one background task).

::

    async with AsyncClient(redis="redis://127.0.0.1:6379/0", cache_path="configs.json") as c:
        snap = c.get("support")                          # in memory, no await
        pinned = await c.get_version("support", snap.version)

Callbacks may be plain functions or coroutine functions.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import redis
import redis.asyncio as aioredis

from .backoff import Backoff
from .client import ClientCore, _now, parse_event, texts
from .holdings import Change, Snapshot
from .logs import client_logger as logger
from .logs import kv
from .redis_url import from_url
from .snapshot import Record

__all__ = ["AsyncClient"]



class AsyncClient(ClientCore[aioredis.Redis]):
    """An asyncio client (see :class:`configsync.Client` for the behaviour)."""

    def _connect(self, url: str, socket_timeout: float) -> aioredis.Redis:
        client: aioredis.Redis = from_url(aioredis.Redis, url, "redis",
                                          socket_timeout=socket_timeout,
                                          socket_connect_timeout=socket_timeout)
        return client

    def _init_runtime(self) -> None:
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resync = False

    async def __aenter__(self) -> AsyncClient:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> AsyncClient:
        """Load every current config in one round trip (or serve the cache file when Redis is
        down), then follow changes in a background task."""
        self.check_open()
        if self.started:
            return self
        self.started = True
        try:
            state_read = await self._full_check()
            self.set_connected()
            self.fresh(state_read)
        except (redis.RedisError, OSError) as exc:
            self.set_disconnected(exc)
        self._task = asyncio.create_task(self._run(), name="configsync-client")
        return self

    async def stop(self) -> None:
        """Stop following; a stopped client cannot be started again."""
        if self.closed:
            return
        self.closed = True
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        try:
            await self._redis.delete(self.keys.client(self.instance_id))
        except (redis.RedisError, OSError):
            pass
        if self._owns_redis:
            await self._redis.aclose()

    def get(self, agent_id: str, version: int | None = None) -> Snapshot:
        """The agent's current snapshot (or a held ``version``), from memory; no await. Use
        :meth:`get_version` for a version that may have to be fetched."""
        if self.closed:
            self.check_open()
        if version is None:
            return self.holdings.get(agent_id)
        held = self.holdings.pinned(agent_id, version)
        if held is None:
            raise KeyError(f"version {version} of {agent_id!r} is not held yet; "
                           f"`await client.get_version({agent_id!r}, {version})` fetches it")
        return held

    async def get_version(self, agent_id: str, version: int) -> Snapshot:
        """That exact version: held, or fetched once from the history hash and then kept."""
        self.check_open()
        held = self.holdings.pinned(agent_id, version)
        if held is not None:
            return held
        key = self.keys.history(agent_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(key, str(version))
            pipe.hkeys(key)
            return self.take_version(agent_id, version, *await pipe.execute())

    # -- the background task ---------------------------------------------------------------

    async def _full_check(self) -> bool:
        if self.last_sync_at is not None:  # the first read takes both in one round trip
            client: Any = self._redis
            raw: Mapping[bytes, bytes] = await client.hgetall(self.keys.state)
            state = texts(raw)
            if "seen" not in state:
                return False  # no data yet: keep the last known good
            if self.unchanged(state):
                return True
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.state)
            pipe.hgetall(self.keys.current)
            state_raw, current = await pipe.execute()
        state = texts(state_raw)
        await self._deliver(self.take_full(state, current))
        return "seen" in state

    async def _deliver(self, changes: list[Change]) -> None:
        if changes and self.cache_path is not None:
            await asyncio.to_thread(self.after_changes, changes)
        else:
            self.after_changes(changes)
        for callback, change in self.due_callbacks(changes):
            try:
                result = callback(change.agent_id, change.snapshot)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:  # raised by the callback, not sent to this task:
                task = asyncio.current_task()  # it must not end the task that keeps configs
                if task is not None and task.cancelling():  # fresh
                    raise  # the client itself is being stopped
                logger.exception(kv("callback_failed", agent=change.agent_id))
            except Exception:  # (Ctrl-C and SystemExit on the event loop's thread are real)
                logger.exception(kv("callback_failed", agent=change.agent_id))

    async def _run(self) -> None:
        backoff = Backoff(0.2, 30.0)
        while not self._stopping.is_set():
            try:
                await self._follow()
                backoff.reset()
            except (redis.RedisError, OSError) as exc:
                self.set_disconnected(exc)
                await self._sleep(backoff.next())
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(kv("client_error", namespace=self.namespace))
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
            if pubsub.connection is not None:
                pubsub.connection.register_connect_callback(self._on_pubsub_connect)
            state_read = await self._full_check()
            self._resync = False
            self.set_connected()
            self.fresh(state_read)
            loop = asyncio.get_running_loop()
            next_check = loop.time() + self.check_interval
            next_report = loop.time()
            while not self._stopping.is_set():
                message = await pubsub.get_message(timeout=0.25)
                if message is not None and message.get("type") == "message":
                    self.last_event_at = _now()
                    await self._on_event(parse_event(message["data"]))
                now = loop.time()
                if self._resync or now >= next_check:
                    self._resync = False
                    self.fresh(await self._full_check())
                    next_check = now + self.check_interval
                if now >= next_report:
                    await self._redis.set(self.keys.client(self.instance_id), self.report(),
                                          ex=self.report_ttl)
                    next_report = now + self.report_interval
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _on_pubsub_connect(self, connection: Any) -> None:
        self._resync = True

    async def _on_event(self, event: dict[str, Any] | None) -> None:
        action, arg = self.plan(event)
        if action == "changes":
            await self._deliver(arg)
        elif action == "full":
            await self._full_check()
        elif action == "fetch" and event is not None:
            raw = await self._redis.hget(self.keys.current, arg)
            if raw is None:
                await self._full_check()
                return
            await self._deliver(self.holdings.apply_record(
                Record.from_json(raw), event["epoch"], int(event.get("revision") or 0)))
