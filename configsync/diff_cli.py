"""``configsync diff``: what a change does to the agents' resolved configs.

Two trees are checked (``check_tree`` twice, no walk over the commits between them): BASE, a
commit (default: the merge-base of ``HEAD`` with the remote's default branch), and HEAD, a
commit or (default) the working tree. Each agent whose resolved config differs is ``added``,
``removed``, ``changed`` or ``invalid`` (its file is there on a side but fails validation:
never "removed"); a changed agent lists its changed fields, its ``system_prompt`` as a unified
diff, and the files the change came from (``compare.causes``), so an agent changed only
through a base, a prompt file or ``configsync.yaml`` says so. Unchanged agents are counted.
In the text and markdown, untrusted text never starts a line of its own: a prompt diff splits
at ``\n`` only and every line's content, like every value and error, is escaped (``one_line``).

Exit codes: 0 the diff was computed (changes or none); 1 a side fails validation (the diff of
the agents that resolved is still printed, with the errors; ``--agent`` filters the listing,
never the errors nor this verdict); 2 a usage mistake (unknown ref, not a git repository, no
commits yet, an ``--agent`` that names no agent on either side). ``--format json`` prints one
object::

    {"base": {"ref": "origin/main" | null, "sha": "<40 hex>", "short": "<12 hex>",
              "how": "merge-base of HEAD and origin/main, via origin/HEAD"},
     "head": {"ref": null, "sha": null, "short": null, "how": "working tree"},
     "agents": [{"agent_id": "support", "change": "added" | "removed" | "changed" | "invalid",
                 "invalid_on": [] | ["base"] | ["head"] | ["base", "head"],
                 "causes": [{"kind": "own" | "base" | "prompt" | "settings", "path": "..."}],
                 "fields": [{"path": "temperature", "kind": "added" | "removed" | "changed",
                             "old": 0.3, "new": 0.5}],
                 "prompt_diff": "--- support (base)\\n+++ support (head)\\n@@ ..." | null,
                 "same_as": "helpdesk" | null}],
     "unchanged": 3,
     "errors": {"base": [{"path", "line", "column", "severity", "message"}], "head": [...]}}

``fields`` leaves out ``system_prompt`` (``prompt_diff`` carries it); ``same_as`` pairs an
added agent with a removed one whose resolved config is the same (a renamed file), and
``errors`` holds each side's validation errors (a base with no config tree at all, a change
that adds the config folder, has none). ``--format markdown`` is
for a pull request comment or ``$GITHUB_STEP_SUMMARY``: every config value in it is escaped,
since it is text from the pull request, and it is kept to what GitHub holds (a comment 65,536
characters, a summary 1 MiB): a line of a prompt diff (or an error, id or label) shows
MD_LINE_CHARS (1,000) characters, and the whole at most MD_TOTAL_CHARS (60,000): past that the
agents' sections are left out (the first that does not fit is cut between rows, its code block
closed), the heading, counts, table and errors are kept, and a closing note says how many
agents were left out. Text and json are always complete.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compare import (
    ADDED,
    BASE,
    CHANGED,
    OWN,
    PROMPT,
    REMOVED,
    SETTINGS,
    Cause,
    FieldChange,
    causes,
    change_line,
    field_changes,
)
from .errors import UsageError
from .escape import json_text, one_line, text_lines
from .git import GitRepo
from .history import Version, agent_history
from .history_cli import Served, read_served
from .messages import did_you_mean, plural
from .repo import (
    FolderSource,
    GitSource,
    Source,
    agent_id_for,
    find_root,
)
from .snapshot import checksum
from .validate import Diagnostic, Report, check_tree

__all__ = ["AgentDiff", "Diff", "Side", "compute", "render", "run_diff"]

INVALID = "invalid"
PROMPT_FIELD = "system_prompt"
FIRST_ERRORS = 5
"""How many errors of a side the text and markdown summaries quote (json has them all)."""
MD_LINE_CHARS = 1_000
"""A line of a markdown prompt diff, an error, a label or an id shows at most this many
characters, then ``… (N more characters)``."""
DEFAULT_BRANCHES = ("main", "master")


@dataclass(frozen=True, slots=True)
class Side:
    """Which tree one side is: a commit (``sha``) or the working tree (``sha`` None), the ref
    it was named by, and how it was chosen."""

    sha: str | None
    ref: str | None
    how: str

    @property
    def short(self) -> str | None:
        return self.sha[:12] if self.sha else None

    def label(self) -> str:
        return f"{self.short} ({self.how})" if self.sha else self.how

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "sha": self.sha, "short": self.short, "how": self.how}


@dataclass(slots=True)
class AgentDiff:
    """One agent whose resolved config differs between the sides (or fails on one)."""

    agent_id: str
    change: str  # ADDED, REMOVED, CHANGED or INVALID
    causes: list[Cause]
    fields: list[FieldChange] = field(default_factory=list)
    prompt_diff: str | None = None
    invalid_on: list[str] = field(default_factory=list)
    same_as: str | None = None  # added/removed: the removed/added agent with the same config

    def why(self) -> str:
        """The change in words: where it came from, or on which side it fails."""
        own = [c for c in self.causes if c.kind == OWN]
        others = ", ".join(_cause_words(c) for c in self.causes if c.kind != OWN)
        only = f"changed only through {others}" if others and not own else ""
        if self.change == INVALID:
            valid = ", valid at head" if self.invalid_on == ["base"] else ""
            fails = f"fails validation at {' and '.join(self.invalid_on)}{valid}"
            return f"{fails}; {only}" if only else fails
        renamed = f", the same config as {self.same_as} (renamed?)" if self.same_as else ""
        if self.change == ADDED:
            return f"new file{renamed}"
        if self.change == REMOVED:
            return f"file deleted{renamed}"
        if not self.causes:
            return "no config file changed (an installed schema: model?)"
        return only or f"own file {own[0].path}" + (f", and {others}" if others else "")

    def to_json(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "change": self.change,
                "invalid_on": self.invalid_on, "causes": [c.to_json() for c in self.causes],
                "fields": [f.to_json() for f in self.fields], "prompt_diff": self.prompt_diff,
                "same_as": self.same_as}


def _cause_words(cause: Cause) -> str:
    if cause.kind == BASE:
        return f"base {agent_id_for(cause.path) or cause.path}"
    if cause.kind == PROMPT:
        return f"prompt {cause.path}"
    return cause.path if cause.kind == SETTINGS else f"{cause.kind} {cause.path}"


@dataclass(slots=True)
class Diff:
    """Everything ``configsync diff`` reports."""

    base: Side
    head: Side
    agents: list[AgentDiff]
    unchanged: int
    errors: dict[str, list[Diagnostic]]

    @property
    def exit_code(self) -> int:
        return 1 if any(self.errors.values()) else 0

    def counts(self) -> dict[str, int]:
        return {kind: sum(a.change == kind for a in self.agents)
                for kind in (ADDED, REMOVED, CHANGED, INVALID)}

    def summary(self) -> str:
        counts = self.counts()
        parts = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        if not self.agents:
            return f"no agent differs; {self.unchanged} unchanged"
        verb = "differs" if len(self.agents) == 1 else "differ"
        return f"{plural(len(self.agents), 'agent')} {verb} ({parts}); {self.unchanged} unchanged"

    def only(self, agent_ids: set[str], old: Report, new: Report) -> Diff:
        """This diff of ``agent_ids`` alone (``--agent``): the others are neither listed nor
        counted. Every error of both sides is kept, and so is the exit code: the daemon
        refuses a commit with an error in any file, so the listing is filtered, the verdict
        is not."""
        agents = [a for a in self.agents if a.agent_id in agent_ids]
        present = (set(old.configs) | set(new.configs)) & agent_ids
        listed = {a.agent_id for a in agents}
        return Diff(self.base, self.head, agents, len(present - listed), self.errors)

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base.to_json(), "head": self.head.to_json(),
                "agents": [a.to_json() for a in self.agents], "unchanged": self.unchanged,
                "errors": {side: [d.as_dict() for d in found]
                           for side, found in self.errors.items()}}


def _agent_files(report: Report) -> set[str]:
    """The ids of every agent file in the tree, whether it validated or not."""
    return {i for i in map(agent_id_for, report.entries) if i is not None}


def check_agent_ids(agent_ids: Sequence[str], old: Report, new: Report) -> None:
    """Raise UsageError for an ``--agent`` id that names no agent on either side (no resolved
    config, no agent file): a typo would otherwise print "no agent differs" and exit 0."""
    known = set(old.configs) | set(new.configs) | _agent_files(old) | _agent_files(new)
    for agent_id in agent_ids:
        if agent_id not in known:
            raise UsageError(f"--agent {agent_id}: no such agent at base or head"
                             f"{did_you_mean(agent_id, sorted(known))}")


def prompt_diff(agent_id: str, old: str, new: str) -> str:
    """A unified diff of two prompts, whole lines. A last line without a line break is marked
    as git marks it only when the other side has one (a change of the final newline alone
    still shows; an inline prompt, which has none on either side, is not marked)."""
    if not old.endswith("\n") and not new.endswith("\n"):
        old, new = old + "\n", new + "\n"
    lines = difflib.unified_diff(_lines(old), _lines(new), f"{agent_id} (base)",
                                 f"{agent_id} (head)")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _lines(text: str) -> list[str]:
    # split at \n only: a prompt may hold \r, U+2028 or a form feed inside a line
    lines = [line + "\n" for line in text.split("\n")]
    if lines[-1] == "\n":
        return lines[:-1]
    lines[-1] = lines[-1][:-1] + "\n\\ No newline at end of file\n"
    return lines


def compute(old: Report, new: Report, base: Side, head: Side) -> Diff:
    """The agents that differ between two checked trees, and the errors on each side."""
    agents: list[AgentDiff] = []
    unchanged = 0
    files_old, files_new = _agent_files(old), _agent_files(new)
    for agent_id in sorted(set(old.configs) | set(new.configs) | files_old | files_new):
        was, now = old.configs.get(agent_id), new.configs.get(agent_id)
        invalid_on = [side for side, files, config in (("base", files_old, was),
                                                       ("head", files_new, now))
                      if agent_id in files and config is None]
        if invalid_on:
            agents.append(AgentDiff(agent_id, INVALID, causes(agent_id, old, new),
                                    invalid_on=invalid_on))
        elif was is None or now is None:
            agents.append(AgentDiff(agent_id, ADDED if was is None else REMOVED,
                                    causes(agent_id, old, new)))
        elif checksum(was) == checksum(now):
            unchanged += 1
        else:
            item = AgentDiff(agent_id, CHANGED, causes(agent_id, old, new))
            item.fields = [f for f in field_changes(was, now) if f.path != PROMPT_FIELD]
            if was.get(PROMPT_FIELD) != now.get(PROMPT_FIELD):
                item.prompt_diff = prompt_diff(agent_id, str(was.get(PROMPT_FIELD) or ""),
                                               str(now.get(PROMPT_FIELD) or ""))
            agents.append(item)
    _pair_renames(agents, old, new)
    # a base with no config tree at all (this change adds the config folder) is empty, not
    # invalid; a head without one is an error: the daemon would refuse it
    errors = {"base": old.errors if old.entries else [], "head": new.errors}
    return Diff(base, head, agents, unchanged, errors)


def _pair_renames(agents: Sequence[AgentDiff], old: Report, new: Report) -> None:
    """Point each added agent and a removed one with the same resolved config at each other
    (a file renamed: for the daemon still a removal and an addition)."""
    removed = {checksum(old.configs[a.agent_id]): a for a in agents if a.change == REMOVED}
    for added in (a for a in agents if a.change == ADDED):
        twin = removed.pop(checksum(new.configs[added.agent_id]), None)
        if twin is not None:
            added.same_as, twin.same_as = twin.agent_id, added.agent_id


# -- choosing the sides -----------------------------------------------------------------------

def _short_ref(full: str) -> str:
    return full.removeprefix("refs/remotes/").removeprefix("refs/heads/")


def default_base(repo: GitRepo) -> Side:
    """The merge-base of HEAD with the remote's default branch: the branch
    ``refs/remotes/origin/HEAD`` names, else the current branch's upstream, else
    ``origin/main`` or ``origin/master``; with none of them, HEAD itself."""
    head = repo.resolve("HEAD")
    target, why = repo.symbolic_target("refs/remotes/origin/HEAD"), "via origin/HEAD"
    branch = repo.current_branch()
    if target is None and branch is not None:
        target, why = repo.upstream_of(branch), f"the upstream of {branch}"
    if target is None:
        target = next((f"refs/remotes/origin/{name}" for name in DEFAULT_BRANCHES
                       if repo.has_commit(f"refs/remotes/origin/{name}")), None)
        why = ""
    if target is None:
        return Side(head, "HEAD", "HEAD: no origin/HEAD, upstream, origin/main or "
                                  "origin/master to compare with")
    name = _short_ref(target)
    if not repo.has_commit(target):
        raise UsageError(f"{name} ({why}) names no commit here: git fetch, or give BASE")
    found = repo.merge_base(head, repo.resolve(target))
    if found is None:
        shallow = " (this is a shallow clone: fetch the history, e.g. fetch-depth: 0)" \
            if repo.is_shallow() else ""
        raise UsageError(f"HEAD and {name} share no commit{shallow}; give BASE")
    return Side(found, name, f"merge-base of HEAD and {name}" + (f", {why}" if why else ""))


@contextmanager
def _sides(base_ref: str | None, head_ref: str | None,
           redis_args: argparse.Namespace | None = None
           ) -> Iterator[tuple[Side, Source, Side, Source, Path]]:
    """Both sides of the diff, as sides and sources, and the config root's folder."""
    root = find_root(os.curdir)
    with GitRepo(root.folder) as repo:
        if not repo.has_commits():
            raise UsageError("the repository has no commits yet: there is no base to compare "
                             "with; commit first")
        if head_ref is None and repo.bare:
            raise UsageError(f"{repo.git_dir} is a bare repository: it has no working tree to "
                             "compare; give BASE and HEAD")
        given = _Given(repo, redis_args)
        base = default_base(repo) if base_ref is None else given.side(base_ref)
        head = Side(None, None, "working tree") if head_ref is None else given.side(head_ref)
        head_source: Source = (FolderSource(root.folder) if head.sha is None
                               else GitSource(repo, head.sha))
        yield base, GitSource(repo, base.sha or ""), head, head_source, root.folder


