"""The embedded redis-server: a real process, killed and restarted like a crash."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from configsync.embedded import RedisServer, embedded_url, find_embedded, redis_server_binary
from configsync.errors import ConfigsyncError

from .conftest import Remote, git


def test_binary_is_found() -> None:
    assert Path(redis_server_binary()).name == "redis-server"


def test_persistent_server_survives_a_crash(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r", persist=True).start()
    try:
        assert server.port != 6379
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.kill()
        with pytest.raises(redis.ConnectionError):
            client.get("k")
        server.start()
        assert client.get("k") == b"v"  # appendonly: nothing lost
    finally:
        server.stop()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "a", persist=False) as first:
        clash = RedisServer(tmp_path / "b", port=first.port, persist=False)
        with pytest.raises(ConfigsyncError, match="did not start"):
            clash.start(timeout=2)
        clash.kill()


@contextmanager
def _daemons_redis(workdir: Path) -> Iterator[str]:
    """What ``configsync sync`` leaves in ``workdir`` for the embedded Redis: a real
    redis-server working in ``workdir/redis``, and ``workdir/redis.url``."""
    with RedisServer(workdir / "redis", persist=False) as server:
        (workdir / "redis.url").write_text(server.url + "\n")
        yield server.url


def test_a_linked_worktree_finds_its_main_checkouts_daemon(remote: Remote,
                                                           tmp_path: Path) -> None:
    """Issue 17 (red team of item 10): ``git worktree add ../wt1; cd ../wt1; configsync get``
    finds the embedded Redis of the daemon that runs in the main checkout."""
    worktree = tmp_path / "wt1"
    git(remote.work, "worktree", "add", "-q", "-b", "wt1", str(worktree))
    with _daemons_redis(remote.work / ".git" / "configsync") as url:
        assert embedded_url(worktree) == url
        assert embedded_url(worktree / "agents") == url
        found = find_embedded(worktree)
        assert found is not None and found.running


@pytest.mark.parametrize(("cloned_from", "daemon_repo"), [
    ("file://{bare}", "{bare}"),
    ("{bare}", "file://{bare}"),
    ("../git/remote.git", "{bare}"),
    ("file://{bare}/", "{bare}"),
])
def test_a_clone_finds_the_daemon_of_its_remote_however_it_is_spelled(
        cloned_from: str, daemon_repo: str, remote: Remote, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 (red team of item 10): a clone made with ``file:///path/bare.git`` finds a
    daemon started with ``--repo /path/bare.git`` (and the other way round, and a clone
    made with a relative path)."""
    from configsync.sync_cli import _source, default_workdir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    bare = os.path.realpath(remote.url)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", cloned_from.format(bare=bare).removeprefix("../"), str(clone))
    if cloned_from.startswith(".."):  # (git stores the path it cloned from made absolute)
        git(clone, "remote", "set-url", "origin", cloned_from)
    workdir = default_workdir(_source(daemon_repo.format(bare=bare)))  # the daemon's rule
    workdir.mkdir(parents=True)
    with _daemons_redis(workdir) as url:
        assert embedded_url(clone) == url
