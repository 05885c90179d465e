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
import logging
import math
import os
import re
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .aio import AsyncClient
from .errors import ConfigsyncError, CorruptDataError, UsageError
from .escape import json_body, json_safe, quoted
from .holdings import Snapshot, VersionNotFoundError
from .logs import kv, logger, redact_text
from .metrics import CONTENT_TYPE, Metrics
from .peerlog import PeerLog
from .redis_url import from_url
from .sync import Daemon
from .webhook import Replays, Verdict, open_delivery

__all__ = ["MAX_BODY", "MAX_WAIT", "Server", "StartingServer", "bind"]

MAX_BODY = 25 * 1024 * 1024
"""A webhook body larger than this is refused (413): GitHub's own cap on its payloads. A body
is streamed through the signature check and only its first ``webhook.MAX_BODY`` bytes (1 MiB)
are held, so a signed push of many commits still asks for a sync (issue 17, item 7)."""

MAX_WAIT = 60.0
"""The longest long poll (``?wait=``), in seconds."""

IDLE_SECONDS = 10.0
"""A connection with no request in progress for this long is closed: a client that connects
and sends nothing, or a header a byte at a time (slowloris), or an idle keep-alive, never
holds a socket longer (a long poll is a request in progress)."""

LINGER_SECONDS = 1.0
"""After an answer that left a body unread (413, 408), how long aiohttp reads and drops the
rest, so the client sees the answer rather than a reset (aiohttp's default: 10 s)."""

BODY_SECONDS = 10.0
"""A webhook body must arrive within this long (408 otherwise)."""

BODIES_AT_ONCE = 16
"""Webhook bodies read at once (each up to ``webhook.MAX_BODY`` in memory); one more is
answered 503 at once rather than queued (a queue would hold its bytes in buffers meanwhile)."""

BODIES_PER_PEER = 2
"""Webhook bodies read at once from one address: a sender without the secret (its signature
is known wrong only once its body is in) cannot take the slots signed pushes need (issue 17,
item 6). A request without a signature header, or with a wrong GitLab token, is refused before
its body is read and takes no slot at all."""

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
RESERVED = 16
"""Connections accepted beyond the limit for ``/healthz`` and ``/readyz`` only (any other path
there is answered 503 and closed), so probes are answered under any flood (issue 17, item 5)."""

REDIS_CONNECTIONS = 16
"""The server's Redis pool: requests beyond it wait for a connection (at most 5 s) rather
than fail with redis-py's "Too many connections" (issue 17, item 8)."""

READ_BUFFER = 64 * 1024
"""What aiohttp buffers of a connection before it stops reading from it (its default:
256 KiB), so a thousand stalled senders hold tens of MiB, not hundreds."""

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


ACCEPTS_AT_ONCE = 16
"""asyncio accepts up to its ``backlog`` connections a loop turn before any is refused: kept
small, so a flood holds few descriptors in flight beyond the limit (the kernel's queue holds
the rest)."""


def connection_limit() -> int:
    """The most connections served at once: half of the process's file descriptors left after
    room for accepts in flight (the soft limit raised to the hard one first, up to 65,536), at
    most 1,000, so clients can never take the descriptors the sync loop needs for git and
    Redis."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 65_536 if hard == resource.RLIM_INFINITY else min(hard, 65_536)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    except (ImportError, ValueError, OSError):
        soft = 1024
    return max(16, min(1000, (soft - 4 * ACCEPTS_AT_ONCE) // 2))


class _OneLine(logging.Handler):
    """aiohttp's own log records (a request that failed, a client gone mid-request) as one
    ``event=http_error`` line of the daemon's format, never a traceback: anyone who can reach
    the port can cause them."""

    def __init__(self) -> None:
        super().__init__()
        self._log = PeerLog()

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        error = type(exc).__name__ if exc is not None else None
        # (rate-limited by kind, texts clipped: a peer chooses what a bad request says)
        self._log.write(logger.warning, f"http_error:{error}", "http_error",
                        message=record.getMessage(), error=error,
                        detail=str(exc) if exc is not None else None)


def _quiet_aiohttp() -> None:
    """aiohttp's loggers and asyncio's (a failed accept, once per attempt) through one
    rate-limited :class:`_OneLine` (see :class:`PeerLog`)."""
    handler = _OneLine()
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal",
                 "asyncio"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.propagate = False


class _Refused(asyncio.Protocol):
    """A connection over the limit: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _JsonErrors(RequestHandler):
    """aiohttp's connection handler, whose own answers to what it cannot parse (a bad request
    line, a header too long, a bad Content-Length) are JSON like every other (issue 17, item
    8), and are logged through :class:`_OneLine`. Made by ``web.Server()`` and given this class
    (no fields of its own: the layout is aiohttp's)."""

    __slots__ = ()

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)  # (logs, checks state)
        reason = "internal error" if status >= 500 else (
            getattr(exc, "message", None) or plain.reason).lower()
        answer = _json_response({"error": str(reason)[:200]}, status=status)
        answer.force_close()
        return answer


