"""``configsync init [DIR]``: a new config repository that validates clean and works with every
tool: ``configsync.yaml``, an example agent and its prompt, the JSON Schema files and editor
mapping (the code behind ``configsync schema``), a ``.gitignore``, a GitHub workflow that calls
configsync's action, and a ``.pre-commit-config.yaml`` that runs configsync's hook.

Nothing that exists is overwritten unless asked (``--force``); ``git init`` runs when DIR is not
inside a git working tree, and nothing is ever committed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from pathlib import Path

from . import __version__
from .editor import SETTINGS_PATH, editor_settings
from .errors import UsageError
from .git import init_repository, is_inside_work_tree
from .model import NAMESPACE_MAX, namespace_problem
from .repo import SETTINGS_FILE
from .schema import render_schemas

__all__ = ["ACTION", "HOOK_REPO", "WORKFLOW_PATH", "sanitize_namespace", "scaffold_files"]

ACTION = "configsync/configsync"
HOOK_REPO = "https://github.com/configsync/configsync"
WORKFLOW_PATH = ".github/workflows/configsync.yml"
RELEASE = f"v{__version__}"  # the tag both `uses:` and `rev:` name

_PLAIN_SCALAR = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}

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

_PRE_COMMIT = f"""\
# Validates what is being committed (`configsync validate --cached`): `pre-commit install`
repos:
  - repo: {HOOK_REPO}
    rev: {RELEASE}
    hooks: [{{id: configsync-validate}}]
"""

_WORKFLOW = f"""\
# Validates the configs of every pull request (annotations on its lines) and writes the
# resolved-config diff to the job summary.
name: configsync
on:
  pull_request:
  push:
    branches: [main]
permissions:
  contents: read
jobs:
  validate:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0  # the diff compares with the merge base
      - uses: {ACTION}@{RELEASE}
        with:
          path: .
          python-version: "3.12"
          strict: "true"
"""


def sanitize_namespace(name: str) -> str:
    """A valid namespace made from a folder's name: every run of other characters becomes
    ``-``, the ends are trimmed to a letter or digit; ``default`` when nothing is left."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    text = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", text[:NAMESPACE_MAX])
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


def scaffold_files(root: Path, namespace: str) -> dict[str, str]:
    """Path under ``root`` → text, for every file ``init`` writes. The editor settings are
    merged into an existing ``.vscode/settings.json`` as ``configsync schema`` does (and are
    left out when that file already maps the schemas)."""
    files = {
        SETTINGS_FILE: _settings(namespace),
        "agents/example.yaml": _EXAMPLE_AGENT,
        "prompts/example.md": _EXAMPLE_PROMPT,
        **{f"schemas/{name}": text for name, text in render_schemas().items()},
    }
    editor = editor_settings(root / "schemas", root)
    if editor is not None:
        files[SETTINGS_PATH.as_posix()] = editor
    files.update({".gitignore": _GITIGNORE, WORKFLOW_PATH: _WORKFLOW,
                  ".pre-commit-config.yaml": _PRE_COMMIT})
    return files


def run_init(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{args.dir} exists and is not a folder")
    namespace = args.namespace or sanitize_namespace(root.resolve().name)
    planned = [SETTINGS_FILE, "agents/example.yaml", "prompts/example.md",
               *(f"schemas/{name}" for name in render_schemas()), SETTINGS_PATH.as_posix(),
               ".gitignore", WORKFLOW_PATH, ".pre-commit-config.yaml"]
    existing = [p for p in planned if os.path.lexists(root / p)]
    if existing and not args.force:
        raise UsageError(f"{args.dir} already has {', '.join(existing)}; nothing was written "
                         "(--force overwrites them)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {args.dir}: {exc.strerror or exc}") from None
    files = scaffold_files(root, namespace)
    for rel, text in files.items():
        target = root / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():  # --force replaces the link, never writes through it
                target.unlink()
            target.write_text(text, "utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    git_init = not is_inside_work_tree(root)
    if git_init:
        init_repository(root)
    steps = _next_steps(args.dir)
    if args.format == "json":
        print(json.dumps({"folder": str(root), "namespace": namespace, "git_init": git_init,
                          "wrote": [(root / rel).as_posix() for rel in files],
                          "next": steps}, indent=2))
        return 0
    for rel in files:
        print(f"wrote {(root / rel).as_posix()}")
    if git_init:
        print(f"created an empty git repository in {root.as_posix()} (nothing committed)")
    print(f"namespace: {namespace}")
    print("next steps:")
    for step in steps:
        print(f"  {step}")
    return 0


def _next_steps(folder: str) -> list[str]:
    steps = [] if os.path.normpath(folder) == "." else [f"cd {shlex.quote(folder)}"]
    return [*steps,
            "edit agents/example.yaml and prompts/example.md (configsync.yaml lists the models "
            "and tools), then: configsync validate --strict",
            "git add -A && git commit -m 'configsync: new config repository'",
            "pre-commit install  # validate every commit before it is made",
            f"push to GitHub: {WORKFLOW_PATH} validates every pull request",
            "configsync sync  # serve the committed configs from Redis"]
