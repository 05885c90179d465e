"""``configsync sync``: wire a Mirror, a Redis connection (or an embedded server) and a Daemon."""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import redis

from .embedded import RedisServer, free_port
from .errors import ConfigsyncError, GitError, UsageError
from .git import GitRepo, Mirror
from .loader import YamlError, load_yaml
from .logs import configure, kv, logger, redact_url
from .messages import plural
from .model import RepoSettings, is_dev_namespace
from .redis_url import check_redis_url, from_url
from .refwatch import watch_refs
from .schema import SCHEMA_MODULES_ENV, allowed_schema_modules
from .store import Store
from .sync import Daemon, install_stop_handlers

__all__ = ["Source", "default_workdir", "run_sync"]


@dataclass(frozen=True, slots=True)
class Source:
    """Where the daemon fetches from: a URL, or a local repository's absolute path (with its
    git folder when it has a working tree: the default workdir lives there)."""

    url: str
    git_dir: Path | None = None

    @property
    def local(self) -> bool:
        """A repository on this machine (its refs can be watched)."""
        return os.path.isabs(self.url)

    @property
    def tree(self) -> Path | None:
        """The local working tree (a config tree nothing is ever imported from)."""
        return Path(self.url) if self.git_dir is not None else None


def _source(repo: str | None) -> Source:
    """A remote URL as given, or a local repository (default: the one the command runs in)."""
    if repo is not None and ("://" in repo or (":" in repo and not os.path.exists(repo))):
        return Source(repo)  # a URL, or scp-like user@host:path
    if repo is not None and not Path(repo).exists():
        raise UsageError(f"no such repository: {repo}")
    with GitRepo(repo or ".") as local:
        if local.is_shallow():  # git refuses to fetch from it: say why, and what to run
            raise UsageError(
                f"{local.top} is a shallow clone (git clone --depth, the default of "
                "actions/checkout): configsync needs the branch's whole history (versions "
                "count commits); run `git fetch --unshallow` there, or pass --repo with the "
                "remote's URL")
        if local.bare:
            return Source(str(local.top.resolve()))
        return Source(str(local.top.resolve()), local.git_dir.resolve())


def default_workdir(source: Source) -> Path:
    """Where the mirror and the embedded Redis live unless ``--workdir`` says: inside a local
    repository's git folder (``.git/configsync``: never in its working tree, so ``git status``
    stays clean), else ``$XDG_STATE_HOME/configsync/<name>-<hash of the URL>`` (by default
    ``~/.local/state``). Credentials in a URL do not change the hash."""
    if source.git_dir is not None:
        return source.git_dir / "configsync"
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    clean = redact_url(source.url)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", clean.rstrip("/").rsplit("/", 1)[-1]
                  .rsplit(":", 1)[-1].removesuffix(".git")).strip("-.") or "repo"
    digest = hashlib.sha256(clean.encode()).hexdigest()[:12]
    return base / "configsync" / f"{name}-{digest}"


class WorkdirTaken(ConfigsyncError):
    """Another daemon holds this daemon's workdir lock now (the workdir was removed and a
    second ``configsync sync`` made it again): this one stops (DESIGN.md invariant 9)."""


