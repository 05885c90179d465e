"""Strict parsing of what Redis holds (redis_values.py, issue 17 item 2), and the red team's
table of poisoned values against every command that reads them (a real redis-server, the CLI
in this process, real clients)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from configsync import AsyncClient, Client
from configsync.cli import main
from configsync.embedded import RedisServer
from configsync.errors import CorruptDataError
from configsync.redis_values import is_version, last_error, parse_event, report_ok, state_int
from configsync.snapshot import Record, parse_json
from configsync.store import Store

from .conftest import Remote


def test_state_fields_and_last_error() -> None:
    assert state_int({"revision": "12"}, "revision") == 12 and state_int({}, "revision") is None
    assert last_error({"last_error": ""}) is None
    for bad_error in ("nope", "[]", '{"errors": "2"}', '{"line": 1.5}'):
        with pytest.raises(CorruptDataError, match="'last_error' is not a rejection"):
            last_error({"last_error": bad_error})
    for value in ("x", "-1", "1.5", "", " 1"):
        with pytest.raises(CorruptDataError, match="field 'revision' is"):
            state_int({"revision": value}, "revision", "configsync:{t}:state")


@pytest.mark.parametrize("data", [
    "{", "[]", "null", '"applied"', '{"type": 1}', '{"type": "applied", "revision": "1"}',
    '{"type": "applied", "revision": true, "changes": null}',
    '{"type": "applied", "revision": 1, "changes": "a"}',
    '{"type": "applied", "revision": 1, "changes": [{"agent_id": "a"}]}',
    '{"type": "applied", "revision": 1, "changes": [["a", 1, false]]}',
    b"\xff\xfe{",
])
def test_an_event_of_another_shape_is_named(data: str | bytes) -> None:
    with pytest.raises(CorruptDataError) as info:
        parse_event(data)
    assert str(info.value).startswith(("not JSON (", "not an event: "))


def test_events_of_the_contracts_shape_and_other_types_parse() -> None:
    assert parse_event('{"type": "future"}') == {"type": "future"}
    assert parse_event(b'{"type": "applied", "revision": 2, "changes": null}')["revision"] == 2


@pytest.mark.parametrize(("event", "problem"), [
    ('{"type":"rejected","commit":"x","revision":1,"epoch":"e","error":{"a":[1,2]}}',
     "'error' is not a string"),
    ('{"type":"rebuilt","commit":"x","revision":-1,"epoch":"e"}',
     "'revision' is not a count of applied commits"),
    ('{"type":"applied","commit":"x","revision":2,"epoch":"e","count":1,'
     '"changes":[{"agent_id":"a\\nb","version":1,"deleted":false}]}',
     "'changes' is not a list of {agent_id, version, deleted}"),
    ('{"type":"applied","commit":7,"revision":2,"epoch":"e","changes":null}',
     "'commit' is not a string"),
])
def test_events_that_break_the_contract_are_no_events(event: str, problem: str) -> None:
    """Red team 6, finding 3: `watch` printed a rejection whose error was an object (as a
    Python repr), a revision of -1 and an agent id no file can have."""
    with pytest.raises(CorruptDataError, match=re.escape(f"not an event: {problem}")):
        parse_event(event)
    assert [is_version(v) for v in ("1", "10", "0", "01", "x", "-1", "")] == [
        True, True, False, False, False, False, False]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_nan_and_infinities_in_redis_are_corrupt(number: str) -> None:
    """Red team's item 2: Python's json takes them, no JSON writer may print them."""
    good = Record("a", 1, "c", {"temperature": 0.5}, "sha", "me", "t", "m", "t").to_json()
    with pytest.raises(CorruptDataError, match="not JSON"):
        Record.from_json(good.replace("0.5", number))
    with pytest.raises(CorruptDataError, match="not JSON"):
        Record.from_json(good.replace('"version":1', f'"version":{number}'))
    with pytest.raises(CorruptDataError, match="not JSON"):
        parse_event(f'{{"type": "applied", "revision": {number}, "changes": null}}')
    with pytest.raises(CorruptDataError, match="'last_error' is not a rejection"):
        last_error({"last_error": f'{{"line": {number}}}'})
    assert not report_ok(None)
    with pytest.raises(ValueError):
        parse_json(f'{{"pid": {number}}}')
    assert parse_json('{"x": 1.5e300, "y": -0.0}') == {"x": 1.5e300, "y": -0.0}


K = Store(redis.Redis(), "test").keys  # (key names only: this client never connects)


def _edit(key: str, field: str, old: bytes, new: bytes) -> Callable[[redis.Redis], object]:
    return lambda r: r.hset(key, field, (r.hget(key, field) or b"").replace(old, new))


def _event(data: bytes | str, name: str = "event") -> Callable[[redis.Redis], object]:
    return lambda r: r.xadd(K.events, {name: data})


POISONS: dict[str, Callable[[redis.Redis], object]] = {
    "current not json": lambda r: r.hset(K.current, "b", "not json"),
    "current a list": lambda r: r.hset(K.current, "b", "[1,2]"),
    "current only an id": lambda r: r.hset(K.current, "b", '{"agent_id":"b"}'),
    "current bad utf-8": _edit(K.current, "b", b"You are B.", b"You are \xffB."),
    "current version x": _edit(K.current, "b", b'"version":2', b'"version":"x"'),
    "current version Infinity": _edit(K.current, "b", b'"version":2', b'"version":Infinity'),
    "current NaN": _edit(K.current, "b", b'"model"', b'"temperature":NaN,"model"'),
    "current 1e999": _edit(K.current, "b", b'"model"', b'"temperature":1e999,"model"'),
    "current deep": lambda r: r.hset(K.current, "b", "[" * 100_000),  # RecursionError
    "current bad id": _edit(K.current, "b", b'"agent_id":"b"', b'"agent_id":"a/../b"'),
    "current version 10**30": _edit(K.current, "b", b'"version":2', b'"version":' + b"9" * 30),
    "history deep": lambda r: r.hset(K.history("b"), "2", "{\"a\":" * 100_000),
    "last_error deep": lambda r: r.hset(K.state, "last_error", "[" * 100_000),
    "report deep": lambda r: r.set(K.client("z"), "[" * 100_000),
    "history not json": lambda r: r.hset(K.history("b"), "2", "notjson"),
    "history NaN": _edit(K.history("b"), "2", b'"model"', b'"temperature":NaN,"model"'),
    "agents index abc": lambda r: r.hset(K.agents, "b", "abc"),
    "state.revision abc": lambda r: r.hset(K.state, "revision", "abc"),
    "last_error a list": lambda r: r.hset(K.state, "last_error", "[1,2]"),
    "last_error NaN": lambda r: r.hset(K.state, "last_error", '{"line":NaN}'),
    "last_error bad utf-8": lambda r: r.hset(K.state, "last_error", b'{"message":"\xff"}'),
    "branch bad utf-8": lambda r: r.hset(K.state, "branch", b"ma\xffin"),
    "report NaN": lambda r: r.set(K.client("x"), '{"pid":NaN,"revision":1e999}'),
    "report odd": lambda r: r.set(K.client("y"), '{"instance_id":{"a":1},"pid":[1]}'),
    "event not json": _event("nope"),
    "event [1]": _event("[1]"),
    "event no event field": _event("1", name="x"),
    "event changes abc": _event('{"type":"applied","revision":3,"changes":"abc"}'),
    "event changes [{x:1}]": _event('{"type":"applied","revision":3,"changes":[{"x":1}]}'),
    "event bad utf-8": _event(b'{"type":"\xff"}'),
    "event revision NaN": _event('{"type":"applied","revision":NaN,"changes":null}'),
    "event deep": _event("[" * 100_000),
}
COMMANDS = {
    "get b": ["get", "b"], "get a": ["get", "a"], "get b yaml": ["get", "b", "--format", "yaml"],
    "status": ["status"], "status json": ["status", "--format", "json"],
    "history": ["history", "b", "--redis"], "history json": ["history", "b", "--redis",
                                                            "--format", "json"],
    "diff": ["diff", "b@v1", "b@v2", "--redis"],
    "watch": ["watch", "--count", "1"], "watch json": ["watch", "--count", "1", "--format",
                                                      "json"],
    "sync --once": ["sync", "--once"],
}


def _strict(text: str) -> None:
    for line in text.splitlines() if text.lstrip().startswith("{\"id\"") else [text]:
        parse_json(line)  # NaN or Infinity in our own JSON output fails here


@pytest.fixture
def poisonable(remote: Remote, redis_server: RedisServer, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> tuple[redis.Redis, dict[bytes, bytes]]:
    """Agents a and b, b at v1 and v2, synced; the keys' DUMPs to restore before each try."""
    monkeypatch.chdir(remote.work)
    monkeypatch.setenv("CONFIGSYNC_REDIS_URL", redis_server.url)
    argv = ["sync", "--once", "--repo", remote.url, "--workdir", str(tmp_path / "wd")]
    assert main(argv) == 0
    remote.commit_push("b v2", {"agents/b.yaml": "system_prompt: You are B.\nmodel: gpt-4o\n"})
    assert main(argv) == 0
    r = redis.Redis.from_url(redis_server.url)
    return r, {k: r.dump(k) for k in r.keys("*")}