class _Guard:
    """Keeps connections from outliving their use: at most ``limit`` at once (more are closed
    as they come, or the one idle longest makes room; RESERVED more for HEALTH_PATHS only),
    and none idle (no request in progress)
    for more than IDLE_SECONDS. A connection counts while it is open or its handler runs, and
    a handler is cancelled when its peer goes (``handler_cancellation``), so a long poll whose
    client left frees its slot at once (issue 17, item 5)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.server: web.Server | None = None
        self.active: dict[object, int] = {}  # handler -> requests in progress
        self.idle_since: dict[object, float] = {}
        self.reserved: set[object] = set()  # connections beyond the limit: probes only
        self.evicted: set[object] = set()  # closed to make room, not gone yet

    def factory(self) -> asyncio.BaseProtocol:
        server = self.server
        assert server is not None
        live = server.connections
        count = len(live) - len(self.evicted.intersection(live))
        reserved = count >= self.limit and not self._evict_idle(server)
        if reserved and count >= self.limit + RESERVED:
            return _Refused()
        protocol = server()
        protocol.__class__ = _JsonErrors
        self.idle_since[protocol] = asyncio.get_running_loop().time()
        if reserved:
            self.reserved.add(protocol)
        return protocol

    def _evict_idle(self, server: web.Server) -> bool:
        """Close the connection idle longest (no request in progress: connected and silent,
        a header on its way, a keep-alive) to make room: a flood of idle connections can
        never keep anyone out. False when every connection has a request in progress."""
        idle = [h for h in server.connections
                if not self.active.get(h) and h not in self.evicted and h not in self.reserved]
        if not idle:
            return False
        oldest = min(idle, key=lambda h: self.idle_since.get(h, 0.0))
        oldest.force_close()
        self.evicted.add(oldest)  # (counted until aiohttp lets it go, a loop turn later)
        return True

    @web.middleware
    async def track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        protocol = request.protocol
        if protocol in self.reserved:
            if request.path not in HEALTH_PATHS:
                answer = _json_response({"error": "too many connections: try again later"},
                                           status=503, headers={"Retry-After": "1"})
                answer.force_close()
                return answer
        self.active[protocol] = self.active.get(protocol, 0) + 1
        try:
            response = await handler(request)
            if protocol in self.reserved:
                response.force_close()  # a reserved slot serves one probe
            return response
        finally:
            left = self.active.pop(protocol, 1) - 1
            if left:
                self.active[protocol] = left
            self.idle_since[protocol] = asyncio.get_running_loop().time()

    async def reap(self) -> None:
        """Every second: close each connection idle for more than IDLE_SECONDS."""
        assert self.server is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            open_now = set(self.server.connections)
            for gone in [h for h in self.idle_since if h not in open_now]:
                del self.idle_since[gone]
            self.reserved &= open_now
            self.evicted &= open_now
            for handler in open_now:
                since = self.idle_since.setdefault(handler, now)
                if not self.active.get(handler) and now - since > IDLE_SECONDS:
                    handler.force_close()


class _GuardedSite(web.SockSite):
    """``SockSite``, with the guard's factory in place of the server's own."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, guard: _Guard) -> None:
        super().__init__(runner, sock)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        self._guard.server = self._runner.server
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory, sock=self._sock, backlog=ACCEPTS_AT_ONCE)


