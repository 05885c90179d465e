"""Redis URLs, checked before anything connects, and the options configsync sets over them.

redis-py quietly fills what a URL leaves out (``redis://`` becomes localhost:6379, database 0),
so a typo could point the daemon or a client at somebody else's Redis. A URL is accepted only
when it names everything: ``redis://[:password@]HOST[:PORT][/DB]``, the same with ``rediss://``
(TLS), or ``unix://[:password@]/path/to/redis.sock[?db=N]``. Its ``?options`` must be ones
redis-py accepts for that scheme (the names its connection class takes and its URL parser can
give as text: ``ssl_*`` only with ``rediss://``), with values it accepts, and every value
that could only fail at the first connection (or never) is checked first too: the files
``ssl_ca_certs=``, ``ssl_certfile=``, ``ssl_keyfile=`` (files) and ``ssl_ca_path=`` (a folder)
name must exist and load (the CA as PEM certificates; the client certificate with its key),
``ssl_ciphers=`` must select a cipher, ``ssl_min_version=`` is an ``ssl.TLSVersion`` number
this machine can set (771 for TLS 1.2), ``health_check_interval``, ``db`` and
``socket_read_size`` are not negative (or 0), ``client_name`` has no spaces, and a boolean
option is a word redis-py reads as one (any other, ``flase`` too, would be true).
Anything else is a :class:`~configsync.errors.UsageError` (exit 2 at the CLI; a ``ValueError``
is never what a user sees) that names where the URL came from, and for an unknown option the
options accepted ("did you mean ssl_ca_certs?").

One URL is often shared by every agent on a host (``CONFIGSYNC_REDIS_URL``), with options
chosen for short requests (``?socket_timeout=2``). redis-py lets a URL's options win over the
caller's, so :func:`from_url` sets these after it, for every connection configsync makes:

- ``protocol`` is dropped: configsync parses RESP2 replies (``XREAD``'s differ in RESP3);
- ``waits=S`` (a command that blocks on purpose, such as ``watch``'s ``XREAD BLOCK``):
  ``socket_timeout`` at least S + 10 seconds, so the wait is not taken for a dead server;
- ``holds=N`` (connections held for a client's life: its pub/sub): ``max_connections`` is
  the URL's plus N, so a limit meant for requests never starves the listener.
"""

from __future__ import annotations

import inspect
import os
import ssl
import warnings
from typing import Any
from urllib.parse import SplitResult, parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from .errors import UsageError
from .logs import one_line, redact_url
from .messages import did_you_mean

__all__ = ["accepted_options", "check_redis_url", "from_url", "redis_failure"]

_FORM = "write redis://HOST:PORT/DB (rediss:// for TLS, unix:///path/to/redis.sock)"
_PARSED = frozenset(getattr(redis.connection, "URL_QUERY_ARGUMENT_PARSERS", {}))
# options redis-py passes on as text, as the URL gave them (the rest need objects)
_TEXT = frozenset(["username", "password", "client_name", "decode_responses", "encoding",
                   "lib_name", "lib_version", "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs",
                   "ssl_ca_certs", "ssl_ca_path", "ssl_ca_data", "ssl_password", "ssl_ciphers"])
_CLASSES = {"redis": redis.Connection, "rediss": redis.SSLConnection,
            "unix": redis.UnixDomainSocketConnection}
_BOOLEANS = frozenset([name for name, parse in getattr(
    redis.connection, "URL_QUERY_ARGUMENT_PARSERS", {}).items()
    if getattr(parse, "__name__", "") == "to_bool"])
_BOOLEAN_WORDS = frozenset(["TRUE", "FALSE", "T", "F", "YES", "NO", "Y", "N", "1", "0", ""])
"""(redis-py's ``FALSE_STRINGS`` and their opposites; "off" would be true there)"""
SLACK_SECONDS = 10.0
"""What ``waits=`` adds to the longest wait for ``socket_timeout`` (a reply on its way)."""


