"""Plain-word messages for pydantic errors, and the credential scan."""

from __future__ import annotations

import pytest

from configsync.messages import did_you_mean, dotted, find_secret, show


@pytest.mark.parametrize(("value", "shown"), [
    (True, "true"), (None, "null"), (2.0, "2"), (2.5, "2.5"), (7, "7"), ("x", "'x'"),
    ("y" * 50, repr("y" * 37 + "...")), ([1], "a list"), ({"a": 1}, "a mapping"),
])
def test_show(value: object, shown: str) -> None:
    assert show(value) == shown


def test_dotted_and_hints() -> None:
    assert dotted(["metadata", "labels", "team"]) == "metadata.labels.team"
    assert dotted(["tools", 2]) == "tools[2]"
    assert did_you_mean("temprature", ["temperature", "tools"]) == (
        ", did you mean `temperature`?")
    assert did_you_mean("zzz", ["temperature"]) == ""


@pytest.mark.parametrize(("text", "found"), [
    ("key sk-proj-abcdefghijklmnopqrstuvwx", True),
    ("AKIAABCDEFGHIJKLMNOP", True),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", True),
    ("xoxb-1234567890-abc", True),
    ("ask-me anything about sk-learn", False),
    ("plain prompt", False),
])
def test_find_secret(text: str, found: bool) -> None:
    assert (find_secret(text) is not None) is found
