"""Backoff grows, is capped, has jitter, and resets."""

from configsync.backoff import Backoff


def test_backoff() -> None:
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next() for _ in range(8)]
    for delay, ceiling in zip(delays, [0.5, 1, 2, 4, 4, 4, 4, 4], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jittered, not in lock-step
    backoff.reset()
    assert backoff.next() <= 0.5