def _parameters(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            names |= set(inspect.signature(klass.__dict__["__init__"]).parameters)
    return names


def accepted_options(scheme: str) -> list[str]:
    """The ``?options`` a ``scheme://`` URL may carry (``redis``, ``rediss`` or ``unix``):
    what redis-py's connection class for it takes and its URL parser can give, sorted."""
    takes = _parameters(_CLASSES[scheme]) | {"max_connections", "db"}
    return sorted((_PARSED | _TEXT | {"db"}) & takes)


def _unknown(scheme: str, names: list[str]) -> str:
    accepted = accepted_options(scheme)
    if all(name.startswith("ssl_") for name in names) and scheme != "rediss" \
            and not set(names) - set(accepted_options("rediss")):
        return f"sets {', '.join(names)}, TLS options: use rediss:// (TLS) for them"
    family = [a for a in accepted
              if a.startswith("ssl_") == names[0].lower().startswith("ssl_")]
    close = did_you_mean(names[0].lower(), accepted).removeprefix(", ").replace("`", "")
    hint = f" ({close})" if close else ""
    return (f"has {'an option' if len(names) == 1 else 'options'} redis-py does not accept: "
            f"{', '.join(names)}{hint}; {scheme}:// accepts: {', '.join(family or accepted)}")


def _problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid Redis URL ({exc})"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return f"is not a Redis URL; {_FORM}"
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(name for name in query if name not in accepted_options(parts.scheme))
    if unknown:
        return _unknown(parts.scheme, unknown)
    if "encoding" in query:
        return "sets ?encoding=: configsync reads and writes UTF-8 only"
    # (a unix:// path is the socket's, never a database: ?db= names that one)
    path_db = "" if parts.scheme == "unix" else parts.path.strip("/")
    query_db = query.get("db", [""])[0]
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


def _tls_versions() -> dict[int, str]:
    """The ``ssl.TLSVersion`` numbers this machine's ssl module can set as a minimum."""
    usable = {}
    for version in ssl.TLSVersion:
        try:
            with warnings.catch_warnings():  # (SSLv3 to TLSv1_1 are deprecated, yet settable)
                warnings.simplefilter("ignore", DeprecationWarning)
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).minimum_version = version
        except (ValueError, ssl.SSLError):
            continue
        if version.name not in ("MINIMUM_SUPPORTED", "MAXIMUM_SUPPORTED"):
            usable[int(version)] = version.name
    return usable


def _min_version(text: str) -> str | None:
    versions = _tls_versions()
    if text.strip().lstrip("-").isdigit() and int(text) in versions:
        return None
    named = versions.get(getattr(ssl.TLSVersion, text.strip(), 0), "")
    said = f" ({text} is {int(getattr(ssl.TLSVersion, text.strip()))})" if named else ""
    return (f"sets ssl_min_version={one_line(text)}: give an ssl.TLSVersion number{said}: "
            + ", ".join(f"{number} ({name})" for number, name in sorted(versions.items())))


