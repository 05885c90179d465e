"""Log lines that a peer of ``sync --listen`` can cause, bounded: each text a peer sent is
clipped, and each kind of line is rate-limited (issue 17, item 6: one unauthenticated
connection grew the log by 58–78 MiB in 2 s), and all kinds together at most TOTAL_PER_SECOND
(one peer can cause some six kinds); a secret given to :attr:`PeerLog.secrets` never reaches
the log (a peer can send it back in a header a parser error would echo). No I/O but the
logger; not thread-safe (the server's one event loop uses it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .logs import kv

__all__ = ["PER_SECOND", "SHOWN", "TOTAL_PER_SECOND", "PeerLog", "clip"]

SHOWN = 200
"""The most characters of one text a peer sent that reach the log (the rest is cut, ``…``)."""

PER_SECOND = 5
"""Lines of one kind (an event and an outcome) written a second at most; the lines held back
are counted in the next one written (``suppressed=N``)."""

TOTAL_PER_SECOND = 10
"""Lines of all kinds written a second at most (the red team of issue 17: one peer hitting six
kinds wrote 1,069 lines in 38 s); the lines held back are counted like those of one kind."""


def clip(value: object) -> object:
    """``value``, a text cut to SHOWN characters (other values as they are)."""
    if isinstance(value, str) and len(value) > SHOWN:
        return value[:SHOWN] + "…"
    return value


class PeerLog:
    """:meth:`write` ``kv(event, **fields)`` through ``log``, at most PER_SECOND lines a
    second for one ``kind``; ``clock`` gives seconds (monotonic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._window: dict[str, tuple[int, int, int]] = {}  # kind -> (second, written, held)
        self._total = (0, 0)  # (second, written)
        self.secrets: set[str] = set()

    def write(self, log: Callable[[str], None], kind: str, event: str, **fields: Any) -> bool:
        """Write the line unless ``kind`` had PER_SECOND lines this second, or all kinds
        TOTAL_PER_SECOND (False: held)."""
        second = int(self._clock())
        start, written, held = self._window.get(kind, (second, 0, 0))
        if start != second:
            written = 0
        total = self._total[1] if self._total[0] == second else 0
        if written >= PER_SECOND or total >= TOTAL_PER_SECOND:
            self._window[kind] = (second, written, held + 1)
            return False
        self._window[kind] = (second, written + 1, 0)
        self._total = (second, total + 1)
        if len(self._window) > 1024:  # kinds are few, but keep it bounded whatever they are
            self._window = {kind: self._window[kind]}
        log(kv(event, **{key: clip(self._redact(value)) for key, value in fields.items()},
               suppressed=held or None))
        return True

    def _redact(self, value: object) -> object:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret:
                    value = value.replace(secret, "***")
        return value