AGENT_VERSION = re.compile(r"(?P<agent>[a-z0-9][a-z0-9._/-]*)@[vV](?P<version>[0-9]+)")
"""``support@v7``: the commit that made version 7 of agent ``support`` (by ``configsync
history``'s numbering, the daemon's), where a BASE or HEAD commit is expected."""


def agent_version(text: str) -> tuple[str, int] | None:
    """The agent and version ``text`` names as ``AGENT@vN``, or None."""
    match = AGENT_VERSION.fullmatch(text)
    return None if match is None else (match["agent"], int(match["version"]))


class _Given:
    """BASE and HEAD as given: commits, or ``AGENT@vN``. Both sides of ``a@v1 a@v5`` share one
    replay of the branch and one read of Redis for the agent."""

    def __init__(self, repo: GitRepo, redis_args: argparse.Namespace | None) -> None:
        self.repo = repo
        self.redis_args = redis_args if redis_args is not None and \
            redis_args.redis is not None else None
        self.head = repo.resolve("HEAD")
        self.histories: dict[str, list[Version]] = {}
        self.served: dict[str, Served] = {}

    def side(self, ref: str) -> Side:
        named = agent_version(ref)
        if named is None:
            loose = re.fullmatch(r"(.+)@([0-9]+)", ref)
            try:
                return Side(self.repo.resolve(ref), ref, f"{ref}, given")
            except UsageError:
                if loose is None:
                    raise
                raise UsageError(f"unknown git ref: {one_line(ref)}; for version {loose[2]} "
                                 f"of {one_line(loose[1])}, write {one_line(loose[1])}@v"
                                 f"{loose[2]}") from None
        agent_id, number = named
        history = self.history(agent_id, ref)
        if self.redis_args is not None:
            return self._in_redis(ref, agent_id, number, history)
        versions = [v for v in history if not v.deleted]
        for v in versions:
            if v.version == number:
                return Side(v.commit.sha, ref,
                            f"{agent_id} v{number}: {one_line(v.commit.message)}")
        have = (f"it has versions {versions[0].version}-{versions[-1].version}"
                if len(versions) > 1 else f"it has version {versions[0].version}" if versions
                else "it has no version on HEAD")
        raise UsageError(f"{ref}: {agent_id} has no version {number} ({have}; see `configsync "
                         f"history {agent_id}`)")

    def history(self, agent_id: str, ref: str) -> list[Version]:
        if agent_id not in self.histories:
            repo = self.repo
            history = agent_history(repo, self.head, agent_id, repo_root=repo.top)
            if not history:
                known = sorted(check_tree(GitSource(repo, self.head),
                                          repo_root=repo.top).configs)
                raise UsageError(f"{ref}: no agent {agent_id} on this branch"
                                 f"{did_you_mean(agent_id, known)}")
            self.histories[agent_id] = history
        return self.histories[agent_id]

    def _in_redis(self, ref: str, agent_id: str, number: int,
                  history: list[Version]) -> Side:
        """``AGENT@vN`` as Redis numbers it (``--redis``): the commit the daemon applied for
        that version when this clone has it (a commit a force-push dropped, if fetched
        before), else the commit of the version on the branch with its config."""
        if agent_id not in self.served:
            assert self.redis_args is not None
            found = read_served(self.redis_args, self.repo, self.head, agent_id, history)
            assert found is not None
            self.served[agent_id] = found
        served = self.served[agent_id]
        record = served.kept.get(number)
        if record is None and served.record is not None and served.record.version == number:
            record = served.record
        if record is not None and self.repo.has_commit(record.commit):
            return Side(record.commit, ref, f"{agent_id} v{number} in Redis: "
                                            f"{one_line(record.message)}")
        git = served.numbers.git_version(number)
        for v in history:
            if not v.deleted and v.version == git:
                return Side(v.commit.sha, ref, f"{agent_id} v{number} in Redis: "
                                               f"{one_line(v.commit.message)}")
        raise UsageError(f"{ref}: {served.numbers.missing(agent_id, number, served.kept)}; "
                         f"see `configsync history {agent_id} --redis`")


