"""compare.py: field-level changes of two resolved configs, and the files they came from."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from configsync.compare import Cause, FieldChange, causes, field_changes, same_value
from configsync.repo import FolderSource
from configsync.validate import Report, check_tree

from .conftest import SETTINGS, write_tree


def test_nested_mappings_key_by_key_in_new_then_old_order() -> None:
    old = {"metadata": {"owner": "x", "labels": {"tier": "a"}}, "model": "m"}
    new = {"model": "m", "metadata": {"labels": {"tier": "b", "channel": "chat"}}}
    assert field_changes(old, new) == [
        FieldChange("metadata.labels.tier", "changed", "a", "b"),
        FieldChange("metadata.labels.channel", "added", None, "chat"),
        FieldChange("metadata.owner", "removed", "x", None),
    ]


@pytest.mark.parametrize(("old", "new", "expected"), [
    # a list of scalars is one value
    (["a", "b"], ["a", "c"], [FieldChange("tools", "changed", ["a", "b"], ["a", "c"])]),
    # a list of mappings of the same length, item by item
    ([{"name": "a"}, {"name": "b"}], [{"name": "a"}, {"name": "c"}],
     [FieldChange("tools[1].name", "changed", "b", "c")]),
    # a list whose length changed is one change of the whole list
    ([{"name": "a"}], [{"name": "a"}, {"name": "b"}],
     [FieldChange("tools", "changed", [{"name": "a"}], [{"name": "a"}, {"name": "b"}])]),
    ([["x"]], [["y"]], [FieldChange("tools[0]", "changed", ["x"], ["y"])]),
    (["a"], ["a"], []),
])
def test_lists(old: list[Any], new: list[Any], expected: list[FieldChange]) -> None:
    assert field_changes({"tools": old}, {"tools": new}) == expected


@pytest.mark.parametrize(("old", "new", "same"), [
    (True, 1, False),
    (False, 0, False),
    (1, 1.0, True),
    (0.5, 0.5, True),
    (None, False, False),
    ("1", 1, False),
    ([1, True], [1.0, True], True),
    ([1, True], [1, 1], False),
    ({"a": [1, True]}, {"a": [1.0, True]}, True),
    ({"a": [1, True]}, {"a": [1, 1]}, False),
    ({"a": 1}, {"a": 1, "b": 2}, False),
])
def test_values_compare_as_json_readers_see_them(old: Any, new: Any, same: bool) -> None:
    assert same_value(old, new) is same
    if not isinstance(old, dict):  # (mappings are walked key by key: below)
        assert field_changes({"v": old}, {"v": new}) == (
            [] if same else [FieldChange("v", "changed", old, new)])


def test_an_absent_side_adds_or_removes_every_field() -> None:
    assert field_changes(None, {"a": 1, "b": {"c": 2}}) == [
        FieldChange("a", "added", None, 1), FieldChange("b", "added", None, {"c": 2})]
    assert field_changes({"a": 1}, None) == [FieldChange("a", "removed", 1, None)]


TREE = {
    "configsync.yaml": SETTINGS,
    "agents/base.yaml": "system_prompt: Base.\nmodel: gpt-4o\nmax_tokens: 500\n",
    "agents/child.yaml": "extends: base\ntemperature: 0.2\n",
    "agents/writer.yaml": "system_prompt_file: prompts/writer.md\nmodel: gpt-4o\n",
    "prompts/writer.md": "Write well.\n",
}


def checked(tmp_path: Path, name: str, changes: Mapping[str, str]) -> Report:
    root = write_tree(tmp_path / name, {**TREE, **changes})
    report = check_tree(FolderSource(root))
    assert report.errors == []
    return report


@pytest.mark.parametrize(("changes", "agent", "expected"), [
    ({"agents/child.yaml": "extends: base\ntemperature: 0.4\n"}, "child",
     [Cause("own", "agents/child.yaml")]),
    ({"agents/base.yaml": "system_prompt: Base.\nmodel: gpt-4o\nmax_tokens: 800\n"}, "child",
     [Cause("base", "agents/base.yaml")]),
    ({"agents/base.yaml": "system_prompt: Base.\nmodel: gpt-4o\nmax_tokens: 800\n",
      "agents/child.yaml": "# a comment changes no config\nextends: base\ntemperature: 0.2\n"},
     "child", [Cause("base", "agents/base.yaml")]),
    ({"agents/base.yaml": "system_prompt: Base.\nmodel: gpt-4o\nmax_tokens: 800\n",
      "agents/child.yaml": "extends: base\ntemperature: 0.4\n"}, "child",
     [Cause("own", "agents/child.yaml"), Cause("base", "agents/base.yaml")]),
    ({"prompts/writer.md": "Write better.\n"}, "writer", [Cause("prompt", "prompts/writer.md")]),
    ({"configsync.yaml": SETTINGS + "limits: {max_file_bytes: 100000}\n"}, "writer",
     [Cause("settings", "configsync.yaml")]),
    ({}, "writer", []),
])
def test_causes(tmp_path: Path, changes: Mapping[str, str], agent: str,
                expected: list[Cause]) -> None:
    old, new = checked(tmp_path, "old", {}), checked(tmp_path, "new", changes)
    assert causes(agent, old, new) == expected


def test_causes_of_an_agent_on_one_side_only(tmp_path: Path) -> None:
    old = checked(tmp_path, "old", {})
    new = checked(tmp_path, "new", {"agents/extra.yaml": "extends: base\n"})
    assert causes("extra", old, new) == [Cause("own", "agents/extra.yaml")]
    assert causes("extra", new, old) == [Cause("own", "agents/extra.yaml")]
    # None: nothing there; a new agent's cause is its own file, whatever its base did
    assert causes("extra", None, new) == [Cause("own", "agents/extra.yaml")]
    assert [c.to_json() for c in causes("child", old, new)] == []
