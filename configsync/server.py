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
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from aiohttp import HttpVersion10, StreamReader, web
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
"""Webhook bodies read at once (each up to ``webhook.MAX_BODY`` in memory); one more takes
the slot of the slowest body in progress when that one is below MIN_BODY_RATE, else it is
answered 503 at once rather than queued (a queue would hold its bytes in buffers meanwhile)."""

MIN_BODY_RATE = 64 * 1024
"""Bytes a second (averaged since its slot was taken, after BODY_GRACE seconds) below which a
body in progress gives its slot to a new delivery at the limit: it is answered 408 and closed.
A body slot is held only by a sender that keeps sending, so slow senders without the secret
cannot starve signed pushes, from many addresses or from one (a reverse proxy's; the red
team of issue 17, finding 2)."""

BODY_GRACE = 0.5
"""Seconds a body keeps its slot whatever its rate (a TCP slow start)."""

LONG_POLL_SHARE = 0.5
"""The share of the connection limit long polls may hold; a long poll beyond it is answered
at once, as if ``wait=0`` (the red team of issue 17, finding 3: 300 long polls locked out
webhooks and the read API)."""

BACKLOG = 1024
"""The kernel's queue of connections not yet accepted (``listen()``'s backlog, capped by
``net.core.somaxconn``): a connect flood waits there rather than being dropped (with 16, ~1%
of 1 s probes timed out under a flood)."""

METHODS = frozenset({"GET", "HEAD", "POST"})
"""The methods any route answers; any other (OPTIONS, CONNECT, TRACE, PUT…) is 405."""

BODIES_PER_PEER = 2
"""Webhook bodies read at once from one address: a sender without the secret (its signature
is known wrong only once its body is in) cannot take the slots signed pushes need (issue 17,
item 6). A request without a signature header, or with a wrong GitLab token, is refused before
its body is read and takes no slot at all."""

FOLLOW_GRACE = 10.0
"""Seconds the read API may be stale (not following Redis) before ``/readyz`` says 503."""
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
RESERVED_PATHS = HEALTH_PATHS | {"/webhook"}
RESERVED = 16
"""Connections accepted beyond the limit for ``/healthz``, ``/readyz`` and ``/webhook`` only
(any other path there is answered 503 and closed), so probes and webhooks are answered under
any flood (issue 17, item 5). Beyond that too, a new connection is closed at once, without an
answer: no descriptor is left to spend on one (see README, ``--listen``)."""

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
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
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


def _check_aiohttp() -> None:
    """ConfigsyncError unless aiohttp's connection handler takes ``auto_decompress`` (it is
    passed per connection: an aiohttp without it would fail every request, not the start)."""
    import inspect

    if "auto_decompress" not in inspect.signature(RequestHandler.__init__).parameters:
        raise ConfigsyncError("this aiohttp cannot leave bodies compressed "
                              "(auto_decompress): upgrade aiohttp")


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
    the port can cause them. The error's class only, never its text: a parser error's text
    holds the request's bytes (a header with the webhook secret; the red team of issue 17)."""

    def __init__(self, log: PeerLog) -> None:
        super().__init__()
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        error = type(exc).__name__ if exc is not None else None
        # (rate-limited, texts clipped: a peer chooses what a bad request says)
        self._log.write(logger.warning, f"http_error:{error}", "http_error",
                        message=record.msg if exc is not None else record.getMessage(),
                        error=error)


def _quiet_aiohttp(log: PeerLog) -> None:
    """aiohttp's loggers and asyncio's (a failed accept, once per attempt) through one
    rate-limited :class:`_OneLine` (see :class:`PeerLog`)."""
    handler = _OneLine(log)
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal",
                 "asyncio"):
        named = logging.getLogger(name)
        named.handlers[:] = [handler]
        named.propagate = False


