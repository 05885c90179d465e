"""The client's I/O-free rules (holdings.py): which revision may be claimed, what an event
asks for, never moving back, and pinned reads racing a new epoch."""

from __future__ import annotations

import threading
from typing import Any

from configsync.holdings import CHECK, NOTHING, Holdings, Plan
from configsync.snapshot import Record


def record(agent_id: str, version: int, temperature: float = 0.5) -> Record:
    return Record(agent_id, version, f"{version:064x}",
                  {"system_prompt": "x", "model": "m", "temperature": temperature}, "c",
                  "A <a@b>", "2026-01-01T00:00:00+00:00", "msg", "2026-01-01T00:00:01Z")


def held(revision: int = 5, epoch: str = "e") -> Holdings:
    holdings = Holdings("t")
    holdings.replace_all({"epoch": epoch, "revision": str(revision), "commit": "c5"},
                         {"a": record("a", 2), "b": record("b", 1)})
    return holdings


def applied(revision: int, *changes: tuple[str, int, bool], epoch: str = "e",
            listed: bool = True) -> dict[str, Any]:
    return {"type": "applied", "commit": f"c{revision}", "revision": revision, "epoch": epoch,
            "count": len(changes), "changes": [
                {"agent_id": a, "version": v, "deleted": d} for a, v, d in changes]
            if listed else None}


def test_the_next_revision_fetches_only_what_is_newer() -> None:
    holdings = held()
    event = applied(6, ("a", 3, False), ("b", 1, False), ("c", 1, False))
    assert holdings.plan(event) == Plan("fetch", ("a", "c"))


def test_a_gap_a_big_commit_another_epoch_or_nonsense_asks_for_a_check() -> None:
    holdings = held()
    assert holdings.plan(applied(7, ("a", 3, False))) == CHECK  # 6 was lost
    assert holdings.plan(applied(6, listed=False)) == CHECK  # too many agents to list
    assert holdings.plan(applied(6, ("a", 3, False), epoch="other")) == CHECK
    assert holdings.plan({"type": "rebuilt", "epoch": "e", "revision": 6}) == CHECK
    assert holdings.plan(None) == CHECK
    assert holdings.plan({"type": "applied", "epoch": "e", "revision": 6,
                          "changes": [{"agent": "a"}]}) == CHECK


def test_duplicates_and_late_events_ask_for_nothing() -> None:
    holdings = held()
    assert holdings.plan(applied(5, ("a", 1, True))) == NOTHING
    assert holdings.plan(applied(3, ("a", 1, False))) == NOTHING


def test_applying_claims_the_revision_and_the_commit() -> None:
    holdings = held()
    event = applied(6, ("a", 3, False), ("b", 1, True))
    changes = holdings.apply_event(event, {"a": record("a", 3, 0.9).to_json()})
    assert changes is not None
    assert [(c.agent_id, c.snapshot and c.snapshot.version) for c in changes] == [
        ("a", 3), ("b", None)]
    assert (holdings.revision, holdings.commit, sorted(holdings.current)) == (6, "c6", ["a"])
    assert holdings.get("a").config.temperature == 0.9
    assert holdings.apply_event(event, {}) is None  # moved on meanwhile: the caller checks


def test_a_record_gone_since_the_event_is_a_deletion_never_a_move_back() -> None:
    holdings = held()
    changes = holdings.apply_event(applied(6, ("a", 3, False)), {"a": None})
    assert changes is not None and [c.agent_id for c in changes] == ["a"]
    assert "a" not in holdings.current and holdings.revision == 6
    holdings = held()
    assert holdings.apply_event(applied(6, ("a", 3, False)),
                                {"a": record("a", 1).to_json()}) == []
    assert holdings.get("a").version == 2


def test_pinned_reads_racing_new_epochs() -> None:
    """Issue 9.3: remember() from a reader thread while a new epoch's replace_all walks
    the held versions raised 'dictionary changed size during iteration'."""
    holdings = held()
    errors: list[BaseException] = []
    stop = threading.Event()

    def pin() -> None:
        from configsync.holdings import typed
        version = 0
        try:
            while not stop.is_set():
                version += 1
                holdings.remember(typed(record(f"p{version % 50}", version), holdings.model))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pin) for _ in range(4)]
    for thread in threads:
        thread.start()
    for epoch in range(300):
        holdings.replace_all({"epoch": f"e{epoch}", "revision": "1", "commit": "c"},
                             {"a": record("a", epoch + 1)})
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