class _LoopThread:
    """An asyncio event loop in a thread of its own that serves ``sock``: :meth:`start`
    returns once it serves (ConfigsyncError when it could not), :meth:`stop` works from any
    thread. Subclasses write :meth:`_serve`, which sets ``_ready`` once serving and returns
    when ``_stop`` is set."""

    thread_name = "configsync-http"

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=self.thread_name, daemon=True)
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
        if thread is not None and thread.is_alive():
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
        raise NotImplementedError


class StartingServer(_LoopThread):
    """What the port answers while the daemon starts (``ls-remote``, Redis, its first fetch:
    up to ``--fetch-timeout`` against a silent remote): ``/healthz`` 200, anything else 503
    ``starting``, so a liveness probe never hangs on a daemon that is alive. It serves a
    duplicate of the listening socket; :meth:`stop` leaves the socket itself to the
    :class:`Server` that follows (connections that come in between wait in its backlog)."""

    thread_name = "configsync-http-starting"

    def __init__(self, sock: socket.socket) -> None:
        duplicate = sock.dup()
        duplicate.setblocking(False)
        super().__init__(duplicate)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        _quiet_aiohttp()
        guard = _Guard(connection_limit())
        app = web.Application(middlewares=[guard.track, _json_errors])
        app.router.add_get("/healthz", _alive)
        app.router.add_route("*", "/{path:.*}", _starting)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               keepalive_timeout=IDLE_SECONDS, lingering_time=LINGER_SECONDS,
                               handler_cancellation=True)
        await runner.setup()
        try:
            await _GuardedSite(runner, self.sock, guard).start()
            reaper = asyncio.create_task(guard.reap())
            self._ready.set()
            await self._stop.wait()
            reaper.cancel()
        finally:
            await runner.cleanup()


async def _alive(request: web.Request) -> web.Response:
    return _json_response({"status": "alive"})


async def _starting(request: web.Request) -> web.Response:
    raise _unavailable("starting: the daemon has not started yet (the remote, Redis)")


