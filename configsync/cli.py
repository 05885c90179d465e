"""``configsync`` on the command line: argument parsing only; each command calls the library.

Exit codes: 0 success; 1 a user-facing problem (invalid configs, a failed git or Redis operation);
2 a usage problem (bad arguments, no such path, unknown ref); 3 a bug (the traceback goes to a log
file, never the terminal); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import textwrap
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .editor import SETTINGS_PATH, editor_settings
from .errors import ConfigsyncError, UsageError
from .logs import one_line
from .messages import plural
from .model import namespace_problem
from .output import FORMATS, render
from .repo import (
    AGENTS_DIR,
    ATTRIBUTES_FILE,
    PROMPTS_DIR,
    SETTINGS_FILE,
    Entry,
    Root,
    agent_id_for,
    find_root,
    is_config_path,
    open_source,
)
from .schema import allowed_schema_modules, render_schemas
from .validate import ERROR, WARNING, check_tree, related_paths

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


def _display(base: str, path: str) -> str:
    return path if os.path.normpath(base) == "." else f"{Path(base).as_posix().rstrip('/')}/{path}"


@dataclass(frozen=True, slots=True)
class _Target:
    """What ``validate`` was asked to check: the config root, how to show it, which files."""

    root: Root
    shown: str  # the root as the user would write it: relative to what they gave
    files: dict[str, str]  # path relative to the root -> as given


def _target(paths: Sequence[str], *, in_git: bool) -> _Target:
    """One folder (the config tree there, or the nearest above it), or files (each one's
    config tree must be the same); the root found as :func:`find_root` does."""
    if not paths:
        paths = ["."]
    if len(paths) == 1 and os.path.isdir(paths[0]):
        start, files = paths[0], []
    elif any(os.path.isdir(p) for p in paths):
        raise UsageError("give one folder, or files, not both: validate checks the config tree "
                         "a folder is in, or reports on the files named")
    else:
        files = list(paths)
        for name in files:
            if not os.path.lexists(name) and not (in_git and os.path.isdir(
                    os.path.dirname(name) or ".")):
                raise UsageError(f"no such file or directory: {name}")
        start = os.path.dirname(files[0]) or "."
    root = find_root(start)
    named: dict[str, str] = {}
    for name in files:
        if find_root(os.path.dirname(name) or ".") != root:
            raise UsageError(f"{name} and {files[0]} are in different config trees; validate "
                             "them one tree at a time")
        rel = Path(os.path.relpath(os.path.abspath(name), root.folder)).as_posix()
        if rel.startswith("../") or not is_config_path(rel):
            raise UsageError(f"{name} is not a config file: configsync reads {SETTINGS_FILE}, "
                             f"{ATTRIBUTES_FILE}, {AGENTS_DIR}/ and {PROMPTS_DIR}/ in "
                             f"{root.folder}")
        named[rel] = name
    shown = os.path.normpath(os.path.join(start, os.path.relpath(root.folder,
                                                                 os.path.abspath(start))))
    return _Target(root, shown, named)


def _entry_for(rel: str, entries: Mapping[str, Entry]) -> str | None:
    """The entry that is ``rel``, or holds it: a file inside a symlinked or submodule folder
    stands for that folder (which is reported)."""
    parts = rel.split("/")
    return next((path for path in ("/".join(parts[:n]) for n in range(len(parts), 0, -1))
                 if path in entries), None)


def _check_named(target: _Target, entries: Mapping[str, Entry],
                 args: argparse.Namespace) -> list[str]:
    """The entry for each named file; a usage error for one the tree does not hold."""
    found = []
    for rel, name in target.files.items():
        entry = _entry_for(rel, entries)
        if entry is None:
            where = ("the index (is it staged? git add it)" if args.cached else
                     f"commit {args.ref}" if args.ref else f"the config tree at {target.shown}")
            raise UsageError(f"{name} is not in {where}")
        found.append(entry)
    return found


def cmd_validate(args: argparse.Namespace) -> int:
    target = _target(args.paths, in_git=args.cached or args.ref is not None)
    with open_source(target.root.folder, args.ref, cached=args.cached) as source:
        report = check_tree(source, repo_root=target.root.folder, jobs=os.cpu_count() or 1)
        named = _check_named(target, report.entries, args)
    diagnostics = report.diagnostics
    files, agents = report.files, len(report.configs)
    if target.files:
        keep = related_paths(report, named)
        if keep is not None:
            diagnostics = [d for d in diagnostics if d.path in keep]
        files = len(target.files)
        agents = sum(report.configs.get(agent_id_for(rel) or "") is not None
                     for rel in target.files)
    if args.format == "github":  # GitHub matches files to the PR's: from the repository's top
        shown = [replace(d, path=target.root.from_top(d.path)) for d in diagnostics]
    else:
        shown = [replace(d, path=_display(target.shown, d.path)) for d in diagnostics]
    sys.stdout.write(render(shown, args.format))
    errors = sum(d.severity == ERROR for d in diagnostics)
    warnings = sum(d.severity == WARNING for d in diagnostics)
    failed = errors > 0 or (args.strict and warnings > 0)
    if errors or warnings:
        summary = f"{plural(errors, 'error')}, {plural(warnings, 'warning')}"
    else:
        summary = f"{plural(agents, 'agent')} OK"
    print(f"configsync: {summary} ({plural(files, 'file')} checked)", file=sys.stderr)
    return 1 if failed else 0


def cmd_schema(args: argparse.Namespace) -> int:
    # the config repository's root, found as `validate` finds it (configsync.yaml here or
    # above): from agents/ this still writes the repository's schemas/ and .vscode/
    found = find_root(os.curdir)
    root = Path(os.path.relpath(found.folder)) if found.found else Path(os.curdir)
    out = Path(args.out) if args.out is not None else root / "schemas"
    settings_path = root / SETTINGS_PATH
    # the editor mapping first: a settings file that cannot be merged into stops everything
    # before anything is written
    editor = editor_settings(out, root)
    files = {out / name: text for name, text in render_schemas().items()}
    stale: list[tuple[Path, str]] = []
    for target, text in files.items():
        current = target.read_text("utf-8") if target.is_file() else None
        if current == text:
            continue
        if args.check:
            stale.append((target, "is missing" if current is None else "is stale"))
            continue
        _write(target, text, "(--out names the folder for the schema files)")
    if editor is not None:
        if args.check:
            stale.append((settings_path, "is missing" if not settings_path.exists() else
                          "does not map the schemas (`yaml.schemas`)"))
        else:
            _write(settings_path, editor, "(the editor settings of the config repository)")
    for target, why in stale:
        print(f"configsync: {one_line(str(target))} {why}; run `configsync schema --out "
              f"{one_line(str(out))}` and commit the result", file=sys.stderr)
    return 1 if stale else 0


def _write(target: Path, text: str, hint: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, "utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {one_line(str(target))}: {exc.strerror or exc} "
                         f"{hint}") from None
    print(f"wrote {one_line(str(target))}", file=sys.stderr)


def cmd_get(args: argparse.Namespace) -> int:
    from .read_cli import run_get

    return run_get(args)


def cmd_watch(args: argparse.Namespace) -> int:
    from .read_cli import run_watch

    return run_watch(args)


def cmd_sync(args: argparse.Namespace) -> int:
    from .sync_cli import run_sync

    return run_sync(args)


def cmd_dev(args: argparse.Namespace) -> int:
    from .dev import run_dev

    return run_dev(args)


def cmd_init(args: argparse.Namespace) -> int:
    from .scaffold import run_init

    return run_init(args)


def cmd_history(args: argparse.Namespace) -> int:
    from .history_cli import run_history

    return run_history(args)


def cmd_rollback(args: argparse.Namespace) -> int:
    from .rollback import run_rollback

    return run_rollback(args)


def cmd_status(args: argparse.Namespace) -> int:
    from .status import run_status

    return run_status(args)


def cmd_diff(args: argparse.Namespace) -> int:
    from .diff_cli import run_diff

    return run_diff(args)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake said in one line like every other error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"configsync: error: {one_line(message)} (see `{self.prog} --help`)\n")


def _shown(text: str, limit: int = 60) -> str:
    """An argument as a message quotes it: one line, and not all of a very long one."""
    return "'" + one_line(text if len(text) <= limit else text[:limit] + "...") + "'"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="configsync", description="GitOps for AI agent configuration.")
    parser.add_argument("--version", action="version", version=f"configsync {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="validate a config repository (working tree, index or a commit)",
        description="Check configsync.yaml, every agent file and every cross-file rule; "
                    "report all problems with file, line and column.")
    validate.add_argument("paths", nargs="*", metavar="PATH",
                          help="a folder in the config repository (default: .; configsync.yaml "
                               "is looked for there and in the folders above it), or files: "
                               "only those are reported on, and the files they bear on")
    source = validate.add_mutually_exclusive_group()
    source.add_argument("--ref", help="validate this commit's tree instead of the working tree")
    source.add_argument("--cached", action="store_true",
                        help="validate what is staged (git's index: the next commit) instead "
                             "of the working tree")
    validate.add_argument("--format", choices=sorted(FORMATS), default="text",
                          help="output format (default: text)")
    validate.add_argument("--strict", action="store_true", help="warnings fail too")
    validate.set_defaults(func=cmd_validate)

    sync = commands.add_parser(
        "sync", help="run the sync daemon: merged commits become versioned snapshots in Redis",
        description="Fetch the branch, validate each new first-parent commit, and write "
                    "versioned snapshots and change events to Redis atomically.")
    sync.add_argument("--repo", type=_nonempty,
                      help="remote URL or local path (default: the git repository the command "
                           "runs in)")
    sync.add_argument("--branch", type=_nonempty,
                      help="branch to follow (default: the remote's default branch, which its "
                           "HEAD names)")
    sync.add_argument("--redis", type=_nonempty,
                      help="Redis URL (default: $CONFIGSYNC_REDIS_URL; with neither, an "
                           "embedded redis-server persisted under the workdir)")
    sync.add_argument("--namespace", type=_sync_namespace,
                      help="Redis namespace (default: configsync.yaml's); never a dev one "
                           "(ending in -dev)")
    sync.add_argument("--interval", type=_positive_float, default=10.0,
                      help="seconds between polls (default: 10)")
    sync.add_argument("--once", action="store_true", help="sync to the current head and exit: "
                                                         "0 when it applied, 1 when rejected")
    sync.add_argument("--fetch-timeout", type=_positive_float, default=60.0, metavar="SECONDS",
                      help="deadline for each fetch or ls-remote; a remote that goes silent "
                           "is retried with backoff (default: 60)")
    sync.add_argument("--token-env", metavar="NAME", type=_nonempty,
                      help="read the https password or token from environment variable NAME "
                           "(never put secrets in --repo: the URL is shown in `ps`)")
    sync.add_argument("--adopt", action="store_true",
                      help="take the namespace over when it follows another source or branch "
                           "(it follows this one from now on)")
    sync.add_argument("--keep", type=_positive_int, default=100,
                      help="history versions kept per agent (default: 100)")
    sync.add_argument("--log-format", choices=["kv", "json"], default="kv",
                      help="kv: one key=value line a log entry; json: one JSON object a line, "
                           "same fields (default: kv)")
    sync.add_argument("--workdir", help="where the mirror and the embedded Redis live "
                                        "(default: .git/configsync in a local repository, "
                                        "else $XDG_STATE_HOME/configsync/NAME-HASH)")
    sync.add_argument("--listen", type=_listen, metavar="HOST:PORT",
                      help="serve /healthz, /readyz, /metrics, the read API (/agents) and, with "
                           "--webhook-secret-env, /webhook over HTTP on HOST:PORT "
                           "(127.0.0.1:8080 this machine only, 0.0.0.0:8080 or [::]:8080 every "
                           "interface, [::1]:8080)")
    sync.add_argument("--webhook-secret-env", metavar="NAME", type=_nonempty,
                      help="serve POST /webhook, verified with the secret in environment "
                           "variable NAME (GitHub/Gitea/Forgejo HMAC, GitLab token); needs "
                           "--listen")
    sync.set_defaults(func=cmd_sync)

    dev = _command(
        commands, "dev", help="publish the working tree to a dev namespace at every save",
        description="Watch the config tree's files; at every save check the whole tree and "
                    "print its errors (file:line:column: message), or, when it is valid, "
                    "publish every resolved config to a dev namespace in Redis, as the sync "
                    "daemon would (one transaction, one applied event, versions counted on "
                    "per agent, commit \"worktree\"), and print one line per agent published "
                    "(\"applied support v5\", \"deleted x\"). An agent reading the dev "
                    "namespace (configsync.Client(namespace=\"NS-dev\")) reloads as you edit. "
                    "A dev namespace is one whose name ends in -dev: configsync dev writes "
                    "no other, a sync daemon never writes one. Ctrl-C stops.",
        epilog="examples:\n  configsync dev                       (embedded Redis; its URL is "
               "printed)\n"
               "  configsync dev agents-repo --redis redis://127.0.0.1:6380/0 "
               "--namespace support-alice-dev\n"
               "  configsync dev --once               (check and publish once, for scripts)"
               "\n\nexit codes: 0 stopped (Ctrl-C), or --once published; 1 --once found "
               "errors, or Redis failed; 2 usage (no config tree, a namespace that is no dev "
               "one or that a sync daemon writes, a bad URL)")
    dev.add_argument("path", metavar="PATH", nargs="?",
                     help="a folder of the config tree (default: .; configsync.yaml is looked "
                          "for there and above)")
    dev.add_argument("--redis", type=_nonempty, metavar="URL",
                     help="Redis URL (default: an embedded redis-server under the repository's "
                          ".git/configsync-dev; $CONFIGSYNC_REDIS_URL is not read: a dev "
                          "command writes to a shared Redis only when told)")
    dev.add_argument("--namespace", type=_namespace,
                     help="the dev namespace, ending in -dev (default: configsync.yaml's "
                          "namespace + \"-dev\")")
    dev.add_argument("--once", action="store_true",
                     help="check and publish once, then exit (0 published, 1 errors)")
    dev.add_argument("--take-over", action="store_true",
                     help="publish to a dev namespace another working tree's configsync dev "
                          "writes (by default that is refused, naming the other tree)")
    dev.set_defaults(func=cmd_dev)

    get = _command(
        commands, "get",
        help="print an agent's snapshot from Redis (the version served, or --version N)",
        description="Print the snapshot the daemon wrote for AGENT: the version served now, "
                    "or a kept version of its history.",
        epilog="example:\n  configsync get support --version 3 --format yaml\n\n"
               "exit codes: 0 printed; 1 no such agent or version, or Redis unreachable; "
               "2 usage")
    _agent_argument(get)
    get.add_argument("--version", type=_positive_int, metavar="N",
                     help="a version from the agent's history (default: the one served)")
    get.add_argument("--format", choices=["json", "yaml"], default="json",
                     help="output format (default: json, the snapshot JSON of the Redis "
                          "contract, indented)")
    _redis_options(get)
    get.set_defaults(func=cmd_get)

    watch = _command(
        commands, "watch", help="print change events from the stream as they happen, one line each",
        description="Tail the namespace's event stream: applied, rejected and rebuilt events, "
                    "one line each, until Ctrl-C (or --count events).",
        epilog="example:\n  configsync watch support --since 0 --count 5\n\n"
               "exit codes: 0 stopped (Ctrl-C, SIGTERM, or --count reached); 1 Redis "
               "unreachable or lost; 2 usage")
    watch.add_argument("agent", metavar="AGENT", nargs="?",
                       help="only events about this agent: applied commits that changed it, "
                            "and rebuilds")
    watch.add_argument("--since", default="$", metavar="ID",
                       help="print the kept events after this stream id first (0: all of "
                            "them; default: $, only new ones)")
    watch.add_argument("--count", type=_positive_int, metavar="N",
                       help="exit after printing N events")
    watch.add_argument("--format", choices=["text", "json"], default="text",
                       help="text: stream id and key=value; json: {\"id\", \"event\"} per line "
                            "(default: text)")
    _redis_options(watch)
    watch.set_defaults(func=cmd_watch)

    history = _command(
        commands, "history",
        help="every version of an agent from git: who, when, why, what changed",
        description="List AGENT's versions on the branch, newest first, from git alone (no "
                    "Redis needed), numbered as the sync daemon numbers them: version, commit, "
                    "author, date, subject, and the fields of the resolved config that changed "
                    "(also through a base, a prompt file or configsync.yaml). A version whose "
                    "config equals an earlier one says which (a revert or a rollback). With "
                    "--redis, the version Redis serves is marked, with when it was applied.",
        epilog="examples:\n  configsync history support --limit 5\n"
               "  configsync history support --field system_prompt --since 2026-11-23\n"
               "  configsync history support --redis redis://127.0.0.1:6379/0 --format json"
               "\n\nexit codes: 0 printed; 1 the agent has no version on REF, or git failed; "
               "2 usage, or Redis unreachable with --redis")
    _agent_argument(history)
    history.add_argument("--limit", type=_positive_int, metavar="N",
                         help="only the newest N versions")
    history.add_argument("--since", type=_since, metavar="DATE",
                         help="only versions committed at or after DATE (2026-11-23, or an "
                              "ISO 8601 time; UTC unless it names an offset)")
    history.add_argument("--field", type=_nonempty, metavar="PATH",
                         help="only versions that changed this field of the resolved config, or "
                              "one inside it (system_prompt, temperature, metadata.labels)")
    history.add_argument("--ref", default="HEAD", type=_nonempty,
                         help="the branch or commit whose first-parent history to read "
                              "(default: HEAD; the daemon numbers the branch it syncs)")
    _optional_redis(history, "also mark the version Redis serves, and give its numbers")
    history.add_argument("--format", choices=["text", "json"], default="text",
                         help="output format (default: text)")
    history.set_defaults(func=cmd_history)

    rollback = _command(
        commands, "rollback", help="commit an agent's resolved config of an earlier version again",
        description="Make one commit that gives AGENT the resolved config of an earlier "
                    "version again, whatever happened to its file since: its own file is "
                    "restored whole (no merge conflicts, other agents untouched). When the "
                    "difference came from a base (extends), its prompt file or configsync.yaml, "
                    "it says which and refuses unless --include-dependencies. The result is "
                    "validated as the daemon will validate it. Refuses on a dirty working "
                    "tree. (To undo a whole commit, use `git revert COMMIT`.)",
        epilog="examples:\n  configsync rollback support --to 7\n"
               "  configsync rollback support --to a1b2c3d --branch rollback-support --push"
               "\n\nexit codes: 0 committed, or nothing to do; 1 refused (dirty tree, a "
               "dependency changed, the result would not validate) or git failed; 2 usage "
               "(unknown version or commit, bad branch name)")
    _agent_argument(rollback)
    rollback.add_argument("--to", required=True, type=_nonempty, metavar="VERSION|COMMIT",
                          help="a version (7 or v7, from `configsync history`) or a commit "
                               "(the version the agent had there)")
    rollback.add_argument("--message", "-m", type=_subject, metavar="M",
                          help="the commit's subject (the body still names the agent, both "
                               "versions and commits)")
    rollback.add_argument("--branch", type=_nonempty, metavar="NAME",
                          help="commit on a new branch NAME (for a pull request) instead of the "
                               "checked-out branch, which stays as it is")
    rollback.add_argument("--push", action="store_true",
                          help="push the commit: the checked-out branch to its upstream, or "
                               "--branch NAME to origin")
    rollback.add_argument("--include-dependencies", action="store_true",
                          help="also restore the base, prompt file or configsync.yaml the "
                               "version came from (this changes the agents that share them)")
    _optional_redis(rollback, "read VERSION as Redis numbers it")
    rollback.add_argument("--format", choices=["text", "json"], default="text",
                          help="output format (default: text)")
    rollback.set_defaults(func=cmd_rollback)

    status = _command(
        commands, "status", help="compare the branch head with what Redis serves (exit 0 in sync)",
        description="Show the branch head next to the commit Redis serves (in sync, behind by "
                    "N commits, or last commit rejected with its error), the daemon's "
                    "heartbeat age, each agent's resolved config at the head against the "
                    "version Redis serves (same/differs, by checksum), and the running "
                    "clients with the versions they hold.",
        epilog="exit codes: 0 in sync; 1 behind, rejected or no state yet; 2 Redis "
               "unreachable or a usage mistake\n\nexample:\n"
               "  configsync status --redis redis://127.0.0.1:6379/0 --format json")
    _redis_options(status)
    status.add_argument("--repo", type=_nonempty, metavar="PATH",
                        help="local git repository (default: the one the command runs in)")
    status.add_argument("--branch", type=_nonempty,
                        help="branch whose head to compare (default: the branch the namespace "
                             "follows, else the checked-out one)")
    status.add_argument("--format", choices=["text", "json"], default="text",
                        help="output format (default: text)")
    status.set_defaults(func=cmd_status)

    diff = _command(
        commands, "diff", help="show what a change does to the agents' resolved configs",
        description="Compare the agents' resolved configs (extends merged, prompt files "
                    "inlined) of two trees: BASE, a commit, and HEAD, a commit or the working "
                    "tree. Lists each agent added, removed, changed (its fields, its prompt as "
                    "a unified diff, and where the change came from: its own file, a base, a "
                    "prompt file or configsync.yaml) or invalid on a side; unchanged agents "
                    "are counted.",
        epilog="examples:\n  configsync diff origin/main --format markdown "
               ">>\"$GITHUB_STEP_SUMMARY\"\n"
               "  configsync diff support@v7 support@v9   (versions, as `configsync history` "
               "numbers them)\n\n"
               "exit codes: 0 the diff was computed (changes or none); 1 a side fails "
               "validation (the agents that resolved are still compared, and the errors "
               "summarized, --agent or not); 2 usage (unknown ref, not a git repository, no "
               "commits yet, an --agent ID that names no agent)")
    diff.add_argument("base", metavar="BASE", nargs="?",
                      help="the commit to compare with, or AGENT@vN: the commit that made "
                           "version N of AGENT (default: the merge-base of HEAD and "
                           "the remote's default branch: origin/HEAD, else the branch's "
                           "upstream, else origin/main or origin/master; else HEAD)")
    diff.add_argument("head", metavar="HEAD", nargs="?",
                      help="the commit to compare, or AGENT@vN (default: the working tree)")
    _optional_redis(diff, "read AGENT@vN as Redis numbers it")
    diff.add_argument("--agent", action="append", metavar="ID",
                      help="list only this agent (repeat for more; default: every agent, or "
                           "the one named when both sides are AGENT@vN); the errors of every "
                           "file are still reported, and exit 1")
    diff.add_argument("--format", choices=["text", "json", "markdown"], default="text",
                      help="text; json (one object); markdown (for a pull request comment or "
                           "$GITHUB_STEP_SUMMARY) (default: text)")
    diff.set_defaults(func=cmd_diff)

    schema = commands.add_parser(
        "schema", help="write JSON Schema for agent files and configsync.yaml",
        description="Write schemas/agent.schema.json and schemas/configsync.schema.json, and "
                    "map them to agents/**/*.yaml and configsync.yaml in .vscode/settings.json "
                    "(merged into the file when it exists).")
    schema.add_argument("--out", default=None,
                        help="output folder (default: schemas/ next to configsync.yaml, found "
                             "here or above)")
    schema.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the files (the editor settings too) are "
                             "missing or stale")
    schema.set_defaults(func=cmd_schema)

    init = _command(
        commands, "init", help="scaffold a new config repository that validates clean",
        description="Write configsync.yaml, agents/example.yaml, prompts/example.md, the JSON "
                    "Schema files and editor settings (as `configsync schema` does), a "
                    ".gitignore, .github/workflows/configsync.yml (calls configsync's reusable "
                    "workflow) and .pre-commit-config.yaml (configsync's hook). When DIR is a "
                    "folder inside a bigger git repository, those two go to its top (the "
                    "workflow as configsync-FOLDER.yml, with `path:` set to DIR) and an "
                    "existing .pre-commit-config.yaml is kept: init says what to add to it. "
                    "Runs `git init` when DIR is not inside a git repository; never commits.",
        epilog="example:\n  configsync init support-configs --namespace support\n\n"
               "exit codes: 0 written; 1 git or the editor settings failed; 2 a file exists "
               "(without --force) or a usage mistake")
    init.add_argument("dir", metavar="DIR", nargs="?", default=".",
                      help="the folder to scaffold, created when missing (default: .)")
    init.add_argument("--namespace", type=_sync_namespace,
                      help="Redis namespace (default: DIR's name made a valid namespace, "
                           "without a -dev ending)")
    init.add_argument("--force", action="store_true",
                      help="overwrite files that exist (an existing .vscode/settings.json is "
                           "merged into)")
    init.add_argument("--format", choices=["text", "json"], default="text",
                      help="output format (default: text)")
    init.set_defaults(func=cmd_init)
    return parser


def _command(commands: argparse._SubParsersAction[_Parser], name: str, *, help: str,
             description: str, epilog: str) -> _Parser:
    """A subcommand whose description is wrapped and whose epilog (examples, exit codes)
    keeps its own lines."""
    return commands.add_parser(name, help=help, description=textwrap.fill(description, 79),
                               epilog=epilog,
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def _agent_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("agent", metavar="AGENT",
                        help="agent id (its path under agents/, without .yaml)")


_OPTIONAL_URL: set[str] = set()
"""The subcommands whose ``--redis`` takes an optional URL (see :func:`_url_or_not`)."""


def _optional_redis(parser: argparse.ArgumentParser, what: str) -> None:
    """``--redis [URL]`` and ``--namespace`` for a command that reads git and may consult
    Redis for ``what``."""
    _OPTIONAL_URL.add(parser.prog.rsplit(" ", 1)[-1])
    parser.add_argument("--redis", nargs="?", const="", metavar="URL",
                        help=f"{what} (the numbers clients report: they differ from the "
                             "branch's after a force-push the daemon followed); URL default: "
                             "$CONFIGSYNC_REDIS_URL, else the embedded Redis `configsync sync` "
                             "runs for this repository")
    parser.add_argument("--workdir", action=_EmbeddedOf,
                        help="read the embedded Redis of `configsync sync --workdir WORKDIR` "
                             "(implies --redis)")
    parser.add_argument("--namespace", type=_namespace,
                        help="Redis namespace for --redis (default: configsync.yaml's)")


class _EmbeddedOf(argparse.Action):
    """``--workdir`` of a command whose Redis is optional: asks for Redis (``--redis``), the
    embedded one of that workdir."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        if getattr(namespace, "redis", None) is None:
            namespace.redis = ""