def _tls_files(options: dict[str, Any]) -> str | None:
    """What the TLS files and ciphers would fail with at the first connection."""
    for name, wanted in (("ssl_ca_certs", "file"), ("ssl_certfile", "file"),
                         ("ssl_keyfile", "file"), ("ssl_ca_path", "folder")):
        path = options.get(name)
        if not path:
            continue
        if not os.path.exists(path):
            return f"sets {name}={one_line(path)}: no such file or folder"
        if wanted == "file" and os.path.isdir(path):
            where = " (a folder of CA certificates goes in ssl_ca_path=)" \
                if name == "ssl_ca_certs" else ""
            return f"sets {name}={one_line(path)}: a folder, not a file{where}"
        if wanted == "folder" and not os.path.isdir(path):
            return (f"sets ssl_ca_path={one_line(path)}: a file, not a folder (one CA "
                    "file goes in ssl_ca_certs=)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if options.get("ssl_ca_certs") or options.get("ssl_ca_data"):
            context.load_verify_locations(cafile=options.get("ssl_ca_certs"),
                                          cadata=options.get("ssl_ca_data"))
    except (ssl.SSLError, OSError, ValueError) as exc:
        return (f"sets a CA (ssl_ca_certs/ssl_ca_data) that does not load as PEM "
                f"certificates ({one_line(str(exc))})")
    try:
        if options.get("ssl_certfile"):
            context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"),
                                    options.get("ssl_password"))
        elif options.get("ssl_keyfile"):
            return "sets ssl_keyfile without ssl_certfile: a client key needs its certificate"
    except (ssl.SSLError, OSError, ValueError) as exc:
        return ("sets a client certificate that does not load: ssl_certfile must hold the "
                "PEM certificate and ssl_keyfile its private key (or the certificate file "
                f"both), ssl_password the key's passphrase if it has one ({one_line(str(exc))})")
    try:
        if options.get("ssl_ciphers"):
            context.set_ciphers(options["ssl_ciphers"])
    except ssl.SSLError as exc:
        return (f"sets ssl_ciphers={one_line(options['ssl_ciphers'])}, which selects no "
                f"cipher ({one_line(str(exc.args[0] if exc.args else exc))}); give an OpenSSL "
                "cipher list")
    return None


def _numbers(options: dict[str, Any]) -> str | None:
    """Numbers redis-py takes as given, to fail later (or never) with another message."""
    for name in ("socket_timeout", "socket_connect_timeout"):
        if options.get(name) is not None and not options[name] > 0:
            return f"sets {name}={options[name]:g}: give a number of seconds above 0"
    for name, least in (("health_check_interval", 0), ("db", 0), ("socket_read_size", 1),
                        ("max_connections", 1)):
        value = options.get(name)
        if isinstance(value, int) and value < least:
            what = " (seconds; 0: no checks)" if name == "health_check_interval" else ""
            return f"sets {name}={value}: give a whole number ≥ {least}{what}"
    client_name = options.get("client_name")
    if client_name is not None and any(c.isspace() for c in str(client_name)):
        return (f"sets client_name={one_line(str(client_name))!r}: Redis takes a name "
                "without spaces")
    return None


def _values(url: str) -> str | None:
    """What redis-py would say of the options' values only when it connects (or never)."""
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    for name, value in query.items():  # redis-py reads any other word as true ("flase" too)
        if name in _BOOLEANS and value.strip().upper() not in _BOOLEAN_WORDS:
            return (f"sets {name}={one_line(value)}: give true or false (yes/no, 1/0); "
                    "redis-py would read it as true")
    if "ssl_min_version" in query:
        problem = _min_version(query["ssl_min_version"])
        if problem:
            return problem
    try:
        pool = redis.ConnectionPool.from_url(url)
        pool.connection_class(**pool.connection_kwargs)
    except (ValueError, TypeError, redis.RedisError) as exc:
        return f"is not a valid Redis URL ({one_line(str(exc))})"
    options = dict(pool.connection_kwargs)
    options.setdefault("max_connections", pool.max_connections)
    return _numbers(options) or _tls_files(options)


def _unsplit(parts: SplitResult) -> str:
    """``urlunsplit``, but ``unix:///path`` keeps its ``//`` (with no host, ``urlunsplit``
    writes ``unix:/path``, which redis-py refuses)."""
    url = urlunsplit(parts)
    if not parts.netloc and parts.path.startswith("/"):
        url = f"{parts.scheme}://{url.removeprefix(parts.scheme + ':')}"
    return url


def check_redis_url(url: str, origin: str) -> None:
    """Raise :class:`UsageError` unless ``url`` is a complete Redis URL. ``origin`` says where
    it came from (``--redis``, ``CONFIGSYNC_REDIS_URL``) for the message; the URL is shown
    without its password."""
    problem = _problem(url)
    if problem is None and urlsplit(url).query:
        problem = _values(url)
    if problem is not None:
        raise UsageError(f"{origin}: '{one_line(redact_url(url))}' {problem}")


