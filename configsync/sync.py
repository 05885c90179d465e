"""The sync daemon: merged commits become versioned snapshots in Redis, with change events.

Each poll fetches the branch into a local mirror, then walks its first-parent commits after
``state.seen``, one at a time (DESIGN.md invariants 2-5):

* :class:`Engine` turns one commit into a :class:`Step`: it validates the commit's tree
  incrementally against the last *applied* tree (``git diff-tree``; only changed files are read,
  only affected agents re-validated) and numbers the agents whose resolved config changed.
* :class:`Daemon` writes each step in one transaction guarded by a compare-and-set on
  ``state.seen``, so a crash leaves whole commits only and two daemons write each step once.
  With no state in Redis it rebuilds from the whole history in memory and writes the result in
  one transaction with a new epoch and one ``rebuilt`` event.
"""

from __future__ import annotations

import gc
import json
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import redis

from .backoff import Backoff
from .errors import ConfigsyncError, CorruptDataError, GitError, UsageError
from .git import Change, CommitInfo, GitRepo, Mirror
from .logs import kv, logger, redact_text, redact_url
from .messages import error_summary
from .model import is_dev_namespace
from .parallel import fork_map
from .redis_url import redis_failure
from .redis_values import last_error as rejection
from .repo import CONFIG_PATHS, SETTINGS_FILE, Entry, GitSource, git_kind
from .schema import tick_during_trials
from .snapshot import Record, checksum
from .store import CONTRACT_VERSION, AgentChange, Event, Store, Write
from .validate import Report, check_tree

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["DEV_COMMIT", "DEV_SOURCE_PREFIX", "Applied", "Daemon", "Engine", "Step",
           "SyncResult", "dev_namespace_refused", "error_summary", "install_stop_handlers"]



def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def unix_time(iso: str) -> float:
    """An ISO 8601 time with an offset (a commit's ``committed_at``) as Unix seconds; 0 when
    unreadable (for the metrics only)."""
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


@dataclass
class Applied:
    """The last applied tree, in memory: what Redis serves, plus what the next step needs."""

    commit: str | None = None
    report: Report | None = None
    versions: dict[str, tuple[int, str]] = field(default_factory=dict)  # present agents
    last_version: dict[str, int] = field(default_factory=dict)  # deleted agents too
    revision: int = 0


@dataclass
class Step:
    """What one commit does: applied (``applied`` set) or rejected (``error`` set)."""

    info: CommitInfo
    applied: Applied | None
    upserts: list[Record] = field(default_factory=list)
    deleted: list[tuple[str, int]] = field(default_factory=list)
    error: dict[str, Any] | None = None

    @property
    def summary(self) -> str:
        return error_summary(self.error or {})


