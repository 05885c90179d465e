"""Config trees from folders, agent ids and the deep merge behind ``extends``."""

from __future__ import annotations

from pathlib import Path

import pytest

from configsync.errors import UsageError
from configsync.git import GitRepo
from configsync.repo import (
    FolderSource,
    IndexSource,
    agent_id_for,
    deep_merge,
    find_root,
    has_path,
    open_source,
)

from .conftest import GitTree, git, write_tree


@pytest.mark.parametrize(("path", "agent_id"), [
    ("agents/support.yaml", "support"),
    ("agents/billing/refunds.yaml", "billing/refunds"),
    ("agents/a.yml", "a"),
    ("agents/readme.md", None),
    ("prompts/a.yaml", None),
    ("configsync.yaml", None),
])
def test_agent_id_for(path: str, agent_id: str | None) -> None:
    assert agent_id_for(path) == agent_id


def test_deep_merge() -> None:
    base = {"a": 1, "m": {"x": 1, "y": {"z": 1}}, "l": [1, 2]}
    child = {"a": 2, "m": {"y": {"w": 2}}, "l": [3]}
    assert deep_merge(base, child) == {"a": 2, "m": {"x": 1, "y": {"z": 1, "w": 2}}, "l": [3]}
    assert base == {"a": 1, "m": {"x": 1, "y": {"z": 1}}, "l": [1, 2]}  # not modified


def test_has_path() -> None:
    data = {"a": {"b": [1, {"c": None}]}}
    assert has_path(data, ["a", "b", 1, "c"])
    assert not has_path(data, ["a", "b", 2])
    assert not has_path(data, ["a", "x"])
    assert has_path(data, [])


def test_folder_source_lists_only_config_paths(tmp_path: Path) -> None:
    write_tree(tmp_path, {"configsync.yaml": "x", "agents/b/a.yaml": "y", "prompts/p.md": "z",
                          "src/code.py": "", "README.md": ""})
    (tmp_path / "agents" / "fifo").mkdir()
    source = FolderSource(tmp_path)
    entries = source.entries()
    assert [(e.path, e.kind, e.size) for e in entries] == [
        ("configsync.yaml", "file", 1), ("agents/b/a.yaml", "file", 1),
        ("prompts/p.md", "file", 1)]
    assert [data for _, data in source.read(entries)] == [b"x", b"y", b"z"]


def test_folder_source_reports_special_files(tmp_path: Path) -> None:
    import os

    write_tree(tmp_path, {"agents/a.yaml": "y"})
    os.mkfifo(tmp_path / "agents" / "pipe.yaml")
    (tmp_path / "agents" / "l.yaml").symlink_to("a.yaml")
    kinds = {e.path: e.kind for e in FolderSource(tmp_path).entries()}
    assert kinds == {"agents/a.yaml": "file", "agents/l.yaml": "symlink",
                     "agents/pipe.yaml": "other"}


def test_open_source_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        with open_source(tmp_path / "nope"):
            pass
    with pytest.raises(UsageError, match="not a git repository"):
        with open_source(tmp_path, "HEAD"):
            pass


def test_index_source_reads_what_is_staged(tmp_path: Path) -> None:
    repo = GitTree(tmp_path / "repo")
    repo.write({"configsync.yaml": "x", "agents/a.yaml": "staged", "src/code.py": ""})
    git(repo.root, "add", "-A")
    repo.write({"agents/a.yaml": "changed, not staged", "agents/new.yaml": "untracked"})
    (repo.root / "prompts").mkdir()
    (repo.root / "prompts" / "link.md").symlink_to("/etc/hostname")
    git(repo.root, "add", "prompts/link.md")
    with GitRepo(repo.root) as git_repo:
        source = IndexSource(git_repo)
        entries = source.entries()
        assert [(e.path, e.kind, e.size) for e in entries] == [
            ("agents/a.yaml", "file", 6), ("configsync.yaml", "file", 1),
            ("prompts/link.md", "symlink", 13)]
        assert [data for _, data in source.read(entries[:2])] == [b"staged", b"x"]


def test_index_source_in_a_subfolder(tmp_path: Path) -> None:
    repo = GitTree(tmp_path / "mono")
    repo.write({"configs/configsync.yaml": "x", "configsync.yaml": "outer"})
    git(repo.root, "add", "-A")
    with open_source(repo.root / "configs", cached=True) as source:
        assert [(e.path, e.size) for e in source.entries()] == [("configsync.yaml", 1)]


def test_find_root(tmp_path: Path) -> None:
    write_tree(tmp_path, {"configsync.yaml": "outer", "repo/.git/HEAD": "",
                          "repo/sub/configsync.yaml": "", "repo/sub/agents/x/a.yaml": "",
                          "repo/agents/b.yaml": ""})
    found = find_root(tmp_path / "repo" / "sub" / "agents" / "x")
    assert (found.folder, found.top, found.found) == (
        tmp_path / "repo" / "sub", tmp_path / "repo", True)
    assert found.from_top("agents/x/a.yaml") == "sub/agents/x/a.yaml"
    missing = find_root(tmp_path / "repo" / "agents")  # stops at the repository's top
    assert (missing.folder, missing.found) == (tmp_path / "repo", False)
