"""``configsync rollback``: the exact commit it makes on real git, and what a real daemon then
serves (the old checksum under a new version)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import redis

from configsync.cli import main
from configsync.embedded import RedisServer
from configsync.store import Store

from .conftest import Remote, git, sync_once

A1 = "system_prompt: You are A.\nmodel: gpt-4o\ntemperature: 0.3\nmax_tokens: 100\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def conflicting(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> Remote:
    """a: v2 sets temperature 0.3 and max_tokens 100; v3 warms it; v4 edits the next line, so
    `git revert` of v3's commit conflicts; b's edit rides in v3's commit."""
    remote.commit_push("a: v2", {"agents/a.yaml": A1})
    remote.commit_push("a warmer, b longer", {
        "agents/a.yaml": A1.replace("0.3", "0.9"),
        "agents/b.yaml": "system_prompt: You are B.\nmodel: gpt-4o-mini\ntools: [search]\n"
                         "max_tokens: 999\n"})
    remote.commit_push("a longer", {"agents/a.yaml": A1.replace("0.3", "0.9")
                                    .replace("100", "200")})
    monkeypatch.chdir(remote.work)
    return remote


def sync(remote: Remote, server: RedisServer, tmp_path: Path) -> int:
    return main(["sync", "--repo", remote.url, "--redis", server.url, "--once",
                 "--workdir", str(tmp_path / "wd")])


def test_where_git_revert_conflicts_one_commit_restores_the_version(
        conflicting: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    remote = conflicting
    assert sync(remote, redis_server, tmp_path) == 0
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    v2 = store.history("a")[2]
    warm = git(remote.work, "rev-parse", "HEAD~1").strip()
    done = git_status(remote.work, "revert", "--no-edit", warm)
    assert done != 0  # git revert conflicts here ...
    git(remote.work, "revert", "--abort")
    head = git(remote.work, "rev-parse", "HEAD").strip()
    capsys.readouterr()
    code, out, err = run(capsys, "rollback", "a", "--to", "v2")  # ... rollback does not
    assert (code, err) == (0, "")
    new = git(remote.work, "rev-parse", "HEAD").strip()
    assert out.splitlines()[0] == (f"committed {new[:12]} on the checked-out branch: a back to "
                                   f"v2's config ({v2.commit[:12]})")
    assert git(remote.work, "rev-parse", "HEAD~1").strip() == head
    assert git(remote.work, "diff", "--name-only", "HEAD~1", "HEAD").split() == ["agents/a.yaml"]
    assert git(remote.work, "show", "HEAD:agents/a.yaml") == A1
    assert git(remote.work, "status", "--porcelain") == ""  # working tree and index moved
    assert git(remote.work, "log", "-1", "--format=%B") == (
        "Roll back a to v2\n\n"
        f"a: from v4 ({head[:12]}) to the resolved config of v2 ({v2.commit[:12]}, \"a: v2\"). "
        "Versions as this branch's history (configsync history) numbers them.\n\n"
        f"Restored from {v2.commit[:12]}: agents/a.yaml\n\n"
        "Configsync-Rollback: a v4 -> v2\n\n")
    remote.push()
    assert sync(remote, redis_server, tmp_path) == 0
    served = store.current()
    assert (served["a"].version, served["a"].checksum) == (5, v2.checksum)
    assert served["b"].version == 2  # b's change in the same commit as a's stays


def git_status(cwd: Path, *args: str) -> int:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True).returncode


