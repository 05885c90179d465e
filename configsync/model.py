"""The pydantic models: what an agent file and ``configsync.yaml`` may say.

Repository context (the model allow-list, the tool registry) reaches the validators through
pydantic's validation context as a :class:`RepoSettings`; without one (a client reading a snapshot)
those checks are skipped. Types are strict: ``max_tokens: "1024"`` is a mistake, not a number.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Collection
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .escape import UNSAFE

__all__ = [
    "AGENT_ID",
    "NOT_BLANK",
    "PROMPT_FILE",
    "PROMPT_SOURCE",
    "AgentConfig",
    "Limits",
    "Metadata",
    "RepoSettings",
    "ToolSpec",
]

AGENT_ID = re.compile(r"[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*)*")
"""An agent id: its file's path under ``agents/`` without the extension."""

PROMPT_SOURCE = "set exactly one of `system_prompt` or `system_prompt_file`"
NOT_BLANK = (r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200d\u2028\u2029\u202f\u205f"
             r"\u2060\u3000\ufeff]")
"""A regex that finds a visible character: not whitespace (``str.isspace()``), and not a
byte-order mark or a zero-width space, joiner or word joiner (what some editors write into an
"empty" file). Written out rather than as a class escape, since ECMAScript's whitespace class
(editors, check-jsonschema) differs from Python's on U+001C-U+001F, U+0085 and U+FEFF. The
validator (inline prompts and prompt files alike) and the JSON Schema's ``pattern`` all use
it, so they agree on every character (issue 10.3-4)."""
PROMPT_FILE = r"prompts(?:/(?:[^/\\.][^/\\]*|\.[^/\\.][^/\\]*|\.\.[^/\\]+))+"
"""A relative path under ``prompts/``: parts split by ``/``, none empty, ``.`` or ``..``, no
backslash. No lookahead and no ``$`` inside, so Python's ``re`` and ECMAScript (editors,
check-jsonschema) read it the same way."""
NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
"""What a namespace may be (at most 100 characters), wherever it is given: configsync.yaml,
``--namespace``, a client. It is a Redis hash tag, so never empty and never ``{``, ``}``, ``:``
or a glob character."""
NAMESPACE_MAX = 100


DEV_NAMESPACE_SUFFIX = "-dev"


def is_dev_namespace(name: str) -> bool:
    """Whether ``name`` is a ``configsync dev`` namespace: it ends in ``-dev`` (any case).

    Who owns a namespace is decided by its name, so it survives the loss of Redis's data (a
    flush, a failover to an empty node; issue 17): ``configsync dev`` writes only these, a
    ``configsync sync`` daemon never writes one (DESIGN.md invariant 5)."""
    return name.lower().endswith(DEV_NAMESPACE_SUFFIX)


def namespace_problem(text: str) -> str | None:
    """Why ``text`` is not a namespace (``"is not a namespace: ..."``: the caller quotes the
    text its own way), or None when it is one."""
    if len(text) <= NAMESPACE_MAX and re.fullmatch(NAMESPACE_PATTERN, text):
        return None
    return (f"is not a namespace: letters, digits, `.`, `_` and `-`, starting with a letter "
            f"or digit, at most {NAMESPACE_MAX} characters")


_SCHEMA_REF = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ToolSpec(_Strict):
    """A tool agents may list."""

    description: str = ""


class Limits(_Strict):
    """Size limits for files in the config repository."""

    max_file_bytes: int = Field(262_144, ge=1)


class RepoSettings(_Strict):
    """``configsync.yaml`` at the root of a config repository."""

    model_config = ConfigDict(populate_by_name=True)

    namespace: str = Field("default", pattern=NAMESPACE_PATTERN, max_length=NAMESPACE_MAX,
                           description="Redis namespace the sync daemon writes to.")
    models: list[str] | None = Field(
        None, description="Allowed model names; absent means any model name.")
    tools: dict[str, ToolSpec] = Field(
        default_factory=dict, description="The tool registry: the only tools agents may list.")
    limits: Limits = Field(default_factory=Limits)
    allow_mass_delete: bool = Field(
        False, description="Allow one commit to delete more than half of the agents.")
    schema_: str | None = Field(
        None, alias="schema", pattern=_SCHEMA_REF,
        description="package.module:Class, an installed AgentConfig subclass to validate with.")