def from_url(factory: Any, url: str, origin: str, *, waits: float | None = None,
             holds: int = 0, **options: Any) -> Any:
    """``factory.from_url(url, **options)`` (``redis.Redis`` or ``redis.asyncio.Redis``) after
    :func:`check_redis_url`; redis-py's own objections become usage errors too. Then the
    options configsync sets over the URL's (see the module docstring): no ``protocol``;
    ``waits`` (seconds one command blocks on purpose) raises ``socket_timeout`` to at least
    ``waits`` + :data:`SLACK_SECONDS`; ``holds`` adds to ``max_connections`` the connections
    the caller holds for its life (a pub/sub listener)."""
    check_redis_url(url, origin)
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "protocol" for name, _ in query):  # before redis-py picks its reply parsers
        url = _unsplit(parts._replace(query=urlencode([(n, v) for n, v in query
                                                       if n != "protocol"])))
    try:
        client = factory.from_url(url, **options)
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        if waits is not None and kwargs.get("socket_timeout") is not None:
            for name in ("socket_timeout", "orig_socket_timeout"):  # (redis-py restores the
                if kwargs.get(name) is not None:  # orig_ one after a maintenance notice)
                    kwargs[name] = max(kwargs[name], waits + SLACK_SECONDS)
        pool.max_connections += holds
        pool.connection_class(**kwargs)  # the values, as they will connect
    except (ValueError, TypeError, redis.RedisError) as exc:
        raise UsageError(f"{origin}: '{one_line(redact_url(url))}' is not a valid Redis URL "
                         f"({one_line(str(exc))})") from None
    return client


def redis_failure(exc: BaseException, client: Any, *, worked: bool = False) -> str:
    """A Redis failure in one line, with the likeliest cause. ``worked``: the connection had
    answered before (a server that stopped or restarted, never a TLS mismatch: the TLS hints
    are for a first connection only). Over TLS: a certificate the
    client does not trust (the CA to name with ``ssl_ca_certs=``, or ``ssl_cert_reqs=none`` for
    a test), a certificate for another host name, a server that ends the session (it wants a
    client certificate), or a server that is plain Redis (the TLS handshake meets no TLS: it
    looks like a timeout from one side and a dropped connection from the other)."""
    text = str(exc)
    pool = getattr(client, "connection_pool", None)
    connection = getattr(pool, "connection_class", None)
    tls = isinstance(connection, type) and connection.__name__ == "SSLConnection"
    lowered = text.lower()
    if worked:
        hint = "it answered before: did Redis stop or restart?"
    elif tls and "certificate verify failed" in lowered and "hostname mismatch" in lowered:
        hint = ("a TLS certificate problem: the server's certificate is not for this host "
                "name; connect by a name it holds (or ?ssl_check_hostname=false, for a test)")
    elif tls and "certificate verify failed" in lowered:
        hint = ("a TLS certificate problem: the server's certificate is not signed by a CA "
                "this machine trusts; name that CA with ?ssl_ca_certs=/path/to/ca.pem (or "
                "?ssl_cert_reqs=none to skip the check, for a test only)")
    elif tls and ("certificate required" in lowered or "violation of protocol" in lowered
                  or "reset by peer" in lowered):  # (TLS 1.3: refused after the handshake)
        hint = ("the TLS server ended the session: does it want a client certificate? "
                "(?ssl_certfile=/path/cert.pem&ssl_keyfile=/path/key.pem)")
    elif tls and any(word in text for word in ("Timeout", "SSL", "EOF", "handshake")):
        hint = "rediss:// speaks TLS: if this server is plain Redis, use redis://"
    elif not tls and any(word in text for word in ("Connection closed", "reset", "reading")):
        hint = "is Redis running, and does it want TLS? (then use rediss://)"
    else:
        hint = "is Redis running, and the URL right?"
    return f"redis: {text} ({hint})"