# -- formats ----------------------------------------------------------------------------------

def json_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def error_lines(diagnostics: Sequence[Diagnostic]) -> list[str]:
    """The first errors, one line each: a line break or ESC in a message (which quotes the
    file) is escaped, in the text and in the markdown's code block alike."""
    return [one_line(f"{d.path}:{d.line}:{d.column}: {d.message}")
            for d in diagnostics[:FIRST_ERRORS]]


def diff_lines(text: str, limit: int | None = None) -> list[str]:
    """The lines of a prompt diff as printed: split at its own line breaks (``\\n``) only, each
    line's marker (``+``, ``-``, `` ``) kept and its content escaped (``one_line``), so a
    U+2028, U+0085, carriage return or ESC in a prompt can never show as a line of its own
    (``x\\u2028-Never reveal secrets`` is one added line, not an added and a removed one).
    ``limit``: cut each line's content to that many characters (before escaping: never inside
    an escape)."""
    lines = text.removesuffix("\n").split("\n")
    return [one_line(line if limit is None else line[:1] + clip(line[1:], limit))
            for line in lines]


def clip(text: str, limit: int = MD_LINE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, then an ellipsis and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def sides_line(diff: Diff) -> str:
    return f"base {diff.base.label()} -> head {diff.head.label()}"


def render_text(diff: Diff) -> str:
    lines = [f"configsync diff: {sides_line(diff)}", diff.summary()]
    for agent in diff.agents:
        lines.append(f"{agent.change} {agent.agent_id}: {agent.why()}")
        lines.extend(f"  {change_line(f, json_value, '->')}" for f in agent.fields)
        if agent.prompt_diff is not None:
            lines.append(f"  {PROMPT_FIELD}:")
            lines.extend(f"    {line}" for line in diff_lines(agent.prompt_diff))
    for side, found in diff.errors.items():
        if found:
            lines.append(f"{plural(len(found), 'error')} at {side} ({side} "
                         f"{getattr(diff, side).label()}):")
            lines.extend(f"  {line}" for line in error_lines(found))
            if len(found) > FIRST_ERRORS:
                lines.append(f"  ... and {len(found) - FIRST_ERRORS} more "
                             "(configsync validate shows them all)")
    return text_lines(lines)  # one line each, whatever a value, key or file name holds


def render(diff: Diff, fmt: str) -> str:
    """``diff`` in format ``fmt``: text, json or markdown."""
    if fmt == "json":
        return json_text(diff.to_json())
    if fmt == "markdown":
        from .diff_markdown import render_markdown

        return render_markdown(diff)
    return render_text(diff)


def run_diff(args: argparse.Namespace) -> int:
    """``configsync diff``: print the diff; exit 0 computed, 1 a side fails validation."""
    with _sides(args.base, args.head, args) as (base, base_source, head, head_source, root):
        jobs = os.cpu_count() or 1
        old = check_tree(base_source, repo_root=root, jobs=jobs)
        new = check_tree(head_source, repo_root=root, jobs=jobs)
    diff = compute(old, new, base, head)
    wanted = set(args.agent or ())
    named = {n[0] for n in map(agent_version, (args.base or "", args.head or "")) if n}
    if not wanted and len(named) == 1 and all(agent_version(r or "") for r in
                                               (args.base, args.head)):
        wanted = named  # support@v7 support@v9: what changed in that agent
    check_agent_ids(args.agent or (), old, new)
    if wanted:
        diff = diff.only(wanted, old, new)
    sys.stdout.write(render(diff, args.format))
    return diff.exit_code

