"""Spread CPU-bound work over forked processes, for the CLI's big one-shot jobs.

Forking is only safe when no other thread holds a lock the child needs. The CLI and the sync
daemon (its loop, signals and retries are all on the main thread; its only other threads are the
local trigger's watchdog observer, which takes no lock but its own queue's and an Event's, and
the trigger's keeper, which waits on an Event and logs only when the watched repository is
lost or back, none of which a child touches: children only parse and hash, then ``os._exit``)
pass ``jobs`` > 1 for
full checks of big trees; the client library never forks, and a Daemon embedded in a threaded
program should be given ``jobs=1``, as ``configsync sync --listen`` does (its HTTP server is a
thread). Children inherit their inputs (nothing is sent to them) and
return pickled results through a pipe; a child that fails is redone in this process.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["fork_map"]

T = TypeVar("T")
R = TypeVar("R")


def _start(func: Callable[[Sequence[T]], list[R]], part: Sequence[T]) -> Callable[[], list[R]]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: work, send the results, leave without running any cleanup
        code = 1
        try:
            os.close(read_fd)
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(func(part), out, protocol=pickle.HIGHEST_PROTOCOL)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)

    def collect() -> list[R]:
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status != 0:
            return func(part)
        result: list[R] = pickle.loads(data)  # noqa: S301 (written by our own child)
        return result

    return collect


def fork_map(func: Callable[[Sequence[T]], list[R]], items: Sequence[T], *, jobs: int,
             min_chunk: int = 1000) -> list[R]:
    """``func(items)``, computed as ``jobs`` slices of at least ``min_chunk`` items, all but the
    first in forked children. ``func`` maps a slice to one result per item."""
    jobs = max(1, min(jobs, len(items) // min_chunk)) if hasattr(os, "fork") else 1
    if jobs == 1:
        return func(items)
    size = -(-len(items) // jobs)
    pending = [_start(func, items[i:i + size]) for i in range(size, len(items), size)]
    results = func(items[:size])
    for collect in pending:
        results.extend(collect())
    return results
