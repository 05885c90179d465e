"""``configsync rollback AGENT --to VERSION|COMMIT``: one commit that makes the agent's resolved
config equal that version's again, whatever happened to its file since.

``git revert`` undoes a commit's *patch*, so it conflicts with a later edit on a nearby line and
undoes other agents' changes made in the same commit. A rollback restores *content*: the
agent's own file as it was at the target (a whole file, so no conflict), then checks that the
resulting tree resolves the agent to the target's checksum. When the difference came from a
base in its ``extends`` chain, its prompt file or ``configsync.yaml``, those files are restored
too when they belong to the agent alone (no agent outside its own ``extends`` chain uses them,
at the head or in the rolled-back tree); a file shared with another agent is restored only with
``--include-dependencies``, and the refusal names the agents that share it. What else changes
(a base's own config, say) is named in the report. The tree is validated whole, as the daemon will
(a rollback the daemon would reject is never written), and the commit is built with git's
plumbing in a temporary index: until it moves a ref, nothing on disk has changed.

Exit codes: 0 committed (or nothing to do: the agent already has that config); 1 refused (a
dirty tree, a dependency, a tree that would not validate) or git failed (a push); 2 a usage
mistake (unknown version or commit, bad branch name, detached HEAD without ``--branch``).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigsyncError, GitError, UsageError
from .escape import json_text, one_line, text_lines
from .git import GitRepo, TreeEntry
from .history import RedisNumbers, Version, agent_history
from .history_cli import open_repo, read_served
from .messages import did_you_mean, plural
from .repo import SETTINGS_FILE, GitSource, agent_id_for
from .snapshot import checksum
from .validate import Report, check_tree

__all__ = ["Rollback", "plan_rollback", "run_rollback"]

_VERSION = re.compile(r"[vV]?([0-9]+)")


@dataclass
class Rollback:
    """What a rollback does: the agent, where it is (``current``: the newest version; None
    when deleted), where it goes (``target``), the files restored from ``target.commit``, the
    other agents whose resolved config changes too, and the tree to commit (None: nothing to
    do)."""

    agent_id: str
    head: str
    current: Version | None
    target: Version
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    tree: str | None = None
    next_version: int | None = None  # what the daemon will number it (known with --redis)
    numbering: str = "this branch's history (configsync history)"
    numbers: dict[int, int] | None = None  # git version -> Redis's (--redis)
    asked: int | None = None  # the Redis version --to named (--redis)

    def number(self, version: Version | None) -> int | None:
        """The number of ``version`` to show: Redis's with ``--redis`` (what clients report;
        None: Redis has no version with that config, or the agent is deleted), else git's."""
        if version is None:
            return None
        if self.numbers is None:
            return version.version
        if version is self.target and self.asked is not None:
            return self.asked
        return self.numbers.get(version.version)

    def label(self, version: Version | None) -> str:
        """``v7``; ``deleted``; or, for a config Redis never numbered, its commit."""
        number = self.number(version)
        if number is not None:
            return f"v{number}"
        return "deleted" if version is None else f"commit {version.commit.sha[:12]}"

    def message(self, subject: str | None = None) -> str:
        """The commit message: names the agent, both versions and both commits (the lines a
        reviewer and ``git log --grep`` look for)."""
        t = self.target
        to = self.label(t)
        was = ("deleted" if self.current is None else
               f"{self.label(self.current)} ({self.current.commit.sha[:12]})")
        lines = [subject or f"Roll back {self.agent_id} to {to}", "",
                 f"{self.agent_id}: from {was} to the resolved config of {to} "
                 + (f"({t.commit.sha[:12]}, " if to.startswith("v") else "(")
                 + f"\"{one_line(t.commit.message)}\")"
                 + (f"; the daemon serves it as v{self.next_version}."
                    if self.next_version is not None else ".")
                 + f" Versions as {self.numbering} numbers them.",
                 "", f"Restored from {t.commit.sha[:12]}: {', '.join(self.restored)}"]
        if self.removed:
            lines.append(f"Removed: {', '.join(self.removed)}")
        if self.others:
            lines.append(f"Also changes: {', '.join(self.others)}")
        lines += ["", f"Configsync-Rollback: {self.agent_id} {_token(self.label(self.current))} "
                      f"-> {_token(to)}"]
        return text_lines(lines)  # a path with a newline cannot forge a trailer or a line


