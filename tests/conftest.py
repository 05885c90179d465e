"""Fixtures that make real things: config trees on disk and real git repositories.

Every test runs with a clean environment: HOME in a temp folder (nothing is written to ~), no
CONFIGSYNC_* or GIT_* variables from the developer's shell, and a pinned git author, committer and
date, so commits are reproducible.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

FIXED_DATE = "2026-01-02T03:04:05+00:00"

SETTINGS = """\
namespace: test
models: [gpt-4o, gpt-4o-mini]
tools:
  search: {description: Web search}
  calculator: {description: Arithmetic}
"""

SUPPORT = """\
system_prompt: You help customers.
model: gpt-4o
temperature: 0.3
max_tokens: 500
tools: [search]
guardrail_threshold: 0.7
"""


@pytest.fixture(autouse=True)
def clean_environ(tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CONFIGSYNC_", "GIT_", "XDG_")):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Ada Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "ada@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Cy Committer")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "cy@example.com")
    monkeypatch.setenv("GIT_AUTHOR_DATE", FIXED_DATE)
    monkeypatch.setenv("GIT_COMMITTER_DATE", FIXED_DATE)


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write ``files`` (path → text, dedented, or bytes) under ``root``."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content), encoding="utf-8")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A valid config tree: configsync.yaml and agents/support.yaml."""
    return write_tree(tmp_path / "repo", {"configsync.yaml": SETTINGS,
                                          "agents/support.yaml": SUPPORT})


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


class GitTree:
    """A real git repository in a temp folder that tests edit and commit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "-q", "-b", "main")

    def write(self, files: Mapping[str, str | bytes]) -> None:
        write_tree(self.root, files)

    def commit(self, message: str = "change") -> str:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.root, "rev-parse", "HEAD").strip()


@pytest.fixture
def git_tree(tree: Path) -> Iterator[GitTree]:
    repo = GitTree(tree)
    repo.commit("initial configs")
    yield repo
