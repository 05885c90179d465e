"""history.py: an agent's versions from git alone equal what a real daemon wrote to Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from configsync.cli import main
from configsync.embedded import RedisServer
from configsync.git import GitRepo
from configsync.history import agent_history, versions_at
from configsync.store import Store

from .conftest import SETTINGS, Remote, git

BASE = "model: gpt-4o\ntemperature: 0.2\nsystem_prompt_file: prompts/base.md\n"


def sync_once(remote: Remote, server: RedisServer, workdir: Path,
              capsys: pytest.CaptureFixture[str]) -> int:
    code = main(["sync", "--repo", remote.url, "--redis", server.url, "--once",
                 "--workdir", str(workdir)])
    capsys.readouterr()
    return code


def scripted_history(remote: Remote, server: RedisServer, workdir: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    """Commits of every kind, each synced by a real daemon as it lands (the incremental path,
    not a rebuild): bases, prompt files, configsync.yaml, a rejected commit, a revert, a
    deletion and a re-creation."""
    steps: list[tuple[str, dict[str, str], list[str], int]] = [
        ("base and child", {"agents/base.yaml": BASE, "prompts/base.md": "Be kind.\n",
                            "agents/child.yaml": "extends: base\nmax_tokens: 100\n"}, [], 0),
        ("child's own change", {"agents/child.yaml": "extends: base\nmax_tokens: 200\n"},
         [], 0),
        ("base change", {"agents/base.yaml": BASE.replace("0.2", "0.4")}, [], 0),
        ("prompt change", {"prompts/base.md": "Be kind and brief.\n"}, [], 0),
        ("settings only", {"configsync.yaml": SETTINGS + "allow_mass_delete: false\n"}, [], 0),
        ("broken child", {"agents/child.yaml": "extends: base\nmax_tokens: zero\n"}, [], 1),
        ("fixed child, other value", {"agents/child.yaml": "extends: base\nmax_tokens: 300\n"},
         [], 0),
        ("delete a", {}, ["agents/a.yaml"], 0),
        ("a again, as it was", {"agents/a.yaml": "system_prompt: You are A.\nmodel: gpt-4o\n"},
         [], 0),
        ("noise", {"README.md": "not config\n"}, [], 0),
    ]
    shas = {}
    for message, files, deleted, code in steps:
        if deleted:
            remote.delete(*deleted)
        shas[message] = remote.commit_push(message, files)
        assert sync_once(remote, server, workdir, capsys) == code, message
    for sha, code in [(shas["fixed child, other value"], 1),  # brings the broken value back
                      ("HEAD", 0),  # the revert of that: the applied tree again, no version
                      (shas["base change"], 0)]:  # temperature 0.2 again
        git(remote.work, "revert", "--no-edit", sha)
        remote.push()
        assert sync_once(remote, server, workdir, capsys) == code, sha


def test_history_numbers_equal_the_daemons(remote: Remote, redis_server: RedisServer,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert sync_once(remote, redis_server, tmp_path / "wd", capsys) == 0
    scripted_history(remote, redis_server, tmp_path / "wd", capsys)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    with GitRepo(remote.work) as repo:
        head = repo.resolve("HEAD")
        for agent in ("a", "b", "base", "child"):
            served = store.history(agent)
            from_git = [v for v in agent_history(repo, head, agent) if not v.deleted]
            assert [(v.version, v.commit.sha, v.checksum) for v in from_git] == [
                (n, r.commit, r.checksum) for n, r in sorted(served.items())], agent
        applied, report = versions_at(repo, head)
    current = store.current()
    assert applied.versions == {a: (r.version, r.checksum) for a, r in current.items()}
    assert applied.commit == store.state()["commit"] == head
    assert set(report.configs) == set(current)


def test_causes_deletions_and_returns(remote: Remote, redis_server: RedisServer,
                                      tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert sync_once(remote, redis_server, tmp_path / "wd", capsys) == 0
    scripted_history(remote, redis_server, tmp_path / "wd", capsys)
    with GitRepo(remote.work) as repo:
        head = repo.resolve("HEAD")
        child = agent_history(repo, head, "child")
        a = agent_history(repo, head, "a")
    summary = [(v.version, v.commit.message, [(c.kind, c.path) for c in v.causes],
                [f.path for f in v.fields], v.returns_to) for v in child]
    assert summary == [
        (1, "base and child", [("own", "agents/child.yaml")],
         ["system_prompt", "model", "temperature", "max_tokens", "tools",
          "guardrail_threshold", "metadata"], None),
        (2, "child's own change", [("own", "agents/child.yaml")], ["max_tokens"], None),
        (3, "base change", [("base", "agents/base.yaml")], ["temperature"], None),
        (4, "prompt change", [("prompt", "prompts/base.md")], ["system_prompt"], None),
        # the rejected commit's change arrives with the next that applies, under its name
        (5, "fixed child, other value", [("own", "agents/child.yaml")], ["max_tokens"], None),
        (6, 'Revert "base change"', [("base", "agents/base.yaml")], ["temperature"], None),
    ]
    assert [(v.version, v.deleted, v.returns_to) for v in a] == [
        (1, False, None), (1, True, None), (2, False, 1)]
    assert a[2].fields == []  # re-created as it was: compared with its last config


def test_a_config_root_in_a_subfolder(tmp_path: Path) -> None:
    top = tmp_path / "monorepo"
    top.mkdir()
    git(top, "init", "-q", "-b", "main")
    (top / "app.py").write_text("print()\n")
    sub = top / "deploy" / "agents-config"
    (sub / "agents").mkdir(parents=True)
    (sub / "configsync.yaml").write_text(SETTINGS)
    (sub / "agents" / "a.yaml").write_text("system_prompt: A\nmodel: gpt-4o\n")
    git(top, "add", "-A")
    git(top, "commit", "-qm", "one")
    (sub / "agents" / "a.yaml").write_text("system_prompt: A2\nmodel: gpt-4o\n")
    (top / "app.py").write_text("print(1)\n")
    git(top, "commit", "-qam", "two")
    with GitRepo(sub) as repo:
        versions = agent_history(repo, repo.resolve("HEAD"), "a")
    assert [(v.version, v.commit.message, [c.path for c in v.causes]) for v in versions] == [
        (1, "one", ["agents/a.yaml"]), (2, "two", ["agents/a.yaml"])]