def _token(label: str) -> str:
    """A label as one word for the trailer (``v7``, ``deleted``, or the commit)."""
    return label.rsplit(" ", 1)[-1]


@dataclass(frozen=True, slots=True)
class RedisSide:
    """What Redis says of the agent, for ``--redis``: how its numbers match git's, and the
    last version it gave the agent (the next is one more)."""

    numbers: RedisNumbers
    last: int
    namespace: str
    kept: frozenset[int]


def _target(versions: list[Version], to: str, repo: GitRepo, agent_id: str,
            redis_side: RedisSide | None = None) -> Version:
    """The version ``to`` names: a number (``7`` or ``v7``: git's numbering, or Redis's with
    ``redis_side``), or a commit (the version the agent had there)."""
    live = [v for v in versions if not v.deleted]
    match = _VERSION.fullmatch(to)
    if match is not None:
        number = int(match[1])
        if redis_side is not None:
            git = redis_side.numbers.git_version(number)
            found = [v for v in live if v.version == git]
            if found:
                return found[-1]
            raise UsageError(f"{redis_side.numbers.missing(agent_id, number, redis_side.kept)}; "
                             f"see `configsync history {agent_id} --redis`")
        for v in live:
            if v.version == number:
                return v
        raise UsageError(f"{agent_id} has no version {number} on this branch (versions "
                         f"{live[0].version}-{live[-1].version}; see `configsync history "
                         f"{agent_id}`)")
    sha = repo.resolve(to)
    report = check_tree(GitSource(repo, sha), repo_root=repo.top)
    if agent_id not in report.configs:
        why = "fails validation" if agent_id in report.agents else "does not exist"
        raise UsageError(f"{agent_id} {why} at {one_line(to)} ({sha[:12]}): nothing to roll "
                         "back to")
    digest = checksum(report.configs[agent_id])
    for v in reversed(live):
        if v.checksum == digest:
            return v
    raise UsageError(f"{agent_id}'s config at {one_line(to)} ({sha[:12]}) was never a version "
                     "on this branch (a commit of another branch?): roll back to a version "
                     f"from `configsync history {agent_id}`")


def _entries(repo: GitRepo, commit: str, paths: list[str]) -> dict[str, TreeEntry]:
    return {e.path: e for e in repo.ls_tree(commit, paths)} if paths else {}


def _dependencies(report: Report, now: Report, agent_id: str) -> list[str]:
    """The files besides the agent's own that shape its resolved config in ``report``: its
    bases and prompt file, and ``configsync.yaml`` when its ``schema:`` (the one setting that
    can change a resolved config: a model's defaults) differs from ``now``'s."""
    paths = [report.agents[base].path for base in report.chains.get(agent_id, ())[1:]
             if base in report.agents]
    if agent_id in report.prompt_of:
        paths.append(report.prompt_of[agent_id])
    if report.settings.schema_ != now.settings.schema_:
        paths.append(SETTINGS_FILE)
    return paths


