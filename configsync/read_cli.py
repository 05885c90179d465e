"""``configsync get`` and ``configsync watch``: read what the daemon wrote, through store.py.

Both find Redis as ``configsync sync`` does (``--redis``, else ``$CONFIGSYNC_REDIS_URL``; the
URL checked before anything connects), else the embedded Redis that ``configsync sync`` runs for
this repository (or for ``--workdir``) and the namespace from ``--namespace``, else from the
``configsync.yaml`` in the current folder or above it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import redis

from .embedded import find_embedded
from .errors import ConfigsyncError, CorruptDataError, UsageError
from .escape import json_text, one_line, yaml_text
from .loader import YamlError, load_yaml
from .logs import kv
from .messages import did_you_mean
from .model import RepoSettings
from .redis_url import check_redis_url, from_url, redis_failure
from .repo import SETTINGS_FILE, find_root
from .store import Store

__all__ = ["default_namespace", "event_line", "open_store", "redis_url_given", "run_get",
           "run_watch"]

STREAM_ID = re.compile(r"\$|\d+(-\d+)?")
BLOCK_MS = 1000
"""How long one XREAD waits; the loop then reads again (a stop is never waited on longer)."""


def redis_url_given(given: str | None, *, workdir: str | None = None,
                    repo: str | None = None,
                    unreachable: type[ConfigsyncError] = ConfigsyncError) -> tuple[str, str]:
    """The Redis a reading command reads, checked, with where it came from (for messages):
    ``--redis``, else ``$CONFIGSYNC_REDIS_URL``, else the embedded Redis that ``configsync
    sync`` runs for ``repo`` (default: the current folder's repository; ``workdir``: the one of
    ``sync --workdir``), found as :func:`configsync.embedded_url` finds it, and said on stderr.
    A usage error when nothing names one (or ``--redis`` and ``--workdir`` both do, or
    ``$CONFIGSYNC_REDIS_URL`` is set but empty);
    ``unreachable`` when the embedded one is not running."""
    if workdir and given:
        raise UsageError("--redis and --workdir each name a Redis: pass one")
    url, origin = given, "--redis"
    if not url and not workdir:
        url, origin = os.environ.get("CONFIGSYNC_REDIS_URL"), "CONFIGSYNC_REDIS_URL"
        if url is not None and not url.strip():  # (a secret that did not arrive: never
            # quietly the embedded Redis instead, as `sync` says too; issue 17)
            raise UsageError("CONFIGSYNC_REDIS_URL is set but empty: give it a URL, or unset "
                             "it for the embedded Redis")
    if not url or not url.strip():
        found = find_embedded(repo, workdir=workdir)
        if found is None:
            if workdir:
                raise UsageError(f"no Redis to read: --workdir {one_line(workdir)} holds no "
                                 "redis.url (is it the --workdir of a `configsync sync`?)")
            raise UsageError("no Redis to read: pass --redis URL or set CONFIGSYNC_REDIS_URL, "
                             "or start `configsync sync` in this repository: its embedded "
                             "Redis is found then (a daemon's own --workdir: pass it)")
        origin = f"the embedded Redis (from {found.file})"
        if not found.running:
            raise unreachable(f"{origin} is not running ({found.url} does not answer as it): "
                              "start `configsync sync`, or pass --redis URL")
        print(f"configsync: reading the embedded Redis {found.url} (from {found.file})",
              file=sys.stderr, flush=True)
        return found.url, origin
    check_redis_url(url, origin)
    return url, origin


def default_namespace(start: str = os.curdir) -> str:
    """``namespace:`` of the ``configsync.yaml`` in ``start`` or the nearest folder above."""
    root = find_root(start)
    path = root.folder / SETTINGS_FILE
    if not root.found:
        raise UsageError(f"no {SETTINGS_FILE} in this folder or above it: pass --namespace")
    try:
        return RepoSettings.model_validate(load_yaml(path.read_bytes()).data).namespace
    except (OSError, YamlError, ValueError):
        raise UsageError(f"cannot read the namespace from {path} (run `configsync validate`), "
                         "or pass --namespace") from None


@contextmanager
def open_store(args: argparse.Namespace, *, socket_timeout: float = 10,
               waits: float | None = None,
               unreachable: type[ConfigsyncError] = ConfigsyncError,
               suffix: str = "") -> Iterator[Store]:
    """A :class:`Store` for the Redis :func:`redis_url_given` finds (``args.redis``,
    ``args.workdir``) and ``args.namespace`` (else ``configsync.yaml``'s), closed after; a
    Redis failure inside becomes ``unreachable`` with the reason and ``suffix`` (a usage error
    for a command whose Redis is optional). ``waits``: the seconds one command blocks on
    purpose (see :func:`configsync.redis_url.from_url`)."""
    url, origin = redis_url_given(args.redis or None, workdir=getattr(args, "workdir", None),
                                  unreachable=unreachable)
    namespace = args.namespace or default_namespace()
    client: redis.Redis = from_url(redis.Redis, url, origin, socket_timeout=socket_timeout,
                                   socket_connect_timeout=5, waits=waits)
    try:
        yield Store(client, namespace)
    except redis.RedisError as exc:
        raise unreachable(redis_failure(exc, client) + suffix) from None
    finally:
        client.close()


def run_get(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        namespace = store.keys.namespace
        shown = one_line(args.agent)
        record = None
        if args.version is None:
            record = store.record(args.agent)  # (only its entry: another one may be bad)
        if record is None:
            last = store.last_versions()
            if args.agent not in last:
                known = store.agent_ids()
                hint = did_you_mean(args.agent, known)
                listed = ", ".join(known[:20]) + (
                    f" and {len(known) - 20} more" if len(known) > 20 else "")
                raise ConfigsyncError(
                    f"no agent {shown} in namespace {namespace}{hint or ''}"
                    + (f" (agents: {listed})" if known else " (it holds no agents)"))
            if args.version is None:
                raise ConfigsyncError(
                    f"agent {shown} was deleted (its last version is {last[args.agent]}); "
                    "pass --version N to read a kept version")
            record = store.version(args.agent, args.version)
            if record is None:
                kept = store.kept_versions(args.agent)
                where = (f"versions {kept[0]}-{kept[-1]} are kept" if len(kept) > 1 else
                         f"only version {kept[0]} is kept" if kept else "no version is kept")
                if args.version > last[args.agent]:
                    why = f"its last version is {last[args.agent]}"
                else:
                    why = "it was trimmed (the daemon keeps the last --keep versions)"
                raise ConfigsyncError(f"agent {shown} has no version {args.version} in Redis: "
                                      f"{why}; {where}")
    data = {name: getattr(record, name) for name in record.__dataclass_fields__}
    if args.format == "yaml":
        sys.stdout.write(yaml_text(data))
    else:
        sys.stdout.write(json_text(data))
    return 0


def _changes(event: dict[str, Any], agent: str | None) -> str | None:
    changes = event.get("changes")
    if changes is None:
        return f"({event.get('count')} changed, not listed)"
    shown = [f"{c['agent_id']}@{c['version']}" + ("(deleted)" if c["deleted"] else "")
             for c in changes if agent is None or c["agent_id"] == agent]
    return ",".join(shown)


def event_line(entry_id: str, event: dict[str, Any], agent: str | None = None) -> str:
    """One event as a line of text: stream id, then ``key=value`` (untrusted text quoted)."""
    kind = str(event.get("type"))
    line = f"{one_line(entry_id)} " + kv(
        kind, revision=event.get("revision"), commit=str(event.get("commit", ""))[:12],
        agents=_changes(event, agent) if kind == "applied" else None,
        error=event.get("error"))
    return one_line(line)


def _wanted(event: dict[str, Any], agent: str | None) -> bool:
    """With an AGENT filter: the applied events that changed it (or may have: a commit too
    big to list its changes), and rebuilds (every reader re-reads); never rejections."""
    if agent is None:
        return True
    if event.get("type") == "rebuilt":
        return True
    if event.get("type") != "applied":
        return False
    changes = event.get("changes")
    return changes is None or any(c.get("agent_id") == agent for c in changes)


class _Stop(Exception):
    """SIGTERM while watching: stop quietly."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def run_watch(args: argparse.Namespace) -> int:
    since = args.since
    if not STREAM_ID.fullmatch(since):
        raise UsageError(f"--since {one_line(since)!r} is not a stream id: give $ (only new "
                         "events), 0 (all kept events) or an id such as 1767323045000-0")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_term) if main_thread else None
    printed = 0
    try:
        with open_store(args, waits=BLOCK_MS / 1000) as store:
            # one command answered first, so that a failure after it is no first connection's
            after = store.last_event_id() if since == "$" else since
            if since != "$":
                store.redis.ping()
            while args.count is None or printed < args.count:
                try:
                    read = store.read_events(after, block_ms=BLOCK_MS)
                except redis.RedisError as exc:  # (Redis answered before: no TLS hint;
                    # that is for a first connection, issue 17)
                    raise ConfigsyncError(redis_failure(exc, store.redis, worked=True)) \
                        from None
                for entry_id, event in read:
                    after = entry_id
                    if isinstance(event, CorruptDataError):  # skipped, said on stderr
                        print(f"configsync: warning: skipped stream entry {one_line(entry_id)}"
                              f": {one_line(str(event))}", file=sys.stderr, flush=True)
                        continue
                    if not _wanted(event, args.agent):
                        continue
                    if args.format == "json":
                        line = json_text({"id": entry_id, "event": event}, indent=None,
                                         separators=(",", ":"))[:-1]
                    else:
                        line = event_line(entry_id, event, args.agent)
                    print(line, flush=True)
                    printed += 1
                    if args.count is not None and printed >= args.count:
                        break
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0

