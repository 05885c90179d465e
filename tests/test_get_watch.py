"""``configsync get`` and ``configsync watch`` against a real daemon and redis-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from configsync.cli import main
from configsync.embedded import RedisServer, free_port
from configsync.store import Store

from .conftest import SETTINGS, Remote, git, wait_until

NO_REDIS = ("configsync: error: no Redis to read: pass --redis URL or set CONFIGSYNC_REDIS_URL, "
            "or start `configsync sync` in this repository: its embedded Redis is found then (a "
            "daemon's own --workdir: pass it)\n")
A2 = "system_prompt: You are A.\nmodel: gpt-4o\ntemperature: 0.4\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def sync_once(remote: Remote, url: str, workdir: Path, *extra: str) -> None:
    assert main(["sync", "--repo", remote.url, "--redis", url, "--once",
                 "--workdir", str(workdir), *extra]) == 0


@pytest.fixture
def synced(remote: Remote, redis_server: RedisServer, tmp_path: Path) -> tuple[str, str, str]:
    """Two commits synced: a and b at v1, then a at v2, b deleted (--keep 1)."""
    first = git(remote.work, "rev-parse", "HEAD").strip()
    sync_once(remote, redis_server.url, tmp_path / "wd", "--keep", "1")
    remote.delete("agents/b.yaml")
    second = remote.commit_push("a warmer, b gone", {"agents/a.yaml": A2})
    sync_once(remote, redis_server.url, tmp_path / "wd", "--keep", "1")
    return redis_server.url, first, second


def test_get_prints_the_served_snapshot_as_json_and_yaml(
        synced: tuple[str, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    url, _, second = synced
    code, out, err = run(capsys, "get", "a", "--redis", url, "--namespace", "test")
    assert (code, err) == (0, "")
    data = json.loads(out)
    stored = Store(redis.Redis.from_url(url), "test").current()["a"]
    assert data == json.loads(stored.to_json())
    assert (data["version"], data["commit"], data["config"]["temperature"]) == (2, second, 0.4)
    assert out.startswith('{\n  "agent_id": "a",\n  "version": 2,\n')
    code, out, _ = run(capsys, "get", "a", "--redis", url, "--namespace", "test",
                       "--format", "yaml")
    assert code == 0
    assert out.startswith("agent_id: a\nversion: 2\nchecksum: " + stored.checksum + "\n")


def test_get_a_kept_version_of_a_deleted_agent(
        synced: tuple[str, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    url, first, _ = synced
    code, out, _ = run(capsys, "get", "b", "--version", "1", "--redis", url,
                       "--namespace", "test")
    assert code == 0
    assert (json.loads(out)["commit"], json.loads(out)["version"]) == (first, 1)
    code, out, err = run(capsys, "get", "b", "--redis", url, "--namespace", "test")
    assert (code, out) == (1, "")
    assert err == ("configsync: error: agent b was deleted (its last version is 1); pass "
                   "--version N to read a kept version\n")


def test_get_errors_are_one_line(synced: tuple[str, str, str],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    url, _, _ = synced
    ns = ["--redis", url, "--namespace", "test"]
    assert run(capsys, "get", "aa", *ns) == (
        1, "", "configsync: error: no agent aa in namespace test, did you mean `a`? "
               "(agents: a)\n")
    assert run(capsys, "get", "a", "--version", "1", *ns) == (
        1, "", "configsync: error: agent a has no version 1 in Redis: it was trimmed (the "
               "daemon keeps the last --keep versions); only version 2 is kept\n")
    assert run(capsys, "get", "a", "--version", "9", *ns) == (
        1, "", "configsync: error: agent a has no version 9 in Redis: its last version is 2; "
               "only version 2 is kept\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["get", "a", "--version", "0", *ns])
    assert exit_info.value.code == 2
    assert "--version: must be a whole number" in capsys.readouterr().err


def test_get_with_redis_down_and_usage_mistakes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    code, out, err = run(capsys, "get", "a", "--redis", url, "--namespace", "test")
    assert (code, out) == (1, "")
    assert err.startswith("configsync: error: redis: ") and err.count("\n") == 1
    assert err.endswith("(is Redis running, and the URL right?)\n") and "hunter2" not in err
    assert run(capsys, "get", "a", "--namespace", "test") == (
        2, "", NO_REDIS)
    code, _, err = run(capsys, "get", "a", "--redis", "redis://", "--namespace", "test")
    assert code == 2 and "names no host" in err
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFIGSYNC_REDIS_URL", url)
    assert run(capsys, "get", "a") == (
        2, "", "configsync: error: no configsync.yaml in this folder or above it: pass "
               "--namespace\n")


def test_namespace_and_url_come_from_configsync_yaml_and_the_environment(
        synced: tuple[str, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, _, _ = synced
    (tmp_path / "cfg" / "agents").mkdir(parents=True)
    (tmp_path / "cfg" / "configsync.yaml").write_text(SETTINGS)
    monkeypatch.chdir(tmp_path / "cfg" / "agents")
    monkeypatch.setenv("CONFIGSYNC_REDIS_URL", url)
    code, out, _ = run(capsys, "get", "a")
    assert code == 0 and json.loads(out)["version"] == 2


def test_watch_prints_kept_events_since_an_id(
        synced: tuple[str, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    url, first, second = synced
    ids = [i for i, _ in Store(redis.Redis.from_url(url), "test").read_events("0")]
    ns = ["--redis", url, "--namespace", "test"]
    code, out, err = run(capsys, "watch", "--since", "0", "--count", "2", *ns)
    assert (code, err) == (0, "")
    assert out == (f"{ids[0]} event=rebuilt revision=1 commit={first[:12]}\n"
                   f"{ids[1]} event=applied revision=2 commit={second[:12]} "
                   "agents=a@2,b@1(deleted)\n")
    code, out, _ = run(capsys, "watch", "b", "--since", ids[0], "--count", "1", *ns)
    assert out == f"{ids[1]} event=applied revision=2 commit={second[:12]} agents=b@1(deleted)\n"
    code, out, _ = run(capsys, "watch", "--since", ids[0], "--count", "1", "--format", "json",
                       *ns)
    assert json.loads(out) == {"id": ids[1], "event": {
        "type": "applied", "commit": second, "revision": 2,
        "epoch": json.loads(out)["event"]["epoch"], "count": 2,
        "changes": [{"agent_id": "a", "version": 2, "deleted": False},
                    {"agent_id": "b", "version": 1, "deleted": True}]}}
    assert out.count("\n") == 1


def test_watch_tails_new_events_live(synced: tuple[str, str, str], remote: Remote,
                                     tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    url, _, _ = synced
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(main(
        ["watch", "a", "--count", "1", "--redis", url, "--namespace", "test"])))
    store = Store(redis.Redis.from_url(url), "test")
    before = store.last_event_id()
    thread.start()
    wait_until(lambda: thread.is_alive())
    rejected = remote.commit_push("bad", {"agents/a.yaml": "model: gpt-4o\n"})
    good = remote.commit_push("a cooler", {"agents/a.yaml": A2.replace("0.4", "0.2")})
    args = ["sync", "--repo", remote.url, "--redis", url, "--once", "--workdir",
            str(tmp_path / "wd")]
    main(args)
    thread.join(30)
    assert results == [0]
    out = capsys.readouterr().out
    new = store.read_events(before)
    assert [e["type"] for _, e in new] == ["rejected", "applied"]
    assert new[0][1]["commit"] == rejected
    assert out == f"{new[1][0]} event=applied revision=3 commit={good[:12]} agents=a@3\n"


def test_watch_text_escapes_untrusted_text() -> None:
    from configsync.read_cli import event_line
    line = event_line("1-0", {"type": "rejected", "commit": "ab" * 20, "revision": 1,
                              "epoch": "e", "error": "agents/a\nb.yaml:1:1: bad\u2028x"})
    assert line == ('1-0 event=rejected revision=1 commit=abababababab '
                    'error="agents/a\\nb.yaml:1:1: bad\\u2028x"')


def test_watch_exits_0_on_sigterm_and_rejects_bad_ids(
        redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "configsync", "watch", "--redis",
                             redis_server.url, "--namespace", "test"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ})
    client = redis.Redis.from_url(redis_server.url)
    wait_until(lambda: any(c.get("cmd") == "xread" for c in client.client_list()))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (0, b"", b"")
    code, out, err = run(capsys, "watch", "--since", "later", "--redis", redis_server.url,
                         "--namespace", "test")
    assert (code, out) == (2, "")
    assert err == ("configsync: error: --since 'later' is not a stream id: give $ (only new "
                   "events), 0 (all kept events) or an id such as 1767323045000-0\n")


@contextmanager
def newcomer_daemon(remote: Remote, written: Path | None = None,
                    *extra: str) -> Iterator[tuple[str, Path]]:
    """`configsync sync` run as a newcomer runs it: in the clone, no --redis, no
    $CONFIGSYNC_REDIS_URL; its embedded Redis's URL and the file it wrote it in."""
    written = written or remote.work / ".git" / "configsync" / "redis.url"
    daemon = subprocess.Popen([sys.executable, "-m", "configsync", "sync", "--interval", "0.2",
                               *extra], cwd=remote.work, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def served() -> bool:
            if not written.is_file() or not written.read_text().strip():
                return False
            try:
                with redis.Redis.from_url(written.read_text().strip()) as client:
                    return "a" in Store(client, "test").current()
            except redis.RedisError:
                return False
        wait_until(served)
        yield written.read_text().strip(), written
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


@pytest.fixture
def embedded_daemon(remote: Remote) -> Iterator[tuple[str, Path]]:
    with newcomer_daemon(remote) as found:
        yield found


@pytest.mark.slow
def test_every_reading_command_finds_the_embedded_redis_of_this_repository(
        embedded_daemon: tuple[str, Path], remote: Remote, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, written = embedded_daemon
    said = f"configsync: reading the embedded Redis {url} (from {written})\n"
    monkeypatch.chdir(remote.work / "agents")  # a folder of the repository, not its top
    code, out, err = run(capsys, "get", "a")
    assert (code, err) == (0, said)
    assert json.loads(out)["agent_id"] == "a"
    code, out, err = run(capsys, "watch", "--since", "0", "--count", "1")
    assert (code, err) == (0, said) and " event=rebuilt revision=1 " in out
    assert run(capsys, "status")[::2] == (0, said)
    code, out, err = run(capsys, "history", "a", "--redis")
    assert (code, err) == (0, said) and "v1" in out
    code, out, err = run(capsys, "diff", "--redis", "a@v1", "a@v1")
    assert (code, err[:len(said)]) == (0, said)
    code, out, err = run(capsys, "rollback", "a", "--to", "1", "--redis")
    assert (code, err) == (0, said) and "nothing to commit" in out
    # --workdir names a daemon's workdir (another repository's, a remote's); alone it is --redis
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "get", "a", "--namespace", "test", "--workdir",
                       str(written.parent))
    assert (code, err) == (0, said)
    code, _, err = run(capsys, "get", "a", "--namespace", "test", "--workdir", str(tmp_path))
    assert (code, err) == (2, f"configsync: error: no Redis to read: --workdir {tmp_path} holds "
                              "no redis.url (is it the --workdir of a `configsync sync`?)\n")
    code, _, err = run(capsys, "get", "a", "--namespace", "test", "--redis", url,
                       "--workdir", str(written.parent))
    assert (code, err) == (2, "configsync: error: --redis and --workdir each name a Redis: "
                              "pass one\n")
    monkeypatch.chdir(remote.work)
    code, out, err = run(capsys, "history", "a", "--workdir", str(written.parent))
    assert (code, err) == (0, said) and "v1" in out
    # --redis and $CONFIGSYNC_REDIS_URL still win, and say nothing
    monkeypatch.setenv("CONFIGSYNC_REDIS_URL", url)
    assert run(capsys, "get", "a")[::2] == (0, "")


def test_the_python_helper_finds_it_too_and_nothing_once_it_stopped(
        remote: Remote, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from configsync import Client, embedded_url

    monkeypatch.chdir(tmp_path)
    assert embedded_url() is None  # no repository here
    assert embedded_url(remote.work) is None  # no daemon ran there
    code, _, err = run(capsys, "get", "a", "--namespace", "test")
    assert (code, err) == (2, NO_REDIS)
    with newcomer_daemon(remote) as (url, written):
        assert embedded_url(remote.work) == url
        assert embedded_url(workdir=written.parent) == url
        monkeypatch.chdir(remote.work)
        assert embedded_url() == url
        with Client(redis=embedded_url() or "", namespace="test") as client:
            assert client.get("a").config.system_prompt == "You are A."
    # the daemon stopped (and its redis-server with it)
    assert embedded_url() is None
    code, _, err = run(capsys, "get", "a")
    assert (code, err) == (1, f"configsync: error: the embedded Redis (from {written}) is not "
                              f"running ({url} does not answer as it): start `configsync sync`, "
                              "or pass --redis URL\n")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with RedisServer(tmp_path / "other", port=port, persist=False):  # another program's Redis
        assert embedded_url() is None  # on that port is never taken for it
        assert run(capsys, "status")[0] == 2  # unreachable


def test_a_daemon_of_the_remote_the_clone_came_from_is_found_from_the_clone(
        remote: Remote, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`configsync sync --repo URL` (its workdir under ~/.local/state) and the reader in a
    clone of URL: found through the clone's remote."""
    from configsync.sync_cli import Source, default_workdir

    written = default_workdir(Source(str(Path(remote.url).resolve()))) / "redis.url"
    with newcomer_daemon(remote, written, "--repo", remote.url) as (url, found):
        monkeypatch.chdir(remote.work)
        code, out, err = run(capsys, "get", "a")
        assert (code, err) == (0, f"configsync: reading the embedded Redis {url} (from "
                                  f"{found})\n")
        assert str(found).startswith(str(Path.home() / ".local" / "state" / "configsync"))
        assert json.loads(out)["agent_id"] == "a"


# -- issue 17 item 2: what Redis holds may be anything -------------------------------------

@pytest.mark.parametrize("fmt", ["text", "json"])
def test_watch_skips_entries_that_are_no_events_with_a_warning(
        synced: tuple[str, str, str], capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    """A stream entry that is not JSON, a JSON array, or `changes` a string made watch exit 3
    ("internal error"); each is skipped with one warning line naming it."""
    url, _, _ = synced
    client = redis.Redis.from_url(url)
    key, before = Store(client, "test").keys.events, Store(client, "test").last_event_id()
    bad = [client.xadd(key, {"event": data}).decode() for data in (
        "{not json", "[1, 2]", json.dumps({"type": "applied", "revision": 3, "changes": "a"}),
        json.dumps({"type": "applied", "revision": "3", "changes": None}), '"applied"')]
    bad.append(client.xadd(key, {"other": "x"}).decode())
    good = client.xadd(key, {"event": json.dumps({"type": "rebuilt", "commit": "c",
                                                  "revision": 9, "epoch": "e"})}).decode()
    code, out, err = run(capsys, "watch", "--since", before,
                         "--count", "1", "--format", fmt, "--redis", url, "--namespace", "test")
    assert code == 0 and out.count("\n") == 1 and good in out
    lines = err.splitlines()
    assert [line.split(" ")[5].rstrip(":") for line in lines] == bad
    assert all(line.startswith("configsync: warning: skipped stream entry ") for line in lines)
    assert "not JSON" in lines[0] and "a JSON array" in lines[1] and "'changes'" in lines[2]
    assert "'revision'" in lines[3] and "no 'event' field" in lines[5]


def test_get_names_a_poisoned_entry_and_serves_the_others(
        synced: tuple[str, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    url, _, _ = synced
    client = redis.Redis.from_url(url)
    keys = Store(client, "test").keys
    good = client.hget(keys.current, "a")
    ns = ["--redis", url, "--namespace", "test"]
    client.hset(keys.current, "zz", "{not json")
    code, out, err = run(capsys, "get", "a", *ns)
    assert (code, err) == (0, "") and json.loads(out)["version"] == 2
    assert run(capsys, "get", "zz", *ns) == (
        1, "", "configsync: error: configsync:{test}:current field 'zz': not JSON (Expecting "
               "property name enclosed in double quotes: line 1 column 2 (char 1))\n")
    assert run(capsys, "get", "nope", *ns)[2] == (
        "configsync: error: no agent nope in namespace test (agents: a, zz)\n")
    forged = json.loads(good or b"")
    forged["config"]["temperature"] = 1.99  # the checksum no longer matches
    client.hset(keys.current, "a", json.dumps(forged))
    assert run(capsys, "get", "a", *ns)[:2] == (1, "")
    client.hset(keys.history("a"), "2", json.dumps({**json.loads(good or b""), "version": 7}))
    assert run(capsys, "get", "a", "--version", "2", *ns) == (
        1, "", "configsync: error: configsync:{test}:history:a field 2: the snapshot is "
               "version 7\n")


@pytest.mark.parametrize("value", ["", "  "])
@pytest.mark.parametrize("argv", [["get", "a"], ["watch"], ["status"],
                                  ["history", "a", "--redis"], ["diff", "a@v1", "a@v1",
                                                                "--redis"],
                                  ["rollback", "a", "--to", "1", "--redis"],
                                  ["sync", "--once"]])
def test_a_set_but_empty_redis_url_is_a_usage_error_in_every_command(
        value: str, argv: list[str], remote: Remote, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 (red team, url2 item 4): `CONFIGSYNC_REDIS_URL=''` (a secret that did not
    arrive) made `sync` refuse, but `get`, `status`, `history --redis` ... read the embedded
    Redis instead ("in sync" about the wrong Redis). The same usage error everywhere."""
    monkeypatch.chdir(remote.work)
    monkeypatch.setenv("CONFIGSYNC_REDIS_URL", value)
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == ("configsync: error: CONFIGSYNC_REDIS_URL is set but empty: give it a URL, "
                   "or unset it for the embedded Redis\n")


@pytest.mark.parametrize("since", ["$", "0"])
def test_watch_losing_a_redis_that_answered_gives_no_tls_hint(
        since: str, redis_server: RedisServer) -> None:
    """Issue 17 (red team, url2 item 5): `watch` ending as its Redis went away said "(is
    Redis running, and does it want TLS? (then use rediss://))": TLS cannot be why a
    connection that worked was lost. Said as what it is; exit 1."""
    proc = subprocess.Popen([sys.executable, "-m", "configsync", "watch", "--redis",
                             redis_server.url, "--namespace", "test", "--since", since],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = redis.Redis.from_url(redis_server.url)
    wait_until(lambda: any(c.get("cmd") == "xread" for c in client.client_list()))
    client.close()
    redis_server.kill()
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (1, "")
    assert err.startswith("configsync: error: redis: ") and err.count("\n") == 1
    assert err.endswith("(it answered before: did Redis stop or restart?)\n")
    assert "TLS" not in err and "rediss" not in err