def plan_rollback(repo: GitRepo, agent_id: str, to: str, *,
                  include_dependencies: bool = False,
                  redis_side: RedisSide | None = None,
                  versions: list[Version] | None = None) -> Rollback:
    """Work out the rollback (the tree to commit, or None when there is nothing to do).
    Raises UsageError for an unknown target, ConfigsyncError when the rollback would need
    another file restored (without ``include_dependencies``) or would not validate."""
    head = repo.resolve("HEAD")
    if versions is None:
        versions = agent_history(repo, head, agent_id)
    if not versions:
        known = sorted(check_tree(GitSource(repo, head), repo_root=repo.top).configs)
        raise UsageError(f"agent {one_line(agent_id)} has no version on this branch"
                         f"{did_you_mean(agent_id, known)}")
    target = _target(versions, to, repo, agent_id, redis_side)
    last = versions[-1]
    current = None if last.deleted else last
    plan = Rollback(agent_id, head, current, target)
    if redis_side is not None:
        plan.numbers = dict(redis_side.numbers.numbers)
        plan.next_version = max(redis_side.last, *plan.numbers.values(), 0) + 1
        asked = _VERSION.fullmatch(to)
        plan.asked = int(asked[1]) if asked else None
        plan.numbering = f"namespace {redis_side.namespace} in Redis"
    now = check_tree(GitSource(repo, head), repo_root=repo.top)
    if agent_id in now.configs and checksum(now.configs[agent_id]) == target.checksum:
        return plan  # already that config: nothing to commit
    then = check_tree(GitSource(repo, target.commit.sha), repo_root=repo.top)
    own = then.agents[agent_id].path
    updates: dict[str, TreeEntry | None] = dict(_entries(repo, target.commit.sha, [own]))
    for path in now.entries:  # the agent's file under another name (.yml for .yaml)
        if path != own and agent_id_for(path) == agent_id:
            updates[path] = None

    def check(tree: str) -> Report:
        """The candidate tree checked as the daemon will: against the head's report, only the
        files restored and the agents they bear on (the same result as a whole check)."""
        previous = None if now.errors else now
        return check_tree(GitSource(repo, tree), repo_root=repo.top, previous=previous,
                          changed=set(updates))

    tree = repo.write_tree(head, updates)
    report = check(tree)
    if report.configs.get(agent_id) is None or checksum(report.configs[agent_id]) \
            != target.checksum:
        wanted = _dependencies(then, now, agent_id)
        old, new = _entries(repo, target.commit.sha, wanted), _entries(repo, tree, wanted)
        differ = [p for p in wanted if (old.get(p) and old[p].sha) != (new.get(p) and new[p].sha)]
        if not differ:
            raise ConfigsyncError(_why_not(report, agent_id, own, target))
        for path in differ:
            updates[path] = old.get(path)
        tree = repo.write_tree(head, updates)
        report = check(tree)
        lineage = {agent_id, *then.chains.get(agent_id, ()), *report.chains.get(agent_id, ())}
        users = sorted((_users(now, differ) | _users(report, differ)) - lineage)
        if users and not include_dependencies:
            listed = ", ".join(users[:10]) + (f" and {len(users) - 10} more"
                                              if len(users) > 10 else "")
            one = len(differ) == 1
            raise ConfigsyncError(
                f"restoring {own} is not enough: {agent_id}'s v{target.version} also came from "
                f"{', '.join(differ)}, which changed since and {'is' if one else 'are'} shared "
                f"with {listed}; pass --include-dependencies to restore {'it' if one else 'them'}"
                " too, or edit by hand")
        if report.configs.get(agent_id) is None or checksum(report.configs[agent_id]) \
                != target.checksum:
            raise ConfigsyncError(_why_not(report, agent_id, own, target))
    if report.errors:
        first = report.errors[0]
        raise ConfigsyncError(
            f"the rolled-back tree would not validate, so the daemon would reject it "
            f"({plural(len(report.errors), 'error')}; first: {first.path}:{first.line}:"
            f"{first.column}: {one_line(first.message)})")
    before = _entries(repo, head, sorted(updates))
    moved = {p: e for p, e in updates.items()
             if (before[p].sha if p in before else None) != (e.sha if e else None)}
    plan.restored = sorted(p for p, e in moved.items() if e is not None)
    plan.removed = sorted(p for p, e in moved.items() if e is None)
    plan.others = sorted(a for a in set(report.configs) | set(now.configs)
                         if a != agent_id and not _same(now, report, a))
    plan.tree = tree
    return plan


def _why_not(report: Report, agent_id: str, own: str, target: Version) -> str:
    """Why restoring files does not give the agent ``target``'s config: its own file fails
    validation in the new tree (the first error says why: a tool or model the registry no
    longer has, say), or something outside the files changed (an installed schema: model)."""
    errors = [d for d in report.errors if d.path == own]
    if errors:
        first = errors[0]
        return (f"restoring {own} as of v{target.version} does not validate now: {first.path}:"
                f"{first.line}:{first.column}: {one_line(first.message)}; edit it by hand")
    return (f"cannot make {agent_id}'s resolved config equal v{target.version}'s by restoring "
            "files (did the installed schema: model or a .gitattributes change?); edit it by "
            "hand")


def _users(report: Report, paths: list[str]) -> set[str]:
    """The agents that the files ``paths`` shape in ``report``'s tree: a base file, every
    agent whose ``extends`` chain holds it (the base itself too); a prompt file, every agent
    that reads it (through a base too); ``configsync.yaml``, every agent."""
    by_path = {a.path: a.agent_id for a in report.agents.values()}
    users: set[str] = set()
    for path in paths:
        if path == SETTINGS_FILE:
            users |= set(report.configs)
        elif path in by_path:
            users |= report.dependents.get(by_path[path], frozenset())
        else:
            users |= report.prompt_users.get(path, frozenset())
    return users