def test_to_a_commit_with_a_message_on_a_new_branch_pushed(
        conflicting: Remote, capsys: pytest.CaptureFixture[str]) -> None:
    remote = conflicting
    first = git(remote.work, "rev-list", "--max-parents=0", "HEAD").strip()
    head = git(remote.work, "rev-parse", "HEAD").strip()
    code, out, err = run(capsys, "rollback", "a", "--to", first[:8], "-m", "Undo a's tuning",
                         "--branch", "undo-a", "--push", "--format", "json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert (data["from"]["version"], data["to"]["version"], data["to"]["commit"]) == (4, 1, first)
    assert (data["branch"], data["pushed"], data["restored"]) == (
        "undo-a", "origin/undo-a", ["agents/a.yaml"])
    assert git(remote.work, "rev-parse", "HEAD").strip() == head  # the checkout stays
    assert git(remote.work, "rev-parse", "undo-a^").strip() == head
    assert git(Path(remote.url), "rev-parse", "undo-a").strip() == data["commit"]
    assert git(remote.work, "log", "-1", "--format=%s", "undo-a") == "Undo a's tuning\n"
    assert git(remote.work, "show", "undo-a:agents/a.yaml") == (
        "system_prompt: You are A.\nmodel: gpt-4o\n")


def test_a_dependency_is_named_and_restored_only_when_asked(
        remote: Remote, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    remote.commit_push("shared prompt", {
        "prompts/p.md": "Be kind.\n",
        "agents/a.yaml": "system_prompt_file: prompts/p.md\nmodel: gpt-4o\n",
        "agents/c.yaml": "system_prompt_file: prompts/p.md\nmodel: gpt-4o\n"})
    remote.commit_push("reword", {"prompts/p.md": "Be curt.\n"})
    monkeypatch.chdir(remote.work)
    head = git(remote.work, "rev-parse", "HEAD").strip()
    code, out, err = run(capsys, "rollback", "a", "--to", "2")
    assert (code, out) == (1, "")
    assert err == ("configsync: error: restoring agents/a.yaml is not enough: a's v2 also came "
                   "from prompts/p.md, which changed since and is shared with c; pass "
                   "--include-dependencies to restore it too, or edit by hand\n")
    assert git(remote.work, "rev-parse", "HEAD").strip() == head
    code, out, err = run(capsys, "rollback", "a", "--to", "2", "--include-dependencies")
    assert code == 0, err
    assert out.splitlines()[1:3] == ["restored: prompts/p.md", "also changes: c"]
    assert git(remote.work, "show", "HEAD:prompts/p.md") == "Be kind.\n"
    assert "Also changes: c\n" in git(remote.work, "log", "-1", "--format=%B")


PROMPTED = "system_prompt_file: prompts/{p}.md\nmodel: gpt-4o\n"


@pytest.mark.parametrize("files, changed, restored, also", [
    # a's own prompt file, read by no other agent
    ({"prompts/a.md": "Be kind.\n", "agents/a.yaml": PROMPTED.format(p="a")},
     {"prompts/a.md": "Be curt.\n"}, ["prompts/a.md"], []),
    # a base that only a extends (the base is an agent too: its own config comes back with it)
    ({"agents/base.yaml": "system_prompt: Base.\nmodel: gpt-4o\n",
      "agents/a.yaml": "extends: base\ntemperature: 0.2\n"},
     {"agents/base.yaml": "system_prompt: Base, curt.\nmodel: gpt-4o\n"},
     ["agents/base.yaml"], ["base"]),
    # a prompt a reads through a base that only a extends
    ({"prompts/b.md": "Be kind.\n", "agents/base.yaml": PROMPTED.format(p="b"),
      "agents/a.yaml": "extends: base\n"},
     {"prompts/b.md": "Be curt.\n"}, ["prompts/b.md"], ["base"]),
    # shared at the target, but no longer at the head: c reads a prompt of its own now
    ({"prompts/a.md": "Be kind.\n", "agents/a.yaml": PROMPTED.format(p="a"),
      "agents/c.yaml": PROMPTED.format(p="a")},
     {"prompts/a.md": "Be curt.\n", "prompts/c.md": "C.\n", "agents/c.yaml": PROMPTED.format(
         p="c")}, ["prompts/a.md"], []),
    # a's prompt file moved, the old one deleted: both come back (the new one stays)
    ({"prompts/a.md": "Be kind.\n", "agents/a.yaml": PROMPTED.format(p="a")},
     {"prompts/a2.md": "Be curt.\n", "agents/a.yaml": PROMPTED.format(p="a2")},
     ["agents/a.yaml", "prompts/a.md"], []),
])
def test_what_belongs_to_the_agent_alone_is_restored_without_a_flag(
        remote: Remote, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        files: dict[str, str], changed: dict[str, str], restored: list[str],
        also: list[str]) -> None:
    remote.commit_push("a's setup", files)
    remote.commit_push("a changes", changed)
    monkeypatch.chdir(remote.work)
    if "agents/a.yaml" in changed:  # the moved prompt file: the old one is deleted since
        remote.delete("prompts/a.md")
        remote.commit_push("drop the old prompt")
    head = git(remote.work, "rev-parse", "HEAD").strip()
    code, out, err = run(capsys, "rollback", "a", "--to", "2", "--format", "json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert (data["restored"], data["also_changes"]) == (restored, also)
    assert git(remote.work, "rev-parse", "HEAD~1").strip() == head
    for path in data["restored"]:
        assert git(remote.work, "show", f"HEAD:{path}") == files[path]
    code, out, _ = run(capsys, "rollback", "a", "--to", "2")
    assert (code, out) == (0, "a already has the config of v2: nothing to commit\n")


@pytest.mark.parametrize("files, changed, shared", [
    # a base that c extends too
    ({"agents/base.yaml": "system_prompt: Base.\nmodel: gpt-4o\n",
      "agents/a.yaml": "extends: base\n", "agents/c.yaml": "extends: base\n"},
     {"agents/base.yaml": "system_prompt: Base, curt.\nmodel: gpt-4o\n"}, "agents/base.yaml"),
    # a base that c extends through another base (c's chain holds it: c, mid, base)
    ({"agents/base.yaml": "system_prompt: Base.\nmodel: gpt-4o\n",
      "agents/a.yaml": "extends: base\n", "agents/mid.yaml": "extends: base\n",
      "agents/c.yaml": "extends: mid\n"},
     {"agents/base.yaml": "system_prompt: Base, curt.\nmodel: gpt-4o\n"}, "agents/base.yaml"),
    # a prompt read by a base that c extends too
    ({"prompts/b.md": "Be kind.\n", "agents/base.yaml": PROMPTED.format(p="b"),
      "agents/a.yaml": "extends: base\n", "agents/c.yaml": "extends: base\n"},
     {"prompts/b.md": "Be curt.\n"}, "prompts/b.md"),
    # not shared at the target, but shared at the head: c began to read a's prompt since
    ({"prompts/a.md": "Be kind.\n", "agents/a.yaml": PROMPTED.format(p="a")},
     {"prompts/a.md": "Be curt.\n", "agents/c.yaml": PROMPTED.format(p="a")}, "prompts/a.md"),
])
def test_a_shared_file_is_restored_only_when_asked_and_the_sharers_are_named(
        remote: Remote, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        files: dict[str, str], changed: dict[str, str], shared: str) -> None:
    remote.commit_push("a's setup", files)
    remote.commit_push("the shared file changes", changed)
    monkeypatch.chdir(remote.work)
    head = git(remote.work, "rev-parse", "HEAD").strip()
    code, out, err = run(capsys, "rollback", "a", "--to", "2")
    assert (code, out) == (1, "")
    assert err.startswith(f"configsync: error: restoring agents/a.yaml is not enough: a's v2 "
                          f"also came from {shared}, which changed since and is shared with ")
    sharers = err.split("shared with ", 1)[1].split(";", 1)[0].split(", ")
    assert "c" in sharers and "a" not in sharers and "base" not in sharers
    assert git(remote.work, "rev-parse", "HEAD").strip() == head
    code, out, err = run(capsys, "rollback", "a", "--to", "2", "--include-dependencies",
                         "--format", "json")
    assert (code, err) == (0, "")
    assert json.loads(out)["restored"] == [shared]
    assert git(remote.work, "show", f"HEAD:{shared}") == files[shared]


def test_refusals(conflicting: Remote, capsys: pytest.CaptureFixture[str]) -> None:
    remote = conflicting
    head = git(remote.work, "rev-parse", "HEAD").strip()
    (remote.work / "agents" / "b.yaml").write_text("model: gpt-4o\n")
    code, _, err = run(capsys, "rollback", "a", "--to", "2")
    assert code == 1 and "uncommitted changes (agents/b.yaml)" in err
    git(remote.work, "checkout", "-q", "--", ".")
    assert run(capsys, "rollback", "a", "--to", "9")[0] == 2
    assert run(capsys, "rollback", "zz", "--to", "1")[0] == 2
    assert run(capsys, "rollback", "a", "--to", "2", "--branch", "bad..name")[0] == 2
    for subject in ("two\nlines", "esc \x1b[2J", "Configsync-Rollback: a v1 -> v9\u2028x"):
        with pytest.raises(SystemExit) as exit_:
            main(["rollback", "a", "--to", "2", "-m", subject])
        assert exit_.value.code == 2
    code, _, err = run(capsys, "rollback", "a", "--to", "2", "--branch", "origin/main")
    assert code == 2 and "names an existing ref" in err
    assert run(capsys, "rollback", "a", "--to", "nope")[0] == 2
    code, out, _ = run(capsys, "rollback", "a", "--to", "4")
    assert (code, out) == (0, "a already has the config of v4: nothing to commit\n")
    git(remote.work, "checkout", "-q", "--detach")
    code, _, err = run(capsys, "rollback", "a", "--to", "2")
    assert code == 2 and "HEAD is detached" in err
    assert git(remote.work, "rev-parse", "HEAD").strip() == head
    with pytest.raises(SystemExit) as exit_:
        main(["rollback", "a"])  # --to is required
    assert exit_.value.code == 2


def test_a_rollback_that_would_not_validate_is_refused(
        remote: Remote, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    remote.commit_push("a uses search", {"agents/a.yaml": "system_prompt: A\nmodel: gpt-4o\n"
                                                          "tools: [search]\n"})
    remote.commit_push("search becomes lookup", {
        "configsync.yaml": "namespace: test\nmodels: [gpt-4o, gpt-4o-mini]\n"
                           "tools: {lookup: {description: Look up}}\n",
        "agents/a.yaml": "system_prompt: A\nmodel: gpt-4o\n", "agents/b.yaml": "x: 1\n"})
    monkeypatch.chdir(remote.work)
    head = git(remote.work, "rev-parse", "HEAD").strip()
    code, _, err = run(capsys, "rollback", "a", "--to", "2")
    assert code == 1  # the registry is no dependency of a's config: its own file says why
    assert err == ("configsync: error: restoring agents/a.yaml as of v2 does not validate now: "
                   "agents/a.yaml:3:9: tools[0]: `search` is not in the tool registry (known: "
                   "lookup); edit it by hand\n")
    code, _, err = run(capsys, "rollback", "a", "--to", "1")
    assert code == 1  # the head is broken elsewhere (b): the daemon would reject the rollback
    assert err.startswith("configsync: error: the rolled-back tree would not validate, so the "
                          "daemon would reject it (")
    assert "first: agents/b.yaml:1:1: " in err
    assert git(remote.work, "rev-parse", "HEAD").strip() == head
    assert git(remote.work, "status", "--porcelain") == ""


def test_settings_are_a_dependency_only_through_schema(
        remote: Remote, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    remote.commit_push("a warmer", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                     "model: gpt-4o\ntemperature: 0.9\n"})
    remote.commit_push("settings: a new model", {
        "configsync.yaml": "namespace: test\nmodels: [gpt-4o, gpt-4o-mini, gpt-5]\n"
                           "tools: {search: {description: Web search}}\n"})
    monkeypatch.chdir(remote.work)
    code, out, err = run(capsys, "rollback", "a", "--to", "1", "--include-dependencies")
    assert (code, err) == (0, "")
    assert out.splitlines()[1] == "restored: agents/a.yaml"  # configsync.yaml left as it is
    assert "gpt-5" in (remote.work / "configsync.yaml").read_text()


def test_a_deleted_agent_comes_back_and_a_failed_push_says_the_commit_is_made(
        remote: Remote, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    remote.delete("agents/b.yaml")
    remote.commit_push("drop b")
    monkeypatch.chdir(remote.work)
    git(remote.work, "remote", "set-url", "origin", str(remote.work.parent / "gone.git"))
    code, out, err = run(capsys, "rollback", "b", "--to", "1", "--push")
    head = git(remote.work, "rev-parse", "HEAD").strip()
    assert (code, out) == (1, "")
    assert err.startswith(f"configsync: error: committed {head[:12]} here, but the push "
                          "failed: git push origin main failed: ")
    assert git(remote.work, "show", "HEAD:agents/b.yaml").startswith("system_prompt: You are B")
    assert "b: from deleted to the resolved config of v1" in git(remote.work, "log", "-1",
                                                                 "--format=%B")


def test_a_config_root_in_a_subfolder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    top = tmp_path / "mono"
    sub = top / "ops" / "agents-config"
    (sub / "agents").mkdir(parents=True)
    git(top, "init", "-q", "-b", "main")
    (sub / "configsync.yaml").write_text("namespace: ops\n")
    (sub / "agents" / "a.yaml").write_text("system_prompt: A\nmodel: m\n")
    git(top, "add", "-A")
    git(top, "commit", "-qm", "one")
    (sub / "agents" / "a.yaml").write_text("system_prompt: A2\nmodel: m\n")
    git(top, "commit", "-qam", "two")
    monkeypatch.chdir(sub / "agents")
    code, _, err = run(capsys, "rollback", "a", "--to", "1")
    assert (code, err) == (0, "")
    assert git(top, "diff", "--name-only", "HEAD~1", "HEAD").split() == [
        "ops/agents-config/agents/a.yaml"]
    assert (sub / "agents" / "a.yaml").read_text() == "system_prompt: A\nmodel: m\n"


@pytest.mark.slow  # (a rewind is confirmed by a second fetch 2 s later)
def test_redis_numbers_after_a_force_push_the_daemon_followed(
        force_pushed: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(force_pushed.work)
    capsys.readouterr()
    code, _, err = run(capsys, "rollback", "a", "--to", "2", "--redis", redis_server.url)
    assert (code, err) == (2, "configsync: error: Redis's v2 of a is a config no version on this "
                              "branch has (made on a commit a force-push dropped); see "
                              "`configsync history a --redis`\n")
    # Redis v1 and v3 are one config: the number asked for is the one the message names
    code, out, _ = run(capsys, "rollback", "a", "--to", "1", "--redis", redis_server.url,
                       "--branch", "back-to-1")
    assert code == 0 and " back to v1's config (" in out
    assert "Configsync-Rollback: a v4 -> v1\n" in git(force_pushed.work, "log", "-1",
                                                      "--format=%B", "back-to-1")
    code, out, err = run(capsys, "rollback", "a", "--to", "3", "--redis", redis_server.url)
    assert (code, err) == (0, "")  # Redis v3: the initial config
    assert out.splitlines()[0].endswith("a back to v3's config "
                                        f"({git(force_pushed.work, 'rev-parse', 'HEAD~2')[:12]})"
                                        "; synced, it is v5")
    message = git(force_pushed.work, "log", "-1", "--format=%B")
    assert "Configsync-Rollback: a v4 -> v3\n" in message
    assert "; the daemon serves it as v5. Versions as namespace test in Redis numbers them." \
        in message
    force_pushed.push()
    assert sync_once(force_pushed, redis_server, tmp_path / "wd") == 0
    served = Store(redis.Redis.from_url(redis_server.url), "test").current()["a"]
    assert served.version == 5


def test_a_prompt_file_name_with_a_newline_never_reaches_the_output_raw(
        remote: Remote, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: a prompt file named ``x<newline>v9 deadbeef … Mallory<ESC>…`` (which
    validation now refuses) can forge no line of rollback's output nor of its commit."""
    name = "prompts/x\nv9 deadbeef  Mallory\x1b[2J\u202e.md"
    hostile = remote.commit_push("prompt in a file", {
        name: "You are A.", "agents/a.yaml": f"system_prompt_file: {json.dumps(name)}\n"
                                             "model: gpt-4o\n"})
    remote.commit_push("inline again", {"agents/a.yaml": A1})
    monkeypatch.chdir(remote.work)
    for fmt in ("text", "json"):
        code, out, err = run(capsys, "rollback", "a", "--to", hostile, "--include-dependencies",
                             "--format", fmt)
        for text in (out, err, git(remote.work, "log", "-1", "--format=%B")):
            assert not any(line.startswith("v9") for line in text.splitlines())
            assert "\x1b" not in text and "\u202e" not in text
    assert code == 2 and err.startswith("configsync: error: a fails validation at "), err
