"""An agent's versions from git alone, numbered by the daemon's own :class:`~.sync.Engine`.

``configsync history``, ``status`` and ``rollback`` replay the branch's first-parent history
the way a daemon rebuilding the namespace does (DESIGN.md invariant 4): every commit validated,
rejected ones skipped (their changes count in the next commit that applies), one version per
applied commit that changes an agent's resolved config. So a number here is the number the
daemon gives, for the same history and validator; a namespace rebuilt after a force-push (a
new ``epoch``) may number differently, which ``--redis`` shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compare import Cause, FieldChange, causes, field_changes
from .git import CommitInfo, GitRepo
from .repo import GitSource
from .sync import Applied, Engine, Step
from .validate import Report, check_tree

__all__ = ["Version", "agent_history", "replay", "versions_at"]


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
    the commits after it, as that daemon's next poll steps them. Raises GitError."""
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
    :func:`replay`: then the cost follows the commits after it); and the report of
    ``head``'s own tree (its resolved configs; its errors when it was rejected)."""
    applied, last = start or Applied(), None
    if start is not None and start.commit == head:
        root = repo_root if repo_root is not None else repo.top
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
