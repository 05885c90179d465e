"""``configsync sync --listen``: webhooks, health, metrics and a read API, in the daemon process.

An aiohttp application runs on an event loop of its own, in a thread of its own
(``configsync-http``), so nothing it does can block or crash the sync loop. It touches the
daemon only through :meth:`Daemon.request_sync` (thread-safe, never blocks) and read-only
attributes (``branch``, ``synced``, ``last_failure``); the metrics are the daemon's
:class:`Metrics`. The read API is served from an :class:`AsyncClient` for the daemon's
namespace on the server's loop: reads from memory, long polls woken by its change callbacks.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import os
import socket
import threading
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as aioredis
from aiohttp import web

from .aio import AsyncClient
from .errors import ConfigsyncError, UsageError
from .holdings import Snapshot, VersionNotFoundError
from .logs import kv, logger, redact_text
from .metrics import CONTENT_TYPE, Metrics
from .redis_url import from_url
from .sync import Daemon
from .webhook import judge

__all__ = ["MAX_BODY", "MAX_WAIT", "Server", "bind"]

MAX_BODY = 1024 * 1024
"""A webhook body larger than this is refused (413): GitHub caps its payloads at 25 MB, but a
push event that names a branch is small, and the body is held in memory to be verified."""

MAX_WAIT = 60.0
"""The longest long poll (``?wait=``), in seconds."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, bound now (in the caller's thread), so a port in
    use is a usage error before anything else starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    try:
        sock = socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        why = ("the address is already in use (another process listens there)"
               if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc))
        raise UsageError(f"--listen {shown}: cannot listen: {why}") from None
    sock.setblocking(False)
    return sock