@pytest.mark.slow
@pytest.mark.parametrize("poison", list(POISONS))
def test_a_poisoned_value_stops_no_command(
        poison: str, poisonable: tuple[redis.Redis, dict[bytes, bytes]], remote: Remote,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Red team's item 1 (and item 2's NaN): each (value kind x command) exits 0 or 1 with
    one-line errors and warnings, and JSON output that any reader parses; the clients start
    and serve the agents that are sound."""
    r, dumps = poisonable
    capsys.readouterr()
    for name, argv in COMMANDS.items():
        r.flushall()
        for key, value in dumps.items():
            r.restore(key, 0, value)
        after = r.xinfo_stream(K.events)["last-generated-id"].decode()
        POISONS[poison](r)
        r.xadd(K.events, {"event": json.dumps({"type": "rebuilt", "commit": "c", "revision": 9,
                                               "epoch": "e"})})
        extra = ["--repo", remote.url, "--workdir", str(tmp_path / "wd")] if name.startswith(
            "sync") else ["--since", after] if name.startswith("watch") else []
        code = main([*argv, *extra])
        out, err = capsys.readouterr()
        assert code in (0, 1), (name, code, err)
        assert "Traceback" not in err and "please report" not in err, (name, err)
        if not name.startswith("sync"):
            assert all(line.startswith(("configsync: error: ", "configsync: warning: "))
                       for line in err.splitlines()), (name, err)
        if code == 0 and (name.endswith("json") or name in ("get a", "get b")):
            _strict(out)
    url = os.environ["CONFIGSYNC_REDIS_URL"]
    with Client(redis=url, namespace="test") as client:
        assert client.get("a").config.system_prompt == "You are A."

    async def start() -> None:
        async with AsyncClient(redis=url, namespace="test") as aclient:
            assert aclient.get("a").config.system_prompt == "You are A."
    asyncio.run(start())
