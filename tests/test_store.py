"""The Redis contract: key names, compare-and-set transactions, heartbeats."""

from __future__ import annotations

import redis

from configsync.snapshot import Record
from configsync.store import Event, Keys, Store, Write


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
                  events=[Event("updated", "c1", 1, "e", "a", 1, "c" * 64)])
    assert store.commit_transaction(first, expected_seen=None)
    assert not store.commit_transaction(first, expected_seen=None)  # state exists now
    assert not store.commit_transaction(Write({"seen": "c2"}), expected_seen="zzz")
    assert store.commit_transaction(Write({"seen": "c2"}, deletes=["a"],
                                          events=[Event("deleted", "c2", 2, "e", "a", 1)]),
                                    expected_seen="c1")
    assert store.state() == {"seen": "c2", "commit": "c1"}
    assert store.current() == {}
    assert store.history("a") == {1: snap("a", 1)}
    assert [e["type"] for e in store.events()] == ["updated", "deleted"]
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
    store.commit_transaction(Write({"seen": "c1"}, upserts=[snap("old", 3)],
                                   history={"old": [snap("old", 3)]}), expected_seen=None)
    redis_client.hdel(store.keys.state, "seen")  # state lost, other keys left behind
    store.commit_transaction(Write({"seen": "c9"}, upserts=[snap("new", 1)],
                                   history={"new": [snap("new", 1)]}, replace_all=True),
                             expected_seen=None)
    assert list(store.current()) == ["new"]
    assert store.history_keys() == [store.keys.history("new")]


def test_history_trim(redis_client: redis.Redis) -> None:
    store = Store(redis_client, "t")
    store.commit_transaction(Write({"seen": "1"}, history={"a": [snap("a", 1), snap("a", 2)]}),
                             expected_seen=None)
    store.commit_transaction(Write({"seen": "2"}, history={"a": [snap("a", 3)]}, trim={"a": 1}),
                             expected_seen="1")
    assert sorted(store.history("a")) == [2, 3]


def test_heartbeat_never_creates_state(redis_client: redis.Redis) -> None:
    store = Store(redis_client, "t")
    store.heartbeat("now")
    assert store.state() == {}
    store.commit_transaction(Write({"seen": "c1"}), expected_seen=None)
    store.heartbeat("later")
    assert store.state() == {"seen": "c1", "heartbeat_at": "later"}
