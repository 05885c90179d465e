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
    def __init__(self, common: str, on_change: Callable[[], None]) -> None:
        self.common = common
        self.on_change = on_change
        self.failed = False

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (git itself reading refs) change nothing
        paths = [os.fsdecode(event.src_path)]
        if event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        if not any(_relevant(self.common, path) for path in paths):
            return
        try:
            self.on_change()
        except Exception as exc:  # never kill the observer thread; polling still runs
            if not self.failed:
                self.failed = True
                logger.warning(kv("local_trigger_failed", error=str(exc),
                                  fallback="polling"))


class RefWatch:
    """A running watch (or none, when it could not start); :meth:`stop` ends it."""

    def __init__(self, observer: BaseObserver | None, paths: list[Path]) -> None:
        self.observer = observer
        self.paths = paths

    @property
    def active(self) -> bool:
        return self.observer is not None and self.observer.is_alive()

    def stop(self) -> None:
        if self.observer is None:
            return
        observer, self.observer = self.observer, None
        try:
            observer.stop()
            observer.join(timeout=5)
        except Exception as exc:  # stopping must not hide what the daemon returns
            logger.warning(kv("local_trigger_stop_failed", error=str(exc)))


def _common_dir(repo: Path) -> Path:
    """The git folder that holds the branch refs (a worktree's refs are its main one's)."""
    with GitRepo(repo, search_parents=False) as local:
        return local.common_dir


def watch_refs(repo: Path, on_change: Callable[[], None]) -> RefWatch:
    """Watch the branch refs of the local repository ``repo`` (its top, or a bare one) and
    call ``on_change`` on every change. Never raises: a watch that cannot start is logged
    (``event=local_trigger_unavailable``) and the daemon keeps polling."""
    observer: BaseObserver | None = None
    try:
        common = _common_dir(repo).resolve()
        handler = _Handler(str(common), on_change)
        observer = Observer()
        observer.name = "configsync-refwatch"
        observer.schedule(handler, str(common), recursive=False)  # packed-refs
        watched = [common / "packed-refs"]
        for sub in ("refs/heads", "reftable"):
            if (common / sub).is_dir():
                observer.schedule(handler, str(common / sub), recursive=True)
                watched.append(common / sub)
        observer.start()
    except (OSError, ConfigsyncError) as exc:
        if observer is not None:
            with contextlib.suppress(Exception):  # (it never started: nothing runs)
                observer.stop()
        logger.warning(kv("local_trigger_unavailable", repo=repo, error=str(exc),
                          fallback="polling only"))
        return RefWatch(None, [])
    logger.info(kv("local_trigger", watching=",".join(str(p) for p in watched)))
    return RefWatch(observer, watched)
