"""An agent's versions from git alone, numbered by the daemon's own :class:`~.sync.Engine`.

``configsync history``, ``status`` and ``rollback`` replay the branch's first-parent history
the way a daemon rebuilding the namespace does (DESIGN.md invariant 4): every commit validated,
rejected ones skipped (their changes count in the next commit that applies), one version per
applied commit that changes an agent's resolved config. So a number here is the number the
daemon gives, for the same history and validator; a namespace rebuilt after a force-push (a
new ``epoch``) may number differently, which ``--redis`` shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compare import Cause, FieldChange, causes, field_changes
from .errors import UsageError
from .git import CommitInfo, GitRepo
from .repo import GitSource
from .snapshot import Record
from .sync import Applied, Engine, Step
from .validate import Report, check_tree

__all__ = ["RedisNumbers", "ShallowHistory", "Version", "agent_history", "daemon_start",
           "redis_numbers", "replay", "version_matcher", "versions_at"]


class ShallowHistory(UsageError):
    """The repository is a shallow clone: its history is cut short, so versions counted from
    it would not be the daemon's."""


@dataclass
class Version:
    """One entry of an agent's history: a new version, or its deletion (``deleted``; then
    ``version`` is the last version it had and ``config``/``checksum`` are None).

    ``fields`` and ``causes`` compare with the version before (for the first: every field
    added; for a re-creation: the last version before the deletion);
    ``returns_to`` is the newest earlier version with the same checksum (a revert or a
    rollback brought the config back), else None."""

    agent_id: str
    version: int
    commit: CommitInfo
    revision: int
    checksum: str | None
    config: dict[str, Any] | None
    fields: list[FieldChange] = field(default_factory=list)
    causes: list[Cause] = field(default_factory=list)
    returns_to: int | None = None
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "version": self.version,
                "deleted": self.deleted, "commit": self.commit.sha,
                "author": self.commit.author, "committed_at": self.commit.committed_at,
                "subject": self.commit.message, "revision": self.revision,
                "checksum": self.checksum, "returns_to": self.returns_to,
                "fields": [f.to_json() for f in self.fields],
                "causes": [c.to_json() for c in self.causes]}


def replay(repo: GitRepo, head: str, *, repo_root: Path | None = None,
           start: Applied | None = None) -> Iterator[tuple[Step, Report | None]]:
    """Each first-parent commit up to ``head``, oldest first, as the daemon's rebuild steps it,
    with the report of the last tree applied before it (None before the first). From
    ``start`` (what a daemon serves: its commit, an ancestor of ``head``, and versions), only
    the commits after it, as that daemon's next poll steps them. Raises GitError, and
    :class:`ShallowHistory` for a whole replay of a shallow clone (its numbers would count
    only the commits it has)."""
    if start is None and repo.is_shallow():
        raise ShallowHistory(
            "this clone is shallow (git clone --depth), so it cannot number versions: the "
            "daemon counts every commit of the branch; run `git fetch --unshallow` (in GitHub "
            "Actions: actions/checkout with fetch-depth: 0)")
    engine = Engine(repo, repo_root=repo_root if repo_root is not None else repo.top)
    if start is not None and start.commit is not None and start.report is None:
        start.report = engine.check(start.commit)
    begin = start or Applied()
    _, steps = engine.walk(begin, begin.commit, head)
    before: Report | None = begin.report
    for step in steps:
        yield step, before
        if step.applied is not None:
            before = step.applied.report


