"""``configsync history``: its text and JSON on a real repository, and ``--redis``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from configsync.cli import main
from configsync.embedded import RedisServer

from .conftest import FIXED_DATE, Remote, git


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def edited(remote: Remote) -> Remote:
    """Agent a: v1 (initial), v2 (temperature), v3 (prompt and a label), v4 (a revert of v3)."""
    remote.commit_push("warmer a", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                     "model: gpt-4o\ntemperature: 0.9\n"})
    remote.commit_push("reword a | <b>", {
        "agents/a.yaml": "system_prompt: |\n  You are A.\n  Be brief.\nmodel: gpt-4o\n"
                         "temperature: 0.9\nmetadata: {labels: {tier: gold}}\n"})
    git(remote.work, "revert", "--no-edit", "HEAD")
    remote.push()
    return remote


def shas(remote: Remote) -> list[str]:
    return git(remote.work, "log", "--format=%h", "--abbrev=12").split()


def test_text_newest_first_with_fields_and_returns(edited: Remote,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(edited.work)
    code, out, err = run(capsys, "history", "a")
    assert (code, err) == (0, "")
    revert, reword, warmer, initial = shas(edited)
    date = FIXED_DATE.replace(" ", "T")
    who = "Ada Author <ada@example.com>"
    assert out == f"""\
a: 4 versions on HEAD, newest first
v4  {revert}  {date}  {who}
    Revert "reword a | <b>"  [returns to v2]
    ~ system_prompt: +0 -1 lines
    - metadata.labels.tier: "gold"
v3  {reword}  {date}  {who}
    reword a | <b>
    ~ system_prompt: +1 -0 lines
    + metadata.labels.tier: "gold"
v2  {warmer}  {date}  {who}
    warmer a
    ~ temperature: 0.7 → 0.9
v1  {initial}  {date}  {who}
    initial configs
    created with 7 fields
