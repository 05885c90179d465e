"""A repository's own AgentConfig subclass: imported from installed packages only."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from configsync.errors import SchemaImportError
from configsync.repo import FolderSource
from configsync.schema import agent_json_schema, load_agent_model
from configsync.validate import check_tree

from .conftest import SETTINGS, write_tree

MODELS = """\
from pydantic import Field

from configsync import AgentConfig


class SupportAgent(AgentConfig):
    framework: str = "langgraph"
    max_turns: int = Field(10, ge=1)


class NotAnAgent:
    pass
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable package outside any config repo, as if pip-installed."""
    name = f"acme_{uuid.uuid4().hex[:8]}"
    write_tree(tmp_path / "site", {f"{name}/__init__.py": "", f"{name}/models.py": MODELS})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield name
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def lines(root: Path) -> list[str]:
    report = check_tree(FolderSource(root), repo_root=root)
    return [f"{d.path}:{d.line}:{d.column}: {d.message}" for d in report.diagnostics]


def test_custom_fields_are_validated(tmp_path: Path, package: str) -> None:
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + f"schema: {package}.models:SupportAgent\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\nmax_turns: 0\nframwork: x\n",
        "agents/b.yaml": "system_prompt: hi\nmodel: gpt-4o\nframework: crewai\n",
    })
    assert lines(root) == [
        "agents/a.yaml:3:12: max_turns: must be at least 1 (got 0)",
        "agents/a.yaml:4:1: framwork: unknown key, did you mean `framework`?",
    ]
    config = check_tree(FolderSource(root)).configs["b"]
    assert (config["framework"], config["max_turns"]) == ("crewai", 10)


PORTABLE_MODELS = """\
import math
from typing import Any

from pydantic import Field

from configsync import AgentConfig


class Agent(AgentConfig):
    ratio: float = 0.5
    extra: dict[str, Any] = Field(default_factory=dict)
    budget: float = math.inf
"""


def test_custom_fields_hold_only_numbers_json_carries(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A float field takes .nan (pydantic allows it), an Any field would turn it into null
    silently, and a model's own default can be infinite: each is an error, never stored."""
    name = f"portable_{uuid.uuid4().hex[:8]}"
    write_tree(tmp_path / "site", {f"{name}.py": PORTABLE_MODELS})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    no_json = ("has no JSON form: JSON readers in other languages cannot represent it; quote "
               "it to keep it as text")
    try:
        root = write_tree(tmp_path / "repo", {
            "configsync.yaml": SETTINGS + f"schema: {name}:Agent\n",
            "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\nbudget: 1\nratio: .nan\n"
                             "extra:\n  deep: [1, {x: -.inf}]\n  big: 9007199254740992\n",
            "agents/b.yaml": "system_prompt: hi\nmodel: gpt-4o\n",
            "agents/c.yaml": "system_prompt: hi\nmodel: gpt-4o\nbudget: 9007199254740991\n"})
        assert lines(root) == [
            f"agents/a.yaml:4:8: ratio: .nan {no_json}",
            "agents/a.yaml:6:17: extra.deep[1].x: -.inf " + no_json,
            "agents/a.yaml:7:8: extra.big: 9007199254740992 is outside ±(2^53-1): JSON readers "
            "in other languages (JavaScript, Go's float64) cannot represent it exactly; quote it "
            "to keep it as text",
            "agents/b.yaml:1:1: budget: .inf has no JSON form: JSON readers in other languages "
            f"cannot represent it; {name}:Agent made it: change its default or validator",
        ]
        assert list(check_tree(FolderSource(root)).configs) == ["c"]
    finally:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(("ref", "message"), [
    ("no_such_pkg.models:X", "schema: cannot import `no_such_pkg.models`: No module named "
                             "'no_such_pkg'"),
    ("{pkg}.models:Missing", "schema: `{pkg}.models` has no `Missing`"),
    ("{pkg}.models:NotAnAgent", "schema: `{pkg}.models:NotAnAgent` is not a subclass of "
                                "configsync.AgentConfig"),
])
def test_bad_schema_reference(tmp_path: Path, package: str, ref: str, message: str) -> None:
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + f"schema: {ref.format(pkg=package)}\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    assert lines(root) == [f"configsync.yaml:6:9: {message.format(pkg=package)}"]


