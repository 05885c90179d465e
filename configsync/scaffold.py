"""``configsync init [DIR]``: a new config repository that validates clean and works with every
tool: ``configsync.yaml``, an example agent and its prompt, the JSON Schema files and editor
mapping (the code behind ``configsync schema``), a ``.gitignore``, a GitHub workflow that calls
configsync's reusable workflow (on pull requests and pushes to the branch checked out, which
``git init`` names after ``init.defaultBranch``), and a ``.pre-commit-config.yaml`` that runs
configsync's hook.
GitHub reads workflows and pre-commit its config only at the git repository's top: for DIR a
folder inside a bigger repository, those two are written there (``Layout``), naming DIR.

Nothing that exists is overwritten unless asked (``--force``), and a bigger repository's own
pre-commit config not even then; ``git init`` runs when DIR is not inside a git working tree,
and nothing is ever committed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import __version__
from .editor import SETTINGS_PATH, editor_settings
from .errors import UsageError
from .git import GitRepo, init_repository, work_tree_top
from .logs import one_line
from .model import DEV_NAMESPACE_SUFFIX, NAMESPACE_MAX, is_dev_namespace, namespace_problem
from .repo import SETTINGS_FILE
from .schema import render_schemas

__all__ = ["ACTION", "DEFAULT_BRANCH", "DEVELOPMENT_REF", "HOOK_REPO", "PRE_COMMIT_PATH",
           "REUSABLE_WORKFLOW", "WORKFLOW_PATH", "Layout", "branch_pattern", "find_layout",
           "release_ref", "sanitize_namespace", "scaffold_files"]

ACTION = "configsync/configsync"
REUSABLE_WORKFLOW = f"{ACTION}/.github/workflows/configsync-validate.yml"
HOOK_REPO = "https://github.com/configsync/configsync"
WORKFLOW_PATH = ".github/workflows/configsync.yml"
PRE_COMMIT_PATH = ".pre-commit-config.yaml"
DEVELOPMENT_REF = "main"
"""What `init` pins while configsync is between releases: the branch every commit lands on."""


def release_ref(version: str) -> str:
    """The git ref of this repository that a new config repository's workflow (``uses:
    ...@REF``) and pre-commit config (``rev: REF``) name, for configsync ``version``: a final
    release ``X.Y.Z`` (or ``X.Y.Z.postN``) is the tag ``vX.Y.Z`` made on its commit (README
    "Releases"); anything else (``0.2.0.dev0``, ``1.0rc1``, a local ``+build``) was never
    tagged, so ``main``, which exists, rather than a tag that does not (issue 17.19)."""
    if re.fullmatch(r"\d+(\.\d+)*(\.post\d+)?", version):
        return f"v{version}"
    return DEVELOPMENT_REF


RELEASE = release_ref(__version__)  # the ref both `uses:` and `rev:` name
_UNRELEASED = f"  # configsync {__version__} is not a release yet: "
_WORKFLOW_NOTE = "" if RELEASE != DEVELOPMENT_REF else _UNRELEASED + "a commit sha pins it"
_PIN_NOTE = ("" if RELEASE != DEVELOPMENT_REF else
             _UNRELEASED + "`pre-commit autoupdate` pins the newest commit")

_PLAIN_SCALAR = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}
_GLOB = re.compile(r"[*?+\[!\\]")
_PATH_GLOB = re.compile(r"[*?+\[\]!\\]")
DEFAULT_BRANCH = "main"
"""The branch the workflow runs on when HEAD names none (a detached HEAD)."""

_EXAMPLE_AGENT = """\
# One agent a file: its id is the path under agents/ without .yaml ("example").
# Every field: https://github.com/configsync/configsync#agent-files
system_prompt_file: prompts/example.md
model: gpt-4o-mini
temperature: 0.3
max_tokens: 800
tools: [search]
metadata:
  owner: your-team
  description: An example agent; copy this file to add another.
