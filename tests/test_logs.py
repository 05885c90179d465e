"""Logs are key=value and never carry credentials."""

from __future__ import annotations

import pytest

from configsync.logs import kv, redact_text, redact_url


@pytest.mark.parametrize(("url", "clean"), [
    ("https://user:tok@github.com/org/repo.git", "https://github.com/org/repo.git"),
    ("https://tok@host:8443/r", "https://host:8443/r"),
    ("redis://:secret@127.0.0.1:6380/0", "redis://127.0.0.1:6380/0"),
    ("https://github.com/org/repo.git", "https://github.com/org/repo.git"),
    ("/srv/git/configs.git", "/srv/git/configs.git"),
    ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
])
def test_redact_url(url: str, clean: str) -> None:
    assert redact_url(url) == clean


def test_kv_quotes_and_redacts() -> None:
    assert kv("applied", commit="abc", message="fix the prompt", empty="", skipped=None) == (
        'event=applied commit=abc message="fix the prompt" empty=""')
    assert "pw" not in kv("x", error="fatal: https://u:pw@host/r not found")
    assert redact_text("see https://u:pw@h/r and redis://:p@h:1") == "see https://h/r and redis://h:1"
