"""action.yml, the composite action other repositories call, run as a script in a temp repository.

actionlint lints workflows only, so action.yml's shape (composite, bash steps, inputs and their
defaults) is checked here by loading it; the workflows (this repository's, the reusable one, and
what `configsync init` scaffolds) go through actionlint when it is installed (`.ci/run` installs
it).

The summary step is written for `configsync diff`'s contract (exit 0 written, 1 a side failed
validation, 2 a usage error); in a configsync without `diff` it writes a note instead, and each
test says which of the two it saw (`diff_available()`).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from configsync.cli import main
from tests.conftest import GitTree, git

ROOT = Path(__file__).parents[1]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
REUSABLE_PATH = ROOT / ".github" / "workflows" / "configsync-validate.yml"
REUSABLE = yaml.safe_load(REUSABLE_PATH.read_text())
EXPRESSION = re.compile(r"\$\{\{\s*([\w.-]+)\s*\}\}")
NO_DIFF = "configsync diff is not in this configsync version"
CALL = "configsync/configsync/.github/workflows/configsync-validate.yml@main"


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
                env: dict[str, str] | None = None,
                github: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run action.yml's `run:` steps in ``repo`` as the runner would: the return code of the
    first failing step (0 if none), everything printed, and the job summary. ``github`` holds
    the event's values by expression (``github.event_name``...); one not given is empty, as a
    property the event lacks is on GitHub."""
    values = {f"inputs.{name}": spec["default"] for name, spec in ACTION["inputs"].items()}
    values |= {f"inputs.{name}": value for name, value in inputs.items()}
    values |= {"github.action_path": str(ROOT), **(github or {})}
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
        step_env = {key: EXPRESSION.sub(lambda m: values.get(m[1], ""), str(value))
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


@functools.cache
def diff_available() -> bool:
    """Whether this configsync has `configsync diff` (the action checks the same way)."""
    return subprocess.run(["configsync", "diff", "--help"], env=_venv_env(),
                          capture_output=True).returncode == 0


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


AGENT = "system_prompt: Hi.\nmodel: gpt-4o\ntemperature: 0.2\n"


def _changed_repo(root: Path) -> tuple[GitTree, str]:
    """A config repository whose head changes agent `refunds` (temperature 0.2 → 0.9): the
    repository and the base commit."""
    repo = GitTree(root)
    repo.write({"configsync.yaml": (ROOT / "tests" / "conftest.py").read_text()
                .split('SETTINGS = """\\\n', 1)[1].split('"""', 1)[0],
                "agents/refunds.yaml": AGENT})
    base = repo.commit("base")
    repo.write({"agents/refunds.yaml": AGENT.replace("0.2", "0.9")})
    repo.commit("warmer refunds")
    return repo, base


@pytest.mark.parametrize("event", [
    {"github.event_name": "pull_request", "github.event.pull_request.base.sha": "{base}"},
    {"github.event_name": "pull_request_target",
     "github.event.pull_request.base.sha": "{base}"},
    {"github.event_name": "push", "github.event.before": "{base}"},
])
def test_summary_diff_is_against_the_base_the_event_names(
        tmp_path: Path, event: dict[str, str]) -> None:
    repo, base = _changed_repo(tmp_path / "configs")
    github = {name: value.format(base=base) for name, value in event.items()}
    code, output, summary = _run_action(repo.root, {}, env=_venv_env(), github=github)
    assert code == 0, output
    assert "::error" not in output and "not in this checkout" not in output
    if diff_available():  # the base came from the event: no remote is needed to find one
        assert "refunds" in summary and "::warning" not in output, output + summary
    else:
        assert NO_DIFF in summary and "::warning" not in output, output + summary


def test_summary_when_the_base_commit_is_missing(tmp_path: Path) -> None:
    """A base the checkout lacks is fetched once; one the remote lacks too is a note in the
    summary and a warning, and the job passes."""
    origin, _ = _changed_repo(tmp_path / "origin")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth=1", origin.root.as_uri(), str(clone))
    missing = "1234567890abcdef" * 2 + "12345678"
    code, output, summary = _run_action(
        clone, {}, env=_venv_env(),
        github={"github.event_name": "pull_request",
                "github.event.pull_request.base.sha": missing})
    assert code == 0, output
    if diff_available():
        note = f"configsync diff: the base commit {missing} is not in this checkout"
        assert note in summary and f"::warning::{note}" in output, output + summary
    else:
        assert NO_DIFF in summary and missing not in output + summary, output + summary


def test_summary_base_missing_from_a_shallow_checkout_is_fetched(tmp_path: Path) -> None:
    origin, base = _changed_repo(tmp_path / "origin")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth=1", origin.root.as_uri(), str(clone))
    assert subprocess.run(["git", "cat-file", "-e", f"{base}^{{commit}}"], cwd=clone,
                          capture_output=True).returncode != 0  # not in the checkout
    code, output, summary = _run_action(
        clone, {}, env=_venv_env(),
        github={"github.event_name": "push", "github.event.before": base})
    assert code == 0, output
    if diff_available():
        assert "refunds" in summary and "::warning" not in output, output + summary
        assert git(clone, "cat-file", "-t", base).strip() == "commit"
    else:
        assert NO_DIFF in summary and "::warning" not in output, output + summary


@pytest.mark.slow  # (a process per step, per case)
@pytest.mark.parametrize("before", ["0" * 40, "not-a-sha", ""])
def test_summary_push_without_a_usable_before_uses_diffs_own_base(
        git_tree: GitTree, before: str) -> None:
    """A new branch's push (all zeros) names no base: configsync diff finds its own (here, with
    no remote, HEAD: the summary says so and shows no change)."""
    code, output, summary = _run_action(
        git_tree.root, {}, env=_venv_env(),
        github={"github.event_name": "push", "github.event.before": before})
    assert code == 0, output
    assert "not in this checkout" not in output + summary
    if diff_available():
        assert "(HEAD: no origin/HEAD, upstream, origin/main or origin/master" in summary
        assert "**no agent differs; 1 unchanged**" in summary, output + summary
    else:
        assert NO_DIFF in summary, output + summary


def test_reusable_workflow_takes_the_actions_inputs_and_runs_it_at_its_own_commit() -> None:
    call = REUSABLE[True]["workflow_call"]  # PyYAML reads the key `on` as a YAML 1.1 boolean
    assert set(REUSABLE[True]) == {"workflow_call"}
    inputs = call["inputs"]
    assert inputs.keys() == ACTION["inputs"].keys()
    for name, spec in inputs.items():  # the same defaults: a boolean is the action's text
        default = str(spec["default"]).lower() if spec["type"] == "boolean" else spec["default"]
        assert default == ACTION["inputs"][name]["default"], name
        assert spec["description"] == ACTION["inputs"][name]["description"], name
    assert inputs["python-version"]["type"] == "string"  # 3.10 as a number is 3.1
    assert REUSABLE["permissions"] == {"contents": "read"}
    (job,) = REUSABLE["jobs"].values()
    assert "permissions" not in job
    checkouts = [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    caller, own = checkouts
    assert caller["with"]["fetch-depth"] == 0 and "repository" not in caller["with"]
    assert own["with"]["repository"] == "${{ job.workflow_repository }}"
    assert own["with"]["ref"] == "${{ job.workflow_sha }}"
    assert job["steps"].index(caller) < job["steps"].index(own)  # checkout cleans its folder
    action: dict[str, Any] = job["steps"][-1]
    assert action["uses"] == f"./{own['with']['path']}"
    assert action["with"] == {name: f"${{{{ inputs.{name} }}}}" for name in inputs}
    for step in job["steps"]:
        assert "${{" not in step.get("run", "")


def _actionlint() -> str:
    actionlint = shutil.which("actionlint") or shutil.which(
        "actionlint", path=str(Path(sys.executable).parent))
    if actionlint is None:
        pytest.skip("actionlint is not installed (.ci/run installs it)")
    return actionlint


def test_workflows_pass_actionlint() -> None:
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert str(REUSABLE_PATH) in workflows
    done = subprocess.run([_actionlint(), *workflows], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("folder", [".", "team/configs"])
def test_scaffolded_workflow_passes_actionlint_against_the_reusable_workflow(
        tmp_path: Path, folder: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`configsync init`'s workflow, at a repository's top and for a folder inside one. Its
    `uses:` names the reusable workflow at a release, which actionlint cannot read: pointed at
    this checkout's copy, actionlint checks the inputs it passes by name and type."""
    repo = tmp_path / "repo"
    GitTree(repo)
    assert main(["init", str(repo / folder)]) == 0
    capsys.readouterr()
    (workflow,) = (repo / ".github" / "workflows").glob("*.yml")
    _lint_calling_this_checkout(repo, {workflow.name: workflow.read_text()})
    # the check bites: an input the reusable workflow lacks is an error
    workflow.write_text(workflow.read_text().replace("strict: true", "strictness: true"))
    actionlint = _actionlint()
    done = subprocess.run([actionlint, str(workflow)], cwd=repo, capture_output=True,
                          text=True)
    assert 'input "strictness" is not defined' in done.stdout, done.stdout + done.stderr


def readme_workflows() -> list[str]:
    """The complete workflows README's "In CI and before commit" shows, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## In CI and before commit", 1)[1].split("\n## ", 1)[0]
    return [block for block in re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
            if block.startswith("name: ")]


def test_readme_workflows_pass_actionlint(tmp_path: Path) -> None:
    reusable, action = readme_workflows()
    assert "uses: configsync/configsync@main" in action
    GitTree(tmp_path)
    _lint_calling_this_checkout(tmp_path, {"reusable.yml": reusable, "action.yml": action})


def _lint_calling_this_checkout(repo: Path, workflows: dict[str, str]) -> None:
    """actionlint over ``workflows`` (name → text) in ``repo``'s `.github/workflows`, with
    their calls to the reusable workflow at a release pointed at this checkout's copy (which
    actionlint reads: it checks the inputs passed by name and type)."""
    folder = repo / ".github" / "workflows"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REUSABLE_PATH, folder)
    assert any(re.search(rf"uses: {re.escape(CALL)}( +#[^\n]*)?\n", text)
               for text in workflows.values())
    for name, text in workflows.items():
        (folder / name).write_text(text.replace(CALL, f"./.github/workflows/{REUSABLE_PATH.name}"))
    done = subprocess.run([_actionlint(), *(str(folder / name) for name in workflows)],
                          cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