"""

_EXAMPLE_PROMPT = """\
You are a helpful assistant. Answer briefly and clearly, and say so when you are unsure.
Use the search tool to look things up before you answer a question about facts.
"""

_GITIGNORE = """\
# Python environments and caches (configsync sync keeps its own state inside .git/)
.venv/
__pycache__/
*.py[cod]
.DS_Store
"""

def _pre_commit(folder: str) -> str:
    return f"""\
# Validates what is being committed (`configsync validate --cached`): `pre-commit install`
repos:
  - repo: {HOOK_REPO}
    rev: {RELEASE}{_PIN_NOTE}
    hooks: [{{id: configsync-validate{_hook_args(folder)}}}]
"""


def _hook_args(folder: str) -> str:
    """The hook's arguments: the config folder when it is not the repository's top."""
    return "" if folder == "." else f", args: [{_yaml_string(folder)}]"


def _workflow(folder: str, name: str, branch: str = DEFAULT_BRANCH) -> str:
    """The config repository's workflow: one job that calls configsync's reusable workflow
    (which checks out with history and runs the action at the same ref), on every pull request
    and every push to ``branch``. In a folder of a bigger repository it runs only when that
    folder (or the workflow) changes."""
    paths = "" if folder == "." else (
        f"\n    paths: [{json.dumps(path_pattern(folder) + '/**')}, "
        f"{json.dumps(path_pattern(name))}]")
    return f"""\
# Validates the configs of every pull request (annotations on its lines) and writes the
# resolved-config diff to the job summary.
name: configsync
on:
  pull_request:{paths}
  push:
    branches: [{_yaml_string(branch_pattern(branch))}]{paths}
permissions:
  contents: read
jobs:
  validate:
    uses: {REUSABLE_WORKFLOW}@{RELEASE}{_WORKFLOW_NOTE}
    with:
      path: {_yaml_string(folder)}
      python-version: "3.12"
      strict: true
"""


def branch_pattern(branch: str) -> str:
    """A branch name as a GitHub Actions ``branches:`` filter that matches it alone: the
    characters that are glob syntax there (``*``, ``?``, ``+``, ``[``, ``!`` and ``\\``:
    the ones GitHub lets be escaped) escaped with a backslash. git refuses most of them in a
    branch name, but not ``+`` or ``!``."""
    return _GLOB.sub(r"\\\g<0>", branch)


def path_pattern(path: str) -> str:
    """A repository path as a GitHub Actions ``paths:`` filter that matches it alone, the
    same way as :func:`branch_pattern`: ``*``, ``?``, ``+``, ``[``, ``]``, ``!`` and ``\\``
    (glob syntax there) escaped with a backslash (``cfg[1]*`` → ``cfg\\[1\\]\\*``)."""
    return _PATH_GLOB.sub(r"\\\g<0>", path)


def sanitize_namespace(name: str) -> str:
    """A valid namespace made from a folder's name: every run of other characters becomes
    ``-``, the ends are trimmed to a letter or digit, and a ``-dev`` ending (a dev namespace,
    which ``validate`` refuses) is dropped; ``default`` when nothing is left."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    text = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", text[:NAMESPACE_MAX])
    while is_dev_namespace(text):  # `foo-dev`: a dev namespace, which validate refuses
        text = re.sub(r"[^A-Za-z0-9]+$", "", text[:-len(DEV_NAMESPACE_SUFFIX)])
    return text if text and namespace_problem(text) is None else "default"


def _yaml_string(text: str) -> str:
    if _PLAIN_SCALAR.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)  # a JSON string is a YAML string: "1.0" stays text


def _settings(namespace: str) -> str:
    return f"""\
# Repository settings for configsync: https://github.com/configsync/configsync
namespace: {_yaml_string(namespace)}  # the Redis namespace `configsync sync` writes to
models: [gpt-4o, gpt-4o-mini, claude-sonnet-4-5, claude-haiku-4-5]  # the models agents may use
tools:  # the tool registry: the only tool names agents may list
  search: {{description: Web search}}
  fetch_url: {{description: Fetch a web page as text}}
"""


