"""The editor mapping ``configsync schema`` keeps: ``.vscode/settings.json``'s ``yaml.schemas``.

With it, VS Code's YAML extension (yaml-language-server) checks every file under ``agents/``,
nested folders too, and ``configsync.yaml`` against the generated schemas: no per-file
``# yaml-language-server: $schema=`` comment, whose relative path differs with each folder's
depth (issue 10). An existing settings file is merged into, never replaced: only
``yaml.schemas``' entries for our schema files change. VS Code reads the file as JSON with
comments; a file that has comments or trailing commas is read, but never rewritten (its
comments would be lost), and a file that cannot be read is reported and left alone.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .errors import ConfigsyncError
from .schema import AGENT_SCHEMA_FILE, SETTINGS_SCHEMA_FILE

__all__ = ["SETTINGS_PATH", "EditorSettingsError", "editor_settings"]

SETTINGS_PATH = Path(".vscode") / "settings.json"
"""Where VS Code keeps a workspace's settings, under the repository root."""

AGENT_GLOBS = ["agents/**/*.yaml", "agents/**/*.yml"]


class EditorSettingsError(ConfigsyncError):
    """``.vscode/settings.json`` exists but configsync cannot (or must not) rewrite it."""


def schema_mapping(schemas: Path, root: Path) -> dict[str, list[str]]:
    """``yaml.schemas`` entries: schema path (relative to ``root``, as VS Code wants) → globs."""
    try:
        folder = Path(os.path.relpath(schemas, root)).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return {(schemas / AGENT_SCHEMA_FILE).resolve().as_uri(): AGENT_GLOBS,
                (schemas / SETTINGS_SCHEMA_FILE).resolve().as_uri(): ["configsync.yaml"]}
    prefix = "./" if folder == "." else ("" if folder.startswith("../") else "./") + folder + "/"
    return {f"{prefix}{AGENT_SCHEMA_FILE}": AGENT_GLOBS,
            f"{prefix}{SETTINGS_SCHEMA_FILE}": ["configsync.yaml"]}


def editor_settings(schemas: Path, root: Path) -> str | None:
    """The text ``root/.vscode/settings.json`` should have, or None when it already maps our
    schemas. Raises :class:`EditorSettingsError` when the file exists and cannot be read as
    JSON with comments, or has comments (so it is not rewritten) and lacks the mapping."""
    target = root / SETTINGS_PATH
    wanted = schema_mapping(schemas, root)
    snippet = json.dumps({"yaml.schemas": wanted})
    try:
        text = target.read_text("utf-8-sig")
    except FileNotFoundError:
        return _dump({"yaml.schemas": wanted})
    except (OSError, UnicodeDecodeError) as exc:
        raise EditorSettingsError(f"cannot read {target}: {exc}") from None
    try:
        settings = json.loads(text) if text.strip() else {}
        commented = False
    except json.JSONDecodeError:
        try:
            settings = json.loads(_plain_json(text))
        except json.JSONDecodeError as exc:
            raise EditorSettingsError(
                f"cannot parse {target} (line {exc.lineno} column {exc.colno}: {exc.msg}); "
                f"wrote nothing to it: fix it, or add {snippet} to it yourself") from None
        commented = True
    if not isinstance(settings, dict):
        raise EditorSettingsError(f"{target} is not a JSON object; wrote nothing to it: add "
                                  f"{snippet} to it yourself")
    schemas_now = settings.get("yaml.schemas")
    if schemas_now is not None and not isinstance(schemas_now, dict):
        raise EditorSettingsError(f"{target}: `yaml.schemas` is not an object; wrote nothing "
                                  f"to it: make it one holding {json.dumps(wanted)}")
    merged: dict[str, Any] = dict(schemas_now or {})
    merged.update(wanted)
    if schemas_now == merged:
        return None
    if commented:
        raise EditorSettingsError(
            f"{target} has comments or trailing commas, which rewriting it would lose; wrote "
            f"nothing to it: add {json.dumps(wanted)[1:-1]} to its `yaml.schemas` yourself")
    return _dump({**settings, "yaml.schemas": merged})


def _dump(settings: dict[str, Any]) -> str:
    return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"


def _plain_json(text: str) -> str:
    """JSON with comments (``//``, ``/* */``) and trailing commas, as VS Code allows, made
    plain JSON: each becomes spaces (so lines and columns stay right); strings are kept."""
    def blank(match: re.Match[str]) -> str:
        found = match.group()
        return found if found.startswith('"') else re.sub(r"[^\n]", " ", found)

    return _TRAILING_COMMA.sub(blank, _COMMENT.sub(blank, text))


_STRING = r'"(?:[^"\\\n]|\\.)*"'
_COMMENT = re.compile(rf"{_STRING}|//[^\n]*|/\*[\s\S]*?\*/")
_TRAILING_COMMA = re.compile(rf"{_STRING}|,(?=\s*[\]}}])")
