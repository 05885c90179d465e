"""``configsync sync``: wire a Mirror, a Redis connection (or an embedded server) and a Daemon."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path

import redis

from .embedded import RedisServer, free_port
from .errors import ConfigsyncError, GitError, UsageError
from .git import GitRepo, Mirror
from .loader import YamlError, load_yaml
from .logs import configure, kv, logger, redact_url
from .model import RepoSettings
from .store import Store
from .sync import Daemon

__all__ = ["run_sync"]


def _source_url(repo: str | None) -> str:
    """A remote URL as given, or a local repository as an absolute path."""
    if repo is None:
        with GitRepo(".") as here:
            return str(here.top.resolve())
    if "://" in repo or (":" in repo and not os.path.exists(repo)):
        return repo  # a URL, or scp-like user@host:path
    path = Path(repo)
    if not path.exists():
        raise UsageError(f"no such repository: {repo}")
    return str(path.resolve())


def _namespace(mirror: Mirror, branch: str) -> str:
    head = mirror.head(branch)
    entries = mirror.ls_tree(head, ["configsync.yaml"])
    if entries and entries[0].is_file:
        raw = next(mirror.read_blobs([entries[0].sha]))[1]
        try:
            data = load_yaml(raw).data
            return RepoSettings.model_validate(data).namespace
        except (YamlError, ValueError):
            logger.warning(kv("namespace_unreadable", hint="configsync.yaml at the head is "
                              "invalid; using `default` (pass --namespace)"))
    return "default"


def _embedded(workdir: Path, stack: ExitStack) -> str:
    """Start the embedded redis-server under ``workdir`` (same port as last time if free)."""
    url_file = workdir / "redis.url"
    port = None
    if url_file.exists():
        try:
            port = int(url_file.read_text().rsplit(":", 1)[1].split("/")[0])
        except (ValueError, IndexError):
            port = None
    try:
        server = RedisServer(workdir / "redis", port=port or free_port()).start()
    except ConfigsyncError:
        if port is None:
            raise
        server = RedisServer(workdir / "redis", port=free_port()).start()
    stack.callback(server.stop)
    url_file.write_text(server.url + "\n")
    print(f"configsync: embedded redis at {server.url} (agents on this host: "
          f"CONFIGSYNC_REDIS_URL={server.url})", file=sys.stderr, flush=True)
    return server.url


def run_sync(args: argparse.Namespace) -> int:
    configure()
    workdir = Path(args.workdir)
    url = _source_url(args.repo)
    with ExitStack() as stack:
        mirror = Mirror(workdir / "mirror", url)
        stack.callback(mirror.close)
        redis_url = args.redis or os.environ.get("CONFIGSYNC_REDIS_URL") or _embedded(
            workdir, stack)
        client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5,
                                      health_check_interval=30)
        stack.callback(client.close)
        namespace = args.namespace
        if namespace is None:
            try:
                mirror.fetch(args.branch)
            except GitError as exc:  # the daemon retries; the mirror may know the branch
                if args.once or not mirror.has_branch(args.branch):
                    raise
                logger.warning(kv("remote_unreachable", error=str(exc)))
            namespace = _namespace(mirror, args.branch)
        daemon = Daemon(mirror=mirror, store=Store(client, namespace), branch=args.branch,
                        keep=args.keep, jobs=os.cpu_count() or 1)
        daemon.install_signal_handlers()
        logger.info(kv("started", source=redact_url(url), branch=args.branch,
                       redis=redact_url(redis_url), namespace=namespace, interval=args.interval,
                       once=args.once))
        return daemon.run(interval=args.interval, once=args.once)