class _Workdir:
    """What the daemon keeps under its workdir besides the mirror (which makes itself anew at
    each fetch, see ``Mirror.repair``): the lock file, held for the daemon's lifetime, and
    the embedded Redis's folder with ``redis.url``. :meth:`upkeep` runs before each poll: a
    workdir removed or emptied under a running daemon (a tmp cleaner, an operator) gets them
    back, each logged (``event=workdir_restored``; DESIGN.md invariant 9), but only where
    the workdir's parent folder exists: nothing above the workdir is ever made again (a
    repository moved away or removed keeps its path free; ``event=source_gone`` or
    ``workdir_gone``, logged once, and the poll waits until it is back). ``source``: the
    local repository the daemon fetches from, when it is one."""

    def __init__(self, path: Path, source: Path | None = None) -> None:
        self.path = path
        self.source = source
        self.handle: IO[str] | None = None
        self.server: RedisServer | None = None  # the embedded one, when it is ours
        self.gone: str | None = None  # "source_gone" or "workdir_gone" while it lasts

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    SERVED = "served.json"
    """``WORKDIR/served.json``: ``[[redis, namespace, source, branch], ...]``, what this workdir's
    daemon has served (URLs without credentials). It outlives Redis's data, so a daemon wins
    its namespace back from another source's first start after a flush (invariant 5)."""

    def _served(self) -> list[list[str]]:
        try:
            found = json.loads((self.path / self.SERVED).read_text())
        except (OSError, ValueError):
            return []
        return [e for e in found if isinstance(e, list) and len(e) == 4
                and all(isinstance(x, str) for x in e)] if isinstance(found, list) else []

    def served(self, *entry: str) -> bool:
        """Whether this workdir's daemon served ``(redis, namespace, source, branch)``."""
        return list(entry) in self._served()

    def record(self, *entry: str) -> None:
        """Note ``(redis, namespace, source, branch)`` as served (written atomically; a
        failure is a warning: only a later reclaim depends on it)."""
        found = self._served()
        if list(entry) in found:
            return
        target = self.path / self.SERVED
        try:
            temp = target.with_suffix(".tmp")
            temp.write_text(json.dumps([*found, list(entry)]) + "\n")
            temp.replace(target)
        except OSError as exc:
            logger.warning(kv("workdir_unwritable", file=target, error=exc.strerror or exc))

    def lock(self, *, parents: bool = True) -> None:
        """Hold ``WORKDIR/lock``: two daemons on one workdir would share a mirror and an
        embedded Redis's files. UsageError when another daemon holds it. ``parents``: make
        the folders above the workdir too (at the start only)."""
        try:
            self.path.mkdir(parents=parents, exist_ok=True)
            handle = (self.path / "lock").open("a+")
        except OSError as exc:
            raise UsageError(f"cannot use {self.path} as the workdir: {exc.strerror or exc} "
                             "(pass --workdir)") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise UsageError(f"another configsync sync (pid {holder}) is using {self.path}; "
                             "stop it or pass a different --workdir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.close()
        self.handle = handle

    def _lock_lost(self) -> bool:
        if self.handle is None:
            return False
        try:
            return not os.path.samestat(os.fstat(self.handle.fileno()),
                                        os.stat(self.path / "lock"))
        except FileNotFoundError:
            return True

    def _missing(self) -> str | None:
        """Why the workdir cannot be made again now (its source or its parent is gone, logged
        once), else None (logged once when it is back)."""
        if self.source is not None and not self.source.exists():
            gone: str | None = "source_gone"
        elif not self.path.is_dir() and not self.path.parent.is_dir():
            gone = "workdir_gone"
        else:
            gone = None
        if gone != self.gone:
            if gone is not None:
                logger.warning(kv(gone, source=self.source, workdir=self.path,
                                  waiting="until it is back at that path (moved back, "
                                  "cloned again); nothing is made in its place"))
            elif self.gone is not None:
                logger.info(kv(self.gone.replace("_gone", "_back"), workdir=self.path))
            self.gone = gone
        return gone

    def hold(self) -> None:
        """Keep the lock: a lock file removed (or replaced) is made and locked again; when
        another daemon locked the new one first, raise WorkdirTaken (this one stops: two
        daemons never share a workdir). Nothing when the workdir cannot be made again."""
        if not self._lock_lost() or self._missing() is not None:
            return
        try:
            self.lock(parents=False)
        except UsageError:
            self.close()
            try:
                holder = (self.path / "lock").read_text().strip() or "?"
            except OSError:
                holder = "?"
            raise WorkdirTaken(f"another configsync sync (pid {holder}) took the workdir "
                               f"{self.path} (it was removed and made again): this daemon "
                               "stops, two never share one") from None
        logger.warning(kv("workdir_restored", restored="lock", workdir=self.path))

    def upkeep(self) -> None:
        """Make again what was lost: the lock file (locked anew: a second daemon started
        now is refused again; WorkdirTaken when one took it) and the embedded Redis
        (restarted empty on its port only when its own data folder was removed: it could no
        longer save, and refuses writes once a save fails; the daemon rebuilds the state
        from git, agents reconnect; a folder moved away with its repository keeps the
        server's files and its data). With the source or the workdir's parent gone, raise
        GitError (source) or OSError (workdir): the poll waits. Raises OSError."""
        gone = self._missing()
        if gone == "source_gone":
            raise GitError(f"the repository {self.source} is gone (moved or removed): waiting "
                           "for it to be back at that path")
        if gone is not None:
            raise OSError(f"the workdir {self.path} and its parent folder are gone: waiting "
                          "for the parent to be back (nothing above the workdir is made)")
        self.hold()
        server = self.server
        if server is not None and server.folder_lost():
            logger.warning(kv("workdir_restored", restored="embedded_redis",
                              dir=server.directory, note="its folder was removed: restarted "
                              "empty on its port; the state is rebuilt from git"))
            try:
                self.path.mkdir(exist_ok=True)
                server.restart()
            except ConfigsyncError as exc:
                raise OSError(str(exc)) from None
        if server is not None and not (self.path / "redis.url").exists():
            self.path.mkdir(exist_ok=True)
            (self.path / "redis.url").write_text(server.url + "\n")


def _branch(mirror: Mirror, requested: str | None, *, once: bool,
            namespace_given: bool) -> tuple[str, bool]:
    """``requested``, else the remote's default branch, and whether the remote answered. A
    branch the remote lacks is a usage error that lists the ones it has. With the remote
    unreachable (and not ``once``) the daemon starts on the branch its mirror already holds,
    or on ``--branch`` when ``--namespace`` is given too (nothing else must be read from the
    remote), and retries the remote."""
    try:
        refs = mirror.remote_refs()
    except GitError:
        known = requested or mirror.recorded_branch()
        if once or known is None or not (mirror.has_branch(known)
                                         or (requested and namespace_given)):
            raise
        return known, False  # the daemon's loop says the remote is unreachable, once
    shown = redact_url(mirror.url)
    if not refs.branches and refs.tracking:  # a clone, its HEAD detached (issue 17)
        named = [t for t in refs.tracking if t.partition("/")[2] == requested]
        raise ConfigsyncError(
            f"{shown} has no local branch{' (its HEAD is detached)' if refs.detached else ''}"
            f", only remote-tracking ones ({', '.join((named or list(refs.tracking))[:5])}): "
            f"check one out there (git checkout {requested or 'BRANCH'}), or pass --repo the "
            "remote it was cloned from")
    if not refs.branches:
        raise ConfigsyncError(f"{shown} has no branches yet: commit (or push) a first change "
                              "to it")
    listed = ", ".join(refs.branches[:20]) + (
        f" and {len(refs.branches) - 20} more" if len(refs.branches) > 20 else "")
    branch = requested or refs.default or (refs.branches[0] if len(refs.branches) == 1
                                           else None)
    if branch is None:
        raise UsageError(f"{shown} names no default branch (its HEAD is detached, or names a "
                         f"branch it does not have); pass --branch (it has: {listed})")
    if branch not in refs.branches:
        raise UsageError(f"{shown} has no branch {branch}; it has: {listed} (pass --branch)")
    mirror.record_branch(branch)
    return branch, True


NAMESPACE_LOOKBACK = 200
"""How many first-parent commits back the daemon looks for a valid ``configsync.yaml``."""


def _namespace(mirror: Mirror, branch: str) -> str:
    """``namespace:`` of the newest commit on ``branch`` whose ``configsync.yaml`` is valid.
    Never a guess: a head whose settings are broken must not send the daemon into another
    team's namespace (``default``), so with none valid in the last NAMESPACE_LOOKBACK commits
    this is an error that asks for ``--namespace``."""
    commits = mirror.first_parent_log(None, mirror.head(branch), limit=NAMESPACE_LOOKBACK)
    limit = RepoSettings().limits.max_file_bytes
    for newer, info in enumerate(reversed(commits)):
        entries = mirror.ls_tree(info.sha, ["configsync.yaml"])
        if not entries or not entries[0].is_file or entries[0].size > limit:
            continue
        raw = next(mirror.read_blobs([entries[0].sha]))[1]
        try:
            namespace = RepoSettings.model_validate(load_yaml(raw).data).namespace
        except (YamlError, ValueError):
            continue
        if is_dev_namespace(namespace):  # invalid too (validate's error): never a daemon's
            continue
        if newer:
            logger.warning(kv("namespace_from_older_commit", namespace=namespace,
                              commit=info.sha[:12], reason="configsync.yaml at the head is "
                              "missing or invalid"))
        return namespace
    raise ConfigsyncError(f"cannot tell which namespace to write: no valid configsync.yaml in "
                          f"the last {plural(len(commits), 'commit')} of {branch}; fix it, or pass "
                          "--namespace")


def _embedded(workdir: Path, stack: ExitStack, once: bool) -> RedisServer:
    """The embedded redis-server under ``workdir``: on the port it had last time, and the very
    server that still runs there when an earlier daemon was killed (the workdir lock says no
    other daemon uses it now); else a new one, on that port when it is free."""
    url_file = workdir / "redis.url"
    port = None
    if url_file.exists():
        try:
            port = int(url_file.read_text().rsplit(":", 1)[1].split("/")[0])
        except (ValueError, IndexError):
            port = None
    server = RedisServer(workdir / "redis", port=port or free_port())
    adopted = port is not None and server.adopt()
    if not adopted:
        try:
            server.start()
        except ConfigsyncError:
            if port is None:
                raise
            server = RedisServer(workdir / "redis", port=free_port()).start()
    stack.callback(server.stop)
    url_file.write_text(server.url + "\n")
    logger.info(kv("embedded_redis", url=server.url, dir=(workdir / "redis").resolve(),
                   adopted="true" if adopted else None,
                   agents=None if once else f"CONFIGSYNC_REDIS_URL={server.url}"))
    return server


def release_stdin() -> None:
    """Reopen fd 0 on /dev/null: a long-running command never reads standard input, and a
    module it imports (a ``schema:``) that reads it must find end-of-file, not block the
    process on a terminal or a pipe left open (issue 17)."""
    try:
        null = os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return
    if null != 0:
        os.dup2(null, 0)
        os.close(null)
    if sys.stdin is None:  # (fd 0 was closed at start: `sys.stdin` reads /dev/null now)
        sys.stdin = open(0, closefd=False)  # (lives as long as the process)


def run_sync(args: argparse.Namespace) -> int:
    configure(log_format=args.log_format)
    release_stdin()
    redis_url, origin = args.redis, "--redis"
    if not redis_url:
        redis_url, origin = os.environ.get("CONFIGSYNC_REDIS_URL"), "CONFIGSYNC_REDIS_URL"
        if redis_url is not None and not redis_url.strip():
            raise UsageError("CONFIGSYNC_REDIS_URL is set but empty: give it a URL, or unset "
                             "it for the embedded Redis")
    if redis_url:  # a usage mistake is said before anything runs
        check_redis_url(redis_url, origin)
    _token(args.token_env)
    webhook_secret = _webhook_secret(args)
    source = _source(args.repo)
    workdir = Path(args.workdir).absolute() if args.workdir else default_workdir(source)
    created = not workdir.exists()
    stopping = threading.Event()
    install_stop_handlers(stopping)  # from the start: SIGTERM during ls-remote stops it too
    with ExitStack() as stack:
        daemon: Daemon | None = None
        try:
            sock = starting = None
            if args.listen is not None:  # bound first: a port in use is said before anything
                from .server import StartingServer, bind

                sock = bind(*args.listen)
                stack.callback(sock.close)
                starting = StartingServer(sock)  # /healthz answers while the daemon starts
                starting.start()
                stack.callback(starting.stop)
            daemon, redis_url, origin = _start(args, source, workdir, redis_url, origin, stack,
                                               stopping)
            if sock is not None and starting is not None:
                starting.stop()
                _serve(daemon, sock, redis_url, origin, webhook_secret, stack)
            if not args.once and source.local:  # a push there syncs at once
                stack.callback(watch_refs(Path(source.url), daemon.request_sync).stop)
            return daemon.run(interval=args.interval, once=args.once)
        except WorkdirTaken:
            created = False  # the workdir is the other daemon's now: never removed
            raise
        except ConfigsyncError:
            if not stopping.is_set():
                raise
            logger.info(kv("stopped"))  # told to stop while starting: no error
            return 0
        finally:
            stack.close()  # the lock, the mirror, the embedded Redis
            if created and (daemon is None or not daemon.synced):
                shutil.rmtree(workdir, ignore_errors=True)  # nothing of value was made


def _webhook_secret(args: argparse.Namespace) -> str | None:
    """The secret in ``--webhook-secret-env``'s variable (never in argv, never logged)."""
    if args.listen is not None and args.once:
        raise UsageError("--listen serves while the daemon runs: not with --once")
    name = args.webhook_secret_env
    if name is None:
        return None
    if args.listen is None:
        raise UsageError("--webhook-secret-env needs --listen (the address webhooks reach)")
    secret = os.environ.get(name)
    if not secret or not secret.strip():  # (white space around it is stripped by the Server)
        raise UsageError(f"--webhook-secret-env {name}: the environment variable {name} is "
                         "not set (or empty)")
    return secret


def _serve(daemon: Daemon, sock: socket.socket, redis_url: str, origin: str,
           webhook_secret: str | None, stack: ExitStack) -> None:
    """Start the HTTP server (``--listen``) in its own thread, stopped before Redis is."""
    from .metrics import Metrics
    from .server import Server

    daemon.metrics = Metrics()
    server = Server(daemon, sock, redis_url=redis_url, origin=origin, metrics=daemon.metrics,
                    webhook_secret=webhook_secret)
    server.start()
    stack.callback(server.stop)


def _token(name: str | None) -> str | None:
    """The token in environment variable ``name`` (``--token-env``)."""
    if name is None:
        return None
    token = os.environ.get(name)
    if not token:
        raise UsageError(f"--token-env {name}: the environment variable {name} is not set "
                         "(or empty)")
    return token


def _start(args: argparse.Namespace, source: Source, workdir: Path, redis_url: str | None,
           origin: str, stack: ExitStack, stopping: threading.Event
           ) -> tuple[Daemon, str, str]:
    """Everything before the first poll: lock, mirror, branch, Redis, namespace; the daemon,
    and the Redis URL it writes to (with where it came from)."""

    def unless_stopping() -> None:
        if stopping.is_set():
            raise ConfigsyncError("stopped while starting")

    kept = _Workdir(workdir, Path(source.url) if source.local else None)
    kept.lock()
    stack.callback(kept.close)
    token = _token(args.token_env)
    if source.url.startswith("http://") and (token or "@" in source.url.split("/")[2]):
        logger.warning(kv("insecure_credentials", source=redact_url(source.url),
                          hint="http:// sends the password in clear text: use https://"))
    mirror = Mirror(workdir / "mirror", source.url, timeout=args.fetch_timeout, token=token)
    stack.callback(mirror.close)
    mirror.stop = stopping
    branch, reachable = _branch(mirror, args.branch, once=args.once,
                                namespace_given=args.namespace is not None)
    unless_stopping()
    if not redis_url:
        kept.server = _embedded(workdir, stack, args.once)
        redis_url, origin = kept.server.url, "the embedded Redis"
        unless_stopping()
    client: redis.Redis = from_url(redis.Redis, redis_url, origin, socket_timeout=10,
                                   socket_connect_timeout=5, health_check_interval=30)
    stack.callback(client.close)
    namespace = args.namespace
    if namespace is None:
        try:
            if reachable:
                mirror.fetch(branch)
        except GitError:  # the daemon's loop retries, and says so; the mirror has it
            if args.once or not mirror.has_branch(branch):
                raise
        namespace = _namespace(mirror, branch)
    unless_stopping()
    daemon = Daemon(mirror=mirror, store=Store(client, namespace), branch=branch,
                    keep=args.keep, adopt=args.adopt,
                    # forking is safe only without threads; --listen runs the server's (issue 12)
                    jobs=1 if args.listen is not None else os.cpu_count() or 1,
                    repo_root=source.tree, tune_gc=True, stopping=stopping)
    daemon.upkeep, daemon.guard = kept.upkeep, kept.hold
    served = (redact_url(redis_url), namespace, daemon.source, branch)
    daemon.served_before = kept.served(*served)
    daemon.on_served = lambda: kept.record(*served)
    timing = {"once": "true"} if args.once else {"interval": f"{args.interval:g}s"}
    # the allow-list is the production recommendation (README "Your own fields"): said
    # at start, `any` when unset (any installed module may be imported for `schema:`)
    allowed = ",".join(allowed_schema_modules()) or f"any (set {SCHEMA_MODULES_ENV})"
    logger.info(kv("started", source=redact_url(source.url), branch=branch,
                   redis=redact_url(redis_url), namespace=namespace, workdir=workdir,
                   keep=args.keep, **timing, schema_modules=allowed))
    return daemon, redis_url, origin
