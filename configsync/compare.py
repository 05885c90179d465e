"""Two resolved configs side by side: which fields changed, and which files the change came from.

Shared by ``configsync history`` (each version against the one before), ``configsync diff``
(two trees) and ``configsync rollback`` (why restoring an agent's own file is not enough).
Values are compared as JSON readers see them: ``True`` is not ``1`` (Python says it is), and
``1`` is ``1.0`` (RFC 8785 writes both as ``1``, so their checksums are equal too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .repo import SETTINGS_FILE
from .validate import Report

__all__ = ["ADDED", "CHANGED", "REMOVED", "Cause", "FieldChange", "causes", "change_line",
           "field_changes", "same_value"]

ADDED, REMOVED, CHANGED = "added", "removed", "changed"

OWN, BASE, PROMPT, SETTINGS = "own", "base", "prompt", "settings"


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field of a resolved config: ``path`` like ``temperature``, ``metadata.labels.tier``
    or ``tools[1]``; ``kind`` ADDED, REMOVED or CHANGED; ``old``/``new`` the JSON values
    (None on the side where the field is absent)."""

    path: str
    kind: str
    old: Any = None
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True)
class Cause:
    """Where a change to an agent's resolved config came from: ``kind`` is ``own`` (the agent's
    own file), ``base`` (a file in its ``extends`` chain), ``prompt`` (its prompt file) or
    ``settings`` (``configsync.yaml``); ``path`` is that file, relative to the config root."""

    kind: str
    path: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path}


def same_value(a: Any, b: Any) -> bool:
    """Whether two JSON values are equal as a JSON reader sees them (a bool is never a number;
    ``1 == 1.0``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and bool(a == b)


def field_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
                  ) -> list[FieldChange]:
    """The fields that differ between two resolved configs (None: the agent is absent on that
    side, so every field is added or removed), in the order of ``new``'s keys then ``old``'s.
    Mappings are compared key by key; lists of the same length item by item (``tools[1]``);
    a list whose length changed is one change of the whole list."""
    found: list[FieldChange] = []
    _walk(old or {}, new or {}, "", found)
    return found


def _walk(old: Any, new: Any, path: str, found: list[FieldChange]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in [*new, *(k for k in old if k not in new)]:
            child = f"{path}.{key}" if path else str(key)
            if key not in old:
                found.append(FieldChange(child, ADDED, None, new[key]))
            elif key not in new:
                found.append(FieldChange(child, REMOVED, old[key], None))
            else:
                _walk(old[key], new[key], child, found)
        return
    if (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
            and any(isinstance(item, (Mapping, list)) for item in [*old, *new])):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _walk(a, b, f"{path}[{i}]", found)
        return
    if not same_value(old, new):
        found.append(FieldChange(path, CHANGED, old, new))


def change_line(change: FieldChange, show: Callable[[Any], str], arrow: str) -> str:
    """``+ path: new``, ``- path: old`` or ``~ path: old ARROW new``, each value through
    ``show`` (the text output of ``history`` and ``diff``)."""
    if change.kind == ADDED:
        return f"+ {change.path}: {show(change.new)}"
    if change.kind == REMOVED:
        return f"- {change.path}: {show(change.old)}"
    return f"~ {change.path}: {show(change.old)} {arrow} {show(change.new)}"


def _file_data(report: Report | None, agent_id: str) -> tuple[str, Any] | None:
    if report is None or agent_id not in report.agents:
        return None
    agent = report.agents[agent_id]
    return agent.path, agent.doc.data


def causes(agent_id: str, old: Report | None, new: Report | None) -> list[Cause]:
    """The files whose change changed ``agent_id``'s resolved config between two checked trees
    (either may lack the agent, or be None: nothing there): its own file, each base of its
    ``extends`` chain (on the new side, else the old), its prompt file, and ``configsync.yaml``
    when nothing else explains it. Files are compared by what they hold once parsed (a
    comment or a reformatted line changes no config)."""
    found: list[Cause] = []
    own_old, own_new = _file_data(old, agent_id), _file_data(new, agent_id)
    if own_old is None or own_new is None:  # created or deleted: its own file, whatever else
        return [Cause(OWN, (own_new or own_old or (f"agents/{agent_id}.yaml", None))[0])]
    if not same_value(own_old[1], own_new[1]) or own_old[0] != own_new[0]:
        found.append(Cause(OWN, own_new[0]))
    side = new if new is not None and agent_id in new.chains else old
    chain: Sequence[str] = side.chains.get(agent_id, ()) if side is not None else ()
    for base in chain[1:]:
        was, now = _file_data(old, base), _file_data(new, base)
        if was is None or now is None or not same_value(was[1], now[1]):
            found.append(Cause(BASE, (now or was or (f"agents/{base}.yaml", None))[0]))
    prompt_old = old.prompt_of.get(agent_id) if old is not None else None
    prompt_new = new.prompt_of.get(agent_id) if new is not None else None
    if prompt_new is not None and prompt_new == prompt_old and old is not None \
            and new is not None and old.prompts.get(prompt_old) != new.prompts.get(prompt_new):
        found.append(Cause(PROMPT, prompt_new))
    if not found and old is not None and new is not None and old.settings != new.settings:
        found.append(Cause(SETTINGS, SETTINGS_FILE))
    return found
