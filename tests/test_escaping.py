"""Every command's output, walked with hostile text (issue 17, item 13): file names, commit
subjects, authors, field keys and values, prompt text, fleet reports and events written
straight into Redis. No control, line-breaking, bidi or other format character reaches stdout
or stderr raw, no hostile text starts a line of its own, and JSON output still parses.

The check is independent of ``configsync.escape``: it asks ``unicodedata`` for the category of
every character printed (Cc, Cf, Cs, Zl, Zp), so a character missing from ``UNSAFE`` fails.
"""

from __future__ import annotations

import json
import subprocess
import unicodedata
from pathlib import Path

import pytest
import redis
import yaml

from configsync.cli import main
from configsync.embedded import RedisServer

from .conftest import Remote, git, sync_once, write_tree

pytestmark = pytest.mark.slow

FORGED = "FORGED v9 deadbeef Mallory"
EVIL = ("\x1b[31m\x1b]0;title\x07\u202e\u2066\u2067\u2068\u2069\u202a\u202b\u202c\u202d"
        "\u200e\u200f\u061c\u200b\u200d\u2060\ufeff\xad\x7f\x85\x9b\u2028\u2029\r\t\x00"
        f"\U000e0041\n{FORGED}")
"""Hostile text: terminal escapes, every bidi control, zero-width and format characters, C0,
C1, DEL, line separators, a tag character, then a line that forges an audit entry."""
NAME = EVIL.replace("\x00", "")  # a file name holds no NUL
RAW = ("Cc", "Cf", "Cs", "Zl", "Zp")


def assert_clean(text: str, what: str) -> None:
    """No raw control or format character but the line ends, and no forged line."""
    for number, line in enumerate(text.split("\n"), 1):
        raw = sorted({f"U+{ord(c):04X}" for c in line if unicodedata.category(c) in RAW})
        assert not raw, f"{what}, line {number}: raw {', '.join(raw)} in {line!r}"
        assert not line.lstrip(" ").startswith(FORGED), f"{what}: forged line {line!r}"


def assert_json(text: str, what: str, *, lines: bool = False) -> None:
    assert_clean(text, what)
    for part in text.splitlines() if lines else [text]:
        json.loads(part)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    assert_clean(out.out, f"{argv[0]} stdout")
    assert_clean(out.err, f"{argv[0]} stderr")
    return code, out.out, out.err


def quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar (escapes, so the file itself is valid)."""
    return yaml.safe_dump(text, allow_unicode=False, width=10_000).removesuffix("...\n").strip()


def hostile_agent(temperature: str = "0.3") -> str:
    return (f"system_prompt: {quoted('Be kind.' + EVIL)}\nmodel: gpt-4o\n"
            f"temperature: {temperature}\nmetadata:\n  description: {quoted(EVIL)}\n"
            f"  labels:\n    {quoted('team' + EVIL)}: {quoted(EVIL)}\n")


@pytest.fixture
def hostile(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> Remote:
    """The remote with three commits of hostile subjects, authors and values; the last one
    rejected (a prompt file whose name holds EVIL). The clone is the working directory."""
    author = {"GIT_AUTHOR_NAME": "Eve" + NAME.replace("<", "").replace(">", "")}
    remote.commit_push("a: hostile" + NAME, {"agents/a.yaml": hostile_agent()}, **author)
    remote.commit_push("a: warmer" + NAME, {"agents/a.yaml": hostile_agent("0.9")}, **author)
    remote.commit_push("bad prompt" + NAME, {
        f"prompts/{NAME}.md": "x",
        "agents/b.yaml": f"system_prompt_file: {quoted(f'prompts/{NAME}.md')}\nmodel: gpt-4o\n"},
        **author)
    monkeypatch.chdir(remote.work)
    return remote


def test_validate_refuses_a_prompt_file_name_with_control_characters(
        hostile: Remote, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate")
    assert code == 1
    assert "agents/b.yaml:1:21: error: system_prompt_file: must not hold a control, " \
           "line-breaking or invisible format character (got 'prompts/\\u001b[31m" in out


@pytest.mark.parametrize("fmt", ["text", "json", "github"])
def test_validate(hostile: Remote, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    write_tree(hostile.work, {f"agents/{NAME}.yaml": "model: gpt-4o\n",
                              "agents/c.yaml": f"model: gpt-4o\n{quoted(EVIL)}: 1\n"
                                               f"system_prompt: {quoted(EVIL)}\n"})
    code, out, _ = run(capsys, "validate", "--format", fmt)
    assert code == 1
    if fmt == "json":
        assert_json(out, "validate json")
    assert "\\u202e" in out or "%E2%80%AE" in out or "\\u202E" in out


def test_diff_every_format(hostile: Remote, capsys: pytest.CaptureFixture[str]) -> None:
    first = git(hostile.work, "rev-list", "--max-parents=0", "HEAD").strip()
    for fmt in ("text", "json", "markdown"):
        code, out, _ = run(capsys, "diff", first, "HEAD", "--format", fmt)
        assert code == 1  # the head fails validation
        if fmt == "json":
            assert_json(out, "diff json")
        assert "warmer" not in out or fmt != "markdown" or "\\u202e" in out


def test_history_and_rollback(hostile: Remote, redis_server: RedisServer, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert sync_once(hostile, redis_server, tmp_path / "wd") == 1  # the head is rejected
    capsys.readouterr()
    for fmt in ("text", "json"):
        code, out, _ = run(capsys, "history", "a", "--redis", redis_server.url, "--format", fmt)
        assert code == 0
        if fmt == "json":
            assert_json(out, "history json")
        else:
            assert "metadata.labels.team\\u001b[31m" in out
    git(hostile.work, "rm", "-q", "-r", "agents/b.yaml", "prompts")
    git(hostile.work, "commit", "-q", "-m", "drop b")
    for fmt, version in (("text", "2"), ("json", "3")):
        code, out, _ = run(capsys, "rollback", "a", "--to", version, "--format", fmt)
        assert code == 0
        if fmt == "json":
            assert_json(out, "rollback json")
    body = git(hostile.work, "log", "-1", "--format=%B")
    assert_clean(body, "rollback's commit message")


def test_status_get_watch_with_hostile_redis(
        hostile: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sync_once(hostile, redis_server, tmp_path / "wd")
    client = redis.Redis.from_url(redis_server.url)
    report = {"instance_id": "i" + EVIL, "host": EVIL, "pid": EVIL, "revision": EVIL,
              "versions": {EVIL: EVIL}, "stale": True}
    client.set("configsync:{test}:client:x", json.dumps(report))
    client.set("configsync:{test}:client:y", json.dumps(report | {"versions": [EVIL]}))
    client.xadd("configsync:{test}:events", {"event": json.dumps(
        {"type": "rejected" + EVIL, "commit": EVIL, "revision": EVIL, "epoch": EVIL,
         "error": EVIL})})
    client.xadd("configsync:{test}:events", {"event": json.dumps(
        {"type": "applied", "commit": "c", "revision": 9, "epoch": "e", "count": 1,
         "changes": [{"agent_id": EVIL, "version": EVIL, "deleted": False}]})})
    client.hset("configsync:{test}:state", "last_error", json.dumps(
        {"commit": EVIL, "file": EVIL, "line": EVIL, "column": EVIL, "message": EVIL}))
    events = str(client.xlen("configsync:{test}:events"))
    url = redis_server.url
    for fmt in ("text", "json"):
        code, out, err = run(capsys, "status", "--redis", url, "--format", fmt)
        assert code == 1 and err.splitlines()[-1] + "\n" == (
            "configsync: warning: configsync:{test}:state field 'last_error' is not a "
            "rejection's JSON object; read as none\n")
        if fmt == "json":
            assert_json(out, "status json")
        else:
            assert_clean(out, "status text")  # (the reports of the wrong shape left out)
    # a snapshot filed under a hostile id (no agent file can have it) is corrupt: named in
    # one escaped line
    record = json.loads(client.hget("configsync:{test}:current", "a") or b"")
    client.hset("configsync:{test}:current", EVIL, json.dumps(record | {"agent_id": EVIL}))
    client.close()
    code, out, err = run(capsys, "status", "--redis", url)
    assert code == 1 and "'agent_id' is no agent id" in err
    assert_clean(err, "status error line")
    for fmt in ("json", "yaml"):
        code, out, _ = run(capsys, "get", "a", "--redis", url, "--namespace", "test",
                           "--format", fmt)
        assert code == 0
        loaded = json.loads(out) if fmt == "json" else yaml.safe_load(out)
        assert loaded["config"]["metadata"]["description"] == EVIL
        assert loaded["message"].startswith("a: warmer\x1b[31m\x1b]0;title\x07\u202e")
    code, _, err = run(capsys, "get", "nobody", "--redis", url, "--namespace", "test")
    assert code == 1 and err.startswith("configsync: error: no agent nobody")
    for fmt in ("text", "json"):
        # the applied event whose version is EVIL is no event (invariant 11): skipped, said
        code, out, _ = run(capsys, "watch", "--redis", url, "--namespace", "test", "--since",
                             "0", "--count", str(int(events) - 1), "--format", fmt)
        assert code == 0 and len(out.splitlines()) == int(events) - 1
        if fmt == "json":
            assert_json(out, "watch json", lines=True)


@pytest.mark.parametrize("log_format", ["kv", "json"])
def test_sync_logs(hostile: Remote, redis_server: RedisServer, tmp_path: Path,
                   capsys: pytest.CaptureFixture[str], log_format: str) -> None:
    code, _, err = run(capsys, "sync", "--repo", hostile.url, "--redis", redis_server.url,
                       "--once", "--workdir", str(tmp_path / "wd"), "--log-format", log_format)
    assert code == 1
    assert "rejected" in err
    if log_format == "json":
        assert_json(err, "sync json logs", lines=True)


def test_dev_prints_escaped_errors(hostile: Remote, redis_server: RedisServer,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "dev", "--once", "--redis", redis_server.url)
    assert code == 1
    assert "not published" in out


def test_init_and_schema_in_a_hostile_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / NAME
    folder.mkdir()
    monkeypatch.chdir(folder)
    code, _, _ = run(capsys, "init", "--format", "json")
    assert code == 0
    subprocess.run(["git", "checkout", "-q", "-b", "x" + NAME.replace("\n", "")
                    .replace("\x7f", "").replace("\x1b", "").replace("\x07", "")], cwd=folder)
    code, out, _ = run(capsys, "init", "--force", str(tmp_path / (NAME + "2")))
    assert code == 0 and "namespace:" in out
    monkeypatch.chdir(tmp_path / (NAME + "2"))
    code, _, err = run(capsys, "schema", "--out", NAME)
    assert code == 0 and "wrote" in err


@pytest.mark.parametrize("argv", [
    ["history", NAME],
    ["history", "a", "--ref", NAME],
    ["rollback", NAME, "--to", "1"],
    ["diff", NAME],
    ["validate", NAME],
    ["get", NAME, "--namespace", "test", "--redis", "redis://127.0.0.1:1/0"],
    ["status", "--namespace", NAME],
    ["watch", "--since", NAME, "--namespace", "test", "--redis", "redis://127.0.0.1:1/0"],
    ["sync", "--repo", NAME, "--once"],
    ["dev", NAME, "--once"],
    ["schema", NAME],
    [NAME],
])
def test_the_error_line_of_every_command(hostile: Remote, capsys: pytest.CaptureFixture[str],
                                         argv: list[str]) -> None:
    try:
        code, _, err = run(capsys, *argv)
    except SystemExit as exc:  # argparse: usage errors
        out = capsys.readouterr()
        assert_clean(out.err, f"{argv[0]} usage error")
        assert exc.code == 2
        return
    assert code in (1, 2) and err.startswith("configsync")

