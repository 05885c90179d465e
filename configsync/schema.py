"""The agent model a repository asks for, and the JSON Schema files editors and CI use.

``schema: package.module:Class`` in ``configsync.yaml`` names an :class:`AgentConfig` subclass. It
is imported from installed packages only, never from a config tree, whatever ``sys.path`` and the
working directory say (issue 8): while importing, every ``sys.path`` entry inside the repository
being checked is hidden, and so is the working directory (``''``, ``.``, ``PYTHONPATH=.``), where
a config checkout usually is; the interpreter's own site-packages stay (a virtual environment may
live inside the repository). A module that still resolves to a file there is refused.

Nothing a config repository names can stop or take over the process that reads it (issue 17):
a module named ``__main__`` (any part of the dotted name) is refused by name (it runs a
program: ``configsync.__main__`` re-ran the CLI inside the daemon and its ``SystemExit`` stopped
it), and so are private names (a part or the class starting with ``_``) and configsync's own
classes but :data:`OWN_MODEL`; when the operator sets ``CONFIGSYNC_SCHEMA_MODULES``
(comma-separated packages; set to none, a :class:`UsageError`), only modules in those packages
are imported; and a module not imported yet is first imported in a throwaway child process
(``python -I``, stdin on /dev/null, its own session and process group, killed whole after
``IMPORT_SECONDS``; one trial per module a process), so that an import that raises anything
(``SystemExit``, ``KeyboardInterrupt``...), ends the process (``os._exit``), never ends, prints
to standard output or starts threads is refused (:class:`SchemaImportError`, a rejected commit
for the daemon) before this process runs it. The class is looked up in the module's own
namespace (a module ``__getattr__``, pydantic's for ``BaseSettings``, never runs), and whatever
resolving the name still raises, ``BaseException`` included, is a :class:`SchemaImportError`.
What the trial cannot see is listed in DESIGN.md (*Which code a config repository may name*).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import SchemaImportError, UsageError
from .model import NOT_BLANK, PROMPT_FILE, AgentConfig, RepoSettings
from .snapshot import MAX_SAFE_INTEGER

__all__ = [
    "AGENT_SCHEMA_FILE",
    "IMPORT_SECONDS",
    "OWN_MODEL",
    "SCHEMA_MODULES_ENV",
    "SETTINGS_SCHEMA_FILE",
    "agent_json_schema",
    "allowed_schema_modules",
    "load_agent_model",
    "render_schemas",
    "settings_json_schema",
    "tick_during_trials",
]

AGENT_SCHEMA_FILE = "agent.schema.json"
SETTINGS_SCHEMA_FILE = "configsync.schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_MODULES_ENV = "CONFIGSYNC_SCHEMA_MODULES"
"""The operator's allow-list: comma-separated package (or module) names; when set (and not
blank), a ``schema:`` module outside every one of them is refused. A config repository cannot
set it: it comes from the environment of the process that validates or syncs."""
IMPORT_SECONDS = 10.0
"""How long the trial import of a ``schema:`` module in a child process may take."""

_MAX_FLOAT = sys.float_info.max
_PROMPTS = ("system_prompt", "system_prompt_file")
_EXTENDS = {"required": ["extends"], "properties": {"extends": {"type": "string"}}}
"""The file has a base (``extends: null`` is no base), which may supply any field."""


def _present(*names: str) -> dict[str, Any]:
    """The file sets every one of ``names`` to a string (null counts as unset)."""
    return {"required": list(names), "properties": {n: {"type": "string"} for n in names}}


# What `validate` says of a single file (model.py, validate.py), as JSON Schema can say it:
_AGENT_RULES = [
    # never both prompt sources
    {"not": _present(*_PROMPTS)},
    # with no base, nothing supplies `model`
    {"if": {"not": _EXTENDS}, "then": {"required": ["model"]}},
    # with no base, or when the file names a prompt key (that drops the inherited prompt, even
    # as null), one prompt source must be set here
    {"if": {"anyOf": [{"not": _EXTENDS}, *({"required": [n]} for n in _PROMPTS)]},
     "then": {"anyOf": [_present(n) for n in _PROMPTS]}},
]


def _resolved(path: str | os.PathLike[str]) -> Path | None:
    try:
        return Path(path or os.curdir).resolve()
    except OSError:
        return None


def _site_folders(root: Path | None) -> list[Path]:
    """Where this interpreter installs packages: trusted, even inside the repository (the
    README's virtual environment lives in the config repository's checkout), unless the
    repository tracks files there (a pull request that commits `.venv/.../evil.py`)."""
    paths = sysconfig.get_paths()
    found = [p for p in map(_resolved, {paths[k] for k in ("purelib", "platlib") if k in paths})
             if p is not None]
    if root is None:
        return found
    from .git import tracks_files_under  # (GitPython only when a venv lives in the repository)

    return [p for p in found if not p.is_relative_to(root) or not tracks_files_under(root, p)]


def load_agent_model(ref: str | None, repo_root: Path | None = None, *,
                     hide_cwd: bool = True, timeout: float = IMPORT_SECONDS) -> type[AgentConfig]:
    """The class ``ref`` (``package.module:Class``) names, or AgentConfig when ``ref`` is None.

    ``repo_root`` is the config tree on disk; without one, only the working directory is
    hidden (``hide_cwd=False`` in an agent's own process, the client's: its working directory
    is the application, not a config tree). ``timeout``: seconds the trial import in a child
    process may take (see the module's docstring). Raises :class:`SchemaImportError` when the
    module is refused (``__main__``, outside ``CONFIGSYNC_SCHEMA_MODULES``, an import that
    raises anything, ends or hangs, prints or starts threads), cannot be imported from
    installed packages, or is not a subclass of :class:`AgentConfig`.
    """
    if ref is None:
        return AgentConfig
    refused = _refused_name(ref)
    if refused is not None:
        raise SchemaImportError(refused)
    root = _resolved(repo_root) if repo_root is not None else None
    here, sites = _resolved(os.curdir) if hide_cwd else None, _site_folders(root)

    def untrusted(path: str | os.PathLike[str]) -> bool:
        resolved = _resolved(path)
        if resolved is None or any(resolved.is_relative_to(site) for site in sites):
            return False
        return (here is not None and resolved == here) or (
            root is not None and resolved.is_relative_to(root))

    narrowed = [p for p in sys.path if not untrusted(p)]
    try:
        return _resolve(ref, narrowed, untrusted, timeout)
    except SchemaImportError:
        raise
    except BaseException as exc:  # whatever resolving a name raises is a refusal (issue 17)
        raise SchemaImportError(f"cannot use `{ref}`: {_failure(exc)}") from exc


def _resolve(ref: str, narrowed: list[str], untrusted: Callable[[str], bool],
             timeout: float) -> type[AgentConfig]:
    """``load_agent_model``'s import, attribute lookup and checks (the caller turns anything
    they raise into a :class:`SchemaImportError`: a module ``__getattr__`` that raises,
    ``pydantic:BaseSettings``, a metaclass whose ``issubclass`` raises...)."""
    module_name, _, class_name = ref.partition(":")
    if module_name not in sys.modules:
        origin, classes = _trial_import(module_name, narrowed, timeout)
        if origin and untrusted(str(Path(origin).parent)):
            raise SchemaImportError(
                f"`{module_name}` resolves to {origin}, inside the repository being validated; "
                "schemas come from installed packages only")
        if classes.get(class_name) is not True:
            raise SchemaImportError(
                f"`{ref}` is not a subclass of configsync.AgentConfig"
                if classes.get(class_name) is False else f"`{module_name}` has no `{class_name}`")
    saved = sys.path[:]
    sys.path[:] = narrowed
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # whatever an import raises is a refusal (issue 17)
        raise SchemaImportError(f"cannot import `{module_name}`: {_failure(exc)}") from exc
    finally:
        sys.path[:] = saved
    origin = getattr(module, "__file__", None)
    if isinstance(origin, str) and untrusted(str(Path(origin).parent)):
        raise SchemaImportError(
            f"`{module_name}` resolves to {origin}, inside the repository being validated; "
            "schemas come from installed packages only")
    # the module's own namespace only: a module ``__getattr__`` (pydantic's, for names it
    # moved away) runs no code of the module's choosing here
    found = vars(module).get(class_name)
    if not (isinstance(found, type) and issubclass(found, AgentConfig)):
        raise SchemaImportError(
            f"`{ref}` is not a subclass of configsync.AgentConfig" if found is not None
            else f"`{module_name}` has no `{class_name}`")
    return found


OWN_MODEL = "configsync.model:AgentConfig"
"""The one ``schema:`` in configsync's own package that a repository may name (the default)."""


