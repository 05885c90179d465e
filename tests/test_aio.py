"""AsyncClient: the Client's scenarios, on asyncio, against a real redis-server and daemon."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from configsync import (
    AsyncClient,
    ClientClosedError,
    ClientForkedError,
    Snapshot,
    VersionNotFoundError,
)
from configsync.embedded import free_port
from configsync.errors import CorruptDataError
from configsync.snapshot import Record, checksum
from configsync.store import Write

from .conftest import Remote, spawn_daemon, wait_until
from .test_client import World


@pytest.fixture
def world(tmp_path: Path, remote: Remote) -> Iterator[World]:
    w = World(tmp_path, remote)
    yield w
    w.close()


async def until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


async def off_loop(func: Callable[[], object]) -> None:
    """Run blocking test set-up (git, the daemon) without stalling the client's event loop."""
    await asyncio.to_thread(func)


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())


def test_get_and_callbacks(world: World) -> None:
    async def scenario() -> None:
        plain: list[int] = []
        awaited: list[int] = []

        async def async_callback(agent_id: str, snap: Snapshot | None) -> None:
            await asyncio.sleep(0)
            awaited.append(snap.version if snap else -1)

        async with AsyncClient(redis=world.url, namespace="test") as client:
            assert (client.get("a").version, client.stale) == (1, False)
            client.on_change(lambda agent_id, snap: plain.append(snap.version if snap else -1),
                             agent_id="a", replay=False)
            client.on_change(async_callback, agent_id="a", replay=False)
            await off_loop(lambda: world.push("a", 1.5))
            await until(lambda: client.get("a").version == 2 and awaited == [2])
            assert plain == [2] and client.get("a").config.temperature == 1.5

    run(scenario)