class _Refused(asyncio.Protocol):
    """A connection over the limit: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _JsonErrors(RequestHandler):
    """aiohttp's connection handler, whose own answers to what it cannot parse (a bad request
    line, a header too long, a bad Content-Length) are JSON like every other (issue 17, item
    8), one fixed text per error class (never the request's bytes: they may hold the webhook
    secret), logged through :class:`_OneLine`; and a peer that half-closes (sends its request,
    then ``shutdown(SHUT_WR)``) still gets its answer. Made by ``web.Server()`` and given a
    subclass of this class naming its :class:`_Guard` (no fields of its own: the layout is
    aiohttp's)."""

    __slots__ = ()
    guard: _Guard

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)  # (logs, checks state)
        reason = "internal error" if status >= 500 else (
            f"{plain.reason.lower()}: the request could not be read"
            + (f" ({type(exc).__name__})" if exc is not None else ""))
        answer = _json_response({"error": reason}, status=status)
        answer.force_close()
        return answer

    def eof_received(self) -> bool:  # type: ignore[override]  # (asyncio.Protocol's)
        """The peer finished sending. asyncio closes the connection when this returns false
        (aiohttp's does), so a request in flight would never be answered: kept open while one
        is, and its long poll (if it is one) answers at once, then the connection closes (a
        peer that left altogether resets the write, and the slot frees all the same). A body
        not all in never will be: its reader gets ConnectionResetError (a peer gone)."""
        if self._waiter is not None and not self._waiter.done() and not self._messages:
            return False  # (between requests, aiohttp's own test of idle: closed now)
        for _, payload in self._messages:
            _cut(payload)
        if self._current_request is not None:
            _cut(self._current_request.content)
        self.guard.half_closed(self)
        return True


def _cut(body: object) -> None:
    """A request body whose peer sent EOF before its end: its reader raises (a peer gone)."""
    if isinstance(body, StreamReader) and not body.is_eof():
        body.set_exception(ConnectionResetError("the peer closed before the body ended"))


class _Guard:
    """Keeps connections from outliving their use: at most ``limit`` at once (more are closed
    as they come, or the one idle longest makes room; RESERVED more for RESERVED_PATHS only),
    and none idle (no request in progress)
    for more than IDLE_SECONDS. A connection counts while it is open or its handler runs, and
    a handler is cancelled when its peer goes (``handler_cancellation``), so a long poll whose
    client left frees its slot at once (issue 17, item 5); a peer that half-closed gets its
    answer at once and the connection closes after it. Long polls hold at most
    LONG_POLL_SHARE of ``limit``. ``refused(reason)`` is told of each refusal (a metric, a
    rate-limited log line)."""

    def __init__(self, limit: int, refused: Callable[[str], None]) -> None:
        self.limit = limit
        self.refused = refused
        self.protocol_class = type("_Guarded", (_JsonErrors,), {"__slots__": (), "guard": self})
        self.polls = 0  # long polls waiting
        self.eof: dict[object, asyncio.Event] = {}  # half-closed connections
        self.server: web.Server | None = None
        self.active: dict[object, int] = {}  # handler -> requests in progress
        self.idle_since: dict[object, float] = {}
        self.reserved: set[object] = set()  # connections beyond the limit: probes only
        self.evicted: set[object] = set()  # closed to make room, not gone yet
        self.served: set[object] = set()  # answered a request

    def factory(self) -> asyncio.BaseProtocol:
        server = self.server
        assert server is not None
        live = server.connections
        count = len(live) - len(self.evicted.intersection(live))
        reserved = count >= self.limit and not self._evict_idle(server)
        if reserved and count >= self.limit + RESERVED:
            self.refused("connections")
            return _Refused()
        protocol = server()
        protocol.__class__ = self.protocol_class
        self.idle_since[protocol] = asyncio.get_running_loop().time()
        if reserved:
            self.reserved.add(protocol)
        return protocol

    def _evict_idle(self, server: web.Server) -> bool:
        """Close the connection idle longest (no request in progress: connected and silent,
        a header on its way, a keep-alive) to make room: a flood of idle connections can
        never keep anyone out. False when every connection has a request in progress."""
        idle = [h for h in server.connections  # (a request read, its handler not yet run: busy)
                if not self.active.get(h) and not h._messages and not h._request_in_progress
                and h not in self.evicted and h not in self.reserved and not _unread(h)]
        if not idle:
            return False
        # (one that was answered first, a keep-alive: one just accepted has its request on
        # the way, and is not yet known to be silent)
        oldest = min(idle, key=lambda h: (h not in self.served, self.idle_since.get(h, 0.0)))
        oldest.force_close()
        self.evicted.add(oldest)  # (counted until aiohttp lets it go, a loop turn later)
        return True

    def half_closed(self, protocol: object) -> None:
        self.eof.setdefault(protocol, asyncio.Event()).set()

    def eof_event(self, protocol: object) -> asyncio.Event:
        """Set when ``protocol``'s peer half-closes (a long poll answers then)."""
        return self.eof.setdefault(protocol, asyncio.Event())

    def may_poll(self) -> bool:
        """Whether one more long poll fits in LONG_POLL_SHARE of the limit (refusal counted)."""
        if self.polls >= max(1, int(self.limit * LONG_POLL_SHARE)):
            self.refused("long_polls")
            return False
        return True

    @web.middleware
    async def track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        protocol = request.protocol
        if protocol in self.reserved:
            if request.path not in RESERVED_PATHS:
                self.refused("connections")
                answer = _json_response({"error": "too many connections: try again later"},
                                           status=503, headers={"Retry-After": "1"})
                answer.force_close()
                return answer
        if protocol in self.eof:
            _cut(request.content)
        self.active[protocol] = self.active.get(protocol, 0) + 1
        try:
            response = await handler(request)
            if protocol in self.reserved or protocol in self.eof:
                response.force_close()  # a reserved slot serves one probe; EOF: no more
            return response
        finally:
            left = self.active.pop(protocol, 1) - 1
            if left:
                self.active[protocol] = left
            self.idle_since[protocol] = asyncio.get_running_loop().time()
            self.served.add(protocol)

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
            for gone in [h for h in self.eof if h not in open_now]:
                del self.eof[gone]
            self.reserved &= open_now
            self.evicted &= open_now
            self.served &= open_now
            for handler in open_now:
                since = self.idle_since.setdefault(handler, now)
                if not self.active.get(handler) and (now - since > IDLE_SECONDS
                                                     or handler in self.eof):
                    handler.force_close()