class Engine:
    """Turns commits into steps: the one place versions are numbered (the daemon, and
    ``configsync history``, ``status`` and ``rollback`` over a local clone). Pure: reads git,
    never Redis. ``repo`` is the daemon's mirror or a local repository (a config tree in a
    subfolder is read through its :attr:`GitRepo.prefix`). ``repo_root`` is the source's
    working tree when it is local: a ``schema:`` module is never imported from it (nor from the
    working directory), whatever ``sys.path`` says (issue 8)."""

    def __init__(self, repo: GitRepo, *, jobs: int = 1, repo_root: Path | None = None) -> None:
        self.repo = repo
        self.jobs = jobs
        self.repo_root = repo_root

    def check(self, commit: str, entries: dict[str, Entry] | None = None,
              previous: Report | None = None, changed: set[str] | None = None) -> Report:
        """check_tree over ``commit``'s tree (incremental with ``previous`` and ``changed``)."""
        return check_tree(GitSource(self.repo, commit, entries), jobs=self.jobs,
                          repo_root=self.repo_root, previous=previous, changed=changed)

    def _entries(self, applied: Applied, commit: str,
                 pending: Mapping[str, Change] | None) -> tuple[dict[str, Entry], set[str]] | None:
        """The commit's config entries patched from the applied tree (by ``pending``, what
        changed since it, or else by ``git diff-tree``), and the changed paths (cost follows
        the change); None when a full listing is needed."""
        if applied.report is None or applied.commit is None:
            return None
        if pending is not None:
            changes: Iterable[Change] = pending.values()
        else:
            try:
                changes = self.repo.diff_tree(applied.commit, commit, CONFIG_PATHS)
            except GitError:  # the applied commit is gone from the mirror (a force-push)
                return None
        entries = dict(applied.report.entries)
        changed = set()
        for change in changes:
            changed.add(change.path)
            if change.status == "D":
                entries.pop(change.path, None)
            else:  # size unknown here: limits are checked after reading
                entries[change.path] = Entry(change.path, 0, git_kind(change.mode), change.sha)
        return entries, changed

    def walk(self, applied: Applied, since: str | None, head: str) -> tuple[int, Iterator[Step]]:
        """How many first-parent commits come after ``since`` up to ``head``, and their steps,
        in order, each from the last step that applied. One ``git log --raw`` says what every
        commit changed and one ``git cat-file`` reads every blob: a process or two per commit
        made a 5,000-commit rebuild take 45 s (issue 8). The caller stops iterating when it
        cannot write a step."""
        walked = self.repo.first_parent_changes(since, head, CONFIG_PATHS)
        pending: dict[str, Change] | None = {}
        if applied.commit is not None and since is not None and applied.commit != since:
            try:  # the last commit seen was rejected: start from what the applied tree lacks
                pending = {c.path: c for c in self.repo.diff_tree(applied.commit, since,
                                                                    CONFIG_PATHS)}
            except GitError:
                pending = None  # the applied commit is gone: full checks until one applies

        def steps(applied: Applied, pending: dict[str, Change] | None) -> Iterator[Step]:
            with self.repo.batch():
                for info, changes in walked:
                    if pending is not None:
                        pending.update((c.path, c) for c in changes)
                    step = self.step(applied, info, pending)
                    yield step
                    if step.applied is not None:
                        applied, pending = step.applied, {}

        return len(walked), steps(applied, pending)

    def step(self, applied: Applied, info: CommitInfo,
             pending: Mapping[str, Change] | None = None) -> Step:
        """What ``info`` does to ``applied``; ``pending``: what changed since the applied tree
        (None: ask ``git diff-tree``)."""
        try:
            return self._step(applied, info, pending)
        except (GitError, OSError):
            raise  # the mirror or the machine failed, not the commit: the poll is retried
        except Exception as exc:  # a bug must not stop the daemon (issue 17)
            # The last line of defence: whatever checking a commit raises rejects that commit,
            # the daemon keeps serving, and a rebuild's walk gets past it; the traceback goes
            # to the log (a bug to report), never hidden.
            logger.error(kv("check_failed", commit=info.sha[:12], error=type(exc).__name__),
                         exc_info=True)
            return Step(info, None, error={
                "commit": info.sha, "file": SETTINGS_FILE, "line": 1, "column": 1, "errors": 1,
                "message": f"checking this commit failed ({type(exc).__name__}: "
                           f"{redact_text(str(exc))}); configsync rejected it: please report it "
                           "with the traceback in the daemon's log"})

    def _step(self, applied: Applied, info: CommitInfo,
              pending: Mapping[str, Change] | None) -> Step:
        patched = self._entries(applied, info.sha, pending)
        if patched is None:
            report = self.check(info.sha)
        else:
            report = self.check(info.sha, patched[0], applied.report, patched[1])
        errors = report.errors
        if errors:
            first = errors[0]
            return Step(info, None, error={
                "commit": info.sha, "file": first.path, "line": first.line,
                "column": first.column, "message": first.message, "errors": len(errors)})
        looked_at = applied.versions if report.rechecked is None else report.rechecked
        deleted = [a for a in looked_at if a in applied.versions and a not in report.configs]
        if (len(deleted) >= 2 and 2 * len(deleted) > len(applied.versions)
                and not report.settings.allow_mass_delete):
            return Step(info, None, error={
                "commit": info.sha, "file": SETTINGS_FILE, "line": 1, "column": 1, "errors": 1,
                "message": f"refusing to delete {len(deleted)} of {len(applied.versions)} agents "
                           "in one commit; set `allow_mass_delete: true` to allow it"})
        versions = dict(applied.versions)
        last = dict(applied.last_version)
        before = applied.report.configs if applied.report is not None else {}
        upserts = []
        synced_at = utcnow()
        candidates = report.configs if report.rechecked is None else sorted(
            a for a in report.rechecked if a in report.configs)
        changed = [a for a in candidates if report.configs[a] is not before.get(a)]
        # (the incremental check reuses an unchanged agent's config object: skipped above)
        digests = fork_map(_checksums, [report.configs[a] for a in changed], jobs=self.jobs)
        for agent_id, digest in zip(changed, digests, strict=True):
            config = report.configs[agent_id]
            held = versions.get(agent_id)
            if held is not None and held[1] == digest:
                continue
            version = last.get(agent_id, 0) + 1
            versions[agent_id] = (version, digest)
            last[agent_id] = version
            upserts.append(Record(agent_id, version, digest, config, info.sha, info.author,
                                    info.committed_at, info.message, synced_at))
        gone = [(agent_id, versions.pop(agent_id)[0]) for agent_id in deleted]
        # the commit already served, applied again (back after a rejected one): no new revision
        revision = applied.revision + (info.sha != applied.commit)
        new = Applied(info.sha, report, versions, last, revision)
        return Step(info, new, upserts, gone)


