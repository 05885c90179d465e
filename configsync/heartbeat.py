"""When a daemon counts as gone: the one rule that the clients (``status().daemon_alive``),
their Prometheus collector and ``configsync status`` share (DESIGN.md invariant "A silent
daemon is said").

A running daemon stamps ``state.heartbeat_at`` at every poll (``--interval``, written next to
it as ``state.heartbeat_every``), every 5 s of a long fetch or walk, and at least every
``max(interval, 1 s)`` while it waits out a failing remote. So a heartbeat older than
:func:`silence_limit` (three beats missed, plus :data:`SLACK`) means no daemon is writing this
namespace: the configs served may be behind git. Ages compare the daemon's clock with the
reader's (a skew between the hosts adds to them); both are UTC.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

__all__ = ["DEFAULT_EVERY", "MISSED_BEATS", "SLACK", "age", "alive", "beat_every", "beats",
           "silence_limit"]

DEFAULT_EVERY = 10.0
"""Seconds between beats for a state without ``heartbeat_every`` (a daemon run with
``--once``, or an older one): ``configsync sync``'s default ``--interval``."""
MISSED_BEATS = 3
SLACK = 10.0
"""Seconds added to the missed beats: a long fetch or walk beats every 5 s (twice that, for
a slow Redis write at its end), whatever the poll interval."""
LONGEST_EVERY = 86400.0
"""A ``heartbeat_every`` beyond a day is read as a day (no value from Redis hides a dead
daemon for longer)."""


DEV_SOURCE_PREFIX = "dev:"
"""``state.source`` of a namespace ``configsync dev`` writes (dev.py's DEV_SOURCE_PREFIX):
it stamps the heartbeat at each publish only, so its age says nothing."""


def beats(state: Mapping[str, str]) -> bool:
    """Whether a daemon's heartbeat is to be judged here: not for ``configsync dev``'s
    namespaces (they are written at each save, by no polling daemon)."""
    return not state.get("source", "").startswith(DEV_SOURCE_PREFIX)


def beat_every(state: Mapping[str, str]) -> float:
    """Seconds between the daemon's beats, from ``state.heartbeat_every`` (a positive decimal);
    :data:`DEFAULT_EVERY` when it is missing or unreadable."""
    try:
        every = float(state.get("heartbeat_every") or "")
    except ValueError:
        return DEFAULT_EVERY
    if not math.isfinite(every) or every <= 0:
        return DEFAULT_EVERY
    return min(every, LONGEST_EVERY)


def silence_limit(state: Mapping[str, str]) -> float:
    """Seconds a heartbeat may age before the daemon counts as gone:
    ``3 × heartbeat_every + 10`` (40 s with the default 10 s interval)."""
    return MISSED_BEATS * beat_every(state) + SLACK


def age(stamp: str | None, now: datetime) -> float | None:
    """Seconds from ``stamp`` (ISO 8601, ``Z`` or an offset) to ``now`` (timezone-aware);
    None when there is no stamp or it cannot be read. Negative when the daemon's clock is
    ahead of this one."""
    if not stamp:
        return None
    try:
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return (now - at).total_seconds()


def alive(heartbeat_age: float | None, limit: float) -> bool | None:
    """The verdict: True while the heartbeat is at most ``limit`` seconds old, None without
    one."""
    return None if heartbeat_age is None else heartbeat_age <= limit
