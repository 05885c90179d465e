"""``configsync history AGENT``: who changed an agent, when, why and what, from git alone.

Versions are the daemon's (:mod:`.history` replays the branch with its :class:`~.sync.Engine`).
With ``--redis`` the version Redis serves is marked, with when it was applied; a served
version that this history numbers differently (a namespace rebuilt after a force-push) is said.

Exit codes: 0 printed; 1 the agent has no version on this branch, or git failed; 2 a usage
mistake, or Redis unreachable with ``--redis``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from .compare import ADDED, OWN, REMOVED, Cause, FieldChange
from .errors import ConfigsyncError, UsageError
from .git import GitRepo
from .history import Version, agent_history
from .logs import one_line
from .messages import did_you_mean, plural
from .read_cli import default_namespace, redis_url_given
from .redis_url import from_url, redis_failure
from .repo import FolderSource, find_root
from .snapshot import Record
from .store import Store
from .validate import check_tree

__all__ = ["Served", "describe_causes", "describe_change", "open_repo", "parse_since",
           "run_history"]

VALUE_WIDTH = 60


@contextmanager
def open_repo(start: str = ".") -> Iterator[GitRepo]:
    """The git repository of the config tree at ``start`` (its root: the folder holding
    ``configsync.yaml``, here or above), read through its :attr:`GitRepo.prefix`. Raises
    UsageError when there is no config tree or no git."""
    root = find_root(start)
    if not root.found:
        raise UsageError(f"no configsync.yaml in {start} or above it: run this inside a config "
                         "repository (configsync init makes one)")
    with GitRepo(root.folder) as repo:
        if not repo.has_commits():
            raise UsageError("the repository has no commits yet: there is no history to read")
        yield repo


@dataclass(frozen=True, slots=True)
class Served:
    """What Redis serves for the agent (``record``; None: nothing) and the versions it keeps."""

    record: Record | None
    kept: dict[int, Record]


def short_value(value: Any, width: int = VALUE_WIDTH) -> str:
    """A JSON value on one line, cut to ``width`` characters with an ellipsis."""
    text = json.dumps(value, ensure_ascii=False)
    text = one_line(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def describe_change(change: FieldChange) -> str:
    """``temperature: 0.9 → 0.3``; a prompt is summarised by its lines added and removed."""
    if change.kind == ADDED:
        return f"+ {change.path}: {short_value(change.new)}"
    if change.kind == REMOVED:
        return f"- {change.path}: {short_value(change.old)}"
    if isinstance(change.old, str) and isinstance(change.new, str) and (
            "\n" in change.old or "\n" in change.new):
        old, new = change.old.splitlines(), change.new.splitlines()
        kept = set(old) & set(new)
        return (f"~ {change.path}: +{sum(line not in kept for line in new)} "
                f"-{sum(line not in kept for line in old)} lines")
    return f"~ {change.path}: {short_value(change.old)} → {short_value(change.new)}"


def describe_causes(found: list[Cause]) -> str:
    """``through base agents/billing/base.yaml`` when the agent's own file did not change."""
    if not found or any(c.kind == OWN for c in found):
        return ""
    return "through " + ", ".join(f"{c.kind} {c.path}" for c in found)


def _served(args: argparse.Namespace, agent_id: str) -> Served | None:
    if args.redis is None:
        return None
    url, origin = redis_url_given(args.redis or None)
    namespace = args.namespace or default_namespace()
    client: redis.Redis = from_url(redis.Redis, url, origin, socket_timeout=10,
                                   socket_connect_timeout=5)
    try:
        store = Store(client, namespace)
        return Served(store.current().get(agent_id), store.history(agent_id))
    except redis.RedisError as exc:
        raise UsageError(f"{redis_failure(exc, client)} (--redis)") from None
    finally:
        client.close()


def _mark(version: Version, served: Served | None) -> str:
    if served is None or version.deleted:
        return ""
    record = served.record
    if record is not None and record.version == version.version \
            and record.checksum == version.checksum:
        return f"served (applied {record.synced_at})"
    kept = served.kept.get(version.version)
    return "kept in Redis" if kept is not None and kept.checksum == version.checksum else ""


