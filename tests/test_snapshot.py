"""Checksums are RFC 8785 (JCS), so any language's JCS library reproduces them; the stored JSON
is compact, sorted and always valid JSON."""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import subprocess

import pytest
import rfc8785

from configsync.snapshot import (
    MAX_SAFE_INTEGER,
    Record,
    canonical_json,
    checksum,
    jcs,
    non_portable,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_canonical_json_ignores_key_order() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == (
        '{"a":{"c":"é","d":[1,2]},"b":1}')
    assert checksum({"a": 1, "b": 2}) == checksum({"b": 2, "a": 1})
    assert checksum({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()
    assert checksum({"a": 1}) != checksum({"a": 1.5})


# Each expected text is written out by hand from RFC 8785 (numbers as ECMAScript prints them,
# section 3.2.2.3 and appendix B; keys sorted by UTF-16 code units, section 3.2.3), never
# computed by the library under test. Python's json.dumps gives the text in the comment.
JCS_CASES = [
    ("integral float", {"temperature": 1.0}, '{"temperature":1}'),  # 1.0
    ("integral float equals the int", {"temperature": 1}, '{"temperature":1}'),
    ("small float", {"x": 0.00001}, '{"x":0.00001}'),  # 1e-05
    ("smaller float", {"x": 1e-7}, '{"x":1e-7}'),  # 1e-07
    ("negative zero", {"x": -0.0}, '{"x":0}'),  # -0.0
    ("big float", {"x": 1e16}, '{"x":10000000000000000}'),  # 1e+16
    ("float at 1e21", {"x": 1e21}, '{"x":1e+21}'),
    ("shortest digits", {"x": 333333333.33333329}, '{"x":333333333.3333333}'),
    ("trailing zero", {"x": 4.50}, '{"x":4.5}'),
    ("tiny", {"x": 0.000000000000000000000000001}, '{"x":1e-27}'),
    ("largest safe integer", {"x": 2**53 - 1}, '{"x":9007199254740991}'),
    # U+1F600 is the surrogate pair D83D DE00: before U+FB33 in UTF-16, after it by code point
    ("astral and non-ASCII keys",
     {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew", "1": "One",
      "\U0001f600": "Emoji", "\u0080": "Control", "\u00f6": "o"},
     '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"o","\u20ac":"Euro Sign",'
     '"\U0001f600":"Emoji","\ufb33":"Hebrew"}'),
    ("nested", {"b": [1.0, {"z": 2e-3, "a": None}], "a": True},
     '{"a":true,"b":[1,{"a":null,"z":0.002}]}'),
]


@pytest.mark.parametrize(("config", "expected"), [c[1:] for c in JCS_CASES],
                         ids=[c[0] for c in JCS_CASES])
def test_checksum_is_sha256_of_rfc8785(config: dict[str, object], expected: str) -> None:
    assert jcs(config) == expected.encode("utf-8")
    assert checksum(config) == sha(expected)


def test_rfc8785_sample_from_the_rfc() -> None:
    """RFC 8785 section 3.2.2's example, parsed from its JSON text and written canonically."""
    text = ('{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],'
            '"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
            '"literals":[null,true,false]}')
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,'
                '1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}')
    assert jcs(json.loads(text)) == expected.encode("utf-8")


def test_a_reader_in_another_language_gets_the_same_checksum() -> None:
    """A reader parses the stored JSON (where Python wrote 1.0, 1e-05, -0.0 and code-point
    key order) and hashes its RFC 8785 form: the stored checksum."""
    config = {"temperature": 1.0, "x": 0.00001, "z": -0.0, "\U0001f600": 1, "\ufb33": 2}
    record = Record("a", 1, checksum(config), config, "c", "A <a@b>", "t1", "msg", "t2")
    parsed = json.loads(record.to_json())["config"]
    assert hashlib.sha256(rfc8785.dumps(parsed)).hexdigest() == record.checksum


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf, 2**53, -(2**53), 10**30])
def test_numbers_json_cannot_carry_are_refused(number: float) -> None:
    with pytest.raises(ValueError):
        checksum({"x": [number]})
    record = Record("a", 1, "x", {"x": number}, "c", "A <a@b>", "t1", "msg", "t2")
    if isinstance(number, float):
        with pytest.raises(ValueError):  # never NaN or Infinity in the stored JSON
            record.to_json()


def test_non_portable_finds_every_place() -> None:
    config = {"a": 1.5, "b": [1, {"c": math.nan}], "d": {"e": -math.inf, "f": True},
              "g": 2**53, "h": -MAX_SAFE_INTEGER, "i": "nan", "j": None}
    found = sorted((str(loc), repr(v)) for loc, v in non_portable(config))
    assert found == [("['b', 1, 'c']", "nan"), ("['d', 'e']", "-inf"),
                     ("['g']", "9007199254740992")]


def test_snapshot_round_trip() -> None:
    snap = Record("a", 2, "x", {"model": "m"}, "c", "A <a@b>", "t1", "msg", "t2")
    assert Record.from_json(snap.to_json()) == snap
    assert Record.from_json(snap.to_json().encode()) == snap


NODE_READER = r"""
// A reader in another language, as the README tells it: RFC 8785 by hand (ECMAScript's own
// number formatting, keys sorted by UTF-16 code units: JavaScript's default sort).
const crypto = require("crypto");
function jcs(v) {
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return "[" + v.map(jcs).join(",") + "]";
  return "{" + Object.keys(v).sort().map(k => JSON.stringify(k) + ":" + jcs(v[k])).join(",") + "}";
}
for (const line of require("fs").readFileSync(0, "utf8").trim().split("\n")) {
  const record = JSON.parse(line);
  const digest = crypto.createHash("sha256").update(jcs(record.config), "utf8").digest("hex");
  console.log(digest === record.checksum ? "same" : "different " + record.agent_id);
}
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_a_nodejs_reader_gets_the_same_checksums() -> None:
    """Issue 9's reader, for real: Node.js parses each stored snapshot and hashes its JCS."""
    rng = random.Random(9)
    configs = [{"temperature": 1.0}, {"x": 0.00001}, {"x": -0.0}, {"x": 2**53 - 1, "y": 1e21},
               {"\U0001f600": 1, "\ufb33": 2, "\u20ac": 3, "a": 4},
               {"s": "a\u0001\n\t\"\\\u007f\u2028"}]
    for _ in range(200):
        key = "k" + chr(rng.choice([0x41, 0xE9, 0xFB33, 0xFFFF, 0x10000, 0x1F600]))
        configs.append({key: [rng.random() * 10.0 ** rng.randint(-12, 25)],
                        "t": float(rng.randint(0, 2)), "n": rng.randint(-(2**53 - 1), 2**53 - 1)})
    lines = [Record(str(i), 1, checksum(c), c, "c", "A <a@b>", "t1", "msg", "t2").to_json()
             for i, c in enumerate(configs)]
    done = subprocess.run(["node", "-e", NODE_READER], input="\n".join(lines), text=True,
                          capture_output=True, check=True, timeout=60)
    assert done.stdout.split("\n")[:-1] == ["same"] * len(configs)
