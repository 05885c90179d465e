"""README.md's set-up is what CI runs: two command lines, and `.ci/run` runs the second."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
VENV = "python3 -m venv .venv && . .venv/bin/activate && "


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_setup_is_two_command_lines_in_a_new_virtual_environment() -> None:
    run, test = _setup_commands()
    assert run.startswith(VENV) and run.endswith("&& configsync sync")
    assert test.startswith(VENV) and "pip install -e '.[test]'" in test


def test_ci_runs_the_readmes_test_command_in_its_own_environment() -> None:
    _, test = _setup_commands()
    script = (ROOT / ".ci" / "run").read_text()
    assert f"{test.removeprefix(VENV)} || exit" in script.splitlines()
    assert ". \"$(dirname \"$0\")/fresh-venv.sh\"" in script
    fresh = (ROOT / ".ci" / "fresh-venv.sh").read_text()
    assert "python3 -m venv" in fresh and "mktemp" in fresh
    assert "ruff check ." in script and "mypy --strict configsync" in script
    lowest = (ROOT / ".ci" / "run-lowest").read_text()
    assert "fresh-venv.sh" in lowest and "--resolution lowest-direct" in lowest
    assert 'pytest -m "not slow"' in lowest
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert "bash .ci/run\n" in workflow and "bash .ci/run-lowest\n" in workflow
