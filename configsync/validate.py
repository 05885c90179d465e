"""Every check over a config tree, reported all at once with file, line and column.

:func:`check_tree` reads a :class:`~configsync.repo.Source` (a folder or a commit), validates
``configsync.yaml``, every agent file and every cross-file rule (unique ids, ``extends``, prompt
files, tools, models), and returns a :class:`Report`: the diagnostics, sorted, and the fully
resolved config of every agent that passed. The sync daemon validates with the same function.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .attributes import ATTRIBUTES_NAME, Filtered, filtered_paths
from .errors import SchemaImportError
from .loader import Document, YamlError, load_yaml
from .messages import (
    SECRET_HINT_BYTES,
    SECRETS,
    ambiguity_message,
    describe,
    did_you_mean,
    dotted,
    fields_at,
    find_secret,
    has_visible_text,
    portability_message,
    secret_message,
    settings_shape_hint,
    show,
)
from .model import AGENT_ID, PROMPT_SOURCE, AgentConfig, RepoSettings, is_dev_namespace
from .parallel import fork_map
from .repo import (
    AGENT_SUFFIXES,
    LFS_POINTER,
    SETTINGS_FILE,
    AgentFile,
    Entry,
    Source,
    agent_id_for,
    deep_merge,
    has_path,
)
from .schema import load_agent_model
from .snapshot import non_portable

__all__ = ["ERROR", "WARNING", "Diagnostic", "Report", "check_tree", "related_paths"]

ERROR = "error"
WARNING = "warning"

_PROMPT_KEYS = ("system_prompt", "system_prompt_file")

_LFS_HINT = ("git stores a pointer and the daemon would serve it; keep config files out of "
             "LFS (remove their pattern from .gitattributes and commit them again)")
_FILTER_HINT = ("git stores what the filter makes, and the daemon would serve it; keep config "
                "files out of filters (remove their pattern from .gitattributes and commit them "
                "again)")


def _is_attributes(path: str) -> bool:
    return path == ATTRIBUTES_NAME or path.endswith("/" + ATTRIBUTES_NAME)

_EXTENDS_HINT = ("; an agent extends one base, its id (to build on several, let each base "
                 "extend the next)")

MAX_EXTENDS = 32
"""Most bases an agent's ``extends`` chain may have."""



@dataclass(frozen=True, order=True, slots=True)
class Diagnostic:
    """One problem: ``path:line:column: severity: message`` (line and column are 1-based)."""

    path: str
    line: int
    column: int
    severity: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "column": self.column,
                "severity": self.severity, "message": self.message}


@dataclass(slots=True)
class Report:
    """What :func:`check_tree` found, and the resolved configs of the agents that passed.

    The rest is what a later incremental check (``previous=``) reuses: the tree's entries, the
    parsed agent files, each valid agent's ``extends`` chain and prompt file, prompt texts.
    """

    diagnostics: list[Diagnostic]
    configs: dict[str, dict[str, Any]]
    settings: RepoSettings
    files: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)
    agents: dict[str, AgentFile] = field(default_factory=dict)
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    prompt_of: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    model: type[AgentConfig] = AgentConfig
    dependents: dict[str, frozenset[str]] = field(default_factory=dict)  # id -> chains with it
    prompt_users: dict[str, frozenset[str]] = field(default_factory=dict)  # path -> agents
    rechecked: frozenset[str] | None = None  # agents looked at again (None: all of them)
    attributes: dict[str, str] = field(default_factory=dict)  # each .gitattributes: its text

    def index(self) -> None:
        """Build the reverse indexes (base id and prompt path -> agents) from scratch."""
        dependents: dict[str, set[str]] = {}
        users: dict[str, set[str]] = {}
        for agent_id, chain in self.chains.items():
            for member in chain:
                dependents.setdefault(member, set()).add(agent_id)
        for agent_id, path in self.prompt_of.items():
            users.setdefault(path, set()).add(agent_id)
        self.dependents = {k: frozenset(v) for k, v in dependents.items()}
        self.prompt_users = {k: frozenset(v) for k, v in users.items()}

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == WARNING]


