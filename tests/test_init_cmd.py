"""`configsync init`: the scaffold validates clean, works with every tool, never overwrites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from configsync.cli import main
from configsync.scaffold import sanitize_namespace

from .conftest import git

WRITTEN = ["configsync.yaml", "agents/example.yaml", "prompts/example.md",
           "schemas/agent.schema.json", "schemas/configsync.schema.json",
           ".vscode/settings.json", ".gitignore", ".github/workflows/configsync.yml",
           ".pre-commit-config.yaml"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_scaffold_validates_and_its_schemas_are_current(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "support-configs"
    code, out, _ = run(capsys, "init", str(target))
    assert code == 0
    assert [line.removeprefix("wrote ") for line in out.splitlines()
            if line.startswith("wrote ")] == [f"{target.as_posix()}/{p}" for p in WRITTEN]
    assert "created an empty git repository" in out and "next steps:" in out
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")
                  if p.is_file() and ".git" not in p.relative_to(target).parts[:1]) == sorted(
        WRITTEN)
    assert git(target, "rev-parse", "--is-inside-work-tree").strip() == "true"
    assert git(target, "rev-list", "--all").strip() == ""  # nothing committed
    assert run(capsys, "validate", "--strict", str(target))[0] == 0
    monkeypatch.chdir(target)
    assert run(capsys, "schema", "--check")[0] == 0
    git(target, "add", "-A")
    assert run(capsys, "validate", "--cached", "--strict")[0] == 0
    git(target, "commit", "-q", "-m", "scaffold")
    assert run(capsys, "validate", "--ref", "HEAD", "--strict")[0] == 0
    assert git(target, "status", "--porcelain") == ""  # .gitignore hides nothing it wrote


def test_inside_a_repository_no_new_one(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    git(tmp_path, "init", "-q")
    code, out, _ = run(capsys, "init", str(tmp_path / "configs"), "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["git_init"] is False and report["namespace"] == "configs"
    assert not (tmp_path / "configs" / ".git").exists()


def test_refuses_to_overwrite_and_force_overwrites(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "example.yaml").write_text("mine\n")
    (tmp_path / ".gitignore").write_text("mine\n")
    code, out, err = run(capsys, "init", str(tmp_path))
    assert (code, out) == (2, "")
    assert err == (f"configsync: error: {tmp_path} already has agents/example.yaml, .gitignore; "
                   "nothing was written (--force overwrites them)\n")
    assert not (tmp_path / "configsync.yaml").exists()
    assert (tmp_path / ".gitignore").read_text() == "mine\n"
    assert run(capsys, "init", "--force", str(tmp_path))[0] == 0
    assert (tmp_path / ".gitignore").read_text() != "mine\n"
    assert run(capsys, "validate", "--strict", str(tmp_path))[0] == 0


def test_defaults_to_the_current_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "team.configs"
    folder.mkdir()
    monkeypatch.chdir(folder)
    code, out, _ = run(capsys, "init", "--namespace", "prod")
    assert code == 0 and "wrote configsync.yaml\n" in out and "  cd " not in out
    assert yaml.safe_load((folder / "configsync.yaml").read_text())["namespace"] == "prod"


@pytest.mark.parametrize(("name", "namespace"), [
    ("support-configs", "support-configs"),
    ("My Configs!", "My-Configs"),
    ("..hidden__", "hidden"),
    ("été", "t"),
    ("日本", "default"),
    ("x" * 150, "x" * 100),
    ("a.b_c", "a.b_c"),
])
def test_namespace_from_the_folder_name(name: str, namespace: str) -> None:
    assert sanitize_namespace(name) == namespace


@pytest.mark.parametrize("namespace", ["1.0", "true", "null", "123", "on"])
def test_namespace_that_yaml_would_read_as_no_string(
        namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "init", str(tmp_path), "--namespace", namespace)[0] == 0
    assert yaml.safe_load((tmp_path / "configsync.yaml").read_text())["namespace"] == namespace
    assert run(capsys, "validate", "--strict", str(tmp_path))[0] == 0


def test_bad_namespace_is_a_usage_error(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["init", str(tmp_path), "--namespace", "a:b"])
    assert exc.value.code == 2
    assert not (tmp_path / "configsync.yaml").exists()


def test_workflow_and_pre_commit_config(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "init", str(tmp_path))[0] == 0
    workflow = yaml.safe_load((tmp_path / ".github/workflows/configsync.yml").read_text())
    steps = workflow["jobs"]["validate"]["steps"]
    assert steps[-1] == {"uses": "configsync/configsync@v0.1.0",
                         "with": {"path": ".", "python-version": "3.12", "strict": "true"}}
    assert steps[0]["uses"].startswith("actions/checkout@")
    hooks = yaml.safe_load((tmp_path / ".pre-commit-config.yaml").read_text())
    assert hooks == {"repos": [{"repo": "https://github.com/configsync/configsync",
                                "rev": "v0.1.0", "hooks": [{"id": "configsync-validate"}]}]}
    hook_ids = [h["id"] for h in yaml.safe_load(
        (Path(__file__).parents[1] / ".pre-commit-hooks.yaml").read_text())]
    assert "configsync-validate" in hook_ids


def test_help_has_an_example_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["init", "--help"])
    out = capsys.readouterr().out
    assert "example:\n  configsync init" in out and "exit codes:" in out