def _refused_name(ref: str) -> str | None:
    """Why ``ref`` (``module:Class``) may not be imported at all, or None: a ``__main__``
    module (a program, not a library); a private name (a part or the class starting with
    ``_``: no API of anyone's); configsync's own package, but for :data:`OWN_MODEL` (its
    internals are not a user's model: ``configsync.holdings:_Lenient`` turned the unknown-key
    check off); or a module outside the operator's ``CONFIGSYNC_SCHEMA_MODULES``."""
    module_name, _, class_name = ref.partition(":")
    parts = module_name.split(".")
    if "__main__" in parts:
        return (f"`{module_name}` is a program's `__main__`, which runs when imported; "
                "name the module that defines the class")
    if any(part.startswith("_") for part in [*parts, class_name]):
        return (f"`{ref}` is a private name (a part starts with `_`); name a public class of "
                "an installed package")
    if parts[0] == "configsync" and ref != OWN_MODEL:
        return (f"`{ref}` is part of configsync itself, not a model of yours; name your own "
                f"AgentConfig subclass (or leave `schema:` out for {OWN_MODEL})")
    try:
        allowed = allowed_schema_modules()
    except UsageError as exc:
        return str(exc)
    if allowed and not any(module_name == p or module_name.startswith(p + ".") for p in allowed):
        return (f"`{module_name}` is not in the packages this machine allows for schemas "
                f"({SCHEMA_MODULES_ENV}={','.join(allowed)})")
    return None


