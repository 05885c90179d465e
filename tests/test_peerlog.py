"""peerlog.PeerLog: log lines a peer can cause, clipped and rate-limited (no I/O)."""

from __future__ import annotations

from configsync.peerlog import PER_SECOND, SHOWN, PeerLog, clip


def test_lines_of_one_kind_are_rate_limited_and_the_held_ones_counted() -> None:
    now = [100.0]
    lines: list[str] = []
    log = PeerLog(clock=lambda: now[0])
    written = [log.write(lines.append, "webhook:401", "webhook", n=i) for i in range(50)]
    assert written == [True] * PER_SECOND + [False] * (50 - PER_SECOND)
    assert log.write(lines.append, "webhook:400", "webhook", n=0)  # another kind: its own
    now[0] += 1.0
    assert log.write(lines.append, "webhook:401", "webhook", n=99)
    assert lines[-1] == f"event=webhook n=99 suppressed={50 - PER_SECOND}"
    assert len(lines) == PER_SECOND + 2


def test_texts_are_clipped() -> None:
    lines: list[str] = []
    PeerLog().write(lines.append, "k", "webhook", hook_event="x" * 100_000, status=401)
    assert len(lines[0]) < SHOWN + 100
    assert clip(7) == 7 and clip("short") == "short"