def _redis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", type=_nonempty, metavar="URL",
                        help="Redis URL (default: $CONFIGSYNC_REDIS_URL, else the embedded Redis "
                             "`configsync sync` runs for this repository)")
    parser.add_argument("--workdir", help="read the embedded Redis of `configsync sync "
                                          "--workdir WORKDIR` (instead of --redis)")
    parser.add_argument("--namespace", type=_namespace,
                        help="Redis namespace (default: namespace: of the configsync.yaml in "
                             "this folder or above)")


def _namespace(text: str) -> str:
    problem = namespace_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{_shown(text)} {problem}")
    return text


def _sync_namespace(text: str) -> str:
    from .model import is_dev_namespace
    from .sync import dev_namespace_refused

    text = _namespace(text)
    if is_dev_namespace(text):
        raise argparse.ArgumentTypeError(dev_namespace_refused(text))
    return text


def _since(text: str) -> object:
    from .history_cli import parse_since

    try:
        return parse_since(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a date (2026-11-23) or an ISO 8601 time (got {_shown(text)})") from None


def _subject(text: str) -> str:
    """A commit subject: one line of text (no line break or control character: a message
    must not forge lines such as a ``Configsync-Rollback:`` trailer)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    if one_line(text) != text:
        raise argparse.ArgumentTypeError(f"must be one line of text, without control "
                                         f"characters (got {_shown(text)})")
    return text


_LISTEN = re.compile(r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<p6>[0-9]{1,5})|(?P<host>[^:\[\]\s]+):"
                     r"(?P<port>[0-9]{1,5})")


def _listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``: the interface is always named (``:8080`` alone is
    refused: the read API serves every config, so listening on every interface is said
    explicitly, with 0.0.0.0 or [::])."""
    found = _LISTEN.fullmatch(text)
    if found is None:
        hint = " (name the interface: 127.0.0.1 for this machine only, 0.0.0.0 or [::] for " \
               "every one)" if text.startswith(":") else ""
        raise argparse.ArgumentTypeError(f"must be HOST:PORT or [IPV6]:PORT (got "
                                         f"{_shown(text)}){hint}")
    host = found["v6"] or found["host"]
    port = int(found["p6"] or found["port"])
    if port > 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (0-65535)")
    return host, port


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be a positive number of seconds (got {_shown(text)})")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a whole number, at least 1 (got {_shown(text)})")
    return value