DEV_SOURCE_PREFIX = "dev:"
"""``state.source`` of a namespace ``configsync dev`` wrote: ``dev:<absolute path>``."""
DEV_COMMIT = "worktree"
"""``state.commit`` (and ``seen``) of a namespace ``configsync dev`` wrote: no commit made it."""


CLAIMS = ("first", "adopt", "reclaim")
"""``state.claimed``: how the daemon that writes the namespace came to own it: ``first`` (it met
no state: a first start, or after Redis lost its data), ``adopt`` (``--adopt``), ``reclaim``
(won back from a dev state or from another source's ``first``: invariant 5)."""


def dev_namespace_refused(namespace: str) -> str:
    """Why a sync daemon refuses ``namespace``, a dev one (its name ends in ``-dev``)."""
    return (f"namespace {namespace!r} is a configsync dev namespace (its name ends in -dev): a "
            "sync daemon never writes one, --adopt or not; name the daemon's namespace "
            "otherwise (configsync.yaml's namespace:, or --namespace)")


def _dev_written(state: Mapping[str, str]) -> bool:
    """The state was written by ``configsync dev`` (its source, or its commit, says so)."""
    return ((state.get("source") or "").startswith(DEV_SOURCE_PREFIX)
            or DEV_COMMIT in (state.get("seen"), state.get("commit")))


def _checksums(configs: Sequence[Any]) -> list[str]:
    """RFC 8785 checksums (pure Python, so a commit that changes thousands of agents hashes
    them on every core, through :func:`fork_map`)."""
    return [checksum(config) for config in configs]


@dataclass(frozen=True, slots=True)
class SyncResult:
    head: str
    applied: bool  # the head is what Redis serves (False: rejected, or not confirmed yet)
    pending: bool = False  # the head is no fast-forward, seen once: the next fetch decides