def test_a_callback_raising_cancelled_error_does_not_end_the_client(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        calls: list[int] = []

        async def cancels(agent_id: str, snap: Snapshot | None) -> None:
            calls.append(1)
            raise asyncio.CancelledError

        with caplog.at_level(logging.ERROR, logger="configsync"):
            async with AsyncClient(redis=world.url, namespace="test") as client:
                client.on_change(cancels, replay=False)
                await off_loop(lambda: world.push("a", 0.1))
                await until(lambda: calls == [1])
                await off_loop(lambda: world.push("a", 0.2))
                await until(lambda: client.get("a").version == 3 and calls == [1, 1])
        assert "event=callback_failed" in caplog.text

    run(scenario)


def test_redis_down_keeps_serving_and_catches_up(world: World, tmp_path: Path) -> None:
    async def scenario() -> None:
        hooks: list[str] = []
        async with AsyncClient(redis=world.url, namespace="test",
                               cache_path=tmp_path / "cache.json",
                               on_disconnect=lambda exc: hooks.append("down"),
                               on_reconnect=lambda: hooks.append("up")) as client:
            await off_loop(world.server.kill)
            await until(lambda: not client.status().connected)
            assert client.get("a").version == 1 and client.stale
            await off_loop(world.server.start)
            await off_loop(lambda: world.push("a", 1.0))
            await until(lambda: client.get("a").version == 2)
            await until(lambda: not client.stale)
            assert hooks == ["down", "up"]

    run(scenario)


def test_cold_start_from_cache_and_corrupt_cache(world: World, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache.json"

    async def scenario() -> None:
        async with AsyncClient(redis=world.url, namespace="test", cache_path=cache) as client:
            assert client.get("a").version == 1
        await off_loop(world.server.kill)
        async with AsyncClient(redis=world.url, namespace="test", cache_path=cache) as client:
            assert client.get("a").version == 1 and client.stale
            await off_loop(world.server.start)
            await until(lambda: not client.stale)
        cache.write_text("not json")
        async with AsyncClient(redis=world.url, namespace="test", cache_path=cache) as client:
            assert client.get("b").version == 1

    with caplog.at_level(logging.WARNING, logger="configsync"):
        run(scenario)
    assert "event=cache_unreadable" in caplog.text


def test_pinned_versions(world: World) -> None:
    async def scenario() -> None:
        async with AsyncClient(redis=world.url, namespace="test") as client:
            pinned = client.get("a")
            for i in range(1, 6):
                await off_loop(lambda i=i: world.push("a", i / 10))  # type: ignore[misc]
            await until(lambda: client.get("a").version == 6)
            assert await client.get_version("a", 1) is pinned
        async with AsyncClient(redis=world.url, namespace="test") as fresh:
            with pytest.raises(KeyError, match="get_version"):
                fresh.get("a", version=5)  # not held yet: no network in get()
            assert (await fresh.get_version("a", 5)).version == 5
            assert fresh.get("a", version=5).version == 5  # kept after the fetch
            with pytest.raises(VersionNotFoundError):
                await fresh.get_version("a", 1)

    run(scenario)


def test_lost_pubsub_messages_and_late_events(world: World) -> None:
    async def scenario() -> None:
        store = world.daemon.store
        async with AsyncClient(redis=world.url, namespace="test",
                               check_interval=0.2) as client:
            state = store.state()
            old = store.current()["a"]
            config = {**old.config, "temperature": 1.9}
            record = Record("a", 2, checksum(config), config, "c2",
                            "X <x@y>", old.committed_at, "silent", old.synced_at)
            store.commit_transaction(Write({"seen": "c2", "commit": "c2",
                                            "revision": str(int(state["revision"]) + 1)},
                                           upserts=[record]), expected_seen=state["seen"])
            await until(lambda: client.get("a").version == 2)
            world.redis.publish(store.keys.changes, json.dumps({
                "type": "updated", "agent_id": "a", "version": 1, "checksum": "x",
                "commit": "c", "revision": 1, "epoch": state["epoch"]}))
            await asyncio.sleep(0.3)
            assert client.get("a").version == 2

    run(scenario)


@pytest.mark.slow  # a stress or scale test: in .ci/run, not the quick subset
def test_concurrent_reads_from_many_tasks(world: World) -> None:
    async def scenario() -> None:
        async with AsyncClient(redis=world.url, namespace="test") as client:
            done = asyncio.Event()

            async def reader() -> int:
                last, reads = 0, 0
                while not done.is_set():
                    version = client.get("a").version
                    assert version >= last
                    last, reads = version, reads + 1
                    await asyncio.sleep(0.001 if reads % 100 == 0 else 0)
                return reads

            readers = [asyncio.create_task(reader()) for _ in range(20)]
            for i in range(1, 6):
                await off_loop(lambda i=i: world.push("a", i / 10))  # type: ignore[misc]
            await until(lambda: client.get("a").version == 6)
            done.set()
            assert all(reads > 0 for reads in await asyncio.gather(*readers))

    run(scenario)


def test_status_fleet_and_closed(world: World) -> None:
    async def scenario() -> None:
        client = AsyncClient(redis=world.url, namespace="test", report_interval=0.2,
                             instance_id="worker-9")
        key = world.daemon.store.keys.client("worker-9")
        async with client:
            await until(lambda: world.redis.exists(key))
            assert json.loads(world.redis.get(key) or b"{}")["versions"] == {"a": 1, "b": 1}
            assert client.status().connected
        assert not world.redis.exists(key)
        with pytest.raises(ClientClosedError):
            await client.start()

    run(scenario)


def test_stop_keeps_the_callers_cancellation(world: World) -> None:
    """Issue 9.3: AsyncClient.stop() swallowed the CancelledError meant for its caller."""
    async def main() -> None:
        client = await AsyncClient(redis=world.url, namespace="test").start()
        started = asyncio.Event()

        async def stuck(agent_id: str, snap: Snapshot | None) -> None:
            started.set()
            await asyncio.Event().wait()  # stop() waits for the callbacks to finish

        client.on_change(stuck)
        await off_loop(lambda: world.push("a", 0.1))
        await asyncio.wait_for(started.wait(), 30)
        stopping = asyncio.create_task(client.stop())
        await asyncio.sleep(0.2)  # inside stop(), waiting for the callbacks
        assert not stopping.done()
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        await asyncio.sleep(0)
        assert client.closed and client._task is not None and client._task.done()
    run(main)


def test_callbacks_run_in_their_own_task(world: World) -> None:
    """A slow coroutine callback stalls neither updates nor reads."""
    async def main() -> None:
        release = asyncio.Event()
        names: list[str] = []

        async def slow(agent_id: str, snap: Snapshot | None) -> None:
            task = asyncio.current_task()
            names.append(task.get_name() if task else "")
            await release.wait()

        async with AsyncClient(redis=world.url, namespace="test") as client:
            client.on_change(slow, agent_id="a", replay=False)
            await off_loop(lambda: world.push("a", 0.1))
            await until(lambda: names == ["configsync-callbacks"])
            await off_loop(lambda: world.push("a", 0.2))
            await until(lambda: client.get("a").version == 3)
            assert client.get("nobody", default=None) is None
            release.set()
            await until(lambda: len(names) == 2)
    run(main)


def test_stop_from_a_callback(world: World) -> None:
    """Red team: `await client.stop()` inside an async callback waited for its own task."""
    async def main() -> None:
        client = AsyncClient(redis=world.url, namespace="test")
        done: list[str] = []

        async def stop_now(agent_id: str, snap: Snapshot | None) -> None:
            await client.stop()
            done.append(agent_id)

        client.on_change(stop_now, agent_id="a")
        await client.start()  # its first read is a change for every agent
        await until(lambda: done == ["a"])
        assert client.closed
    run(main)


def test_status_says_how_old_the_newest_state_read_is(world: World) -> None:
    async def scenario() -> None:
        client = AsyncClient(redis=world.url, namespace="test", check_interval=0.2)
        assert client.status().state_age is None
        async with client:
            first = client.status().state_age
            assert first is not None and 0 <= first < 5
            await until(lambda: (client.status().state_age or 0) > 0.1)
            await until(lambda: (client.status().state_age or 1) < 0.1)  # read again

    run(scenario)


def test_the_prometheus_collector_reads_an_async_client(world: World) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from configsync.client_metrics import ClientCollector

    async def scenario() -> None:
        async with AsyncClient(redis=world.url, namespace="test") as client:
            registry = CollectorRegistry()
            registry.register(ClientCollector(client))
            text = generate_latest(registry).decode()
            assert 'configsync_client_stale{namespace="test"} 0.0' in text
            assert 'configsync_client_config_age_seconds{namespace="test"} ' in text

    run(scenario)


def test_wait_for_change(world: World) -> None:
    async def scenario() -> None:
        async with AsyncClient(redis=world.url, namespace="test") as client:
            held = client.get("a").checksum
            assert await client.wait_for_change("a", {held}, timeout=0.2) is False
            assert await client.wait_for_change("a", {"other"}, timeout=5) is True  # at once
            assert await client.wait_for_change("nobody", {held}, timeout=5) is True
            waiting = asyncio.ensure_future(client.wait_for_change("a", {held}, timeout=30))
            await asyncio.sleep(0)
            assert not waiting.done()
            await off_loop(lambda: world.push("a", 1.5))
            assert await waiting is True
            assert client.get("a").checksum != held
            assert client.callbacks == []  # each wait removed its callback

    run(scenario)


# -- issue 17 items 1 and 2, on asyncio (the same ClientCore/Holdings rules) ------------------

@pytest.mark.slow  # two clients, a commit and a restart
def test_a_forged_version_is_overruled_and_a_poisoned_entry_skipped(
        world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from .test_client import bad_snapshot, forged, forged_event
    keys, cache = world.daemon.store.keys, tmp_path / "cache.json"
    genuine = world.redis.hget(keys.current, "a")

    async def scenario() -> None:
        async with AsyncClient(redis=world.url, namespace="test", check_interval=0.05,
                               cache_path=cache) as client:
            world.redis.hset(keys.current, "a", forged(world))
            world.redis.publish(keys.changes, forged_event(world, ("a", 999999)))
            await until(lambda: client.get("a").version == 999999)
            world.redis.hset(keys.current, "a", genuine)
            await until(lambda: client.get("a").version == 1)
            assert not client.stale and client.get("a").config.temperature == 0.7
            with pytest.raises(VersionNotFoundError):
                await client.get_version("a", 999999)
        world.redis.hset(keys.current, "b", bad_snapshot(world, "not_json"))
        world.redis.hset(keys.history("b"), "9", bad_snapshot(world, "checksum_wrong"))
        async with AsyncClient(redis=world.url, namespace="test", check_interval=0.05,
                               cache_path=cache) as client:
            assert client.get("a").version == 1 and client.get("b").version == 1  # cache's b
            assert "b" in client.status().model_errors and not client.stale
            with pytest.raises(CorruptDataError):
                await client.get_version("b", 9)
            await off_loop(lambda: world.push("a", 0.6))
            await until(lambda: client.get("a").version == 2)

    with caplog.at_level(logging.ERROR, logger="configsync"):
        run(scenario)
    assert sum("event=bad_snapshot agent=b" in r.getMessage() for r in caplog.records) == 1


def test_a_bad_snapshot_and_a_forged_event_are_logged_once_never_in_a_loop(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Red team's item 5: a bad snapshot and an event whose version forges a header line
    logged ``client_error`` with a traceback again and again; now each is said once, the
    event leads to a check, and a real commit is taken."""
    keys = world.daemon.store.keys
    state = world.daemon.store.state()
    forged = json.dumps({"type": "applied", "commit": "f" * 40, "epoch": state["epoch"],
                         "revision": int(state["revision"]) + 1, "changes": [
                             {"agent_id": "b", "version": "3\r\nX-Evil: 1", "deleted": False}]})

    async def scenario() -> None:
        async with AsyncClient(redis=world.url, namespace="test", check_interval=0.05) as client:
            world.redis.hset(keys.current, "b", '{"agent_id": "b", "version": "x"}')
            await until(lambda: world.redis.pubsub_numsub(keys.changes)[0][1] == 1)
            for _ in range(5):
                world.redis.publish(keys.changes, forged)
                world.redis.xadd(keys.events, {"event": forged})
            await until(lambda: any("event=bad_event" in r.getMessage()
                                    for r in caplog.records))
            await off_loop(lambda: world.push("a", 0.6))
            await until(lambda: client.get("a").version == 2)
            assert client.get("b").version == 1

    with caplog.at_level(logging.INFO, logger="configsync"):
        run(scenario)
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "client_error" in m]
    assert not [r for r in caplog.records if r.exc_info]
    assert sum("event=bad_event" in m for m in said) == 1
    assert all("\r" not in m and "\n" not in m for m in said)


def test_sync_listen_starts_with_a_poisoned_current_and_repairs_it(
        world: World, tmp_path: Path, remote: Remote) -> None:
    """Issue 17.2: one non-JSON value in `current` and `sync --listen` could not start."""
    from .conftest import spawn_daemon, wait_until
    from .test_server import request
    world.redis.hset(world.daemon.store.keys.current, "b", "{not json")
    port = free_port()
    proc = spawn_daemon(remote, world.url, "test", tmp_path / "wd", interval=3600,
                        extra=["--listen", f"127.0.0.1:{port}"])
    url = f"http://127.0.0.1:{port}"
    try:
        def served(path: str) -> bool:
            try:
                return request(url + path, timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(lambda: served("/readyz") and served("/agents/b"), timeout=20)
        assert served("/agents/a") and proc.poll() is None
        world.redis.hset(world.daemon.store.keys.history("a"), "7", "[1]")
        status, _, body = request(url + "/agents/a/versions/7")
        assert (status, json.loads(body)) == (502, {"error": "configsync:{test}:history:a "
                                                    "field 7: not a snapshot: a JSON array, "
                                                    "not an object"})
        assert json.loads(world.redis.hget(world.daemon.store.keys.current, "b") or "")[
            "agent_id"] == "b"
    finally:
        proc.terminate()
        proc.wait(15)
    log = (tmp_path / "wd" / "daemon.log").read_text()
    assert "event=corrupt_redis error=\"configsync:{test}:current field 'b': not JSON" in log


def test_a_callback_registered_after_start_hears_the_agents_held(world: World) -> None:
    # issue 17, on asyncio: registering inside `async with` hears the agents already held
    async def scenario() -> None:
        every: list[tuple[str, int | None]] = []
        later: list[str] = []

        async def one(agent_id: str, snap: Snapshot | None) -> None:
            every.append((agent_id, snap and snap.version))

        async with AsyncClient(redis=world.url, namespace="test") as client:
            client.on_change(one)
            client.on_change(lambda agent_id, snap: later.append(agent_id), replay=False)
            await until(lambda: len(every) == 2)
            assert every == [("a", 1), ("b", 1)] and later == []
            await off_loop(lambda: world.push("a", 1.5))
            await until(lambda: len(every) == 3 and later == ["a"])
            assert every[2] == ("a", 2)

    run(scenario)


@pytest.mark.slow  # waits out a real silence limit (3 × 0.05 s + 10 s)
def test_a_dead_daemon_is_said_by_status(world: World, tmp_path: Path) -> None:
    # issue 17 item 12, on asyncio
    daemon = spawn_daemon(world.remote, world.url, "test", tmp_path / "daemon", interval=0.05)

    async def scenario() -> None:
        async with AsyncClient(redis=world.url, namespace="test", check_interval=0.2) as client:
            await until(lambda: client.status().daemon_alive is True
                        and client.silence_limit < 11)
            await off_loop(daemon.kill)
            await off_loop(daemon.wait)
            await until(lambda: client.status().daemon_alive is False)
            status = client.status()
            assert (status.connected, status.stale) == (True, False)
            assert (status.heartbeat_age or 0) > 10.15 and status.heartbeat_at

    try:
        run(scenario)
    finally:
        daemon.kill()
        daemon.wait()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_async_client_refuses_loudly(world: World) -> None:
    """Issue 17 item 9, on asyncio: an event loop does not survive fork(), so a child of a
    process that started an AsyncClient is told so (an error line, status() stale and
    disconnected with the reason, reads raising ClientForkedError), never silently stale."""
    async def scenario() -> None:
        async with AsyncClient(redis=world.url, namespace="test") as client:
            assert client.get("a").version == 1
            parent_id = client.status().instance_id
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: checks without awaiting anything, then leaves
                code = 3
                try:
                    status = client.status()
                    with pytest.raises(ClientForkedError) as raised:
                        client.get("a")
                    with pytest.raises(ClientForkedError):
                        client.get_version("a", 1).send(None)
                    os.write(write, json.dumps([
                        status.connected, status.stale, status.connection_error,
                        str(raised.value), isinstance(raised.value, ClientClosedError),
                        status.instance_id != parent_id]).encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(write)
            with os.fdopen(read) as inp:
                seen = json.loads(inp.read())
            assert os.waitpid(pid, 0)[1] == 0
            connected, stale, why, error, closed_kind, own_id = seen
            assert (connected, stale, closed_kind, own_id) == (False, True, True, True)
            assert why == error and error.startswith(
                "this AsyncClient was started in process ") and "does not survive fork()" in error
            assert client.status().connected and client.get("a").version == 1  # the parent

    run(scenario)


def test_a_user_refused_subscribe_is_said_once_not_a_reconnect_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 17 (red team, url2 item 1): `sync --listen` with the README's daemon user (no
    +subscribe) logged `disconnected`/`reconnected` over and over. The AsyncClient now says
    the cause once (`refused`) and backs off."""
    import redis

    from configsync.embedded import RedisServer

    monkeypatch.setattr("configsync.aio.REFUSED_WAIT", 0.05)
    server = RedisServer(tmp_path / "redis", persist=False).start()
    admin = redis.Redis.from_url(server.url, decode_responses=True)
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">pw", "~*", "&*", "-@all",
                          "+@read", "+ping", "+hello", "+client|setname")
    url = server.url.replace("redis://", "redis://reader:pw@")

    def refusals() -> int:
        return sum(int(entry.get("count", 0)) for entry in admin.acl_log()
                   if entry.get("object") == "subscribe")

    async def scenario() -> None:
        async with AsyncClient(redis=url, namespace="test") as client:
            await until(lambda: refusals() >= 3)
            status = client.status()
        assert not status.connected and status.stale
        assert "no permissions" in (status.connection_error or "")

    try:
        with caplog.at_level(logging.INFO, logger="configsync"):
            run(scenario)
    finally:
        admin.close()
        server.kill()
    assert caplog.text.count("event=refused") == 1
    assert "+subscribe" in caplog.text and "event=reconnected" not in caplog.text


# -- issue 17: the red team's client findings 1-4 and 6, on asyncio -----------------------

def test_a_forged_history_version_is_dropped_at_the_full_check(world: World) -> None:
    """Red team 1: a forged older version read through get_version() stayed for the client's
    life, and get(version=) served it from memory; restored, it is gone within 10 checks."""
    from .test_client import forged
    keys = world.daemon.store.keys
    world.push("a", 0.3)
    genuine = world.redis.hget(keys.history("a"), "1")
    world.redis.hset(keys.history("a"), "1", forged(world, "a", 1))

    async def scenario() -> None:
        async with AsyncClient(redis=world.url, namespace="test", check_interval=0.05) as client:
            assert (await client.get_version("a", 1)).config.temperature == 1.99
            assert client.get("a", version=1).config.temperature == 1.99
            world.redis.hset(keys.history("a"), "1", genuine)
            deadline = time.monotonic() + 10
            while (await client.get_version("a", 1)).config.temperature != 0.7:
                assert time.monotonic() < deadline, "the forgery outlived its removal"
                await asyncio.sleep(0.02)
            assert client.get("a", version=1).config.temperature == 0.7

    run(scenario)


def test_a_start_that_raises_stops_its_tasks_and_connections(world: World) -> None:
    """Red team 2: a failed start() left its callback task (and connection) behind."""
    from .test_client import Exploding
    connections = len(world.redis.client_list())

    async def scenario() -> None:
        for _ in range(5):
            client = AsyncClient(redis=world.url, namespace="test", model=Exploding)
            with pytest.raises(RuntimeError, match="boom"):
                async with client:
                    pass
            with pytest.raises(ClientClosedError):
                client.get("a")
        await until(lambda: asyncio.all_tasks() == {asyncio.current_task()}, timeout=10)

    run(scenario)
    wait_until(lambda: len(world.redis.client_list()) == connections, timeout=10)


def test_the_hooks_fire_for_a_start_that_finds_redis_down(world: World) -> None:
    """Red team 3: on_disconnect at a start with Redis down, on_reconnect at the first
    connection; both as methods too."""
    hooks: list[str] = []
    world.server.kill()

    async def scenario() -> None:
        client = AsyncClient(redis=world.url, namespace="test")
        client.on_disconnect(lambda exc: hooks.append("down"))
        client.on_reconnect(lambda: hooks.append("up"))
        async with client:
            await until(lambda: hooks == ["down"])
            await off_loop(world.server.start)
            await until(lambda: client.status().connected and not client.stale)
            await until(lambda: hooks == ["down", "up"])

    run(scenario)


def test_a_genuine_commit_overrules_a_forgery_read_at_start_at_once(world: World) -> None:
    """Red team 4: a forgery taken by the start's full read, restored, and a genuine commit
    naming the agent: served at once, not after the 10-check full read."""
    from .test_client import forged
    keys = world.daemon.store.keys
    genuine = world.redis.hget(keys.current, "a")
    world.redis.hset(keys.current, "a", forged(world, "a", 51))

    async def scenario() -> None:
        async with AsyncClient(redis=world.url, namespace="test",
                               check_interval=3600) as client:
            assert client.get("a").version == 51
            world.redis.hset(keys.current, "a", genuine)
            await off_loop(lambda: world.push("a", 0.3))
            await until(lambda: client.get("a").version == 2, timeout=10)

    run(scenario)


def test_a_history_key_of_the_wrong_type_is_corrupt_data(world: World) -> None:
    keys = world.daemon.store.keys
    world.push("a", 0.3)
    world.redis.delete(keys.history("a"))
    world.redis.set(keys.history("a"), "x")

    async def scenario() -> None:
        async with AsyncClient(redis=world.url, namespace="test") as client:
            with pytest.raises(CorruptDataError, match="holds a string, not the hash"):
                await client.get_version("a", 1)

    run(scenario)