def _unread(protocol: RequestHandler) -> bool:
    """Whether bytes wait in the kernel for ``protocol``'s connection (a request on its way,
    not yet read: the connection is not idle, in a burst of connections accepted at once)."""
    transport = protocol.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    try:
        import fcntl
        import termios

        waiting = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (ImportError, OSError):  # (not POSIX, or the socket is gone)
        return False
    return int.from_bytes(waiting, sys.byteorder) > 0


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
        # (asyncio's backlog is also its accepts a loop turn: the kernel's queue made long
        # again, after asyncio's listen())
        self._sock.listen(BACKLOG)


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
        _check_aiohttp()
        peer_log = PeerLog()
        _quiet_aiohttp(peer_log)
        guard = _Guard(connection_limit(), lambda reason: _said_refused(peer_log, reason))
        app = web.Application(middlewares=[guard.track, _json_errors])
        app.router.add_get("/healthz", _alive)
        app.router.add_route("*", "/{path:.*}", _starting)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               keepalive_timeout=IDLE_SECONDS, lingering_time=LINGER_SECONDS,
                               handler_cancellation=True, auto_decompress=False)
        await runner.setup()
        try:
            await _GuardedSite(runner, self.sock, guard).start()
            reaper = asyncio.create_task(guard.reap())
            self._ready.set()
            await self._stop.wait()
            reaper.cancel()
        finally:
            await runner.cleanup()