class Server:
    """The HTTP server of one daemon: :meth:`start` (returns once it serves), :meth:`stop`
    (from any thread; long polls answer at once, then the loop ends)."""

    def __init__(self, daemon: Daemon, sock: socket.socket, *, redis_url: str, origin: str,
                 metrics: Metrics, webhook_secret: str | None) -> None:
        self.daemon = daemon
        self.sock = sock
        self.redis_url, self.origin = redis_url, origin
        self.metrics = metrics
        self._secret = webhook_secret
        self.namespace = daemon.store.keys.namespace
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        host, port = sock.getsockname()[:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    # -- the thread -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="configsync-http", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:
            raise ConfigsyncError(f"the HTTP server did not start: {self._failed}")

    def stop(self, timeout: float = 15.0) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop ended meanwhile
                pass
        if thread is not None:
            thread.join(timeout)
        self.sock.close()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception as exc:  # never the sync loop's problem: said, and the thread ends
            self._failed = exc
            logger.exception(kv("http_server_failed", error=str(exc)))
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._closing = asyncio.Event()
        self._redis: aioredis.Redis = from_url(aioredis.Redis, self.redis_url, self.origin,
                                               socket_timeout=5, socket_connect_timeout=5)
        self.client = AsyncClient(redis=self._redis, namespace=self.namespace,
                                  instance_id=f"configsync-sync-{socket.gethostname()}-"
                                              f"{os.getpid()}")
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        try:
            await self.client.start()
            await runner.setup()
            await web.SockSite(runner, self.sock).start()
            logger.info(kv("listening", url=self.url, webhook="on" if self._secret else "off"))
            self._ready.set()
            await self._stop.wait()
        finally:
            self._closing.set()  # long polls answer now, so the runner need not wait for them
            await runner.cleanup()
            await self.client.stop()
            await self._redis.aclose()

    # -- the application --------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[_json_errors])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_text)
        if self._secret is not None:  # never accept unsigned webhooks: no secret, no route
            app.router.add_post("/webhook", self.webhook)
        app.router.add_get("/agents", self.agents)
        # (before the catch-all: a path ending in /versions/N names a kept version)
        app.router.add_get(r"/agents/{id:.+}/versions/{n:[0-9]+}", self.version)
        app.router.add_get("/agents/{id:.+}", self.agent)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when Redis answers PING and the daemon's last sync attempt succeeded."""
        reason = None
        try:
            async with asyncio.timeout(2):
                await self._redis.ping()
        except (redis.RedisError, OSError, TimeoutError) as exc:
            reason = f"redis: {redact_text(str(exc)) or type(exc).__name__}"
        if reason is None:
            reason = self.daemon.last_failure
        if reason is None and not self.daemon.synced:
            reason = "starting: no sync has completed yet"
        if reason is not None:
            return web.json_response({"ready": False, "reason": reason}, status=503)
        return web.json_response({"ready": True})

    async def metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.text(), headers={"Content-Type": CONTENT_TYPE})

    async def webhook(self, request: web.Request) -> web.Response:
        assert self._secret is not None
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._webhook_answer(request, 413, "too_large",
                                        f"the body is over {MAX_BODY} bytes")
        verdict = judge(request.headers, body, secret=self._secret, branch=self.daemon.branch)
        if verdict.status == 202:
            self.daemon.request_sync()
        return self._webhook_answer(request, verdict.status, verdict.outcome, verdict.reason,
                                    provider=verdict.provider, hook_event=verdict.event,
                                    ref=verdict.ref, delivery=verdict.delivery)

    def _webhook_answer(self, request: web.Request, status: int, outcome: str, reason: str,
                        **fields: str | None) -> web.Response:
        self.metrics.webhooks.labels(outcome).inc()
        log = logger.info if status < 400 else logger.warning
        log(kv("webhook", status=status, outcome=outcome, reason=reason, **fields,
               remote=request.remote))
        if status == 204:
            return web.Response(status=204)
        return web.json_response({"outcome": outcome, "reason": reason}, status=status)

    # -- the read API -----------------------------------------------------------------------

    async def agents(self, request: web.Request) -> web.Response:
        self._loaded()
        holdings = self.client.holdings
        current = holdings.current
        return web.json_response({
            "namespace": self.namespace, "commit": holdings.commit,
            "revision": holdings.revision, "stale": self.client.stale,
            "agents": {a: {"version": s.version, "checksum": s.checksum}
                       for a, s in sorted(current.items())}})

    async def agent(self, request: web.Request) -> web.Response:
        """The snapshot JSON as Redis stores it; ``If-None-Match`` → 304; ``?wait=N``: a long
        poll until the checksum differs from the one named (or the current one)."""
        self._loaded()
        agent_id = request.match_info["id"]
        wait = _wait(request)
        named = _etags(request.headers.get("If-None-Match"))
        snapshot = self.client.holdings.current.get(agent_id)
        if snapshot is None:
            raise _not_found(f"unknown agent {agent_id!r}")
        if wait:
            unlike = {snapshot.checksum} if not named or "*" in named else named
            changed = await self._wait_for_change(agent_id, unlike, wait)
            snapshot = self.client.holdings.current.get(agent_id)
            if snapshot is None:
                raise _not_found(f"agent {agent_id!r} was deleted")
            if not changed:
                return _not_modified(snapshot)
        elif "*" in named or snapshot.checksum in named:
            return _not_modified(snapshot)
        return _snapshot_response(snapshot)

    async def version(self, request: web.Request) -> web.Response:
        self._loaded()
        agent_id, number = request.match_info["id"], int(request.match_info["n"])
        try:
            snapshot = await self.client.get_version(agent_id, number)
        except VersionNotFoundError as exc:
            raise _not_found(str(exc)) from None
        except (redis.RedisError, OSError) as exc:
            raise _unavailable(f"redis: {redact_text(str(exc))}") from None
        if snapshot.checksum in _etags(request.headers.get("If-None-Match")):
            return _not_modified(snapshot)
        return _snapshot_response(snapshot)

    def _loaded(self) -> None:
        if self.client.holdings.epoch is None:
            raise _unavailable("no configs loaded yet (Redis unreachable, or nothing synced)")

    async def _wait_for_change(self, agent_id: str, unlike: set[str], wait: float) -> bool:
        """The client's wait, cut short (False) when the server stops."""
        assert self._closing is not None
        change = asyncio.ensure_future(self.client.wait_for_change(agent_id, unlike,
                                                                   timeout=wait))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({change, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (change, closing):
                if not task.done():
                    task.cancel()
        return change.done() and not change.cancelled() and change.result()


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is JSON (``{"error": ...}``), the router's 404 and 405 too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response({"error": exc.reason.lower()}, status=exc.status,
                                 headers=headers)


def _error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=json.dumps({"error": message}), content_type="application/json")


def _not_found(message: str) -> web.HTTPException:
    return _error(web.HTTPNotFound, message)


def _unavailable(message: str) -> web.HTTPException:
    return _error(web.HTTPServiceUnavailable, message)


def _wait(request: web.Request) -> float:
    """``?wait=N``: seconds, 0 < N ≤ MAX_WAIT (0 or absent: no wait)."""
    text = request.query.get("wait")
    if text is None:
        return 0.0
    try:
        wait = float(text)
    except ValueError:
        wait = math.nan
    if not 0 <= wait <= MAX_WAIT:  # (NaN fails too)
        raise _error(web.HTTPBadRequest, f"wait must be a number of seconds from 0 to "
                                         f"{MAX_WAIT:g}")
    return wait


def _etags(header: str | None) -> set[str]:
    """The checksums an ``If-None-Match`` names (quoted, weak or not), or ``*``."""
    if not header:
        return set()
    tags = set()
    for part in header.split(","):
        tag = part.strip().removeprefix("W/").strip('"')
        if tag:
            tags.add(tag)
    return tags


def _headers(snapshot: Snapshot) -> dict[str, str]:
    return {"ETag": f'"{snapshot.checksum}"', "Cache-Control": "no-cache",
            "X-Configsync-Version": str(snapshot.version)}


def _not_modified(snapshot: Snapshot) -> web.Response:
    return web.Response(status=304, headers=_headers(snapshot))


def _snapshot_response(snapshot: Snapshot) -> web.Response:
    body = snapshot.raw or snapshot.record.to_json()
    return web.Response(text=body, content_type="application/json", headers=_headers(snapshot))
