"""The sync daemon against a real redis-server and real git remotes (DESIGN.md invariants)."""

from __future__ import annotations

import gc
import json
import logging
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from configsync.embedded import RedisServer
from configsync.errors import CorruptDataError
from configsync.git import Mirror
from configsync.snapshot import checksum
from configsync.store import Store
from configsync.sync import Daemon

from .conftest import SETTINGS, Remote, agent_events, git, spawn_daemon, wait_until

A1 = "system_prompt: You are A.\nmodel: gpt-4o\n"


@pytest.fixture
def make_daemon(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Any]:
    made: list[Daemon] = []

    def make(remote: Remote, *, namespace: str = "test", keep: int = 100,
             url: str | None = None) -> Daemon:
        mirror = Mirror(tmp_path / f"mirror-{len(made)}", url or remote.url)
        daemon = Daemon(mirror=mirror, store=Store(redis_client, namespace), keep=keep)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.mirror.close()


def content(store: Store) -> dict[str, Any]:
    """Everything in a namespace that must not depend on timing or on the epoch's random id."""
    state = {k: v for k, v in store.state().items()
             if k not in ("applied_at", "heartbeat_at", "heartbeat_every", "epoch")}
    current = {a: {**json.loads(s.to_json()), "synced_at": None}
               for a, s in store.current().items()}
    history = {key.rsplit(":", 1)[-1]: sorted(store.history(key.split(":history:")[1]))
               for key in store.history_keys()}
    events = [{k: v for k, v in e.items() if k != "epoch"} for e in store.events()]
    return {"state": state, "current": current, "history": history, "events": events}


def versions(store: Store) -> dict[str, int]:
    return {a: s.version for a, s in store.current().items()}


def test_first_sync_rebuilds_from_history(remote: Remote, make_daemon: Any) -> None:
    remote.commit_push("tune a", {"agents/a.yaml": A1 + "temperature: 0.1\n"})
    head = remote.commit_push("tune b", {"agents/b.yaml": "system_prompt: B2\nmodel: gpt-4o\n"})
    daemon = make_daemon(remote)
    result = daemon.sync()
    assert (result.head, result.applied) == (head, True)
    store = daemon.store
    state = store.state()
    assert (state["commit"], state["seen"], state["revision"]) == (head, head, "3")
    assert (state["branch"], state["source"], state["last_error"]) == ("main", remote.url, "")
    assert len(state["epoch"]) == 32 and state["heartbeat_at"].endswith("Z")
    assert versions(store) == {"a": 2, "b": 2}
    assert sorted(store.history("a")) == [1, 2]
    events = store.events()
    assert events == [{"type": "rebuilt", "commit": head, "revision": 3,
                       "epoch": state["epoch"]}]
    snapshot = store.current()["a"]
    assert snapshot.config["temperature"] == 0.1
    assert snapshot.checksum == checksum(snapshot.config)
    assert (snapshot.author, snapshot.message) == ("Ada Author <ada@example.com>", "tune a")
    assert snapshot.committed_at == "2026-01-02T03:04:05+00:00"


def test_no_ff_merge_is_one_version_naming_the_merge(remote: Remote, make_daemon: Any) -> None:
    daemon = make_daemon(remote)
    daemon.sync()
    git(remote.work, "checkout", "-q", "-b", "feature")
    remote.commit("feature 1", {"agents/a.yaml": A1 + "temperature: 0.2\n"})
    remote.commit("feature 2", {"agents/a.yaml": A1 + "temperature: 0.3\n"})
    git(remote.work, "checkout", "-q", "main")
    git(remote.work, "-c", "user.name=Mia Merger", "-c", "user.email=mia@example.com",
        "merge", "-q", "--no-ff", "-m", "Merge feature", "feature")
    env_author = {"GIT_AUTHOR_NAME": "Mia Merger", "GIT_AUTHOR_EMAIL": "mia@example.com"}
    assert env_author  # the merge's author comes from -c user.*; GIT_AUTHOR_* is pinned
    merge = git(remote.work, "rev-parse", "HEAD").strip()
    remote.push()
    before = daemon.store.events()
    daemon.sync()
    snapshot = daemon.store.current()["a"]
    assert (snapshot.version, snapshot.commit, snapshot.message) == (2, merge, "Merge feature")
    assert snapshot.author == git(remote.work, "log", "-1", "--format=%an <%ae>").strip()
    new = agent_events(daemon.store.events()[len(before):])
    assert [(e["type"], e["agent_id"], e["version"], e["commit"]) for e in new] == [
        ("updated", "a", 2, merge)]


def test_commits_pushed_at_once_apply_in_order(remote: Remote, make_daemon: Any) -> None:
    daemon = make_daemon(remote)
    daemon.sync()
    shas = [remote.commit(f"t{i}", {"agents/a.yaml": A1 + f"temperature: 0.{i}\n"},
                          GIT_AUTHOR_NAME=f"Dev {i}") for i in (1, 2, 3)]
    remote.push()
    daemon.sync()
    history = daemon.store.history("a")
    assert [(v, s.commit, s.author.split(" <")[0]) for v, s in sorted(history.items())][1:] == [
        (2, shas[0], "Dev 1"), (3, shas[1], "Dev 2"), (4, shas[2], "Dev 3")]
    updated = [e for e in agent_events(daemon.store.events()) if e["type"] == "updated"]
    assert [(e["version"], e["commit"], e["revision"]) for e in updated] == [
        (2, shas[0], 2), (3, shas[1], 3), (4, shas[2], 4)]
    assert daemon.store.state()["revision"] == "4"


def test_revert_is_a_new_version_with_the_old_checksum(remote: Remote,
                                                       make_daemon: Any) -> None:
    daemon = make_daemon(remote)
    daemon.sync()
    remote.commit_push("bad idea", {"agents/a.yaml": A1 + "temperature: 1.9\n"})
    daemon.sync()
    git(remote.work, "revert", "--no-edit", "HEAD")
    remote.push()
    daemon.sync()
    history = daemon.store.history("a")
    assert sorted(history) == [1, 2, 3]
    assert history[3].checksum == history[1].checksum != history[2].checksum
    assert history[3].message.startswith('Revert "bad idea"')