def check_tree(source: Source, *, repo_root: Path | None = None, jobs: int = 1,
               previous: Report | None = None,
               changed: Collection[str] | None = None) -> Report:
    """Validate everything in ``source``.

    ``repo_root`` is the repository's folder on disk (a custom ``schema:`` is never imported from
    inside it). ``jobs`` > 1 parses YAML in that many forked processes: only for a process
    with no other threads, such as the CLI.

    ``previous`` (the report of an earlier tree that passed) with ``changed`` (the paths that
    differ from it, from ``git diff-tree``) makes the check incremental: only changed files are
    read, and only agents whose own file, a base in their ``extends`` chain or their prompt file
    changed are validated again, so the cost follows the change, not the repository's size.
    When ``configsync.yaml`` changed, or either is missing, everything is checked. The result
    is the same as a full check.
    """
    # Thousands of node graphs stay alive while checking; the cyclic GC would re-scan them all
    # on every generation-0 collection (5x slower at 10,000 files). Nothing here makes cycles
    # that outlive the call, so collect once at the end instead.
    enabled = gc.isenabled()
    gc.disable()
    try:
        checker = _Checker(source, repo_root, jobs)
        if (previous is not None and changed is not None and SETTINGS_FILE not in changed
                and not any(_is_attributes(path) for path in changed)):
            return checker.run_changes(previous, changed)
        return checker.run()
    finally:
        if enabled:
            gc.enable()


def related_paths(report: Report, paths: Collection[str]) -> set[str] | None:
    """``paths`` and every file whose verdict they bear on or that bears on theirs: an agent
    file of the same id (a duplicate is reported at one of the two), a named agent's bases and
    prompt files (a broken base fails the agent: one verdict with a plain ``validate``), and
    the agents whose ``extends`` chain holds one of them or whose prompt file is one. None
    (everything) when ``configsync.yaml`` or a ``.gitattributes`` is among them: they bear on
    every file."""
    named = set(paths)
    if SETTINGS_FILE in named or any(_is_attributes(path) for path in named):
        return None
    related = named | {twin for path in named for twin in _twins(path)}
    for agent in report.agents.values():  # what a named agent stands on: its bases, prompts
        if agent.path not in named:
            continue
        upstream: AgentFile | None = agent
        while upstream is not None and upstream.path not in related - {agent.path}:
            related.add(upstream.path)
            prompt = upstream.doc.data.get("system_prompt_file")
            if isinstance(prompt, str):
                related.add(prompt)
            base = upstream.doc.data.get("extends")
            upstream = report.agents.get(base) if isinstance(base, str) else None
    for agent in report.agents.values():
        seen: set[str] = set()
        current: AgentFile | None = agent
        while current is not None and current.agent_id not in seen:
            seen.add(current.agent_id)
            data = current.doc.data
            prompt = data.get("system_prompt_file")
            if current.path in named or (isinstance(prompt, str) and prompt in named):
                related.add(agent.path)
                break
            base = data.get("extends")
            current = report.agents.get(base) if isinstance(base, str) else None
    return related


@dataclass
class _Resolved:
    agent: AgentFile
    chain: list[AgentFile]
    config: AgentConfig