def allowed_schema_modules() -> list[str]:
    """The packages ``CONFIGSYNC_SCHEMA_MODULES`` allows (comma-separated, blanks ignored); an
    empty list when it is unset (every installed module may be named). Raises
    :class:`UsageError` when it is set but names no package (``""``, ``" "``, ``","``): an
    allow-list that allows everything by mistake is no allow-list (the CLI exits 2)."""
    text = os.environ.get(SCHEMA_MODULES_ENV)
    if text is None:
        return []
    allowed = [p.strip() for p in text.split(",") if p.strip()]
    if not allowed:
        raise UsageError(f"{SCHEMA_MODULES_ENV} is set but names no package ({text!r}); name "
                         "the packages schemas may come from (comma-separated), or unset it")
    return allowed


def _failure(exc: BaseException) -> str:
    """An import's exception in one phrase: its text for an ordinary error, its type too for
    what is not an Exception (``SystemExit(2)``) or says nothing."""
    text = str(exc)
    if isinstance(exc, Exception) and text:
        return text
    return f"importing it raised {type(exc).__name__}" + (f"({text})" if text else "")


_TRIAL = """\
import json, os, sys, threading
fd, name = int(sys.argv[1]), sys.argv[2]
sys.path[:] = json.loads(sys.argv[3])
import configsync.model  # from the folder the asking process imported it from
sys.path[:] = json.loads(sys.argv[4])
before = threading.active_count()
try:
    __import__(name)
    module = sys.modules[name]
    found = {"file": getattr(module, "__file__", None),
             "threads": threading.active_count() - before, "classes": {}}
    for key, value in list(vars(module).items()):
        if isinstance(key, str) and not key.startswith("_"):
            try:
                found["classes"][key] = isinstance(value, type) and issubclass(
                    value, configsync.model.AgentConfig)
            except BaseException:
                found["classes"][key] = False
except BaseException as exc:
    text = str(exc)
    if not isinstance(exc, Exception) or not text:
        text = "importing it raised " + type(exc).__name__ + ("(%s)" % text if text else "")
    found = {"error": text}
try:
    sys.stdout.flush()
except BaseException:
    pass
os.write(fd, json.dumps(found).encode())
os._exit(0)
"""
_Trial = tuple[str | None, str | None, dict[str, bool]]
_trials: dict[tuple[str, tuple[str, ...]], _Trial] = {}
"""Trial imports done in this process: (module, sys.path) → (the module's file, why it was
refused, and its public names: True for an AgentConfig subclass). One per *module*, refusals
included: what a module's import does (hang, exit, print, start threads) does not depend on
the class a ``schema:`` names, so a daemon walking commits that name ``m:A``, ``m:B``... of a
module whose import hangs waits one deadline in all, not one per name or commit (a module
installed or fixed since is tried again after a restart)."""
_tick: tuple[int, Callable[[], None]] | None = None