def versions_at(repo: GitRepo, head: str, *, repo_root: Path | None = None,
                start: Applied | None = None) -> tuple[Applied, Report]:
    """What a daemon would serve at ``head`` (the last applied commit, each agent's version
    and checksum): rebuilding from the whole history, or going on from ``start`` (see
    :func:`replay`: then the cost follows the commits after it; when ``start`` is not an
    ancestor of ``head``, one step to it, as that daemon applies a force-push); and the report
    of ``head``'s own tree (its resolved configs; its errors when it was rejected)."""
    applied, last = start or Applied(), None
    root = repo_root if repo_root is not None else repo.top
    if start is not None and start.commit == head:
        return start, check_tree(GitSource(repo, head), repo_root=root)
    if start is not None and start.commit is not None \
            and not repo.is_ancestor(start.commit, head):
        # a force-push: the daemon applies the head as one step from what it serves
        engine = Engine(repo, repo_root=root)
        if start.report is None:
            start.report = engine.check(start.commit)
        step = engine.step(start, repo.commit_info(head))
        if step.applied is not None and step.applied.report is not None:
            return step.applied, step.applied.report
        return start, check_tree(GitSource(repo, head), repo_root=root)
    for step, _ in replay(repo, head, repo_root=repo_root, start=start):
        last = step
        if step.applied is not None:
            applied = step.applied
    if last is not None and last.applied is not None and last.applied.report is not None:
        return applied, last.applied.report
    root = repo_root if repo_root is not None else repo.top
    return applied, check_tree(GitSource(repo, head), repo_root=root)


def agent_history(repo: GitRepo, head: str, agent_id: str, *,
                  repo_root: Path | None = None) -> list[Version]:
    """Every version (and deletion) of ``agent_id`` on the first-parent history up to
    ``head``, oldest first. Empty when the agent never applied there."""
    found: list[Version] = []
    config: dict[str, Any] | None = None
    seen: dict[str, int] = {}  # checksum -> the newest version that had it
    for step, before in replay(repo, head, repo_root=repo_root):
        if step.applied is None:
            continue
        info, after = step.info, step.applied.report
        for record in step.upserts:
            if record.agent_id != agent_id:
                continue
            found.append(Version(
                agent_id, record.version, info, step.applied.revision, record.checksum,
                record.config, field_changes(config, record.config),
                causes(agent_id, before, after), seen.get(record.checksum)))
            seen[record.checksum] = record.version
            config = record.config
        for gone, version in step.deleted:
            if gone == agent_id:
                found.append(Version(agent_id, version, info, step.applied.revision, None,
                                     None, deleted=True))
                # (kept: a re-creation is compared with the config the agent had last)
    return found


def daemon_start(repo: GitRepo, head: str, served: str | None, revision: int,
                 current: Mapping[str, tuple[int, str]], last: Mapping[str, int], *,
                 ancestor_only: bool = True) -> Applied | None:
    """What a daemon serving ``served`` (with ``current``: agent -> (version, checksum), and
    ``last``: every agent's last version, deleted ones too) starts its next walk from, as
    ``Daemon._load`` makes it: versions after it are that daemon's, whatever numbering a
    force-push left. None when ``served`` is not here, or (``ancestor_only``) not an ancestor
    of ``head``: a force-push, which :func:`versions_at` steps as the daemon will (one step),
    while a walk of the commits after it cannot."""
    if not served or not repo.has_commit(served) or (
            ancestor_only and not repo.is_ancestor(served, head)):
        return None
    versions = dict(current)
    merged = dict(last)
    for agent_id, (version, _) in versions.items():
        merged[agent_id] = max(version, merged.get(agent_id, 0))
    return Applied(served, None, versions, merged, revision)


