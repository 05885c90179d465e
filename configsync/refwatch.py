"""The local trigger: a sync as soon as a local source's branch refs change.

When ``configsync sync --repo`` is a local repository (a bare one on the server that receives
pushes, or a clone), a watchdog observer watches where git keeps its branch refs: the common
git folder's ``refs/heads/`` (recursively), ``packed-refs`` and, with git's reftable backend,
``reftable/``. Any change there calls ``on_change`` (the daemon's ``request_sync``, which
ends the poll's wait at once and coalesces bursts, so nothing is debounced here). Polling
stays the backstop: a watch that cannot start (no inotify watches left, a folder that
vanished) is a warning, never an error, and a failure in the handler never reaches the
daemon's loop.

Nothing else in the git folder is watched: the daemon's own workdir (``.git/configsync``,
its mirror and embedded Redis) is written at every poll and must not trigger the next one.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from .errors import ConfigsyncError
from .git import GitRepo
from .logs import kv, logger

__all__ = ["RefWatch", "watch_refs"]


def _relevant(common: str, path: str) -> bool:
    """Whether ``path`` (an event's) is a branch ref, ``packed-refs`` or a reftable file; a
    ``.lock`` file is not (git renames it into place: that rename is the change)."""
    rel = os.path.relpath(path, common).replace(os.sep, "/")
    if rel.endswith(".lock"):
        return False
    return rel == "packed-refs" or rel.startswith(("refs/heads/", "reftable/")) or rel in (
        "refs/heads", "reftable")


class _Handler(FileSystemEventHandler):
    def __init__(self, common: str, on_change: Callable[[], None],
                 on_root: Callable[[], None]) -> None:
        self.common = common
        self.on_change = on_change
        self.on_root = on_root  # a watched folder itself was removed or moved
        self.failed = False

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (git itself reading refs) change nothing
        paths = [os.fsdecode(event.src_path)]
        if event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        if event.event_type in ("deleted", "moved") and any(
                os.path.relpath(p, self.common) in (".", "refs", "refs/heads", "reftable")
                for p in paths):
            self.on_root()
        if not any(_relevant(self.common, path) for path in paths):
            return
        try:
            self.on_change()
        except Exception as exc:  # never kill the observer thread; polling still runs
            if not self.failed:
                self.failed = True
                logger.warning(kv("local_trigger_failed", error=str(exc),
                                  fallback="polling"))


CHECK_SECONDS = 1.0
"""How often the watch looks whether the folders it watches are still the ones at their paths
(a repository removed and made again, or moved away and back); an event about a watched
folder itself makes it look at once."""


def _identity(paths: list[Path]) -> tuple[tuple[int, int], ...] | None:
    """Each path's (device, inode); None when one is missing."""
    try:
        return tuple((st.st_dev, st.st_ino) for st in (os.stat(p) for p in paths))
    except OSError:
        return None


class RefWatch:
    """A running watch (or none, when it could not start); :meth:`stop` ends it.

    A thread of its own keeps it true: when the watched folders are removed, replaced (``rm
    -rf`` and a new clone or ``git init --bare`` at the same path) or moved away, the watch is
    lost (``event=local_trigger_lost``, a sync is asked for at once, so the daemon's
    readiness and metrics tell within a second, and again at each look while it is missing,
    since it may have been back and gone again between two looks; polling carries on); when a
    repository is back
    at the path it is watched again (``event=local_trigger_restored``) and a sync is asked
    for, since its refs may have moved meanwhile."""

    def __init__(self, repo: Path, on_change: Callable[[], None]) -> None:
        self.repo = repo
        self.on_change = on_change
        self.observer: BaseObserver | None = None
        self.paths: list[Path] = []
        self.identity: tuple[tuple[int, int], ...] | None = None
        self.look = threading.Event()
        self.gone = threading.Event()  # an event said a watched folder itself went away
        self.stopping = threading.Event()
        self.keeper: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.observer is not None and self.observer.is_alive()

    def start(self, *, whole: bool = False) -> None:
        """Watch the repository's refs now. Raises OSError or ConfigsyncError when it cannot
        (with ``whole``, also when it has no ``refs/heads/`` or ``reftable/`` yet: a
        repository being made again)."""
        common = _common_dir(self.repo).resolve()
        watched = [common] + [common / sub for sub in ("refs/heads", "reftable")
                              if (common / sub).is_dir()]
        if whole and len(watched) == 1:
            raise ConfigsyncError(f"{common} has no refs yet")
        identity = _identity(watched)
        handler = _Handler(str(common), self.on_change, self._root_gone)
        observer = Observer()
        observer.name = "configsync-refwatch"
        try:
            observer.schedule(handler, str(common), recursive=False)  # packed-refs
            for folder in watched[1:]:
                observer.schedule(handler, str(folder), recursive=True)
            observer.start()
        except OSError:
            with contextlib.suppress(Exception):  # (it never started: nothing runs)
                observer.stop()
            raise
        self.observer, self.identity = observer, identity
        self.gone.clear()
        self.paths = [common / "packed-refs", *watched[1:]]

    def _root_gone(self) -> None:
        self.gone.set()
        self.look.set()

    def keep(self) -> None:
        """Start the thread that notices a lost watch and restores it."""
        self.keeper = threading.Thread(target=self._keep, name="configsync-refwatch-keeper",
                                       daemon=True)
        self.keeper.start()

    def _keep(self) -> None:
        while not self.stopping.is_set():
            self.look.wait(CHECK_SECONDS)
            self.look.clear()
            if self.stopping.is_set():
                return
            try:
                self._check()
            except Exception as exc:  # never raise in a thread: polling still runs
                logger.warning(kv("local_trigger_failed", error=str(exc), fallback="polling"))

    def _check(self) -> None:
        if self.observer is not None:
            watched = [self.paths[0].parent, *self.paths[1:]]
            # (an inode number is reused at once by a folder made again: the events tell)
            alive = self.observer.is_alive() and all(e.is_alive()
                                                     for e in self.observer.emitters)
            if alive and not self.gone.is_set() and _identity(watched) == self.identity:
                return
            self._stop_observer()
            logger.warning(kv("local_trigger_lost", repo=self.repo, reason="the repository "
                              "was removed, replaced or moved", fallback="polling"))
            self.on_change()  # a sync at once: readiness and metrics say it within a second
        try:
            self.start(whole=True)
        except (OSError, ConfigsyncError):
            if not self.repo.exists():  # (back for a moment and synced, gone again unseen:
                self.on_change()  # a sync says so; it fails at once, touching nothing)
            return  # not back yet: look again later
        logger.info(kv("local_trigger_restored", watching=",".join(map(str, self.paths))))
        self.on_change()

    def _stop_observer(self) -> None:
        observer, self.observer = self.observer, None
        if observer is None:
            return
        try:
            observer.stop()
            observer.join(timeout=5)
        except Exception as exc:  # stopping must not hide what the daemon returns
            logger.warning(kv("local_trigger_stop_failed", error=str(exc)))

    def stop(self) -> None:
        self.stopping.set()
        self.look.set()
        if self.keeper is not None:
            self.keeper.join(timeout=5)
            self.keeper = None
        self._stop_observer()


def _common_dir(repo: Path) -> Path:
    """The git folder that holds the branch refs (a worktree's refs are its main one's)."""
    with GitRepo(repo, search_parents=False) as local:
        return local.common_dir


def watch_refs(repo: Path, on_change: Callable[[], None]) -> RefWatch:
    """Watch the branch refs of the local repository ``repo`` (its top, or a bare one) and
    call ``on_change`` on every change. Never raises: a watch that cannot start is logged
    (``event=local_trigger_unavailable``) and the daemon keeps polling; one that is lost
    later is restored when the repository is back (see :class:`RefWatch`)."""
    watch = RefWatch(repo, on_change)
    try:
        watch.start()
    except (OSError, ConfigsyncError) as exc:
        logger.warning(kv("local_trigger_unavailable", repo=repo, error=str(exc),
                          fallback="polling only"))
        return watch
    logger.info(kv("local_trigger", watching=",".join(str(p) for p in watch.paths)))
    watch.keep()
    return watch
