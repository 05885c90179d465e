"""Redis URLs, checked before anything connects.

redis-py quietly fills what a URL leaves out (``redis://`` becomes localhost:6379, database 0),
so a typo could point the daemon or a client at somebody else's Redis. A URL is accepted only
when it names everything: ``redis://[:password@]HOST[:PORT][/DB]``, the same with ``rediss://``
(TLS), or ``unix://[:password@]/path/to/redis.sock[?db=N]``. Anything else is a
:class:`~configsync.errors.UsageError` (exit 2 at the CLI) that names where the URL came from.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis

from .errors import UsageError
from .logs import one_line, redact_url

__all__ = ["check_redis_url", "from_url", "redis_failure"]

_FORM = "write redis://HOST:PORT/DB (rediss:// for TLS, unix:///path/to/redis.sock)"
_OPTIONS = frozenset(["db", "username", "password", "client_name", "decode_responses",
                      "encoding", *getattr(redis.connection, "URL_QUERY_ARGUMENT_PARSERS", {})])
# (encoding is known, and refused below with a reason of its own)


def _problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid Redis URL ({exc})"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return f"is not a Redis URL; {_FORM}"
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(name for name in query
                     if name not in _OPTIONS and not name.startswith("ssl_"))
    if unknown:
        return f"has options Redis does not know: {', '.join(unknown)}"
    if "encoding" in query:
        return "sets ?encoding=: configsync reads and writes UTF-8 only"
    path_db, query_db = parts.path.strip("/"), query.get("db", [""])[0]
    if path_db and query_db and path_db != query_db:
        return f"names database {path_db} in its path and {query_db} in ?db=; keep one"
    if parts.scheme == "unix":
        return None if parts.path not in ("", "/") else f"names no socket; {_FORM}"
    if not parts.hostname:
        return ("names no host (redis-py would quietly use its default server on localhost); "
                f"{_FORM}")
    if port == 0:
        return "names port 0"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return f"has {database!r} where the database number goes; {_FORM}"
    return None


def check_redis_url(url: str, origin: str) -> None:
    """Raise :class:`UsageError` unless ``url`` is a complete Redis URL. ``origin`` says where
    it came from (``--redis``, ``CONFIGSYNC_REDIS_URL``) for the message; the URL is shown
    without its password."""
    problem = _problem(url)
    if problem is not None:
        raise UsageError(f"{origin}: '{one_line(redact_url(url))}' {problem}")


def from_url(factory: Any, url: str, origin: str, **options: Any) -> Any:
    """``factory.from_url(url, **options)`` (``redis.Redis`` or ``redis.asyncio.Redis``) after
    :func:`check_redis_url`; redis-py's own objections become usage errors too."""
    check_redis_url(url, origin)
    try:
        return factory.from_url(url, **options)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{origin}: '{one_line(redact_url(url))}' is not a valid Redis URL "
                         f"({exc})") from None


def redis_failure(exc: BaseException, client: Any) -> str:
    """A Redis failure in one line, with the likeliest cause: a TLS mismatch looks like a
    timeout from one side and a dropped connection from the other."""
    text = str(exc)
    pool = getattr(client, "connection_pool", None)
    tls = isinstance(pool, redis.ConnectionPool) and issubclass(pool.connection_class,
                                                                 redis.SSLConnection)
    if tls and any(word in text for word in ("Timeout", "SSL", "EOF", "handshake")):
        hint = "rediss:// speaks TLS: if this server is plain Redis, use redis://"
    elif not tls and any(word in text for word in ("Connection closed", "reset", "reading")):
        hint = "is Redis running, and does it want TLS? (then use rediss://)"
    else:
        hint = "is Redis running, and the URL right?"
    return f"redis: {text} ({hint})"
