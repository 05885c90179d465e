"""Canonical JSON and checksums are stable, so versions only move on real changes."""

from __future__ import annotations

import hashlib

from configsync.snapshot import Record, canonical_json, checksum


def test_canonical_json_ignores_key_order() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == (
        '{"a":{"c":"é","d":[1,2]},"b":1}')
    assert checksum({"a": 1, "b": 2}) == checksum({"b": 2, "a": 1})
    assert checksum({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()
    assert checksum({"a": 1}) != checksum({"a": 1.5})


def test_snapshot_round_trip() -> None:
    snap = Record("a", 2, "x", {"model": "m"}, "c", "A <a@b>", "t1", "msg", "t2")
    assert Record.from_json(snap.to_json()) == snap
    assert Record.from_json(snap.to_json().encode()) == snap
