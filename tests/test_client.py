"""The thread-backed Client against a real redis-server and the real daemon."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import model_validator

from configsync import (
    AgentConfig,
    Client,
    ClientClosedError,
    ClientForkedError,
    Snapshot,
    UnknownAgentError,
    VersionNotFoundError,
)
from configsync.embedded import RedisServer, free_port
from configsync.errors import CorruptDataError, UsageError
from configsync.git import Mirror
from configsync.redis_url import accepted_options
from configsync.snapshot import Record, checksum
from configsync.store import EVENT_CHANGES_MAX, Store, Write
from configsync.sync import Daemon

from .conftest import DroppingProxy, Remote, git, spawn_daemon, wait_until

A = "system_prompt: You are A.\nmodel: gpt-4o\n"


class World:
    """A remote, a persistent redis-server that tests may kill, and a daemon syncing them."""

    def __init__(self, tmp_path: Path, remote: Remote) -> None:
        self.remote = remote
        self.server = RedisServer(tmp_path / "redis", persist=True).start()
        self.url = self.server.url
        self.redis = redis.Redis.from_url(self.url, socket_timeout=2)
        self.daemon = Daemon(mirror=Mirror(tmp_path / "mirror", remote.url),
                             store=Store(self.redis, "test"), keep=3)
        self.daemon.sync()

    def push(self, agent: str = "a", temperature: float = 0.5, text: str = A) -> str:
        sha = self.remote.commit_push(f"{agent} {temperature}", {
            f"agents/{agent}.yaml": text + f"temperature: {temperature}\n"})
        self.daemon.sync()
        return sha

    def close(self) -> None:
        self.server.kill()
        self.redis.close()
        self.daemon.mirror.close()


@pytest.fixture
def world(tmp_path: Path, remote: Remote) -> Iterator[World]:
    w = World(tmp_path, remote)
    yield w
    w.close()


def test_get_and_change_callbacks(world: World) -> None:
    seen: list[tuple[str, int | None, int]] = []
    with Client(redis=world.url, namespace="test") as client:
        first = client.get("a")
        assert isinstance(first, Snapshot) and isinstance(first.config, AgentConfig)
        assert (first.version, first.config.system_prompt, client.stale) == (1, "You are A.",
                                                                             False)

        def on_change(agent_id: str, snap: Snapshot | None) -> None:
            # called after the cache is updated
            seen.append((agent_id, snap and snap.version, client.get(agent_id).version))

        client.on_change(on_change, agent_id="a", replay=False)
        sha = world.push("a", 1.5)
        wait_until(lambda: client.get("a").version == 2)
        wait_until(lambda: len(seen) == 1)
        snap = client.get("a")
        assert (snap.commit, snap.config.temperature, snap.message) == (sha, 1.5, "a 1.5")
        world.push("b", 0.1, text="system_prompt: B\nmodel: gpt-4o\n")  # another agent
        wait_until(lambda: client.get("b").version == 2)
        assert seen == [("a", 2, 2)]
        assert first.version == 1 and first.config.temperature == 0.7  # snapshots are immutable


def test_delete_fires_callback_with_none(world: World) -> None:
    events: list[tuple[str, Snapshot | None]] = []
    with Client(redis=world.url, namespace="test") as client:
        client.on_change(lambda agent_id, snap: events.append((agent_id, snap)), replay=False)
        world.remote.delete("agents/b.yaml")
        world.remote.commit_push("drop b")
        world.daemon.sync()
        wait_until(lambda: events == [("b", None)])
        with pytest.raises(UnknownAgentError) as info:
            client.get("b")
        assert str(info.value) == "unknown agent 'b'; known agents: a"
        assert isinstance(info.value, KeyError)


def test_failing_callback_never_stops_the_client(world: World,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def broken(agent_id: str, snap: Snapshot | None) -> None:
        calls.append(1)
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR, logger="configsync"), Client(
            redis=world.url, namespace="test") as client:
        client.on_change(broken, replay=False)
        world.push("a", 0.1)
        wait_until(lambda: calls == [1])
        world.push("a", 0.2)
        wait_until(lambda: client.get("a").version == 3 and calls == [1, 1])
    assert "event=callback_failed" in caplog.text


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt(), GeneratorExit("x")])
def test_a_callback_cannot_end_the_client(world: World, error: BaseException,
                                         caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def exits(agent_id: str, snap: Snapshot | None) -> None:
        calls.append(1)
        raise error

    with caplog.at_level(logging.ERROR, logger="configsync"), Client(
            redis=world.url, namespace="test") as client:
        client.on_change(exits, replay=False)
        world.push("a", 0.1)
        wait_until(lambda: calls == [1])
        world.push("a", 0.2)  # still following
        wait_until(lambda: client.get("a").version == 3 and calls == [1, 1])
    assert "event=callback_failed" in caplog.text


def test_redis_down_keeps_serving_and_catches_up(world: World, tmp_path: Path) -> None:
    hooks: list[str] = []
    with Client(redis=world.url, namespace="test", cache_path=tmp_path / "cache.json",
                on_disconnect=lambda exc: hooks.append("down"),
                on_reconnect=lambda: hooks.append("up")) as client:
        world.server.kill()
        wait_until(lambda: not client.status().connected)
        assert client.get("a").version == 1  # still answering, from memory
        assert client.stale and client.status().stale_since is not None
        world.server.start()
        world.push("a", 1.0)  # a change the client did not see happen
        wait_until(lambda: client.get("a").version == 2, timeout=30)
        wait_until(lambda: not client.stale)
        wait_until(lambda: hooks == ["down", "up"])  # (on the callback thread)
    cached = json.loads((tmp_path / "cache.json").read_text())
    assert {s["agent_id"]: s["version"] for s in cached["snapshots"]} == {"a": 2, "b": 1}


def test_cold_start_with_redis_down_serves_the_cache(world: World, tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    with Client(redis=world.url, namespace="test", cache_path=cache) as client:
        assert client.get("a").version == 1
    world.server.kill()
    with Client(redis=world.url, namespace="test", cache_path=cache) as client:
        assert client.get("a").version == 1
        assert client.get("a").config.system_prompt == "You are A."
        assert client.stale and not client.status().connected
        world.server.start()
        wait_until(lambda: not client.stale, timeout=30)
        world.push("a", 1.2)
        wait_until(lambda: client.get("a").version == 2)


def test_corrupt_cache_file_is_a_warning(world: World, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache.json"
    cache.write_text('{"format": 1, "snapshots": [ broken')
    with caplog.at_level(logging.WARNING, logger="configsync"), Client(
            redis=world.url, namespace="test", cache_path=cache) as client:
        assert client.get("a").version == 1
    assert "event=cache_unreadable" in caplog.text
    assert json.loads(cache.read_text())["format"] == 1  # rewritten whole


def test_cache_file_is_written_atomically(world: World, tmp_path: Path) -> None:
    cache = tmp_path / "deep" / "cache.json"
    with Client(redis=world.url, namespace="test", cache_path=cache) as client:
        world.push("a", 0.3)
        wait_until(lambda: client.get("a").version == 2)
        wait_until(lambda: json.loads(cache.read_text())["revision"] == 2)
    assert [p.name for p in cache.parent.iterdir()] == ["cache.json"]  # no temp files left


def test_pinned_versions_survive_changes_and_trims(world: World) -> None:
    with Client(redis=world.url, namespace="test") as client:
        pinned = client.get("a")
        for i in range(1, 6):
            world.push("a", i / 10)
        wait_until(lambda: client.get("a").version == 6)
        assert client.get("a", version=1) is pinned  # held: no network
        assert client.get("a", version=4).config.temperature == 0.3
    with Client(redis=world.url, namespace="test") as fresh:
        assert fresh.get("a", version=5).version == 5  # fetched once from history ...
        world.server.kill()
        assert fresh.get("a", version=5).version == 5  # ... then kept
        world.server.start()
        with pytest.raises(VersionNotFoundError) as info:
            fresh.get("a", version=1)  # keep=3: trimmed
        assert str(info.value) == (
            "agent 'a' version 1 is not in history (it keeps versions 4-6); it was trimmed or "
            "never existed (`configsync sync --keep` keeps more)")


def test_lost_pubsub_messages_are_caught_by_the_periodic_check(world: World) -> None:
    store = world.daemon.store
    with Client(redis=world.url, namespace="test", check_interval=0.2) as client:
        state = store.state()
        old = store.current()["a"]
        config = {**old.config, "temperature": 1.9}
        record = Record("a", 2, checksum(config), config, "c2", "X <x@y>",
                        old.committed_at, "silent", old.synced_at)
        fields = {"seen": "c2", "commit": "c2", "revision": str(int(state["revision"]) + 1)}
        assert store.commit_transaction(Write(fields, upserts=[record]),  # no events published
                                        expected_seen=state["seen"])
        wait_until(lambda: client.get("a").version == 2)
        assert client.get("a").config.temperature == 1.9


def test_duplicate_and_late_events_never_move_back(world: World) -> None:
    versions: list[int] = []
    with Client(redis=world.url, namespace="test") as client:
        client.on_change(lambda agent_id, snap: versions.append(snap.version if snap else -1),
                         replay=False)
        world.push("a", 0.4)
        wait_until(lambda: versions == [2])
        epoch, revision = world.daemon.store.state()["epoch"], client.status().revision
        for version, deleted in ((1, False), (2, False), (2, False), (1, True)):
            # late ones and duplicates, as a flaky network delivers
            world.redis.publish(world.daemon.store.keys.changes, json.dumps({
                "type": "applied", "commit": "c", "revision": revision, "epoch": epoch,
                "count": 1, "changes": [{"agent_id": "a", "version": version,
                                         "deleted": deleted}]}))
        world.push("a", 0.6)
        wait_until(lambda: versions == [2, 3])
        assert client.get("a").version == 3


def both(world: World, temperature: float) -> str:
    """One commit that changes agents a and b."""
    sha = world.remote.commit_push(f"a and b {temperature}", {
        "agents/a.yaml": A + f"temperature: {temperature}\n",
        "agents/b.yaml": f"system_prompt: You are B.\nmodel: gpt-4o\ntemperature: {temperature}\n"})
    world.daemon.sync()
    return sha


def test_a_lost_message_is_noticed_at_the_next_event(world: World) -> None:
    """Issue 9.1: a commit's event is really lost on the wire (a proxy swallows the frame);
    the next commit's event shows the gap in revisions, and the client reads what it missed
    at once, without waiting for its periodic check."""
    proxy = DroppingProxy(world.server.port)
    try:
        with Client(redis=proxy.url, namespace="test", check_interval=3600) as client:
            wait_until(lambda: client.status().connected)
            proxy.drop = 1
            both(world, 0.3)
            wait_until(lambda: proxy.dropped == 1)
            assert client.get("b").version == 1  # the event is lost: nothing told the client
            sha = world.push("a", 0.4)
            wait_until(lambda: client.get("b").version == 2)
            assert client.get("a").version == 3
            status = client.status()
            assert (status.revision, status.commit) == (3, sha)
    finally:
        proxy.close()


def test_a_lost_last_message_is_caught_by_the_periodic_check(world: World) -> None:
    proxy = DroppingProxy(world.server.port)
    try:
        with Client(redis=proxy.url, namespace="test", check_interval=0.2) as client:
            wait_until(lambda: client.status().connected)
            proxy.drop = 1
            sha = both(world, 0.3)
            wait_until(lambda: proxy.dropped == 1)
            wait_until(lambda: client.get("a").version == 2 and client.get("b").version == 2)
            assert client.status().commit == sha
    finally:
        proxy.close()


def test_a_commit_costs_a_client_one_round_trip_and_one_cache_write(world: World,
                                                                    tmp_path: Path) -> None:
    """Issue 9.2: one event per commit, one HMGET for every agent it changed, and one cache
    write per burst; a commit that touches no agent costs no read at all."""
    files = {f"agents/m{i}.yaml": f"system_prompt: M{i}\nmodel: gpt-4o\n" for i in range(40)}
    world.remote.commit_push("forty agents", files)
    world.daemon.sync()
    cache = tmp_path / "cache.json"
    proxy = DroppingProxy(world.server.port)  # counts what the client sends
    try:
        with Client(redis=proxy.url, namespace="test", cache_path=cache,
                    check_interval=3600, report_interval=3600) as client:
            wait_until(lambda: client.status().connected and cache.exists()
                       and "set" in proxy.commands())  # (the first fleet report is sent)
            saves: list[int] = []
            save = client.holdings.save
            client.holdings.save = (  # type: ignore[method-assign]
                lambda path: (save(path), saves.append(1))[0])
            before = len(proxy.commands())
            sha = world.remote.commit_push("retune all", {
                name: text + "temperature: 0.9\n" for name, text in files.items()})
            world.daemon.sync()
            wait_until(lambda: client.status().commit == sha and saves == [1])
            assert proxy.commands()[before:] == ["hmget"]
            assert all(client.get(f"m{i}").version == 2 for i in range(40))
            assert json.loads(cache.read_text())["commit"] == sha
            before = len(proxy.commands())
            docs = world.remote.commit_push("docs only", {"README.md": "docs\n"})
            world.daemon.sync()
            wait_until(lambda: client.status().commit == docs)
            assert proxy.commands()[before:] == []
    finally:
        proxy.close()


@pytest.mark.slow  # a stress or scale test: in .ci/run, not the quick subset
def test_a_commit_too_big_to_list_is_read_whole(world: World, tmp_path: Path) -> None:
    files = {f"agents/n{i:04}.yaml": f"system_prompt: N{i}\nmodel: gpt-4o\n"
             for i in range(EVENT_CHANGES_MAX + 1)}
    with Client(redis=world.url, namespace="test", check_interval=3600) as client:
        sha = world.remote.commit_push("many agents", files)
        world.daemon.sync()
        wait_until(lambda: client.status().commit == sha)
        assert len(client.status().versions) == EVENT_CHANGES_MAX + 3


def test_new_epoch_replaces_and_missing_state_keeps(world: World) -> None:
    with Client(redis=world.url, namespace="test", check_interval=0.2) as client:
        epoch = client.status().epoch
        world.redis.flushall()
        wait_until(lambda: client.status().last_sync_at is not None)
        assert client.get("a").version == 1  # no state: keep the last known good
        world.daemon.sync()  # rebuilt: same versions, new epoch
        wait_until(lambda: client.status().epoch not in (None, epoch))
        assert client.get("a").version == 1
        world.push("a", 0.9)
        wait_until(lambda: client.get("a").version == 2)


@pytest.mark.slow  # a stress or scale test: in .ci/run, not the quick subset
def test_concurrent_reads_during_updates(world: World) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()
    with Client(redis=world.url, namespace="test") as client:

        def reader() -> None:
            last = 0
            try:
                while not stop.is_set():
                    for _ in range(1000):  # bursts, then let the writers have the GIL
                        version = client.get("a").version
                        assert version >= last
                        last = version
                    time.sleep(0.001)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for thread in threads:
            thread.start()
        for i in range(1, 11):
            world.push("a", i / 10)
        wait_until(lambda: client.get("a").version == 11)
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []


def test_status_and_fleet_report(world: World) -> None:
    client = Client(redis=world.url, namespace="test", report_interval=0.2,
                    instance_id="web-1")
    with client:
        key = world.daemon.store.keys.client("web-1")
        wait_until(lambda: world.redis.exists(key))
        report = json.loads(world.redis.get(key) or b"{}")
        assert report["versions"] == {"a": 1, "b": 1}
        assert (report["instance_id"], report["pid"]) == ("web-1", __import__("os").getpid())
        assert 0 < world.redis.ttl(key) <= 1
        status = client.status()
        assert (status.connected, status.stale, status.versions) == (True, False,
                                                                     {"a": 1, "b": 1})
        world.push("a", 0.2)
        wait_until(lambda: client.status().last_event_at is not None)
    assert not world.redis.exists(key)  # removed on stop
    with pytest.raises(ClientClosedError, match="was stopped; create a new one"):
        client.start()
    with pytest.raises(ClientClosedError):
        client.get("a")


def test_schema_not_importable_falls_back_to_lenient(world: World) -> None:
    store = world.daemon.store
    state = store.state()
    old = store.current()["a"]
    config = {**old.config, "max_turns": 7}
    record = Record("a", 2, checksum(config), config, "c2", "X <x@y>",
                    old.committed_at, "custom", old.synced_at)
    store.commit_transaction(Write({"seen": "c2", "commit": "c2", "revision": "9",
                                    "schema": "no_such_pkg.models:Agent"}, upserts=[record]),
                             expected_seen=state["seen"])
    with Client(redis=world.url, namespace="test") as client:
        config: Any = client.get("a").config
        assert isinstance(config, AgentConfig) and config.max_turns == 7


def test_unknown_agent_with_nothing_loaded(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "empty", persist=False).start()
    try:
        with Client(redis=server.url, namespace="none") as client:
            with pytest.raises(UnknownAgentError, match="no configs are loaded yet"):
                client.get("a")
            assert client.stale  # an empty Redis is "no data yet"
    finally:
        server.kill()


EXAMPLE = Path(__file__).parents[1] / "examples" / "agent_loop.py"


def _example(*argv: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE), *argv, "--turns", "2", "--pause", "0"],
                          capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**os.environ, **env})


def test_example_agent_loop_runs(world: World, tmp_path: Path) -> None:
    proc = _example("a", "--redis", world.url, "--namespace", "test")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == [
        f"reading namespace 'test' from {world.url}",
        "turn 1: a v1 model=gpt-4o temperature=0.7 prompt='You are A.'"]
    proc = _example("a", CONFIGSYNC_REDIS_URL=world.url, CONFIGSYNC_NAMESPACE="test")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"reading namespace 'test' from {world.url}\n")
    # in a repository whose daemon runs an embedded Redis: the URL it wrote
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    written = tmp_path / "repo" / ".git" / "configsync" / "redis.url"
    written.parent.mkdir(parents=True)
    written.write_text(world.url + "\n")
    (tmp_path / "repo" / "agents").mkdir()
    proc = _example("a", "--namespace", "test", cwd=tmp_path / "repo" / "agents")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"reading namespace 'test' from {world.url}\n")


@pytest.mark.slow  # waits out real delays; in .ci/run, not the quick subset
def test_example_says_which_namespace_has_configs(world: World) -> None:
    proc = _example("a", "--redis", world.url)  # namespace "default": the daemon wrote "test"
    assert (proc.returncode, proc.stdout.splitlines()[0]) == (
        1, f"reading namespace 'default' from {world.url}")
    assert proc.stderr.strip().splitlines()[-1] == (
        "agent_loop: no configs in namespace 'default'; the daemon writes 'test' here: pass "
        "--namespace or set CONFIGSYNC_NAMESPACE to test")
    proc = _example("a", "--redis", world.url, "--namespace", "other")
    assert proc.stderr.strip().splitlines()[-1] == (
        "agent_loop: no configs in namespace 'other'; the daemon writes 'test' here: pass "
        "--namespace test")
    proc = _example("nobody", "--redis", world.url, "--namespace", "test")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "agent_loop: unknown agent 'nobody'; known agents: a, b")
    world.redis.flushall()
    proc = _example("a", "--redis", world.url)
    assert proc.stderr.strip().splitlines()[-1] == (
        "agent_loop: no configs in namespace 'default'; is the daemon running, and with this "
        "Redis URL?")
    world.server.kill()
    proc = _example("a", "--redis", world.url)
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"agent_loop: cannot read Redis at {world.url} (")
    assert last.endswith(") and no configs are cached; is the daemon running? (it prints the "
                         "URL to use)")


@pytest.mark.slow  # the example as a subprocess, case by case: in .ci/run
@pytest.mark.parametrize(("url", "message"), [
    ("localhost:6390", "--redis: 'localhost:6390' is not a Redis URL; write redis://HOST:PORT/DB "
                       "(rediss:// for TLS, unix:///path/to/redis.sock)"),
    ("redis://127.0.0.1:abc/0", "--redis: 'redis://127.0.0.1:abc/0' is not a valid Redis URL "
                                "(Port could not be cast to integer value as 'abc')"),
    ("redis://", "--redis: 'redis://' names no host (redis-py would quietly use "
                 "its default server on localhost); write redis://HOST:PORT/DB (rediss:// for "
                 "TLS, unix:///path/to/redis.sock)"),
    ("redis://127.0.0.1:1/0?foo=bar", "--redis: 'redis://127.0.0.1:1/0?foo=bar' has an option "
                                      "redis-py does not accept: foo; redis:// accepts: "
                                      + ", ".join(accepted_options("redis"))),
])
def test_example_explains_a_bad_url(url: str, message: str) -> None:
    proc = _example("a", "--redis", url)
    assert (proc.returncode, proc.stderr) == (2, f"agent_loop: {message}\n")


def test_example_without_a_url_says_where_to_get_one(tmp_path: Path) -> None:
    proc = _example("a", cwd=tmp_path)  # no URL anywhere
    assert (proc.returncode, proc.stderr.strip()) == (2, (
        "agent_loop: no Redis URL: start `configsync sync` in this repository (it writes the "
        "URL), or pass --redis, or set CONFIGSYNC_REDIS_URL"))


@pytest.mark.slow  # the example as a subprocess, case by case: in .ci/run
def test_example_stops_quietly_on_ctrl_c(world: World) -> None:
    import signal

    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "a", "--redis", world.url,
                             "--namespace", "test", "--pause", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    # (started with SIGINT ignored, as a background job of a script is: Ctrl-C still works)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("reading namespace")
    assert proc.stdout.readline().startswith("turn 1:")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err, err


def test_client_log_lines_use_the_daemons_format(world: World) -> None:
    """An application that configured no logging still gets `ts=... level=...` lines, and sees
    `reconnected` at the same level as `disconnected`."""
    script = (
        "import sys, time\n"
        "from configsync import Client\n"
        "with Client(redis=sys.argv[1], namespace='test', check_interval=0.2) as c:\n"
        "    print('up', flush=True)\n"
        "    sys.stdin.readline()\n"
        "    while c.status().connected: time.sleep(0.02)\n"
        "    print('down', flush=True)\n"
        "    sys.stdin.readline()\n"
        "    while not c.status().connected: time.sleep(0.02)\n"
        "    print('back', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, world.url], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "up\n"
        world.server.kill()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "down\n"
        world.server.start()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "back\n"
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    lines = err.splitlines()
    pattern = re.compile(r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ level=warning event=(\w+) "
                         r"namespace=test")
    events = [m.group(1) for m in map(pattern.match, lines) if m]
    assert events == ["disconnected", "reconnected"], err
    assert all(line.startswith("ts=") for line in lines), err


@pytest.mark.slow  # a stress or scale test: in .ci/run, not the quick subset
def test_versions_held_for_pinning_are_bounded(world: World) -> None:
    from configsync.holdings import KEEP_VERSIONS

    with Client(redis=world.url, namespace="test") as client:
        first = client.get("a")
        for i in range(KEEP_VERSIONS + 2):
            world.push("a", (i % 20) / 10)
        wait_until(lambda: client.get("a").version == KEEP_VERSIONS + 3)
        held = [v for (agent, v) in client.holdings.versions if agent == "a"]
        assert len(held) == KEEP_VERSIONS and max(held) == KEEP_VERSIONS + 3
        assert first.version == 1  # a conversation that kept its snapshot still has it
        status = client.status()
        assert status["versions"]["a"] == status.versions["a"] == KEEP_VERSIONS + 3
        assert status.as_dict()["connected"] is True


def test_a_decoding_redis_connection_works_too(world: World) -> None:
    connection = redis.Redis.from_url(world.url, decode_responses=True)
    with Client(redis=connection, namespace="test") as client:
        assert client.get("a").version == 1
        world.push("a", 0.8)
        wait_until(lambda: client.get("a").version == 2)
        assert client.get("a", version=1).version == 1
    connection.close()


def test_a_slow_callback_stalls_nothing_but_later_callbacks(world: World) -> None:
    """Issue 9.3: callbacks ran on the thread that follows Redis; one that blocks stalled
    every update and check. They run in order on their own thread now."""
    release = threading.Event()
    threads: list[str] = []

    def slow(agent_id: str, snap: Snapshot | None) -> None:
        threads.append(threading.current_thread().name)
        release.wait(30)

    with Client(redis=world.url, namespace="test") as client:
        client.on_change(slow, agent_id="a", replay=False)
        world.push("a", 0.1)
        wait_until(lambda: threads == ["configsync-callbacks"])
        for t in (0.2, 0.3):
            world.push("a", t)
        wait_until(lambda: client.get("a").version == 4)  # updates flow while it blocks
        release.set()
        wait_until(lambda: len(threads) == 3)


def test_a_read_only_user_reads_and_follows_without_flapping(world: World,
                                                            caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    """Issue 9.4: the minimal ACL the README documents for agents (read and subscribe, no
    write): the fleet report's SET is refused once, logged once, and nothing else changes."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    line = next(x.strip() for x in readme.splitlines()
                if x.strip().startswith("ACL SETUSER agent "))
    world.redis.execute_command(
        *line.replace("{default}", "{test}").replace(">AGENT_PASSWORD", ">agent-pw").split())
    url = world.url.replace("redis://", "redis://agent:agent-pw@")
    hooks: list[str] = []
    with caplog.at_level(logging.WARNING, logger="configsync"), Client(
            redis=url, namespace="test", report_interval=0.1, check_interval=0.1,
            on_disconnect=lambda exc: hooks.append("down"),
            on_reconnect=lambda: hooks.append("up")) as client:
        stale = []
        for _ in range(10):
            stale.append(client.stale)
            time.sleep(0.05)
        sha = world.push("a", 0.8)
        wait_until(lambda: client.status().commit == sha)
        assert client.get("a").version == 2
        assert not any(stale) and hooks == [] and client.status().connected
    assert caplog.text.count("event=report_failed") == 1