@dataclass(frozen=True, slots=True)
class Layout:
    """Where ``init`` writes: the config files in ``root`` (DIR as given); the workflow and the
    pre-commit config at ``top``, the git working tree's top (GitHub reads workflows only from
    the top's ``.github/workflows``, pre-commit only the top's config), which is ``root`` unless
    DIR is a folder inside a bigger repository; ``folder`` is DIR relative to ``top``."""

    root: Path
    top: Path
    folder: str = "."

    @property
    def workflow(self) -> Path:
        if self.folder == ".":
            return self.top / WORKFLOW_PATH
        return self.top / f".github/workflows/configsync-{sanitize_namespace(self.folder)}.yml"

    @property
    def pre_commit(self) -> Path:
        return self.top / PRE_COMMIT_PATH

    def from_top(self, target: Path) -> str:
        return Path(os.path.relpath(target, self.top)).as_posix()


def find_layout(root: Path) -> tuple[Layout, bool]:
    """The layout for DIR ``root`` (which may not exist yet), and whether it is inside a git
    working tree already (else ``init`` runs ``git init`` in it)."""
    existing = root.resolve()
    while not existing.is_dir():
        existing = existing.parent
    top = work_tree_top(existing)
    if top is None or top.resolve() == root.resolve():
        return Layout(root, root), top is not None
    folder = Path(os.path.relpath(root.resolve(), top.resolve())).as_posix()
    shown = top if root.is_absolute() else Path(
        os.path.relpath(top.resolve(), Path.cwd().resolve()))
    return Layout(root, shown, folder), True


def scaffold_files(layout: Layout, namespace: str,
                   branch: str = DEFAULT_BRANCH) -> dict[Path, str]:
    """Each file ``init`` writes → its text; the workflow runs on pushes to ``branch``. The
    editor settings are merged into an existing ``.vscode/settings.json`` as ``configsync
    schema`` does (and are left out when that file already maps the schemas)."""
    root = layout.root
    files = {
        root / SETTINGS_FILE: _settings(namespace),
        root / "agents/example.yaml": _EXAMPLE_AGENT,
        root / "prompts/example.md": _EXAMPLE_PROMPT,
        **{root / "schemas" / name: text for name, text in render_schemas().items()},
    }
    editor = editor_settings(root / "schemas", root)
    if editor is not None:
        files[root / SETTINGS_PATH] = editor
    files.update({root / ".gitignore": _GITIGNORE,
                  layout.workflow: _workflow(layout.folder, layout.from_top(layout.workflow),
                                             branch),
                  layout.pre_commit: _pre_commit(layout.folder)})
    return files


