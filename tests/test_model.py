"""The pydantic models on their own, as the client library will use them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from configsync.model import AgentConfig, RepoSettings


def test_defaults_and_frozen() -> None:
    config = AgentConfig(system_prompt="hi", model="gpt-4o")
    assert (config.temperature, config.max_tokens, config.tools, config.guardrail_threshold) == (
        0.7, 1024, [], 0.5)
    with pytest.raises(ValidationError):
        config.model = "other"  # type: ignore[misc]


def test_context_checks_only_with_settings() -> None:
    data = {"system_prompt": "hi", "model": "anything", "tools": ["x"]}
    assert AgentConfig.model_validate(data).tools == ["x"]
    settings = RepoSettings.model_validate({"models": ["gpt-4o"], "tools": {"y": {}}})
    with pytest.raises(ValidationError) as info:
        AgentConfig.model_validate(data, context={"settings": settings})
    assert [e["type"] for e in info.value.errors()] == ["model_not_allowed", "unknown_tool"]


def test_strict_types() -> None:
    with pytest.raises(ValidationError):
        AgentConfig.model_validate({"system_prompt": "hi", "model": "m", "max_tokens": "10"})


def test_settings_alias() -> None:
    settings = RepoSettings.model_validate({"schema": "a.b:C"})
    assert settings.schema_ == "a.b:C"
    assert RepoSettings().limits.max_file_bytes == 262_144