class Daemon:
    """Keeps one namespace in Redis in step with one branch."""

    def __init__(self, *, mirror: Mirror, store: Store, branch: str = "main", keep: int = 100,
                 jobs: int = 1, adopt: bool = False, repo_root: Path | None = None,
                 tune_gc: bool = False, stopping: threading.Event | None = None) -> None:
        """A namespace follows one source and branch (``state.source``, ``state.branch``); a
        daemon for another one refuses to write unless ``adopt``, which takes it over once
        (DESIGN.md invariant 5). A dev namespace (``-dev``: ``model.is_dev_namespace``) is
        refused (UsageError); a state ``configsync dev`` wrote into this daemon's namespace
        (after a flush, by a configsync before issue 17) is replaced by a rebuild.
        ``repo_root``: the source's working tree, when it is local (see :class:`Engine`).
        ``tune_gc``: this process is the daemon (``configsync sync``), so it may tune the
        process-wide garbage collector (see :meth:`_settle`)."""
        if is_dev_namespace(store.keys.namespace):
            raise UsageError(dev_namespace_refused(store.keys.namespace))
        self.mirror = mirror
        self.store = store
        self.branch = branch
        self.adopt = adopt
        self.keep = keep
        self.engine = Engine(mirror, jobs=jobs, repo_root=repo_root)
        self.applied: Applied | None = None
        self.epoch: str | None = None
        self.recent: dict[str, Applied] = {}  # steps we computed, by commit: reused on a lost race
        self.stopping = stopping or threading.Event()
        mirror.stop = self.stopping  # a fetch in flight ends when the daemon is told to stop
        mirror.tick = self._heartbeat  # and heartbeat_at moves while a fetch takes long
        self.source = redact_url(mirror.url)
        self.unconfirmed: str | None = None  # a head that is no fast-forward, seen once
        self.tune_gc = tune_gc
        self.synced = False  # a sync has reached the state once (what a start makes is kept)
        self.wake = threading.Event()  # set by request_sync: the poll's wait ends at once
        self.metrics: Metrics | None = None  # set by `sync --listen`: in-memory updates only
        # set by `configsync sync`: before each poll, makes again what the daemon keeps under
        # its workdir when it was lost (the mirror makes itself again at each fetch)
        self.upkeep: Callable[[], None] | None = None
        # Who owns the namespace after Redis lost its data (invariant 5): `served_before` (set
        # by `configsync sync` from its workdir) says this daemon's source and branch served
        # the namespace; `on_served` records it there once a sync reached the state.
        self.served_before = False
        self.on_served: Callable[[], None] | None = None
        self.claimed = ""  # how the state it writes was claimed: state.claimed (CLAIMS)
        # set by `configsync sync`: before each commit is written, raises ConfigsyncError
        # when another daemon took this one's workdir (two never share one: it stops)
        self.guard: Callable[[], None] | None = None
        # Read-only status for other threads (the HTTP server): why the last sync attempt
        # failed ("redis_unavailable: ..."), None when it succeeded.
        self.last_failure: str | None = None

    # -- one poll ---------------------------------------------------------------------------

    def sync(self) -> SyncResult:
        """Fetch, then catch up to the branch head. Raises GitError, OSError or redis
        errors."""
        if self.upkeep is not None:
            self.upkeep()
        self.mirror.fetch(self.branch)
        if self.metrics is not None:
            self.metrics.fetched(time.time())
        result = self.catch_up(self.mirror.head(self.branch))
        if self.synced and self.on_served is not None:
            self.on_served()
            self.on_served = None
        return result

    def catch_up(self, head: str) -> SyncResult:
        """Apply the commits after ``state.seen`` up to ``head`` (a commit in the mirror).

        A head that is a descendant of ``state.seen`` is walked commit by commit. Any other
        head (a rewind to an ancestor, a force-push, or a ``seen`` this source does not have
        even after a fetch) is applied as one step from the last applied tree, but only when
        two consecutive fetches agree on it: a replica that answers an older head once must
        not regress anything (invariants 3 and 5).
        """
        refetched = False
        while True:
            state = self.store.state()
            if "seen" not in state:
                if self.rebuild(head, claimed="first"):
                    self.synced = True
                    return self._result(head)
                continue
            if _dev_written(state) or self._reclaimable(state):
                if not self._reclaim(state, head):
                    continue  # another writer moved the state: read it again
                self.synced = True
                return self._result(head)
            taking_over = self._follows(state)
            self.claimed = "adopt" if taking_over else state.get("claimed", "")
            upgrade = self._contract_upgrade(state)
            if upgrade is None:
                try:
                    self._load(state)  # (a rebuild below makes it anew)
                except CorruptDataError as exc:  # not what a daemon wrote: git repairs it
                    logger.error(kv("corrupt_redis", error=str(exc), repair="rebuilding"))
                    upgrade = "corrupt"
            seen = state["seen"]
            if seen != head and not refetched and not self.mirror.has_commit(seen):
                # Another daemon applied a commit this mirror has not fetched: fetch before
                # deciding, or a lagging mirror would look like a force-push (invariant 5).
                self.mirror.fetch(self.branch)
                head, refetched = self.mirror.head(self.branch), True
                continue
            if seen == head and not taking_over and upgrade is None:
                self.unconfirmed = None
                self.store.heartbeat(utcnow())
                self.synced = True
                return self._result(head)
            forward = seen != head and self.mirror.has_commit(seen) and \
                self.mirror.is_ancestor(seen, head)
            if not forward and seen != head and not taking_over and self.unconfirmed != head:
                self.unconfirmed = head
                logger.warning(kv("force_push_seen", branch=self.branch, seen=seen[:12],
                                  head=head[:12], applied_when="the next fetch agrees"))
                self.store.heartbeat(utcnow())
                return self._result(head, pending=True)
            self.unconfirmed = None
            if taking_over:
                logger.warning(kv("adopted", source=self.source, branch=self.branch,
                                  was_source=state.get("source"), was_branch=state.get("branch"),
                                  seen=seen[:12], head=head[:12]))
            if upgrade is not None:
                if upgrade != "corrupt":
                    logger.warning(kv("contract_upgrade",
                                      **{"from": upgrade, "to": CONTRACT_VERSION},
                                      commit=(state.get("commit") or "")[:12], head=head[:12]))
                if not self.rebuild(head, expected_seen=seen, claimed=self.claimed):
                    continue  # another daemon moved the state: read it again
                if taking_over:
                    self.adopt = False
                self.store.heartbeat(utcnow())
                self.synced = True
                return self._result(head)
            assert self.applied is not None
            if forward:
                total, steps = self.engine.walk(self.applied, seen, head)
            else:  # one step from the last applied tree to the head
                if not taking_over:
                    logger.warning(kv("force_push", branch=self.branch, seen=seen[:12],
                                      head=head[:12], was_serving=state.get("commit", "")[:12]))
                total, steps = 1, iter([self.engine.step(self.applied,
                                                         self.mirror.commit_info(head))])
            if not self._walk(steps, seen, total):
                continue  # another daemon moved the state: read it again
            if taking_over:
                self.adopt = False  # once: two daemons left with --adopt must not take turns
            self.store.heartbeat(utcnow())
            self.synced = True
            return self._result(head)

    def _follows(self, state: dict[str, str]) -> bool:
        """Whether this daemon takes the namespace over from another source or branch (with
        ``adopt``); without it, such a namespace is a UsageError that says what to do."""
        source, branch = state.get("source") or self.source, state.get("branch") or self.branch
        if (source, branch) == (self.source, self.branch):
            return False
        if self.adopt:
            return True
        ns = self.store.keys.namespace
        if source == self.source:
            raise UsageError(
                f"namespace {ns!r} follows branch {branch} of {source}; this daemon follows "
                f"{self.branch}: pass --branch {branch} to keep following {branch}, or --adopt "
                f"to move the namespace to {self.branch}")
        raise UsageError(
            f"namespace {ns!r} follows {source} (branch {branch}); this daemon syncs "
            f"{self.source} (branch {self.branch}), which may be a stale clone (or the namespace "
            "was taken over from elsewhere with --adopt): pass --adopt to make the namespace "
            "follow this source from now on, or use another --namespace")

    def _reclaimable(self, state: dict[str, str]) -> bool:
        """The state was written by another source's (or branch's) *first start* (``claimed:
        first``: it met no state, after Redis lost its data) on a namespace this daemon served
        (its workdir says so): this daemon wins it back (invariant 5). A state claimed any
        other way (``adopt``, ``reclaim``, none: before the field) is never reclaimed, so two
        daemons cannot take a namespace from each other in turns."""
        source, branch = state.get("source") or self.source, state.get("branch") or self.branch
        return (self.served_before and state.get("claimed") == "first"
                and (source, branch) != (self.source, self.branch))

    def _reclaim(self, state: dict[str, str], head: str) -> bool:
        """Win this daemon's namespace back from a state ``configsync dev`` wrote there, or
        one :meth:`_reclaimable` says is ours: the whole state rebuilt from git (a new epoch,
        one ``rebuilt`` event, ``claimed: reclaim``), under the compare-and-set on
        ``state.seen``; what it replaced is logged. False when another writer moved the state
        first. A dev state never stops a daemon (issue 17)."""
        logger.warning(kv("reclaimed", namespace=self.store.keys.namespace,
                          was_source=state.get("source") or "",
                          was_branch=state.get("branch") or "", was_commit=state.get("commit"),
                          was_revision=state.get("revision"), was_epoch=state.get("epoch"),
                          was_agents=self.store.agent_count(), head=head[:12]))
        if not self.rebuild(head, expected_seen=state["seen"], claimed="reclaim"):
            return False
        self.unconfirmed = None
        self.store.heartbeat(utcnow())
        return True

    def _contract_upgrade(self, state: dict[str, str]) -> str | None:
        """The contract ``state`` was written with, when the namespace must be rebuilt under
        CONTRACT_VERSION (checksums change with it, so versions are numbered anew, in a new
        epoch): a state without the field (configsync before contracts: 1) whenever it is seen,
        another version at this daemon's start only (two daemons of different versions left
        running on one namespace must not rebuild it in turns at every poll)."""
        found = state.get("contract")
        if found == CONTRACT_VERSION or (found is not None and self.synced):
            return None
        return found or "1"

    def _result(self, head: str, *, pending: bool = False) -> SyncResult:
        return SyncResult(head, self.store.state().get("commit") == head, pending)

    def _walk(self, steps: Iterator[Step], seen: str, total: int) -> bool:
        """Write ``steps`` in order; False when another writer moved ``state.seen`` first."""
        progress = _Progress(total, self._heartbeat)
        try:
            for step in steps:
                if self.stopping.is_set():
                    return True
                if self.guard is not None:
                    self.guard()
                if not self.write(step, seen):
                    return False
                seen = step.info.sha
                progress.tick()
        finally:
            if hasattr(steps, "close"):
                steps.close()  # (ends the walk's git processes now, not at garbage collection)
        return True

    def apply(self, info: CommitInfo, expected_seen: str) -> bool:
        """Compute and write one commit's step; False when another writer moved
        ``state.seen`` first."""
        assert self.applied is not None
        return self.write(self.engine.step(self.applied, info), expected_seen)

    def write(self, step: Step, expected_seen: str) -> bool:
        """Write one step in one transaction, guarded by ``state.seen == expected_seen``."""
        assert self.applied is not None and self.epoch is not None
        info = step.info
        if step.applied is None:
            write = Write({"seen": info.sha, "last_error": json.dumps(step.error)},
                          events=[Event("rejected", info.sha, self.applied.revision, self.epoch,
                                        error=step.summary)])
            if not self.store.commit_transaction(write, expected_seen=expected_seen):
                return False
            if self.metrics is not None:
                self.metrics.commits_rejected.inc()
                self.metrics.published(["rejected"])
            logger.error(kv("rejected", commit=info.sha[:12], error=step.summary))
            return True
        new = step.applied
        self.recent[info.sha] = new
        if len(self.recent) > 8:
            self.recent.pop(next(iter(self.recent)))
        write = Write(self._state_fields(new, info.sha),
                      upserts=step.upserts, deletes=[a for a, _ in step.deleted],
                      history={s.agent_id: [s] for s in step.upserts},
                      trim={s.agent_id: s.version - self.keep for s in step.upserts},
                      events=self._events(step, new))
        if not self.store.commit_transaction(write, expected_seen=expected_seen):
            return False
        self.applied = new
        if self.metrics is not None:
            self.metrics.applied(unix_time(info.committed_at))
            self.metrics.published(["applied"])
        logger.info(kv("applied", commit=info.sha[:12], revision=new.revision,
                       updated=len(step.upserts), deleted=len(step.deleted),
                       author=info.author.split(" <")[0], message=info.message))
        return True

    def _state_fields(self, applied: Applied, seen: str, last_error: str = "") -> dict[str, str]:
        now = utcnow()
        schema = applied.report.settings.schema_ if applied.report is not None else None
        return {"commit": applied.commit or "", "seen": seen, "revision": str(applied.revision),
                "epoch": self.epoch or "", "branch": self.branch, "source": self.source,
                "applied_at": now, "heartbeat_at": now, "last_error": last_error,
                "schema": schema or "", "contract": CONTRACT_VERSION, "claimed": self.claimed}

    def _events(self, step: Step, new: Applied) -> list[Event]:
        """One ``applied`` event for the commit, listing every agent it changed (none for a
        commit that touched no agent: readers learn its revision and read nothing)."""
        assert self.epoch is not None
        changes = [AgentChange(s.agent_id, s.version) for s in step.upserts]
        changes += [AgentChange(agent_id, version, deleted=True)
                    for agent_id, version in step.deleted]
        return [Event("applied", step.info.sha, new.revision, self.epoch, changes)]

    def _load(self, state: dict[str, str]) -> None:
        """Make :attr:`applied` match ``state.commit`` (another daemon, or a restart)."""
        commit = state.get("commit") or None
        if (self.applied is not None and self.applied.commit == commit
                and self.epoch == state.get("epoch")):
            return
        self.epoch = state.get("epoch", "")
        known = self.recent.get(commit or "")
        current = self.store.current()
        versions = {a: (s.version, s.checksum) for a, s in current.items()}
        if known is not None and known.versions == versions:
            self.applied = known
            return
        last = self.store.last_versions()
        for agent_id, (version, _) in versions.items():
            last[agent_id] = max(version, last.get(agent_id, 0))
        report = None
        if commit is not None and self.mirror.has_commit(commit):
            try:
                report = self.engine.check(commit)
            except (GitError, OSError):
                raise
            except Exception as exc:  # (see Engine.step) the next commit gets a full check
                logger.error(kv("check_failed", commit=commit[:12], error=type(exc).__name__),
                             exc_info=True)
        self.applied = Applied(commit, report, versions, last, int(state.get("revision", 0)))
        if self.metrics is not None and report is not None and commit is not None:
            self.metrics.last_applied.set(unix_time(self.mirror.commit_info(commit).committed_at))
        # --keep may have been lowered since these were written: trim every agent now, not
        # only each on its own next version
        self.store.trim_history({a: v - self.keep for a, v in last.items() if v > self.keep})
        self._settle()
        logger.info(kv("loaded", commit=(commit or "")[:12], agents=len(versions),
                       revision=self.applied.revision))

    def rebuild(self, head: str, *, expected_seen: str | None = None,
                claimed: str = "first") -> bool:
        """Rebuild the whole state from the branch history in memory; write it at once, when
        ``state.seen`` is still ``expected_seen`` (None: when the state is still missing),
        with ``state.claimed`` = ``claimed`` (one of CLAIMS)."""
        started = time.monotonic()
        applied = Applied()
        history: dict[str, deque[Record]] = {}
        last_error = ""
        last_applied: CommitInfo | None = None
        total, steps = self.engine.walk(applied, None, head)
        progress = _Progress(total, self._heartbeat)
        for step in steps:
            progress.tick()
            if step.applied is None:
                last_error = json.dumps(step.error)
                logger.error(kv("rejected", commit=step.info.sha[:12], error=step.summary,
                                during="rebuild"))
                continue
            applied, last_error, last_applied = step.applied, "", step.info
            for snapshot in step.upserts:
                history.setdefault(snapshot.agent_id,
                                   deque(maxlen=self.keep)).append(snapshot)
        self.epoch = uuid.uuid4().hex
        self.claimed = claimed
        current = [history[agent_id][-1] for agent_id in sorted(applied.versions)]
        # History is immutable: written first, in bounded pipelines; the transaction below
        # holds only what readers look at (state, current, the index, the event).
        self.store.write_history({a: list(s) for a, s in history.items()})
        write = Write(self._state_fields(applied, head, last_error), upserts=current,
                      index={a: s[-1].version for a, s in history.items()},
                      events=[Event("rebuilt", applied.commit or "", applied.revision,
                                    self.epoch)], replace_all=True)
        if not self.store.commit_transaction(write, expected_seen=expected_seen):
            self.applied = None
            return False
        self.applied = applied
        if self.metrics is not None:
            self.metrics.rebuilds.inc()
            self.metrics.published(["rebuilt"])
            if last_applied is not None:
                self.metrics.last_applied.set(unix_time(last_applied.committed_at))
        self._settle()
        logger.info(kv("rebuilt", commit=(applied.commit or "")[:12], agents=len(current),
                       revision=applied.revision, epoch=self.epoch,
                       seconds=round(time.monotonic() - started, 2)))
        return True

    # -- the loop ---------------------------------------------------------------------------

    def run(self, *, interval: float = 10.0, once: bool = False) -> int:
        """Poll until stopped (SIGTERM/SIGINT: finish the commit in hand, exit 0). With
        ``once``: sync to the head, then return 0 when it applied, 1 when it was rejected."""
        if not once:  # readers judge the heartbeat's age by it (heartbeat.py)
            self.store.heartbeat_every = interval
        tick_during_trials(self._heartbeat)  # a `schema:` trial import is no dead daemon
        try:
            return self._run(interval, once)
        finally:
            tick_during_trials(None)

    def _run(self, interval: float, once: bool) -> int:
        backoff = Backoff()
        failing: str | None = None
        confirming = False
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                result = self.sync()
            except (GitError, redis.RedisError, OSError) as exc:
                if self.stopping.is_set():
                    break  # a fetch cut short by SIGTERM: stop, as asked
                what = "redis_unavailable" if isinstance(exc, redis.RedisError) else (
                    "remote_unreachable" if isinstance(exc, GitError) else "io_error")
                self.last_failure = f"{what}: " + (
                    redis_failure(exc, self.store.redis) if what == "redis_unavailable"
                    else redact_text(str(exc)))
                if self.metrics is not None:
                    self.metrics.sync_duration.observe(time.monotonic() - started)
                    self.metrics.failed(exc)  # (seconds behind: unknown until one succeeds)
                if once:
                    raise ConfigsyncError(redis_failure(exc, self.store.redis)
                                          if what == "redis_unavailable"
                                          else str(exc)) from exc
                if what != "redis_unavailable":
                    self._heartbeat()  # alive, and saying so, while the remote fails
                delay = backoff.next()
                if failing != what:  # log on state changes, not on every attempt
                    error = redis_failure(exc, self.store.redis) if what == "redis_unavailable" \
                        else str(exc)
                    logger.warning(kv(what, error=error, retrying=f"{delay:.1f}s"))
                    failing = what
                self._rest(delay, max(interval, 1.0), beat=what != "redis_unavailable")
                continue
            self.last_failure = None
            if self.metrics is not None:
                self.metrics.sync_duration.observe(time.monotonic() - started)
                self.metrics.synced(self._behind_since(result))
            if failing is not None:
                logger.info(kv("recovered", was=failing, head=result.head[:12]))
                failing = None
                backoff.reset()
            if once and result.pending and not confirming:
                confirming = True  # --once: the second fetch, a moment later
                self.stopping.wait(CONFIRM_SECONDS)
                continue
            if once:
                if not result.applied:
                    self._explain_unapplied(result)
                return 0 if result.applied else 1
            self.pause(min(interval, CONFIRM_SECONDS) if result.pending else interval)
        logger.info(kv("stopped"))
        return 0

    def _behind_since(self, result: SyncResult) -> float | None:
        """For ``configsync_seconds_behind_remote``: the committer time of the oldest
        first-parent commit after the served one up to the fetched head (the head itself when
        it does not descend from it: a force-push), None when the head is served. Git only,
        and only when the head is not served; a git failure keeps the last value."""
        if result.applied:
            return None
        served = self.applied.commit if self.applied is not None else None
        try:
            if served is not None and self.mirror.has_commit(served) and \
                    self.mirror.is_ancestor(served, result.head):
                commits = self.mirror.first_parent_log(served, result.head)
                oldest = commits[0] if commits else self.mirror.commit_info(result.head)
            else:
                oldest = self.mirror.commit_info(result.head)
        except GitError:
            return self.metrics.behind_since if self.metrics is not None else None
        return unix_time(oldest.committed_at)

    def request_sync(self) -> None:
        """Ask for a sync now (a webhook, a ref that changed): the poll's wait ends at once.
        Requests that come while a sync runs make one more sync after it, never one each
        (a burst coalesces); thread-safe, never blocks."""
        self.wake.set()

    def pause(self, seconds: float) -> None:
        """Wait until the next poll: ``seconds``, or less when :meth:`request_sync` is called
        or the daemon is told to stop (checked every WAKE_SLICE seconds)."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.wake.wait(min(remaining, WAKE_SLICE)):
                break
        self.wake.clear()

    def _rest(self, seconds: float, every: float, *, beat: bool) -> None:
        """Wait ``seconds`` after a failure (less when told to stop, or when
        :meth:`request_sync` is called: a repository back at its path, a webhook, a push
        end the backoff at once, issue 17), stamping the heartbeat every ``every`` seconds
        when ``beat``: a daemon waiting out a failing remote is alive, and its readers judge
        that by the heartbeat's age (heartbeat.py)."""
        deadline = time.monotonic() + seconds
        beat_at = time.monotonic() + every
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            if self.wake.wait(max(0.0, min(WAKE_SLICE, deadline - now, beat_at - now))):
                break
            if beat and time.monotonic() >= beat_at:
                self._heartbeat()
                beat_at = time.monotonic() + every
        self.wake.clear()

    def _heartbeat(self) -> None:
        try:
            self.store.heartbeat(utcnow())
        except (redis.RedisError, OSError):
            pass

    def _explain_unapplied(self, result: SyncResult) -> None:
        """Why ``--once`` exits 1: the head was rejected (now or on an earlier run), or it is
        behind what the namespace serves."""
        state = self.store.state()
        try:
            error = rejection(state) or {}
        except CorruptDataError:  # (issue 17.2): no rejection's object, so none to explain
            error = {}
        reason = ("two fetches disagreed on a head that is no fast-forward (a lagging "
                  "replica?)" if result.pending else error_summary(error) if error else None)
        logger.error(kv("head_not_applied", head=result.head[:12],
                        serving=(state.get("commit") or "nothing")[:12], error=reason))

    def _settle(self) -> None:
        """After loading a whole tree, in the daemon's own process only (``tune_gc``): collect
        once, then keep the long-lived objects out of every later collection, so a
        10,000-agent state does not make each commit's GC pauses longer. ``gc.freeze`` is
        process-wide and cannot be scoped: a program that embeds a Daemon keeps its own GC."""
        if self.tune_gc:
            gc.collect()
            gc.freeze()

    def install_signal_handlers(self) -> None:
        """See :func:`install_stop_handlers` (for :attr:`stopping`)."""
        install_stop_handlers(self.stopping)


