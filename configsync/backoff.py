"""Capped exponential backoff with jitter, for every reconnect loop (daemon and clients)."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """``next()`` gives the next delay: doubling from ``base`` up to ``cap``, each drawn
    uniformly from its upper half so that many processes do not retry in step."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2 ** self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)  # noqa: S311 (jitter, not security)

    def reset(self) -> None:
        self.attempt = 0