"""
    code, out, _ = run(capsys, "history", "a", "--limit", "1")
    assert out.splitlines()[0] == "a: 4 versions on HEAD (showing 1 of 4 entries), newest first"
    assert len([line for line in out.splitlines() if line.startswith("v")]) == 1


def test_json(edited: Remote, capsys: pytest.CaptureFixture[str],
              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(edited.work)
    code, out, _ = run(capsys, "history", "a", "--format", "json", "--ref", "HEAD~1")
    data = json.loads(out)
    assert code == 0 and data["served"] is None
    assert [(v["version"], v["subject"], v["returns_to"]) for v in data["versions"]] == [
        (3, "reword a | <b>", None), (2, "warmer a", None), (1, "initial configs", None)]
    assert data["versions"][1]["fields"] == [
        {"path": "temperature", "kind": "changed", "old": 0.7, "new": 0.9}]
    assert data["versions"][0]["causes"] == [{"kind": "own", "path": "agents/a.yaml"}]
    assert set(data["versions"][0]) == {
        "agent_id", "version", "deleted", "commit", "author", "committed_at", "subject",
        "revision", "checksum", "returns_to", "fields", "causes", "served", "redis_version",
        "redis_versions"}


def test_redis_marks_the_version_served(edited: Remote, redis_server: RedisServer,
                                        tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    git(edited.work, "reset", "-q", "--hard", "HEAD~1")  # the daemon serves v3 ...
    edited.push(force=True)
    assert main(["sync", "--repo", edited.url, "--redis", redis_server.url, "--once",
                 "--workdir", str(tmp_path / "wd")]) == 0
    git(edited.work, "revert", "--no-edit", "HEAD")  # ... and v4 is committed, not synced
    monkeypatch.chdir(edited.work)
    capsys.readouterr()
    code, out, _ = run(capsys, "history", "a", "--redis", redis_server.url)
    lines = out.splitlines()
    assert code == 0
    served = [line for line in lines if "served (applied 20" in line]
    assert len(served) == 1 and served[0].startswith("    reword a | <b>  [served")
    assert "kept in Redis" in lines[lines.index(served[0]) + 4]  # v2's subject line
    assert lines[1].startswith("Redis serves v3 (commit ") and lines[1].endswith("Z)")
    code, out, _ = run(capsys, "history", "a", "--redis", redis_server.url, "--limit", "1")
    assert out.splitlines()[1] == lines[1]  # what is live, though v3 is not shown
    assert "[served" not in out
    monkeypatch.setenv("CONFIGSYNC_REDIS_URL", redis_server.url)
    code, out, _ = run(capsys, "history", "--redis", "a", "--format", "json")  # either order
    data = json.loads(out)
    assert (data["served"]["version"], data["served"]["numbered_alike"]) == (3, True)
    assert [v["served"] for v in data["versions"]] == [False, True, False, False]


def test_mistakes(edited: Remote, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(edited.work)
    assert run(capsys, "history", "aa") == (
        1, "", "configsync: error: agent aa has no version on HEAD "
               f"({git(edited.work, 'rev-parse', 'HEAD')[:12]}), did you mean `a`?\n")
    code, _, err = run(capsys, "history", "a", "--ref", "nope")
    assert code == 2 and err.startswith("configsync: error: unknown git ref: nope")
    code, _, err = run(capsys, "history", "a", "--redis", "redis://127.0.0.1:6390/0")
    assert code == 2 and "6390" in err and "\n" == err[-1] and err.count("\n") == 1
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "history", "a")
    assert code == 2 and "no configsync.yaml" in err


def test_since_and_field_filters(edited: Remote, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(edited.work)
    code, out, _ = run(capsys, "history", "a", "--field", "metadata", "--format", "json")
    assert [v["version"] for v in json.loads(out)["versions"]] == [4, 3, 1]  # 1: created
    code, out, _ = run(capsys, "history", "a", "--field", "system_prompt", "--limit", "1")
    assert out.splitlines()[0] == "a: 4 versions on HEAD (showing 1 of 4 entries), newest first"
    assert out.splitlines()[1].startswith("v4 ")
    code, out, _ = run(capsys, "history", "a", "--since", "2026-01-03")  # FIXED_DATE: 01-02
    assert (code, out) == (0, "a: 4 versions on HEAD; none matches\n")
    code, out, _ = run(capsys, "history", "a", "--since", "2026-01-02T03:04:05Z",
                       "--field", "temperature")
    assert [line[:3] for line in out.splitlines() if line.startswith("v")] == ["v2 ", "v1 "]
    with pytest.raises(SystemExit) as exit_:
        main(["history", "a", "--since", "last week"])
    assert exit_.value.code == 2
    # a created agent's metadata holds metadata.owner; a typo is no field, not "nobody"
    code, out, _ = run(capsys, "history", "a", "--field", "metadata.owner", "--format", "json")
    assert [v["version"] for v in json.loads(out)["versions"]] == [1]
    code, _, err = run(capsys, "history", "a", "--field", "temprature")
    assert (code, err) == (2, "configsync: error: --field temprature: no version of this agent "
                              "has that field, did you mean `temperature`? (fields: "
                              "guardrail_threshold, max_tokens, metadata, model, system_prompt, "
                              "temperature, tools)\n")


@pytest.mark.slow  # (a rewind is confirmed by a second fetch 2 s later)
def test_after_a_force_push_the_daemon_followed_redis_numbers_are_shown(
        force_pushed: Remote, redis_server: RedisServer, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(force_pushed.work)
    capsys.readouterr()
    code, out, _ = run(capsys, "history", "a", "--redis", redis_server.url)
    lines = out.splitlines()
    assert code == 0
    assert lines[1].startswith("Redis serves v4 (commit ")
    assert lines[2].startswith("Redis v2 (commit ") and lines[2].endswith(
        "\"bad deploy\", applied 20" + lines[2].split(", applied 20")[1])
    assert lines[2].endswith("): a config no version on this branch has (its commit was "
                             "dropped by a force-push)")
    assert lines[3].startswith("Redis numbers this agent's versions differently from this "
                               "history: the daemon followed a force-push live")
    assert lines[5].startswith("    a: 0.9  [Redis v4; served (applied ")
    assert lines[8] == "    initial configs  [Redis v1, v3; kept in Redis]"
    code, out, _ = run(capsys, "history", "a", "--redis", redis_server.url, "--format", "json")
    data = json.loads(out)
    assert [(v["version"], v["redis_version"], v["served"]) for v in data["versions"]] == [
        (2, 4, True), (1, 3, False)]
    assert data["served"]["numbered_alike"] is False
    assert [v["redis_versions"] for v in data["versions"]] == [[4], [1, 3]]
    assert [d["version"] for d in data["served"]["dropped"]] == [2]


def test_a_shallow_clone_numbers_nothing(edited: Remote, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "2", f"file://{edited.url}", str(shallow))
    monkeypatch.chdir(shallow)
    for argv in (["history", "a"], ["diff", "a@v1", "a@v2"], ["rollback", "a", "--to", "1"]):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, ""), argv
        assert err.startswith("configsync: error: this clone is shallow (git clone --depth), "
                              "so it cannot number versions"), argv
        assert "git fetch --unshallow" in err and err.count("\n") == 1
    assert git(shallow, "status", "--porcelain") == ""


def test_text_from_the_repository_is_escaped_on_every_line(
        remote: Remote, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: a subject, an author and a field key (a label) cannot forge a version line,
    colour the terminal or reorder the line (bidi controls)."""
    remote.commit_push("fix\u202e typo\x1b[2J", {
        "agents/a.yaml": "system_prompt: You are A.\nmodel: gpt-4o\nmetadata: {labels: "
                         '{"t\\nv9 deadbeef  Mallory\\e[31m": "x\\u2066y"}}\n'},
        GIT_AUTHOR_NAME="Eve\u2067\x1b]0;t")
    monkeypatch.chdir(remote.work)
    for fmt in ("text", "json"):
        code, out, _ = run(capsys, "history", "a", "--format", fmt)
        assert code == 0
        assert not [c for c in out if c != "\n" and (c < " " or "\x7f" <= c <= "\x9f"
                                                      or c in "\u202e\u2066\u2067")]
    code, out, _ = run(capsys, "history", "a")
    lines = out.splitlines()
    assert lines[1].startswith("v2  ") and lines[1].endswith(
        "  Eve\\u2067\\u001b]0;t <ada@example.com>")
    assert lines[2] == "    fix\\u202e typo\\u001b[2J"
    assert lines[3] == ('    + metadata.labels.t\\nv9 deadbeef  Mallory\\u001b[31m: '
                        '"x\\u2066y"')