@dataclass
class _Checker:
    source: Source
    repo_root: Path | None
    jobs: int = 1
    found: set[Diagnostic] = field(default_factory=set)
    settings: RepoSettings = field(default_factory=RepoSettings)
    # the prompt files of agents that failed the model: still checked (every error, not the
    # first: issue 17, red team's item 7)
    unchecked_prompts: list[tuple[list[AgentFile], str]] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    model: type[AgentConfig] = AgentConfig
    agents: dict[str, AgentFile] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    merges: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent id → its merge
    attributes: dict[str, str] = field(default_factory=dict)  # each .gitattributes: its text
    filtered: dict[str, Filtered] = field(default_factory=dict)  # config files git filters
    in_lfs: set[str] = field(default_factory=set)  # paths already reported as filtered

    ambiguous: set[tuple[str, tuple[str | int, ...]]] = field(default_factory=set)

    def report(self, path: str, line: int, column: int, message: str,
               severity: str = ERROR) -> None:
        self.found.add(Diagnostic(path, line, column, severity, message))

    def check_ambiguous(self, path: str, doc: Document, free_text: Callable[
            [tuple[str | int, ...]], bool]) -> None:
        """A plain scalar that YAML 1.1 readers read otherwise than YAML 1.2 (``yes``,
        ``0644``, ``1:20``): an error in a typed field, a warning in free text (issue 10).
        An error there is the one error for that value: pydantic's is not added."""
        for item in doc.ambiguous:
            free = free_text(item.path)
            name = dotted(list(item.path))
            self.report(path, item.line, item.column,
                        f"{name}: {ambiguity_message(item)}", WARNING if free else ERROR)
            if not free:
                self.ambiguous.add((path, item.path))

    def kind_problem(self, entry: Entry) -> None:
        """Only regular files committed in this repository make a config tree."""
        if entry.kind == "symlink":
            self.report(entry.path, 1, 1, "is a symlink; configsync never follows symlinks: "
                        "commit the file itself")
        elif entry.kind == "submodule":
            self.report(entry.path, 1, 1, "is a git submodule: configsync reads only files "
                        "committed in this repository (git stores a submodule as a pointer); "
                        "copy the files in, or use git subtree")
        elif entry.kind != "file":
            self.report(entry.path, 1, 1, "is not a regular file")
        else:
            found = self.filtered.get(entry.path)
            if found is not None:
                lfs = found.filter == "lfs"
                kind = "with Git LFS" if lfs else f"through the `{found.filter}` filter"
                self.report(entry.path, 1, 1, f"is stored {kind} ({found.file} line {found.line}: "
                            f"`{found.pattern}`, filter={found.filter}): "
                            f"{_LFS_HINT if lfs else _FILTER_HINT}")
                self.in_lfs.add(entry.path)

    def read_attributes(self, entries: Sequence[Entry]) -> None:
        """Which config files git stores through a filter, from every .gitattributes."""
        files = [e for e in entries if e.kind == "file" and _is_attributes(e.path)]
        self.attributes = {e.path: raw.decode("utf-8", "replace")
                           for e, raw in self.source.read(files)}
        self.find_filtered(entries)

    def find_filtered(self, entries: Iterable[Entry]) -> None:
        paths = [e.path for e in entries if e.kind == "file" and not _is_attributes(e.path)]
        self.filtered = filtered_paths(self.attributes, paths) if self.attributes else {}

    def run(self) -> Report:
        entries = self.source.entries()
        by_path = {e.path: e for e in entries}
        self.read_attributes(entries)
        for entry in entries:
            self.kind_problem(entry)
        self.check_settings(by_path.get(SETTINGS_FILE))
        agent_entries = self.agent_entries(entries)
        loaded = fork_map(self.load_agents, agent_entries, jobs=self.jobs)
        for entry, (doc, maybe_secret) in zip(agent_entries, loaded, strict=True):
            self.take_agent(entry, doc, maybe_secret)
        configs: dict[str, dict[str, Any]] = {}
        report = Report([], configs, self.settings, len(agent_entries) + 1, by_path,
                        self.agents, model=self.model, attributes=self.attributes)
        self.resolve_into(report, sorted(self.agents), None)
        report.configs = dict(sorted(configs.items()))
        report.diagnostics = sorted(self.found)
        report.index()
        return report

    def run_changes(self, previous: Report, changed: Collection[str]) -> Report:
        """The incremental check: start from ``previous`` (a tree that passed) and look only at
        the ``changed`` paths and the agents that depend on them."""
        by_path = _by_path(self.source)
        self.settings, self.model = previous.settings, previous.model
        self.context = {"settings": self.settings}
        self.agents = dict(previous.agents)
        self.attributes = previous.attributes
        self.find_filtered(by_path[p] for p in changed if p in by_path)
        touched: set[str] = set()
        to_load: list[Entry] = []
        files = previous.files
        for path in sorted(changed):
            entry = by_path.get(path)
            if entry is not None:
                self.kind_problem(entry)
            agent_id = agent_id_for(path)
            if agent_id is None:
                continue
            touched.add(agent_id)
            files += (entry is not None and entry.kind == "file") - (path in previous.entries)
            held = self.agents.get(agent_id)
            if held is not None and held.path == path:
                del self.agents[agent_id]
            if entry is not None and entry.kind == "file" and self.agent_entries([entry]):
                twin = next((by_path[p] for p in _twins(path) if p in by_path), None)
                if twin is not None and twin.kind == "file":
                    first, second = sorted([entry.path, twin.path])
                    self.report(second, 1, 1, f"agent id `{agent_id}` is also defined by {first}")
                    self.broken.add(agent_id)
                    continue
                to_load.append(entry)
        loaded = fork_map(self.load_agents, to_load, jobs=self.jobs)  # (a big commit: parse
        for entry, (doc, maybe_secret) in zip(to_load, loaded, strict=True):  # on every core)
            self.take_agent(entry, doc, maybe_secret)
        dirty: set[str] = set()
        for agent_id in touched:
            dirty |= previous.dependents.get(agent_id, frozenset())
            dirty.add(agent_id)
        for path in changed:
            dirty |= previous.prompt_users.get(path, frozenset())
        configs = dict(previous.configs)
        chains = dict(previous.chains)
        prompt_of = dict(previous.prompt_of)
        for agent_id in dirty:
            configs.pop(agent_id, None)
            chains.pop(agent_id, None)
            prompt_of.pop(agent_id, None)
        report = Report([], configs, self.settings, files, by_path, self.agents, chains,
                        prompt_of, dict(previous.prompts), self.model,
                        rechecked=frozenset(dirty), attributes=previous.attributes)
        self.resolve_into(report, sorted(a for a in dirty if a in self.agents), previous)
        report.diagnostics = sorted(self.found)
        report.dependents, report.prompt_users = _patched_indexes(previous, report, dirty)
        return report

    def resolve_into(self, report: Report, agent_ids: Iterable[str],
                     previous: Report | None) -> None:
        """Resolve ``agent_ids`` and record each one that passes in ``report``."""
        self.unchecked_prompts = []
        resolved = [r for r in map(self.resolve, agent_ids) if r is not None]
        prompts = self.read_prompts(resolved, report.entries, previous)
        for chain, path in self.unchecked_prompts:
            self.missing_prompt(chain, path, report.entries)
        for item in resolved:
            config = self.finish(item, prompts)
            if config is None:
                continue
            agent_id = item.agent.agent_id
            report.configs[agent_id] = config
            report.chains[agent_id] = tuple(a.agent_id for a in item.chain)
            prompt_file = item.config.system_prompt_file
            if prompt_file is not None:
                report.prompt_of[agent_id] = prompt_file
                report.prompts[prompt_file] = config["system_prompt"]

    # -- configsync.yaml -------------------------------------------------------------------

    def check_settings(self, entry: Entry | None) -> None:
        if entry is None or entry.kind != "file":
            if entry is None:
                self.report(SETTINGS_FILE, 1, 1, f"no {SETTINGS_FILE} at the repository root; "
                            "create it (`namespace: default` is enough to start)")
            return
        raw = next(iter(self.source.read([entry])))[1]
        try:
            doc = self.parse(SETTINGS_FILE, raw, RepoSettings().limits.max_file_bytes)
        except YamlError as exc:
            if SETTINGS_FILE not in self.in_lfs:
                self.report(SETTINGS_FILE, exc.line, exc.column, exc.message)
            return
        if doc.ambiguous:
            self.check_ambiguous(SETTINGS_FILE, doc,
                                 lambda p: p[:1] == ("tools",) and p[-1:] == ("description",))
        try:
            self.settings = RepoSettings.model_validate(doc.data)
        except ValidationError as exc:
            for err in exc.errors():
                self.pydantic_error(err, [AgentFile("", SETTINGS_FILE, doc)], RepoSettings,
                                    hint=settings_shape_hint(err["loc"], err.get("input")))
            return
        self.context = {"settings": self.settings}
        if is_dev_namespace(self.settings.namespace):  # an error: a daemon that applied it
            # would refuse its namespace at every restart (issue 17), so no commit may name one
            self.report(SETTINGS_FILE, *doc.locate(["namespace"]),
                        f"namespace: `{self.settings.namespace}` ends in -dev, which marks a "
                        "configsync dev namespace: a sync daemon never writes one (name the "
                        "production namespace; configsync dev adds -dev itself)")
        try:
            self.model = load_agent_model(self.settings.schema_, self.repo_root)
        except SchemaImportError as exc:
            self.report(SETTINGS_FILE, *doc.locate(["schema"]), f"schema: {exc}")

    # -- agent files -----------------------------------------------------------------------

    def agent_entries(self, entries: Iterable[Entry]) -> list[Entry]:
        limit = self.settings.limits.max_file_bytes
        chosen: dict[str, Entry] = {}
        for entry in entries:
            agent_id = agent_id_for(entry.path)
            if agent_id is None or entry.kind != "file":
                continue
            if not AGENT_ID.fullmatch(agent_id):
                self.report(entry.path, 1, 1, f"`{agent_id}` is not a valid agent id: each part "
                            "of the path under agents/ must match [a-z0-9][a-z0-9._-]*")
            elif agent_id in chosen:
                self.report(entry.path, 1, 1, f"agent id `{agent_id}` is also defined by "
                            f"{chosen[agent_id].path}")
            elif entry.size > limit:
                self.report(entry.path, 1, 1, f"file is {entry.size} bytes, over the limit of "
                            f"{limit} (limits.max_file_bytes in {SETTINGS_FILE})")
                self.broken.add(agent_id)
            else:
                chosen[agent_id] = entry
        return list(chosen.values())

    @staticmethod
    def parse(path: str, raw: bytes, limit: int) -> Document:
        """``load_yaml``, and a Git LFS pointer said for what it is (both raise YamlError)."""
        if raw.startswith(LFS_POINTER):
            raise YamlError(f"is a Git LFS pointer, not the file: {_LFS_HINT}")
        return load_yaml(raw, max_bytes=limit)

    def load_agents(self, entries: Sequence[Entry]) -> list[tuple[Document | YamlError, bool]]:
        """Read and parse agent files (in a forked child, for a big tree: keep it pure)."""
        limit = self.settings.limits.max_file_bytes
        done: dict[str, tuple[Document | YamlError, bool]] = {}
        for entry, raw in self.source.read(entries):
            try:
                done[entry.path] = self.parse(entry.path, raw, limit), bool(
                    SECRET_HINT_BYTES.search(raw))
            except YamlError as exc:
                done[entry.path] = exc, False
        return [done[entry.path] for entry in entries]

    def take_agent(self, entry: Entry, doc: Document | YamlError, maybe_secret: bool) -> None:
        agent_id = agent_id_for(entry.path)
        assert agent_id is not None
        if isinstance(doc, YamlError):
            if entry.path not in self.in_lfs:  # (said once: "is stored with Git LFS")
                self.report(entry.path, doc.line, doc.column, doc.message)
            self.broken.add(agent_id)
            return
        self.agents[agent_id] = AgentFile(agent_id, entry.path, doc)
        if doc.ambiguous:
            self.check_ambiguous(entry.path, doc, lambda p: p[:1] == ("metadata",))
        if maybe_secret:
            self.scan_secrets(entry.path, doc, doc.data, [])

    def chain(self, agent: AgentFile) -> list[AgentFile] | None:
        """``agent`` and its bases, nearest first; None (reported) when ``extends`` is broken.

        At most MAX_EXTENDS bases: cost stays linear in the number of files (a chain of 3,000
        one-line files took minutes), and no real configuration needs more.
        """
        chain = [agent]
        members = {agent.agent_id}
        while True:
            current = chain[-1]
            base_id = current.doc.data.get("extends")
            if not isinstance(base_id, str):
                return chain  # absent, or a type error the model reports
            base = self.agents.get(base_id)
            if not AGENT_ID.fullmatch(base_id):
                self.report(current.path, *current.doc.locate(["extends"]), "extends: must be an "
                            "agent id, the path of its file under agents/ without .yaml (got "
                            f"{show(base_id)})")
                return None
            if base is None:
                if base_id not in self.broken:
                    hint = did_you_mean(base_id, self.agents) or (
                        f" (known: {', '.join(sorted(self.agents)[:10])})" if self.agents else "")
                    self.report(current.path, *current.doc.locate(["extends"]),
                                f"extends: no agent `{base_id}`{hint}")
                return None
            if base_id in members:
                ids = [a.agent_id for a in chain]
                cycle = " → ".join([*ids[ids.index(base_id):], base_id])
                self.report(current.path, *current.doc.locate(["extends"]),
                            f"extends: cycle {cycle}")
                return None
            if len(chain) > MAX_EXTENDS:
                ids = [a.agent_id for a in chain] + [base_id]
                shown = " → ".join([*ids[:3], "…", *ids[-2:]])
                self.report(agent.path, *agent.doc.locate(["extends"]),
                            f"extends: more than {MAX_EXTENDS} bases ({shown}); make the chain "
                            "shorter")
                return None
            chain.append(base)
            members.add(base_id)

    def resolve(self, agent_id: str) -> _Resolved | None:
        agent = self.agents[agent_id]
        chain = self.chain(agent)
        if chain is None:
            return None
        merged = self.merged(chain)
        unportable = self.portable(chain, merged)
        try:
            config = self.model.model_validate(merged, context=self.context)
        except ValidationError as exc:
            # a number already reported as not portable gets no second line from pydantic
            # (`temperature: .nan` is not also "must be at most 2"); an unknown key still does
            errors = [e for e in exc.errors() if e["type"] == "extra_forbidden"
                      or not any(tuple(e["loc"][:len(u)]) == u for u in unportable)]
            prompts = sum(merged.get(key) is not None for key in _PROMPT_KEYS)
            # `extends` that is not an id (`extends: [a, b]`) is the root cause: what a base
            # would have supplied (a model, a prompt) is not reported missing as well
            unknown_base = chain[-1].doc.data.get("extends") is not None
            if unknown_base:
                errors = [e for e in errors if e["type"] != "missing" and not (
                    e["type"] == "prompt_source" and prompts == 0)]
            if (prompts > 1 or (prompts == 0 and not unknown_base)) and not any(
                    e["type"] == "prompt_source" for e in errors):
                # pydantic skips model validators after a field error; report all problems
                errors.append(ErrorDetails(type="prompt_source", loc=(), input=merged,
                                           msg=PROMPT_SOURCE))
            for err in errors:
                self.pydantic_error(err, chain, self.model, hint=_EXTENDS_HINT if (
                    tuple(err["loc"]) == ("extends",) and err["type"] == "string_type") else "")
            self.note_prompt(chain, merged, errors)
            return None
        except Exception as exc:  # the `schema:` model's own code failed (issue 17): said here
            self.report(agent.path, 1, 1, f"schema: `{_model_name(self.model)}` raised "
                        f"{type(exc).__name__} validating this agent: {exc}")
            return None
        if unportable:
            return None
        return _Resolved(agent, chain, config)

    def portable(self, chain: Sequence[AgentFile], data: Any, *,
                 made_by: str | None = None) -> list[tuple[str | int, ...]]:
        """Report every number in ``data`` that JSON cannot carry to readers in other
        languages (NaN, infinities, integers beyond ±(2^53-1)), at the file in ``chain`` that
        wrote it; return their paths. ``made_by``: the model that made ``data`` (its dump)."""
        found = []
        for loc, value in non_portable(data):
            origin, (line, column) = _origin(chain, loc)
            source = origin.doc.source(loc) if made_by is None else None
            self.report(origin.path, line, column, f"{dotted(loc)}: "
                        f"{portability_message(value, made_by=made_by, source=source)}")
            found.append(tuple(loc))
        return found

    def merged(self, chain: Sequence[AgentFile]) -> dict[str, Any]:
        """The deep merge of ``chain`` (nearest first), each base's merge made once and kept:
        N agents that share bases cost N merges, not N times the chain's length."""
        head = chain[0]
        if len(chain) == 1:
            return head.doc.data
        found = self.merges.get(head.agent_id)
        if found is None:
            base = self.merged(chain[1:])
            data = head.doc.data
            if any(key in data for key in _PROMPT_KEYS):  # a prompt replaces the inherited one
                base = {k: v for k, v in base.items() if k not in _PROMPT_KEYS}
            found = self.merges[head.agent_id] = deep_merge(base, data)
        return found

    def pydantic_error(self, err: ErrorDetails, chain: Sequence[AgentFile],
                       model: type[BaseModel], *, hint: str = "") -> None:
        loc = list(err["loc"])
        ctx = err.get("ctx") or {}
        if isinstance(ctx.get("index"), int):
            loc.append(ctx["index"])
        if err["type"] == "prompt_source" and all(k in _merged_keys(chain) for k in _PROMPT_KEYS):
            loc = ["system_prompt_file"]
        origin, (line, column) = _origin(chain, loc, key=err["type"] == "extra_forbidden")
        if (origin.path, tuple(loc)) in self.ambiguous:
            return  # said already, with the way out (quote it)
        name = dotted(loc) if loc and err["type"] != "prompt_source" else ""
        source = origin.doc.source(loc) if loc and not isinstance(
            err.get("input", ""), str) else None  # (text is shown as it is: 'hot')
        source = source or None  # an empty value is shown as what YAML made of it: null
        message = describe(err, fields_at(model, loc[:-1]) if loc else [],
                           source=source) + hint
        self.report(origin.path, line, column, f"{name}: {message}" if name else message)

    # -- prompt files and the resolved config ----------------------------------------------

    def note_prompt(self, chain: list[AgentFile], merged: Mapping[str, Any],
                    errors: Sequence[ErrorDetails]) -> None:
        """Keep an invalid agent's ``system_prompt_file`` to check it exists all the same,
        unless the path itself is in error."""
        path = merged.get("system_prompt_file")
        if isinstance(path, str) and not any(
                tuple(e["loc"][:1]) == ("system_prompt_file",) for e in errors):
            self.unchecked_prompts.append((chain, path))

    def missing_prompt(self, chain: Sequence[AgentFile], path: str,
                       by_path: Mapping[str, Entry]) -> None:
        """Report ``path`` (an agent's ``system_prompt_file``) when no entry has it."""
        if path in by_path:
            return
        origin, loc = _origin(chain, ["system_prompt_file"])
        hint = did_you_mean(path, (p for p, e in by_path.items()
                                   if e.kind == "file" and p.startswith("prompts/")))
        self.report(origin.path, *loc, f"system_prompt_file: {path} does not exist{hint}")

    def read_prompts(self, resolved: Sequence[_Resolved], by_path: Mapping[str, Entry],
                     previous: Report | None) -> dict[str, str | None]:
        """Prompt path → text (None when unusable, already reported)."""
        wanted: dict[str, Entry] = {}
        texts: dict[str, str | None] = {}
        limit = self.settings.limits.max_file_bytes
        for item in resolved:
            path = item.config.system_prompt_file
            if path is None or path in wanted or path in texts:
                continue
            if previous is not None and path in previous.prompts and _same(
                    by_path, previous.entries, path):
                texts[path] = previous.prompts[path]
                continue
            entry = by_path.get(path)
            if entry is None or entry.kind != "file":
                texts[path] = None
                self.missing_prompt(item.chain, path, by_path)
            elif entry.size > limit:
                texts[path] = None
                self.report(path, 1, 1, f"file is {entry.size} bytes, over the limit of {limit} "
                            f"(limits.max_file_bytes in {SETTINGS_FILE})")
            else:
                wanted[path] = entry
        for entry, raw in self.source.read(list(wanted.values())):
            if len(raw) > limit:  # an entry from a diff may not know its size before reading
                texts[entry.path] = None
                self.report(entry.path, 1, 1, f"file is {len(raw)} bytes, over the limit of "
                            f"{limit} (limits.max_file_bytes in {SETTINGS_FILE})")
                continue
            texts[entry.path] = self.prompt_text(entry.path, raw)
        return texts

    def prompt_text(self, path: str, raw: bytes) -> str | None:
        if raw.startswith(LFS_POINTER):
            if path not in self.in_lfs:
                self.report(path, 1, 1, f"is a Git LFS pointer, not the file: {_LFS_HINT}")
            return None
        if path in self.in_lfs:
            return None  # the working tree has the content; git, the daemon's source, does not
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            self.report(path, line, column, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); "
                        "save the file as UTF-8")
            return None
        # served as an inline prompt would be (YAML reads every line break as \n): no leading
        # byte-order mark, \n line breaks whatever the editor or core.autocrlf wrote (issue 10)
        text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
        if not has_visible_text(text):
            self.report(path, 1, 1, "prompt file has no text (it is empty, or holds only "
                        "whitespace or a byte-order mark); write the prompt in it")
            return None
        for match in SECRETS.finditer(text) if find_secret(text) else ():
            line = text.count("\n", 0, match.start()) + 1
            column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
            self.report(path, line, column, secret_message(match), WARNING)
        return text

    def finish(self, item: _Resolved, prompts: Mapping[str, str | None]) -> dict[str, Any] | None:
        config = item.config.model_dump(mode="json", exclude={"extends", "system_prompt_file"})
        # the files' own numbers passed `portable` already; this catches what the model made
        # (a default or validator of a `schema:` class): nothing JSON cannot carry is stored
        if self.portable(item.chain, config, made_by=_model_name(self.model)):
            return None
        if item.config.system_prompt_file is not None:
            text = prompts.get(item.config.system_prompt_file)
            if text is None:
                return None
            config["system_prompt"] = text
        return config

    def scan_secrets(self, path: str, doc: Document, value: Any, loc: list[str | int]) -> None:
        if isinstance(value, str):
            match = find_secret(value)
            if match:
                self.report(path, *doc.locate(loc, offset=match.start()),
                            f"{dotted(loc)}: {secret_message(match)}", WARNING)
        elif isinstance(value, dict):
            for key, item in value.items():
                self.scan_secrets(path, doc, item, [*loc, key])
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.scan_secrets(path, doc, item, [*loc, index])


