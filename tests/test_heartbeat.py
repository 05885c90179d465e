"""heartbeat.py: when a daemon counts as gone (no I/O: a table per rule)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from configsync import heartbeat

NOW = datetime(2026, 12, 8, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("every", "seconds"), [
    (None, 10.0),      # a --once daemon, or an older one: the default --interval
    ("10", 10.0),
    ("0.05", 0.05),
    ("2.5", 2.5),
    ("", 10.0),
    ("0", 10.0),       # what no daemon writes: the default, never "never silent"
    ("-5", 10.0),
    ("nan", 10.0),
    ("inf", 10.0),
    ("ten", 10.0),
    ("1e9", 86400.0),  # no value from Redis hides a dead daemon for more than a day
])
def test_the_beat_comes_from_the_state(every: str | None, seconds: float) -> None:
    state = {} if every is None else {"heartbeat_every": every}
    assert heartbeat.beat_every(state) == seconds
    assert heartbeat.silence_limit(state) == pytest.approx(3 * seconds + 10)


@pytest.mark.parametrize(("stamp", "age"), [
    ("2026-12-08T02:59:20.000Z", 40.0),
    ("2026-12-08T02:59:19.500Z", 40.5),
    ("2026-12-08T04:00:00+01:00", 0.0),
    ("2026-12-08T03:00:05.000Z", -5.0),  # the daemon's clock ahead of ours
    ("2026-12-08T02:59:20", None),       # no zone: not what the daemon writes
    ("yesterday", None),
    ("", None),
    (None, None),
])
def test_age(stamp: str | None, age: float | None) -> None:
    assert heartbeat.age(stamp, NOW) == age


@pytest.mark.parametrize(("age", "limit", "verdict"), [
    (None, 40.0, None), (0.0, 40.0, True), (40.0, 40.0, True), (40.1, 40.0, False),
    (-3.0, 40.0, True),
])
def test_alive(age: float | None, limit: float, verdict: bool | None) -> None:
    assert heartbeat.alive(age, limit) is verdict


@pytest.mark.parametrize(("source", "judged"), [
    ("https://git.example.com/configs.git", True), ("/srv/configs", True), ("", True),
    ("dev:/home/ada/configs", False),  # configsync dev: stamped at each save only
])
def test_only_a_daemons_heartbeat_is_judged(source: str, judged: bool) -> None:
    assert heartbeat.beats({"source": source}) is judged


def test_the_dev_prefix_is_dev_pys() -> None:
    from configsync.dev import DEV_SOURCE_PREFIX

    assert heartbeat.DEV_SOURCE_PREFIX == DEV_SOURCE_PREFIX  # (the client never imports dev)