def test_a_deleted_agent_can_have_a_default(world: World) -> None:
    """Issue 9.6: get(id, default=...) for an agent that is unknown or was deleted."""
    with Client(redis=world.url, namespace="test") as client:
        assert client.get("nobody", default=None) is None
        world.remote.delete("agents/b.yaml")
        world.remote.commit_push("drop b")
        world.daemon.sync()
        wait_until(lambda: client.get("b", default="gone") == "gone")
        assert client.get("a", default=None) is client.get("a")


def test_rejections_reach_agents(world: World) -> None:
    """Issue 9.7: on_reject(commit, error), and status().last_error."""
    told: list[tuple[str, str]] = []
    with Client(redis=world.url, namespace="test") as client:
        client.on_reject(lambda commit, error: told.append((commit, error)))
        bad = world.push("a", 3.5)
        wait_until(lambda: len(told) == 1)
        assert told == [(bad, "agents/a.yaml:3:14: temperature: must be at most 2 (got 3.5)")]
        status = client.status()
        assert status.last_error is not None and status.last_error["commit"] == bad
        assert client.get("a").version == 1  # the last good config keeps serving
        world.push("a", 0.5)
        wait_until(lambda: client.status().last_error is None)
        assert len(told) == 1


def test_the_callers_model_types_configs_and_redis_never_picks_code(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 9.8: state.schema named a module every agent process imported. Now the caller
    passes model=; the state's schema is only compared."""
    (tmp_path / "evil_schema_mod.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('x')\n"
        "from configsync import AgentConfig\nclass Agent(AgentConfig):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    store = world.daemon.store
    state = store.state()
    store.commit_transaction(Write({"schema": "evil_schema_mod:Agent"}),
                             expected_seen=state["seen"])

    class SupportConfig(AgentConfig):
        max_turns: int = 3

    with caplog.at_level(logging.INFO, logger="configsync"):
        with Client(redis=world.url, namespace="test") as client:
            config: Any = client.get("a").config
            assert isinstance(config, AgentConfig) and not isinstance(config, SupportConfig)
        with Client(redis=world.url, namespace="test", model=SupportConfig) as client:
            typed_config = client.get("a").config
            assert isinstance(typed_config, SupportConfig) and typed_config.max_turns == 3
    assert not (tmp_path / "RAN").exists()
    assert "event=schema_mismatch schema=evil_schema_mod:Agent" in caplog.text


@pytest.mark.slow  # a stress or scale test: in .ci/run, not the quick subset
def test_pinned_reads_epoch_changes_and_stops_under_stress(world: World) -> None:
    """Issue 9.3: pinned reads from many threads while epochs change and clients stop."""
    for t in (0.1, 0.2, 0.3):
        world.push("a", t)
    errors: list[BaseException] = []
    for _ in range(3):
        client = Client(redis=world.url, namespace="test", check_interval=0.05).start()
        stop = threading.Event()

        def reader(c: Client = client, s: threading.Event = stop) -> None:
            try:
                while not s.is_set():
                    for version in (1, 2, 3, 4):
                        try:
                            c.get("a", version=version)
                        except (VersionNotFoundError, ClientClosedError):
                            pass
                    c.get("a")
            except ClientClosedError:
                pass
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for thread in threads:
            thread.start()
        for _ in range(3):  # a new epoch each time: the state is rebuilt
            world.redis.delete(world.daemon.store.keys.state)
            world.daemon.sync()
        client.stop()
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []


def test_example_survives_its_agent_being_deleted(world: World, tmp_path: Path) -> None:
    """Issue 9.6: after `git rm agents/<id>.yaml` the example loop died at its next turn with
    UnknownAgentError; it now says so and waits for the agent to come back."""
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "b", "--redis", world.url,
                             "--namespace", "test", "--pause", "0.05",
                             "--cache", str(tmp_path / "c.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_until(lambda: any(line.startswith("turn 2: b v1") for line in lines))
        world.remote.delete("agents/b.yaml")
        world.remote.commit_push("drop b")
        world.daemon.sync()
        wait_until(lambda: any("b was deleted" in line for line in lines))
        assert proc.poll() is None  # still running
        world.remote.commit_push("b is back", {
            "agents/b.yaml": "system_prompt: B again\nmodel: gpt-4o\n"})
        world.daemon.sync()
        wait_until(lambda: any(line.startswith("turn") and " b v2 " in line for line in lines))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_forged_or_foreign_events_are_repaired_by_the_next_check(world: World) -> None:
    """Red team: an `applied` event for R + 1 that Redis never wrote (forged, or from a
    namespace of the same name in another database: pub/sub ignores the database) made the
    client claim a commit it did not hold, and a listed deletion dropped an agent for good."""
    store = world.daemon.store
    with Client(redis=world.url, namespace="test", check_interval=0.2) as client:
        state = store.state()
        revision = client.status().revision
        world.redis.publish(store.keys.changes, json.dumps({
            "type": "applied", "commit": "0" * 40, "revision": revision + 1,
            "epoch": state["epoch"], "count": 1,
            "changes": [{"agent_id": "b", "version": 10**9, "deleted": True}]}))
        sha = world.push("a", 0.4)  # its real event carries the revision the forgery took
        wait_until(lambda: client.status().commit == sha and client.get("a").version == 2)
        assert client.get("b").version == 1  # Redis never deleted it
        assert client.status().revision == int(store.state()["revision"])


def test_a_config_the_callers_model_refuses_holds_up_no_other_agent(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    from pydantic import Field

    class Cool(AgentConfig):
        temperature: float = Field(0.7, ge=0, le=1)

    class Strict(AgentConfig):
        team: str  # no agent sets it

    with caplog.at_level(logging.ERROR, logger="configsync"), Client(
            redis=world.url, namespace="test", model=Cool) as client:
        world.push("a", 1.5)  # valid for the repository, not for this application
        sha = world.push("b", 0.2, text="system_prompt: B\nmodel: gpt-4o\n")
        wait_until(lambda: client.status().commit == sha)
        assert client.get("b").version == 2 and client.get("a").version == 1
        assert "temperature" in client.status().model_errors["a"]
        world.push("a", 0.5)
        wait_until(lambda: client.get("a").version == 3)
        assert client.status().model_errors == {}
    assert caplog.text.count("event=config_refused_by_model") == 1
    with Client(redis=world.url, namespace="test", model=Strict) as strict:  # no raise
        assert strict.get("a", default=None) is None
        assert sorted(strict.status().model_errors) == ["a", "b"]


def test_hooks_run_on_the_callback_thread(world: World) -> None:
    """Red team: a hung on_disconnect hook held up every config."""
    names: list[str] = []
    release = threading.Event()

    def hung(exc: BaseException) -> None:
        names.append(threading.current_thread().name)
        release.wait(30)

    with Client(redis=world.url, namespace="test", on_disconnect=hung) as client:
        wait_until(lambda: client.status().connected)
        world.server.kill()
        wait_until(lambda: names == ["configsync-callbacks"])
        world.server.start()
        world.push("a", 0.3)
        wait_until(lambda: client.get("a").version == 2)  # while the hook still hangs
        release.set()


def test_a_rollback_to_the_commit_served_clears_last_error(world: World) -> None:
    with Client(redis=world.url, namespace="test", check_interval=3600) as client:
        bad = world.push("a", 3.5)
        wait_until(lambda: (client.status().last_error or {}).get("commit") == bad)
        git(world.remote.work, "reset", "-q", "--hard", "HEAD~1")
        world.remote.push(force=True)
        world.daemon.sync()
        world.daemon.sync()  # the second fetch agrees: applied (the commit served, again)
        assert world.daemon.store.state()["last_error"] == ""
        wait_until(lambda: client.status().last_error is None)


def test_stop_from_a_callback(world: World, caplog: pytest.LogCaptureFixture) -> None:
    client = Client(redis=world.url, namespace="test")
    stopped = threading.Event()

    def stop_now(agent_id: str, snap: Snapshot | None) -> None:
        client.stop()
        stopped.set()

    with caplog.at_level(logging.ERROR, logger="configsync"):
        client.on_change(stop_now)
        client.start()  # its first read is a change for every agent: the callback stops it
        assert stopped.wait(10)
        wait_until(lambda: client._thread is not None and not client._thread.is_alive())
    assert "callback_failed" not in caplog.text and client.closed


def test_a_namespace_the_daemon_would_refuse_is_refused_at_once(world: World) -> None:
    for bad in ("", "bad ns", "{t1}", "t1}:x"):
        with pytest.raises(UsageError, match="is not a namespace"):
            Client(redis=world.url, namespace=bad)


def test_status_says_how_old_the_newest_state_read_is(world: World) -> None:
    client = Client(redis=world.url, namespace="test", check_interval=0.2)
    assert client.status().state_age is None  # nothing read yet
    with client:
        first = client.status().state_age
        assert first is not None and 0 <= first < 5
        # the periodic check re-reads the state: the age falls back after it grew
        wait_until(lambda: (client.status().state_age or 0) > 0.1)
        wait_until(lambda: (client.status().state_age or 1) < 0.1)
        world.server.kill()
        wait_until(lambda: not client.status().connected)
        held = client.status().state_age
        time.sleep(0.3)  # (measuring an age that grows: nothing to wait on)
        assert (client.status().state_age or 0) >= (held or 0) + 0.3
        assert client.status().as_dict()["state_age"] is not None


def test_a_namespace_with_no_state_has_no_state_age(world: World) -> None:
    with Client(redis=world.url, namespace="nothing-here") as client:
        assert client.status().state_age is None and client.stale


def test_the_prometheus_collector(world: World) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from configsync.client_metrics import ClientCollector

    def samples(registry: CollectorRegistry) -> dict[str, tuple[dict[str, str], float]]:
        text = generate_latest(registry).decode()
        return {s.name: (s.labels, s.value) for family in text_string_to_metric_families(text)
                for s in family.samples}

    client = Client(redis=world.url, namespace="test")
    registry = CollectorRegistry()
    registry.register(ClientCollector(client))
    before = samples(registry)
    assert before == {"configsync_client_stale": ({"namespace": "test"}, 1.0)}  # no age yet
    with client:
        now = samples(registry)
        assert now["configsync_client_stale"] == ({"namespace": "test"}, 0.0)
        labels, age = now["configsync_client_config_age_seconds"]
        assert labels == {"namespace": "test"} and 0 <= age < 30
        world.server.kill()
        wait_until(lambda: samples(registry)["configsync_client_stale"][1] == 1.0)


def test_the_collector_says_what_to_install_without_prometheus_client() -> None:
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "import configsync.client_metrics")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert "needs prometheus-client: pip install 'configsync[metrics]'" in done.stderr
    plain = subprocess.run([sys.executable, "-c", "import sys; sys.modules['prometheus_client']"
                            " = None\nimport configsync; configsync.Client"],
                           capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr  # the client itself never needs it


def test_one_collector_for_clients_of_several_namespaces(world: World) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from configsync.client_metrics import ClientCollector

    prod = Client(redis=world.url, namespace="test")
    dev = Client(redis=world.url, namespace="test-dev")
    registry = CollectorRegistry()
    collector = ClientCollector(prod)
    registry.register(collector)
    collector.add(dev)
    with prod, dev:
        text = generate_latest(registry).decode()
        stale = {s.labels["namespace"]: s.value for f in text_string_to_metric_families(text)
                 for s in f.samples if s.name == "configsync_client_stale"}
        assert stale == {"test": 0.0, "test-dev": 1.0}  # nothing synced in test-dev
    text = generate_latest(registry).decode()
    assert 'configsync_client_stale{namespace="test"} 1.0' in text  # stopped


# -- issue 17 items 1 and 2: Redis overrules what it does not say; a bad entry stops nothing --

def forged(world: World, agent: str = "a", version: int = 999999,
           temperature: float = 1.99) -> str:
    """A well-formed snapshot with a valid checksum that git never made (a moment's write
    access to Redis is all it takes)."""
    config = {"system_prompt": "Forged.", "model": "gpt-4o", "temperature": temperature}
    return Record(agent, version, checksum(config), config, "f" * 40, "Mallory <m@x>",
                  "2026-01-01T00:00:00Z", "forged", "2026-01-01T00:00:00Z").to_json()


def forged_event(world: World, *agents: tuple[str, int], revision: int | None = None) -> str:
    state = world.daemon.store.state()
    return json.dumps({"type": "applied", "commit": "f" * 40,
                       "revision": int(state["revision"]) + 1 if revision is None else revision,
                       "epoch": state["epoch"], "count": len(agents),
                       "changes": [{"agent_id": a, "version": v, "deleted": False}
                                   for a, v in agents]})


def test_a_forged_version_is_overruled_by_redis_at_the_next_check_and_after_a_restart(
        world: World, tmp_path: Path) -> None:
    """Issue 17.1: one forged snapshot and one `applied` event, then Redis restored exactly.
    main kept v999999 through later checks, a genuine commit and a restart."""
    keys, cache = world.daemon.store.keys, tmp_path / "cache.json"
    genuine = world.redis.hget(keys.current, "a")
    with Client(redis=world.url, namespace="test", check_interval=0.1,
                cache_path=cache) as client:
        revision = client.status().revision
        world.redis.hset(keys.current, "a", forged(world))
        world.redis.publish(keys.changes, forged_event(world, ("a", 999999)))
        wait_until(lambda: client.get("a").version == 999999)  # events are hints: taken...
        world.redis.hset(keys.current, "a", genuine)  # ...and Redis restored exactly
        wait_until(lambda: client.get("a").version == 1)  # the next check overrules it
        status = client.status()
        assert (status.revision, status.stale, client.get("a").config.temperature) == (
            revision, False, 0.7)
        with pytest.raises(VersionNotFoundError):  # no pinned read finds the forgery either
            client.get("a", version=999999)
        world.push("a", 0.3)  # a genuine commit: v2, served
        wait_until(lambda: client.get("a").version == 2)
        wait_until(lambda: {s["agent_id"]: s["version"] for s in json.loads(
            cache.read_text())["snapshots"]}.get("a") == 2)
    # a restart whose cache file holds the forgery: a reachable Redis outranks it
    data = json.loads(cache.read_text())
    data["snapshots"] = [json.loads(forged(world)) if s["agent_id"] == "a" else s
                         for s in data["snapshots"]]
    cache.write_text(json.dumps(data))
    with Client(redis=world.url, namespace="test", cache_path=cache) as client:
        assert client.get("a").version == 2 and client.get("a").config.temperature == 0.3
        assert not client.stale


@pytest.mark.parametrize("change", ["higher_version", "higher_revision", "other_epoch",
                                    "agent_redis_lacks", "lower_version"])
def test_a_cache_file_never_outranks_a_reachable_redis(world: World, tmp_path: Path,
                                                       change: str) -> None:
    cache = tmp_path / "cache.json"
    with Client(redis=world.url, namespace="test", cache_path=cache) as client:
        served = client.status().versions
    data = json.loads(cache.read_text())
    if change == "higher_version":
        data["snapshots"][0] = json.loads(forged(world, data["snapshots"][0]["agent_id"]))
    elif change == "higher_revision":
        data["revision"] += 1000
        data["snapshots"][0] = json.loads(forged(world, data["snapshots"][0]["agent_id"], 50))
    elif change == "other_epoch":
        data["epoch"] = "another-epoch"
        data["snapshots"][0] = json.loads(forged(world, data["snapshots"][0]["agent_id"], 7))
    elif change == "agent_redis_lacks":
        data["snapshots"].append(json.loads(forged(world, "ghost", 3)))
    cache.write_text(json.dumps(data))
    with Client(redis=world.url, namespace="test", cache_path=cache) as client:
        assert client.status().versions == served and not client.stale
        assert all(client.get(a).config.temperature != 1.99 for a in served)


def test_a_forged_snapshot_read_whole_is_repaired_once_redis_is_restored(world: World) -> None:
    """No event at all: a client that started (a full read) while `current` was forged
    still comes back to what Redis serves, although `state` never changed."""
    keys = world.daemon.store.keys
    genuine = world.redis.hget(keys.current, "a")
    world.redis.hset(keys.current, "a", forged(world))
    with Client(redis=world.url, namespace="test", check_interval=0.05) as client:
        assert client.get("a").version == 999999
        world.redis.hset(keys.current, "a", genuine)
        wait_until(lambda: client.get("a").version == 1)
        assert client.get("a").config.temperature == 0.7


def test_a_forged_agent_and_a_forged_higher_revision_leave_nothing_behind(world: World) -> None:
    keys = world.daemon.store.keys
    with Client(redis=world.url, namespace="test", check_interval=0.1) as client:
        revision = client.status().revision
        world.redis.hset(keys.current, "evil", forged(world, "evil", 1))
        world.redis.publish(keys.changes, forged_event(world, ("evil", 1)))
        wait_until(lambda: client.get("evil", default=None) is not None)
        world.redis.hdel(keys.current, "evil")
        wait_until(lambda: client.get("evil", default=None) is None)
        # a revision far ahead, with a forged version, asks for a check: nothing is taken
        world.redis.publish(keys.changes, forged_event(world, ("a", 999999), revision=10**6))
        world.push("a", 0.2)
        wait_until(lambda: client.get("a").version == 2)
        assert client.status().revision == revision + 1


BAD_SNAPSHOTS = {
    "not_json": "{not json",
    "array": "[1, 2]",
    "string": '"b"',
    "missing_fields": '{"agent_id": "b"}',
    "version_a_string": None,
    "version_a_bool": None,
    "config_a_list": None,
    "checksum_wrong": None,
    "another_agents": None,
}


def bad_snapshot(world: World, kind: str) -> str:
    if BAD_SNAPSHOTS[kind] is not None:
        return str(BAD_SNAPSHOTS[kind])
    data = json.loads(forged(world, "b", 5))
    if kind == "version_a_string":
        data["version"] = "5"
    elif kind == "version_a_bool":
        data["version"] = True
    elif kind == "config_a_list":
        data["config"] = ["x"]
    elif kind == "checksum_wrong":
        data["checksum"] = "0" * 64
    elif kind == "another_agents":
        data["agent_id"] = "a"
    return json.dumps(data)


@pytest.mark.parametrize("kind", sorted(BAD_SNAPSHOTS))
def test_a_poisoned_current_entry_is_named_logged_once_and_skipped(
        world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    """Issue 17.2: one non-JSON value in `current` made start() raise, the cache file unserved."""
    keys, cache = world.daemon.store.keys, tmp_path / "cache.json"
    with Client(redis=world.url, namespace="test", cache_path=cache):
        pass  # a cache file holding b v1
    world.redis.hset(keys.current, "b", bad_snapshot(world, kind))
    with caplog.at_level(logging.ERROR, logger="configsync"):
        with Client(redis=world.url, namespace="test", check_interval=0.05) as client:
            assert client.get("a").version == 1 and not client.stale  # the others work
            assert client.get("b", default=None) is None
            assert "b" in client.status().model_errors
            checks = client.holdings.checks
            wait_until(lambda: client.holdings.checks >= checks + 3)
            world.push("a", 0.6)  # and keep following
            wait_until(lambda: client.get("a").version == 2)
        with Client(redis=world.url, namespace="test", cache_path=cache) as client:
            assert client.get("b").version == 1  # the last known good serves for b
    logged = [r.getMessage() for r in caplog.records if "event=bad_snapshot" in r.getMessage()]
    assert len(logged) == 2 and all("agent=b" in line for line in logged), logged


def test_a_poisoned_state_revision_or_event_stops_nothing(world: World,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    keys = world.daemon.store.keys
    with caplog.at_level(logging.ERROR, logger="configsync"), Client(
            redis=world.url, namespace="test", check_interval=0.05) as client:
        for junk in ("not json", "[1]", '{"type": "applied", "changes": "a"}', "7"):
            world.redis.publish(keys.changes, junk)
        world.redis.hset(keys.state, "last_error", json.dumps({"commit": "x", "errors": "9"}))
        world.redis.publish(keys.changes, json.dumps({"type": "rejected"}))
        checks = client.holdings.checks
        wait_until(lambda: client.holdings.checks >= checks + 3)
        assert client.status().last_error is None
        revision = world.redis.hget(keys.state, "revision")
        world.redis.hset(keys.state, "revision", "lots")
        checks = client.holdings.checks
        wait_until(lambda: client.holdings.checks >= checks + 3)
        assert client.get("a").version == 1
        world.redis.hset(keys.state, "revision", revision or b"0")
        world.push("a", 0.6)
        wait_until(lambda: client.get("a").version == 2)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("event=bad_state" in m for m in messages) == 2  # last_error, then revision
    assert any("event=bad_event" in m for m in messages)


@pytest.mark.parametrize("kind", ["not_json", "version_a_string", "checksum_wrong",
                                  "another_agents"])
def test_a_poisoned_history_entry_is_a_clear_error_for_a_pinned_read(world: World,
                                                                     kind: str) -> None:
    keys = world.daemon.store.keys
    world.redis.hset(keys.history("b"), "5", bad_snapshot(world, kind))
    with Client(redis=world.url, namespace="test") as client:
        with pytest.raises(CorruptDataError) as info:
            client.get("b", version=5)
        assert str(info.value).startswith("configsync:{test}:history:b field 5: ")
        assert "\n" not in str(info.value)
        assert client.get("b").version == 1


def test_a_callback_registered_after_start_hears_the_agents_held(world: World) -> None:
    # issue 17: the README's pattern (register inside `with`) heard nothing of the agents held
    every: list[tuple[str, int | None]] = []
    one: list[tuple[str, int | None]] = []
    later: list[tuple[str, int | None]] = []
    with Client(redis=world.url, namespace="test") as client:
        client.on_change(lambda agent_id, snap: every.append((agent_id, snap and snap.version)))
        client.on_change(lambda agent_id, snap: one.append((agent_id, snap and snap.version)),
                         agent_id="b")
        client.on_change(lambda agent_id, snap: later.append((agent_id, snap and snap.version)),
                         replay=False)
        wait_until(lambda: len(every) == 2 and len(one) == 1)
        assert every == [("a", 1), ("b", 1)] and one == [("b", 1)] and later == []
        world.push("a", 1.5)
        wait_until(lambda: len(every) == 3 and len(later) == 1)
        assert every[2] == ("a", 2) and later == [("a", 2)] and one == [("b", 1)]


def test_a_callback_registered_before_start_is_not_told_twice(world: World) -> None:
    seen: list[tuple[str, int | None]] = []
    client = Client(redis=world.url, namespace="test")
    client.on_change(lambda agent_id, snap: seen.append((agent_id, snap and snap.version)))
    with client:
        wait_until(lambda: len(seen) == 2)
        world.push("b", 0.3, text="system_prompt: B\nmodel: gpt-4o\n")
        wait_until(lambda: len(seen) == 3)
    assert sorted(seen[:2]) == [("a", 1), ("b", 1)] and seen[2:] == [("b", 2)]


def test_a_change_the_replay_already_told_is_not_told_again(world: World) -> None:
    """The race in one step: the follower thread took a change, a callback was registered
    (and replayed the new version) before the thread handed the change to callbacks."""
    from configsync.holdings import Change

    with Client(redis=world.url, namespace="test") as client:
        held = client.get("a")
        late = lambda agent_id, snap: None  # noqa: E731
        client.on_change(late)
        due = client.due_callbacks([Change("a", held)])
        assert late not in [callback for callback, _ in due]
        newer = client.due_callbacks([Change("a", held)])  # (the note is used once, then gone)
        assert late in [callback for callback, _ in newer]


def test_with_a_cache_file_callbacks_hear_the_same_before_or_after_start(
        world: World, tmp_path: Path) -> None:
    """The cache file gives the client its agents before the first read: a callback hears of
    them once whenever it was registered, then of what changed since (issue 17)."""
    cache = tmp_path / "cache.json"
    with Client(redis=world.url, namespace="test", cache_path=cache):
        pass
    world.push("a", 1.1)  # a change the cache file does not have
    before: list[tuple[str, int | None]] = []
    after: list[tuple[str, int | None]] = []
    client = Client(redis=world.url, namespace="test", cache_path=cache)
    client.on_change(lambda agent_id, snap: before.append((agent_id, snap and snap.version)))
    with client:
        client.on_change(lambda agent_id, snap: after.append((agent_id, snap and snap.version)))
        wait_until(lambda: len(before) == 3 and len(after) == 2)
        assert before == [("a", 1), ("b", 1), ("a", 2)]  # the cache's, then the change
        assert after == [("a", 2), ("b", 1)]  # what is held when it was registered


def test_registering_while_changes_stream_in_never_tells_a_version_twice(world: World) -> None:
    """on_change's replay races the thread that applies changes: every callback hears the
    versions of ``a`` once each, in order, up to the last, whenever it was registered."""
    heard: list[list[int]] = []
    with Client(redis=world.url, namespace="test") as client:
        pusher = threading.Thread(target=lambda: [world.push("a", t / 10) for t in range(1, 9)])
        pusher.start()
        while pusher.is_alive():
            versions: list[int] = []
            heard.append(versions)
            client.on_change(lambda _a, snap, v=versions: v.append(snap.version) if snap
                             else None, agent_id="a")
            time.sleep(0.01)  # (spreading registrations over the pushes: nothing to wait on)
        pusher.join()
        wait_until(lambda: all(v and v[-1] == 9 for v in heard))
    for versions in heard:  # (a version skipped after a lost event is allowed: one call)
        assert versions == sorted(set(versions)) and versions[-1] == 9, versions


@pytest.mark.slow  # waits out a real silence limit (3 × 0.05 s + 10 s)
def test_a_dead_daemon_is_said_by_status_metrics_and_configsync_status(
        world: World, tmp_path: Path) -> None:
    """Issue 17 item 12: after the daemon is killed, clients said stale=False and nothing else
    for ever. The heartbeat's age and the verdict now say it, in status(), in the collector
    and in `configsync status`; a daemon that comes back is seen again."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from configsync.client_metrics import ClientCollector

    def gauges() -> dict[str, float]:
        text = generate_latest(registry).decode()
        return {s.name: s.value for f in text_string_to_metric_families(text)
                for s in f.samples}

    daemon = spawn_daemon(world.remote, world.url, "test", tmp_path / "daemon", interval=0.05)
    try:
        wait_until(lambda: world.redis.hget("configsync:{test}:state", "heartbeat_every")
                   == b"0.05")
        registry = CollectorRegistry()
        with Client(redis=world.url, namespace="test") as client, \
                Client(redis=world.url, namespace="test", check_interval=0.2) as checking:
            registry.register(ClientCollector(client))
            first = client.status()
            assert (first.daemon_alive, first.connected, first.stale) == (True, True, False)
            assert first.heartbeat_at and 0 <= (first.heartbeat_age or 0) < 10.15
            assert gauges()["configsync_client_daemon_alive"] == 1.0
            daemon.kill()
            daemon.wait()
            wait_until(lambda: client.status().daemon_alive is False)
            dead = client.status()
            assert (dead.connected, dead.stale) == (True, False)  # Redis is fine: no daemon
            assert (dead.heartbeat_age or 0) > 10.15
            metrics = gauges()
            assert metrics["configsync_client_daemon_alive"] == 0.0
            assert metrics["configsync_client_daemon_heartbeat_age_seconds"] > 10.15
            assert dead.as_dict()["daemon_alive"] is False
            out = subprocess.run(
                [sys.executable, "-m", "configsync", "status", "--repo", str(world.remote.work),
                 "--redis", world.url, "--namespace", "test"],
                capture_output=True, text=True, timeout=60)
            assert "no daemon is writing this namespace (silent beyond 10.15s; is `configsync " \
                   "sync` running?)" in out.stdout, out.stdout + out.stderr
            wait_until(lambda: checking.status().daemon_alive is False)
            daemon = spawn_daemon(world.remote, world.url, "test", tmp_path / "daemon",
                                  interval=0.05)
            wait_until(lambda: checking.status().daemon_alive is True)
    finally:
        daemon.kill()
        daemon.wait()


FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"  # (Python 3.12+)


def _in_forked_child(client: Client, heard: list[int], ready: Any, pushed: Any) -> dict[str, Any]:
    """What a forked child sees: the held configs at once, then the commit made after the
    fork (``seen_at``: CLOCK_MONOTONIC, the same clock in both processes)."""
    forked = time.monotonic()
    first = client.status()
    seen: dict[str, Any] = {
        "version_at_fork": client.get("a").version, "instance_id": first.instance_id}
    while not client.status().connected and time.monotonic() < forked + 20:
        time.sleep(0.001)
    seen["following_after"] = time.monotonic() - forked  # its own read of Redis done
    ready()
    pushed()
    deadline = time.monotonic() + 20
    while client.get("a").version != 2 and time.monotonic() < deadline:
        time.sleep(0.001)  # (a read loop, as an agent's is)
    seen["seen_at"] = time.monotonic()
    while heard[-1:] != [2] and time.monotonic() < deadline:
        time.sleep(0.005)
    status = client.status()
    seen.update(version=client.get("a").version, heard=heard, connected=status.connected,
                stale=status.stale, revision=status.revision)
    return seen


@pytest.mark.filterwarnings(FORK_WARNING)
def test_a_client_forked_after_start_follows_in_the_child(world: World) -> None:
    """Issue 17 item 9: a child forked after start() (gunicorn --preload, Celery prefork)
    kept the boot-time version for ever while status() said connected and fresh. The child
    follows again: new connections, new threads, the held configs kept meanwhile."""
    heard: list[int] = []
    with Client(redis=world.url, namespace="test") as client:
        client.on_change(lambda _a, snap: heard.append(snap.version) if snap else None,
                         agent_id="a", replay=False)
        parent_id = client.status().instance_id
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 3
            try:
                with os.fdopen(to_parent_w, "w") as out, os.fdopen(to_child_r) as inp:
                    seen = _in_forked_child(
                        client, heard, lambda: (out.write("ready\n"), out.flush()),
                        inp.readline)
                    out.write(json.dumps(seen) + "\n")
                code = 0
            finally:
                os._exit(code)
        os.close(to_child_r)
        os.close(to_parent_w)
        with os.fdopen(to_child_w, "w") as out, os.fdopen(to_parent_r) as inp:
            assert inp.readline() == "ready\n"
            world.remote.commit_push("a 1.5", {"agents/a.yaml": A + "temperature: 1.5\n"})
            out.write("pushed\n")
            out.flush()
            syncing = time.monotonic()
            world.daemon.sync()  # fetch, write, publish
            synced = time.monotonic()
            seen = json.loads(inp.readline())
        assert os.waitpid(pid, 0)[1] == 0
        print(f"\nfork: the child read Redis {seen['following_after']:.3f} s after the fork; "
              f"the daemon's sync took {synced - syncing:.3f} s; the child held the commit "
              f"{seen['seen_at'] - synced:+.3f} s after it returned")
        assert seen["version_at_fork"] == 1 and seen["instance_id"] != parent_id
        assert (seen["version"], seen["heard"], seen["connected"], seen["stale"],
                seen["revision"]) == (2, [2], True, False, 2)
        wait_until(lambda: client.get("a").version == 2)  # the parent follows as before
        assert client.status().instance_id == parent_id


def _multiprocessing_child(client: Client, conn: Any) -> None:
    conn.send(_in_forked_child(client, [2], lambda: conn.send("ready"), conn.recv))


@pytest.mark.filterwarnings(FORK_WARNING)
def test_multiprocessing_fork_children_follow_too(world: World) -> None:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with Client(redis=world.url, namespace="test") as client:
        pipes = [context.Pipe() for _ in range(2)]
        children = [context.Process(target=_multiprocessing_child, args=(client, child))
                    for _, child in pipes]
        for child in children:
            child.start()
        assert [parent.recv() for parent, _ in pipes] == ["ready", "ready"]
        world.remote.commit_push("a 1.5", {"agents/a.yaml": A + "temperature: 1.5\n"})
        for parent, _ in pipes:
            parent.send("pushed")
        world.daemon.sync()
        synced = time.monotonic()
        seen = [parent.recv() for parent, _ in pipes]
        print("\nmultiprocessing: children held the commit "
              + ", ".join(f"{s['seen_at'] - synced:+.3f} s" for s in seen)
              + " after the daemon's sync returned")
        for child in children:
            child.join(30)
        assert [child.exitcode for child in children] == [0, 0]
        assert [(s["version"], s["connected"], s["stale"]) for s in seen] == [
            (2, True, False)] * 2
        assert len({s["instance_id"] for s in seen} | {client.status().instance_id}) == 3


@pytest.mark.filterwarnings(FORK_WARNING)
def test_a_fork_that_runs_no_python_hook_is_caught_by_the_pid_check(world: World) -> None:
    """A C-level fork runs no os.register_at_fork hook, so the interpreter in the child was
    never told it forked (starting a thread there can hang for good): status() notices the new
    pid and the client refuses loudly (stale, disconnected, saying why; a read that would go to
    Redis raises ClientForkedError), starts nothing, and the configs held stay readable."""
    import ctypes

    with Client(redis=world.url, namespace="test") as client:
        to_parent_r, to_parent_w = os.pipe()
        pid = ctypes.PyDLL(None).fork()  # (with the GIL held; no PyOS_AfterFork_Child)
        if pid == 0:
            code = 3
            try:
                with os.fdopen(to_parent_w, "w") as out:
                    status = client.status()  # the pid check
                    try:
                        client.get("a", version=7)
                        refused = "no"
                    except ClientForkedError as exc:
                        refused = str(exc)
                    held = client.get("a").version
                    client.stop()  # (joins none of the parent's threads)
                    out.write(json.dumps([held, status.connected,
                                          status.stale, status.connection_error,
                                          refused]) + "\n")
                code = 0
            finally:
                os._exit(code)
        os.close(to_parent_w)
        with os.fdopen(to_parent_r) as inp:
            seen = json.loads(inp.readline())
        assert os.waitpid(pid, 0)[1] == 0
        assert seen[:3] == [1, False, True]
        assert seen[3] == seen[4] and "ran no Python at-fork hook" in seen[3]
        assert client.status().connected  # the parent follows on


def _subscribe_refusals(admin: redis.Redis) -> int:
    return sum(int(entry.get("count", 0)) for entry in admin.acl_log()
               if entry.get("object") == "subscribe")


def test_a_user_refused_subscribe_is_said_once_not_a_reconnect_loop(
        redis_server: RedisServer, remote: Remote, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 17 (red team, url2 item 1): a user without +subscribe logged `disconnected` then
    `reconnected`, over and over, as if the network blinked. Now: one `refused` error naming
    the cause, retries backing off, never `reconnected`, and status() says why; what Redis
    holds is still read (stale) at each retry."""
    subprocess.run([sys.executable, "-m", "configsync", "sync", "--once", "--repo", remote.url,
                    "--redis", redis_server.url, "--workdir", str(tmp_path / "wd")],
                   check=True, capture_output=True)
    monkeypatch.setattr("configsync.client.REFUSED_WAIT", 0.05)
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">pw", "~*", "&*", "-@all",
                          "+@read", "+ping", "+hello", "+client|setname")
    url = redis_server.url.replace("redis://", "redis://reader:pw@")
    with caplog.at_level(logging.INFO, logger="configsync"), \
            Client(redis=url, namespace="test") as client:
        wait_until(lambda: _subscribe_refusals(admin) >= 3)
        status = client.status()
        assert client.get("a").version == 1
    assert not status.connected and status.stale
    assert "no permissions" in (status.connection_error or "")
    assert caplog.text.count("event=refused") == 1
    assert "+subscribe" in caplog.text and "event=reconnected" not in caplog.text
    admin.close()


# -- issue 17: the red team's client findings (1-4, 6, 7) -------------------------------------

def test_a_forged_history_version_read_pinned_is_dropped_at_the_full_check(world: World) -> None:
    """Red team 1: a forged older version (valid checksum) read through get(version=) was kept for
    the client's life; restored exactly, it must be gone within FULL_CHECK_EVERY checks."""
    keys = world.daemon.store.keys
    world.push("a", 0.3)  # a is v2 now; the history keeps v1
    genuine = world.redis.hget(keys.history("a"), "1")
    world.redis.hset(keys.history("a"), "1", forged(world, "a", 1))
    with Client(redis=world.url, namespace="test", check_interval=0.05) as client:
        assert client.get("a", version=1).config.temperature == 1.99  # a pinned conversation
        world.redis.hset(keys.history("a"), "1", genuine)  # restored exactly
        wait_until(lambda: client.get("a", version=1).config.temperature == 0.7, timeout=10)
        assert client.get("a").version == 2 and client.get("a", version=2).version == 2


class Exploding(AgentConfig):
    """A model whose validator raises what pydantic does not wrap: start() raises."""

    @model_validator(mode="after")
    def boom(self) -> Exploding:
        raise RuntimeError("boom")


def configsync_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("configsync-")]


def test_a_start_that_raises_stops_everything_it_started(world: World) -> None:
    """Red team 2: `with Client(...)` whose start raised left a configsync-callbacks thread
    behind each time (and its connections): __exit__ never runs then."""
    threads = configsync_threads()
    connections = len(world.redis.client_list())
    for _ in range(5):
        client = Client(redis=world.url, namespace="test", model=Exploding)
        with pytest.raises(RuntimeError, match="boom"), client:
            pass
        with pytest.raises(ClientClosedError):  # a failed start leaves it stopped
            client.get("a")
    wait_until(lambda: configsync_threads() == threads, timeout=10)
    wait_until(lambda: len(world.redis.client_list()) == connections, timeout=10)


def test_the_hooks_fire_for_a_start_that_finds_redis_down(world: World) -> None:
    """Red team 3: started with Redis down, the client logged event=disconnected but never called
    on_disconnect, nor on_reconnect at its first successful connection. The hooks register
    as methods too (client.on_disconnect(...) raised AttributeError)."""
    hooks: list[str] = []
    world.server.kill()
    client = Client(redis=world.url, namespace="test",
                    on_disconnect=lambda exc: hooks.append("down"))
    remove = client.on_reconnect(lambda: hooks.append("up"))
    client.on_disconnect(lambda exc: hooks.append("down2"))
    with client:
        wait_until(lambda: hooks == ["down", "down2"])
        assert not client.status().connected
        world.server.start()
        wait_until(lambda: client.status().connected)
        wait_until(lambda: hooks == ["down", "down2", "up"])  # once an outage, not per try
        remove()
        world.server.kill()
        wait_until(lambda: hooks == ["down", "down2", "up", "down", "down2"])
        world.server.start()
        wait_until(lambda: client.status().connected)
        world.push("a", 0.3)
        wait_until(lambda: getattr(client.get("a", default=None), "version", 0) == 2)
    assert hooks == ["down", "down2", "up", "down", "down2"]  # `up` was removed


@pytest.mark.parametrize("genuine_change", ["update", "delete"])
def test_a_genuine_commit_overrules_a_forgery_read_at_start_at_once(
        world: World, genuine_change: str) -> None:
    """Red team 4: current[a] forged at a higher version when a client starts, then restored: a
    genuine commit to a waited for the 10-check full read (5 min at the default 30 s). Its
    event names a, so the check right after it compares a with Redis."""
    keys = world.daemon.store.keys
    genuine = world.redis.hget(keys.current, "a")
    world.redis.hset(keys.current, "a", forged(world, "a", 51))
    with Client(redis=world.url, namespace="test", check_interval=3600) as client:
        assert client.get("a").version == 51
        world.redis.hset(keys.current, "a", genuine)
        if genuine_change == "update":
            world.push("a", 0.3)
            wait_until(lambda: client.get("a").version == 2, timeout=10)
            assert client.get("a").config.temperature == 0.3
        else:
            world.remote.delete("agents/a.yaml")
            world.remote.commit_push("drop a")
            world.daemon.sync()
            wait_until(lambda: client.get("a", default=None) is None, timeout=10)
        assert client.status().revision == int(world.daemon.store.state()["revision"])


def test_a_key_of_the_wrong_type_is_corrupt_data(world: World) -> None:
    """Red team 6 (WRONGTYPE): a history key turned into a string made get(version=) raise
    redis' ResponseError; a state of the wrong type is named, and what is held serves."""
    keys = world.daemon.store.keys
    world.push("a", 0.3)
    with Client(redis=world.url, namespace="test", check_interval=0.05) as client:
        world.redis.delete(keys.history("a"))
        world.redis.set(keys.history("a"), "x")
        with pytest.raises(CorruptDataError, match=re.escape(keys.history("a")) + " holds a "
                                                   "string, not the hash"):
            client.get("a", version=1)
        world.redis.rename(keys.state, "saved-state")
        world.redis.set(keys.state, "x")
        wait_until(lambda: keys.state in (client.status().connection_error or ""))
        assert "WRONGTYPE" in str(client.status().connection_error)
        assert client.get("a").version == 2
        world.redis.delete(keys.state)
        world.redis.rename("saved-state", keys.state)
        wait_until(lambda: client.status().connected and not client.stale)


def test_a_bad_cache_entry_is_named_as_the_cache_files(world: World, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    """Red team 7: a corrupt cache-file snapshot was logged as `version 1 in Redis` or
    `current entry in Redis`."""
    cache = tmp_path / "cache.json"
    with Client(redis=world.url, namespace="test", cache_path=cache):
        pass
    data = json.loads(cache.read_text())
    by_agent = {s["agent_id"]: s for s in data["snapshots"]}
    by_agent["a"]["checksum"] = "0" * 64
    by_agent["b"]["version"] = "one"
    cache.write_text(json.dumps(data))
    with caplog.at_level(logging.ERROR, logger="configsync"), Client(
            redis=f"redis://127.0.0.1:{free_port()}/0", namespace="test",
            cache_path=cache) as client:
        errors = client.status().model_errors
    assert sorted(errors) == ["a", "b"]
    assert errors["a"].startswith(f"version 1 in the cache file {cache}: ")
    assert errors["b"].startswith(f"snapshot in the cache file {cache}: ")
    assert "in Redis" not in caplog.text and caplog.text.count("event=bad_snapshot") == 2
    caplog.clear()
    data["revision"] = "x"  # was logged as the Redis state's field, with a hint to delete it
    cache.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="configsync"), Client(
            redis=f"redis://127.0.0.1:{free_port()}/0", namespace="test",
            cache_path=cache) as client:
        assert client.status().versions == {}
    assert f"event=cache_unreadable path={cache} error=\"its revision is 'x', not a number\"" \
        in caplog.text and "state" not in caplog.text




def test_a_repeated_client_error_is_one_line_after_its_first_traceback(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Red team of issue 17, item 5: the follow loop's retry of one unexpected error logged
    its traceback at every retry; now once, then one line while it repeats."""
    with caplog.at_level(logging.ERROR, logger="configsync"), Client(
            redis=world.url, namespace="test") as client:
        for _ in range(3):
            client.client_error(KeyError("commit"))
        client.client_error(ValueError("other\nline"))
    said = [r for r in caplog.records if "client_error" in r.getMessage()]
    assert [bool(r.exc_info) for r in said] == [True, False, False, True]
    assert "repeated=True" in said[1].getMessage() and "\n" not in said[3].getMessage()