def _by_path(source: Source) -> dict[str, Entry]:
    known = getattr(source, "by_path", None)
    return known if isinstance(known, dict) else {e.path: e for e in source.entries()}


def _twins(path: str) -> list[str]:
    """The other spellings of an agent file's path (``a.yaml`` / ``a.yml``)."""
    stem = path.rsplit(".", 1)[0]
    return [stem + suffix for suffix in AGENT_SUFFIXES if stem + suffix != path]


def _patched_indexes(previous: Report, report: Report, dirty: set[str]) -> tuple[
        dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """``previous``'s reverse indexes with the ``dirty`` agents' old links replaced by new ones
    (copy-on-write: the cost follows the change)."""
    dependents = dict(previous.dependents)
    users = dict(previous.prompt_users)
    for index, old_links, new_links in (
            (dependents, {a: previous.chains.get(a, ()) for a in dirty},
             {a: report.chains.get(a, ()) for a in dirty}),
            (users, {a: _opt(previous.prompt_of.get(a)) for a in dirty},
             {a: _opt(report.prompt_of.get(a)) for a in dirty})):
        for agent_id, keys in old_links.items():
            for key in keys:
                remaining = index.get(key, frozenset()) - {agent_id}
                if remaining:
                    index[key] = remaining
                else:
                    index.pop(key, None)
        for agent_id, keys in new_links.items():
            for key in keys:
                index[key] = index.get(key, frozenset()) | {agent_id}
    return dependents, users


def _opt(value: str | None) -> tuple[str, ...]:
    return (value,) if value is not None else ()


def _same(now: Mapping[str, Entry], before: Mapping[str, Entry], path: str) -> bool:
    """Whether ``path`` is the same object (or equally absent) in two trees."""
    a, b = now.get(path), before.get(path)
    return (a is None and b is None) or (
        a is not None and b is not None and a.key == b.key and a.kind == b.kind)


def _merged_keys(chain: Sequence[AgentFile]) -> set[str]:
    keys: set[str] = set()
    for agent in chain:
        keys.update(agent.doc.data)
        if any(key in agent.doc.data for key in _PROMPT_KEYS):
            break
    return keys


def _model_name(model: type[BaseModel]) -> str:
    return f"{model.__module__}:{model.__qualname__}"


def _origin(chain: Sequence[AgentFile], loc: Sequence[str | int], *,
            key: bool = False) -> tuple[AgentFile, tuple[int, int]]:
    """The file in an ``extends`` chain that supplied the value at ``loc``, and where."""
    origin = next((a for a in chain if has_path(a.doc.data, loc)), chain[0])
    return origin, origin.doc.locate(loc, key=key)
