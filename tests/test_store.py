"""The Redis contract: key names, compare-and-set transactions, heartbeats."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from configsync.errors import CorruptDataError
from configsync.snapshot import Record, checksum
from configsync.store import EVENT_CHANGES_MAX, AgentChange, Event, Keys, Store, Write


def snap(agent_id: str, version: int) -> Record:
    return Record(agent_id, version, "c" * 64, {"model": "m"}, "abc", "A <a@b>",
                    "2026-01-01T00:00:00+00:00", "msg", "2026-01-01T00:00:01Z")


def test_key_names_share_one_hash_tag() -> None:
    keys = Keys("prod")
    assert keys.state == "configsync:{prod}:state"
    assert keys.current == "configsync:{prod}:current"
    assert keys.history("billing/refunds") == "configsync:{prod}:history:billing/refunds"
    assert keys.events == "configsync:{prod}:events"
    assert keys.changes == "configsync:{prod}:changes"
    assert keys.client("host-1-42") == "configsync:{prod}:client:host-1-42"


def test_compare_and_set_on_seen(redis_client: redis.Redis) -> None:
    store = Store(redis_client, "t")
    first = Write({"seen": "c1", "commit": "c1"}, upserts=[snap("a", 1)],
                  history={"a": [snap("a", 1)]},
                  events=[Event("applied", "c1", 1, "e", [AgentChange("a", 1)])])
    assert store.commit_transaction(first, expected_seen=None)
    assert not store.commit_transaction(first, expected_seen=None)  # state exists now
    assert not store.commit_transaction(Write({"seen": "c2"}), expected_seen="zzz")
    assert store.commit_transaction(Write({"seen": "c2"}, deletes=["a"],
                                          events=[Event("applied", "c2", 2, "e",
                                                        [AgentChange("a", 1, deleted=True)])]),
                                    expected_seen="c1")
    assert store.state() == {"seen": "c2", "commit": "c1"}
    assert store.current() == {}
    assert store.history("a") == {1: snap("a", 1)}
    assert store.events() == [
        {"type": "applied", "commit": "c1", "revision": 1, "epoch": "e", "count": 1,
         "changes": [{"agent_id": "a", "version": 1, "deleted": False}]},
        {"type": "applied", "commit": "c2", "revision": 2, "epoch": "e", "count": 1,
         "changes": [{"agent_id": "a", "version": 1, "deleted": True}]}]
    assert store.last_versions() == {"a": 1}


def test_events_are_published_with_the_transaction(redis_client: redis.Redis) -> None:
    store = Store(redis_client, "t")
    pubsub = redis_client.pubsub()
    pubsub.subscribe(store.keys.changes)
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"  # type: ignore[index]
    store.commit_transaction(Write({"seen": "c1"}, events=[Event("rebuilt", "c1", 1, "e")]),
                             expected_seen=None)
    message = pubsub.get_message(timeout=2)
    assert message is not None and b'"type":"rebuilt"' in message["data"]
    pubsub.close()


def test_rebuild_replaces_everything(redis_client: redis.Redis) -> None:
    store = Store(redis_client, "t")
    store.commit_transaction(Write({"seen": "c1"}, upserts=[snap("old", 3), snap("kept", 5)],
                                   history={"old": [snap("old", 3)],
                                            "kept": [snap("kept", 4), snap("kept", 5)]}),
                             expected_seen=None)
    redis_client.hdel(store.keys.state, "seen")  # state lost, other keys left behind
    # a rebuild: history first, in bounded pipelines; then one transaction for the rest
    store.write_history({"new": [snap("new", 1)], "kept": [snap("kept", 1), snap("kept", 2)]},
                        chunk_bytes=1)
    store.commit_transaction(Write({"seen": "c9"}, upserts=[snap("new", 1), snap("kept", 2)],
                                   index={"new": 1, "kept": 2}, replace_all=True),
                             expected_seen=None)
    assert sorted(store.current()) == ["kept", "new"]
    assert store.history_keys() == [store.keys.history("kept"), store.keys.history("new")]
    assert not redis_client.exists(store.keys.history("old"))
    assert sorted(store.history("kept")) == [1, 2]  # versions 4 and 5 of the old epoch gone
    assert store.last_versions() == {"kept": 2, "new": 1}


def test_history_trim_drops_everything_at_or_below_the_cutoff(redis_client: redis.Redis) -> None:
    """Lowering --keep from 5 to 2 used to leave 4 5 6 9 10: only v - keep was deleted."""
    store = Store(redis_client, "t")
    store.commit_transaction(
        Write({"seen": "1"}, history={"a": [snap("a", v) for v in range(4, 9)]}),
        expected_seen=None)
    store.commit_transaction(Write({"seen": "2"}, history={"a": [snap("a", 9)]}, trim={"a": 7}),
                             expected_seen="1")
    assert sorted(store.history("a")) == [8, 9]


def test_a_namespace_never_reaches_into_another(redis_client: redis.Redis) -> None:
    """`eu[-_]west` as a SCAN glob matched `eu-west` and `eu_west`: a rebuild of one deleted
    the others' history. Keys come from the namespace's own index; the fallback SCAN (for a
    namespace written before the index) is escaped."""
    glob, plain = Store(redis_client, "eu[-_]west"), Store(redis_client, "eu-west")
    for store in (glob, plain):
        store.commit_transaction(Write({"seen": "1"}, upserts=[snap("a", 1)],
                                       history={"a": [snap("a", 1)]}), expected_seen=None)
    redis_client.delete(glob.keys.agents)  # written before the index existed
    assert glob.last_versions() == {"a": 1}
    assert glob.history_keys() == ["configsync:{eu[-_]west}:history:a"]
    glob.write_history({})
    assert plain.history("a") == {1: snap("a", 1)}


def test_reads_work_on_a_decoding_connection(redis_server: Any) -> None:
    """CONFIGSYNC_REDIS_URL=...?decode_responses=True, which agents on the host may share,
    crashed the daemon in store.py ('str' object has no attribute 'decode')."""
    client = redis.Redis.from_url(redis_server.url + "?decode_responses=True")
    store = Store(client, "t")
    store.commit_transaction(Write({"seen": "c1"}, upserts=[snap("a", 1)],
                                   history={"a": [snap("a", 1)]},
                                   events=[Event("applied", "c1", 1, "e", [AgentChange("a", 1)])]),
                             expected_seen=None)
    assert store.state() == {"seen": "c1"}
    assert store.current() == {"a": snap("a", 1)} and store.history("a") == {1: snap("a", 1)}
    assert store.last_versions() == {"a": 1} and store.events()[0]["changes"][0]["agent_id"] == "a"
    assert not store.commit_transaction(Write({"seen": "c2"}), expected_seen="nope")
    assert store.commit_transaction(Write({"seen": "c2"}), expected_seen="c1")
    client.close()


def test_heartbeat_never_creates_state(redis_client: redis.Redis) -> None:
    store = Store(redis_client, "t")
    store.heartbeat("now")
    assert store.state() == {}
    store.commit_transaction(Write({"seen": "c1"}), expected_seen=None)
    store.heartbeat("later")
    assert store.state() == {"seen": "c1", "heartbeat_at": "later"}
    store.heartbeat_every = 2.5  # a polling daemon's interval, for readers (heartbeat.py)
    store.heartbeat("then")
    assert store.state() == {"seen": "c1", "heartbeat_at": "then", "heartbeat_every": "2.5"}


def test_an_applied_event_lists_changes_up_to_a_bound() -> None:
    """One event per commit, whatever its size: past EVENT_CHANGES_MAX it lists none, so no
    event or stream entry grows with the repository (readers re-read ``current``)."""
    small = json.loads(Event("applied", "c", 3, "e", [AgentChange("b", 2, deleted=True),
                                                      AgentChange("a", 5)]).to_json())
    assert small["changes"] == [{"agent_id": "a", "version": 5, "deleted": False},
                                {"agent_id": "b", "version": 2, "deleted": True}]
    assert (small["count"], small["revision"]) == (2, 3)
    empty = json.loads(Event("applied", "c", 4, "e").to_json())
    assert (empty["changes"], empty["count"]) == ([], 0)
    big = json.loads(Event("applied", "c", 5, "e", [AgentChange(f"a{i}", 1) for i in
                                                   range(EVENT_CHANGES_MAX + 1)]).to_json())
    assert (big["changes"], big["count"]) == (None, EVENT_CHANGES_MAX + 1)
    rejected = json.loads(Event("rejected", "c", 5, "e", error="x").to_json())
    assert rejected == {"type": "rejected", "commit": "c", "revision": 5, "epoch": "e",
                        "error": "x"}


# -- issue 17 item 2: every read of a value configsync did not write names it -------------

def good(agent_id: str, version: int) -> Record:
    config = {"model": "m"}
    return Record(agent_id, version, checksum(config), config, "abc", "A <a@b>",
                  "2026-01-01T00:00:00+00:00", "msg", "2026-01-01T00:00:01Z")


@pytest.mark.parametrize(("value", "why"), [
    ("{x", "not JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
           "(char 1))"),
    ("[1]", "not a snapshot: a JSON array, not an object"),
    ('{"agent_id": "a"}', "not a snapshot: no 'version' field"),
    (good("a", 1).to_json().replace('"version":1', '"version":"1"'),
     "not a snapshot: 'version' is a JSON string, not a positive integer"),
    (good("a", 1).to_json().replace('"version":1', '"version":-4'),
     "not a snapshot: 'version' is a JSON integer (-4), not a positive integer"),
    (good("a", 1).to_json().replace('"config":{"model":"m"}', '"config":"m"'),
     "not a snapshot: 'config' is a JSON string, not an object"),
    (good("b", 1).to_json(), "the snapshot is agent 'b''s"),
])
def test_an_entry_that_is_no_snapshot_is_named(redis_client: redis.Redis, value: str,
                                               why: str) -> None:
    store = Store(redis_client, "t")
    redis_client.hset(store.keys.current, "a", value)
    redis_client.hset(store.keys.current, "ok", good("ok", 1).to_json())
    for read in (store.current, lambda: store.record("a")):
        with pytest.raises(CorruptDataError) as info:
            read()
        assert str(info.value) == (f"configsync:{{t}}:current field 'a': {why}"
                                   if "agent 'b'" not in why else
                                   "configsync:{t}:current field 'a': the snapshot is "
                                   "agent 'b''s")
    assert store.record("ok") == good("ok", 1) and store.agent_ids() == ["a", "ok"]


def test_history_state_events_and_reports_of_the_wrong_shape(redis_client: redis.Redis) -> None:
    store = Store(redis_client, "t")
    key = store.keys.history("a")
    redis_client.hset(key, mapping={"1": good("a", 1).to_json(), "2": good("a", 3).to_json(),
                                    "x": "{}"})
    assert store.version("a", 1) == good("a", 1) and store.kept_versions("a") == [1, 2]
    with pytest.raises(CorruptDataError, match=r"history:a field 2: the snapshot is version 3"):
        store.version("a", 2)
    redis_client.hdel(key, "2")
    with pytest.raises(CorruptDataError, match=r"history:a field 'x' is not a version number"):
        store.history("a")
    forged = good("a", 1).to_json().replace('"model":"m"', '"model":"n"')
    redis_client.hset(key, "1", forged)
    with pytest.raises(CorruptDataError, match=r"checksum .* is not its config's"):
        store.version("a", 1)
    redis_client.hset(store.keys.state, mapping={"seen": "c", "revision": "7x"})
    with pytest.raises(CorruptDataError) as info:
        store.state()
    assert str(info.value).startswith("configsync:{t}:state field 'revision' is '7x', not a ")
    for name, report in (("a", "[1]"), ("b", '{"instance_id": "b", "versions": [1]}'),
                         ("c", '{"instance_id": "c", "revision": "3"}'), ("d", "{x"),
                         ("e", '{"instance_id": "e", "revision": 3, "versions": {"a": 1}}')):
        redis_client.set(store.keys.client(name), report)
    assert [r["instance_id"] for r in store.client_reports()] == ["e"]
