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