def install_stop_handlers(stopping: threading.Event) -> None:
    """First SIGTERM/SIGINT/SIGHUP (a closed terminal or SSH session): set ``stopping`` (the
    daemon finishes the commit in hand, a git command in flight is cut short, and the caller
    stops what it started: the embedded Redis). Second: exit at once (128 + the signal)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            raise SystemExit(128 + signum)
        logger.info(kv("stopping", signal=signal.Signals(signum).name))
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, handle)


WAKE_SLICE = 0.1
"""While it waits for the next poll, the daemon looks at ``stopping`` this often (a sync asked
for ends the wait at once)."""

CONFIRM_SECONDS = 2.0
"""A head that is no fast-forward is fetched again this long after (or at the next poll, when
polls come sooner) and applied only when both fetches agree (invariants 3 and 5)."""


class _Progress:
    """``event=progress walked=1200/5000`` at most every PROGRESS_SECONDS, for long walks (and
    a heartbeat with it: a long walk is no dead daemon)."""

    def __init__(self, total: int, heartbeat: Callable[[], None]) -> None:
        self.total = total
        self.walked = 0
        self.last = time.monotonic()
        self.heartbeat = heartbeat

    def tick(self) -> None:
        self.walked += 1
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS and self.walked < self.total:
            self.last = now
            logger.info(kv("progress", walked=f"{self.walked}/{self.total}"))
            self.heartbeat()


PROGRESS_SECONDS = 5.0
