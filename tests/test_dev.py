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
from configsync.dev import Publisher
from configsync.embedded import RedisServer
from configsync.errors import UsageError
from configsync.snapshot import Record, checksum
from configsync.store import AgentChange, Event, Store, Write

from .conftest import (
    SETTINGS,
    SUPPORT,
    GitTree,
    Remote,
    git,
    spawn_daemon,
    wait_until,
    write_tree,
)

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
    code, out, _ = dev(capsys, "--redis", redis_server.url, "--once", "--namespace", "mine-dev")
    assert (code, out) == (1, f"{BAD_LINE}\nnot published: 1 error\n")
    assert Store(redis.Redis.from_url(redis_server.url), "mine-dev").state() == {}


def no_dev_namespace(namespace: str, whose: str = "") -> str:
    return (f"configsync: error: namespace {namespace!r}{whose} is no dev namespace: "
            "configsync dev writes only namespaces whose name ends in -dev, which a sync daemon "
            "never writes, so an agent in production is never served a working tree (pass "
            f"--namespace {namespace}-dev)")


@pytest.mark.parametrize("namespace", ["test", "default", "support", "test-dev2", "devs",
                                       "test.dev", "dev", "test_dev"])
def test_dev_writes_only_dev_namespaces_whatever_redis_holds(
        git_tree: GitTree, redis_server: RedisServer, tmp_path: Path, namespace: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17 item 4: after Redis lost its data (nothing says a daemon owns `default`),
    `configsync dev --namespace default` published a working tree to production. The mark is
    the name: it survives any loss of data. The tree's errors do not hide the refusal."""
    (git_tree.root / "agents/support.yaml").write_text(BAD)
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()  # Redis lost its data: no state says who owns what
    code, out, err = dev(capsys, str(git_tree.root), "--redis", redis_server.url, "--once",
                         "--namespace", namespace)
    whose = " (configsync.yaml's: the one its sync daemon writes)" if namespace == "test" else ""
    assert (code, out, err) == (2, "", no_dev_namespace(namespace, whose) + "\n")
    assert client.keys("*") == []
    publisher_refused = pytest.raises(UsageError, match="is no dev namespace")
    with publisher_refused:  # the library refuses it too
        Publisher(Store(client, namespace), git_tree.root, "someone")


@pytest.mark.parametrize("namespace", ["test-dev", "support-alice-dev", "X-DEV"])
def test_any_name_ending_in_dev_is_a_dev_namespace(
        tree: Path, redis_server: RedisServer, namespace: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = dev(capsys, str(tree), "--redis", redis_server.url, "--once",
                         "--namespace", namespace)
    assert (code, out) == (0, "applied support v1\n"), err
    assert Store(redis.Redis.from_url(redis_server.url), namespace).state()["commit"] == \
        "worktree"


def test_a_namespace_a_sync_daemon_writes_is_refused_both_ways(
        git_tree: GitTree, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--repo", str(git_tree.root), "--redis", redis_server.url, "--once",
                 "--workdir", str(tmp_path / "wd")]) == 0
    capsys.readouterr()
    code, out, err = dev(capsys, str(git_tree.root), "--redis", redis_server.url, "--once",
                         "--namespace", "test")
    assert (code, out) == (2, "")
    assert err == no_dev_namespace("test", " (configsync.yaml's: the one its sync daemon "
                                           "writes)") + "\n"
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    served = store.state()["commit"]
    assert served != "worktree"
    # a -dev namespace an older daemon wrote: its state still says so
    older = Store(redis.Redis.from_url(redis_server.url), "old-dev")
    assert older.commit_transaction(Write({**store.state(), "seen": served}),
                                    expected_seen=None)
    code, out, err = dev(capsys, str(git_tree.root), "--redis", redis_server.url, "--once",
                         "--namespace", "old-dev")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1].startswith(
        "configsync: error: namespace 'old-dev' is written by configsync sync (")
    # and a daemon never writes a dev namespace, --adopt or not, named by --namespace or by
    # configsync.yaml
    assert dev(capsys, str(git_tree.root), "--redis", redis_server.url, "--once")[0] == 0
    refused = ("namespace 'test-dev' is a configsync dev namespace (its name ends in -dev): a "
               "sync daemon never writes one, --adopt or not; name the daemon's namespace "
               "otherwise (configsync.yaml's namespace:, or --namespace)")
    with pytest.raises(SystemExit) as exited:
        main(["sync", "--repo", str(git_tree.root), "--redis", redis_server.url, "--once",
              "--namespace", "test-dev", "--adopt", "--workdir", str(tmp_path / "wd2")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"configsync: error: argument --namespace: {refused} (see "
                                    "`configsync sync --help`)")
    git_tree.write({"configsync.yaml": SETTINGS.replace("namespace: test", "namespace: test-dev")})
    head = git_tree.commit("a dev namespace in configsync.yaml")
    code = main(["sync", "--repo", str(git_tree.root), "--redis", redis_server.url, "--once",
                 "--workdir", str(tmp_path / "wd3")])
    # (issue 17 red team, finding 4) such a commit is a validation error: the daemon keeps the
    # namespace of the last valid configsync.yaml, rejects the head and never stops for it
    assert code == 1
    err = capsys.readouterr().err
    assert "event=namespace_from_older_commit namespace=test " in err
    assert "ends in -dev" in err.splitlines()[-1]
    assert (store.state()["commit"], store.state()["seen"]) == (served, head)
    assert Store(redis.Redis.from_url(redis_server.url), "test-dev").state()["commit"] == \
        "worktree"


def write_old_dev_state(store: Store, folder: Path, *, expected_seen: str | None) -> bool:
    """What `configsync dev --namespace NS` of a configsync before issue 17 wrote into a
    namespace with no state (after a flush), or over a daemon's (a state replaced whole)."""
    now = "2026-01-01T00:00:00.000Z"
    config = {"system_prompt": "From a working tree.", "model": "gpt-4o"}
    records = [Record(agent, 7, checksum(config), config, "worktree", "Dev <dev@example.com>",
                      now, "working tree", now) for agent in ("a", "zzz")]
    fields = {"commit": "worktree", "seen": "worktree", "revision": "9", "epoch": "dev-epoch",
              "branch": "", "source": f"dev:{folder}", "applied_at": now, "heartbeat_at": now,
              "last_error": "", "schema": "", "contract": "2"}
    return store.commit_transaction(Write(
        fields, upserts=records, history={r.agent_id: [r] for r in records},
        events=[Event("applied", "worktree", 9, "dev-epoch",
                      [AgentChange(r.agent_id, 7) for r in records])], replace_all=True),
        expected_seen=expected_seen)


def assert_won_back(store: Store, remote: Remote, head: str, log: str) -> None:
    state = store.state()
    assert (state["commit"], state["seen"], state["source"], state["branch"]) == (
        head, head, remote.url, "main")
    assert state["epoch"] not in ("", "dev-epoch")
    assert {a: (s.version, s.commit) for a, s in store.current().items()} == {
        "a": (1, head), "b": (1, head)}
    assert store.history("zzz") == {} and sorted(store.history("a")) == [1]
    assert store.events()[-1]["type"] == "rebuilt"
    line = next(x for x in log.splitlines() if "event=reclaimed" in x)
    assert "level=warning" in line and "namespace=test" in line
    assert "was_source=dev:" in line and "was_commit=worktree" in line
    assert "was_revision=9" in line and "was_epoch=dev-epoch" in line
    assert "was_agents=2" in line and f"head={head[:12]}" in line


def test_a_daemon_wins_its_namespace_back_from_a_dev_state(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17 item 4: a dev state in a daemon's namespace (written by an older configsync
    dev after a flush) made the daemon exit 2 at every start. It rebuilds from git instead,
    running or starting, with a new epoch, and logs what it replaced."""
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    head = git(remote.work, "rev-parse", "HEAD").strip()
    proc = spawn_daemon(remote, redis_server.url, "test", tmp_path / "wd")
    try:
        wait_until(lambda: store.state().get("commit") == head)
        store.redis.flushall()
        wait_until(lambda: write_old_dev_state(store, tmp_path,
                                               expected_seen=store.state().get("seen")))
        wait_until(lambda: store.state().get("source") == remote.url or proc.poll() is not None)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert_won_back(store, remote, head, (tmp_path / "wd" / "daemon.log").read_text())

    # stopped, flushed, written by dev: the next start wins it back (it exited 2 before)
    store.redis.flushall()
    assert write_old_dev_state(store, tmp_path, expected_seen=None)
    capsys.readouterr()
    assert main(["sync", "--repo", remote.url, "--redis", redis_server.url, "--once",
                 "--workdir", str(tmp_path / "wd")]) == 0
    assert_won_back(store, remote, head, capsys.readouterr().err)


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


def test_a_second_working_tree_is_refused_unless_it_takes_over(
        tree: Path, tmp_path: Path, redis_server: RedisServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17 red team, finding 8: two `configsync dev` on one dev namespace from different
    working trees took it from each other silently at every save. The second is refused,
    naming the first tree, unless --take-over; then the first is refused in turn (no fight);
    the same tree publishing again is fine."""
    other = write_tree(tmp_path / "other", {
        "configsync.yaml": SETTINGS,
        "agents/support.yaml": SUPPORT.replace("temperature: 0.3", "temperature: 0.5")})
    url = redis_server.url
    store = Store(redis.Redis.from_url(url), "test-dev")
    assert dev(capsys, str(tree), "--redis", url, "--once")[0] == 0
    (tree / "agents/support.yaml").write_text(SUPPORT.replace("0.3", "0.4"))
    assert dev(capsys, str(tree), "--redis", url, "--once")[:2] == (0, "applied support v2\n")
    code, out, err = dev(capsys, str(other), "--redis", url, "--once")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == (
        f"configsync: error: namespace 'test-dev' is written by configsync dev in another "
        f"working tree ({tree.resolve()}); stop that one, use another --namespace, or pass "
        "--take-over to publish this tree there instead")
    assert store.state()["source"] == f"dev:{tree.resolve()}"
    code, out, err = dev(capsys, str(other), "--redis", url, "--once", "--take-over")
    assert (code, out) == (0, "applied support v3\n"), err
    assert store.state()["source"] == f"dev:{other.resolve()}"
    code, _, err = dev(capsys, str(tree), "--redis", url, "--once")  # the first one, again
    assert code == 2 and f"({other.resolve()})" in err
    assert store.current()["support"].config["temperature"] == 0.5


def test_a_running_dev_stops_when_another_tree_takes_its_namespace(
        tree: Path, tmp_path: Path, redis_server: RedisServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The loser of a --take-over says so and exits 2 at its next save instead of writing."""
    other = write_tree(tmp_path / "other", {"configsync.yaml": SETTINGS,
                                            "agents/support.yaml": SUPPORT})
    store = Store(redis.Redis.from_url(redis_server.url), "test-dev")
    proc = subprocess.Popen([sys.executable, "-m", "configsync", "dev", str(tree), "--redis",
                             redis_server.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: store.state().get("source") == f"dev:{tree.resolve()}"
                   or proc.poll() is not None)
        code, _, err = dev(capsys, str(other), "--redis", redis_server.url, "--once",
                           "--take-over")
        assert code == 0, err
        (tree / "agents/support.yaml").write_text(SUPPORT.replace("0.3", "0.9"))
        assert proc.wait(timeout=30) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _, err = proc.communicate()
    assert f"another working tree ({other.resolve()})" in err and "Traceback" not in err
    assert store.state()["source"] == f"dev:{other.resolve()}"
    assert store.current()["support"].config["temperature"] == 0.3
