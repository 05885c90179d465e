"""``configsync dev``: the working tree, published to a dev namespace at every save.

A watchdog observer watches the config tree (``configsync.yaml``, ``.gitattributes``,
``agents/``, ``prompts/``); a burst of saves settles for DEBOUNCE_SECONDS, then the whole tree
is checked (``check_tree`` over a ``FolderSource``, as ``configsync validate`` does). Errors
are printed at once (``file:line:column: message``) and nothing is written; a valid tree is
published through the daemon's own store code: one ``Store.commit_transaction`` per publish,
one ``applied`` event, each agent's version counted on from what the namespace holds (so a
restart goes on numbering), ``commit`` ``worktree``.

Who owns a namespace is decided by its name, which survives the loss of Redis's data (issue
17): ``configsync dev`` writes only dev namespaces, whose name ends in ``-dev``
(``model.is_dev_namespace``), and a sync daemon never writes one (``Daemon``). On top of the
name, a dev namespace's state says ``source: dev:<absolute path>``; ``configsync dev`` refuses
(exit 2) a namespace whose state a ``configsync sync`` daemon wrote, and a daemon that finds a
dev state in its own namespace (an older configsync dev, after a flush) rebuilds it from git.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import redis
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .errors import ConfigsyncError, UsageError
from .git import GitRepo, config_value
from .loader import load_yaml
from .logs import configure, kv, logger, one_line
from .messages import plural
from .model import DEV_NAMESPACE_SUFFIX, is_dev_namespace, namespace_problem
from .redis_url import check_redis_url, from_url, redis_failure
from .repo import SETTINGS_FILE, FolderSource, Root, find_root, is_config_path
from .snapshot import Record, checksum
from .store import CONTRACT_VERSION, AgentChange, Event, Store, Write
from .sync import DEV_COMMIT, DEV_SOURCE_PREFIX, install_stop_handlers, utcnow
from .sync_cli import _embedded, release_stdin
from .validate import ERROR, Report, check_tree

__all__ = ["DEV_COMMIT", "DEV_SOURCE_PREFIX", "Publisher", "dev_namespace_problem", "run_dev"]
DEBOUNCE_SECONDS = 0.15
"""A burst of saves (an editor's temp file, write and rename) is checked once, this long after
the last one."""
KEEP = 100
"""History versions kept per agent in a dev namespace."""


@dataclass(frozen=True, slots=True)
class Published:
    """What one publish did: agents written (id, version) and agents deleted."""

    applied: list[tuple[str, int]]
    deleted: list[str]


def dev_namespace_problem(namespace: str, production: str | None = None) -> str | None:
    """Why ``configsync dev`` refuses ``namespace`` (a one-line message), or None: it is no
    dev namespace (its name does not end in ``-dev``); ``production`` is the namespace the
    repository's configsync.yaml names, which the message points at when they are the same."""
    if is_dev_namespace(namespace):
        return None
    whose = (" (configsync.yaml's: the one its sync daemon writes)"
             if namespace == production else "")
    return (f"namespace {namespace!r}{whose} is no dev namespace: configsync dev writes only "
            f"namespaces whose name ends in {DEV_NAMESPACE_SUFFIX}, which a sync daemon never "
            f"writes, so an agent in production is never served a working tree (pass "
            f"--namespace {namespace[:100 - len(DEV_NAMESPACE_SUFFIX)]}{DEV_NAMESPACE_SUFFIX})")


class Publisher:
    """Writes a valid working tree's resolved configs to one dev namespace (a namespace that
    is no dev one is a UsageError, here and at every publish)."""

    def __init__(self, store: Store, folder: Path, author: str, *,
                 take_over: bool = False) -> None:
        """``take_over``: publish once over another working tree's dev state (then the
        namespace is this tree's, and the other ``configsync dev`` refuses at its next
        save); without it, that is a UsageError naming the other tree."""
        problem = dev_namespace_problem(store.keys.namespace)
        if problem is not None:
            raise UsageError(problem)
        self.store = store
        self.source = DEV_SOURCE_PREFIX + str(folder)
        self.author = author
        self.take_over = take_over

    def check_owner(self, state: dict[str, str]) -> None:
        """A namespace a ``configsync sync`` daemon writes is refused (UsageError), and so is
        one another working tree's ``configsync dev`` writes, unless :attr:`take_over`."""
        problem = dev_namespace_problem(self.store.keys.namespace)
        if problem is not None:
            raise UsageError(problem)
        source = state.get("source", "")
        if source.startswith(DEV_SOURCE_PREFIX) and source != self.source:
            if not self.take_over:
                ns = self.store.keys.namespace
                raise UsageError(
                    f"namespace {ns!r} is written by configsync dev in another working tree "
                    f"({source.removeprefix(DEV_SOURCE_PREFIX)}); stop that one, use another "
                    "--namespace, or pass --take-over to publish this tree there instead")
            return
        if "seen" in state and not source.startswith(DEV_SOURCE_PREFIX):
            ns = self.store.keys.namespace
            raise UsageError(
                f"namespace {ns!r} is written by configsync sync ({source or 'unknown source'}"
                f", branch {state.get('branch') or '?'}); configsync dev never publishes to a "
                "namespace agents read in production: pass another --namespace")

    def publish(self, report: Report, tries: int = 5) -> Published:
        """One transaction: every agent whose resolved config changed (by checksum) gets its
        next version, agents gone are deleted, one ``applied`` event. Nothing changed:
        nothing is written."""
        for _ in range(tries):
            state = self.store.state()
            self.check_owner(state)
            held = self.store.current()
            last = self.store.last_versions()
            now = utcnow()
            upserts = []
            for agent_id in sorted(report.configs):
                config = report.configs[agent_id]
                digest = checksum(config)
                before = held.get(agent_id)
                if before is not None and before.checksum == digest:
                    continue
                version = max(last.get(agent_id, 0),
                              before.version if before is not None else 0) + 1
                upserts.append(Record(agent_id, version, digest, config, DEV_COMMIT,
                                      self.author, now, "working tree", now))
            deleted = sorted(a for a in held if a not in report.configs)
            fresh = "seen" not in state or state.get("source") != self.source  # (taken over)
            if not upserts and not deleted and not fresh:
                return Published([], [])
            epoch = state.get("epoch") or uuid.uuid4().hex
            revision = int(state.get("revision") or 0) + 1
            fields = {"commit": DEV_COMMIT, "seen": DEV_COMMIT, "revision": str(revision),
                      "epoch": epoch, "branch": "", "source": self.source, "applied_at": now,
                      "heartbeat_at": now, "last_error": "",
                      "schema": report.settings.schema_ or "", "contract": CONTRACT_VERSION}
            changes = [AgentChange(r.agent_id, r.version) for r in upserts]
            changes += [AgentChange(a, held[a].version, deleted=True) for a in deleted]
            write = Write(fields, upserts=upserts, deletes=deleted,
                          history={r.agent_id: [r] for r in upserts},
                          trim={r.agent_id: r.version - KEEP for r in upserts},
                          events=[Event("applied", DEV_COMMIT, revision, epoch, changes)])
            if self.store.commit_transaction(write, expected_seen=state.get("seen")):
                self.take_over = False  # once: two trees left with --take-over must not fight
                return Published([(r.agent_id, r.version) for r in upserts], deleted)
        raise ConfigsyncError(f"another writer kept changing namespace "
                              f"{self.store.keys.namespace!r}; nothing was published")


def _author(folder: Path) -> str:
    name = config_value(folder, "user.name")
    email = config_value(folder, "user.email")
    if name and email:
        return f"{name} <{email}>"
    return name or email or "configsync dev"


def _workdir(root: Root) -> Path:
    """Where the embedded Redis of ``configsync dev`` lives: the git folder's
    ``configsync-dev`` (never the working tree), else the state directory."""
    try:
        with GitRepo(root.folder) as repo:
            if not repo.bare:
                return repo.git_dir.resolve() / "configsync-dev"
    except ConfigsyncError:
        pass
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    digest = hashlib.sha256(str(root.folder).encode()).hexdigest()[:12]
    return base / "configsync" / f"dev-{root.folder.name}-{digest}"


def _lock(workdir: Path, stack: ExitStack) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    handle = (workdir / "lock").open("a+")
    stack.callback(handle.close)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise UsageError(f"another configsync dev is running on this tree (its embedded Redis "
                         f"is in {workdir}); stop it, or pass --redis URL") from None


class _Saves(FileSystemEventHandler):
    """Notes the time of the last change to a config path under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.changed = threading.Event()
        self.last = 0.0

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [os.fsdecode(event.src_path)]
        if event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        for path in paths:
            rel = Path(os.path.relpath(path, self.root)).as_posix()
            if is_config_path(rel) or rel in ("agents", "prompts"):
                self.last = time.monotonic()
                self.changed.set()
                return


def _named_namespace(folder: Path) -> str | None:
    """The namespace the tree's configsync.yaml names (the production one), None when it
    cannot be read (the check says why)."""
    try:
        data = load_yaml((folder / SETTINGS_FILE).read_bytes()).data
    except (OSError, ConfigsyncError):
        return None
    found = data.get("namespace", "default") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


def run_dev(args: argparse.Namespace) -> int:
    configure()
    release_stdin()  # never read: a `schema:` module that reads it must not block
    if args.redis:
        check_redis_url(args.redis, "--redis")
    start = args.path or "."
    if not os.path.isdir(start):
        raise UsageError(f"no such directory: {start}")
    root = find_root(start)
    if not root.found:
        raise UsageError(f"no configsync.yaml in {os.path.abspath(start)} or the folders above "
                         "it: run `configsync init`, or give the config tree's folder")
    folder = root.folder.resolve()
    if args.namespace is not None:  # said before anything starts, whatever the tree holds
        problem = dev_namespace_problem(args.namespace, _named_namespace(folder))
        if problem is not None:
            raise UsageError(problem)
    # paths shown as the user would write them: from the PATH they gave
    shown = os.path.normpath(os.path.join(start, os.path.relpath(root.folder,
                                                                 os.path.abspath(start))))
    stopping = threading.Event()
    install_stop_handlers(stopping)
    out = sys.stdout
    with ExitStack() as stack:
        redis_url = args.redis
        if not redis_url:
            workdir = _workdir(root)
            _lock(workdir, stack)
            redis_url = _embedded(workdir, stack, once=args.once).url
        client: redis.Redis = from_url(redis.Redis, redis_url, "--redis", socket_timeout=10,
                                       socket_connect_timeout=5)
        stack.callback(client.close)
        author = _author(folder)
        publisher: Publisher | None = None
        failing = False

        def say(line: str) -> None:
            out.write(one_line(line) + "\n")  # every line escaped, whatever it holds
            out.flush()

        def step() -> bool:
            """Check the tree and publish it; True when it is valid."""
            nonlocal publisher, failing
            report = check_tree(FolderSource(folder), repo_root=folder)
            errors = 0
            for d in report.diagnostics:
                errors += d.severity == ERROR
                tag = "" if d.severity == ERROR else f"{d.severity}: "
                where = d.path if shown == "." else f"{shown}/{d.path}"
                say(f"{one_line(where)}:{d.line}:{d.column}: {tag}{one_line(d.message)}")
            if errors:
                say(f"not published: {plural(errors, 'error')}")
                failing = True
                return False
            if publisher is None:
                namespace = args.namespace or report.settings.namespace + DEV_NAMESPACE_SUFFIX
                problem = namespace_problem(namespace)
                if problem is not None:
                    raise UsageError(f"{namespace!r} {problem} (pass --namespace)")
                problem = dev_namespace_problem(namespace, report.settings.namespace)
                if problem is not None:
                    raise UsageError(problem)
                publisher = Publisher(Store(client, namespace), folder, author,
                                      take_over=args.take_over)
                logger.info(kv("dev", tree=folder, namespace=namespace,
                               redis=redis_url, once="true" if args.once else None))
            try:
                done = publisher.publish(report)
            except (redis.RedisError, OSError) as exc:
                raise ConfigsyncError(redis_failure(exc, client)) from exc
            for agent_id, version in done.applied:
                say(f"applied {agent_id} v{version}")
            for agent_id in done.deleted:
                say(f"deleted {agent_id}")
            if failing and not done.applied and not done.deleted:
                say("ok: nothing changed")
            failing = False
            return True

        if args.once:
            return 0 if step() else 1
        saves = _Saves(folder)
        observer = Observer()
        observer.name = "configsync-dev"
        try:
            observer.schedule(saves, str(folder), recursive=True)
            observer.start()
        except OSError as exc:
            raise ConfigsyncError(f"cannot watch {folder}: {exc.strerror or exc}") from None

        def stop_observer() -> None:
            observer.stop()
            observer.join(timeout=5)

        stack.callback(stop_observer)

        def attempt() -> None:
            """One check and publish; a failure other than a usage mistake (Redis away) is
            said and retried at the next save."""
            try:
                step()
            except ConfigsyncError as exc:
                if isinstance(exc, UsageError):
                    raise
                say(f"configsync dev: {one_line(str(exc))} (retried at the next save)")

        attempt()
        while not stopping.is_set():
            if not saves.changed.wait(0.1):
                continue
            while time.monotonic() - saves.last < DEBOUNCE_SECONDS and not stopping.is_set():
                time.sleep(0.02)
            saves.changed.clear()
            if stopping.is_set():
                break
            attempt()
        logger.info(kv("stopped"))
        return 0
