"""Which files git stores through a filter, from .gitattributes, as git decides it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from configsync.attributes import filtered_paths

PATHS = ["configsync.yaml", "prompts/a.md", "prompts/deep/b.md", "agents/x.yaml",
         "agents/team/y.yaml", "prompts/r.md", "prompts/caf\u00e9.md"]


@pytest.mark.parametrize(("files", "expected"), [
    ({".gitattributes": "*.md filter=lfs\n"},
     {"prompts/a.md", "prompts/deep/b.md", "prompts/r.md", "prompts/caf\u00e9.md"}),
    ({".gitattributes": "/prompts/*.md filter=lfs\n"},
     {"prompts/a.md", "prompts/r.md", "prompts/caf\u00e9.md"}),
    ({".gitattributes": "prompts/** filter=lfs\n"},
     {"prompts/a.md", "prompts/deep/b.md", "prompts/r.md", "prompts/caf\u00e9.md"}),
    ({".gitattributes": "**/y.yaml filter=crypt\n"}, {"agents/team/y.yaml"}),
    ({".gitattributes": '"prompts/r.md" filter=lfs\n'}, {"prompts/r.md"}),
    ({".gitattributes": '"prompts/caf\\303\\251.md" filter=lfs\n'}, {"prompts/caf\u00e9.md"}),
    ({".gitattributes": "[attr]big filter=lfs -text\n*.md big\n"},
     {"prompts/a.md", "prompts/deep/b.md", "prompts/r.md", "prompts/caf\u00e9.md"}),
    ({"prompts/.gitattributes": "*.md filter=lfs\n"},
     {"prompts/a.md", "prompts/deep/b.md", "prompts/r.md", "prompts/caf\u00e9.md"}),
    ({"prompts/.gitattributes": "/a.md filter=lfs\n"}, {"prompts/a.md"}),
    ({".gitattributes": "*.md filter=lfs\n", "prompts/.gitattributes": "r.md -filter\n"},
     {"prompts/a.md", "prompts/deep/b.md", "prompts/caf\u00e9.md"}),  # deeper wins
    ({".gitattributes": "*.md filter=lfs\nprompts/a.md !filter\n"},
     {"prompts/deep/b.md", "prompts/r.md", "prompts/caf\u00e9.md"}),  # last line wins
    ({".gitattributes": "prompts/ filter=lfs\n*.yaml text eol=lf\n# *.md filter=lfs\n"},
     set()),  # a folder pattern sets nothing on files; other attributes are not filters
    ({".gitattributes": "*.[mM][dD] filter=lfs\n"},
     {"prompts/a.md", "prompts/deep/b.md", "prompts/r.md", "prompts/caf\u00e9.md"}),
    ({".gitattributes": "agents/*.yaml filter=lfs\n"}, {"agents/x.yaml"}),
])
def test_filtered_paths(files: dict[str, str], expected: set[str]) -> None:
    assert set(filtered_paths(files, PATHS)) == expected


def test_what_is_said_about_a_filtered_file() -> None:
    found = filtered_paths({"prompts/.gitattributes": "# x\n*.md filter=crypt\n"}, ["prompts/a.md"])
    (only,) = found.values()
    assert (only.filter, only.file, only.line, only.pattern) == (
        "crypt", "prompts/.gitattributes", 2, "*.md")


@pytest.mark.parametrize(("text", "path"), [
    ("*.md filter=lfs\n", "prompts/deep/b.md"),
    ("/prompts/*.md filter=lfs\n", "prompts/deep/b.md"),
    ("prompts/** filter=lfs\n", "prompts/deep/b.md"),
    ("**/y.yaml filter=lfs\n", "agents/team/y.yaml"),
    ("[attr]big filter=lfs\n*.md big\n", "prompts/a.md"),
    ("*.md filter=lfs\nprompts/a.md -filter\n", "prompts/a.md"),
    ("agents/*.yaml filter=lfs\n", "agents/team/y.yaml"),
])
def test_git_agrees(tmp_path: Path, text: str, path: str) -> None:
    """The same question to `git check-attr`, on a real repository."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitattributes").write_text(text)
    out = subprocess.run(["git", "check-attr", "filter", "--", path], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    by_git = not out.strip().endswith((": unspecified", ": unset"))
    assert (path in filtered_paths({".gitattributes": text}, [path])) == by_git, out
