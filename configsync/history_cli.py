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

from .compare import CHANGED, OWN, Cause, FieldChange, change_line
from .errors import ConfigsyncError, UsageError
from .escape import json_text, one_line, text_lines
from .git import GitRepo
from .history import RedisNumbers, Version, agent_history, daemon_start, redis_numbers
from .messages import did_you_mean, plural
from .read_cli import open_store
from .repo import FolderSource, find_root
from .snapshot import Record
from .validate import check_tree

__all__ = ["Served", "describe_causes", "describe_change", "open_repo", "parse_since",
           "read_served", "run_history"]

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
    """What Redis serves for the agent (``record``; None: nothing), and how its numbers match
    git's (:func:`.history.redis_numbers`); ``here``: whether this clone has the served
    commit."""

    record: Record | None
    numbers: RedisNumbers
    here: bool
    kept: dict[int, Record]  # the versions Redis keeps, by number
    last: int  # the last version Redis gave the agent (deleted or not; 0: none)
    namespace: str
    has_state: bool  # the namespace has a state in this Redis (else: no daemon synced it)


def short_value(value: Any, width: int = VALUE_WIDTH) -> str:
    """A JSON value on one line, cut to ``width`` characters with an ellipsis."""
    text = json.dumps(value, ensure_ascii=False)
    text = one_line(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def describe_change(change: FieldChange) -> str:
    """``temperature: 0.9 → 0.3``; a prompt is summarised by its lines added and removed."""
    if change.kind == CHANGED and isinstance(change.old, str) and isinstance(change.new, str) \
            and ("\n" in change.old or "\n" in change.new):
        old, new = change.old.splitlines(), change.new.splitlines()
        kept = set(old) & set(new)
        return (f"~ {change.path}: +{sum(line not in kept for line in new)} "
                f"-{sum(line not in kept for line in old)} lines")
    return change_line(change, short_value, "→")


def describe_causes(found: list[Cause]) -> str:
    """``through base agents/billing/base.yaml`` when the agent's own file did not change."""
    if not found or any(c.kind == OWN for c in found):
        return ""
    return "through " + ", ".join(f"{c.kind} {c.path}" for c in found)


def read_served(args: argparse.Namespace, repo: GitRepo, head: str, agent_id: str,
                versions: list[Version]) -> Served | None:
    """With ``--redis`` (``args.redis``, ``args.namespace``): what Redis serves of the agent
    and how it numbers ``versions``; None without. Raises UsageError when Redis cannot be
    read."""
    if args.redis is None:
        return None
    with open_store(args, unreachable=UsageError, suffix=" (--redis)") as store:
        namespace = store.keys.namespace
        state = store.state()
        current = store.current()
        kept = store.history(agent_id)
        last = store.last_versions() if state.get("commit") else {}
    start = daemon_start(repo, head, state.get("commit"), int(state.get("revision") or 0),
                         {a: (r.version, r.checksum) for a, r in current.items()}, last)
    record = current.get(agent_id)
    numbers = redis_numbers(repo, head, agent_id, versions, kept, record, start,
                            last.get(agent_id, 0))
    return Served(record, numbers, record is None or repo.has_commit(record.commit), kept,
                  last.get(agent_id, record.version if record is not None else 0), namespace,
                  bool(state))


def _mark(version: Version, served: Served | None) -> str:
    if served is None or version.deleted:
        return ""
    numbers = served.numbers
    notes = []
    redis = numbers.redis_of(version.version)
    if redis and redis != [version.version]:
        notes.append("Redis " + ", ".join(f"v{n}" for n in redis))
    if numbers.served == version.version and served.record is not None:
        notes.append(f"served (applied {served.record.synced_at})")
    elif version.version in numbers.kept:
        notes.append("kept in Redis")
    return "; ".join(notes)


def render_text(agent_id: str, ref: str, versions: list[Version], served: Served | None,
                every: list[Version]) -> str:
    """``versions`` (of ``every`` entry: versions and deletions), newest first."""
    serving = served_line(served)
    total = plural(sum(not v.deleted for v in every), "version")
    if not versions:
        lines = [f"{one_line(agent_id)}: {total} on {one_line(ref)}; none matches"]
        return text_lines([*lines, *serving])
    shown = "" if len(versions) == len(every) else \
        f" (showing {len(versions)} of {len(every)} {'entry' if len(every) == 1 else 'entries'})"
    lines = [f"{one_line(agent_id)}: {total} on {one_line(ref)}{shown}, newest first"]
    lines.extend(serving)
    for v in reversed(versions):
        info = v.commit
        label = f"deleted (was v{v.version})" if v.deleted else f"v{v.version}"
        notes = [n for n in (
            _returns(v.returns_to, served),
            describe_causes(v.causes), _mark(v, served)) if n]
        lines.append(f"{label}  {info.sha[:12]}  {info.committed_at}  {one_line(info.author)}")
        lines.append(f"    {one_line(info.message)}" + (f"  [{'; '.join(notes)}]"
                                                       if notes else ""))
        if v.version == 1 and not v.deleted:
            lines.append(f"    created with {plural(len(v.fields), 'field')}")
        elif not v.deleted:
            lines.extend(f"    {describe_change(c)}" for c in v.fields)
    return text_lines(lines)  # every line escaped: a path, a field or a Redis value too


def _returns(earlier: int | None, served: Served | None) -> str:
    """``returns to v2``, with Redis's numbers for v2 when they differ."""
    if earlier is None:
        return ""
    redis = served.numbers.redis_of(earlier) if served is not None else []
    if redis and redis != [earlier]:
        return f"returns to v{earlier} (Redis " + ", ".join(f"v{n}" for n in redis) + ")"
    return f"returns to v{earlier}"


def served_line(served: Served | None) -> list[str]:
    """What Redis serves, and how its numbers differ from git's (nothing without
    ``--redis``)."""
    if served is None:
        return []
    record = served.record
    if not served.has_state:
        return [f"namespace {served.namespace} has no state in this Redis: no daemon has "
                "synced it (a typo in --namespace?)"]
    if record is None:
        return ["Redis serves no version of this agent"]
    line = (f"Redis serves v{record.version} (commit {record.commit[:12]}, applied "
            f"{record.synced_at})")
    if not served.here:
        line += ", a commit this clone does not have (git fetch?)"
    elif served.numbers.served is None:
        line += (", a config no version on this branch has (the daemon applied a force-push "
                 "as one step, or the namespace follows another branch)")
    lines = [line]
    for number in served.numbers.dropped:
        kept = served.kept[number]
        lines.append(f"Redis v{number} (commit {kept.commit[:12]} \"{one_line(kept.message)}\", "
                     f"applied {kept.synced_at}): a config no version on this branch has (its "
                     "commit was dropped by a force-push)")
    if served.numbers.differ:
        lines.append("Redis numbers this agent's versions differently from this history: the "
                     "daemon followed a force-push live (it applies the new head as one step, "
                     "and versions made on dropped commits still count); [Redis vN] is the "
                     "number clients report")
    return lines


def _redis_json(version: Version, served: Served | None) -> dict[str, Any]:
    if served is None:
        return {"served": False, "redis_version": None, "redis_versions": []}
    return {"served": served.numbers.served == version.version and not version.deleted,
            "redis_version": None if version.deleted
            else served.numbers.numbers.get(version.version),
            "redis_versions": [] if version.deleted
            else served.numbers.redis_of(version.version)}


def _wanted(version: Version, since: datetime | None, path: str | None) -> bool:
    """Whether ``version`` was committed at or after ``since`` and changed field ``path`` (or
    a field inside it: ``metadata`` covers ``metadata.labels.tier``)."""
    if since is not None and datetime.fromisoformat(version.commit.committed_at) < since:
        return False
    return path is None or any(_related(c.path, path) for c in version.fields)


def _related(changed: str, path: str) -> bool:
    """Whether a change at ``changed`` touches field ``path``: the field itself, one inside it
    (``metadata`` covers ``metadata.labels.tier``), or one that holds it (a created agent's
    ``metadata`` covers ``metadata.owner``)."""
    return any(a == b or a.startswith((b + ".", b + "[")) for a, b in ((changed, path),
                                                                      (path, changed)))


def _field_paths(config: Any, prefix: str = "") -> Iterator[str]:
    """Every field path in a resolved config (``metadata``, ``metadata.labels.tier``,
    ``tools[0]``)."""
    if isinstance(config, dict):
        for key, value in config.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from _field_paths(value, path)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            path = f"{prefix}[{i}]"
            yield path
            yield from _field_paths(value, path)


def check_field(path: str, versions: list[Version]) -> None:
    """UsageError when ``path`` is no field of any version's config and no changed field (a
    typo would list nothing, which reads as "nobody changed it"), with a hint."""
    known: set[str] = set()
    for v in versions:
        known.update(c.path for c in v.fields)
        if v.config is not None:
            known.update(_field_paths(v.config))
    if not any(_related(k, path) for k in known):
        tops = sorted({k.split(".")[0].split("[")[0] for k in known})
        raise UsageError(f"--field {one_line(path)}: no version of this agent has that field"
                         f"{did_you_mean(path, known)} (fields: {', '.join(tops)})")


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
        if args.field is not None:
            check_field(args.field, versions)
        served = read_served(args, repo, head, args.agent, versions)
    shown = [v for v in versions if _wanted(v, args.since, args.field)]
    shown = shown[-args.limit:] if args.limit else shown
    if args.format == "json":
        data = {"agent_id": args.agent, "ref": args.ref, "head": head,
                "versions": [v.to_json() | _redis_json(v, served) for v in reversed(shown)],
                "served": None if served is None or served.record is None else {
                    "version": served.record.version, "checksum": served.record.checksum,
                    "commit": served.record.commit, "applied_at": served.record.synced_at,
                    "numbered_alike": not served.numbers.differ,
                    "dropped": [{"version": n, "commit": served.kept[n].commit,
                                 "checksum": served.kept[n].checksum}
                                for n in served.numbers.dropped]}}
        sys.stdout.write(json_text(data))
    else:
        sys.stdout.write(render_text(args.agent, args.ref, shown, served, versions))
    return 0