class Server(_LoopThread):
    """The HTTP server of one daemon: :meth:`start` (returns once it serves), :meth:`stop`
    (from any thread; long polls answer at once, then the loop ends)."""

    def __init__(self, daemon: Daemon, sock: socket.socket, *, redis_url: str, origin: str,
                 metrics: Metrics, webhook_secret: str | None) -> None:
        super().__init__(sock)
        self.daemon = daemon
        self.redis_url, self.origin = redis_url, origin
        self.metrics = metrics
        self._secret = webhook_secret.strip() if webhook_secret is not None else None
        if self._secret != webhook_secret:  # (a secret from `echo` or a file ends in "\n":
            # every delivery would be 401 with no hint; issue 17, item 7)
            logger.warning(kv("webhook_secret_stripped", hint="the webhook secret had white "
                              "space at its start or end (a newline?); it is used without it"))
        if self._secret == "":
            raise UsageError("the webhook secret is empty (only white space)")
        self.namespace = daemon.store.keys.namespace
        self._closing: asyncio.Event | None = None
        host, port = sock.getsockname()[:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._closing = asyncio.Event()
        # One URL grammar (redis_url.from_url: checked options, what waits need), then its
        # connections in a blocking pool of the server's own size: a burst of requests waits
        # for a connection rather than failing "Too many connections" (issue 17 item 8); one
        # more for the AsyncClient's pub/sub, held for the server's life.
        parsed = from_url(aioredis.Redis, self.redis_url, self.origin, socket_timeout=5,
                          socket_connect_timeout=5).connection_pool
        pool = aioredis.BlockingConnectionPool(
            connection_class=parsed.connection_class, max_connections=REDIS_CONNECTIONS + 1,
            timeout=5, **parsed.connection_kwargs)
        self._redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self.client = AsyncClient(redis=self._redis, namespace=self.namespace,
                                  instance_id=f"configsync-sync-{socket.gethostname()}-"
                                              f"{os.getpid()}")
        # The first start serves before the daemon's first sync has written the state: an
        # empty namespace here is the daemon's own, not a typo (issue 17, item 19).
        self.client.said_empty = True
        self._readiness: asyncio.Future[str | None] | None = None
        self._replays = Replays()
        self._peer_bodies: dict[str, int] = {}
        self._peer_log = PeerLog()
        _quiet_aiohttp()
        self._guard = _Guard(connection_limit())
        self._bodies = asyncio.Semaphore(BODIES_AT_ONCE)
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                               keepalive_timeout=IDLE_SECONDS, lingering_time=LINGER_SECONDS,
                               read_bufsize=READ_BUFFER, handler_cancellation=True)
        reaper: asyncio.Task[None] | None = None
        try:
            await self.client.start()
            await runner.setup()
            await _GuardedSite(runner, self.sock, self._guard).start()
            reaper = asyncio.create_task(self._guard.reap())
            logger.info(kv("listening", url=self.url, webhook="on" if self._secret else "off",
                           connections=self._guard.limit))
            self._ready.set()
            await self._stop.wait()
        finally:
            self._closing.set()  # long polls answer now, so the runner need not wait for them
            if reaper is not None:
                reaper.cancel()
            await runner.cleanup()
            await self.client.stop()
            await self._redis.aclose()
            await pool.disconnect()

    # -- the application --------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard.track, _json_errors])
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
        return await _alive(request)

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when Redis answers PING and the daemon's last sync attempt succeeded. Requests
        that come while a check runs share its answer (one PING however many probes)."""
        if self._readiness is None or self._readiness.done():
            self._readiness = asyncio.ensure_future(self._readiness_check())
        # (shielded: a probe that leaves does not cancel the check the others wait on)
        reason = await asyncio.shield(self._readiness)
        if reason is not None:
            return _json_response({"ready": False, "reason": reason}, status=503)
        return _json_response({"ready": True})

    async def _readiness_check(self) -> str | None:
        reason = None
        try:
            async with asyncio.timeout(2):
                await self._redis.ping()
        except (redis.RedisError, OSError, TimeoutError) as exc:
            reason = f"redis: {redact_text(str(exc)) or type(exc).__name__}"
        if reason is None and not await self._has_state():
            reason = ("no state in Redis for this namespace (a new or flushed Redis): a sync "
                      "is asked for, which rebuilds it")
            self.daemon.request_sync()
        if reason is None:
            reason = self.daemon.last_failure
        if reason is None and not self.daemon.synced:
            reason = "starting: no sync has completed yet"
        return reason

    async def _has_state(self) -> bool:
        """Whether the namespace's state is in Redis (the daemon writes it with every sync;
        a flushed Redis has none until the next)."""
        try:  # (through store.py, which owns every key; its client is thread-safe)
            async with asyncio.timeout(2):
                return bool(await asyncio.to_thread(self.daemon.store.state))
        except (redis.RedisError, OSError, TimeoutError):
            return False

    async def metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.text(), headers={"Content-Type": CONTENT_TYPE})

    async def webhook(self, request: web.Request) -> web.Response:
        """A push webhook (see :mod:`configsync.webhook`): refused on its headers alone where
        they tell (before a byte of the body is read), else its body streamed through the
        signature check within BODY_SECONDS, in one of BODIES_AT_ONCE slots (BODIES_PER_PEER
        for one address); a replay of an accepted delivery asks for no sync."""
        assert self._secret is not None
        if (request.content_length or 0) > MAX_BODY:  # said before a byte of it is read
            return self._too_large(request)
        delivery = open_delivery(request.headers, secret=self._secret)
        if isinstance(delivery, Verdict):
            return self._webhook_answer(request, delivery)
        peer = request.remote or "?"
        if self._bodies.locked() or self._peer_bodies.get(peer, 0) >= BODIES_PER_PEER:
            return self._webhook_answer(request, Verdict(
                503, "busy", "too many webhook bodies at once; the sender retries"))
        self._peer_bodies[peer] = self._peer_bodies.get(peer, 0) + 1
        try:
            async with self._bodies, asyncio.timeout(BODY_SECONDS):
                async for chunk in request.content.iter_any():
                    delivery.feed(chunk)
                    if delivery.size > MAX_BODY:
                        return self._too_large(request)
        except TimeoutError:
            return self._webhook_answer(request, Verdict(
                408, "slow_body", f"the body did not arrive within {BODY_SECONDS:g} s"))
        except ConnectionError:  # the sender went away mid-body: nobody to answer
            return self._disconnected(request)
        except asyncio.CancelledError:  # (the same, seen by aiohttp first: counted, and on)
            self._disconnected(request)
            raise
        finally:
            left = self._peer_bodies.pop(peer) - 1
            if left:
                self._peer_bodies[peer] = left
        verdict = delivery.verdict(branch=self.daemon.branch)
        if verdict.status == 202:
            if self._replays.seen(delivery.replay_keys):
                verdict = Verdict(200, "duplicate", "this delivery was received before: no "
                                  "new sync", verdict.provider, verdict.event, verdict.ref,
                                  verdict.delivery)
            else:  # (requests while a sync is pending or running make one more, not one each)
                self.daemon.request_sync()
        return self._webhook_answer(request, verdict)

    def _disconnected(self, request: web.Request) -> web.Response:
        return self._webhook_answer(request, Verdict(
            400, "disconnected", "the connection closed before the body ended"))

    def _too_large(self, request: web.Request) -> web.Response:
        return self._webhook_answer(request, Verdict(
            413, "too_large", f"the body is over {MAX_BODY} bytes (GitHub's own limit)"))

    def _webhook_answer(self, request: web.Request, verdict: Verdict) -> web.Response:
        status, outcome, reason = verdict.status, verdict.outcome, verdict.reason
        self.metrics.webhooks.labels(outcome).inc()
        log = logger.info if status < 400 else logger.warning
        # (rate-limited per outcome, each text clipped: anyone can send these; issue 17 item 6)
        self._peer_log.write(log, f"webhook:{outcome}", "webhook", status=status,
                             outcome=outcome, reason=reason, provider=verdict.provider,
                             hook_event=verdict.event, ref=verdict.ref,
                             delivery=verdict.delivery, remote=request.remote)
        if status == 204:
            return web.Response(status=204)
        return _json_response({"outcome": outcome, "reason": reason}, status=status)

    # -- the read API -----------------------------------------------------------------------

    async def agents(self, request: web.Request) -> web.Response:
        self._loaded()
        holdings = self.client.holdings
        current = holdings.current
        return _json_response({
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
            raise _not_found(f"unknown agent {quoted(agent_id)}")
        if wait:
            unlike = {snapshot.checksum} if not named or "*" in named else named
            changed = await self._wait_for_change(agent_id, unlike, wait)
            snapshot = self.client.holdings.current.get(agent_id)
            if snapshot is None:
                raise _not_found(f"agent {quoted(agent_id)} was deleted")
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
        except CorruptDataError as exc:  # what Redis holds there is no snapshot (issue 17.2)
            raise _error(web.HTTPBadGateway, str(exc)) from None
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
    """Every error answer is JSON (``{"error": ...}``), the router's 404 and 405 too, and a
    bug's 500 (one log line, no traceback to the peer)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _json_response({"error": exc.reason.lower()}, status=exc.status,
                                 headers=headers)
    except Exception as exc:  # a bug: said once, answered in JSON like everything else
        logger.error(kv("http_bug", path=request.path[:200], error=type(exc).__name__,
                        detail=str(exc)[:200]))
        return _json_response({"error": "internal error (please report)"}, status=500)


