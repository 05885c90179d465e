"""The local trigger: a daemon on a local repository syncs as soon as its branch refs move,
not at its next poll."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from configsync.embedded import RedisServer
from configsync.store import Store

from .conftest import GitTree, Remote, git, spawn_daemon, wait_until

HOUR = 3600.0


def _stop(proc: object, log: Path) -> str:
    proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    assert proc.wait(timeout=20) == 0  # type: ignore[attr-defined]
    return log.read_text()


def test_a_push_to_a_local_bare_remote_applies_at_once(remote: Remote, redis_server: RedisServer,
                                                        tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    proc = spawn_daemon(remote, redis_server.url, "test", workdir, interval=HOUR)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    try:
        wait_until(lambda: "seen" in store.state(), timeout=20)
        wait_until(lambda: "event=local_trigger " in (workdir / "daemon.log").read_text())
        sha = remote.commit_push("a: warmer", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                               "model: gpt-4o\ntemperature: 1\n"})
        wait_until(lambda: store.state().get("commit") == sha, timeout=10)  # not in an hour
        assert store.current()["a"].config["temperature"] == 1
        packed = remote.commit("packed")  # a ref moved into packed-refs (git gc, pack-refs)
        remote.push()
        git(Path(remote.url), "pack-refs", "--all")
        wait_until(lambda: store.state().get("commit") == packed, timeout=10)
    finally:
        log = _stop(proc, workdir / "daemon.log")
    assert "watching=" in log and "refs/heads" in log


def test_a_commit_in_a_local_clone_applies_at_once(git_tree: GitTree, redis_server: RedisServer,
                                                   tmp_path: Path) -> None:
    """A clone with a working tree: its git folder holds the daemon's own workdir, whose
    writes at every poll must not trigger the next one (only refs are watched)."""
    workdir = tmp_path / "wd"
    proc = spawn_daemon(SimpleNamespace(url=str(git_tree.root)),  # type: ignore[arg-type]
                        redis_server.url, "test", workdir, interval=HOUR)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    try:
        wait_until(lambda: "seen" in store.state(), timeout=20)
        wait_until(lambda: "event=local_trigger " in (workdir / "daemon.log").read_text())
        git_tree.write({"agents/support.yaml": "system_prompt: Be brief.\nmodel: gpt-4o\n"})
        sha = git_tree.commit("support: brief")
        wait_until(lambda: store.state().get("commit") == sha, timeout=10)
    finally:
        _stop(proc, workdir / "daemon.log")


def test_without_a_watch_the_daemon_still_polls(remote: Remote, redis_server: RedisServer,
                                                tmp_path: Path) -> None:
    """A source the watch cannot follow (a URL) is polled as before."""
    workdir = tmp_path / "wd"
    url_remote = SimpleNamespace(url="file://" + remote.url)
    proc = spawn_daemon(url_remote, redis_server.url, "test", workdir,  # type: ignore[arg-type]
                        interval=0.1)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    try:
        wait_until(lambda: "seen" in store.state(), timeout=20)
        sha = remote.commit_push("b", {"agents/b.yaml": "system_prompt: B2.\nmodel: gpt-4o\n"})
        wait_until(lambda: store.state().get("commit") == sha, timeout=10)
    finally:
        log = _stop(proc, workdir / "daemon.log")
    assert "local_trigger" not in log


@pytest.mark.slow
@pytest.mark.parametrize("how", ["reinit", "moved_back", "reclone"])
def test_a_replaced_repository_is_watched_again(how: str, remote: Remote,
                                                 redis_server: RedisServer,
                                                 tmp_path: Path) -> None:
    """Issue 17, item 10: the watched repository's folder is replaced (removed and made again
    at the same path, or moved away and back). The watch says it lost it, watches the new one,
    and a push there applies at once, not at the next poll (an hour)."""
    workdir = tmp_path / "wd"
    proc = spawn_daemon(remote, redis_server.url, "test", workdir, interval=HOUR)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    bare = Path(remote.url)
    log = workdir / "daemon.log"
    try:
        wait_until(lambda: "seen" in store.state(), timeout=20)
        wait_until(lambda: "event=local_trigger " in log.read_text())
        if how == "moved_back":
            bare.rename(tmp_path / "away.git")
            wait_until(lambda: "event=local_trigger_lost" in log.read_text(), timeout=10)
            (tmp_path / "away.git").rename(bare)
        else:
            shutil.rmtree(bare)
            if how == "reinit":
                git(bare.parent, "init", "-q", "--bare", "-b", "main", str(bare))
            else:
                git(bare.parent, "clone", "-q", "--bare", "--", str(remote.work), str(bare))
            remote.push(force=True)
        wait_until(lambda: "event=local_trigger_restored" in log.read_text(), timeout=10)
        sha = remote.commit_push("a: warmer", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                               "model: gpt-4o\ntemperature: 1\n"})
        wait_until(lambda: store.state().get("commit") == sha, timeout=10)  # not in an hour
    finally:
        text = _stop(proc, log)
        store.redis.close()
    if how != "moved_back":
        assert "event=local_trigger_lost" in text
    assert "Traceback" not in text


def _get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.slow
def test_a_source_moved_away_is_said_within_a_second_not_at_the_next_poll(
        remote: Remote, redis_server: RedisServer, tmp_path: Path) -> None:
    """Issue 17 (red team of item 10): the local trigger sees the repository go; a sync is
    asked for at once, so /readyz and the metrics say so at once (the poll is an hour away),
    with the real cause, also when Redis holds no state meanwhile (flushed)."""
    import json
    import math

    from configsync.embedded import free_port

    workdir, port = tmp_path / "wd", free_port()
    proc = spawn_daemon(remote, redis_server.url, "test", workdir, interval=HOUR,
                        extra=["--listen", f"127.0.0.1:{port}"])
    url = f"http://127.0.0.1:{port}"
    client = redis.Redis.from_url(redis_server.url)
    bare, log = Path(remote.url), workdir / "daemon.log"

    def behind() -> float:
        for line in _get(url + "/metrics")[1].splitlines():
            if line.startswith("configsync_seconds_behind_remote "):
                return float(line.split()[1])
        raise AssertionError("no configsync_seconds_behind_remote")

    try:
        wait_until(lambda: "event=local_trigger " in log.read_text(), timeout=20)
        wait_until(lambda: _get(url + "/readyz")[0] == 200, timeout=20)
        assert behind() == 0
        bare.rename(tmp_path / "away.git")
        gone = (f"remote_unreachable: the repository {bare} is gone (moved or removed): "
                "waiting for it to be back at that path")
        # (not in an hour; a fetch in flight as it went fails with git's own words first)
        wait_until(lambda: json.loads(_get(url + "/readyz")[1]).get("reason") == gone,
                   timeout=5)
        assert _get(url + "/readyz")[0] == 503
        assert math.isnan(behind())
        client.flushall()
        reason = json.loads(_get(url + "/readyz")[1])["reason"]
        assert reason.startswith("remote_unreachable: the repository ") and reason.endswith(
            "(and no state in Redis for this namespace: it is rebuilt once a sync succeeds)")
        (tmp_path / "away.git").rename(bare)
        wait_until(lambda: _get(url + "/readyz")[0] == 200, timeout=10)
        assert behind() == 0
        for _ in range(3):  # gone again at once (maybe before the watch is back): said too
            bare.rename(tmp_path / "away.git")
            wait_until(lambda: _get(url + "/readyz")[0] == 503, timeout=5)
            (tmp_path / "away.git").rename(bare)
            wait_until(lambda: _get(url + "/readyz")[0] == 200, timeout=10)
    finally:
        text = _stop(proc, log)
        client.close()
    assert "event=source_gone" in text and "event=source_back" in text
    assert "Traceback" not in text