@dataclass
class RedisNumbers:
    """How the namespace in Redis numbers an agent's versions, against git's numbering.

    A daemon that follows a force-push live applies the new head as one step from what it
    served (DESIGN.md invariant 3), and still counts the versions it made on the dropped
    commits, so its numbers can run ahead of a replay of the branch (a dropped commit made a
    version) or behind it (one step where the branch has several). ``numbers``: git version ->
    Redis version (where Redis has one, kept or still to come from the commits after the
    served one; the newest when several are one); ``git_of``: Redis version -> git version,
    for every Redis version that is one; ``served``: the git version Redis serves; ``kept``:
    the git versions Redis still keeps; ``dropped``: kept Redis versions that no version on
    the branch had (a config only a dropped commit held)."""

    numbers: dict[int, int] = field(default_factory=dict)
    served: int | None = None
    kept: set[int] = field(default_factory=set)
    dropped: list[int] = field(default_factory=list)
    git_of: dict[int, int] = field(default_factory=dict)  # Redis version -> git version
    last: int = 0  # the last version Redis gave the agent (0: none)
    live: set[int] = field(default_factory=set)  # git's versions (not deletions)

    @property
    def differ(self) -> bool:
        return any(git != redis for git, redis in self.numbers.items())

    def redis_of(self, git: int) -> list[int]:
        """Every Redis version that is git version ``git`` (a rewind applies a config again:
        one config, two numbers)."""
        return sorted(n for n, g in self.git_of.items() if g == git)

    def missing(self, agent_id: str, number: int, kept: Iterable[int]) -> str:
        """Why Redis version ``number`` is no version on the branch, for a message."""
        held = sorted(kept)
        if number > self.last:
            return (f"Redis's last version of {agent_id} is v{self.last}" if self.last
                    else f"Redis has no version of {agent_id}")
        if number not in held:
            return (f"Redis no longer keeps v{number} of {agent_id} (the daemon keeps the last "
                    f"--keep versions{f': v{held[0]}-v{held[-1]}' if held else ''})")
        return (f"Redis's v{number} of {agent_id} is a config no version on this branch has "
                "(made on a commit a force-push dropped)")

    def git_version(self, number: int) -> int | None:
        """The git version that Redis version ``number`` is. A number Redis no longer keeps
        (trimmed by ``--keep``) is git's same number while the two numberings agree
        wherever both are known; None otherwise."""
        if number in self.git_of:
            return self.git_of[number]
        if not self.differ and not self.dropped and number in self.live \
                and number <= self.last:
            return number
        return None


def version_matcher(repo: GitRepo, head: str, versions: list[Version]
                    ) -> Callable[[Record], Version | None]:
    """A function from a snapshot Redis holds to the version of ``versions`` (over ``head``)
    it is: the newest one with its checksum at or before its commit on the branch; when its
    commit is not on the branch (an amend or a rebase pushed with ``--force`` rewrote it), the
    newest one with its checksum. None: no version on the branch had its config."""
    order = {info.sha: i for i, info in enumerate(repo.first_parent_log(None, head))}
    live = [v for v in versions if not v.deleted]

    def match(record: Record) -> Version | None:
        same = [v for v in live if v.checksum == record.checksum]
        at = order.get(record.commit)
        if at is not None:
            same = [v for v in same if order[v.commit.sha] <= at]
        return same[-1] if same else None

    return match


def redis_numbers(repo: GitRepo, head: str, agent_id: str, versions: list[Version],
                  kept: Mapping[int, Record], served: Record | None,
                  start: Applied | None, last: int = 0) -> RedisNumbers:
    """Match Redis's versions of ``agent_id`` (``kept``, ``served``) to ``versions`` (from
    :func:`agent_history` over ``head``) by :func:`version_matcher`. With ``start``
    (:func:`daemon_start`), the versions after the served commit get the numbers that daemon
    will give them."""
    match = version_matcher(repo, head, versions)
    live = [v for v in versions if not v.deleted]
    result = RedisNumbers(last=max([*kept, served.version if served else 0, last]),
                          live={v.version for v in live})
    for number, record in sorted(kept.items()):
        version = match(record)
        if version is None:
            result.dropped.append(number)
            continue
        result.numbers[version.version] = number
        result.git_of[number] = version.version
        result.kept.add(version.version)
    if served is not None:
        version = match(served)
        if version is not None:
            result.numbers[version.version] = served.version
            result.git_of[served.version] = version.version
            result.served = version.version
    if start is not None and start.commit != head:
        by_commit = {v.commit.sha: v for v in live}
        for step, _ in replay(repo, head, start=start):
            for upsert in step.upserts:
                if upsert.agent_id == agent_id and step.info.sha in by_commit:
                    result.numbers[by_commit[step.info.sha].version] = upsert.version
                    result.git_of[upsert.version] = by_commit[step.info.sha].version
    return result