def test_invalid_commit_is_rejected_then_fixed(remote: Remote, make_daemon: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    daemon = make_daemon(remote)
    daemon.sync()
    good = daemon.store.state()["commit"]
    served = daemon.store.current()
    bad = remote.commit_push("break a", {"agents/a.yaml": A1 + "temperature: 3.5\n",
                                         "agents/b.yaml": "system_prompt: B2\nmodel: gpt-4o\n"})
    with caplog.at_level(logging.ERROR, logger="configsync"):
        result = daemon.sync()
    assert (result.head, result.applied) == (bad, False)
    state = daemon.store.state()
    assert (state["commit"], state["seen"], state["revision"]) == (good, bad, "1")
    assert json.loads(state["last_error"]) == {
        "commit": bad, "file": "agents/a.yaml", "line": 3, "column": 14, "errors": 1,
        "message": "temperature: must be at most 2 (got 3.5)"}
    assert daemon.store.current() == served  # the last good state keeps serving
    rejected = daemon.store.events()[-1]
    assert (rejected["type"], rejected["commit"], rejected["error"]) == (
        "rejected", bad, "agents/a.yaml:3:14: temperature: must be at most 2 (got 3.5)")
    assert "event=rejected" in caplog.text and bad[:12] in caplog.text
    events = len(daemon.store.events())
    daemon.sync()  # examined once, not at every poll
    assert len(daemon.store.events()) == events
    fix = remote.commit_push("fix a", {"agents/a.yaml": A1 + "temperature: 1.5\n"})
    assert daemon.sync().applied
    state = daemon.store.state()
    assert (state["commit"], state["seen"], state["last_error"]) == (fix, fix, "")
    current = daemon.store.current()
    # b's change from the rejected commit arrives with the fix, under the fix's commit
    assert (current["b"].version, current["b"].commit, current["b"].config["system_prompt"]) == (
        2, fix, "B2")
    assert (current["a"].version, current["a"].config["temperature"]) == (2, 1.5)


def test_base_and_prompt_changes_reach_every_dependent(remote: Remote,
                                                       make_daemon: Any) -> None:
    remote.commit_push("bases", {
        "agents/base.yaml": "system_prompt_file: prompts/p.md\nmodel: gpt-4o\n",
        "agents/kids/c.yaml": "extends: base\ntemperature: 0.1\n",
        "agents/kids/d.yaml": "extends: kids/c\n",
        "prompts/p.md": "Prompt one.\n",
    })
    daemon = make_daemon(remote)
    daemon.sync()
    assert versions(daemon.store) == {"a": 1, "b": 1, "base": 1, "kids/c": 1, "kids/d": 1}
    remote.commit_push("new prompt", {"prompts/p.md": "Prompt two.\n"})
    daemon.sync()
    assert versions(daemon.store) == {"a": 1, "b": 1, "base": 2, "kids/c": 2, "kids/d": 2}
    assert daemon.store.current()["kids/d"].config["system_prompt"] == "Prompt two.\n"
    remote.commit_push("base tweak", {
        "agents/base.yaml": "system_prompt_file: prompts/p.md\nmodel: gpt-4o-mini\n"})
    daemon.sync()
    assert versions(daemon.store) == {"a": 1, "b": 1, "base": 3, "kids/c": 3, "kids/d": 3}
    remote.commit_push("middle tweak", {"agents/kids/c.yaml": "extends: base\n"})
    daemon.sync()
    assert versions(daemon.store) == {"a": 1, "b": 1, "base": 3, "kids/c": 4, "kids/d": 4}
    remote.commit_push("settings", {"configsync.yaml": SETTINGS + "allow_mass_delete: false\n"})
    daemon.sync()  # settings re-validate everything; no config changed, so no new version
    assert versions(daemon.store) == {"a": 1, "b": 1, "base": 3, "kids/c": 4, "kids/d": 4}
    assert daemon.store.state()["revision"] == "6"


def test_unrelated_commit_moves_state_but_no_versions(remote: Remote, make_daemon: Any) -> None:
    daemon = make_daemon(remote)
    daemon.sync()
    events = len(daemon.store.events())
    head = remote.commit_push("docs", {"README.md": "docs\n", "agents/notes.txt": "x\n"})
    daemon.sync()
    assert daemon.store.state()["commit"] == head
    # one event naming the commit and its revision, and no agent: readers learn that nothing
    # they hold changed, and read nothing
    new = daemon.store.events()[events:]
    assert [(e["type"], e["commit"], e["revision"], e["changes"]) for e in new] == [
        ("applied", head, 2, [])]
    assert versions(daemon.store) == {"a": 1, "b": 1}


def test_deletion_and_return(remote: Remote, make_daemon: Any) -> None:
    daemon = make_daemon(remote)
    daemon.sync()
    remote.delete("agents/b.yaml")
    gone = remote.commit_push("drop b")
    daemon.sync()
    assert "b" not in daemon.store.current()
    assert sorted(daemon.store.history("b")) == [1]  # history stays
    event = agent_events(daemon.store.events())[-1]
    assert (event["type"], event["agent_id"], event["version"], event["commit"]) == (
        "deleted", "b", 1, gone)
    remote.commit_push("b is back", {"agents/b.yaml": "system_prompt: B again\nmodel: gpt-4o\n"})
    daemon.sync()
    assert daemon.store.current()["b"].version == 2  # continues from its last version


def test_mass_deletion_guard(remote: Remote, make_daemon: Any) -> None:
    remote.commit_push("more", {"agents/c.yaml": A1, "agents/d.yaml": A1})
    daemon = make_daemon(remote)
    daemon.sync()
    remote.delete("agents/a.yaml", "agents/b.yaml", "agents/c.yaml")
    wipe = remote.commit_push("wipe")
    assert not daemon.sync().applied
    assert json.loads(daemon.store.state()["last_error"])["message"] == (
        "refusing to delete 3 of 4 agents in one commit; set `allow_mass_delete: true` to "
        "allow it")
    assert len(daemon.store.current()) == 4
    remote.commit_push("allow", {"configsync.yaml": SETTINGS + "allow_mass_delete: true\n"})
    assert daemon.sync().applied
    assert sorted(daemon.store.current()) == ["d"]
    assert wipe


def test_half_is_not_most(remote: Remote, make_daemon: Any) -> None:
    daemon = make_daemon(remote)
    daemon.sync()
    remote.delete("agents/a.yaml")
    remote.commit_push("drop one of two")
    assert daemon.sync().applied  # one deletion never trips the guard


def test_force_push_syncs_in_one_step(remote: Remote, make_daemon: Any,
                                      caplog: pytest.LogCaptureFixture) -> None:
    daemon = make_daemon(remote)
    daemon.sync()
    remote.commit_push("v2", {"agents/a.yaml": A1 + "temperature: 0.2\n"})
    remote.commit_push("v3", {"agents/a.yaml": A1 + "temperature: 0.3\n"})
    daemon.sync()
    git(remote.work, "reset", "-q", "--hard", "HEAD~2")
    remote.commit("rewritten 1", {"agents/a.yaml": A1 + "temperature: 0.5\n"})
    head = remote.commit("rewritten 2", {"agents/b.yaml": "system_prompt: B9\nmodel: gpt-4o\n"})
    remote.push(force=True)
    served = content(daemon.store)
    with caplog.at_level(logging.WARNING, logger="configsync"):
        assert daemon.sync().pending  # seen once: nothing written yet
        assert content(daemon.store)["current"] == served["current"]
        assert "event=force_push_seen" in caplog.text and "event=force_push " not in caplog.text
        daemon.sync()  # the next fetch agrees: applied
    assert "event=force_push " in caplog.text
    current = daemon.store.current()
    assert (current["a"].version, current["a"].commit, current["a"].config["temperature"]) == (
        4, head, 0.5)
    assert (current["b"].version, daemon.store.state()["commit"]) == (2, head)


def test_a_rollback_by_force_push_is_applied(remote: Remote, redis_server: RedisServer,
                                             tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The commonest undo: `git reset --hard HEAD~1 && git push -f`. Applied as one step from
    the last applied tree (versions keep rising), by `sync --once` (its two fetches agree)."""
    from configsync.cli import main

    args = ["sync", "--repo", remote.url, "--redis", redis_server.url, "--once",
            "--workdir", str(tmp_path / "wd")]
    good = remote.commit_push("good", {"agents/a.yaml": A1 + "temperature: 0.5\n"})
    assert main(args) == 0
    remote.commit_push("BAD change", {"agents/a.yaml": A1 + "temperature: 1.9\n"})
    assert main(args) == 0
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    assert (store.current()["a"].version, store.current()["a"].config["temperature"]) == (3, 1.9)
    git(remote.work, "reset", "-q", "--hard", "HEAD~1")
    remote.push(force=True)
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "event=force_push_seen" in err and "event=force_push " in err
    a = store.current()["a"]
    assert (a.version, a.config["temperature"], a.commit) == (4, 0.5, good)
    assert a.checksum == store.history("a")[2].checksum  # the same config as before BAD
    assert store.state()["commit"] == store.state()["seen"] == good


def test_a_lagging_replica_never_regresses(remote: Remote, make_daemon: Any,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """A source that answers an older head once (a replica behind the others) writes nothing:
    a head that is no fast-forward is applied only when the next fetch agrees."""
    daemon = make_daemon(remote)
    old = remote.commit_push("old", {"agents/a.yaml": A1 + "temperature: 0.1\n"})
    daemon.sync()
    new = remote.commit_push("new", {"agents/a.yaml": A1 + "temperature: 0.2\n"})
    daemon.sync()
    served = content(daemon.store)
    git(Path(remote.url), "update-ref", "refs/heads/main", old)  # the replica lags, once
    with caplog.at_level(logging.WARNING, logger="configsync"):
        result = daemon.sync()
    assert (result.pending, result.applied) == (True, False)
    assert "event=force_push_seen" in caplog.text
    git(Path(remote.url), "update-ref", "refs/heads/main", new)  # and catches up
    assert daemon.sync().applied
    after = content(daemon.store)
    assert after["current"] == served["current"] and after["events"] == served["events"]
    assert daemon.store.state()["commit"] == new


def test_a_stale_source_never_writes(remote: Remote, make_daemon: Any, redis_server: RedisServer,
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A developer's clone taken before a hot fix (the default --repo is the repository the
    command runs in) is another source: it refuses to write, and says how to take over."""
    from configsync.cli import main

    daemon = make_daemon(remote)
    daemon.sync()
    old_clone = tmp_path / "old-clone"
    git(tmp_path, "clone", "-q", remote.url, str(old_clone))
    hot = remote.commit_push("a1 hot fix", {"agents/a.yaml": A1 + "temperature: 0.9\n"})
    daemon.sync()
    served = content(daemon.store)
    monkeypatch.chdir(old_clone)
    args = ["sync", "--redis", redis_server.url, "--once", "--workdir", str(tmp_path / "wd")]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"configsync: error: namespace 'test' follows {remote.url} (branch main); this daemon "
        f"syncs {old_clone} (branch main), which may be a stale clone (or the namespace was "
        "taken over from elsewhere with --adopt): pass --adopt to make the namespace follow "
        "this source from now on, or use another --namespace")
    assert content(daemon.store) == served and daemon.store.state()["commit"] == hot


def test_a_killed_git_never_squashes_the_walk(remote: Remote, make_daemon: Any, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`git merge-base --is-ancestor` killed mid-run is an error to retry, not "no": read as
    "no", it turned a walk of two commits into one force-push step, for good."""
    from configsync.errors import GitError

    from .test_git import git_shim

    daemon = make_daemon(remote)
    daemon.sync()
    first = remote.commit_push("one", {"agents/a.yaml": A1 + "temperature: 0.1\n"})
    second = remote.commit_push("two", {"agents/a.yaml": A1 + "temperature: 0.2\n"})
    git_shim(tmp_path, monkeypatch, "merge-base", 1)
    with pytest.raises(GitError, match="merge-base"):
        daemon.sync()
    daemon.sync()
    history = daemon.store.history("a")
    assert (history[2].commit, history[3].commit) == (first, second)  # two steps, in order


def test_redis_flushed_rebuilds_the_same_versions(remote: Remote, make_daemon: Any,
                                                  redis_client: redis.Redis) -> None:
    daemon = make_daemon(remote)
    for i in range(1, 4):
        remote.commit_push(f"t{i}", {"agents/a.yaml": A1 + f"temperature: 0.{i}\n"})
        daemon.sync()
    remote.delete("agents/b.yaml")
    remote.commit_push("drop b")
    daemon.sync()
    before = content(daemon.store)
    epoch = daemon.store.state()["epoch"]
    redis_client.flushall()
    daemon.sync()
    after = content(daemon.store)
    assert after["current"] == before["current"]
    assert after["history"] == before["history"]
    assert after["state"] == before["state"]
    assert daemon.store.state()["epoch"] != epoch
    assert [e["type"] for e in daemon.store.events()] == ["rebuilt"]


def sync_each_change(remote: Remote, daemon: Daemon, changes: int) -> None:
    """Push ``changes`` commits, each a new temperature for agent a, syncing after each."""
    daemon.sync()
    for i in range(1, changes + 1):
        remote.commit_push(f"t{i}", {"agents/a.yaml": A1 + f"temperature: 0.{i}\n"})
        daemon.sync()


def test_keep_trims_history(remote: Remote, make_daemon: Any) -> None:
    daemon = make_daemon(remote, keep=2)
    sync_each_change(remote, daemon, 4)
    assert sorted(daemon.store.history("a")) == [4, 5]
    redis_client = daemon.store.redis
    redis_client.flushall()
    daemon.sync()
    assert sorted(daemon.store.history("a")) == [4, 5]

@pytest.mark.slow  # many commits, every check twice: in .ci/run, not the quick subset

def test_lowering_keep_trims_every_older_version(remote: Remote, make_daemon: Any) -> None:
    daemon = make_daemon(remote, keep=5)
    sync_each_change(remote, daemon, 8)
    assert sorted(daemon.store.history("a")) == [5, 6, 7, 8, 9]
    lower = make_daemon(remote, keep=2)
    remote.commit_push("t9", {"agents/a.yaml": A1 + "temperature: 1.9\n"})
    lower.sync()
    assert sorted(daemon.store.history("a")) == [9, 10]


def test_a_second_daemon_picks_up_where_the_first_stopped(remote: Remote,
                                                          make_daemon: Any) -> None:
    first = make_daemon(remote)
    first.sync()
    remote.commit_push("t1", {"agents/a.yaml": A1 + "temperature: 0.1\n"})
    second = make_daemon(remote)
    second.sync()
    first.sync()
    assert versions(first.store) == {"a": 2, "b": 1}
    updated = [e for e in agent_events(first.store.events()) if e["type"] == "updated"]
    assert len(updated) == 1


def test_stale_daemon_cannot_regress(remote: Remote, make_daemon: Any) -> None:
    ahead = make_daemon(remote)
    stale = make_daemon(remote)
    ahead.sync()
    stale.sync()
    head = remote.commit_push("t1", {"agents/a.yaml": A1 + "temperature: 0.1\n"})
    ahead.sync()
    # the stale daemon's clone never sees the new head: it must not write its older view
    stale.catch_up(stale.mirror.head("main"))
    assert ahead.store.state()["commit"] == head
    assert versions(ahead.store) == {"a": 2, "b": 1}


def test_unreachable_remote_is_a_clear_error(remote: Remote, make_daemon: Any,
                                             tmp_path: Path) -> None:
    from configsync.errors import GitError

    daemon = make_daemon(remote, url="https://user:s3cret@127.0.0.1:9/nope.git")
    with pytest.raises(GitError) as info:
        daemon.sync()
    assert "s3cret" not in str(info.value)
    assert str(info.value).startswith("git fetch https://127.0.0.1:9/nope.git main failed:")
    assert str(info.value).endswith("(is the remote reachable and the branch name right?)")
    config = (tmp_path / "mirror-0" / "config").read_text()
    assert "s3cret" not in config and not (tmp_path / "mirror-0" / "FETCH_HEAD").exists()


# -- faults, crashes, races and memory ------------------------------------------------------

def _history_of_changes(remote: Remote, count: int, rng: random.Random) -> str:
    """Push ``count`` commits: edits, an invalid commit, a deletion and a return."""
    head = ""
    for i in range(count):
        agent = f"agents/n{i % 5}.yaml"
        if i == count // 2:
            head = remote.commit(f"c{i} invalid", {agent: A1 + "temperature: 9\n"})
        elif i == count // 2 + 5 and (remote.work / "agents/n4.yaml").exists():
            remote.delete("agents/n4.yaml")
            head = remote.commit(f"c{i} drop n4")
        else:
            head = remote.commit(f"c{i}", {
                agent: A1 + f"temperature: {rng.randint(0, 20) / 10}\n"})
    remote.push()
    return head


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing(remote: Remote, make_daemon: Any,
                                                redis_server: Any, tmp_path: Path) -> None:
    rng = random.Random(7)
    clean, killed = make_daemon(remote, namespace="clean"), make_daemon(remote, namespace="kill")
    clean.sync()
    killed.sync()
    head = _history_of_changes(remote, 100, rng)
    progress = []
    # SIGKILL mid-walk: once the daemon has passed a random revision, at a random moment after
    # (waiting on progress, not on time, so a faster daemon is still caught mid-walk)
    for target in sorted(rng.sample(range(5, 80), 5)):
        proc = spawn_daemon(remote, redis_server.url, "kill", tmp_path / "wd", interval=0.05)
        wait_until(lambda target=target, proc=proc: int(killed.store.state()["revision"])
                   >= target or proc.poll() is not None, timeout=60, interval=0.0002)
        time.sleep(rng.uniform(0, 0.002))  # (a walk step takes about a millisecond)
        proc.kill()
        proc.wait()
        progress.append(killed.store.state()["revision"])
    proc = spawn_daemon(remote, redis_server.url, "kill", tmp_path / "wd", interval=0.05)
    try:  # then let one run to the head
        wait_until(lambda: killed.store.state()["seen"] == head, timeout=60)
    finally:
        proc.kill()
        proc.wait()
    clean.sync()
    assert len(set(progress)) >= 2, progress  # killed at different points of the walk
    assert content(killed.store) == content(clean.store)
    updates = [(e["agent_id"], e["version"]) for e in agent_events(killed.store.events())
               if e["type"] in ("updated", "deleted")]
    assert len(updates) == len(set(updates))


@pytest.mark.slow
def test_two_daemons_racing_write_what_one_would(remote: Remote, make_daemon: Any,
                                                 redis_server: Any, tmp_path: Path) -> None:
    rng = random.Random(11)
    clean = make_daemon(remote, namespace="clean")
    clean.sync()
    procs = [spawn_daemon(remote, redis_server.url, "race", tmp_path / f"wd{i}", interval=0.01)
             for i in range(2)]
    watcher = make_daemon(remote, namespace="race")
    logs = [tmp_path / f"wd{i}" / "daemon.log" for i in range(2)]
    try:
        wait_until(lambda: all("event=started" in log.read_text() for log in logs))
        wait_until(lambda: "seen" in watcher.store.state())
        head = ""
        for i in range(50):
            head = remote.commit_push(f"r{i}", {
                f"agents/n{i % 4}.yaml": A1 + f"temperature: {rng.randint(0, 20) / 10}\n"})
        wait_until(lambda: watcher.store.state().get("seen") == head)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            assert proc.wait(timeout=20) == 0
    clean.sync()
    assert content(watcher.store) == content(clean.store)
    events = [(e["type"], e.get("agent_id"), e.get("version"))
              for e in agent_events(watcher.store.events())]
    assert len(events) == len(set(events))
    assert all("event=stopped" in log.read_text() for log in logs)


def test_redis_down_mid_run_applies_when_it_returns(remote: Remote, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(tmp_path / "persistent", persist=True).start()
    client = redis.Redis.from_url(server.url, socket_timeout=2)
    daemon = Daemon(mirror=Mirror(tmp_path / "m", remote.url), store=Store(client, "test"))
    runner = threading.Thread(target=daemon.run, kwargs={"interval": 0.05}, daemon=True)
    try:
        with caplog.at_level(logging.INFO, logger="configsync"):
            runner.start()
            wait_until(lambda: "seen" in daemon.store.state())
            server.kill()
            head = remote.commit_push("while down", {"agents/a.yaml": A1 + "temperature: 1\n"})
            wait_until(lambda: "event=redis_unavailable" in caplog.text)
            time.sleep(0.5)  # several failed attempts, still one log line
            server.start()
            wait_until(lambda: daemon.store.state().get("commit") == head)
            wait_until(lambda: "event=recovered" in caplog.text)
        assert caplog.text.count("event=redis_unavailable") == 1
        assert daemon.store.current()["a"].version == 2
    finally:
        daemon.stopping.set()
        runner.join(timeout=20)
        server.kill()
        daemon.mirror.close()
    assert not runner.is_alive()


@pytest.mark.slow
def test_memory_stays_flat_over_2000_cycles(remote: Remote, make_daemon: Any) -> None:
    daemon = make_daemon(remote)

    def rss_kib() -> int:
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("VmRSS")).split()[1])

    def cycles(count: int, offset: int) -> None:
        for i in range(count):
            if (offset + i) % 100 == 0:
                remote.commit_push(f"m{offset + i}", {
                    "agents/a.yaml": A1 + f"temperature: {(offset + i) % 200 / 100}\n"})
            daemon.sync()

    cycles(200, 0)  # warm up: caches, allocator arenas
    gc.collect()
    before = rss_kib()
    cycles(2000, 200)
    gc.collect()
    after = rss_kib()
    assert daemon.store.current()["a"].version > 10
    assert after < before * 1.10, f"RSS grew from {before} KiB to {after} KiB"

@pytest.mark.slow  # many commits, every check twice: in .ci/run, not the quick subset

def test_incremental_checks_agree_with_full_checks(remote: Remote, make_daemon: Any) -> None:
    from configsync.repo import GitSource
    from configsync.validate import check_tree

    daemon = make_daemon(remote)
    daemon.sync()
    steps: list[tuple[dict[str, str | bytes], list[str], bool]] = [
        ({"agents/base.yaml": "system_prompt_file: prompts/p.md\nmodel: gpt-4o\n",
          "prompts/p.md": "P1\n", "agents/k/c.yaml": "extends: base\n"}, [], True),
        ({"prompts/p.md": "P2\n"}, [], True),
        ({"agents/k/d.yml": "extends: k/c\ntools: [search]\n"}, [], True),
        ({}, ["agents/base.yaml"], False),  # c and d lose their base: rejected
        ({"agents/base.yaml": "system_prompt: inline\nmodel: gpt-4o-mini\n"}, [], True),
        ({"agents/k/c.yaml": "extends: base\nsystem_prompt_file: prompts/p.md\n"}, [], True),
        ({}, ["prompts/p.md"], False),  # c's prompt file is gone: rejected
        ({"prompts/p.md": "P3\n", "configsync.yaml": SETTINGS + "limits: {max_file_bytes: 9999}\n"},
         [], True),
        ({"agents/a.yaml": "system_prompt: moved\nmodel: gpt-4o\n"}, ["agents/b.yaml"], True),
    ]
    for files, removed, ok in steps:
        if removed:
            remote.delete(*removed)
        remote.commit_push("step", files)
        assert daemon.sync().applied is ok
        applied = daemon.applied
        assert applied is not None and applied.report is not None
        full = check_tree(GitSource(daemon.mirror, applied.commit or ""))
        assert full.errors == []
        assert applied.report.configs == full.configs
        assert applied.report.chains == full.chains
        assert applied.report.prompt_of == full.prompt_of
        assert applied.report.dependents == full.dependents
        assert applied.report.prompt_users == full.prompt_users
        assert {a: v for a, (v, _) in applied.versions.items()} == versions(daemon.store)
    assert versions(daemon.store) == {"a": 2, "base": 3, "k/c": 5, "k/d": 4}


def test_library_use_leaves_the_processs_gc_alone(remote: Remote, make_daemon: Any) -> None:
    """gc.freeze() on every load and gc.disable() around validation also ran when a program
    imported configsync as a library: tuning belongs to the daemon's own process."""
    before, frozen = (gc.isenabled(), gc.get_threshold()), gc.get_freeze_count()
    daemon = make_daemon(remote)
    daemon.sync()
    remote.commit_push("t1", {"agents/a.yaml": A1 + "temperature: 0.1\n"})
    daemon.sync()
    daemon.applied = None
    daemon.sync()  # a load from the state again
    assert (gc.isenabled(), gc.get_threshold()) == before
    assert gc.get_freeze_count() <= frozen  # (a freeze adds every live object; some may die)
    gc.disable()
    try:
        make_daemon(remote, namespace="other").sync()  # a program that disabled it itself
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_long_walks_say_how_far_they_are(remote: Remote, make_daemon: Any,
                                         monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """A first sync of a long history was 45 s of silence: progress lines (at most every
    PROGRESS_SECONDS), and a rejection during the rebuild is logged like a later one."""
    from configsync import sync as sync_module

    for i in range(1, 6):
        remote.commit_push(f"t{i}", {"agents/a.yaml": A1 + f"temperature: 0.{i}\n"})
    remote.commit_push("bad", {"agents/a.yaml": A1 + "temperature: 9\n"})
    remote.commit_push("good", {"agents/a.yaml": A1 + "temperature: 0.9\n"})
    monkeypatch.setattr(sync_module, "PROGRESS_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="configsync"):
        make_daemon(remote).sync()
    progress = [r.getMessage() for r in caplog.records if "event=progress" in r.getMessage()]
    assert progress[:2] == ["event=progress walked=1/8", "event=progress walked=2/8"]
    assert len(progress) == 7  # not after the last one: `rebuilt` says that
    (rejected,) = [r.getMessage() for r in caplog.records if "event=rejected" in r.getMessage()]
    assert rejected.endswith('during=rebuild') and "temperature: must be at most 2" in rejected


def test_adopt_takes_a_namespace_over_once(remote: Remote, make_daemon: Any,
                                           tmp_path: Path) -> None:
    """Two daemons both left running with --adopt must not take turns for ever: each takes
    the namespace over once at most, then refuses like any other daemon."""
    from configsync.errors import UsageError

    other = Remote(tmp_path / "other")
    other.commit_push("other", {"configsync.yaml": SETTINGS,
                                "agents/a.yaml": "system_prompt: Other\nmodel: gpt-4o\n"})
    first, second = make_daemon(remote), make_daemon(other)
    first.adopt = second.adopt = True
    first.sync()  # the first sync: no state yet, nothing to adopt
    second.sync()  # takes it over
    assert first.store.current()["a"].config["system_prompt"] == "Other"
    first.sync()  # takes it back, once
    assert first.store.current()["a"].config["system_prompt"] == "You are A."
    with pytest.raises(UsageError, match="pass --adopt"):
        second.sync()  # already used its --adopt
    first.sync()
    assert first.store.state()["source"] == remote.url


def test_any_bytes_in_names_and_messages_are_read_not_fatal(remote: Remote,
                                                            make_daemon: Any) -> None:
    """A record separator in a file name, an author or a subject broke the walk's parsing and
    crashed every start ("poison commit"); a name that is not UTF-8 crashed on its way to
    Redis. Names are read as git wrote them (not UTF-8: U+FFFD)."""
    daemon = make_daemon(remote)
    daemon.sync()
    remote.commit_push("a harmless doc file", {"docs/notes\x1ex.txt": "hi\n"})
    remote.commit_push("fix\x1etypo", {"agents/a.yaml": A1 + "temperature: 0.1\n"},
                       GIT_AUTHOR_NAME="Eve\x1eMallory")
    remote.commit("latin-1", {"agents/a.yaml": A1 + "temperature: 0.2\n"})
    tree = git(remote.work, "rev-parse", "HEAD^{tree}").strip()
    parent = git(remote.work, "rev-parse", "HEAD~1").strip()
    raw = (f"tree {tree}\nparent {parent}\n".encode()  # git itself would re-encode these
           + b"author Ev\xe9 <e@example.org> 1767323045 +0000\n"
           + b"committer Ev\xe9 <e@example.org> 1767323045 +0000\n\nsubject \xff here\n")
    head = subprocess.run(["git", "hash-object", "-t", "commit", "-w", "--stdin", "--literally"],
                          input=raw, cwd=remote.work, capture_output=True,
                          check=True).stdout.decode().strip()
    git(remote.work, "update-ref", "refs/heads/main", head)
    remote.push()
    daemon.sync()
    assert daemon.store.state()["commit"] == head
    history = daemon.store.history("a")
    assert (history[2].message, history[2].author.split(" <")[0]) == ("fix\x1etypo",
                                                                      "Eve\x1eMallory")
    assert (history[3].author, history[3].message) == ("Ev\ufffd <e@example.org>",
                                                       "subject \ufffd here")
    daemon.store.redis.flushall()
    daemon.sync()  # and a rebuild reads it all again
    assert daemon.store.current()["a"].version == 3


def test_lowering_keep_trims_at_start_not_at_each_agents_next_version(
        remote: Remote, make_daemon: Any) -> None:
    daemon = make_daemon(remote, keep=5)
    sync_each_change(remote, daemon, 6)
    assert sorted(daemon.store.history("a")) == [3, 4, 5, 6, 7]
    lower = make_daemon(remote, keep=2)
    lower.sync()  # nothing new: a load, and every agent trimmed
    assert sorted(daemon.store.history("a")) == [6, 7]


def test_the_same_commit_applied_again_is_no_new_revision(remote: Remote,
                                                          make_daemon: Any) -> None:
    """Rolling back to the commit that is served, after a rejected one: `updated=0`, and the
    revision (which clients compare) stays."""
    daemon = make_daemon(remote)
    good = remote.commit_push("good", {"agents/a.yaml": A1 + "temperature: 0.1\n"})
    daemon.sync()
    revision = daemon.store.state()["revision"]
    remote.commit_push("bad", {"agents/a.yaml": "model: gpt-4o\n"})
    daemon.sync()
    git(remote.work, "reset", "-q", "--hard", good)
    remote.push(force=True)
    daemon.sync()
    daemon.sync()  # the rewind is confirmed
    state = daemon.store.state()
    assert (state["seen"], state["commit"], state["revision"]) == (good, good, revision)


def _as_contract_1(store: Store, contract: str | None) -> None:
    """Make a namespace look as configsync wrote it before contract 2: checksums of Python's
    json.dumps text, other version numbers, and no `contract` field (or ``contract``)."""
    import hashlib

    def old(record: Any, bump: int) -> str:
        data = json.loads(record.to_json())
        data["version"] += bump
        data["checksum"] = hashlib.sha256(json.dumps(
            data["config"], sort_keys=True, separators=(",", ":"),
            ensure_ascii=False).encode()).hexdigest()
        return json.dumps(data)

    client = store.redis
    for agent_id, record in store.current().items():
        client.hset(store.keys.current, agent_id, old(record, 10))
        for version, kept in store.history(agent_id).items():
            client.hset(store.keys.history(agent_id), str(version + 10), old(kept, 10))
            client.hdel(store.keys.history(agent_id), str(version))
        client.hset(store.keys.agents, agent_id, str(record.version + 10))
    client.hdel(store.keys.state, "contract")
    if contract is not None:
        client.hset(store.keys.state, "contract", contract)


@pytest.mark.parametrize("contract", [None, "1", "3"])
def test_a_state_of_another_contract_is_rebuilt_once_at_start(
        remote: Remote, make_daemon: Any, caplog: pytest.LogCaptureFixture,
        contract: str | None) -> None:
    """Contract 2 changed every checksum (RFC 8785): a daemon that starts on a state written
    under contract 1 (no `contract` field) or any other rebuilds it from history, once, in a
    new epoch with one `rebuilt` event, as after a flush."""
    from configsync.store import CONTRACT_VERSION

    first = make_daemon(remote)
    remote.commit_push("t1", {"agents/a.yaml": A1 + "temperature: 1\nmax_tokens: 100\n"})
    first.sync()
    remote.commit_push("t2", {"agents/a.yaml": A1 + "temperature: 0.00001\n"})
    first.sync()
    assert first.store.state()["contract"] == CONTRACT_VERSION == "2"
    expected = content(first.store)
    store = first.store
    _as_contract_1(store, contract)
    epoch = store.state()["epoch"]
    events = len(store.events())
    assert versions(store) == {"a": 13, "b": 11}

    restarted = make_daemon(remote)
    with caplog.at_level(logging.INFO, logger="configsync"):
        assert restarted.sync().applied
        restarted.sync()  # once: the next poll finds contract 2
    upgrades = [r.getMessage() for r in caplog.records if "contract_upgrade" in r.getMessage()]
    assert len(upgrades) == 1
    assert upgrades[0].startswith(f"event=contract_upgrade from={contract or 1} to=2 ")
    state = store.state()
    assert state["epoch"] != epoch and state["contract"] == "2"
    new_events = store.events()[events:]
    assert [e["type"] for e in new_events] == ["rebuilt"]
    assert new_events[0]["epoch"] == state["epoch"]
    after = content(store)
    assert after["current"] == expected["current"]
    assert after["history"] == expected["history"]
    assert after["state"] == expected["state"]
    assert versions(store) == {"a": 3, "b": 1}
    for agent_id, record in store.current().items():
        assert record.checksum == checksum(record.config)
        assert all(kept.checksum == checksum(kept.config)
                   for kept in store.history(agent_id).values())


def test_a_contract_upgrade_walks_to_the_new_head(remote: Remote, make_daemon: Any) -> None:
    """Commits pushed while the old daemon was down are part of the rebuild: one `rebuilt`
    event at the head, no `updated` events in a dying epoch."""
    first = make_daemon(remote)
    first.sync()
    _as_contract_1(first.store, None)
    events = len(first.store.events())
    head = remote.commit_push("t1", {"agents/a.yaml": A1 + "temperature: 1.0\n"})
    restarted = make_daemon(remote)
    restarted.sync()
    state = restarted.store.state()
    assert (state["commit"], state["seen"], state["contract"]) == (head, head, "2")
    assert [e["type"] for e in restarted.store.events()[events:]] == ["rebuilt"]
    assert versions(restarted.store) == {"a": 2, "b": 1}


def test_contract_is_written_with_every_applied_step(remote: Remote, make_daemon: Any,
                                                     redis_client: redis.Redis) -> None:
    daemon = make_daemon(remote)
    daemon.sync()
    epoch = daemon.store.state()["epoch"]
    redis_client.hset(daemon.store.keys.state, "contract", "3")  # a newer daemon, say
    remote.commit_push("t1", {"agents/a.yaml": A1 + "temperature: 0.1\n"})
    daemon.sync()  # running, not starting: no rebuild (two versions must not take turns)
    state = daemon.store.state()
    assert (state["epoch"], state["contract"]) == (epoch, "2")
    assert [e["type"] for e in daemon.store.events()] == ["rebuilt", "applied"]
    redis_client.hdel(daemon.store.keys.state, "contract")  # a daemon before contracts
    daemon.sync()  # a state without a contract is rebuilt whenever it is seen
    assert daemon.store.state()["epoch"] != epoch
    assert daemon.store.state()["contract"] == "2"


def test_a_contract_upgrade_never_regresses_to_a_lagging_head(remote: Remote,
                                                              make_daemon: Any) -> None:
    """A restart on a contract-1 state whose source answers an older head once rebuilds
    nothing until the next fetch agrees (invariant 5 holds for an upgrade too)."""
    old = remote.commit_push("old", {"agents/a.yaml": A1 + "temperature: 0.1\n"})
    first = make_daemon(remote)
    first.sync()
    new = remote.commit_push("new", {"agents/a.yaml": A1 + "temperature: 0.2\n"})
    first.sync()
    _as_contract_1(first.store, None)
    epoch = first.store.state()["epoch"]
    git(Path(remote.url), "update-ref", "refs/heads/main", old)  # the replica lags, once
    restarted = make_daemon(remote)
    assert restarted.sync().pending
    assert (first.store.state()["epoch"], first.store.state()["commit"]) == (epoch, new)
    git(Path(remote.url), "update-ref", "refs/heads/main", new)  # and catches up
    assert restarted.sync().applied
    state = first.store.state()
    assert (state["commit"], state["contract"]) == (new, "2") and state["epoch"] != epoch
    assert versions(first.store) == {"a": 3, "b": 1}


def test_a_requested_sync_ends_the_wait_and_a_burst_coalesces(
        remote: Remote, make_daemon: Any, redis_client: redis.Redis) -> None:
    daemon = make_daemon(remote)
    syncs: list[str] = []
    real_sync = daemon.sync

    def counted() -> Any:
        result = real_sync()
        syncs.append(result.head)
        return result

    daemon.sync = counted  # (the real sync, counted)
    runner = threading.Thread(target=daemon.run, kwargs={"interval": 3600})
    runner.start()
    try:
        wait_until(lambda: len(syncs) == 1)
        head = remote.commit_push("tune a", {"agents/a.yaml": "system_prompt: A2\nmodel: gpt-4o\n"})
        for _ in range(50):  # a burst: one sync for it, maybe one more, never fifty
            daemon.request_sync()
        wait_until(lambda: Store(redis_client, "test").state().get("commit") == head)
        time.sleep(0.3)  # (room for syncs a burst must not cause)
        assert 2 <= len(syncs) <= 3
    finally:
        daemon.stopping.set()
        runner.join(10)
    assert not runner.is_alive()


# -- issue 17 item 2: the daemon reading a state it did not write ---------------------------

@pytest.mark.parametrize("entry", ["{not json", "[1]", '{"agent_id": "a", "version": "1"}'])
def test_a_current_entry_that_is_no_snapshot_is_rebuilt_from_git(
        remote: Remote, make_daemon: Any, redis_client: redis.Redis,
        caplog: pytest.LogCaptureFixture, entry: str) -> None:
    daemon = make_daemon(remote)
    daemon.sync()
    before = content(daemon.store)
    redis_client.hset(daemon.store.keys.current, "a", entry)
    restarted = make_daemon(remote)
    with caplog.at_level(logging.ERROR, logger="configsync"):
        assert restarted.sync().applied
    assert content(restarted.store)["current"] == before["current"]
    assert any("event=corrupt_redis error=\"configsync:{test}:current field 'a': "
               in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("revision", ["many", "-1", "1.5", ""])
def test_a_state_revision_that_is_no_number_is_a_one_line_error(
        remote: Remote, make_daemon: Any, redis_server: RedisServer,
        redis_client: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        revision: str) -> None:
    from configsync.cli import main
    make_daemon(remote).sync()
    redis_client.hset("configsync:{test}:state", "revision", revision)
    assert main(["sync", "--repo", remote.url, "--redis", redis_server.url, "--namespace",
                 "test", "--once", "--workdir", str(tmp_path / "wd")]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"configsync: error: configsync:{{test}}:state field 'revision' is {revision!r}, not "
        "a number: not written by configsync (deleting configsync:{test}:state makes the "
        "daemon rebuild it from git)")


def test_an_agents_index_entry_that_is_no_version_is_rebuilt_from_git(
        remote: Remote, make_daemon: Any, redis_client: redis.Redis) -> None:
    daemon = make_daemon(remote)
    daemon.sync()
    before = content(daemon.store)
    redis_client.hset(daemon.store.keys.agents, "a", "many")
    with pytest.raises(CorruptDataError) as info:
        daemon.store.last_versions()
    assert str(info.value) == ("configsync:{test}:agents field 'a' is 'many', not a version "
                               "number")
    assert make_daemon(remote).sync().applied
    assert content(daemon.store)["current"] == before["current"]
    assert daemon.store.last_versions() == {"a": 1, "b": 1}


def test_a_daemon_waiting_out_a_failure_keeps_beating(remote: Remote, make_daemon: Any) -> None:
    """Issue 17 item 12: readers call a daemon gone when its heartbeat is older than
    3 × heartbeat_every + 10 s, so a daemon that waits out a failing remote (a backoff of up to
    30 s) beats while it waits, and writes heartbeat_every with each beat."""
    import threading

    daemon = make_daemon(remote)
    daemon.sync()
    daemon.store.heartbeat_every = 0.05
    resting = threading.Thread(target=daemon._rest, args=(30.0, 0.05), kwargs={"beat": True})
    resting.start()
    beats: set[str] = set()
    try:
        wait_until(lambda: beats.add(daemon.store.state()["heartbeat_at"]) or len(beats) >= 3)
        assert daemon.store.state()["heartbeat_every"] == "0.05"
    finally:
        daemon.stopping.set()  # (and a stop ends the wait at once)
        resting.join(10)
    assert not resting.is_alive()



def test_request_sync_ends_the_backoff_at_once(remote: Remote, make_daemon: Any,
                                               redis_client: redis.Redis,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 (red team of item 10): a repository back at its path (the local trigger), a
    webhook or a push asks for a sync while the daemon waits out failures: it syncs at once,
    not after the backoff (an hour here)."""
    from configsync.backoff import Backoff

    monkeypatch.setattr("configsync.sync.Backoff", lambda: Backoff(base=3600, cap=3600))
    daemon = make_daemon(remote)
    head = git(Path(remote.url), "rev-parse", "main").strip()
    away = Path(remote.url + ".away")
    Path(remote.url).rename(away)
    runner = threading.Thread(target=daemon.run, kwargs={"interval": 3600})
    runner.start()
    try:
        wait_until(lambda: (daemon.last_failure or "").startswith("remote_unreachable"))
        away.rename(remote.url)
        daemon.request_sync()
        wait_until(lambda: Store(redis_client, "test").state().get("commit") == head,
                   timeout=20)
        # (the sync clears last_failure once it returns, just after its state is written)
        wait_until(lambda: daemon.last_failure is None, timeout=20)
    finally:
        daemon.stopping.set()
        runner.join(10)
    assert not runner.is_alive()