def test_never_imported_from_the_repository(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"evil_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    root = write_tree(tmp_path / "repo", {
        "configsync.yaml": SETTINGS + f"schema: {name}:Agent\n",
        f"{name}.py": f"open({str(marker)!r}, 'w').close()\n"
                      "from configsync import AgentConfig as Agent\n",
        "agents/a.yaml": "system_prompt: hi\nmodel: gpt-4o\n"})
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.syspath_prepend("")
    assert lines(root) == [
        f"configsync.yaml:6:9: schema: cannot import `{name}`: No module named '{name}'"]
    assert not marker.exists()
    assert name not in sys.modules


def test_module_already_imported_from_the_repository_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"inrepo_{uuid.uuid4().hex[:8]}"
    root = write_tree(tmp_path / "repo", {
        f"{name}.py": "from configsync import AgentConfig as Agent\n"})
    monkeypatch.syspath_prepend(str(root))
    __import__(name)
    try:
        with pytest.raises(SchemaImportError, match="inside the repository being validated"):
            load_agent_model(f"{name}:Agent", root)
    finally:
        del sys.modules[name]


def test_json_schema_of_a_subclass(package: str) -> None:
    schema = agent_json_schema(load_agent_model(f"{package}.models:SupportAgent"))
    assert schema["properties"]["max_turns"]["minimum"] == 1
    assert "required" not in schema


def test_schema_subclass_without_repo_root(package: str) -> None:
    model = load_agent_model(f"{package}.models:SupportAgent")
    assert model.__name__ == "SupportAgent"
    assert load_agent_model(None).__name__ == "AgentConfig"


def test_a_venv_committed_into_the_repository_is_not_trusted(tmp_path: Path) -> None:
    """The README's venv lives in the repository's checkout, so its site-packages are trusted;
    but a pull request can commit `.venv/lib/.../evilmod.py` (a checkout then makes the venv
    around it). Site-packages that the repository tracks files in are not trusted."""
    import os
    import subprocess
    import sysconfig

    from .conftest import GitTree, git

    repo = GitTree(tmp_path / "victim")
    marker = tmp_path / "pwned"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(repo.root / ".venv")],
                   check=True)
    python = repo.root / ".venv" / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    here = sysconfig.get_paths()["purelib"]  # configsync and its dependencies, for that venv
    (site / "outside.pth").write_text("\n".join([here, str(Path(__file__).parents[1])]) + "\n")
    (site / "evilmod.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nfrom configsync import AgentConfig\n"
        "class Model(AgentConfig):\n    pass\n")
    repo.write({"configsync.yaml": SETTINGS + "schema: evilmod:Model\n",
                "agents/a.yaml": "system_prompt: A\nmodel: gpt-4o\n"})
    # Python 3.13's venv writes a `.gitignore` of `*` into it, which `git add -A` obeys; a pull
    # request commits the files whatever made its venv (an older Python, `git add -f`).
    git(repo.root, "add", "-f", ".venv")
    repo.commit("a pull request that commits into the venv")
    tracked = git(repo.root, "ls-files", ".venv").splitlines()
    assert str((site / "evilmod.py").relative_to(repo.root)) in tracked
    for argv in (["validate", "."], ["validate", ".", "--ref", "HEAD"]):
        proc = subprocess.run([str(python), "-m", "configsync", *argv], cwd=repo.root,
                              capture_output=True, text=True, env={**os.environ}, timeout=60)
        assert not marker.exists(), proc.stderr
        assert proc.returncode == 1 and "cannot import `evilmod`" in proc.stdout, proc
