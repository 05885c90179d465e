"""peerlog.PeerLog: log lines a peer can cause, clipped and rate-limited (no I/O)."""

from __future__ import annotations

from configsync.peerlog import PER_SECOND, SHOWN, TOTAL_PER_SECOND, PeerLog, clip


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


def test_all_kinds_together_are_capped_and_the_held_ones_counted() -> None:
    # the red team: one peer hitting six kinds at 5 lines/s each wrote 1,069 lines in 38 s
    now = [100.0]
    lines: list[str] = []
    log = PeerLog(clock=lambda: now[0])
    for i in range(60):
        log.write(lines.append, f"kind{i % 6}", "http_error", n=i)
    assert len(lines) == TOTAL_PER_SECOND
    now[0] += 1.0
    assert log.write(lines.append, "kind0", "http_error", n=99)
    assert "suppressed=" in lines[-1]


def test_a_secret_never_reaches_the_line() -> None:
    lines: list[str] = []
    log = PeerLog()
    log.secrets.add("s3cret")
    log.write(lines.append, "k", "http_error", detail="b'X-Gitlab-Token: s3cret\\x01'")
    assert "s3cret" not in lines[0] and "***" in lines[0]
