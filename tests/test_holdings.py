"""The client's I/O-free rules (holdings.py): which revision may be claimed, what an event
asks for, never moving back, and pinned reads racing a new epoch."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from configsync.holdings import CHECK, NOTHING, Change, Holdings, Plan
from configsync.snapshot import Record, checksum


def record(agent_id: str, version: int, temperature: float = 0.5) -> Record:
    config = {"system_prompt": "x", "model": "m", "temperature": temperature}
    return Record(agent_id, version, checksum(config), config, "c",
                  "A <a@b>", "2026-01-01T00:00:00+00:00", "msg", "2026-01-01T00:00:01Z")


def js(records: dict[str, Record]) -> dict[str, str]:
    """``current`` as Redis holds it: agent id -> snapshot JSON."""
    return {agent_id: r.to_json() for agent_id, r in records.items()}


def held(revision: int = 5, epoch: str = "e") -> Holdings:
    holdings = Holdings("t")
    holdings.replace_all({"epoch": epoch, "revision": str(revision), "commit": "c5"},
                         js({"a": record("a", 2), "b": record("b", 1)}))
    return holdings


def applied(revision: int, *changes: tuple[str, int, bool], epoch: str = "e",
            listed: bool = True) -> dict[str, Any]:
    return {"type": "applied", "commit": f"c{revision}", "revision": revision, "epoch": epoch,
            "count": len(changes), "changes": [
                {"agent_id": a, "version": v, "deleted": d} for a, v, d in changes]
            if listed else None}


def test_the_next_revision_fetches_every_agent_it_lists() -> None:
    holdings = held()
    event = applied(6, ("a", 3, False), ("b", 1, True), ("c", 1, False))
    assert holdings.plan(event) == Plan("fetch", ("a", "b", "c"))


def test_a_deletion_redis_does_not_confirm_is_not_applied() -> None:
    """A forged (or foreign) event saying `b` was deleted: Redis still serves it."""
    holdings = held()
    changes = holdings.apply_event(applied(6, ("b", 10**9, True)),
                                   {"b": record("b", 1).to_json()})
    assert changes == [] and holdings.get("b").version == 1


def test_a_check_repairs_a_revision_and_commit_that_events_got_wrong() -> None:
    holdings = held()
    assert holdings.apply_event(applied(6), {}) == []  # a forged, empty R + 1
    assert (holdings.revision, holdings.commit) == (6, "c6")
    holdings.replace_all({"epoch": "e", "revision": "5", "commit": "c5"},
                         js({"a": record("a", 2), "b": record("b", 1)}))
    assert (holdings.revision, holdings.commit) == (5, "c5")


def test_a_config_the_model_refuses_keeps_the_held_version_and_holds_up_nobody() -> None:
    from pydantic import Field

    from configsync.model import AgentConfig

    class Cool(AgentConfig):
        temperature: float = Field(0.7, ge=0, le=1)

    holdings = Holdings("t", Cool)
    holdings.replace_all({"epoch": "e", "revision": "5", "commit": "c5"},
                         js({"a": record("a", 2), "b": record("b", 1)}))
    changes = holdings.apply_event(applied(6, ("a", 3, False), ("b", 2, False)), {
        "a": record("a", 3, 1.5).to_json(), "b": record("b", 2, 0.2).to_json()})
    assert changes is not None and [c.agent_id for c in changes] == ["b"]
    assert holdings.get("a").version == 2 and holdings.get("b").version == 2
    assert holdings.revision == 6 and "temperature" in holdings.model_errors["a"]
    holdings.replace_all({"epoch": "e", "revision": "7", "commit": "c7"},
                         js({"a": record("a", 4, 0.1), "b": record("b", 2, 0.2)}))
    assert holdings.get("a").version == 4 and holdings.model_errors == {}


def test_a_gap_a_big_commit_another_epoch_or_nonsense_asks_for_a_check() -> None:
    holdings = held()
    assert holdings.plan(applied(7, ("a", 3, False))) == CHECK  # 6 was lost
    assert holdings.plan(applied(6, listed=False)) == CHECK  # too many agents to list
    assert holdings.plan(applied(6, ("a", 3, False), epoch="other")) == CHECK
    assert holdings.plan({"type": "rebuilt", "epoch": "e", "revision": 6}) == CHECK
    assert holdings.plan(None) == CHECK
    assert holdings.plan({"type": "applied", "epoch": "e", "revision": 6,
                          "changes": [{"agent": "a"}]}) == CHECK


def test_late_events_ask_for_nothing_and_the_revision_held_for_a_check() -> None:
    holdings = held()
    assert holdings.plan(applied(3, ("a", 1, False))) == NOTHING
    # the commit served, applied again (a rewind back to it): last_error may have cleared
    assert holdings.plan(applied(5)) == CHECK


def test_every_change_must_have_the_contracts_shape() -> None:
    holdings = held()
    for change in ({"agent_id": "a", "version": "zz", "deleted": True},
                   {"agent_id": "a", "version": 3, "deleted": 0},
                   {"agent_id": 7, "version": 3, "deleted": False},
                   {"agent_id": "a", "version": True, "deleted": False}, "a"):
        event = {"type": "applied", "commit": "c", "revision": 6, "epoch": "e",
                 "changes": [change]}
        assert holdings.plan(event) == CHECK, change
    assert holdings.plan({**applied(6), "revision": 6.0}) == CHECK


def test_applying_claims_the_revision_and_the_commit() -> None:
    holdings = held()
    event = applied(6, ("a", 3, False), ("b", 1, True))
    changes = holdings.apply_event(event, {"a": record("a", 3, 0.9).to_json(), "b": None})
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
                             js({"a": record("a", epoch + 1)}))
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []


STATE5 = {"epoch": "e", "revision": "5", "commit": "c5"}


def test_a_full_read_overrules_a_forged_higher_version_in_the_same_epoch() -> None:
    """Issue 17.1: Redis's `current` at a check wins for every agent, a lower version too;
    the forged version is gone from pinned reads as well."""
    holdings = held()
    assert holdings.apply_event(applied(6, ("a", 999999, False)),
                                {"a": record("a", 999999, 1.99).to_json()})
    assert holdings.get("a").version == 999999 and holdings.unconfirmed == {"a"}
    changes = holdings.replace_all(STATE5, js({"a": record("a", 2), "b": record("b", 1)}))
    assert changes is not None and [(c.agent_id, c.snapshot and c.snapshot.version)
                                    for c in changes] == [("a", 2)]
    assert (holdings.get("a").version, holdings.revision, holdings.commit) == (2, 5, "c5")
    assert holdings.pinned("a", 999999) is None and holdings.unconfirmed == set()


def test_a_read_older_than_the_last_check_is_believed_only_when_it_persists() -> None:
    """Replica lag: a state behind the last check's is not taken once; a forged
    `state.revision` (then restored) does not pin the client: the second read in a row wins."""
    holdings = held(revision=9)
    assert holdings.replace_all(STATE5, js({"a": record("a", 1), "b": record("b", 1)})) is None
    assert holdings.get("a").version == 2 and holdings.revision == 9
    changes = holdings.replace_all(STATE5, js({"a": record("a", 1), "b": record("b", 1)}))
    assert changes is not None and holdings.get("a").version == 1 and holdings.revision == 5
    # an in-between read that is not older resets the count
    holdings = held(revision=9)
    assert holdings.replace_all(STATE5, js({"a": record("a", 2)})) is None
    assert holdings.replace_all({**STATE5, "revision": "9"}, js({"a": record("a", 2)})) == [
        Change("b", None)]
    assert holdings.replace_all(STATE5, js({"a": record("a", 2)})) is None


def test_events_are_confirmed_against_current_before_a_check_says_nothing_changed() -> None:
    holdings = held()
    event = applied(6, ("a", 3, False))
    text = record("a", 3).to_json()
    assert holdings.apply_event(event, {"a": text})
    state6 = {"epoch": "e", "revision": "6", "commit": "c6"}
    assert holdings.confirm(state6) is None  # the state agrees: compare agent a first
    assert holdings.verify({"a": text}) is True and holdings.confirm(state6) is True
    assert holdings.apply_event(applied(7, ("b", 2, False)), {"b": record("b", 2).to_json()})
    state7 = {"epoch": "e", "revision": "7", "commit": "c7"}
    assert holdings.confirm(state7) is None
    assert holdings.verify({"b": record("b", 1).to_json()}) is False  # restored: read it all
    assert holdings.confirm({**state7, "revision": "x"}) is False


def test_every_so_many_checks_read_current_whole() -> None:
    from configsync.holdings import FULL_CHECK_EVERY
    holdings = held()
    answers = [holdings.confirm(STATE5) for _ in range(FULL_CHECK_EVERY * 2)]
    assert answers.count(False) == 2 and answers[FULL_CHECK_EVERY - 1] is False


def test_a_cache_file_is_outranked_by_the_first_read(tmp_path: Any) -> None:
    holdings = held(revision=50)
    holdings.apply_event(applied(51, ("a", 999999, False)),
                         {"a": record("a", 999999).to_json()})
    holdings.save(tmp_path / "c.json")
    loaded = Holdings("t")
    assert loaded.load(tmp_path / "c.json") and loaded.get("a").version == 999999
    loaded.replace_all(STATE5, js({"a": record("a", 2)}))
    assert loaded.get("a").version == 2 and sorted(loaded.current) == ["a"]
    assert loaded.revision == 5


@pytest.mark.parametrize("text", [
    "nope", "[]", "null", '{"agent_id": "a"}',
    record("a", 3).to_json().replace('"version":3', '"version":"3"'),
    record("a", 3).to_json().replace('"version":3', '"version":0'),
    record("a", 3).to_json().replace('"version":3', '"version":3.0'),
    record("a", 3).to_json().replace('"config":{', '"config":[{').replace('}', '}]', 1),
    record("a", 3).to_json().replace('"author":"A <a@b>"', '"author":7'),
    record("a", 3, 0.5).to_json().replace('"temperature":0.5', '"temperature":0.6'),
    record("b", 3).to_json(),
])
def test_an_entry_that_is_no_snapshot_keeps_what_is_held(text: str) -> None:
    """Issue 17.2: for a full read and for an event; named, and logged once."""
    holdings = held()
    changes = holdings.replace_all({**STATE5, "revision": "6"},
                                   {"a": text, "b": record("b", 2).to_json()})
    assert changes is not None and [c.agent_id for c in changes] == ["b"]
    assert holdings.get("a").version == 2 and "a" in holdings.model_errors
    assert holdings.apply_event(applied(7, ("a", 3, False)), {"a": text}) == []
    assert holdings.get("a").version == 2
    assert holdings.replace_all({**STATE5, "revision": "7"}, js({
        "a": record("a", 2), "b": record("b", 2)})) == []  # repaired: no longer named
    assert holdings.model_errors == {}
    fresh = Holdings("t")
    assert fresh.replace_all(STATE5, {"a": text, "b": record("b", 1).to_json()}) is not None
    assert sorted(fresh.current) == ["b"]


def test_versions_fetched_from_history_are_dropped_at_the_full_check() -> None:
    """Red team 1: a pinned read's version from a history hash is kept until the periodic
    full check only (a forged one, restored, is fetched again); versions taken from
    `current` stay."""
    from configsync.holdings import FULL_CHECK_EVERY, typed
    holdings = held()
    holdings.remember(typed(record("a", 1, 1.99), holdings.model), from_history=True)
    assert holdings.pinned("a", 1) is not None
    for _ in range(FULL_CHECK_EVERY - 1):
        holdings.confirm(STATE5)
        assert holdings.pinned("a", 1) is not None
    assert holdings.confirm(STATE5) is False and holdings.pinned("a", 1) is None
    assert holdings.pinned("a", 2) is not None and holdings.pinned("b", 1) is not None


@pytest.mark.parametrize(("redis_has", "recheck"), [
    (1, True),      # lower than held (a forgery taken at a start, restored): check at once
    (2, False),     # what is held: nothing to check
    ("other2", True),  # the held version, another snapshot: check at once
    (3, False),     # newer: taken
])
def test_an_event_naming_an_agent_below_what_is_held_asks_for_a_check_at_once(
        redis_has: int | str, recheck: bool) -> None:
    """Red team 4: an `applied` event names `a`, and `current` has a version no higher than
    the one held: `a` becomes unconfirmed and the check runs at once."""
    holdings = held()
    text = (record("a", 2, 0.9) if redis_has == "other2" else
            record("a", int(redis_has))).to_json()
    changes = holdings.apply_event(applied(6, ("a", 2, False)), {"a": text})
    assert changes is not None
    assert holdings.take_recheck() is recheck and holdings.take_recheck() is False
    assert ("a" in holdings.unconfirmed) is (recheck or redis_has == 3)