def tick_during_trials(tick: Callable[[], None] | None) -> None:
    """Call ``tick`` (the daemon's heartbeat) about every TICK_SECONDS while a trial import
    runs in this process (not in its forked children), so a daemon waiting for one is not
    taken for dead; None: stop."""
    global _tick
    _tick = None if tick is None else (os.getpid(), tick)


def _trial_import(module_name: str, path: list[str],
                  timeout: float) -> tuple[str | None, dict[str, bool]]:
    """Import ``module_name`` in a child process with ``path`` as ``sys.path``: its file (None
    for a namespace package) and public names (True: an AgentConfig subclass), or
    :class:`SchemaImportError` saying what the import did (then this process never imports a
    module that is no schema: ``this``, ``antigravity``...). Once per module and path a
    process."""
    key = (module_name, tuple(path))
    if key not in _trials:
        try:
            origin, classes = _trial(module_name, path, timeout)
            _trials[key] = (origin, None, classes)
        except SchemaImportError as exc:
            _trials[key] = (None, str(exc), {})
    origin, refused, classes = _trials[key]
    if refused is not None:
        raise SchemaImportError(refused)
    return origin, classes
TICK_SECONDS = 1.0
"""While a trial import runs, the daemon's heartbeat is stamped this often."""


def _wait(proc: subprocess.Popen[bytes], module_name: str, timeout: float) -> None:
    """Until the child ends (not until its output closes: a process the import started may
    hold it); SchemaImportError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            proc.wait(timeout=max(0.0, min(left, TICK_SECONDS)))
            return
        except subprocess.TimeoutExpired:
            if left <= TICK_SECONDS:
                raise SchemaImportError(f"cannot import `{module_name}`: importing it did not "
                                        f"end within {timeout:g} s") from None
            if _tick is not None and _tick[0] == os.getpid():
                _tick[1]()


def _trial(module_name: str, path: list[str],
           timeout: float) -> tuple[str | None, dict[str, bool]]:
    with tempfile.TemporaryFile() as answer, tempfile.TemporaryFile() as output:
        try:
            ours = str(Path(__file__).resolve().parents[1])  # where configsync was found
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _TRIAL, str(answer.fileno()), module_name,
                 json.dumps([ours, *path]), json.dumps(path)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.DEVNULL,
                pass_fds=(answer.fileno(),), start_new_session=True)
        except OSError as exc:
            raise SchemaImportError(
                f"cannot try importing `{module_name}` in a child process ({sys.executable!r}: "
                f"{exc.strerror or exc}); it is never imported untried") from None
        try:
            _wait(proc, module_name, timeout)
        finally:
            try:  # the child's whole process group: whatever the import started goes with it
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        out = output.seek(0, os.SEEK_END)
        answer.seek(0)
        try:
            result = json.loads(answer.read() or b"null")
        except (OSError, ValueError):
            result = None
    if not isinstance(result, dict):
        code = proc.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        raise SchemaImportError(f"cannot import `{module_name}`: importing it ended the "
                                f"process ({how})")
    if "error" in result:
        raise SchemaImportError(f"cannot import `{module_name}`: {result['error']}")
    if out:
        raise SchemaImportError(f"`{module_name}` writes to standard output when imported; "
                                "a schema module must only define classes")
    if result.get("threads"):
        raise SchemaImportError(f"`{module_name}` starts threads when imported; a schema "
                                "module must only define classes")
    origin, classes = result.get("file"), result.get("classes")
    return (origin if isinstance(origin, str) else None,
            {k: v for k, v in classes.items() if v is True or v is False}
            if isinstance(classes, dict) else {})


def agent_json_schema(model: type[AgentConfig] = AgentConfig) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for one agent *file*: every rule a single file can be held
    to. What needs other files (``extends``, the tool registry, the model allow-list, prompt
    files) is left to ``validate``; the README lists those and the few differences left."""
    schema = model.model_json_schema()
    schema.pop("required", None)
    properties = schema.get("properties", {})
    for name, pattern in (("system_prompt", NOT_BLANK), ("system_prompt_file",
                                                         f"^{PROMPT_FILE}$")):
        text = _string_schema(properties.get(name))
        if text is not None:
            text["pattern"] = pattern
    if properties.get("tools", {}).get("type") == "array":
        properties["tools"]["uniqueItems"] = True
    schema["allOf"] = [*schema.get("allOf", []), *_AGENT_RULES]
    schema["title"] = "configsync agent"
    schema["description"] = (
        "One agent file under agents/; its id is the path under agents/ without .yaml. Without "
        "`extends`, `model` and exactly one of `system_prompt` or `system_prompt_file` are "
        "required; with it, the base may supply them.")
    return {"$schema": DRAFT, **_json_numbers(schema)}