def _said_refused(log: PeerLog, reason: str) -> None:
    log.write(logger.warning, f"http_refused:{reason}", "http_refused", reason=reason)


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
        _check_aiohttp()
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
        self._bodies: list[_Body] = []  # webhook bodies being read
        self._peer_log = PeerLog()
        if self._secret is not None:
            self._peer_log.secrets.add(self._secret)
        _quiet_aiohttp(self._peer_log)
        self._guard = _Guard(connection_limit(), self._refused)
        # (auto_decompress=False: nothing is ever decompressed, so a small compressed body
        # cannot cost megabytes of work before its signature is checked; the red team of
        # issue 17, finding 1)
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                               keepalive_timeout=IDLE_SECONDS, lingering_time=LINGER_SECONDS,
                               read_bufsize=READ_BUFFER, handler_cancellation=True,
                               auto_decompress=False)
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
            for body in list(self._bodies):  # and bodies in progress end now (408)
                self._drop(body)
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

    def _refused(self, reason: str) -> None:
        self.metrics.http_refused.labels(reason).inc()
        _said_refused(self._peer_log, reason)

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
            failure = self.daemon.last_failure  # the real cause first: a sync cannot help now
            reason = (f"{failure} (and no state in Redis for this namespace: it is rebuilt "
                      "once a sync succeeds)" if failure else
                      "no state in Redis for this namespace (a new or flushed Redis): a sync "
                      "is asked for, which rebuilds it")
            if failure is None:  # (not while failing: a probe must not end the backoff)
                self.daemon.request_sync()
        if reason is None:
            reason = self.daemon.last_failure
        if reason is None and not self.daemon.synced:
            reason = "starting: no sync has completed yet"
        if reason is None:
            reason = self._follow_problem()
        return reason

    def _follow_problem(self) -> str | None:
        """Why the read API's client has not followed Redis for over :data:`FOLLOW_GRACE`
        seconds (it serves what it holds: stale), or None."""
        since = self.client.stale_since
        if since is None:
            return None
        age = (datetime.now(UTC) - datetime.fromisoformat(since.replace("Z", "+00:00")))
        if age.total_seconds() <= FOLLOW_GRACE:
            return None
        why = self.client.connection_error or "it has read no state yet"
        return (f"the read API cannot follow Redis (stale since {since}): "
                f"{redact_text(why)}")

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
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):  # (providers never compress deliveries)
            return self._webhook_answer(request, Verdict(
                415, "unsupported_encoding", "a compressed body is refused: webhooks are "
                "sent uncompressed (Content-Encoding: identity)"))
        if (request.content_length or 0) > MAX_BODY:  # said before a byte of it is read
            return self._too_large(request)
        delivery = open_delivery(request.headers, secret=self._secret)
        if isinstance(delivery, Verdict):
            return self._webhook_answer(request, delivery)
        peer = request.remote or "?"
        loop = asyncio.get_running_loop()
        if not self._body_slot(peer, loop.time()):
            self._refused("bodies")
            return self._webhook_answer(request, Verdict(
                503, "busy", "too many webhook bodies at once; the sender retries"))
        body = _Body(peer, loop.time(), request.content_length)
        self._bodies.append(body)
        try:
            async with asyncio.timeout(BODY_SECONDS) as body.timeout:
                async for chunk in request.content.iter_any():
                    body.size += len(chunk)
                    delivery.feed(chunk)
                    if delivery.size > MAX_BODY:
                        return self._too_large(request)
        except TimeoutError:
            if body.dropped:
                answer = self._webhook_answer(request, Verdict(
                    408, "slow_body", f"the body came slower than {MIN_BODY_RATE} bytes/s "
                    "and its slot was given to another delivery (or the server stops)"))
                answer.force_close()
                return answer
            return self._webhook_answer(request, Verdict(
                408, "slow_body", f"the body did not arrive within {BODY_SECONDS:g} s"))
        except ConnectionError:  # the sender went away mid-body: nobody to answer
            return self._disconnected(request)
        except asyncio.CancelledError:  # (the same, seen by aiohttp first: counted, and on)
            self._disconnected(request)
            raise
        finally:
            if body in self._bodies:
                self._bodies.remove(body)
        verdict = delivery.verdict(branch=self.daemon.branch)
        if verdict.status == 202:
            if self._replays.seen(delivery.replay_keys):
                verdict = Verdict(200, "duplicate", "this delivery was received before: no "
                                  "new sync", verdict.provider, verdict.event, verdict.ref,
                                  verdict.delivery)
            else:  # (requests while a sync is pending or running make one more, not one each)
                self.daemon.request_sync()
        return self._webhook_answer(request, verdict)

    def _body_slot(self, peer: str, now: float) -> bool:
        """Whether a body from ``peer`` may be read now: under BODIES_PER_PEER for its address
        and BODIES_AT_ONCE in all, or the slowest body in its way (below MIN_BODY_RATE after
        BODY_GRACE) is dropped to make room (each drop counted)."""
        for limit, of_peer in ((BODIES_PER_PEER, True), (BODIES_AT_ONCE, False)):
            crowd = [b for b in self._bodies if b.peer == peer or not of_peer]
            if len(crowd) < limit:
                continue
            slow = [b for b in crowd if now - b.start >= BODY_GRACE and not b.complete
                    and _rate(b, now) < MIN_BODY_RATE]
            if not slow:
                return False
            self._refused("slow_body")
            self._drop(min(slow, key=lambda b: _rate(b, now)))
        return True

    def _drop(self, body: _Body) -> None:
        """End the reading of ``body`` now: its handler answers 408 and closes."""
        body.dropped = True
        if body in self._bodies:
            self._bodies.remove(body)
        if body.timeout is not None:
            body.timeout.reschedule(asyncio.get_running_loop().time())

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
        if wait and not self._guard.may_poll():
            wait = 0.0  # (over the long polls' share: answered at once, as if wait=0)
        named = _etags(request.headers.get("If-None-Match"))
        snapshot = self.client.holdings.current.get(agent_id)
        if snapshot is None:
            raise _not_found(f"unknown agent {quoted(agent_id)}")
        if wait:
            unlike = {snapshot.checksum} if not named or "*" in named else named
            self._guard.polls += 1
            try:
                changed = await self._wait_for_change(
                    agent_id, unlike, wait, self._guard.eof_event(request.protocol))
            finally:
                self._guard.polls -= 1
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

    async def _wait_for_change(self, agent_id: str, unlike: set[str], wait: float,
                               eof: asyncio.Event) -> bool:
        """The client's wait, cut short (False) when the server stops or the peer has
        half-closed."""
        assert self._closing is not None
        change = asyncio.ensure_future(self.client.wait_for_change(agent_id, unlike,
                                                                   timeout=wait))
        closing = asyncio.ensure_future(self._closing.wait())
        left = asyncio.ensure_future(eof.wait())
        try:
            await asyncio.wait({change, closing, left}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (change, closing, left):
                if not task.done():
                    task.cancel()
        return change.done() and not change.cancelled() and change.result()


@dataclass(eq=False)
class _Body:
    """A webhook body being read: from ``peer``, since ``start`` (loop seconds), ``size``
    bytes so far."""

    peer: str
    start: float
    expected: int | None  # Content-Length (None: chunked)
    size: int = 0
    timeout: asyncio.Timeout | None = None
    dropped: bool = False

    @property
    def complete(self) -> bool:
        """All of it is in (it is being checked, not waited for: never dropped)."""
        return self.expected is not None and self.size >= self.expected


def _rate(body: _Body, now: float) -> float:
    """Bytes a second ``body`` came at since its slot was taken."""
    return body.size / max(now - body.start, 1e-6)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is JSON (``{"error": ...}``), the router's 404 and 405 too, and a
    bug's 500 (one log line, no traceback to the peer). Refused before routing: HTTP/0.9
    (505), a method no route has (405: ``OPTIONS *``, ``CONNECT``, ``TRACE``), a query
    parameter given twice (400: which one counts is nobody's guess)."""
    if request.version < HttpVersion10:
        request._message = request._message._replace(version=HttpVersion10)
        if hasattr(request, "_version"):  # (aiohttp ≥ 3.10 copies it)
            request._version = HttpVersion10
        request._cache.pop("version", None)  # (read once above: reify keeps it there)
        answer = _json_response({"error": "HTTP version not supported: HTTP/1.0 or 1.1"},
                                   status=505)
        answer.force_close()
        return answer
    if request.method not in METHODS:
        return _json_response({"error": "method not allowed"}, status=405,
                                 headers={"Allow": ", ".join(sorted(METHODS))})
    if len(set(request.query)) != len(request.query):
        return _json_response({"error": "a query parameter is given more than once"},
                                 status=400)
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
