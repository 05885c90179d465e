"""``configsync dev``: the working tree published to a dev namespace at every save."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from configsync import Client, Snapshot
from configsync.cli import main
from configsync.embedded import RedisServer
from configsync.store import Store

from .conftest import SUPPORT, GitTree, wait_until

BAD = SUPPORT.replace("temperature: 0.3", "temperature: 3.5")
BAD_LINE = "agents/support.yaml:3:14: temperature: must be at most 2 (got 3.5)"


def dev(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["dev", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_once_publishes_the_working_tree(tree: Path, redis_server: RedisServer,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = dev(capsys, str(tree), "--redis", redis_server.url, "--once")
    assert (code, out) == (0, "applied support v1\n"), err
    store = Store(redis.Redis.from_url(redis_server.url), "test-dev")
    state = store.state()
    assert (state["commit"], state["seen"], state["revision"]) == ("worktree", "worktree", "1")
    assert state["source"] == f"dev:{tree.resolve()}" and state["contract"] == "2"
    snap = store.current()["support"]
    assert (snap.version, snap.commit, snap.config["temperature"]) == (1, "worktree", 0.3)
    assert snap.author == "configsync dev"  # (no git config user.name/email in this HOME)
    # nothing changed: nothing written, nothing printed
    assert dev(capsys, str(tree), "--redis", redis_server.url, "--once")[:2] == (0, "")
    assert store.state()["revision"] == "1"
    (tree / "agents/support.yaml").write_text(SUPPORT.replace("0.3", "0.5"))
    (tree / "agents/other.yaml").write_text("system_prompt: Other.\nmodel: gpt-4o\n")
    assert dev(capsys, str(tree), "--redis", redis_server.url, "--once")[:2] == (
        0, "applied other v1\napplied support v2\n")
    (tree / "agents/other.yaml").unlink()
    assert dev(capsys, str(tree), "--redis", redis_server.url, "--once")[:2] == (
        0, "deleted other\n")
    events = store.events()
    assert [(e["type"], e["revision"], [(c["agent_id"], c["version"], c["deleted"])
                                        for c in e["changes"]]) for e in events] == [
        ("applied", 1, [("support", 1, False)]),
        ("applied", 2, [("other", 1, False), ("support", 2, False)]),
        ("applied", 3, [("other", 1, True)])]
    assert len({e["epoch"] for e in events}) == 1
    assert sorted(store.history("support")) == [1, 2]


def test_once_with_errors_publishes_nothing(tree: Path, redis_server: RedisServer,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tree / "agents/support.yaml").write_text(BAD)
    monkeypatch.chdir(tree)
    code, out, _ = dev(capsys, "--redis", redis_server.url, "--once", "--namespace", "mine")
    assert (code, out) == (1, f"{BAD_LINE}\nnot published: 1 error\n")
    assert Store(redis.Redis.from_url(redis_server.url), "mine").state() == {}


def test_a_namespace_a_sync_daemon_writes_is_refused_both_ways(
        git_tree: GitTree, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--repo", str(git_tree.root), "--redis", redis_server.url, "--once",
                 "--workdir", str(tmp_path / "wd")]) == 0
    capsys.readouterr()
    code, out, err = dev(capsys, str(git_tree.root), "--redis", redis_server.url, "--once",
                         "--namespace", "test")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1].startswith("configsync: error: namespace 'test' is written by "
                                           "configsync sync (")
    served = Store(redis.Redis.from_url(redis_server.url), "test").state()["commit"]
    assert served != "worktree"
    # and a daemon pointed at a dev namespace refuses it, --adopt or not
    assert dev(capsys, str(git_tree.root), "--redis", redis_server.url, "--once")[0] == 0
    code = main(["sync", "--repo", str(git_tree.root), "--redis", redis_server.url, "--once",
                 "--namespace", "test-dev", "--adopt", "--workdir", str(tmp_path / "wd2")])
    assert code == 2
    assert "is a configsync dev namespace" in capsys.readouterr().err


def test_dev_follows_saves_and_a_client_reloads(tree: Path, redis_server: RedisServer,
                                                tmp_path: Path) -> None:
    log = tmp_path / "dev.out"
    with log.open("wb") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "configsync", "dev",
                                 "--redis", redis_server.url], stdout=handle, cwd=tree,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    seen: list[tuple[str, float]] = []

    def on_change(agent_id: str, snap: Snapshot | None) -> None:
        assert snap is not None
        seen.append((agent_id, snap.config.temperature))

    try:
        wait_until(lambda: log.read_text() == "applied support v1\n", timeout=20)
        client = Client(redis=redis_server.url, namespace="test-dev")
        client.on_change(on_change)  # (before start: the first load calls it too)
        with client:
            wait_until(lambda: seen == [("support", 0.3)])
            (tree / "agents/support.yaml").write_text(SUPPORT.replace("0.3", "0.6"))
            wait_until(lambda: seen[-1] == ("support", 0.6))
            assert client.get("support").version == 2
            assert client.status().daemon_alive is None  # no daemon beats for a dev namespace
            (tree / "agents/support.yaml").write_text(BAD)
            wait_until(lambda: BAD_LINE in log.read_text())
            assert client.get("support").version == 2  # nothing published
            (tree / "agents/support.yaml").write_text(SUPPORT.replace("0.3", "0.7"))
            wait_until(lambda: seen[-1] == ("support", 0.7))
            assert client.get("support").version == 3
        assert log.read_text() == ("applied support v1\napplied support v2\n"
                                   f"{BAD_LINE}\nnot published: 1 error\n"
                                   "applied support v3\n")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = err.decode().splitlines()
    assert any("event=dev " in line and "namespace=test-dev" in line for line in lines)
    assert "Traceback" not in err.decode()


def test_dev_without_redis_starts_an_embedded_one(git_tree: GitTree,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = dev(capsys, str(git_tree.root), "--once")
    assert (code, out) == (0, "applied support v1\n"), err
    line = next(x for x in err.splitlines() if "event=embedded_redis" in x)
    assert "configsync-dev" in line
    url = (git_tree.root / ".git" / "configsync-dev" / "redis.url").read_text().strip()
    assert f"url={url}" in line
    assert git_tree.root.joinpath(".git").is_dir()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=git_tree.root,
                            capture_output=True, text=True).stdout
    assert status == ""  # nothing written into the working tree


def test_no_config_tree_is_a_usage_error(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = dev(capsys, str(tmp_path), "--once", "--redis", "redis://127.0.0.1:1/0")
    assert code == 2 and "no configsync.yaml" in err
    assert len(err.splitlines()) == 1