def _crash_log() -> str:
    fd, path = tempfile.mkstemp(prefix="configsync-crash-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        traceback.print_exc(file=handle)
    return path


def _url_or_not(argv: Sequence[str]) -> list[str]:
    """``argv`` with a bare ``--redis`` made explicit (``--redis=``: the default URL) where the
    word after it is no URL but the command's own (``history --redis support``,
    ``diff --redis a@v1 a@v2``): argparse would take any word as an optional value. A URL
    has a ``:`` (``redis://``, ``host:port``), which agent ids and git refs never hold."""
    words = list(argv)
    command = next((w for w in words if not w.startswith("-")), None)
    if command not in _OPTIONAL_URL:
        return words
    for i, word in enumerate(words[:-1]):
        after = words[i + 1]
        if word == "--redis" and not after.startswith("-") and ":" not in after:
            words[i] = "--redis="
    return words


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    parser = _parser()
    args = parser.parse_args(_url_or_not(sys.argv[1:] if argv is None else argv))
    func: Command = args.func
    try:
        allowed_schema_modules()  # set to no package at all: a mistake, said before any work
        return func(args)
    except UsageError as exc:
        print(f"configsync: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except ConfigsyncError as exc:
        print(f"configsync: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("configsync: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (`| head`): nothing left to say
        return 1
    except Exception:
        path = _crash_log()
        print(f"configsync: internal error; please report it with the log in {path}",
              file=sys.stderr)
        return 3
