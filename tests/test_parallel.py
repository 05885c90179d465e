"""fork_map: the same results as a plain call, and a failed child is redone in-process."""

from __future__ import annotations

import os
from collections.abc import Sequence

from configsync.parallel import fork_map


def squares(items: Sequence[int]) -> list[int]:
    return [i * i for i in items]


def test_same_as_serial() -> None:
    items = list(range(5003))
    assert fork_map(squares, items, jobs=3, min_chunk=100) == squares(items)
    assert fork_map(squares, items[:50], jobs=3, min_chunk=100) == squares(items[:50])
    assert fork_map(squares, [], jobs=2) == []


def test_work_runs_in_other_processes() -> None:
    parent = os.getpid()

    def pids(items: Sequence[int]) -> list[int]:
        return [os.getpid() for _ in items]

    seen = set(fork_map(pids, list(range(400)), jobs=2, min_chunk=100))
    assert parent in seen and len(seen) == 2


def test_failed_child_is_redone_here() -> None:
    parent = os.getpid()

    def flaky(items: Sequence[int]) -> list[int]:
        if os.getpid() != parent:
            raise RuntimeError("child fails")
        return list(items)

    assert fork_map(flaky, list(range(400)), jobs=2, min_chunk=100) == list(range(400))