def render_text(agent_id: str, ref: str, versions: list[Version], served: Served | None,
                total: int, serving: str | None = None) -> str:
    """The versions, newest first; ``total``: how many versions the agent has in all;
    ``serving``: :func:`served_line`."""
    count = sum(not v.deleted for v in versions)
    shown = plural(total, "version") if count == total else f"{count} of {total} versions"
    if not versions:
        lines = [f"{one_line(agent_id)}: no version of {total} on {one_line(ref)} matches"]
        return "\n".join([*lines, *([serving] if serving else [])]) + "\n"
    lines = [f"{one_line(agent_id)}: {shown} on {one_line(ref)}, newest first"]
    if serving is not None:
        lines.append(serving)
    for v in reversed(versions):
        info = v.commit
        label = f"deleted (was v{v.version})" if v.deleted else f"v{v.version}"
        notes = [n for n in (
            f"returns to v{v.returns_to}" if v.returns_to is not None else "",
            describe_causes(v.causes), _mark(v, served)) if n]
        lines.append(f"{label}  {info.sha[:12]}  {info.committed_at}  {one_line(info.author)}")
        lines.append(f"    {one_line(info.message)}" + (f"  [{'; '.join(notes)}]"
                                                       if notes else ""))
        if v.version == 1 and not v.deleted:
            lines.append(f"    created with {plural(len(v.fields), 'field')}")
        elif not v.deleted:
            lines.extend(f"    {describe_change(c)}" for c in v.fields)
    return "\n".join(lines) + "\n"


def served_line(versions: list[Version], served: Served | None) -> str | None:
    """What Redis serves, in one line (None without ``--redis``), checked against the whole
    history (all of ``versions``, not only those shown)."""
    if served is None:
        return None
    record = served.record
    if record is None:
        return "Redis serves no version of this agent"
    line = (f"Redis serves v{record.version} (commit {record.commit[:12]}, applied "
            f"{record.synced_at})")
    if any(_mark(v, served).startswith("served") for v in versions):
        return line
    return (line + ", which this history does not number so: the namespace follows another "
            "branch, or was rebuilt after a force-push")


def _wanted(version: Version, since: datetime | None, path: str | None) -> bool:
    """Whether ``version`` was committed at or after ``since`` and changed field ``path`` (or
    a field inside it: ``metadata`` covers ``metadata.labels.tier``)."""
    if since is not None and datetime.fromisoformat(version.commit.committed_at) < since:
        return False
    return path is None or any(
        c.path == path or c.path.startswith((path + ".", path + "[")) for c in version.fields)


def parse_since(text: str) -> datetime:
    """``2026-11-23`` (midnight UTC) or an ISO 8601 time (UTC when it names no offset), for
    ``--since``; ValueError otherwise."""
    at = datetime.fromisoformat(text.strip())
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def run_history(args: argparse.Namespace) -> int:
    """``configsync history``: print the agent's versions; see the module docstring."""
    with open_repo() as repo:
        head = repo.resolve(args.ref)
        versions = agent_history(repo, head, args.agent)
        if not versions:
            known = sorted(check_tree(FolderSource(repo.top / repo.prefix)).configs)
            raise ConfigsyncError(f"agent {one_line(args.agent)} has no version on "
                                  f"{one_line(args.ref)} ({head[:12]})"
                                  f"{did_you_mean(args.agent, known)}")
    served = _served(args, args.agent)
    shown = [v for v in versions if _wanted(v, args.since, args.field)]
    shown = shown[-args.limit:] if args.limit else shown
    if args.format == "json":
        data = {"agent_id": args.agent, "ref": args.ref, "head": head,
                "versions": [v.to_json() | {"served": _mark(v, served).startswith("served")}
                             for v in reversed(shown)],
                "served": None if served is None or served.record is None else {
                    "version": served.record.version, "checksum": served.record.checksum,
                    "commit": served.record.commit, "applied_at": served.record.synced_at,
                    "numbered_alike": any(_mark(v, served).startswith("served")
                                          for v in versions)}}
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(render_text(args.agent, args.ref, shown, served,
                                     sum(not v.deleted for v in versions),
                                     served_line(versions, served)))
    return 0
