"""``configsync status``: a real daemon (``sync --once``), a real redis-server, real git."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from configsync import Client
from configsync.cli import main
from configsync.embedded import RedisServer, free_port
from configsync.store import Store

from .conftest import Remote, git, wait_until


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def sync_once(remote: Remote, server: RedisServer, tmp_path: Path,
              capsys: pytest.CaptureFixture[str]) -> int:
    code, _, _ = run(capsys, "sync", "--repo", remote.url, "--redis", server.url, "--once",
                     "--workdir", str(tmp_path / "wd"))
    return code


def status(remote: Remote, server: RedisServer, capsys: pytest.CaptureFixture[str],
           *extra: str) -> tuple[int, str, str]:
    return run(capsys, "status", "--repo", str(remote.work), "--redis", server.url, *extra)


def test_in_sync_exits_0_and_lists_agents_and_clients(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert sync_once(remote, redis_server, tmp_path, capsys) == 0
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    with Client(redis=redis_server.url, namespace="test", instance_id="web-1",
                report_interval=0.2) as client:
        client.get("a")
        wait_until(lambda: store.client_reports())
        code, out, err = status(remote, redis_server, capsys)
    assert code == 0, err
    lines = out.splitlines()
    head = git(remote.work, "rev-parse", "HEAD")[:12]
    assert lines[0] == f"namespace test, branch main at {head}"
    assert lines[1].startswith("in sync: Redis serves ")
    assert "  a  head v1  redis v1  same" in lines and "  b  head v1  redis v1  same" in lines
    assert "clients: 1" in lines
    assert any(line.startswith("  web-1 ") and line.endswith("a v1, b v1") for line in lines)


def test_behind_by_one_exits_1(remote: Remote, redis_server: RedisServer, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert sync_once(remote, redis_server, tmp_path, capsys) == 0
    remote.commit_push("tune a", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                   "model: gpt-4o\ntemperature: 0.4\n"})
    code, out, _ = status(remote, redis_server, capsys)
    assert code == 1
    assert out.splitlines()[1].startswith("behind by 1 commit: Redis serves ")
    assert "  a  head v2  redis v1  differs" in out.splitlines()  # the daemon's next number
    assert "  b  head v1  redis v1  same" in out.splitlines()


def test_rejected_exits_1_with_the_error(remote: Remote, redis_server: RedisServer,
                                         tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert sync_once(remote, redis_server, tmp_path, capsys) == 0
    bad = remote.commit_push("bad", {"agents/a.yaml": "model: gpt-4o\n"})
    assert sync_once(remote, redis_server, tmp_path, capsys) == 1
    code, out, _ = status(remote, redis_server, capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[1].startswith("last commit rejected: Redis serves ")
    assert lines[2].startswith(f"last error (commit {bad[:12]}): agents/a.yaml:")
    assert "set exactly one of `system_prompt` or `system_prompt_file`" in lines[2]
    assert "  a  head -  redis v1  only in redis" in lines  # invalid at the head


def test_json_shape(remote: Remote, redis_server: RedisServer, tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    assert sync_once(remote, redis_server, tmp_path, capsys) == 0
    head = remote.commit_push("tune a", {"agents/a.yaml": "system_prompt: You are A2.\n"
                                                          "model: gpt-4o\n"})
    code, out, _ = status(remote, redis_server, capsys, "--format", "json")
    assert code == 1
    data = json.loads(out)
    assert set(data) == {"namespace", "branch", "head", "state", "served", "behind", "error",
                         "revision", "heartbeat_at", "heartbeat_age", "daemon_alive",
                         "silence_limit", "agents", "clients", "shallow"}
    assert (data["namespace"], data["branch"], data["head"]) == ("test", "main", head)
    assert (data["state"], data["behind"], data["revision"], data["error"]) == (
        "behind", 1, 1, None)
    assert isinstance(data["heartbeat_age"], float) and data["clients"] == []
    assert (data["daemon_alive"], data["silence_limit"]) == (True, 40.0)  # (a --once daemon)
    assert [(a["agent_id"], a["head_version"], a["redis_version"], a["compare"])
            for a in data["agents"]] == [("a", 2, 1, "differs"), ("b", 1, 1, "same")]


def test_no_state_exits_1(remote: Remote, redis_server: RedisServer,
                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = status(remote, redis_server, capsys)
    assert code == 1
    assert out.splitlines()[1] == "no state: no daemon has synced this namespace in this Redis"


def test_unreachable_redis_exits_2_in_one_line(remote: Remote,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    code, out, err = run(capsys, "status", "--repo", str(remote.work), "--redis", url)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("configsync: error: redis: ")
    assert "hunter2" not in err


def test_a_shallow_clone_compares_checksums_without_head_versions(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert sync_once(remote, redis_server, tmp_path, capsys) == 0
    remote.commit_push("tune a", {"agents/a.yaml": "system_prompt: You are A2.\nmodel: gpt-4o\n"})
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{remote.url}", str(shallow))
    code, out, _ = run(capsys, "status", "--repo", str(shallow), "--redis", redis_server.url,
                       "--format", "json")
    data = json.loads(out)
    assert (code, data["shallow"], data["state"]) == (1, True, "unknown_commit")
    assert [(a["agent_id"], a["head_version"], a["compare"]) for a in data["agents"]] == [
        ("a", None, "differs"), ("b", None, "same")]


def test_a_head_that_no_longer_has_the_served_commit_has_diverged(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    remote.commit_push("a warmer", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                     "model: gpt-4o\ntemperature: 0.9\n"})
    assert sync_once(remote, redis_server, tmp_path, capsys) == 0
    git(remote.work, "commit", "-q", "--amend", "-m", "a warmer (reworded)")
    code, out, _ = status(remote, redis_server, capsys)
    lines = out.splitlines()
    assert code == 1
    assert lines[1].startswith("diverged: Redis serves ") and "a force-push" in lines[1]
    assert "  a  head v2  redis v2  same" in lines  # the amend changed no config


@pytest.mark.slow  # (a rewind is confirmed by a second fetch 2 s later)
def test_a_force_push_not_applied_yet_gets_the_number_the_daemon_will_give(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    remote.commit_push("bad deploy", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                       "model: gpt-4o\ntemperature: 1.9\n"})
    assert sync_once(remote, redis_server, tmp_path, capsys) == 0
    git(remote.work, "reset", "-q", "--hard", "HEAD~1")
    remote.push(force=True)
    code, out, _ = status(remote, redis_server, capsys)
    assert code == 1 and out.splitlines()[1].startswith("diverged: ")
    # one step from what Redis serves, as the daemon applies a force-push: a is v3, not v1
    assert "  a  head v3  redis v2  differs" in out.splitlines()
    assert sync_once(remote, redis_server, tmp_path, capsys) == 0
    code, out, _ = status(remote, redis_server, capsys)
    assert code == 0 and "  a  head v3  redis v3  same" in out.splitlines()


def test_fleet_reports_and_the_last_error_are_escaped(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17: any client writes its report, so a host or agent id there cannot forge a
    line, colour the terminal or reorder the text; nor can a report that is not a mapping
    crash the command."""
    assert sync_once(remote, redis_server, tmp_path, capsys) == 0
    client = redis.Redis.from_url(redis_server.url)
    client.set("configsync:{test}:client:w", json.dumps({
        "instance_id": "w\u202e1", "host": "h\nclients: 0\x1b[2J", "pid": 7, "revision": 1,
        "versions": {"a\u2066": 1}}))
    client.set("configsync:{test}:client:x", json.dumps({"instance_id": "x", "versions": [1]}))
    client.hset("configsync:{test}:state", "last_error", json.dumps(
        {"commit": "c", "file": "agents/a\x85.yaml", "line": 1, "column": 1, "message": "m"}))
    client.close()
    code, out, _ = status(remote, redis_server, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[lines.index("clients: 1") + 1:] == [  # x's report is no report: left out
        "  w\\u202e1 h\\nclients: 0\\u001b[2J pid 7 revision 1: a\\u2066 v1"]
    assert "last error (commit c): agents/a\\u0085.yaml:1:1: m" in lines
    code, out, _ = status(remote, redis_server, capsys, "--format", "json")
    assert "\u202e" not in out and "\x85" not in out and "\u2066" not in out
    assert json.loads(out)["clients"][0]["host"] == "h\nclients: 0\x1b[2J"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_dead_daemon_exits_1_though_redis_serves_the_head(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    """Issue 17, red team finding 5: a killed daemon (its last heartbeat long ago) exited 0,
    in sync, so `configsync status || alert` never alerted."""
    assert sync_once(remote, redis_server, tmp_path, capsys) == 0
    client = redis.Redis.from_url(redis_server.url)
    client.hset("configsync:{test}:state", "heartbeat_at", "2020-01-01T00:00:00Z")
    client.close()
    code, out, _ = status(remote, redis_server, capsys, "--format", fmt)
    assert code == 1
    if fmt == "json":
        data = json.loads(out)
        assert (data["state"], data["daemon_alive"]) == ("in_sync", False)
    else:
        assert "no daemon is writing this namespace" in out


@pytest.mark.parametrize("key", ["state", "current", "agents"])
def test_a_key_of_the_wrong_type_is_named_in_one_line(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], key: str) -> None:
    """Red team finding 6: a key turned into a string is corrupt data, named (exit 1), not
    redis-py's WRONGTYPE as an unreachable Redis (exit 2)."""
    assert sync_once(remote, redis_server, tmp_path, capsys) == 0
    client = redis.Redis.from_url(redis_server.url)
    name = f"configsync:{{test}}:{key}"
    client.delete(name)
    client.set(name, "x")
    client.close()
    code, out, err = status(remote, redis_server, capsys)
    assert (code, out) == (1, "")
    assert err == (f"configsync: error: {name} holds a string, not the hash configsync writes "
                   "there (Redis: WRONGTYPE): corrupt data\n")