def _json_response(data: Any, *, status: int = 200,
                   headers: dict[str, str] | None = None) -> web.Response:
    """Every JSON body the server sends is written by :func:`escape.json_body`: no raw bidi
    control or line separator reaches a reader (issue 17, red team's item 3)."""
    return web.json_response(data, status=status, headers=headers, dumps=json_body)


def _error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=json_body({"error": message}), content_type="application/json")


def _not_found(message: str) -> web.HTTPException:
    return _error(web.HTTPNotFound, message)


def _unavailable(message: str) -> web.HTTPException:
    return _error(web.HTTPServiceUnavailable, message)


def _wait(request: web.Request) -> float:
    """``?wait=N``: seconds, 0 < N ≤ MAX_WAIT (0 or absent: no wait)."""
    text = request.query.get("wait")
    if text is None:
        return 0.0
    # ASCII digits only: float() also takes "1_0", "+1", " 5", "1e1" and other scripts' digits
    wait = float(text) if _SECONDS.fullmatch(text) else math.nan
    if not 0 <= wait <= MAX_WAIT:  # (NaN fails too)
        raise _error(web.HTTPBadRequest, f"wait must be a number of seconds from 0 to "
                                         f"{MAX_WAIT:g}")
    return wait


_SECONDS = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3})?")


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
    body = json_safe(snapshot.raw or snapshot.record.to_json())  # (same values: same ETag)
    return web.Response(text=body, content_type="application/json", headers=_headers(snapshot))
