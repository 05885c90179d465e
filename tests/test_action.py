"""action.yml, the composite action other repositories call, run as a script in a temp repository.

actionlint lints workflows only, so action.yml's shape (composite, bash steps, inputs and their
defaults) is checked here by loading it; the workflows go through actionlint when it is installed
(`.ci/run` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import GitTree

ROOT = Path(__file__).parents[1]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
EXPRESSION = re.compile(r"\$\{\{\s*(inputs\.[\w-]+|github\.action_path)\s*\}\}")


def test_action_is_composite_with_bash_steps_and_documented_inputs() -> None:
    assert ACTION["runs"]["using"] == "composite"
    inputs = ACTION["inputs"]
    assert {name: spec["default"] for name, spec in inputs.items()} == {
        "path": ".", "python-version": "3.11", "strict": "false"}
    assert all(spec["description"] for spec in inputs.values())
    steps = ACTION["runs"]["steps"]
    assert steps[0]["uses"].startswith("actions/setup-python@")
    assert steps[0]["with"] == {"python-version": "${{ inputs.python-version }}"}
    for step in steps[1:]:
        assert step["shell"] == "bash"
        # inputs reach the script through env only: never pasted into shell text
        assert "${{" not in step["run"]


def _run_action(repo: Path, inputs: dict[str, str], *, install: bool = False,
                env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run action.yml's `run:` steps in ``repo`` as the runner would: the return code of the
    first failing step (0 if none), everything printed, and the job summary."""
    values = {f"inputs.{name}": spec["default"] for name, spec in ACTION["inputs"].items()}
    values |= {f"inputs.{name}": value for name, value in inputs.items()}
    values["github.action_path"] = str(ROOT)
    summary = repo.parent / "summary.md"
    summary.write_text("")
    base = dict(os.environ if env is None else env, GITHUB_STEP_SUMMARY=str(summary))
    code, output = 0, ""
    outcomes: dict[str, str] = {}
    for step in ACTION["runs"]["steps"]:
        if "uses" in step:  # actions/setup-python: the test's python stands in for it
            continue
        condition = step.get("if", "")
        if code and "!cancelled()" not in condition:
            continue
        if "steps.install.outcome == 'success'" in condition and outcomes.get(
                "install", "success") != "success":
            continue
        if step.get("id") == "install" and not install:
            continue  # this venv already has configsync installed from this checkout
        step_env = {key: EXPRESSION.sub(lambda m: values[m[1]], str(value))
                    for key, value in step.get("env", {}).items()}
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", step["run"]], cwd=repo,
                              env=base | step_env, capture_output=True, text=True, timeout=300)
        output += done.stdout + done.stderr
        if "id" in step:
            outcomes[step["id"]] = "success" if done.returncode == 0 else "failure"
        code = code or done.returncode
    return code, output, summary.read_text()


def _venv_env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"])


@pytest.mark.slow  # runs the action's steps in a shell: in .ci/run, not the quick subset
@pytest.mark.parametrize("strict", ["false", "true"])
def test_valid_repository_passes_without_annotations(git_tree: GitTree, strict: str) -> None:
    code, output, summary = _run_action(git_tree.root, {"strict": strict}, env=_venv_env())
    assert code == 0, output
    assert "::error" not in output and "::warning" not in output
    assert summary.startswith("## configsync diff\n\nBase "), output
    assert "**no agent differs; 1 unchanged**" in summary


@pytest.mark.slow  # runs the action's steps in a shell: in .ci/run, not the quick subset
def test_invalid_agent_fails_with_annotations_on_its_lines(git_tree: GitTree) -> None:
    git_tree.write({"agents/x.yaml": "system_prompt: Hi.\nmodel: gpt-4o\ntemperature: 3.5\n"})
    git_tree.commit("bad agent")
    code, output, _ = _run_action(git_tree.root, {}, env=_venv_env())
    assert code == 1, output
    assert re.search(r"^::error file=agents/x\.yaml,line=3,col=\d+::", output, flags=re.M), output


@pytest.mark.slow  # runs the action's steps in a shell: in .ci/run, not the quick subset
def test_path_input_points_into_a_subfolder(tmp_path: Path) -> None:
    repo = GitTree(tmp_path / "mono")
    repo.write({"configs/configsync.yaml": (ROOT / "tests" / "conftest.py").read_text()
                .split('SETTINGS = """\\\n', 1)[1].split('"""', 1)[0],
                "configs/agents/x.yaml": "system_prompt: Hi.\nmodel: nope\n"})
    repo.commit()
    code, output, _ = _run_action(repo.root, {"path": "configs"}, env=_venv_env())
    assert code == 1, output
    assert "::error file=configs/agents/x.yaml,line=2," in output, output


@pytest.mark.slow  # runs the action's steps in a shell: in .ci/run, not the quick subset
def test_strict_input_other_than_true_or_false_is_refused(git_tree: GitTree) -> None:
    code, output, _ = _run_action(git_tree.root, {"strict": "yes"}, env=_venv_env())
    assert code == 2 and "strict must be true or false (got 'yes')" in output


@pytest.mark.slow
def test_install_step_installs_from_the_action_path(git_tree: GitTree, tmp_path: Path) -> None:
    """The whole action, install included, in a brand-new venv (as setup-python's python)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    code, output, _ = _run_action(git_tree.root, {}, install=True, env=env)
    assert code == 0, output
    assert (venv / "bin" / "configsync").exists()


def test_workflows_pass_actionlint() -> None:
    actionlint = shutil.which("actionlint") or shutil.which(
        "actionlint", path=str(Path(sys.executable).parent))
    if actionlint is None:
        pytest.skip("actionlint is not installed (.ci/run installs it)")
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    done = subprocess.run([actionlint, *workflows], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


