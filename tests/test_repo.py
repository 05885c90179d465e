"""Config trees from folders, agent ids and the deep merge behind ``extends``."""

from __future__ import annotations

from pathlib import Path

import pytest

from configsync.errors import UsageError
from configsync.repo import FolderSource, agent_id_for, deep_merge, has_path, open_source

from .conftest import write_tree


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