def _same(a: Report, b: Report, agent_id: str) -> bool:
    if (agent_id in a.configs) != (agent_id in b.configs):
        return False
    return agent_id not in a.configs or checksum(a.configs[agent_id]) == checksum(
        b.configs[agent_id])


def run_rollback(args: argparse.Namespace) -> int:
    """``configsync rollback``; see the module docstring."""
    with open_repo() as repo:
        branch = repo.current_branch()
        if branch is None and not args.branch:
            raise UsageError("HEAD is detached: pass --branch NAME to commit the rollback on a "
                             "new branch")
        dirty = repo.dirty_paths()
        if dirty:
            raise ConfigsyncError(
                f"the working tree has uncommitted changes ({', '.join(dirty[:3])}"
                f"{' and more' if len(dirty) > 3 else ''}): commit or stash them first")
        redis_side = None
        versions = None
        if args.redis is not None:
            head = repo.resolve("HEAD")
            versions = agent_history(repo, head, args.agent)
            served = read_served(args, repo, head, args.agent, versions) if versions else None
            if served is not None:
                redis_side = RedisSide(served.numbers, served.last, served.namespace,
                                       frozenset(served.kept))
        plan = plan_rollback(repo, args.agent, args.to,
                             include_dependencies=args.include_dependencies,
                             redis_side=redis_side, versions=versions)
        commit = None
        pushed = None
        if plan.tree is not None:
            commit = repo.commit_tree(plan.tree, plan.head, plan.message(args.message))
            target_branch = args.branch or branch
            assert target_branch is not None
            if args.branch:
                repo.create_branch(args.branch, commit)
            else:
                repo.fast_forward(commit)
            if args.push:
                remote, upstream = (repo.upstream(target_branch) if not args.branch
                                    else ("origin", args.branch))
                try:
                    repo.push(remote, commit, upstream)
                except GitError as exc:
                    where = f"on branch {args.branch}" if args.branch else "here"
                    text = str(exc)
                    hint = ("the remote has commits this branch lacks: `git pull --rebase`, "
                            "then `git push`" if any(word in text for word in (
                                "rejected", "non-fast-forward", "fetch first"))
                            else "push it yourself when the remote is reachable")
                    raise ConfigsyncError(f"committed {commit[:12]} {where}, but the push "
                                          f"failed: {text}; {hint}") from None
                pushed = f"{remote}/{upstream}"
    _report(args, plan, commit, pushed)
    return 0


def _report(args: argparse.Namespace, plan: Rollback, commit: str | None,
            pushed: str | None) -> None:
    t = plan.target
    if args.format == "json":
        data: dict[str, Any] = {
            "agent_id": plan.agent_id, "commit": commit, "branch": args.branch, "pushed": pushed,
            "from": None if plan.current is None else {
                "version": plan.number(plan.current), "commit": plan.current.commit.sha},
            "to": {"version": plan.number(t), "commit": t.commit.sha, "checksum": t.checksum},
            "next_version": plan.next_version if commit else None,
            "restored": plan.restored, "removed": plan.removed, "also_changes": plan.others}
        sys.stdout.write(json_text(data))
        return
    if commit is None:
        sys.stdout.write(text_lines([f"{plan.agent_id} already has the config of "
                                     f"{plan.label(t)}: nothing to commit"]))
        return
    where = f"on new branch {args.branch}" if args.branch else "on the checked-out branch"
    to = plan.label(t)
    config = (f"{to}'s config ({t.commit.sha[:12]})" if to.startswith("v")
              else f"the config of {to}")
    synced = "" if plan.next_version is None else f"; synced, it is v{plan.next_version}"
    lines = [f"committed {commit[:12]} {where}: {plan.agent_id} back to {config}{synced}",
             f"restored: {', '.join(plan.restored)}"]
    if plan.others:
        lines.append(f"also changes: {', '.join(plan.others)}")
    if pushed:
        lines.append(f"pushed to {pushed}")
    elif args.branch:
        lines.append(f"next: git push origin {args.branch}, and open a pull request")
    else:
        lines.append("next: git push (the daemon syncs it from the remote)")
    sys.stdout.write(text_lines(lines))  # every line escaped: the restored paths too
