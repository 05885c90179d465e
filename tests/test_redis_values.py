"""Strict parsing of what Redis holds (redis_values.py, issue 17 item 2): no I/O."""

from __future__ import annotations

import pytest

from configsync.errors import CorruptDataError
from configsync.redis_values import is_version, last_error, parse_event, report_ok, state_int
from configsync.snapshot import Record, parse_json


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
