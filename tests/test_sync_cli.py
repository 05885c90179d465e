"""``configsync sync`` on the command line: exit codes, the embedded Redis, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from configsync.cli import main
from configsync.embedded import RedisServer, free_port
from configsync.store import Store

from .conftest import Remote, spawn_daemon, wait_until


def sync(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["sync", *argv])
    return code, capsys.readouterr().err


def test_once_exits_0_when_applied_and_1_when_rejected(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--repo", remote.url, "--redis", redis_server.url, "--once",
            "--workdir", str(tmp_path / "wd")]
    code, err = sync(capsys, *args)
    assert code == 0, err
    assert "event=rebuilt" in err and "namespace=test" in err  # from configsync.yaml
    remote.commit_push("bad", {"agents/a.yaml": "model: gpt-4o\n"})
    code, err = sync(capsys, *args)
    assert code == 1
    assert "event=rejected" in err
    assert "set exactly one of `system_prompt` or `system_prompt_file`" in err
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    assert store.state()["last_error"]


def test_once_with_redis_down_is_a_one_line_error(remote: Remote, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    code, err = sync(capsys, "--repo", remote.url, "--redis", url, "--once",
                     "--workdir", str(tmp_path / "wd"), "--namespace", "x")
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("configsync: error: redis: ")
    assert last.endswith("(is Redis running, and the URL right?)")
    assert "hunter2" not in err and "Traceback" not in err


def test_bad_repo_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = sync(capsys, "--repo", str(tmp_path / "missing"), "--once")
    assert (code, err) == (2, f"configsync: error: no such repository: {tmp_path / 'missing'}\n")


def test_unreachable_remote_with_once(tmp_path: Path, redis_server: RedisServer,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, err = sync(capsys, "--repo", "https://bob:tok3n@127.0.0.1:9/r.git", "--once",
                     "--redis", redis_server.url, "--workdir", str(tmp_path / "wd"))
    assert code == 1
    assert "tok3n" not in err
    assert err.strip().splitlines()[-1].startswith(
        "configsync: error: git fetch https://127.0.0.1:9/r.git main failed:")


def test_embedded_redis_when_no_url(remote: Remote, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "wd"
    proc = subprocess.run([sys.executable, "-m", "configsync", "sync", "--repo", remote.url,
                           "--once", "--workdir", str(workdir)],
                          capture_output=True, text=True, env={**os.environ}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    url = (workdir / "redis.url").read_text().strip()
    assert f"configsync: embedded redis at {url}" in proc.stderr
    assert (workdir / "redis" / "appendonly.aof").exists() or (
        workdir / "redis" / "appendonlydir").exists()
    # persisted: a second run starts the same server again and finds the state
    proc = subprocess.run([sys.executable, "-m", "configsync", "sync", "--repo", remote.url,
                           "--once", "--workdir", str(workdir)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "event=loaded" in proc.stderr and "event=rebuilt" not in proc.stderr


def test_default_repo_is_the_one_the_command_runs_in(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(remote.work)
    code, err = sync(capsys, "--redis", redis_server.url, "--once", "--workdir",
                     str(tmp_path / "wd"))
    assert code == 0, err
    assert f"source={remote.work}" in err


def test_sigterm_finishes_and_exits_0(remote: Remote, redis_server: RedisServer,
                                      tmp_path: Path) -> None:
    proc = spawn_daemon(remote, redis_server.url, "test", tmp_path / "wd", interval=0.05)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    wait_until(lambda: "seen" in store.state())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    log = (tmp_path / "wd" / "daemon.log").read_text()
    assert "event=stopping signal=SIGTERM" in log and "event=stopped" in log


def test_heartbeat_moves_every_interval(remote: Remote, redis_server: RedisServer,
                                        tmp_path: Path) -> None:
    proc = spawn_daemon(remote, redis_server.url, "test", tmp_path / "wd", interval=0.05)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    try:
        wait_until(lambda: "heartbeat_at" in store.state())
        first = store.state()["heartbeat_at"]
        wait_until(lambda: store.state()["heartbeat_at"] != first)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("argv", [["--interval", "0"], ["--keep", "0"]])
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sync", *argv])
    assert info.value.code == 2