def _settings(info: ValidationInfo) -> RepoSettings | None:
    context = info.context
    settings = context.get("settings") if isinstance(context, dict) else None
    return settings if isinstance(settings, RepoSettings) else None


def _registered_tool(name: str, info: ValidationInfo) -> str:
    settings = _settings(info)
    if settings is not None and name not in settings.tools:
        known = (f"known: {_some(settings.tools)}" if settings.tools
                 else "configsync.yaml has no `tools:` registry")
        raise PydanticCustomError(
            "unknown_tool", "`{name}` is not in the tool registry ({known})",
            {"name": name, "known": known})
    return name


def _some(names: Collection[str], most: int = 20) -> str:
    """The first ``most`` of ``names`` in order, then how many more (a message stays short,
    and its cost does not grow with a registry of thousands)."""
    chosen = heapq.nsmallest(most + 1, names)
    shown = ", ".join(chosen[:most])
    return shown if len(chosen) <= most else f"{shown} and {len(names) - most} more"


ToolName = Annotated[str, AfterValidator(_registered_tool)]


class Metadata(_Strict):
    """Who owns an agent and what it is for; labels are free-form."""

    owner: str | None = None
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class AgentConfig(_Strict):
    """One agent's configuration. Subclass it and name the subclass in ``configsync.yaml``
    (``schema: package.module:Class``) to add the fields your agent framework needs."""

    system_prompt: str | None = Field(
        None, description="The system prompt. Set this or `system_prompt_file`, not both.")
    system_prompt_file: str | None = Field(
        None, description="A file under prompts/ holding the system prompt.")
    model: str = Field(min_length=1, description="Model name; one of `models` in configsync.yaml.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature, 0 to 2.")
    max_tokens: int = Field(1024, ge=1, description="Most tokens the model may generate.")
    tools: list[ToolName] = Field(
        default_factory=list, description="Tool names from the registry in configsync.yaml.")
    guardrail_threshold: float = Field(
        0.5, ge=0, le=1, description="Guardrail score threshold, 0 to 1.")
    extends: str | None = Field(
        None, pattern=f"^{AGENT_ID.pattern}$",
        description="Id of the agent this one is based on; the resolved config is a deep merge.")
    metadata: Metadata = Field(default_factory=Metadata)

    @field_validator("system_prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not re.search(NOT_BLANK, value):
            raise PydanticCustomError("blank", "must not be empty")
        return value

    @field_validator("system_prompt_file")
    @classmethod
    def _prompt_under_prompts(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if UNSAFE.search(value):  # a name that would print as two lines or reorder (issue 17)
            raise PydanticCustomError(
                "prompt_path_unsafe", "must not hold a control, line-breaking or invisible "
                "format character (got '{value}')", {"value": value})
        if not re.fullmatch(PROMPT_FILE, value):
            raise PydanticCustomError(
                "prompt_path", "must be a relative path under prompts/ (got '{value}')",
                {"value": value})
        return value

    @field_validator("model")
    @classmethod
    def _model_allowed(cls, value: str, info: ValidationInfo) -> str:
        settings = _settings(info)
        if settings is not None and settings.models is not None and value not in settings.models:
            raise PydanticCustomError(
                "model_not_allowed", "`{model}` is not an allowed model (allowed: {allowed})",
                {"model": value, "allowed": ", ".join(settings.models) or "none"})
        return value

    @field_validator("tools")
    @classmethod
    def _tools_unique(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for index, name in enumerate(value):
            if name in seen:
                raise PydanticCustomError(
                    "duplicate_tool", "`{name}` is listed twice", {"name": name, "index": index})
            seen.add(name)
        return value

    @model_validator(mode="after")
    def _one_prompt_source(self) -> AgentConfig:
        if (self.system_prompt is None) == (self.system_prompt_file is None):
            raise PydanticCustomError("prompt_source", PROMPT_SOURCE)
        return self