def run_init(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{args.dir} exists and is not a folder")
    namespace = args.namespace or sanitize_namespace(root.resolve().name)
    layout, in_git = find_layout(root)
    planned = [root / SETTINGS_FILE, root / "agents/example.yaml", root / "prompts/example.md",
               *(root / "schemas" / name for name in render_schemas()), root / SETTINGS_PATH,
               root / ".gitignore", layout.workflow, layout.pre_commit]
    # a bigger repository's pre-commit config holds its other hooks: never replaced, even with
    # --force; the output says what to add to it
    kept = [layout.pre_commit] if layout.folder != "." and os.path.lexists(
        layout.pre_commit) else []
    existing = [p for p in planned if os.path.lexists(p) and p not in kept]
    if existing and not args.force:
        shown = ", ".join(os.path.relpath(p, root) for p in existing)
        raise UsageError(f"{args.dir} already has {shown}; nothing was written "
                         "(--force overwrites them)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {args.dir}: {exc.strerror or exc}") from None
    if not in_git:  # first: the workflow names the branch git init checked out
        init_repository(root)
    with GitRepo(layout.top) as repo:
        # `git init` checks out init.defaultBranch (master, unless configured): the workflow
        # runs on pushes to the branch the repository really has
        branch = repo.current_branch() or DEFAULT_BRANCH
    files = {target: text for target, text in scaffold_files(layout, namespace, branch).items()
             if target not in kept}
    for target, text in files.items():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():  # --force replaces the link, never writes through it
                target.unlink()
            target.write_text(text, "utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    steps = _next_steps(layout, kept, branch)
    if args.format == "json":
        print(json.dumps({"folder": str(root), "namespace": namespace, "git_init": not in_git,
                          "top": str(layout.top), "path": layout.folder, "branch": branch,
                          "wrote": [target.as_posix() for target in files],
                          "kept": [target.as_posix() for target in kept],
                          "next": steps}, indent=2))
        return 0
    for target in files:
        _say(f"wrote {target.as_posix()}")
    for target in kept:
        _say(f"kept {target.as_posix()} (the repository's own; configsync's hook for "
             f"{layout.folder} is already in it)" if has_hook(target, layout.folder) else
             f"kept {target.as_posix()} (the repository's own: add configsync's hook to it, "
             "below)")
    if not in_git:
        _say(f"created an empty git repository in {root.as_posix()} (nothing committed)")
    _say(f"namespace: {namespace}")
    _say("next steps:")
    for step in steps:
        _say(f"  {step}")
    return 0


def _say(line: str) -> None:
    print(one_line(line))  # a folder or branch name is printed escaped, as every output is


def has_hook(pre_commit: Path, folder: str) -> bool:
    """Whether a ``.pre-commit-config.yaml`` already runs configsync's hook on ``folder`` (the
    hook ``configsync-validate`` with ``folder`` as its arguments, or none for ``.``): one
    that init wrote before (``init --force``), or that its owner added. A file that does not
    read as YAML holds none."""
    try:
        config = yaml.safe_load(pre_commit.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    wanted = [] if folder == "." else [folder]
    repos = config.get("repos") if isinstance(config, dict) else None
    for repo in repos if isinstance(repos, list) else []:
        hooks = repo.get("hooks") if isinstance(repo, dict) else None
        for hook in hooks if isinstance(hooks, list) else []:
            if isinstance(hook, dict) and hook.get("id") == "configsync-validate" \
                    and (hook.get("args") or []) == wanted:
                return True
    return False


def _next_steps(layout: Layout, kept: list[Path], branch: str) -> list[str]:
    folder = os.path.normpath(layout.root)
    steps = [] if folder == "." else [f"cd {shlex.quote(layout.root.as_posix())}"]
    steps.append("edit agents/example.yaml and prompts/example.md (configsync.yaml lists the "
                 "models and tools), then: configsync validate --strict")
    if layout.folder == ".":
        steps.append("git add -A && git commit -m 'configsync: new config repository'")
    else:  # only what init wrote: the bigger repository may have other changes in hand
        outside = [os.path.relpath(p, layout.root) for p in (layout.workflow, layout.pre_commit)
                   if p not in kept]
        steps.append(f"git add . {' '.join(shlex.quote(p) for p in outside)} && "
                     "git commit -m 'configsync: new config repository'")
    if kept and not has_hook(kept[0], layout.folder):
        steps.append(f"add to {kept[0].as_posix()}'s repos: - {{repo: {json.dumps(HOOK_REPO)}, "
                     f"rev: {RELEASE}, hooks: [{{id: configsync-validate"
                     f"{_hook_args(layout.folder)}}}]}}")
    steps += ["pre-commit install  # validate every commit before it is made",
              f"push to GitHub: {layout.from_top(layout.workflow)} validates every pull "
              f"request and every push to {one_line(branch)}",
              "configsync sync  # serve the committed configs from Redis"]
    return steps