def settings_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for ``configsync.yaml``."""
    schema = RepoSettings.model_json_schema(by_alias=True)
    schema["title"] = "configsync repository settings"
    return {"$schema": DRAFT, **_json_numbers(schema)}


def _string_schema(node: Any) -> dict[str, Any] | None:
    """The ``{"type": "string"}`` part of a field's schema (``str`` or ``str | None``)."""
    if not isinstance(node, dict):
        return None
    if node.get("type") == "string":
        return node
    return next((b for b in node.get("anyOf", []) if b.get("type") == "string"), None)


_NOT_NAN = {
    "$comment": "Rejects NaN (YAML .nan): no number is both >= 1 and <= 0, but NaN passes both "
                "bounds where a checker tests for a violation (x < minimum); where it tests "
                "x >= minimum instead, the field's own bounds reject NaN.",
    "minimum": 1, "maximum": 0}


def _json_numbers(value: Any) -> Any:
    """Bounds on every number, so that what JSON readers cannot hold fails as it does in
    ``validate`` (snapshot.non_portable): an integer beyond ±(2^53-1), an infinity (YAML
    ``.inf``, or a float too big to hold) and NaN (``.nan``, which is no integer, and which
    ``_NOT_NAN`` rejects as a number)."""
    if isinstance(value, list):
        return [_json_numbers(item) for item in value]
    if not isinstance(value, dict):
        return value
    found = {key: _json_numbers(item) for key, item in value.items()}
    kind = found.get("type")
    if kind in ("integer", "number"):
        most = MAX_SAFE_INTEGER if kind == "integer" else _MAX_FLOAT
        if "minimum" not in found and "exclusiveMinimum" not in found:
            found["minimum"] = -most
        elif kind == "integer" and found.get("minimum", 0) < -most:
            found["minimum"] = -most
        if "maximum" not in found and "exclusiveMaximum" not in found:
            found["maximum"] = most
        elif kind == "integer" and found.get("maximum", 0) > most:
            found["maximum"] = most
        if kind == "number":
            if "not" in found:
                found["allOf"] = [*found.get("allOf", []), {"not": _NOT_NAN}]
            else:
                found["not"] = _NOT_NAN
    return found


def render_schemas(model: type[AgentConfig] = AgentConfig) -> dict[str, str]:
    """File name → JSON text, for ``configsync schema``.

    The text is the same whichever allowed pydantic is installed (so ``schema --check`` in CI
    agrees with a developer's machine): a whole number is written ``2``, never ``2.0``, which
    older pydantic releases emit for float bounds (JSON does not tell the two apart); the
    largest float stays a float.
    """
    return {
        AGENT_SCHEMA_FILE: _dump(agent_json_schema(model)),
        SETTINGS_SCHEMA_FILE: _dump(settings_json_schema()),
    }


def _dump(schema: dict[str, Any]) -> str:
    return json.dumps(_whole_numbers(schema), indent=2) + "\n"


def _whole_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value
